//! First-request HTTP/1 head validation before hyper: smuggling and header-size checks that
//! answer with the proxy's own `x-mesh-error` response.

use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::error::{Cause, raw_http1_response};
use super::io::Prefixed;

/// Default limit on a request head (request line + headers). 64 KiB is 8× hyper's and
/// nginx's default buffer, so large cookies and JWTs pass, yet bounds memory per connection.
pub const DEFAULT_MAX_HEADER_BYTES: usize = 64 * 1024;
/// Headers per request: 128 is well above real traffic (browsers send < 30) and bounds the
/// parser's stack array.
const MAX_HEADERS: usize = 128;
/// A client that began a request has this long to finish its head. 10 s tolerates slow mobile
/// links and frees slowloris connections quickly.
const HEAD_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the first request head (keeping every byte for replay) and validates it. On a bad
/// head it writes the proxy's error response and returns `Err` (the caller drops the
/// connection); otherwise the IO is returned ready for hyper.
pub async fn check_first_head<T>(io: Prefixed<T>, max: usize) -> Result<Prefixed<T>, Cause>
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let (prefix, mut inner) = io.into_parts();
    let mut buf = BytesMut::from(&prefix[..]);
    let verdict = tokio::time::timeout(HEAD_READ_TIMEOUT, async {
        loop {
            match validate(&buf, max) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(c) => return Err(c),
            }
            buf.reserve(4096);
            match inner.read_buf(&mut buf).await {
                Ok(0) | Err(_) => return Err(Cause::BadRequest),
                Ok(_) => {}
            }
        }
    })
    .await
    .unwrap_or(Err(Cause::BadRequest));
    if let Err(cause) = verdict {
        cause.record(&"rejected HTTP/1 request head");
        // Best effort: the client may already be gone.
        let _ = inner.write_all(&raw_http1_response(cause)).await;
        let _ = inner.shutdown().await;
        return Err(cause);
    }
    Ok(Prefixed::new(buf.freeze(), inner))
}

/// `Ok(true)`: a complete, acceptable head; `Ok(false)`: need more bytes.
pub fn validate(buf: &[u8], max: usize) -> Result<bool, Cause> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(buf) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() > max => return Err(Cause::HeadersTooLarge),
        Ok(httparse::Status::Partial) => return Ok(false),
        Err(httparse::Error::TooManyHeaders) => return Err(Cause::HeadersTooLarge),
        Err(_) => return Err(Cause::BadRequest),
    };
    if len > max {
        return Err(Cause::HeadersTooLarge);
    }
    let mut content_length: Option<&[u8]> = None;
    let mut chunked_last = None;
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            let v = h.value.trim_ascii();
            if v.is_empty() || !v.iter().all(u8::is_ascii_digit) {
                return Err(Cause::BadRequest);
            }
            // Conflicting Content-Length values are a smuggling vector (RFC 9112 §6.3).
            if content_length.is_some_and(|prev| prev != v) {
                return Err(Cause::BadRequest);
            }
            content_length = Some(v);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            let last = h
                .value
                .rsplit(|&b| b == b',')
                .next()
                .unwrap_or(b"")
                .trim_ascii();
            chunked_last = Some(last.eq_ignore_ascii_case(b"chunked"));
        }
    }
    match (content_length, chunked_last) {
        // Both framings at once: rejected rather than picking one (RFC 9112 §6.1 allows either).
        (Some(_), Some(_)) => Err(Cause::BadRequest),
        (_, Some(false)) => Err(Cause::BadRequest),
        _ if req.version == Some(0) && chunked_last.is_some() => Err(Cause::BadRequest),
        _ => Ok(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn smuggling_and_size() {
        let ok = b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc";
        assert_eq!(validate(ok, 1024), Ok(true));
        let both = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n";
        assert_eq!(validate(both, 1024), Err(Cause::BadRequest));
        let two = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n";
        assert_eq!(validate(two, 1024), Err(Cause::BadRequest));
        let same = b"POST / HTTP/1.1\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\n";
        assert_eq!(validate(same, 1024), Ok(true));
        let te = b"POST / HTTP/1.1\r\nTransfer-Encoding: gzip\r\n\r\n";
        assert_eq!(validate(te, 1024), Err(Cause::BadRequest));
        let partial = b"GET / HTTP/1.1\r\nHost: a\r\n";
        assert_eq!(validate(partial, 1024), Ok(false));
        assert_eq!(validate(partial, 10), Err(Cause::HeadersTooLarge));
        assert_eq!(
            validate(b"GET / HTTP/1.1\r\nbad header\r\n\r\n", 1024),
            Err(Cause::BadRequest)
        );
    }
}
