//! Interception mode of `mesh-cli run` (root): the workload's own network namespace, a veth to
//! a shared host bridge, `mesh-sidecar init` rules inside, and a relay that makes the host's
//! loopback control plane reachable from inside; everything removed again on exit.
//!
//! Layout: bridge `mesh-run0` (10.201.0.1/24) on the host; namespace `mesh-run-<pid>` with
//! `eth0` = 10.201.0.N/24 (default route via the bridge) whose host end `mesh-rN` is a bridge
//! port. Workloads reach each other's sidecar inbound listeners across the bridge (layer 2: no
//! host forwarding needed). A namespace's loopback is its own, so the control plane's
//! `127.0.0.1` discovery port is relayed: `run` opens a listener on the namespace's
//! `127.0.0.1` and pipes each connection to the host address (TLS passes through untouched; the
//! control plane's certificate names 127.0.0.1). A loopback OTLP collector
//! (`MESH_OTLP_ENDPOINT`) is relayed on its own port, so the sidecar's and the app's spans reach
//! the collector the user named. The bridge goes with the last workload.

use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::process::{Command, Output};

use tokio::net::{TcpListener, TcpStream};

/// Host bridge joining every workload namespace.
const BRIDGE: &str = "mesh-run0";
/// A /24 of private space reserved for local workloads: 253 workloads side by side is far more
/// than one machine runs by hand, and the range is unlikely to collide with a LAN (10.201/16).
const BRIDGE_ADDR: Ipv4Addr = Ipv4Addr::new(10, 201, 0, 1);
const PREFIX_LEN: u8 = 24;
const NS_PREFIX: &str = "mesh-run-";
const HOST_IF_PREFIX: &str = "mesh-r";
/// Serialises bridge creation/removal and address picking between concurrent `run`s.
const LOCK_FILE: &str = "/run/mesh-run.lock";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("`{command}` failed: {stderr}")]
    Command { command: String, stderr: String },
    #[error("cannot run `{command}`: {source} (iproute2 must be installed)")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    #[error("no free workload address left in {BRIDGE_ADDR}/{PREFIX_LEN}")]
    Exhausted,
    #[error("{what}: {source}")]
    Io {
        what: &'static str,
        #[source]
        source: io::Error,
    },
}

/// A workload namespace; removed (with its veth, rules and stray processes) on drop.
#[derive(Debug)]
pub struct Isolation {
    pub name: String,
    /// The workload's address: its sidecar advertises it, peers dial it.
    pub addr: Ipv4Addr,
    /// The host end of its veth (a bridge port).
    host_if: Option<String>,
}

// === impl Isolation ===

impl Isolation {
    /// Creates the namespace for this process and wires it to the bridge.
    pub fn create() -> Result<Self, NetnsError> {
        let lock = Lock::take()?;
        remove_stale();
        let name = format!("{NS_PREFIX}{}", std::process::id());
        ip(&["netns", "add", &name])?;
        let mut iso = Isolation {
            name,
            addr: BRIDGE_ADDR,
            host_if: None,
        };
        let wired = iso.wire();
        // Released before a failed `iso` drops: its cleanup takes the lock again.
        drop(lock);
        wired.map(|()| iso)
    }

