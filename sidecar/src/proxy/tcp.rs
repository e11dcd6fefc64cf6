//! Opaque TCP: bidirectional copy and the sidecar-to-sidecar `MESH-TCP` preamble.

use std::io;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// Copy buffer per direction. 16 KiB is the TLS record maximum, so once mTLS wraps these
/// streams one read fills at most one record; larger buffers did not raise loopback throughput.
const COPY_BUF: usize = 16 * 1024;

/// Copies both ways until both sides finish; returns bytes (a→b, b→a).
pub async fn copy<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    // Counted open now, closed with its duration when this returns (crate::observe).
    let conn = crate::observe::TcpConn::open();
    let res = tokio::io::copy_bidirectional_with_sizes(a, b, COPY_BUF, COPY_BUF).await;
    if let Ok((up, down)) = res {
        conn.bytes(up, down);
    }
    res
}

/// Writes `MESH-TCP <app_port>\n` to a peer sidecar.
pub async fn write_preamble<W: AsyncWrite + Unpin>(w: &mut W, app_port: u16) -> io::Result<()> {
    // "MESH-TCP " + 5 digits + "\n" = 15 bytes; a stack buffer avoids allocating.
    let mut buf = [0u8; 16];
    let mut n = super::detect::MESH_TCP_PREFIX.len();
    buf[..n].copy_from_slice(super::detect::MESH_TCP_PREFIX);
    let digits = itoa(app_port, &mut buf[n..]);
    n += digits;
    buf[n] = b'\n';
    w.write_all(&buf[..=n]).await
}

fn itoa(mut v: u16, out: &mut [u8]) -> usize {
    let mut tmp = [0u8; 5];
    let mut i = tmp.len();
    loop {
        i -= 1;
        tmp[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    let len = tmp.len() - i;
    out[..len].copy_from_slice(&tmp[i..]);
    len
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn preamble_roundtrips_through_detection() {
        for port in [1u16, 80, 8080, 65535] {
            let mut v = Vec::new();
            write_preamble(&mut v, port).await.unwrap();
            assert_eq!(
                super::super::detect::classify(&v),
                super::super::detect::Verdict::Preamble(port, v.len())
            );
        }
    }
}
