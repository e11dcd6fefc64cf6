//! The rotation task: obtain the first certificate, renew at ~70 % of its lifetime, retry with backoff.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_proto::identity::v1::identity_client::IdentityClient;
use rand::Rng;
use tonic::transport::Channel;

use super::client::{JoinToken, certify};
use super::credentials::Credentials;
use super::store::CertStore;

/// Renew at 70 % of the lifetime: the remaining 30 % (7 h of a 24 h cert, 6 s of a 20 s one)
/// leaves room for several retries if the control plane is briefly away.
const RENEW_FRACTION: f64 = 0.70;
/// ±10 % of the lifetime of jitter, so sidecars that started together (a rollout, a CP restart)
/// do not renew in lock-step forever; the earliest renewal still happens at 60 %, the latest
/// at 80 %, always leaving a fifth of the lifetime for retries.
const JITTER_FRACTION: f64 = 0.10;
/// First retry after 1 s (a control-plane restart takes about that), doubling up to 30 s so a
/// long outage costs the control plane little when it comes back.
const BACKOFF_START: Duration = Duration::from_secs(1);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Renews the store's certificate for as long as it runs.
pub struct Rotation {
    pub client: IdentityClient<Channel>,
    pub token: JoinToken,
    pub store: Arc<CertStore>,
    /// Requested leaf lifetime; `None` = the CA's default.
    pub ttl: Option<Duration>,
}

impl Rotation {
    /// Runs forever; spawn it (on the control runtime, off the data path).
    pub async fn run(mut self) {
        let mut backoff = BACKOFF_START;
        loop {
            let identity = self.store.identity().clone();
            match certify(&mut self.client, &self.token, &identity, self.ttl).await {
                Ok((creds, bundle)) => {
                    let wait = renew_delay(&creds, rand::rng().random_range(-1.0..=1.0));
                    tracing::info!(
                        %identity,
                        expires_unix = creds.not_after.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
                        renew_in_secs = wait.as_secs_f64(),
                        "certificate obtained"
                    );
                    self.store.set_trust_bundle(bundle);
                    self.store.set_credentials(creds);
                    backoff = BACKOFF_START;
                    tokio::time::sleep(wait).await;
                }
                Err(e) => {
                    // Even a "permanent" refusal is retried (slowly): the operator may fix the
                    // token or policy without restarting the sidecar.
                    let delay = retry_delay(backoff, self.store.credentials().as_deref());
                    tracing::warn!(%identity, error = %e, retry_in_secs = delay.as_secs_f64(), "certificate request failed");
                    tokio::time::sleep(delay).await;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                }
            }
        }
    }
}

/// When to renew `creds`: at 70 % ± `jitter`×10 % of the time from receipt to expiry.
/// `jitter` is in −1..=1.
pub fn renew_delay(creds: &Credentials, jitter: f64) -> Duration {
    let lifetime = creds
        .not_after
        .duration_since(creds.received_at)
        .unwrap_or_default();
    let fraction = RENEW_FRACTION + JITTER_FRACTION * jitter.clamp(-1.0, 1.0);
    lifetime.mul_f64(fraction)
}

/// The backoff, but while a certificate is still valid never so long that the retry would land
/// after its expiry: at most a tenth of its remaining life, and at least 100 ms so a
/// nearly-expired cert does not spin.
fn retry_delay(backoff: Duration, current: Option<&Credentials>) -> Duration {
    let Some(c) = current else { return backoff };
    let left = c
        .not_after
        .duration_since(SystemTime::now())
        .unwrap_or_default();
    backoff.min(left / 10).max(Duration::from_millis(100))
}
