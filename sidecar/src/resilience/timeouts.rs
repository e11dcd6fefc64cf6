//! Timeouts (connect, request, per-try, idle) and their mapping to `timeout:<kind>` causes: future wrappers, a timed connect, and a body wrapper for idle and whole-exchange deadlines.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::errors::{Cause, TimeoutKind};
use super::replay::BoxError;

/// Connect timeout when the cluster sets none. A connect inside a cluster completes in
/// milliseconds; a SYN unanswered for a second means a dead or partitioned host, and since
/// connect failures are retried on another endpoint, failing fast is cheap.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Stream idle timeout when none is configured (Envoy's default): reclaims streams whose
/// peer vanished without a FIN, yet never cuts a long poll or a slow-but-alive stream that
/// moves a byte every few minutes.
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// The timeouts applying to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    /// The whole exchange, all attempts and backoffs included; `None` = unbounded.
    pub request: Option<Duration>,
    /// One attempt (until response headers); `None` = bounded by the request timeout only.
    pub per_try: Option<Duration>,
    /// Longest pause between body frames.
    pub idle: Option<Duration>,
}

/// A response or request body that fails with `timeout:idle` when no frame arrives for the
/// idle time, and with `timeout:request` at the request deadline.
pub struct TimeoutBody<B> {
    inner: B,
    idle: Option<Duration>,
    deadline: Option<Instant>,
    sleep: Option<Pin<Box<Sleep>>>,
}

// === impl Timeouts ===

impl Default for Timeouts {
    fn default() -> Self {
        Timeouts {
            connect: DEFAULT_CONNECT_TIMEOUT,
            request: None,
            per_try: None,
            idle: Some(DEFAULT_IDLE_TIMEOUT),
        }
    }
}

/// The time left for one attempt and which timeout that is: the per-try timeout or what
/// remains of the request deadline, whichever ends first (a tie is the request's).
pub fn attempt_limit(
    now: Instant,
    request_deadline: Option<Instant>,
    per_try: Option<Duration>,
) -> Option<(Duration, TimeoutKind)> {
    let remaining = request_deadline.map(|d| d.saturating_duration_since(now));
    match (remaining, per_try) {
        (Some(r), Some(p)) if p < r => Some((p, TimeoutKind::PerTry)),
        (Some(r), _) => Some((r, TimeoutKind::Request)),
        (None, Some(p)) => Some((p, TimeoutKind::PerTry)),
        (None, None) => None,
    }
}

/// Runs `fut` for at most `limit`; expiry is `Cause::Timeout(kind)`.
pub async fn within<F: Future>(
    limit: Option<(Duration, TimeoutKind)>,
    fut: F,
) -> Result<F::Output, Cause> {
    match limit {
        None => Ok(fut.await),
        Some((d, kind)) => tokio::time::timeout(d, fut)
            .await
            .map_err(|_| Cause::Timeout(kind)),
    }
}

/// Connects with a timeout, classifying failures.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> Result<TcpStream, Cause> {
    match tokio::time::timeout(timeout, TcpStream::connect(addr)).await {
        Err(_) => Err(Cause::CONNECT_TIMEOUT),
        Ok(Err(e)) => Err(classify_connect_io(&e)),
        Ok(Ok(s)) => Ok(s),
    }
}

/// The cause of a failed connect.
pub fn classify_connect_io(e: &io::Error) -> Cause {
    match e.kind() {
        io::ErrorKind::ConnectionRefused => Cause::ConnectRefused,
        io::ErrorKind::TimedOut => Cause::CONNECT_TIMEOUT,
        _ => Cause::ConnectFailed,
    }
}

// === impl TimeoutBody ===

impl<B> TimeoutBody<B> {
    /// Wraps `inner`; `deadline` is usually the request's (so streaming responses count
    /// against the whole-exchange timeout too).
    pub fn new(inner: B, idle: Option<Duration>, deadline: Option<Instant>) -> Self {
        TimeoutBody {
            inner,
            idle,
            deadline,
            sleep: None,
        }
    }

    /// When the current wait ends and which timeout that would be.
    fn next_expiry(&self, now: Instant) -> Option<(Instant, TimeoutKind)> {
        let idle = self.idle.map(|d| (now + d, TimeoutKind::Idle));
        let request = self.deadline.map(|d| (d, TimeoutKind::Request));
        match (idle, request) {
            (Some(i), Some(r)) => Some(if r.0 <= i.0 { r } else { i }),
            (i, r) => i.or(r),
        }
    }
}

