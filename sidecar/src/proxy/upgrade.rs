//! HTTP upgrades (WebSocket) and CONNECT: joining the downstream and upstream upgraded IOs.

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;

use super::tcp;

/// Once both sides have switched protocols, copies bytes between them until both close.
pub fn spawn_tunnel(downstream: OnUpgrade, upstream: OnUpgrade) {
    tokio::spawn(async move {
        let (down, up) = match tokio::try_join!(downstream, upstream) {
            Ok(pair) => pair,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let mut down = TokioIo::new(down);
        let mut up = TokioIo::new(up);
        if let Err(e) = tcp::copy(&mut down, &mut up).await {
            tracing::debug!(error = %e, "upgraded stream ended with error");
        }
    });
}
