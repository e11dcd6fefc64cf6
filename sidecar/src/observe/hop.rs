//! One proxied request between its head and the end of its response body, and what is recorded when it ends: metrics, span, access-log line.

use std::time::{Duration, Instant, SystemTime};

use http::{Method, Request, Uri, Version};

use super::body::End;
use super::upstream::Upstream;
use super::{Observer, counters, global, metrics, span};
use crate::accesslog::{self, Entry};
use crate::state::Name;
use crate::telemetry::Direction;
use crate::trace;

/// What the request looked like before it was forwarded (cheap clones: `Bytes`-backed).
#[derive(Debug)]
pub(super) struct Head {
    pub method: Method,
    pub uri: Uri,
    pub authority: Option<http::HeaderValue>,
    pub version: Version,
    /// `content-type: application/grpc…`: the span gets `rpc.*` attributes.
    pub grpc: bool,
    /// The declared request body length (`Content-Length`), for the access log.
    pub content_length: Option<u64>,
}

/// The span this hop creates and the context it continues.
#[derive(Debug)]
pub(super) struct Hop {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub parent: Option<[u8; 8]>,
    pub sampled: bool,
}

/// A hop whose response head is known, waiting for its body to end.
#[derive(Debug)]
pub(super) struct Pending {
    pub direction: Direction,
    pub start: Instant,
    pub wall: SystemTime,
    /// Time to the response head (the access log's `upstream_ms`).
    pub head_elapsed: Duration,
    pub hop: Hop,
    pub head: Head,
    pub peer_identity: Option<Name>,
    pub upstream: Upstream,
    pub status: u16,
    pub cause: Option<&'static str>,
    pub grpc_status: Option<&'static str>,
    pub bytes_out: u64,
}

// === impl Head ===

impl Head {
    pub fn of<B>(req: &Request<B>) -> Self {
        let grpc = req
            .headers()
            .get(http::header::CONTENT_TYPE)
            .is_some_and(|v| v.as_bytes().starts_with(b"application/grpc"));
        Head {
            method: req.method().clone(),
            uri: req.uri().clone(),
            authority: req.headers().get(http::header::HOST).cloned(),
            version: req.version(),
            grpc,
            content_length: req
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
        }
    }

    /// The authority the client addressed: absolute-form / `:authority` first, then `Host`.
    pub fn authority(&self) -> &str {
        self.uri
            .authority()
            .map(|a| a.as_str())
            .or_else(|| self.authority.as_ref().and_then(|v| v.to_str().ok()))
            .unwrap_or("")
    }
}

// === impl Pending ===

impl Pending {
    /// Records the finished hop: metrics always, the span when sampled, the log line when
    /// wanted.
    pub fn complete(self, end: End) {
        let obs = global();
        let elapsed = self.start.elapsed();
        let service = self.metric_service(obs);
        let version = match self.direction {
            Direction::Inbound => obs.version.clone(),
            Direction::Outbound => self.upstream.version.clone().unwrap_or_else(metrics::empty),
        };
        let route = self.upstream.route.clone().unwrap_or_else(metrics::empty);
        metrics::RequestMetrics::global().observe(
            &metrics::Request {
                direction: self.direction,
                service: service.clone(),
                route: route.clone(),
                version,
                status: self.status,
                cause: self.cause.unwrap_or(""),
                grpc_status: self.grpc_status.unwrap_or(""),
            },
            elapsed,
        );
        let c = counters();
        let retries = self.upstream.attempts.saturating_sub(1);
        c.retries(retries, self.upstream.budget_exhausted);
        if self.hop.sampled && obs.exporter.enabled() {
            obs.exporter
                .record(span::record(&self, &service, end, SystemTime::now()));
        }
        if obs.access.wants(self.status, self.cause) {
            obs.access.log(Entry {
                time: accesslog::rfc3339(self.wall),
                trace_id: trace::hex_id(&self.hop.trace_id),
                span_id: trace::hex_id(&self.hop.span_id),
                direction: dir_str(self.direction),
                method: self.head.method.as_str().to_owned(),
                authority: self.head.authority().to_owned(),
                path: self.head.uri.path().to_owned(),
                status: self.status,
                cause: self.cause,
                duration_ms: elapsed.as_secs_f64() * 1e3,
                upstream_ms: self.head_elapsed.as_secs_f64() * 1e3,
                bytes_in: self.head.content_length,
                bytes_out: self.bytes_out,
                upstream: self
                    .upstream
                    .endpoint
                    .map(|e| e.to_string())
                    .unwrap_or_default(),
                route: route.to_string(),
                peer_identity: self.peer().map(|s| s.to_string()).unwrap_or_default(),
                retries,
                tls: self.tls(),
            });
        }
    }

    /// The other side's SPIFFE ID: the verified caller inbound; the identity the chosen
    /// endpoint had to present outbound.
    pub fn peer(&self) -> Option<&Name> {
        match self.direction {
            Direction::Inbound => self.peer_identity.as_ref(),
            Direction::Outbound => self.upstream.identity.as_ref(),
        }
    }

    /// Whether the hop's sidecar-to-sidecar leg was mTLS.
    pub fn tls(&self) -> bool {
        self.peer().is_some()
    }

    /// The `service` label: the local service inbound; outbound the destination service when
    /// the snapshot knows it, else the backend that served the request, else `external`
    /// (bounded cardinality either way: every value comes from the config snapshot).
    fn metric_service(&self, obs: &Observer) -> Name {
        if self.direction == Direction::Inbound {
            return obs.service.clone();
        }
        let name = crate::names::service_name(self.head.authority(), &obs.namespace);
        // A VIP or IP authority names no service: then the backend that served it does.
        obs.state
            .as_ref()
            .and_then(|s| s.load().service_key(&name))
            .or_else(|| self.upstream.backend.clone())
            .unwrap_or_else(metrics::external)
    }
}

pub(super) fn dir_str(d: Direction) -> &'static str {
    match d {
        Direction::Inbound => "inbound",
        Direction::Outbound => "outbound",
    }
}
