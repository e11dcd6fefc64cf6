//! Two workloads under `mesh-cli run`: a job calls a server by its plain service name through
//! both sidecars (explicit mode), with no mesh knowledge beyond the HTTP_PROXY it was given.

mod run_support;

use std::io::Read;
use std::net::TcpStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use run_support::*;

/// The job: plain curl by service name, retried a bounded number of times while the server's
/// endpoint propagates (20 tries, 0.5 s apart).
const CLIENT: &str = r#"
for i in $(seq 1 20); do
  curl -fsS --max-time 5 "http://reviews:$1/hello.txt" && exit 0
  sleep 0.5
done
exit 1
"#;

#[test]
fn a_job_reaches_a_served_workload_by_service_name_through_both_sidecars() {
    let cp = ControlPlane::start();
    let site = tempfile::tempdir().expect("tempdir");
    std::fs::write(site.path().join("hello.txt"), "hello from reviews\n").expect("write");
    let port = free_port();
    let mut server = Running(
        cp.run_cmd("reviews", Some(port))
            .arg("--")
            .args(["python3", "-m", "http.server", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--directory"])
            .arg(site.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the server workload"),
    );
    let deadline = Instant::now() + START_LIMIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            server.try_wait().expect("try_wait").is_none(),
            "server run exited early"
        );
        assert!(
            Instant::now() < deadline,
            "the server did not start listening"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let server_pids = descendants(server.id());

    let mut client = Running(
        cp.run_cmd("ratings", None)
            .arg("--")
            .args(["sh", "-c", CLIENT, "client", &port.to_string()])
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the client job"),
    );
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

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM the server's run");
    let (status, more) = wait_watching(&mut server, START_LIMIT);
    // http.server dies of the forwarded SIGTERM: 128 + 15, as a shell reports it.
    assert_eq!(status.code(), Some(128 + 15));
    let mut all = server_pids;
    all.extend(more);
    assert_all_gone(&all);
}
