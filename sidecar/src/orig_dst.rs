//! The original destination of a redirected connection (`SO_ORIGINAL_DST`).
//!
//! After an iptables `REDIRECT`, the accepted socket's local address is the sidecar's listener;
//! netfilter's conntrack still knows where the workload meant to connect, and exposes it through
//! `SO_ORIGINAL_DST` (IPv4) or `IP6T_SO_ORIGINAL_DST` (IPv6).

use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::socket::{
    SockaddrIn, SockaddrIn6, SockaddrStorage, getsockname, getsockopt, sockopt,
};

/// The address the peer originally dialled before a `REDIRECT` sent it to us.
///
/// Errors with `ErrorKind::NotFound` when the connection was not redirected (e.g. an
/// explicit-proxy client connecting to the listener directly): callers treat that as
/// "no original destination", not as a failure of the connection. (The kernel says ENOENT
/// when conntrack has no entry, or returns our own address when it tracks the connection but
/// did not NAT it; both become NotFound.)
///
/// Works for `std` and `tokio` TCP streams alike (anything that is a socket fd). An IPv4
/// connection accepted on a dual-stack IPv6 listener (a v4-mapped peer) is tracked by IPv4
/// conntrack; both lookups are tried, and a v4-mapped answer is returned as plain IPv4.
pub fn original_dst<S: AsFd>(sock: &S) -> io::Result<SocketAddr> {
    let local: SockaddrStorage = getsockname(sock.as_fd().as_raw_fd()).map_err(io::Error::from)?;
    let (orig, local) = if let Some(l) = local.as_sockaddr_in() {
        (v4(sock)?, SocketAddr::V4(SocketAddrV4::from(*l)))
    } else if let Some(l) = local.as_sockaddr_in6() {
        let orig = v6(sock).or_else(|e6| v4(sock).map_err(|_| e6))?;
        (orig, unmap(SocketAddrV6::from(*l)))
    } else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an IP socket",
        ));
    };
    // With conntrack loaded but no NAT on this connection, the kernel answers with the
    // unchanged destination, i.e. our own address: that is "not redirected" too.
    if orig == local {
        return Err(io::Error::new(
            io::ErrorKind::NotFound,
            "connection was not redirected",
        ));
    }
    Ok(orig)
}

fn v4<S: AsFd>(sock: &S) -> io::Result<SocketAddr> {
    let raw = getsockopt(sock, sockopt::OriginalDst).map_err(io::Error::from)?;
    Ok(SocketAddr::V4(SocketAddrV4::from(SockaddrIn::from(raw))))
}

fn v6<S: AsFd>(sock: &S) -> io::Result<SocketAddr> {
    let raw = getsockopt(sock, sockopt::Ip6tOriginalDst).map_err(io::Error::from)?;
    Ok(unmap(SocketAddrV6::from(SockaddrIn6::from(raw))))
}

/// A v4-mapped IPv6 address as the plain IPv4 address it stands for.
fn unmap(addr: SocketAddrV6) -> SocketAddr {
    match addr.ip().to_ipv4_mapped() {
        Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, addr.port())),
        None => SocketAddr::V6(addr),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Without a redirect there is no conntrack NAT entry: the answer is NotFound, which the
    /// outbound listener reads as "explicit-proxy client" (a real socket, no root needed).
    #[test]
    fn not_redirected_is_not_found() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (server, _) = listener.accept().unwrap();
        for sock in [&client, &server] {
            let err = original_dst(sock).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::NotFound, "{err}");
        }
    }

    #[test]
    fn non_ip_socket_is_an_error_not_a_panic() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(original_dst(&a).is_err());
    }
}
