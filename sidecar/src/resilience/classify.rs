//! Maps HTTP client errors (hyper, h2, io, connector) to a [`Cause`], deciding whether the request provably never reached the app.

use std::error::Error as StdError;
use std::io;

use super::errors::Cause;
use super::timeouts::classify_connect_io;

/// The cause of a failed attempt, from the error a hyper (or hyper-util legacy) client
/// returned. Walks the source chain; the first recognised error decides.
///
/// Retry-safe classifications are conservative: a connect error, an HTTP/2
/// `REFUSED_STREAM` (RFC 9113 §8.7: the peer did no processing), or a stream failed by a
/// *graceful* GOAWAY (`NO_ERROR`: h2 only fails streams above the last-stream-id then).
/// Anything else after the request may have been written is `upstream-reset` or
/// `upstream-error`, never retried by default.
pub fn classify_client_error(err: &(dyn StdError + 'static)) -> Cause {
    let mut connect = false;
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(cause) = e.downcast_ref::<Cause>() {
            return *cause;
        }
        if let Some(e) = e.downcast_ref::<hyper_util::client::legacy::Error>() {
            connect |= e.is_connect();
        }
        if let Some(h2) = e.downcast_ref::<h2::Error>() {
            return classify_h2(h2);
        }
        if let Some(io) = e.downcast_ref::<io::Error>() {
            if let Some(cause) = io.get_ref().and_then(|i| i.downcast_ref::<Cause>()) {
                return *cause;
            }
            if connect || is_connect_kind(io.kind()) {
                return classify_connect_io(io);
            }
            return match io.kind() {
                io::ErrorKind::ConnectionReset
                | io::ErrorKind::ConnectionAborted
                | io::ErrorKind::BrokenPipe
                | io::ErrorKind::UnexpectedEof => Cause::UpstreamReset,
                _ => Cause::UpstreamError,
            };
        }
        if let Some(h) = e.downcast_ref::<hyper::Error>() {
            if h.is_incomplete_message() || h.is_closed() {
                // Keep walking: an h2 or io source is more precise if present.
                if e.source().is_none() {
                    return Cause::UpstreamReset;
                }
            } else if h.is_timeout() && e.source().is_none() {
                return Cause::Timeout(super::errors::TimeoutKind::Idle);
            }
        }
        cur = e.source();
    }
    if connect {
        Cause::ConnectFailed
    } else {
        Cause::UpstreamError
    }
}

fn is_connect_kind(kind: io::ErrorKind) -> bool {
    matches!(
        kind,
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::HostUnreachable
            | io::ErrorKind::NetworkUnreachable
            | io::ErrorKind::AddrNotAvailable
    )
}

fn classify_h2(e: &h2::Error) -> Cause {
    let reason = e.reason();
    if reason == Some(h2::Reason::REFUSED_STREAM) {
        return Cause::RefusedStream;
    }
    if e.is_go_away() && e.is_remote() && reason == Some(h2::Reason::NO_ERROR) {
        return Cause::RefusedStream;
    }
    if let Some(io) = e.get_io() {
        return match io.kind() {
            io::ErrorKind::ConnectionRefused => Cause::ConnectRefused,
            _ => Cause::UpstreamReset,
        };
    }
    if e.is_reset() || e.is_go_away() {
        return Cause::UpstreamReset;
    }
    Cause::UpstreamError
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
        assert_eq!(classify_client_error(&e), Cause::UpstreamError);
    }

    #[test]
    fn h2_reasons() {
        let refused = h2::Error::from(h2::Reason::REFUSED_STREAM);
        assert_eq!(classify_client_error(&refused), Cause::RefusedStream);
        assert!(classify_client_error(&refused).is_retry_safe());
        let internal = h2::Error::from(h2::Reason::INTERNAL_ERROR);
        assert_eq!(classify_client_error(&internal), Cause::UpstreamError);
    }

    #[test]
    fn a_cause_in_the_chain_wins() {
        let e = io::Error::other(Cause::CONNECT_TIMEOUT);
        assert_eq!(classify_client_error(&e), Cause::CONNECT_TIMEOUT);
    }
}
