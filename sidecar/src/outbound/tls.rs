//! Outbound mTLS: wrap a connection to a peer sidecar in TLS when its endpoint has an identity.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::identity::SpiffeId;
use crate::proxy::Cause;
use crate::state::Name;
use crate::tls::{Alpn, MeshConnector};

/// A connection to an upstream: TLS to a meshed peer, plaintext otherwise.
#[derive(Debug)]
pub enum UpstreamIo {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// TLS when this sidecar has an identity (`tls`) and the endpoint names one; plaintext when
/// either is missing (an unmeshed endpoint, or a sidecar started without a join token).
/// A failed handshake is `tls-handshake` (502): the peer is not who discovery said it is.
pub async fn secure(
    tls: Option<&MeshConnector>,
    tcp: TcpStream,
    addr: SocketAddr,
    identity: Option<&Name>,
    alpn: Alpn,
) -> Result<UpstreamIo, (Cause, String)> {
    let (Some(connector), Some(identity)) = (tls, identity) else {
        return Ok(UpstreamIo::Plain(tcp));
    };
    let expected = SpiffeId::parse(identity).map_err(|e| {
        (
            Cause::TlsHandshake,
            format!("{addr}: endpoint identity {identity:?}: {e}"),
        )
    })?;
    connector
        .handshake(tcp, addr, &expected, alpn)
        .await
        .map(|s| UpstreamIo::Tls(Box::new(s)))
        .map_err(|e| (Cause::TlsHandshake, format!("{addr} ({expected}): {e}")))
}

impl AsyncRead for UpstreamIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_read(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_write(cx, buf),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_flush(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            UpstreamIo::Plain(s) => Pin::new(s).poll_shutdown(cx),
            UpstreamIo::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
