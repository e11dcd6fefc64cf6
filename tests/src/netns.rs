//! Throw-away test hosts: two network namespaces joined by a veth pair, processes inside them,
//! and packet capture on the link, all torn down on drop (also when a test panics).
//!
//! Addressing: A is 10.199.0.1/30 and fd99:199::1/126, B is 10.199.0.2/30 and fd99:199::2/126,
//! each with a default route via the other. These addresses exist only inside the two
//! namespaces the test created (the host never sees them), so every `TestNet` can reuse them
//! and nothing leaks onto a real network. Namespaces are named `mesh-t-<pid>-<n>{a,b}`; ones
//! left behind by a killed test process (dead pid) are removed by the next `TestNet::new`.
//!
//! A meshed pair, as the full sidecar test will build it (`sidecar` = the real binary):
//! ```no_run
//! # fn demo(sidecar: &str, app: std::process::Command) -> anyhow::Result<()> {
//! use mesh_tests::netns::{Capture, Side, TestNet, VETH, capture};
//! let mut net = TestNet::new()?;
//! net.spawn(Side::B, &app)?.expect("READY", std::time::Duration::from_secs(20))?;
//! for side in [Side::A, Side::B] {
//!     let mut init = std::process::Command::new(sidecar);
//!     init.arg("init");
//!     let mut proxy = std::process::Command::new(sidecar);
//!     proxy.args(["--control-plane", "…"]);
//!     net.mesh_host(side, &init, &proxy)?;
//! }
//! let dir = tempfile::tempdir()?;
//! let cap = Capture::start(&net.a, VETH, dir.path(), 200)?;
//! net.a.run("curl", &["-sS", "--max-time", "10", "http://10.199.0.2:8080/"])?;
//! assert!(!capture::contains(&cap.finish()?, b"GET / HTTP/1.1"), "plaintext on the wire");
//! # Ok(()) }
//! ```

use std::ffi::OsStr;
use std::io::Write;
use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{Context, Result, bail};

pub mod capture;
mod lines;
mod uplink;

pub use capture::Capture;
pub use lines::Lines;
pub use uplink::UPLINK;

pub const A_ADDR: Ipv4Addr = Ipv4Addr::new(10, 199, 0, 1);
pub const B_ADDR: Ipv4Addr = Ipv4Addr::new(10, 199, 0, 2);
pub const A_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd99, 0x199, 0, 0, 0, 0, 0, 1);
pub const B_ADDR6: Ipv6Addr = Ipv6Addr::new(0xfd99, 0x199, 0, 0, 0, 0, 0, 2);
/// The veth end inside each namespace (names are per-namespace, so both can share it).
pub const VETH: &str = "veth0";
/// The uid (and gid) sidecars run as in these tests: `mesh-sidecar init`'s default.
pub const PROXY_UID: u32 = 1337;
/// Environment variable carrying the role of a re-executed test binary (see `self_command`).
pub const CHILD_ROLE_ENV: &str = "MESH_NETNS_CHILD";

const PREFIX: &str = "mesh-t-";
static NEXT: AtomicU32 = AtomicU32::new(0);

/// One network namespace created by a test.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

/// Two namespaces A and B joined by a veth pair; owns every process spawned through it.
#[derive(Debug)]
pub struct TestNet {
    pub a: Netns,
    pub b: Netns,
    children: Vec<Child>,
    /// Host-side interfaces of `link_host`.
    uplinks: Vec<String>,
}

/// Returns `true` when root-only tests can run; otherwise prints the skip line and returns
/// `false`. With `MESH_REQUIRE_NETNS=1` a missing privilege is a failure instead of a skip.
pub fn can_run() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var_os("MESH_REQUIRE_NETNS").is_some() {
        panic!("MESH_REQUIRE_NETNS is set but this test is not running as root");
    }
    // Straight to the stderr handle, not `eprintln!`: the test harness captures the macro's
    // output of passing tests, and this line must be seen.
    let _ = writeln!(
        std::io::stderr(),
        "SKIPPED: needs root to create network namespaces"
    );
    false
}

