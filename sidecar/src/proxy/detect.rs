//! Protocol detection by reading the first bytes: HTTP/1.x, HTTP/2 preface, TLS, mesh TCP
//! preamble, else opaque.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::io::Prefixed;

/// Detection timeout when the listener sets none. 500 ms: a client that speaks first sends its
/// first bytes within one round trip of connecting (sub-millisecond on loopback, tens of ms
/// across regions), so a live client is never misclassified, while a server-speaks-first
/// protocol not listed as such stalls only half a second before being proxied as opaque TCP
/// (Linkerd's 10 s default makes MySQL/SMTP clients time out instead).
pub const DEFAULT_DETECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Bytes read while detecting. 16 KiB holds any real HTTP/1 request line; a longer line
/// whose method looked valid is still treated as HTTP/1 so the HTTP layer answers 414/431.
pub const DETECT_BUF: usize = 16 * 1024;

/// The HTTP/2 connection preface (RFC 9113 §3.4).
pub const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// First line of an opaque TCP stream between sidecars: `MESH-TCP <app_port>\n`.
pub const MESH_TCP_PREFIX: &[u8] = b"MESH-TCP ";

/// What the first bytes of a connection are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Http1,
    Http2,
    /// A TLS ClientHello: passed through untouched.
    Tls,
    /// Mesh opaque-TCP preamble naming the target app port; the preamble line is consumed.
    MeshTcp(u16),
    /// Anything else, including a client that sent nothing before the timeout.
    Opaque,
}

/// A verdict on a prefix of a stream, or "need more bytes".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Known(Detected),
    /// `Known(MeshTcp)` consumes this many preamble bytes.
    Preamble(u16, usize),
    NeedMore,
}

/// Classifies the first bytes of a stream. Pure and total: never panics on any input.
pub fn classify(buf: &[u8]) -> Verdict {
    use Verdict::*;
    if buf.is_empty() {
        return NeedMore;
    }
    if buf.len() < H2_PREFACE.len() && H2_PREFACE.starts_with(buf) {
        return NeedMore;
    }
    if buf.starts_with(H2_PREFACE) {
        return Known(Detected::Http2);
    }
    // TLS record: handshake (0x16), version major 3, then a ClientHello (type 1) at byte 5.
    if buf[0] == 0x16 {
        return match buf {
            [_, 3, _, _, _, 1, ..] => Known(Detected::Tls),
            [_] | [_, 3] | [_, 3, _] | [_, 3, _, _] | [_, 3, _, _, _] => NeedMore,
            _ => Known(Detected::Opaque),
        };
    }
    if let Some(v) = preamble(buf) {
        return v;
    }
    http1(buf)
}

fn preamble(buf: &[u8]) -> Option<Verdict> {
    let n = buf.len().min(MESH_TCP_PREFIX.len());
    if buf[..n] != MESH_TCP_PREFIX[..n] {
        return None;
    }
    if buf.len() <= MESH_TCP_PREFIX.len() {
        return Some(Verdict::NeedMore);
    }
    let rest = &buf[MESH_TCP_PREFIX.len()..];
    // A port is at most 5 digits, so the newline is within 6 bytes.
    let Some(nl) = rest.iter().take(6).position(|&b| b == b'\n') else {
        return Some(if rest.len() < 6 && rest.iter().all(u8::is_ascii_digit) {
            Verdict::NeedMore
        } else {
            Verdict::Known(Detected::Opaque)
        });
    };
    let port = std::str::from_utf8(&rest[..nl])
        .ok()
        .and_then(|s| s.parse::<u16>().ok());
    Some(match port {
        Some(p) => Verdict::Preamble(p, MESH_TCP_PREFIX.len() + nl + 1),
        None => Verdict::Known(Detected::Opaque),
    })
}

/// `METHOD SP target SP HTTP/1.x CRLF`, rejecting as early as a byte rules it out.
fn http1(buf: &[u8]) -> Verdict {
    // Longest registered method (UPDATEREDIRECTREF) is 17 bytes; 20 leaves room for others.
    const MAX_METHOD: usize = 20;
    let mut i = 0;
    while i < buf.len() && buf[i] != b' ' {
        if i >= MAX_METHOD || !(buf[i].is_ascii_uppercase() || buf[i] == b'-' || buf[i] == b'_') {
            return Verdict::Known(Detected::Opaque);
        }
        i += 1;
    }
    if i == buf.len() {
        return Verdict::NeedMore;
    }
    if i == 0 {
        return Verdict::Known(Detected::Opaque);
    }
    let Some(nl) = buf[i..].iter().position(|&b| b == b'\n') else {
        if buf[i + 1..]
            .iter()
            .any(|&b| b < 0x20 && b != b'\r' && b != b'\t')
        {
            return Verdict::Known(Detected::Opaque);
        }
        return if buf.len() >= DETECT_BUF {
            Verdict::Known(Detected::Http1)
        } else {
            Verdict::NeedMore
        };
    };
    let line = &buf[..i + nl];
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    let ok = line.len() >= 9
        && line[line.len() - 9..line.len() - 1] == *b" HTTP/1."
        && line[line.len() - 1].is_ascii_digit();
    Verdict::Known(if ok {
        Detected::Http1
    } else {
        Detected::Opaque
    })
}

