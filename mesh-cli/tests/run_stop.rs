//! `mesh-cli run` stop: SIGTERM while the app serves requests drains the sidecar's inbound first,
//! keeps its outbound for the stopping app, lets every in-flight request finish, and leaves no
//! process behind.

mod run_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use run_support::*;

/// In-flight requests when the stop signal arrives.
const REQUESTS: usize = 6;

/// A graceful app: each request logs `start`, takes 2 s (so it is surely in flight when the
/// signal lands), then answers `done`. SIGTERM stops accepting and waits for in-flight requests.
const APP: &str = r#"
import http.server, os, signal, socket, sys, threading, time, urllib.error, urllib.request
port, log = int(sys.argv[1]), sys.argv[2]
lock = threading.Lock()
def note(line):
    with lock, open(log, "a") as f:
        f.write(line + "\n")
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"
    def do_GET(self):
        note("start")
        time.sleep(2)
        body = b"done"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
class S(http.server.ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True
srv = S(("127.0.0.1", port), H)
def on_term():
    # What the app sees when told to stop: the sidecar already draining inbound, outbound open.
    try:
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        code = opener.open(os.environ["MESH_SIDECAR_ADMIN"] + "/ready", timeout=5).status
    except urllib.error.HTTPError as e:
        code = e.code
    except Exception:
        code = 0
    note("ready-on-term %d" % code)
    host, port = os.environ["HTTP_PROXY"][len("http://"):].rsplit(":", 1)
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
        note("outbound-on-term open")
    except OSError:
        note("outbound-on-term closed")
    srv.shutdown()
signal.signal(signal.SIGTERM, lambda *a: threading.Thread(target=on_term).start())
note("pid %d" % os.getpid())
srv.serve_forever()
srv.server_close()
note("stopped")
"#;

#[test]
fn sigterm_lets_in_flight_requests_finish_and_leaves_nothing_behind() {
    let cp = ControlPlane::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let script = dir.path().join("app.py");
    std::fs::write(&script, APP).expect("write app");
    let log = dir.path().join("app.log");
    let port = free_port();
    let mut child = Running(
        cp.run_cmd("reviews", Some(port))
            .arg("--")
            .arg("python3")
            .arg(&script)
            .arg(port.to_string())
            .arg(&log)
            .stdout(Stdio::null())
            .spawn()
            .expect("start mesh-cli run"),
    );

    let deadline = Instant::now() + START_LIMIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "run exited early"
        );
        assert!(Instant::now() < deadline, "the app did not start listening");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pids = descendants(child.id());

    let clients: Vec<_> = (0..REQUESTS)
        .map(|i| std::thread::spawn(move || get(port, &format!("/req{i}"))))
        .collect();
    // Signal only once every request is inside the app.
    let deadline = Instant::now() + START_LIMIT;
    while count(&log, "start") < REQUESTS {
        assert!(Instant::now() < deadline, "requests did not reach the app");
        std::thread::sleep(Duration::from_millis(10));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM mesh-cli run");

    let answers: Vec<String> = clients
        .into_iter()
        .map(|c| c.join().expect("client thread"))
        .collect();
    for a in &answers {
        assert!(
            a.starts_with("HTTP/1.0 200") && a.ends_with("done"),
            "an in-flight request failed: {a:?}"
        );
    }
    let (status, more) = wait_watching(&mut child, START_LIMIT);
    assert_eq!(status.code(), Some(0), "the app exited cleanly on SIGTERM");
    assert_eq!(count(&log, "stopped"), 1, "the app shut down gracefully");
    assert_eq!(
        count(&log, "ready-on-term 503"),
        1,
        "inbound was draining before the app got the signal"
    );
    assert_eq!(
        count(&log, "outbound-on-term open"),
        1,
        "outbound still served the stopping app"
    );
    let app_pid = std::fs::read_to_string(&log)
        .expect("log")
        .lines()
        .find_map(|l| l.strip_prefix("pid ").and_then(|p| p.parse::<u32>().ok()))
        .expect("app pid");
    assert!(pids.contains(&app_pid), "the app ran under mesh-cli run");
    let mut all = pids;
    all.extend(more);
    assert!(all.len() >= 2, "a sidecar and the app ran: {all:?}");
    assert_all_gone(&all);
}

#[test]
fn an_app_ignoring_sigterm_is_killed_after_the_grace_period() {
    let cp = ControlPlane::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let started = dir.path().join("started");
    // Ignores SIGTERM; only the SIGKILL after the grace ends it (its `sleep`s die of the
    // forwarded SIGTERM, the loop goes on).
    let app = r#"trap '' TERM; touch "$1"; while :; do sleep 0.1; done"#;
    let mut child = Running(
        cp.run_cmd("stubborn", None)
            .args(["--grace-period", "1", "--", "sh", "-c", app, "app"])
            .arg(&started)
            .spawn()
            .expect("start mesh-cli run"),
    );
    let deadline = Instant::now() + START_LIMIT;
    while !started.exists() {
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "run exited early"
        );
        assert!(Instant::now() < deadline, "the app did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pids = descendants(child.id());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM mesh-cli run");
    let (status, more) = wait_watching(&mut child, START_LIMIT);
    assert_eq!(status.code(), Some(128 + 9), "the app was killed");
    let mut all = pids;
    all.extend(more);
    assert_all_gone(&all);
}

#[test]
fn a_dead_sidecar_stops_the_app_and_fails_run_with_3() {
    let cp = ControlPlane::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let started = dir.path().join("started");
    let app = r#"touch "$1"; while :; do sleep 0.1; done"#;
    let mut child = Running(
        cp.run_cmd("fragile", None)
            .args(["--", "sh", "-c", app, "app"])
            .arg(&started)
            .spawn()
            .expect("start mesh-cli run"),
    );
    let deadline = Instant::now() + START_LIMIT;
    while !started.exists() {
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "run exited early"
        );
        assert!(Instant::now() < deadline, "the app did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pids = descendants(child.id());
    let sidecar = *pids
        .iter()
        .find(|&&p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .is_ok_and(|c| c.contains("mesh-sidecar"))
        })
        .expect("the sidecar is a child of run");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(sidecar as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill the sidecar");
    let (status, more) = wait_watching(&mut child, START_LIMIT);
    assert_eq!(status.code(), Some(3), "run reports the lost sidecar");
    let mut all = pids;
    all.extend(more);
    assert_all_gone(&all);
}

#[test]
fn killing_run_itself_takes_the_sidecar_and_the_app_with_it() {
    let cp = ControlPlane::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let started = dir.path().join("started");
    let app = r#"touch "$1"; while :; do sleep 0.1; done"#;
    let mut child = Running(
        cp.run_cmd("doomed", None)
            .args(["--", "sh", "-c", app, "app"])
            .arg(&started)
            .spawn()
            .expect("start mesh-cli run"),
    );
    let deadline = Instant::now() + START_LIMIT;
    while !started.exists() {
        assert!(
            child.try_wait().expect("try_wait").is_none(),
            "run exited early"
        );
        assert!(Instant::now() < deadline, "the app did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let pids = descendants(child.id());
    assert!(pids.len() >= 2, "a sidecar and the app: {pids:?}");
    // SIGKILL: run gets no chance to clean up; the kernel's parent-death signal does it.
    child.kill().expect("SIGKILL mesh-cli run");
    let _ = child.wait();
    assert_all_gone(&pids);
}

/// One bounded HTTP/1.0 GET straight to the app; the whole answer, or the error as text.
fn get(port: u16, path: &str) -> String {
    let attempt = || -> std::io::Result<String> {
        let mut s = TcpStream::connect(("127.0.0.1", port))?;
        // Bounds a hang only: the app answers in about 2 s.
        s.set_read_timeout(Some(Duration::from_secs(30)))?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: app\r\n\r\n")?;
        let mut out = String::new();
        s.read_to_string(&mut out)?;
        Ok(out)
    };
    attempt().unwrap_or_else(|e| format!("error: {e}"))
}

fn count(log: &Path, prefix: &str) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .count()
}
