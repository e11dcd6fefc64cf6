//! `ReplayBody`: a request body that streams through while keeping a bounded copy, so a retry can send it again.
//!
//! The first attempt streams the body from the client unchanged (no added latency: nothing
//! waits for the whole body) and tees each chunk into a shared buffer. A retry gets a replay
//! of the buffered chunks followed by whatever the client has not sent yet. Once the buffered
//! bytes would exceed the limit the buffer is dropped and the body is no longer replayable.
//!
//! The shared state sits behind a `parking_lot::Mutex` that is uncontended by construction:
//! attempts are sequential, so at most one clone is being polled at a time (one CAS per frame).

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use http::HeaderMap;
use http_body::{Body, Frame, SizeHint};
use parking_lot::Mutex;

/// Default replay limit. 64 KiB holds virtually every API request body (JSON payloads are
/// typically a few KiB), bounds the worst case to 64 MiB at the default 1024 concurrent
/// requests per cluster, and matches HTTP/2's default initial stream window (65,535 bytes),
/// i.e. what a peer may have in flight before any flow-control round trip anyway.
pub const DEFAULT_REPLAY_LIMIT: usize = 64 * 1024;

/// Boxed error for body frames.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A replayed body whose buffer had already been dropped (only a stale attempt sees this).
#[derive(Debug, thiserror::Error)]
#[error("request body exceeded the replay buffer and cannot be sent again")]
pub struct ReplayOverflowed;

/// A request body that can be replayed for retries (see the module docs).
pub struct ReplayBody<B> {
    shared: Arc<Mutex<Shared<B>>>,
    /// Index of the next chunk this clone yields.
    pos: usize,
    trailers_sent: bool,
}

struct Shared<B> {
    inner: B,
    /// Buffered chunks; chunk `i` of the stream is `chunks[i]` while not overflowed.
    chunks: Vec<Bytes>,
    /// Chunks read from `inner` so far.
    read: usize,
    buffered: usize,
    limit: usize,
    overflowed: bool,
    inner_done: bool,
    trailers: Option<HeaderMap>,
}

// === impl ReplayBody ===

impl<B> std::fmt::Debug for ReplayBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplayBody")
            .field("pos", &self.pos)
            .finish_non_exhaustive()
    }
}

impl<B> ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    /// Wraps `inner`, buffering up to `limit` bytes. A body whose declared size already
    /// exceeds the limit is passed through without buffering.
    pub fn new(inner: B, limit: usize) -> Self {
        let too_big = inner.size_hint().lower() > limit as u64;
        ReplayBody {
            shared: Arc::new(Mutex::new(Shared {
                inner,
                chunks: Vec::new(),
                read: 0,
                buffered: 0,
                limit,
                overflowed: too_big,
                inner_done: false,
                trailers: None,
            })),
            pos: 0,
            trailers_sent: false,
        }
    }

    /// A body that sends the whole stream again from the start, or `None` if the buffer
    /// overflowed (the request is then not retryable).
    pub fn try_replay(&self) -> Option<Self> {
        if self.shared.lock().overflowed {
            return None;
        }
        Some(ReplayBody {
            shared: self.shared.clone(),
            pos: 0,
            trailers_sent: false,
        })
    }

    /// True once the body is too big to be replayed.
    pub fn overflowed(&self) -> bool {
        self.shared.lock().overflowed
    }

    /// Bytes currently held for replay.
    pub fn buffered_bytes(&self) -> usize {
        self.shared.lock().buffered
    }
}

