//! The response body wrapper that finishes a hop's span, log line and metrics when the body ends (or is dropped), not at the response head.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};

use super::Pending;
use crate::proxy::ProxyBody;
use crate::proxy::body::BodyError;

/// How the response body ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum End {
    /// Every frame (and trailers) went out.
    Complete,
    /// The upstream body failed mid-stream.
    Failed,
    /// Dropped before its end: the client went away (or reset the stream).
    Cancelled,
}

/// [`ProxyBody`] plus the hop waiting for it to end. A struct, not a box: wrapping costs no
/// allocation; counting bytes costs one add per frame.
#[derive(Debug)]
pub struct ObservedBody {
    inner: ProxyBody,
    pending: Option<Pending>,
}

// === impl ObservedBody ===

impl ObservedBody {
    pub(super) fn new(inner: ProxyBody, pending: Pending) -> Self {
        Self {
            inner,
            pending: Some(pending),
        }
    }

    /// A body nothing waits on (CONNECT tunnels are not traced).
    pub fn plain(inner: ProxyBody) -> Self {
        Self {
            inner,
            pending: None,
        }
    }

    fn end(&mut self, how: End) {
        if let Some(p) = self.pending.take() {
            p.complete(how);
        }
    }
}

impl Body for ObservedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(p) = this.pending.as_mut() {
                    if let Some(data) = frame.data_ref() {
                        p.bytes_out += data.len() as u64;
                    } else if let Some(trailers) = frame.trailers_ref() {
                        p.grpc_status = super::grpc_status(trailers).or(p.grpc_status);
                    }
                }
                // hyper may never poll again after the last frame; end the hop now.
                if this.inner.is_end_stream() {
                    this.end(End::Complete);
                }
            }
            Poll::Ready(Some(Err(_))) => this.end(End::Failed),
            Poll::Ready(None) => this.end(End::Complete),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl Drop for ObservedBody {
    fn drop(&mut self) {
        // An empty body is never polled: dropping it at its end is a normal completion.
        let how = if self.inner.is_end_stream() {
            End::Complete
        } else {
            End::Cancelled
        };
        self.end(how);
    }
}
