//! `mesh-cli run` as root (interception mode): each workload in its own network namespace with
//! `mesh-sidecar init` rules; a job with no proxy settings reaches a served workload by its
//! plain service name, job exit codes come back, and no namespace, link or bridge is left.

mod run_support;

use std::io::{Read, Write};
use std::process::{Command, Stdio};

use run_support::*;

/// The app port inside the server's namespace (namespaces have their own ports: no clash).
const PORT: &str = "9080";
/// The job: plain curl by service name with no proxy in its environment, retried a bounded
/// number of times while the server's endpoint propagates (40 tries, 0.5 s apart).
const CLIENT: &str = r#"
test -z "$HTTP_PROXY$http_proxy" || { echo "proxy set: $HTTP_PROXY"; exit 9; }
for i in $(seq 1 40); do
  curl -fsS --max-time 5 "http://reviews:$1/hello.txt" && exit 0
  sleep 0.5
done
exit 1
"#;

/// Whether interception-mode tests can run. Without root they are skipped, unless
/// `MESH_REQUIRE_NETNS` is set (the project's test command sets it): then that is a failure.
fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var_os("MESH_REQUIRE_NETNS").is_none(),
        "MESH_REQUIRE_NETNS is set but interception-mode tests are not running as root"
    );
    let _ = writeln!(std::io::stderr(), "SKIPPED: interception mode needs root");
    false
}

/// `mesh-cli run` in interception mode (no `--explicit`) against `cp`.
fn run_cmd(cp: &ControlPlane, service: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mesh-cli"));
    require_bin("mesh-sidecar");
    cmd.arg("run")
        .args(["--service", service, "--version", "v1"])
        .arg("--data-dir")
        .arg(cp.dir.path())
        .env_remove("MESH_JOIN_TOKEN")
        .env_remove("MESH_ADMIN_TOKEN")
        .stdin(Stdio::null());
    cmd
}

/// `ip` output lines mentioning `needle` (namespaces or links a run left behind).
fn ip_lines(args: &[&str], needle: &str) -> Vec<String> {
    let out = Command::new("ip").args(args).output().expect("ip");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains(needle))
        .map(str::to_string)
        .collect()
}

/// Whether the network namespace `name` exists (`ip netns list` prints `name [(id: N)]`).
fn namespace_exists(name: &str) -> bool {
    ip_lines(&["netns", "list"], name)
        .iter()
        .any(|l| l.split_whitespace().next() == Some(name))
}

