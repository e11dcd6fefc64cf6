//! `ProxyBody`: the one body type the proxy sends, streaming a peer's body or a small buffer.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::resilience::{GuardedBody, ReplayBody};

/// Errors while streaming a body.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// A streamed peer body (frames and trailers passed through as they arrive) or a complete
/// buffer for proxy-generated responses. An enum instead of a boxed trait object: no
/// allocation per request.
#[derive(Debug)]
pub enum ProxyBody {
    Incoming(Incoming),
    Full(Option<Bytes>),
    /// A request body kept for retries (`crate::resilience`).
    Replay(ReplayBody<Incoming>),
    /// A response body holding its cluster's concurrent-request permit.
    Guarded(GuardedBody<Incoming>),
}

// === impl ProxyBody ===

impl ProxyBody {
    pub fn full(b: Bytes) -> Self {
        Self::Full(Some(b))
    }

    pub fn empty() -> Self {
        Self::Full(None)
    }
}

impl Default for ProxyBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl From<Incoming> for ProxyBody {
    fn from(b: Incoming) -> Self {
        Self::Incoming(b)
    }
}

impl From<GuardedBody<Incoming>> for ProxyBody {
    fn from(b: GuardedBody<Incoming>) -> Self {
        Self::Guarded(b)
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        match self.get_mut() {
            Self::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Self::Replay(b) => Pin::new(b).poll_frame(cx),
            Self::Guarded(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Self::Full(b) => Poll::Ready(
                b.take()
                    .filter(|b| !b.is_empty())
                    .map(|b| Ok(Frame::data(b))),
            ),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Incoming(b) => b.is_end_stream(),
            Self::Replay(b) => b.is_end_stream(),
            Self::Guarded(b) => b.is_end_stream(),
            Self::Full(b) => b.as_ref().is_none_or(Bytes::is_empty),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Incoming(b) => b.size_hint(),
            Self::Replay(b) => b.size_hint(),
            Self::Guarded(b) => b.size_hint(),
            Self::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
        }
    }
}
