//! Shared pieces of the `mesh-cli run` tests: binaries, a real control plane, process watching.

#![allow(dead_code)] // each test file uses its own subset

use std::collections::{BTreeSet, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// Bounds a start-up on a busy 2-core machine; only a hang takes this long.
pub const START_LIMIT: Duration = Duration::from_secs(60);
/// Process-table polling interval.
const POLL: Duration = Duration::from_millis(20);

/// The directory holding every workspace binary (next to mesh-cli).
pub fn bin_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_mesh-cli"))
        .parent()
        .expect("binary dir")
        .to_path_buf()
}

/// A workspace binary beside mesh-cli, or a clear failure telling how to build it.
pub fn require_bin(name: &str) -> PathBuf {
    let p = bin_dir().join(name);
    assert!(
        p.is_file(),
        "{} is missing: build it first with `cargo build -p {name}`",
        p.display()
    );
    p
}

/// A real control plane on ephemeral loopback ports, discovery over TLS, killed on drop.
pub struct ControlPlane {
    child: Child,
    pub dir: tempfile::TempDir,
}

impl ControlPlane {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let addrs = dir.path().join("cp-addrs.json");
        let child = Command::new(require_bin("mesh-control-plane"))
            .arg("--data-dir")
            .arg(dir.path())
            .args(["--discovery-addr", "127.0.0.1:0"])
            .args(["--admin-addr", "127.0.0.1:0"])
            .args(["--http-addr", "127.0.0.1:0"])
            // As a meshed host runs it: `run` finds TLS and passes the bundle to the sidecar.
            .arg("--discovery-tls=true")
            .arg("--addrs-file")
            .arg(&addrs)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start mesh-control-plane");
        let mut cp = ControlPlane { child, dir };
        let deadline = Instant::now() + START_LIMIT;
        while !addrs.exists() {
            assert!(
                cp.child.try_wait().expect("try_wait").is_none(),
                "control plane exited during start-up"
            );
            assert!(Instant::now() < deadline, "control plane did not start");
            std::thread::sleep(POLL);
        }
        cp
    }

    /// `mesh-cli run` against this control plane (its data dir gives addresses and token).
    pub fn run_cmd(&self, service: &str, port: Option<u16>) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mesh-cli"));
        require_bin("mesh-sidecar");
        cmd.arg("run")
            // These tests are about explicit mode (run_netns covers interception as root).
            .arg("--explicit")
            .args(["--service", service, "--version", "v1"])
            .arg("--data-dir")
            .arg(self.dir.path())
            .env_remove("MESH_JOIN_TOKEN")
            .env_remove("MESH_ADMIN_TOKEN")
            .stdin(Stdio::null());
        if let Some(p) = port {
            cmd.args(["--port", &p.to_string()]);
        }
        cmd
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A child process killed (SIGKILL) if the test ends while it runs, e.g. on a failed assert;
/// `mesh-cli run`'s own children die with it (parent-death signal).
pub struct Running(pub Child);

impl std::ops::Deref for Running {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Running {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A loopback port nothing listens on (bound then released).
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").port()
}

/// Every live descendant of `root` (children, grandchildren, …), from /proc.
pub fn descendants(root: u32) -> BTreeSet<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid …": comm may hold spaces, so parse after the last ')'.
        let Some(after) = stat.rsplit_once(')').map(|(_, a)| a) else {
            continue;
        };
        if let Some(ppid) = after.split_whitespace().nth(1).and_then(|p| p.parse().ok()) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut out = BTreeSet::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        for &c in children.get(&p).into_iter().flatten() {
            if out.insert(c) {
                todo.push(c);
            }
        }
    }
    out
}

/// Whether `pid` is a live (not zombie) process.
pub fn alive(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, a)| a.split_whitespace().next())
            .is_some_and(|state| state != "Z"),
        Err(_) => false,
    }
}

/// Waits for `child` (bounded by `limit`: killed and failed past it) while recording every
/// descendant it had; returns its status and those pids.
pub fn wait_watching(child: &mut Child, limit: Duration) -> (ExitStatus, BTreeSet<u32>) {
    let deadline = Instant::now() + limit;
    let mut seen = BTreeSet::new();
    loop {
        seen.extend(descendants(child.id()));
        if let Some(status) = child.try_wait().expect("try_wait") {
            return (status, seen);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("mesh-cli run did not exit within {limit:?}");
        }
        std::thread::sleep(POLL);
    }
}

/// Fails if any of `pids` is still running (after a short bounded wait for exit to settle).
pub fn assert_all_gone(pids: &BTreeSet<u32>) {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|&p| alive(p)).collect();
        if left.is_empty() {
            return;
        }
        if Instant::now() > deadline {
            for &p in &left {
                let cmd = std::fs::read_to_string(format!("/proc/{p}/cmdline")).unwrap_or_default();
                eprintln!("left behind: {p} {}", cmd.replace('\0', " "));
            }
            panic!("processes left behind: {left:?}");
        }
        std::thread::sleep(POLL);
    }
}
