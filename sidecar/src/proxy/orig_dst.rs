//! The original destination of a redirected connection (`SO_ORIGINAL_DST`, iptables REDIRECT).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

use tokio::net::TcpStream;

/// The address the client dialled before iptables redirected it here; `None` when the
/// connection was not redirected (the socket option then fails or names this listener).
pub fn original_dst(stream: &TcpStream) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    let dst = lookup(stream, local.is_ipv6())?;
    (dst != local).then_some(dst)
}

#[cfg(target_os = "linux")]
fn lookup(stream: &TcpStream, v6: bool) -> Option<SocketAddr> {
    use nix::sys::socket::{getsockopt, sockopt};
    if v6 {
        let a = getsockopt(stream, sockopt::Ip6tOriginalDst).ok()?;
        Some(SocketAddr::V6(SocketAddrV6::new(
            Ipv6Addr::from(a.sin6_addr.s6_addr),
            u16::from_be(a.sin6_port),
            a.sin6_flowinfo,
            a.sin6_scope_id,
        )))
    } else {
        let a = getsockopt(stream, sockopt::OriginalDst).ok()?;
        Some(SocketAddr::V4(SocketAddrV4::new(
            Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr)),
            u16::from_be(a.sin_port),
        )))
    }
}

#[cfg(not(target_os = "linux"))]
fn lookup(_: &TcpStream, _: bool) -> Option<SocketAddr> {
    None
}