impl<B> Body for TimeoutBody<B>
where
    B: Body + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = B::Data;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, BoxError>>> {
        let this = self.get_mut();
        if let Poll::Ready(frame) = Pin::new(&mut this.inner).poll_frame(cx) {
            // Progress: the idle clock restarts at the next wait.
            this.sleep = None;
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        let Some((at, kind)) = this.next_expiry(Instant::now()) else {
            return Poll::Pending;
        };
        let sleep = this
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(at)));
        if sleep.as_mut().poll(cx).is_ready() {
            let kind = if this.deadline.is_some_and(|d| Instant::now() >= d) {
                TimeoutKind::Request
            } else {
                kind
            };
            return Poll::Ready(Some(Err(Cause::Timeout(kind).into())));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, StreamBody};
    use tokio::sync::mpsc;
    use tokio::time::advance;

    #[test]
    fn attempt_limit_picks_the_earlier() {
        let now = Instant::now();
        let s = Duration::from_secs;
        assert_eq!(attempt_limit(now, None, None), None);
        assert_eq!(
            attempt_limit(now, None, Some(s(1))),
            Some((s(1), TimeoutKind::PerTry))
        );
        assert_eq!(
            attempt_limit(now, Some(now + s(5)), Some(s(1))),
            Some((s(1), TimeoutKind::PerTry))
        );
        assert_eq!(
            attempt_limit(now, Some(now + s(1)), Some(s(5))),
            Some((s(1), TimeoutKind::Request))
        );
        assert_eq!(
            attempt_limit(now + s(9), Some(now + s(1)), None),
            Some((Duration::ZERO, TimeoutKind::Request))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn within_maps_expiry_to_its_kind() {
        let slow = tokio::time::sleep(Duration::from_secs(10));
        let r = within(Some((Duration::from_secs(1), TimeoutKind::PerTry)), slow).await;
        assert_eq!(r, Err(Cause::Timeout(TimeoutKind::PerTry)));
        assert_eq!(within(None, async { 7 }).await, Ok(7));
    }

    type Tx = mpsc::Sender<Result<Frame<Bytes>, BoxError>>;

    fn channel_body() -> (Tx, TimeoutBodyOf) {
        let (tx, rx) = mpsc::channel(4);
        let stream =
            futures_util::stream::unfold(
                rx,
                |mut rx| async move { rx.recv().await.map(|f| (f, rx)) },
            );
        (tx, StreamBody::new(Box::pin(stream)))
    }

    type TimeoutBodyOf = StreamBody<
        Pin<Box<dyn futures_util::Stream<Item = Result<Frame<Bytes>, BoxError>> + Send>>,
    >;

    fn cause(e: BoxError) -> Cause {
        *e.downcast::<Cause>().expect("a Cause")
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_fires_after_a_stall_not_during_progress() {
        let (tx, inner) = channel_body();
        let mut body = TimeoutBody::new(inner, Some(Duration::from_secs(1)), None);
        for _ in 0..5 {
            let tx = tx.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(900)).await;
                tx.send(Ok(Frame::data(Bytes::from_static(b"x"))))
                    .await
                    .ok();
            });
            // 900 ms gaps never trip a 1 s idle timeout.
            assert!(body.frame().await.unwrap().is_ok());
        }
        let err = body.frame().await.unwrap().unwrap_err();
        assert_eq!(cause(err), Cause::Timeout(TimeoutKind::Idle));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn request_deadline_bounds_a_streaming_body() {
        let (tx, inner) = channel_body();
        let deadline = Instant::now() + Duration::from_secs(2);
        let mut body = TimeoutBody::new(inner, Some(Duration::from_secs(1)), Some(deadline));
        let feeder = tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(500)).await;
                if tx
                    .send(Ok(Frame::data(Bytes::from_static(b"x"))))
                    .await
                    .is_err()
                {
                    break;
                }
            }
        });
        let mut frames = 0;
        let err = loop {
            match body.frame().await.unwrap() {
                Ok(_) => frames += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(cause(err), Cause::Timeout(TimeoutKind::Request));
        assert!(frames >= 3);
        drop(body);
        feeder.await.unwrap();
        advance(Duration::from_secs(1)).await;
    }

    #[tokio::test]
    async fn connect_classifies_refused() {
        // Bind then drop: the port is closed, so the connect is refused.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let r = connect(addr, Duration::from_secs(5)).await;
        assert_eq!(r.unwrap_err(), Cause::ConnectRefused);
    }

    #[test]
    fn connect_io_classes() {
        let e = |k| io::Error::new(k, "x");
        assert_eq!(
            classify_connect_io(&e(io::ErrorKind::TimedOut)),
            Cause::CONNECT_TIMEOUT
        );
        assert_eq!(
            classify_connect_io(&e(io::ErrorKind::AddrNotAvailable)),
            Cause::ConnectFailed
        );
    }
}