/// A command re-executing the current test binary so it runs only `test_name` with
/// `CHILD_ROLE_ENV=role`: the way a test starts a helper process (inside a namespace with
/// `Netns::wrap`) that runs its own Rust code.
pub fn self_command(test_name: &str, role: &str) -> Result<Command> {
    let exe = std::env::current_exe().context("locating the test binary")?;
    let mut cmd = Command::new(exe);
    cmd.args([
        test_name,
        "--exact",
        "--nocapture",
        "--test-threads=1",
        "--quiet",
    ]);
    cmd.env(CHILD_ROLE_ENV, role);
    Ok(cmd)
}

/// The role this process was started with by `self_command`, if any.
pub fn child_role() -> Option<String> {
    std::env::var(CHILD_ROLE_ENV).ok()
}

// === impl TestNet ===

impl TestNet {
    /// Creates A and B, the veth pair, addresses and default routes, with `lo` up in both.
    pub fn new() -> Result<TestNet> {
        remove_stale();
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let base = format!("{PREFIX}{}-{n}", std::process::id());
        let a = Netns::create(format!("{base}a"))?;
        let b = Netns::create(format!("{base}b"))?;
        let net = TestNet {
            a,
            b,
            children: Vec::new(),
            uplinks: Vec::new(),
        };
        let (a, b) = (&net.a.name, &net.b.name);
        run_ok(Command::new("ip").args([
            "link", "add", VETH, "netns", a, "type", "veth", "peer", "name", VETH, "netns", b,
        ]))?;
        for (ns, me, peer, me6, peer6) in [
            (&net.a, A_ADDR, B_ADDR, A_ADDR6, B_ADDR6),
            (&net.b, B_ADDR, A_ADDR, B_ADDR6, A_ADDR6),
        ] {
            ns.ip(&["link", "set", "lo", "up"])?;
            ns.ip(&["addr", "add", &format!("{me}/30"), "dev", VETH])?;
            // nodad: the address is usable at once instead of after duplicate detection.
            ns.ip(&[
                "-6",
                "addr",
                "add",
                &format!("{me6}/126"),
                "dev",
                VETH,
                "nodad",
            ])?;
            ns.ip(&["link", "set", VETH, "up"])?;
            // A default route, so a connect to any address (a VIP, say) reaches netfilter
            // instead of failing with "network unreachable" before interception.
            ns.ip(&["route", "add", "default", "via", &peer.to_string()])?;
            ns.ip(&["-6", "route", "add", "default", "via", &peer6.to_string()])?;
        }
        Ok(net)
    }

    /// Spawns `cmd` inside `ns` (A or B of this net), stdout piped; the process is killed when
    /// the `TestNet` drops. Returns a line reader over its stdout.
    pub fn spawn(&mut self, ns: Side, cmd: &Command) -> Result<Lines> {
        self.spawn_wrapped(self.ns(ns).wrap(cmd))
    }

    /// Like `spawn`, but the process runs as `uid`/`gid` with no supplementary groups: how a
    /// sidecar runs as its dedicated proxy uid (the one `init` exempts from interception).
    pub fn spawn_as(&mut self, ns: Side, uid: u32, gid: u32, cmd: &Command) -> Result<Lines> {
        self.spawn_wrapped(self.ns(ns).wrap_as(uid, gid, cmd))
    }

    fn spawn_wrapped(&mut self, mut wrapped: Command) -> Result<Lines> {
        let cmd = format!("{wrapped:?}");
        wrapped
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = wrapped
            .spawn()
            .with_context(|| format!("spawning {cmd:?}"))?;
        let stdout = child.stdout.take().context("child stdout")?;
        let pid = child.id();
        self.children.push(child);
        Ok(Lines::new(pid, stdout))
    }