    fn wire(&mut self) -> Result<(), NetnsError> {
        let iso = self;
        ensure_bridge()?;
        // The first free host interface name is the address: `ip link add` fails on a name in
        // use, so two `run`s never pick the same one.
        let n = (2..=254u8)
            .find(|n| {
                let host_if = format!("{HOST_IF_PREFIX}{n}");
                ip(&[
                    "link", "add", &host_if, "type", "veth", "peer", "name", "eth0", "netns",
                    &iso.name,
                ])
                .is_ok()
            })
            .ok_or(NetnsError::Exhausted)?;
        let host_if = format!("{HOST_IF_PREFIX}{n}");
        iso.host_if = Some(host_if.clone());
        iso.addr = Ipv4Addr::new(10, 201, 0, n);
        ip(&["link", "set", &host_if, "master", BRIDGE])?;
        ip(&["link", "set", &host_if, "up"])?;
        let cidr = format!("{}/{PREFIX_LEN}", iso.addr);
        iso.exec(&["ip", "link", "set", "lo", "up"])?;
        // The MAC follows from the address: a workload reusing the address of one that just
        // ended keeps the MAC that the host's and the other namespaces' neighbour caches hold
        // for it (a fresh random one would go unanswered until those entries expire, ~30 s).
        iso.exec(&["ip", "link", "set", "eth0", "address", &mac(n)])?;
        iso.exec(&["ip", "addr", "add", &cidr, "dev", "eth0"])?;
        iso.exec(&["ip", "link", "set", "eth0", "up"])?;
        // Every destination (service VIPs included) needs a route to reach the interception
        // rules instead of failing with "network unreachable".
        iso.exec(&[
            "ip",
            "route",
            "add",
            "default",
            "via",
            &BRIDGE_ADDR.to_string(),
        ])?;
        Ok(())
    }

    /// `command` run inside the namespace (as root: iptables).
    pub fn exec(&self, argv: &[&str]) -> Result<Output, NetnsError> {
        let mut full = vec!["netns", "exec", &self.name];
        full.extend_from_slice(argv);
        ip(&full)
    }

    /// A listener on the namespace's `127.0.0.1:0` piping every connection to `target` on the
    /// host; returns its port. Runs on the current runtime until the process ends.
    pub async fn relay(&self, target: SocketAddr) -> Result<u16, NetnsError> {
        self.relay_on(0, target).await
    }

    /// Like [`Self::relay`] on the namespace's `127.0.0.1:port` (0 = any free port): with the
    /// target's own port, a URL naming the host's loopback works unchanged inside.
    pub async fn relay_on(&self, port: u16, target: SocketAddr) -> Result<u16, NetnsError> {
        let listener = self.listen_inside(port)?;
        let port = listener
            .local_addr()
            .map_err(|source| NetnsError::Io {
                what: "relay address",
                source,
            })?
            .port();
        listener
            .set_nonblocking(true)
            .map_err(|source| NetnsError::Io {
                what: "relay listener",
                source,
            })?;
        let listener = TcpListener::from_std(listener).map_err(|source| NetnsError::Io {
            what: "relay listener",
            source,
        })?;
        tokio::spawn(async move {
            while let Ok((mut inside, _)) = listener.accept().await {
                tokio::spawn(async move {
                    if let Ok(mut host) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inside, &mut host).await;
                    }
                });
            }
        });
        Ok(port)
    }

    /// Binds `127.0.0.1:0` inside the namespace.
    fn listen_inside(&self, port: u16) -> Result<std::net::TcpListener, NetnsError> {
        inside(&self.name, move || {
            std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, port))
        })
        .map_err(|source| NetnsError::Io {
            what: "relay listener in the namespace",
            source,
        })
    }
}

/// Connects to `127.0.0.1:port` inside namespace `name`: `run` reaches its sidecar's admin
/// listener without depending on the host's route to the workload address (a host whose
/// network answers any TCP connection, or routes 10.201/16 elsewhere, would otherwise hand the
/// call to a stranger).
pub fn connect_inside(name: &str, port: u16) -> io::Result<std::net::TcpStream> {
    // A loopback connect completes or fails at once; the bound only guards a wedged namespace.
    const CONNECT_LIMIT: std::time::Duration = std::time::Duration::from_secs(2);
    let stream = inside(name, move || {
        std::net::TcpStream::connect_timeout(&(Ipv4Addr::LOCALHOST, port).into(), CONNECT_LIMIT)
    })?;
    stream.set_nonblocking(true)?;
    Ok(stream)
}

/// Runs `f` on a short-lived thread that entered namespace `name` (a socket stays in the
/// namespace it was created in; the rest of `run` stays on the host).
fn inside<T: Send + 'static>(
    name: &str,
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    let path = format!("/run/netns/{name}");
    std::thread::spawn(move || {
        let ns = std::fs::File::open(&path)?;
        enter(&ns)?;
        f()
    })
    .join()
    .map_err(|_| io::Error::other("namespace thread panicked"))?
}

