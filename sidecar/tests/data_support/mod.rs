//! Shared harness for the data-path tests: apps, sidecars and a hand-built snapshot.
#![allow(dead_code)]

pub mod apps;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use mesh_sidecar::inbound::{self, InboundConfig, InboundCtx, Plaintext};
use mesh_sidecar::outbound::{self, OutboundConfig, OutboundCtx};
use mesh_sidecar::proxy::{self, DrainTrigger};
use mesh_sidecar::state::{Cluster, Endpoint, EndpointState, Endpoints, Name, StateHandle};
use tokio::net::{TcpListener, TcpStream};

/// Every await in these tests is bounded by this; it only stops a hang, never measures.
pub const T: Duration = Duration::from_secs(20);

pub async fn within<F: std::future::Future>(f: F) -> F::Output {
    tokio::time::timeout(T, f)
        .await
        .expect("test step timed out")
}

/// A workload: an app behind an inbound sidecar.
pub struct Pod {
    pub app: SocketAddr,
    pub inbound: SocketAddr,
    pub version: &'static str,
    /// Drains the pod's inbound sidecar; only set by [`Mesh::pod_with_drain`] (otherwise the
    /// mesh keeps it, so dropping a `Pod` never drains its sidecar).
    pub trigger: Option<DrainTrigger>,
}

/// The client-side sidecar plus the shared state.
pub struct Mesh {
    pub state: StateHandle,
    pub outbound: SocketAddr,
    pub ctx: OutboundCtx,
    pub triggers: Vec<DrainTrigger>,
}

impl Mesh {
    pub async fn new() -> Self {
        Self::with_config(OutboundConfig::default()).await
    }

    pub async fn with_config(cfg: OutboundConfig) -> Self {
        let state = StateHandle::default();
        let ctx = OutboundCtx::new(state.clone(), cfg);
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let outbound = l.local_addr().unwrap();
        let (trigger, drain) = proxy::drain::channel();
        tokio::spawn(outbound::serve(l, ctx.clone(), drain));
        Self {
            state,
            outbound,
            ctx,
            triggers: vec![trigger],
        }
    }

    /// Starts an inbound sidecar in front of `app` and returns the pod.
    pub async fn pod(&mut self, app: SocketAddr, version: &'static str) -> Pod {
        let mut pod = self.pod_with_drain(app, version).await;
        self.triggers.extend(pod.trigger.take());
        pod
    }

    /// Like [`Self::pod`], but the caller owns the drain trigger.
    pub async fn pod_with_drain(&mut self, app: SocketAddr, version: &'static str) -> Pod {
        let (trigger, inbound) = start_inbound(self.state.clone(), app.port()).await;
        Pod {
            app,
            inbound,
            version,
            trigger: Some(trigger),
        }
    }

    /// Publishes `service`'s endpoints (meshed: the pods' inbound addresses).
    pub fn set_endpoints(&self, service: &str, pods: &[&Pod]) {
        self.set_endpoints_with(service, pods, |_, _| {});
    }

    pub fn set_endpoints_with(
        &self,
        service: &str,
        pods: &[&Pod],
        edit: impl Fn(usize, &mut Endpoint),
    ) {
        let endpoints = pods
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let mut e = endpoint(p);
                edit(i, &mut e);
                e
            })
            .collect();
        let eps = Arc::new(Endpoints {
            service: service.into(),
            endpoints,
        });
        self.state.update(|s| {
            s.endpoints.insert(service.into(), eps);
        });
    }

    pub fn set_cluster(&self, cluster: Cluster) {
        self.state.update(|s| {
            s.clusters.insert(cluster.name.clone(), Arc::new(cluster));
        });
    }

    pub fn set_route(&self, route: &mesh_proto::types::v1::Route) {
        let r = mesh_sidecar::state::Route::try_from(route).unwrap();
        self.state.update(|s| {
            s.routes.insert(r.service.clone(), Arc::new(r));
        });
    }

    /// An HTTP/1.1 connection to the outbound listener.
    pub async fn h1(&self) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
        h1_conn(self.outbound).await
    }

    /// An HTTP/2 prior-knowledge connection to the outbound listener.
    pub async fn h2<B: ClientBody>(&self) -> hyper::client::conn::http2::SendRequest<B> {
        h2_conn(self.outbound).await
    }
}

pub fn endpoint(p: &Pod) -> Endpoint {
    Endpoint {
        addr: p.inbound,
        app_port: p.app.port(),
        weight: 1,
        zone: None,
        labels: vec![(Name::from("version"), Name::from(p.version))],
        state: EndpointState::Healthy,
        identity: Some(format!("spiffe://test.local/ns/default/sa/{}", p.version).into()),
        source: "proxy:test".into(),
    }
}

pub async fn start_inbound(state: StateHandle, app_port: u16) -> (DrainTrigger, SocketAddr) {
    let ctx = InboundCtx::new(
        state,
        InboundConfig {
            app_ports: vec![app_port],
            ..Default::default()
        },
    );
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (trigger, drain) = proxy::drain::channel();
    tokio::spawn(inbound::serve(l, ctx, Arc::new(Plaintext), drain));
    (trigger, addr)
}

pub async fn h1_conn(addr: SocketAddr) -> hyper::client::conn::http1::SendRequest<Full<Bytes>> {
    let io = TokioIo::new(within(TcpStream::connect(addr)).await.unwrap());
    let (tx, conn) = within(hyper::client::conn::http1::handshake(io))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    tx
}

/// Request bodies the test clients can send.
pub trait ClientBody:
    http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
    + Send
    + Unpin
    + 'static
{
}
impl<B> ClientBody for B where
    B: http_body::Body<Data = Bytes, Error: Into<Box<dyn std::error::Error + Send + Sync>>>
        + Send
        + Unpin
        + 'static
{
}

pub async fn h2_conn<B: ClientBody>(
    addr: SocketAddr,
) -> hyper::client::conn::http2::SendRequest<B> {
    let io = TokioIo::new(within(TcpStream::connect(addr)).await.unwrap());
    let (tx, conn) = within(hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        io,
    ))
    .await
    .unwrap();
    tokio::spawn(conn);
    tx
}

/// `GET path` with `Host: host` (origin-form, for HTTP/1.1).
pub fn get(host: &str, path: &str) -> http::request::Builder {
    Request::get(path).header(http::header::HOST, host)
}

/// A finished response: status, headers and the whole body as a string.
pub struct Got {
    pub status: http::StatusCode,
    pub headers: http::HeaderMap,
    pub body: String,
    pub trailers: Option<http::HeaderMap>,
}

pub async fn collect(rsp: Response<Incoming>) -> Got {
    let (parts, body) = rsp.into_parts();
    let collected = within(body.collect()).await.unwrap();
    let trailers = collected.trailers().cloned();
    Got {
        status: parts.status,
        headers: parts.headers,
        body: String::from_utf8_lossy(&collected.to_bytes()).into_owned(),
        trailers,
    }
}

pub async fn send_h1(
    tx: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>,
    req: Request<Full<Bytes>>,
) -> Got {
    within(tx.ready()).await.unwrap();
    collect(within(tx.send_request(req)).await.unwrap()).await
}
