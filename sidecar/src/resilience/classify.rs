//! Maps an HTTP client send error (hyper, h2, io) to a [`Cause`], deciding whether the request provably never reached the app.

use std::error::Error as StdError;
use std::io;

use crate::proxy::Cause;

/// The cause of a failed send, from the error hyper returned. Walks the source chain; the
/// first recognised error decides.
///
/// Retry-safe classifications are conservative: an HTTP/2 `REFUSED_STREAM` (RFC 9113 §8.7:
/// the peer did no processing), a stream failed by a *graceful* GOAWAY (`NO_ERROR`: h2 only
/// fails streams above the last-stream-id then), or a refused connection. Anything else after
/// the request may have been written is `upstream-reset`, never retried by default.
pub fn classify_client_error(err: &(dyn StdError + 'static)) -> Cause {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(cause) = e.downcast_ref::<Cause>() {
            return *cause;
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return classify_h2(h2);
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(cause) = io.get_ref().and_then(|i| i.downcast_ref::<Cause>()) {
                return *cause;
            }
            return match io.kind() {
                io::ErrorKind::ConnectionRefused => Cause::ConnectRefused,
                _ => Cause::UpstreamReset,
            };
        }
        cur = e.source();
    }
    Cause::UpstreamReset
}

fn classify_h2(e: &h2::Error) -> Cause {
    let reason = e.reason();
    if reason == Some(h2::Reason::REFUSED_STREAM) {
        return Cause::RefusedStream;
    }
    if e.is_go_away() && e.is_remote() && reason == Some(h2::Reason::NO_ERROR) {
        return Cause::RefusedStream;
    }
    Cause::UpstreamReset
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn io_errors() {
        let e = io::Error::from(io::ErrorKind::ConnectionRefused);
        assert_eq!(classify_client_error(&e), Cause::ConnectRefused);
        let e = io::Error::from(io::ErrorKind::ConnectionReset);
        assert_eq!(classify_client_error(&e), Cause::UpstreamReset);
        let e = io::Error::other("weird");
        assert_eq!(classify_client_error(&e), Cause::UpstreamReset);
    }

    #[test]
    fn h2_reasons() {
        let refused = h2::Error::from(h2::Reason::REFUSED_STREAM);
        assert_eq!(classify_client_error(&refused), Cause::RefusedStream);
        assert!(classify_client_error(&refused).is_retry_safe());
        let internal = h2::Error::from(h2::Reason::INTERNAL_ERROR);
        assert_eq!(classify_client_error(&internal), Cause::UpstreamReset);
    }

    #[test]
    fn a_cause_in_the_chain_wins() {
        let e = io::Error::other(Cause::TlsHandshake);
        assert_eq!(classify_client_error(&e), Cause::TlsHandshake);
    }
}