impl Drop for Isolation {
    fn drop(&mut self) {
        let _lock = Lock::take();
        // Deleted explicitly: a deleted namespace releases its interfaces asynchronously,
        // and the bridge must see this port gone now to know whether it is still in use.
        if let Some(host_if) = &self.host_if {
            let _ = ip(&["link", "del", host_if]);
        }
        remove_namespace(&self.name);
        remove_bridge_if_unused();
    }
}

/// Moves the calling thread into the network namespace `ns`.
#[allow(unsafe_code)]
fn enter(ns: &std::fs::File) -> io::Result<()> {
    // SAFETY: setns(2) on a valid open fd; it changes only the calling thread's namespace, and
    // that thread is a dedicated one that ends right after.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// An exclusive `flock` on `LOCK_FILE`, released on drop (or when the process dies).
struct Lock {
    _file: std::fs::File,
}

impl Lock {
    #[allow(unsafe_code)]
    fn take() -> Result<Self, NetnsError> {
        let file = std::fs::File::create(LOCK_FILE).map_err(|source| NetnsError::Io {
            what: "creating the lock file",
            source,
        })?;
        // SAFETY: flock(2) on a valid fd we own; blocking is fine: holders only run a few
        // `ip` commands.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            return Err(NetnsError::Io {
                what: "locking",
                source: io::Error::last_os_error(),
            });
        }
        Ok(Lock { _file: file })
    }
}

fn ensure_bridge() -> Result<(), NetnsError> {
    if ip(&["link", "show", BRIDGE]).is_err() {
        // A fixed MAC: otherwise a bridge takes one of its ports' and changes it as ports come
        // and go, leaving the namespaces' cached gateway entry stale.
        ip(&["link", "add", BRIDGE, "address", &mac(1), "type", "bridge"])?;
        ip(&[
            "addr",
            "add",
            &format!("{BRIDGE_ADDR}/{PREFIX_LEN}"),
            "dev",
            BRIDGE,
        ])?;
    }
    ip(&["link", "set", BRIDGE, "up"]).map(drop)
}

/// The locally administered MAC of 10.201.0.`host` (02:00 + the IPv4 address).
fn mac(host: u8) -> String {
    let [a, b, c, _] = BRIDGE_ADDR.octets();
    format!("02:00:{a:02x}:{b:02x}:{c:02x}:{host:02x}")
}

fn remove_bridge_if_unused() {
    let ports = ip(&["-o", "link", "show", "master", BRIDGE]);
    if ports.is_ok_and(|o| o.stdout.is_empty()) {
        let _ = ip(&["link", "del", BRIDGE]);
    }
}

/// Kills what is left inside `name` (processes an app forked), then deletes it; its veth pair
/// and iptables rules go with it.
fn remove_namespace(name: &str) {
    if let Ok(out) = ip(&["netns", "pids", name]) {
        for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
            if let Ok(pid) = pid.parse::<i32>() {
                let pid = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
    let _ = ip(&["netns", "del", name]);
}

/// Namespaces of `run`s that were killed before cleaning up (their pid is gone).
fn remove_stale() {
    let Ok(out) = ip(&["netns", "list"]) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or_default();
        if let Some(pid) = name.strip_prefix(NS_PREFIX)
            && !std::path::Path::new("/proc").join(pid).exists()
        {
            remove_namespace(name);
        }
    }
}

fn ip(args: &[&str]) -> Result<Output, NetnsError> {
    let command = format!("ip {}", args.join(" "));
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|source| NetnsError::Spawn {
            command: command.clone(),
            source,
        })?;
    if !out.status.success() {
        return Err(NetnsError::Command {
            command,
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn macs_follow_the_address_and_are_locally_administered() {
        assert_eq!(super::mac(1), "02:00:0a:c9:00:01");
        assert_eq!(super::mac(254), "02:00:0a:c9:00:fe");
    }
}