    /// Makes `side` a meshed host: runs `init` there (as root, it must exit 0), then spawns
    /// `sidecar` as `PROXY_UID` (so its own connections are exempt from the redirect) and
    /// returns its stdout lines. With the real binary:
    /// `init = mesh-sidecar init`, `sidecar = mesh-sidecar --addrs-file … …`.
    pub fn mesh_host(&mut self, side: Side, init: &Command, sidecar: &Command) -> Result<Lines> {
        let out = self.ns(side).wrap(init).output().context("running init")?;
        if !out.status.success() {
            bail!(
                "init failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        self.spawn_as(side, PROXY_UID, PROXY_UID, sidecar)
    }

    /// Packets counted by the nat rule whose `iptables-save` text is `rule` (e.g.
    /// `-A MESH_OUTPUT -m owner --uid-owner 1337 -j RETURN`), in `side`; `None` if absent.
    pub fn nat_packets(&self, side: Side, rule: &str) -> Result<Option<u64>> {
        let save = self.ns(side).run("iptables-save", &["-c", "-t", "nat"])?;
        Ok(save.lines().find_map(|line| {
            let (counters, text) = line.strip_prefix('[')?.split_once("] ")?;
            (text == rule).then(|| counters.split(':').next()?.parse().ok())?
        }))
    }

    pub fn ns(&self, side: Side) -> &Netns {
        match side {
            Side::A => &self.a,
            Side::B => &self.b,
        }
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.unlink_host();
        // The namespaces (fields) drop next: they kill what the children left behind.
    }
}

/// Which of the two namespaces.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    A,
    B,
}

// === impl Netns ===

impl Netns {
    /// Creates a namespace named `name` (deleted on drop).
    pub fn create(name: String) -> Result<Netns> {
        run_ok(Command::new("ip").args(["netns", "add", &name]))
            .with_context(|| format!("creating network namespace {name} (needs root)"))?;
        Ok(Netns { name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// `cmd` to be run inside this namespace (`ip netns exec`), with the same environment.
    pub fn wrap(&self, cmd: &Command) -> Command {
        let mut out = Command::new("ip");
        out.args(["netns", "exec", &self.name])
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => out.env(k, v),
                None => out.env_remove(k),
            };
        }
        if let Some(dir) = cmd.get_current_dir() {
            out.current_dir(dir);
        }
        out
    }

    /// `cmd` inside this namespace as `uid`/`gid` (util-linux `setpriv`, after entering it:
    /// entering a namespace needs root, the process itself then runs unprivileged).
    pub fn wrap_as(&self, uid: u32, gid: u32, cmd: &Command) -> Command {
        let mut inner = Command::new("setpriv");
        inner
            .args([
                "--reuid",
                &uid.to_string(),
                "--regid",
                &gid.to_string(),
                "--clear-groups",
            ])
            .arg("--")
            .arg(cmd.get_program())
            .args(cmd.get_args());
        for (k, v) in cmd.get_envs() {
            match v {
                Some(v) => inner.env(k, v),
                None => inner.env_remove(k),
            };
        }
        self.wrap(&inner)
    }

    /// Runs `program args…` inside the namespace; fails unless it exits 0. Returns stdout.
    pub fn run<S: AsRef<OsStr>>(&self, program: &str, args: &[S]) -> Result<String> {
        let mut cmd = Command::new(program);
        cmd.args(args);
        let out = run_ok(&mut self.wrap(&cmd))?;
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Runs `program args…` inside the namespace and returns its output whatever the status.
    pub fn output<S: AsRef<OsStr>>(&self, program: &str, args: &[S]) -> Result<Output> {
        let mut cmd = Command::new(program);
        cmd.args(args);
        self.wrap(&cmd)
            .output()
            .with_context(|| format!("running {program}"))
    }

    fn ip(&self, args: &[&str]) -> Result<String> {
        self.run("ip", args)
    }

    fn kill_all(&self) {
        if let Ok(out) = Command::new("ip")
            .args(["netns", "pids", &self.name])
            .output()
        {
            for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
                if let Ok(pid) = pid.parse::<i32>() {
                    let pid = nix::unistd::Pid::from_raw(pid);
                    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
                }
            }
        }
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Processes our children started (a forked server, say) live on in the namespace:
        // `ip netns pids` lists exactly those, all of which this test created.
        self.kill_all();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Deletes `mesh-t-<pid>-…` namespaces whose creating process no longer exists.
fn remove_stale() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        let Some(rest) = name.strip_prefix(PREFIX) else {
            continue;
        };
        let pid = rest.split('-').next().unwrap_or_default();
        if !pid.is_empty() && !Path::new("/proc").join(pid).exists() {
            drop(Netns {
                name: name.to_string(),
            });
        }
    }
}

fn run_ok(cmd: &mut Command) -> Result<Output> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
