//! The original destination of a redirected connection (`SO_ORIGINAL_DST`).
//!
//! After an iptables `REDIRECT`, the accepted socket's local address is the sidecar's listener;
//! netfilter's conntrack still knows where the workload meant to connect, and exposes it through
//! `SO_ORIGINAL_DST` (IPv4) or `IP6T_SO_ORIGINAL_DST` (IPv6).

use std::io;
use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsFd, AsRawFd};

use nix::sys::socket::{
    AddressFamily, SockaddrIn, SockaddrIn6, SockaddrLike, SockaddrStorage, getsockname, getsockopt,
    sockopt,
};

/// The address the peer originally dialled before a `REDIRECT` sent it to us.
///
/// Errors with `ErrorKind::NotFound` (ENOENT) when the connection was not redirected (e.g. an
/// explicit-proxy client connecting to the listener directly): callers treat that as
/// "no original destination", not as a failure of the connection.
///
/// Works for `std` and `tokio` TCP streams alike (anything that is a socket fd). An IPv4
/// connection accepted on a dual-stack IPv6 listener (a v4-mapped peer) is tracked by IPv4
/// conntrack; both lookups are tried, and a v4-mapped answer is returned as plain IPv4.
pub fn original_dst<S: AsFd>(sock: &S) -> io::Result<SocketAddr> {
    let local: SockaddrStorage = getsockname(sock.as_fd().as_raw_fd()).map_err(io::Error::from)?;
    match local.family() {
        Some(AddressFamily::Inet6) => v6(sock).or_else(|e6| v4(sock).map_err(|_| e6)),
        Some(AddressFamily::Inet) => v4(sock),
        _ => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not an IP socket",
        )),
    }
}

fn v4<S: AsFd>(sock: &S) -> io::Result<SocketAddr> {
    let raw = getsockopt(sock, sockopt::OriginalDst).map_err(io::Error::from)?;
    Ok(SocketAddr::V4(SocketAddrV4::from(SockaddrIn::from(raw))))
}

fn v6<S: AsFd>(sock: &S) -> io::Result<SocketAddr> {
    let raw = getsockopt(sock, sockopt::Ip6tOriginalDst).map_err(io::Error::from)?;
    let addr = SocketAddrV6::from(SockaddrIn6::from(raw));
    Ok(match addr.ip().to_ipv4_mapped() {
        Some(v4) => SocketAddr::V4(SocketAddrV4::new(v4, addr.port())),
        None => SocketAddr::V6(addr),
    })
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
            match original_dst(sock) {
                // Some kernels answer with the unmodified destination when conntrack is loaded
                // but no NAT happened: that is the listener itself, never something else.
                Ok(addr) => assert!(addr.ip().is_loopback(), "{addr}"),
                Err(e) => assert_eq!(e.kind(), io::ErrorKind::NotFound, "{e}"),
            }
        }
    }

    #[test]
    fn non_ip_socket_is_an_error_not_a_panic() {
        let (a, _b) = std::os::unix::net::UnixStream::pair().unwrap();
        assert!(original_dst(&a).is_err());
    }
}
