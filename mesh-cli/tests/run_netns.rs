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

fn is_root() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
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
    assert_eq!(ip_lines(&["netns", "list"], &server_ns).len(), 1);
    assert!(ip_lines(&["netns", "list"], &client_ns).is_empty());

    // A job's exit code is run's, in interception mode too.
    let mut job = Running(
        run_cmd(&cp, "job")
            .args(["--", "sh", "-c", "exit 3"])
            .spawn()
            .expect("start the job"),
    );
    let (status, _) = wait_watching(&mut job, START_LIMIT);
    assert_eq!(status.code(), Some(3));

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM the server's run");
    let (status, _) = wait_watching(&mut server, START_LIMIT);
    assert_eq!(status.code(), Some(128 + 15));
    // Nothing left: namespaces, veths, the bridge (the last workload removes it).
    assert!(ip_lines(&["netns", "list"], "mesh-run-").is_empty());
    assert!(ip_lines(&["-o", "link", "show"], "mesh-r").is_empty());
}
