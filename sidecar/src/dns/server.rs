//! The DNS server: UDP and TCP listeners on one port, local answers for mesh names and
//! bounded forwarding of everything else to the captured upstream resolvers.

use std::future::Future;
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;
use tokio::time::timeout;

use super::message::{self, ParseError, Query};
use super::{MeshNames, VipLookup};

/// TTL of mesh answers: a VIP lives as long as its service, but a deleted and re-created
/// service should not stay cached in the app's resolver for long; 30 s bounds that.
const MESH_TTL: u32 = 30;
/// Largest query accepted over UDP: stub resolvers advertise at most 4096 bytes of EDNS
/// payload, and their queries are far smaller than that.
const UDP_QUERY_MAX: usize = 4096;
/// Largest upstream UDP answer relayed: the maximum datagram, so nothing is cut.
const UDP_ANSWER_MAX: usize = 65_535;
/// Forwarded queries in flight at once; beyond that a UDP query is dropped (the client
/// retries) rather than letting a flood grow memory and sockets without bound.
const MAX_INFLIGHT: usize = 512;
/// Concurrent TCP clients (DNS over TCP is the rare fallback for truncated answers).
const MAX_TCP_CONNS: usize = 128;
/// Idle TCP connections are closed after this (RFC 7766 §6.2.3 recommends seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Attempts to bind TCP on the port the kernel picked for UDP (port 0 only): it fails only
/// if another process grabbed that TCP port in between.
const SAME_PORT_ATTEMPTS: usize = 8;

/// Server settings.
#[derive(Clone, Debug)]
pub struct DnsConfig {
    /// Where to listen (UDP and TCP, same port); port 0 picks one.
    pub listen: SocketAddr,
    /// Also listen on [::1] at the same port: the IPv6 rules of `init` redirect DNS there.
    /// Skipped (with a log line) where the host has no IPv6 loopback.
    pub also_ipv6_loopback: bool,
    /// Resolvers for non-mesh names, tried in order (from resolv.conf at start-up).
    pub upstreams: Vec<SocketAddr>,
    pub names: MeshNames,
    /// Per-upstream wait. 2 s: glibc waits 5 s per try, so even two dead upstreams produce a
    /// SERVFAIL before the client's own retry.
    pub forward_timeout: Duration,
}

/// A bound DNS server; `serve` runs it.
pub struct DnsServer {
    local_addr: SocketAddr,
    /// One UDP socket and one TCP listener per listen address.
    listeners: Vec<(UdpSocket, TcpListener)>,
    shared: Arc<Shared>,
}

struct Shared {
    upstreams: Vec<SocketAddr>,
    names: MeshNames,
    forward_timeout: Duration,
    lookup: Arc<dyn VipLookup>,
    inflight: Arc<Semaphore>,
    tcp_conns: Arc<Semaphore>,
}

/// How a query arrived (and so how it is forwarded).
#[derive(Clone, Copy)]
enum Transport {
    Udp,
    Tcp,
}

/// What to do with one incoming message.
enum Decision {
    Reply(Vec<u8>),
    /// Not answerable from what is known now: fetch (mesh names) or forward.
    Forward(Query),
    Ignore,
}

// === impl DnsConfig ===

impl DnsConfig {
    /// Listens on 127.0.0.1:`port` (where `init`'s REDIRECT delivers), forwarding to
    /// `upstreams`.
    pub fn new(port: u16, upstreams: Vec<SocketAddr>, names: MeshNames) -> Self {
        DnsConfig {
            listen: SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port),
            also_ipv6_loopback: true,
            upstreams,
            names,
            forward_timeout: Duration::from_secs(2),
        }
    }
}

// === impl DnsServer ===