impl<B> Body for ReplayBody<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let mut guard = this.shared.lock();
        let st = &mut *guard;
        if this.pos < st.read {
            if st.overflowed {
                return Poll::Ready(Some(Err(ReplayOverflowed.into())));
            }
            let chunk = st.chunks[this.pos].clone();
            this.pos += 1;
            return Poll::Ready(Some(Ok(Frame::data(chunk))));
        }
        if st.inner_done {
            return match (&st.trailers, this.trailers_sent) {
                (Some(t), false) => {
                    this.trailers_sent = true;
                    Poll::Ready(Some(Ok(Frame::trailers(t.clone()))))
                }
                _ => Poll::Ready(None),
            };
        }
        let frame = match ready!(Pin::new(&mut st.inner).poll_frame(cx)) {
            None => {
                st.inner_done = true;
                return Poll::Ready(None);
            }
            Some(Err(e)) => {
                // The stream is broken mid-way: it cannot be replayed whole.
                st.overflowed = true;
                st.chunks = Vec::new();
                return Poll::Ready(Some(Err(e.into())));
            }
            Some(Ok(frame)) => frame,
        };
        let frame = match frame.into_data() {
            Ok(data) => {
                st.read += 1;
                this.pos += 1;
                if !st.overflowed {
                    if st.buffered + data.len() <= st.limit {
                        st.buffered += data.len();
                        st.chunks.push(data.clone());
                    } else {
                        st.overflowed = true;
                        st.buffered = 0;
                        st.chunks = Vec::new();
                    }
                }
                Frame::data(data)
            }
            Err(frame) => {
                if let Some(t) = frame.trailers_ref() {
                    st.trailers = Some(t.clone());
                    st.inner_done = true;
                    this.trailers_sent = true;
                }
                frame
            }
        };
        Poll::Ready(Some(Ok(frame)))
    }

    fn is_end_stream(&self) -> bool {
        let st = self.shared.lock();
        if self.pos < st.read {
            return false;
        }
        if st.inner_done {
            return st.trailers.is_none() || self.trailers_sent;
        }
        st.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let st = self.shared.lock();
        let replay: u64 = if st.overflowed {
            0
        } else {
            st.chunks[self.pos.min(st.chunks.len())..]
                .iter()
                .map(|c| c.len() as u64)
                .sum()
        };
        if st.inner_done {
            return SizeHint::with_exact(replay);
        }
        let inner = st.inner.size_hint();
        let mut hint = SizeHint::new();
        hint.set_lower(inner.lower() + replay);
        if let Some(upper) = inner.upper() {
            hint.set_upper(upper + replay);
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, Full, StreamBody};

    async fn collect<B: Body<Data = Bytes, Error = BoxError> + Unpin>(b: B) -> Vec<u8> {
        b.collect().await.unwrap().to_bytes().to_vec()
    }

    type Frames = futures_util::stream::Iter<std::vec::IntoIter<Result<Frame<Bytes>, BoxError>>>;

    fn chunks(parts: &[&'static str]) -> StreamBody<Frames> {
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = parts
            .iter()
            .map(|p| Ok(Frame::data(Bytes::from_static(p.as_bytes()))))
            .collect();
        StreamBody::new(futures_util::stream::iter(frames))
    }

    #[tokio::test]
    async fn replays_full_body() {
        let body = ReplayBody::new(chunks(&["ab", "cd", "ef"]), 64);
        let again = body.try_replay().unwrap();
        assert_eq!(collect(body).await, b"abcdef");
        assert_eq!(collect(again).await, b"abcdef");
    }

    #[tokio::test]
    async fn replays_partially_read_body_then_continues() {
        let mut first = ReplayBody::new(chunks(&["ab", "cd", "ef"]), 64);
        let f = first.frame().await.unwrap().unwrap();
        assert_eq!(f.into_data().unwrap(), "ab");
        drop(first.try_replay()); // a clone that is never polled changes nothing
        let second = first.try_replay().unwrap();
        drop(first);
        assert_eq!(collect(second).await, b"abcdef");
    }

    #[tokio::test]
    async fn overflow_is_reported_and_passes_through() {
        let body = ReplayBody::new(chunks(&["aaaa", "bbbb", "cccc"]), 10);
        assert!(!body.overflowed());
        let probe = body.try_replay().unwrap();
        let stale = body.try_replay().unwrap();
        drop(probe);
        assert_eq!(collect(body).await, b"aaaabbbbcccc");
        assert!(stale.overflowed());
        assert!(stale.try_replay().is_none());
        // A clone taken before the overflow cannot produce a truncated body.
        assert!(stale.collect().await.is_err());
    }

    #[tokio::test]
    async fn declared_size_over_limit_is_not_buffered() {
        let body = ReplayBody::new(Full::new(Bytes::from(vec![0u8; 100])), 10);
        assert!(body.overflowed());
        assert_eq!(body.size_hint().exact(), Some(100));
        assert_eq!(collect(body).await.len(), 100);
    }

    #[tokio::test]
    async fn trailers_are_replayed() {
        let mut t = HeaderMap::new();
        t.insert("x-sum", "1".parse().unwrap());
        let frames: Vec<Result<Frame<Bytes>, BoxError>> = vec![
            Ok(Frame::data(Bytes::from_static(b"x"))),
            Ok(Frame::trailers(t)),
        ];
        let body = ReplayBody::new(StreamBody::new(futures_util::stream::iter(frames)), 64);
        let again = body.try_replay().unwrap();
        let first = body.collect().await.unwrap();
        assert_eq!(first.trailers().unwrap()["x-sum"], "1");
        let second = again.collect().await.unwrap();
        assert_eq!(second.trailers().unwrap()["x-sum"], "1");
    }

    #[tokio::test]
    async fn size_hint_and_end_stream() {
        let body = ReplayBody::new(Full::new(Bytes::from_static(b"hello")), 64);
        assert_eq!(body.size_hint().exact(), Some(5));
        let again = body.try_replay().unwrap();
        assert_eq!(collect(body).await, b"hello");
        assert_eq!(again.size_hint().exact(), Some(5));
        assert!(!again.is_end_stream());
        assert_eq!(collect(again).await, b"hello");
    }
}