/// Detection as the listener decided it: a server-first port (`skip`) is opaque at once (its
/// app speaks first; waiting would only add the timeout), anything else goes through
/// [`detect`]. `None` when the connection failed while being read (logged for `side`).
pub async fn detect_unless_skipped<T: AsyncRead + Unpin>(
    io: T,
    skip: bool,
    timeout: Duration,
    side: &'static str,
) -> Option<(Detected, Prefixed<T>)> {
    if skip {
        return Some((Detected::Opaque, Prefixed::new(bytes::Bytes::new(), io)));
    }
    match detect(io, timeout).await {
        Ok(d) => Some(d),
        Err(e) => {
            tracing::debug!(error = %e, side, "detection failed");
            None
        }
    }
}

/// Reads until the protocol is known or `timeout` passes (then: opaque). Returns the
/// protocol and the IO with every unconsumed byte replayed first.
pub async fn detect<T: AsyncRead + Unpin>(
    mut io: T,
    timeout: Duration,
) -> std::io::Result<(Detected, Prefixed<T>)> {
    // 1 KiB first read covers almost every request line and preface without a regrow.
    let mut buf = BytesMut::with_capacity(1024);
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        match classify(&buf) {
            Verdict::Known(d) => return Ok((d, Prefixed::new(buf.freeze(), io))),
            Verdict::Preamble(port, len) => {
                let rest = buf.split_off(len);
                return Ok((Detected::MeshTcp(port), Prefixed::new(rest.freeze(), io)));
            }
            Verdict::NeedMore if buf.len() >= DETECT_BUF => {
                return Ok((Detected::Opaque, Prefixed::new(buf.freeze(), io)));
            }
            Verdict::NeedMore => {}
        }
        if buf.capacity() == buf.len() {
            buf.reserve(buf.len().min(DETECT_BUF - buf.len()).max(1024));
        }
        match tokio::time::timeout_at(deadline, io.read_buf(&mut buf)).await {
            Err(_elapsed) => {
                crate::observe::counters().detect_timeout();
                tracing::debug!(bytes = buf.len(), "detect-timeout: proxying as opaque TCP");
                return Ok((Detected::Opaque, Prefixed::new(buf.freeze(), io)));
            }
            Ok(Ok(0)) => {
                // EOF: whatever arrived is opaque data (or nothing).
                return Ok((Detected::Opaque, Prefixed::new(buf.freeze(), io)));
            }
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use proptest::strategy::Strategy;

    use super::*;

    #[test]
    fn classifies_known_prefixes() {
        assert_eq!(
            classify(b"GET / HTTP/1.1\r\nHost: a\r\n"),
            Verdict::Known(Detected::Http1)
        );
        assert_eq!(
            classify(b"GET / HTTP/1.0\n"),
            Verdict::Known(Detected::Http1)
        );
        assert_eq!(classify(b"GE"), Verdict::NeedMore);
        assert_eq!(classify(b"GET /abc"), Verdict::NeedMore);
        assert_eq!(classify(H2_PREFACE), Verdict::Known(Detected::Http2));
        assert_eq!(classify(b"PRI * HT"), Verdict::NeedMore);
        assert_eq!(
            classify(&[0x16, 3, 1, 0, 200, 1, 0]),
            Verdict::Known(Detected::Tls)
        );
        assert_eq!(
            classify(b"MESH-TCP 8080\nhello"),
            Verdict::Preamble(8080, 14)
        );
        assert_eq!(classify(b"MESH-TCP 80"), Verdict::NeedMore);
        assert_eq!(
            classify(b"MESH-TCP 99999\n"),
            Verdict::Known(Detected::Opaque)
        );
        assert_eq!(
            classify(b"\x00\x01binary"),
            Verdict::Known(Detected::Opaque)
        );
        assert_eq!(classify(b"hello world\n"), Verdict::Known(Detected::Opaque));
        assert_eq!(
            classify(b"GET / SSH-2.0\r\n"),
            Verdict::Known(Detected::Opaque)
        );
    }

    proptest::proptest! {
        /// Once a prefix has a verdict, no longer input asks for more bytes again (the same
        /// property the `detect` fuzz target checks, here on random and HTTP-like inputs).
        #[test]
        fn verdicts_are_monotonic(
            data in proptest::prop_oneof![
                proptest::collection::vec(proptest::prelude::any::<u8>(), 0..64),
                "[A-Z]{1,8} /[a-z?=&]{0,10} HTTP/1\\.[01]\r\n".prop_map(String::into_bytes),
            ]
        ) {
            let mut known = false;
            for end in 0..=data.len() {
                match classify(&data[..end]) {
                    Verdict::NeedMore => proptest::prop_assert!(!known),
                    Verdict::Preamble(_, len) => {
                        proptest::prop_assert!(len <= end);
                        known = true;
                    }
                    Verdict::Known(_) => known = true,
                }
            }
        }
    }

    #[tokio::test]
    async fn detect_times_out_to_opaque_and_replays() {
        let (mut a, b) = tokio::io::duplex(64);
        use tokio::io::AsyncWriteExt;
        a.write_all(b"GET /x").await.unwrap();
        let (d, mut io) = detect(b, Duration::from_millis(50)).await.unwrap();
        assert_eq!(d, Detected::Opaque);
        let mut got = [0u8; 6];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"GET /x");
    }

    #[tokio::test]
    async fn preamble_is_consumed() {
        let (mut a, b) = tokio::io::duplex(64);
        use tokio::io::AsyncWriteExt;
        a.write_all(b"MESH-TCP 9\nxy").await.unwrap();
        let (d, mut io) = detect(b, Duration::from_secs(5)).await.unwrap();
        assert_eq!(d, Detected::MeshTcp(9));
        let mut got = [0u8; 2];
        io.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"xy");
    }
}
