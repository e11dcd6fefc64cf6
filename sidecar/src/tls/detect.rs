//! Protocol detection for permissive inbound ports: peek at the first bytes and tell TLS from plaintext.

use std::time::Duration;

use tokio::net::TcpStream;

/// How long a new inbound connection may stay silent before it is dropped. Mesh clients send
/// their first bytes immediately; 10 s only tolerates a heavily loaded peer. Server-first
/// protocols must be configured as opaque/server-first ports and never reach detection.
pub const DETECT_TIMEOUT: Duration = Duration::from_secs(10);

/// What the first bytes look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Tls,
    Plaintext,
    /// The peer closed before sending anything.
    Closed,
}

/// Peeks (without consuming) at the first bytes. A TLS connection starts with a handshake
/// record: content type 0x16 then major version 0x03. No plaintext protocol the mesh carries
/// (HTTP/1 methods, the HTTP/2 preface, `MESH-TCP`) starts with the control byte 0x16, so the
/// first byte decides; the second, when already there, confirms.
pub async fn detect(tcp: &TcpStream, timeout: Duration) -> std::io::Result<Detected> {
    let mut buf = [0u8; 2];
    let n = tokio::time::timeout(timeout, tcp.peek(&mut buf))
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "peer sent nothing before the detection timeout",
            )
        })??;
    Ok(match (n, buf) {
        (0, _) => Detected::Closed,
        (1, [0x16, _]) | (2, [0x16, 0x03]) => Detected::Tls,
        _ => Detected::Plaintext,
    })
}