impl DnsServer {
    pub async fn bind(cfg: DnsConfig, lookup: Arc<dyn VipLookup>) -> io::Result<DnsServer> {
        let (udp, tcp) = bind_pair(cfg.listen).await?;
        let local_addr = udp.local_addr()?;
        let mut listeners = vec![(udp, tcp)];
        if cfg.also_ipv6_loopback && cfg.listen.is_ipv4() {
            match bind_pair((Ipv6Addr::LOCALHOST, local_addr.port()).into()).await {
                Ok(pair) => listeners.push(pair),
                Err(e) => tracing::info!(error = %e, "dns: not listening on [::1]"),
            }
        }
        // Never forward to ourselves (resolv.conf pointing at this very port would loop).
        let own: Vec<SocketAddr> = listeners
            .iter()
            .filter_map(|(udp, _)| udp.local_addr().ok())
            .collect();
        let upstreams = cfg
            .upstreams
            .into_iter()
            .filter(|u| !own.contains(u))
            .collect();
        Ok(DnsServer {
            local_addr,
            listeners,
            shared: Arc::new(Shared {
                upstreams,
                names: cfg.names,
                forward_timeout: cfg.forward_timeout,
                lookup,
                inflight: Arc::new(Semaphore::new(MAX_INFLIGHT)),
                tcp_conns: Arc::new(Semaphore::new(MAX_TCP_CONNS)),
            }),
        })
    }

    /// The bound address (UDP and TCP share it).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes; dropping the task set then stops every loop.
    pub async fn serve(self, shutdown: impl Future<Output = ()>) {
        let mut loops = tokio::task::JoinSet::new();
        for (udp, tcp) in self.listeners {
            loops.spawn(udp_loop(Arc::new(udp), self.shared.clone()));
            loops.spawn(tcp_loop(tcp, self.shared.clone()));
        }
        shutdown.await;
    }
}

async fn bind_pair(listen: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let mut last = None;
    for _ in 0..SAME_PORT_ATTEMPTS {
        let udp = UdpSocket::bind(listen).await?;
        match TcpListener::bind(udp.local_addr()?).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if listen.port() == 0 => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port for UDP and TCP")))
}

async fn udp_loop(udp: Arc<UdpSocket>, shared: Arc<Shared>) {
    let mut buf = vec![0u8; UDP_QUERY_MAX];
    loop {
        let (len, from) = match udp.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                // ICMP errors from earlier sends surface here on Linux: not fatal.
                tracing::debug!(error = %e, "dns: udp receive");
                continue;
            }
        };
        let msg = buf[..len].to_vec();
        match shared.decide(&msg) {
            Decision::Reply(resp) => {
                let _ = udp.send_to(&resp, from).await;
            }
            Decision::Forward(query) => {
                let Ok(permit) = shared.inflight.clone().try_acquire_owned() else {
                    tracing::debug!(%from, "dns: too many queries in flight, dropped");
                    continue;
                };
                let (udp, shared) = (udp.clone(), shared.clone());
                tokio::spawn(async move {
                    let resp = shared.resolve(&msg, &query, Transport::Udp).await;
                    let _ = udp.send_to(&resp, from).await;
                    drop(permit);
                });
            }
            Decision::Ignore => {}
        }
    }
}

async fn tcp_loop(tcp: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, from)) = tcp.accept().await else {
            continue;
        };
        let Ok(permit) = shared.tcp_conns.clone().try_acquire_owned() else {
            tracing::debug!(%from, "dns: too many tcp clients, closed");
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _ = shared.serve_tcp(stream).await;
            drop(permit);
        });
    }
}

// === impl Shared ===

impl Shared {
    fn decide(&self, msg: &[u8]) -> Decision {
        let query = match message::parse_query(msg) {
            Ok(q) => q,
            Err(ParseError::Short | ParseError::NotQuery) => return Decision::Ignore,
            Err(ParseError::Opcode(_)) => {
                return reply(message::error_for_unparsed(msg, message::RCODE_NOTIMP));
            }
            Err(ParseError::Questions(_) | ParseError::Malformed) => {
                return reply(message::error_for_unparsed(msg, message::RCODE_FORMERR));
            }
        };
        match self.mesh_vip(&query) {
            Some(ip) => Decision::Reply(message::answer(msg, &query, Some(ip), MESH_TTL)),
            None => Decision::Forward(query),
        }
    }

    fn mesh_vip(&self, query: &Query) -> Option<IpAddr> {
        let (service, namespace) = self.mesh_name(query)?;
        let vip = self.lookup.vip(service, namespace);
        tracing::debug!(service, namespace, ?vip, "dns: mesh lookup");
        vip
    }