#[test]
fn intercepted_workloads_reach_each_other_by_name_and_leave_nothing_behind() {
    if !is_root() {
        return;
    }
    let cp = ControlPlane::start();
    let site = tempfile::tempdir().expect("tempdir");
    std::fs::write(site.path().join("hello.txt"), "hello from reviews\n").expect("write");
    let mut server = Running(
        run_cmd(&cp, "reviews")
            .args(["--port", PORT, "--"])
            .args(["python3", "-m", "http.server", PORT])
            .args(["--bind", "127.0.0.1", "--directory"])
            .arg(site.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server workload"),
    );
    let server_ns = format!("mesh-run-{}", server.id());

    let mut client = Running(
        run_cmd(&cp, "ratings")
            .arg("--")
            .args(["sh", "-c", CLIENT, "client", PORT])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the client job"),
    );
    let client_ns = format!("mesh-run-{}", client.id());
    let (status, client_pids) = wait_watching(&mut client, START_LIMIT);
    let mut out = String::new();
    client
        .stdout
        .as_mut()
        .expect("stdout")
        .read_to_string(&mut out)
        .expect("read stdout");
    assert_eq!(status.code(), Some(0), "the job's curl succeeded: {out}");
    assert_eq!(out, "hello from reviews\n");
    assert_all_gone(&client_pids);
    // The server's namespace lives on; the finished job's is gone.
    assert!(namespace_exists(&server_ns));
    assert!(!namespace_exists(&client_ns));

    // A job's exit code is run's, in interception mode too (7: distinct from run's own 3 for
    // a sidecar that never became ready).
    let mut job = Running(
        run_cmd(&cp, "job")
            .args(["--", "sh", "-c", "exit 7"])
            .spawn()
            .expect("start the job"),
    );
    let job_ns = format!("mesh-run-{}", job.id());
    let (status, _) = wait_watching(&mut job, START_LIMIT);
    assert_eq!(status.code(), Some(7));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM the server's run");
    let (status, _) = wait_watching(&mut server, START_LIMIT);
    assert_eq!(status.code(), Some(128 + 15));
    // Nothing left: our namespaces (with their veths and rules), and the bridge unless a
    // workload of another test (the demo, run side by side by nextest) still uses it.
    for ns in [&server_ns, &client_ns, &job_ns] {
        assert!(!namespace_exists(ns), "{ns} left");
    }
    if ip_lines(&["netns", "list"], "mesh-run-").is_empty() {
        assert!(ip_lines(&["-o", "link", "show"], "mesh-r").is_empty());
    }
}

#[test]
fn sigint_stops_the_workload_and_removes_its_namespace() {
    if !is_root() {
        return;
    }
    let cp = ControlPlane::start();
    let mut run = Running(
        run_cmd(&cp, "sleeper")
            .args(["--", "sleep", "60"])
            .spawn()
            .expect("start the workload"),
    );
    let ns = format!("mesh-run-{}", run.id());
    // Wait until the app (`sleep`) runs inside the namespace: counting pids is not enough,
    // set-up commands (`ip`, `iptables-restore`) run there briefly too. 600 polls of 50 ms
    // only bound a hang.
    let app_running = || {
        let out = Command::new("ip")
            .args(["netns", "pids", &ns])
            .output()
            .expect("ip netns pids");
        String::from_utf8_lossy(&out.stdout).lines().any(|pid| {
            std::fs::read_to_string(format!("/proc/{}/comm", pid.trim()))
                .is_ok_and(|c| c.trim() == "sleep")
        })
    };
    for _ in 0..600 {
        if app_running() {
            break;
        }
        assert!(run.try_wait().expect("try_wait").is_none(), "run exited");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(app_running(), "the app never started in {ns}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT run");
    let (status, _) = wait_watching(&mut run, START_LIMIT);
    // sleep dies of the forwarded SIGINT: 128 + 2.
    assert_eq!(status.code(), Some(128 + 2));
    assert!(!namespace_exists(&ns), "{ns} left after SIGINT");
}

/// A collector on the host's loopback (rotel-agent, as `deploy/scripts/setup.sh` installs it)
/// printing every span it receives; killed on drop.
struct Collector {
    child: std::process::Child,
    out: std::sync::Arc<tokio::sync::Mutex<String>>,
    port: u16,
}

impl Collector {
    fn start() -> Self {
        let free = || {
            std::net::TcpListener::bind("127.0.0.1:0")
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .expect("free port")
        };
        let (port, http) = (free(), free());
        let mut child = Command::new("rotel-agent")
            .args([
                "start",
                "--otlp-grpc-endpoint",
                &format!("127.0.0.1:{port}"),
            ])
            .args(["--otlp-http-endpoint", &format!("127.0.0.1:{http}")])
            .args(["--exporter", "blackhole", "--debug-log", "traces"])
            .args(["--debug-log-verbosity", "detailed"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rotel-agent on PATH (deploy/scripts/setup.sh installs it)");
        let out = std::sync::Arc::new(tokio::sync::Mutex::new(String::new()));
        for mut pipe in [
            Box::new(child.stdout.take().expect("stdout")) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().expect("stderr")),
        ] {
            let out = out.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    out.blocking_lock()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        Collector { child, out, port }
    }

    fn text(&self) -> String {
        self.out.blocking_lock().clone()
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Interception mode exports to the collector the user named on the host's loopback: both
/// workloads' sidecars deliver their spans of one request to it.
#[test]
fn intercepted_sidecars_export_spans_to_a_host_loopback_collector() {
    if !is_root() {
        return;
    }
    let collector = Collector::start();
    let endpoint = format!("http://127.0.0.1:{}", collector.port);
    let cp = ControlPlane::start();
    let site = tempfile::tempdir().expect("tempdir");
    std::fs::write(site.path().join("hello.txt"), "hello from reviews\n").expect("write");
    let mut server = Running(
        run_cmd(&cp, "reviews")
            .env("MESH_OTLP_ENDPOINT", &endpoint)
            .args(["--port", PORT, "--"])
            .args(["python3", "-m", "http.server", PORT])
            .args(["--bind", "127.0.0.1", "--directory"])
            .arg(site.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server workload"),
    );
    let mut client = Running(
        run_cmd(&cp, "ratings")
            .env("MESH_OTLP_ENDPOINT", &endpoint)
            .arg("--")
            .args(["sh", "-c", CLIENT, "client", PORT])
            .stdout(Stdio::null())
            .spawn()
            .expect("start the client job"),
    );
    let (status, _) = wait_watching(&mut client, START_LIMIT);
    assert_eq!(status.code(), Some(0), "the job's curl succeeded");
    // Spans are batched: wait (bounded) until both sidecars' spans arrived.
    let deadline = std::time::Instant::now() + START_LIMIT;
    loop {
        let text = collector.text();
        if text.contains("reviews") && text.contains("ratings") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "spans of both intercepted sidecars never reached the host collector:\n{text}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM the server's run");
    let _ = wait_watching(&mut server, START_LIMIT);
}
