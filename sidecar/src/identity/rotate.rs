//! The rotation task: obtain the first certificate, renew at ~70 % of its lifetime, retry with backoff.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_proto::identity::v1::identity_client::IdentityClient;
use rand::Rng;
use tonic::transport::Channel;

use super::client::{JoinToken, certify};
use super::store::CertStore;

/// Renew at 60 % of the lifetime: the remaining 40 % (9.6 h of a 24 h cert, 24 s of a 1 min
/// one) leaves room for several retries if the control plane is briefly away.
const RENEW_FRACTION: f64 = 0.60;
/// ±10 % of the lifetime of jitter, so sidecars that started together (a rollout, a CP restart)
/// do not renew in lock-step forever; the earliest renewal happens at 50 %, the latest at
/// 70 %, always leaving 30 % of the lifetime for retries.
const JITTER_FRACTION: f64 = 0.10;
/// First retry after 1 s (a control-plane restart takes about that), doubling up to 30 s so a
/// long outage costs the control plane little when it comes back.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Opens a new channel to the Identity service. TLS presents a client certificate only in
/// its handshake, so a renewal must run on a connection opened after the certificate it
/// proves was set (the first one was opened with none).
pub type Reconnect = Arc<dyn Fn() -> IdentityClient<Channel> + Send + Sync>;

/// Renews the store's certificate for as long as it runs.
pub struct Rotation {
    pub client: IdentityClient<Channel>,
    pub token: JoinToken,
    pub store: Arc<CertStore>,
    /// Requested leaf lifetime; `None` = the CA's default.
    pub ttl: Option<Duration>,
    /// Where each new certificate is kept (key included, 0600) so a restart during a
    /// control-plane outage keeps serving mTLS; `None` = memory only.
    pub keep: Option<std::path::PathBuf>,
    /// Fresh channels for renewals after each new certificate; `None` = keep `client`.
    pub reconnect: Option<Reconnect>,
}

impl Rotation {
    /// Runs forever; spawn it (on the control runtime, off the data path).
    pub async fn run(mut self) {
        let mut backoff = BACKOFF_START;
        // The certificate generation the client's connection was opened with.
        let mut opened_with = self.store.generation();
        loop {
            if let Some(reconnect) = &self.reconnect
                && self.store.generation() != opened_with
            {
                self.client = reconnect();
                opened_with = self.store.generation();
            }
            let identity = self.store.identity().clone();
            // While the current certificate is valid it is the proof (the channel presents
            // it); the join token only bootstraps, or recovers after an expiry.
            let valid = self
                .store
                .credentials()
                .is_some_and(|c| c.not_after > SystemTime::now());
            let token = (!valid).then_some(&self.token);
            match certify(&mut self.client, token, &identity, self.ttl).await {
                Ok((creds, bundle)) => {
                    let jitter = rand::rng().random_range(-1.0..=1.0);
                    let wait = renew_delay(creds.received_at, creds.not_after, jitter);
                    tracing::info!(
                        %identity,
                        expires_unix = creds.not_after.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                        renew_in_secs = wait.as_secs_f64(),
                        "certificate obtained"
                    );
                    if let Some(path) = &self.keep
                        && let Err(e) = creds.save(path)
                    {
                        tracing::warn!(error = %e, path = %path.display(), "certificate not kept; a restart during an outage would start without it");
                    }
                    self.store.set_trust_bundle(bundle);
                    self.store.set_credentials(creds);
                    backoff = BACKOFF_START;
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    // Even a permanent refusal (bad token, wrong identity) is retried, at the
                    // slowest pace: the operator may fix the token without a sidecar restart.
                    if e.is_permanent() {
                        backoff = BACKOFF_MAX;
                    }
                    let not_after = self.store.credentials().map(|c| c.not_after);
                    let delay = retry_delay(backoff, not_after, SystemTime::now());
                    tracing::warn!(%identity, error = %e, retry_in_secs = delay.as_secs_f64(), "certificate request failed");
                    tokio::time::sleep(delay).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

/// When to renew a certificate received at `received_at`: after 60 % ± `jitter`×10 % of the
/// time from receipt to `not_after`. `jitter` is in −1..=1.
pub fn renew_delay(received_at: SystemTime, not_after: SystemTime, jitter: f64) -> Duration {
    let lifetime = not_after.duration_since(received_at).unwrap_or_default();
    let fraction = RENEW_FRACTION + JITTER_FRACTION * jitter.clamp(-1.0, 1.0);
    lifetime.mul_f64(fraction)
}

/// The backoff, but while a certificate is still valid never so long that the retry would land
/// after its expiry: at most a tenth of its remaining life, and at least 100 ms so a
/// nearly-expired cert does not spin.
/// Once it has expired (or before the first one) the plain backoff applies.
fn retry_delay(backoff: Duration, not_after: Option<SystemTime>, now: SystemTime) -> Duration {
    let left = not_after
        .and_then(|t| t.duration_since(now).ok())
        .filter(|left| !left.is_zero());
    match left {
        Some(left) => backoff.min(left / 10).max(Duration::from_millis(100)),
        None => backoff,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renews_between_50_and_70_percent() {
        let now = SystemTime::now();
        let end = now + Duration::from_secs(100);
        // Whole seconds: the fractions are floating point.
        let secs = |d: Duration| d.as_secs_f64().round() as u64;
        assert_eq!(secs(renew_delay(now, end, 0.0)), 60);
        assert_eq!(secs(renew_delay(now, end, -1.0)), 50);
        assert_eq!(secs(renew_delay(now, end, 1.0)), 70);
        assert_eq!(secs(renew_delay(now, end, 7.0)), 70, "clamped");
        assert_eq!(
            renew_delay(end, now, 0.0),
            Duration::ZERO,
            "already expired: now"
        );
    }

    #[test]
    fn retry_never_outlasts_the_current_cert() {
        let now = SystemTime::now();
        assert_eq!(retry_delay(BACKOFF_MAX, None, now), BACKOFF_MAX);
        let soon = now + Duration::from_secs(50);
        assert_eq!(
            retry_delay(BACKOFF_MAX, Some(soon), now),
            Duration::from_secs(5)
        );
        assert_eq!(retry_delay(BACKOFF_START, Some(soon), now), BACKOFF_START);
        let nearly = now + Duration::from_millis(10);
        assert_eq!(
            retry_delay(BACKOFF_MAX, Some(nearly), now),
            Duration::from_millis(100)
        );
        let expired = now - Duration::from_secs(1);
        assert_eq!(
            retry_delay(BACKOFF_START, Some(expired), now),
            BACKOFF_START
        );
    }
}