    fn mesh_name<'q>(&'q self, query: &'q Query) -> Option<(&'q str, &'q str)> {
        if query.qclass != message::CLASS_IN {
            return None;
        }
        self.names.service_of(query.name.as_deref()?)
    }

    /// The slow path of a query not answered at once: a mesh-shaped name gets one chance to be
    /// fetched (on-demand subscription, bounded by the forward timeout) before it is treated as
    /// a name the mesh does not know and forwarded.
    async fn resolve(&self, msg: &[u8], query: &Query, transport: Transport) -> Vec<u8> {
        if let Some((service, namespace)) = self.mesh_name(query) {
            let _ = timeout(self.forward_timeout, self.lookup.fetch(service, namespace)).await;
            if let Some(ip) = self.mesh_vip(query) {
                return message::answer(msg, query, Some(ip), MESH_TTL);
            }
        }
        match transport {
            Transport::Udp => self.forward_udp(msg, query).await,
            Transport::Tcp => self.forward_tcp(msg, query).await,
        }
    }

    async fn forward_udp(&self, msg: &[u8], query: &Query) -> Vec<u8> {
        for upstream in &self.upstreams {
            match timeout(self.forward_timeout, udp_exchange(*upstream, msg, query.id)).await {
                Ok(Ok(resp)) => return resp,
                Ok(Err(e)) => tracing::debug!(%upstream, error = %e, "dns: upstream failed"),
                Err(_) => tracing::debug!(%upstream, "dns: upstream timed out"),
            }
        }
        message::error_for(msg, query, message::RCODE_SERVFAIL)
    }

    async fn forward_tcp(&self, msg: &[u8], query: &Query) -> Vec<u8> {
        for upstream in &self.upstreams {
            match timeout(self.forward_timeout, tcp_exchange(*upstream, msg)).await {
                Ok(Ok(resp)) => return resp,
                Ok(Err(e)) => tracing::debug!(%upstream, error = %e, "dns: upstream failed"),
                Err(_) => tracing::debug!(%upstream, "dns: upstream timed out"),
            }
        }
        message::error_for(msg, query, message::RCODE_SERVFAIL)
    }

    /// Length-prefixed messages (RFC 1035 §4.2.2), answered in order, until idle or closed.
    async fn serve_tcp(&self, mut stream: TcpStream) -> io::Result<()> {
        loop {
            let Ok(len) = timeout(TCP_IDLE, stream.read_u16()).await else {
                return Ok(());
            };
            let mut msg = vec![0u8; usize::from(len?)];
            timeout(TCP_IDLE, stream.read_exact(&mut msg))
                .await
                .map_err(io::Error::other)??;
            let resp = match self.decide(&msg) {
                Decision::Reply(resp) => resp,
                Decision::Forward(query) => self.resolve(&msg, &query, Transport::Tcp).await,
                Decision::Ignore => return Ok(()),
            };
            write_framed(&mut stream, &resp).await?;
        }
    }
}

fn reply(resp: Option<Vec<u8>>) -> Decision {
    resp.map_or(Decision::Ignore, Decision::Reply)
}

/// One UDP query/answer with `upstream` from a fresh socket (a random source port per query
/// makes spoofed answers harder); answers with another id are ignored.
async fn udp_exchange(upstream: SocketAddr, msg: &[u8], id: u16) -> io::Result<Vec<u8>> {
    let local: IpAddr = if upstream.is_ipv4() {
        Ipv4Addr::UNSPECIFIED.into()
    } else {
        Ipv6Addr::UNSPECIFIED.into()
    };
    let sock = UdpSocket::bind((local, 0)).await?;
    sock.connect(upstream).await?;
    sock.send(msg).await?;
    let mut buf = vec![0u8; UDP_ANSWER_MAX];
    loop {
        let len = sock.recv(&mut buf).await?;
        if len >= 2 && buf[..2] == id.to_be_bytes() && buf.get(2).is_some_and(|f| f & 0x80 != 0) {
            buf.truncate(len);
            return Ok(buf);
        }
    }
}

async fn tcp_exchange(upstream: SocketAddr, msg: &[u8]) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    write_framed(&mut stream, msg).await?;
    let len = stream.read_u16().await?;
    let mut resp = vec![0u8; usize::from(len)];
    stream.read_exact(&mut resp).await?;
    Ok(resp)
}

async fn write_framed(stream: &mut TcpStream, msg: &[u8]) -> io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(|_| io::Error::other("dns message over 64 KiB"))?;
    let mut framed = Vec::with_capacity(msg.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(msg);
    stream.write_all(&framed).await
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
