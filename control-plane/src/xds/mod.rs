//! The discovery server (`mesh.discovery.v1.Discovery/DeltaStream`): accepts a proxy's stream,
//! registers its node, and hands the stream to a per-proxy task.

mod stream;

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures_util::Stream;
use mesh_proto::discovery::v1::discovery_server::Discovery;
use mesh_proto::discovery::v1::{DeltaDiscoveryRequest, DeltaDiscoveryResponse};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::core::{Core, CoreError, Denied};
use crate::peer::Peer;
use crate::validate::node_from_proto;

/// How long a new stream may take to send its first request (the node). Proxies send it
/// immediately; this only frees streams opened by something that never speaks.
const FIRST_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Responses queued per stream. A full push is at most one response per type (6); 8 lets a
/// whole push queue without waiting, and a proxy that stops reading stalls only its own task
/// (further changes collapse into one pending wake-up).
const STREAM_BUFFER: usize = 8;

pub struct DiscoveryService {
    core: Arc<Core>,
    next_id: AtomicU64,
}

type ResponseStream = Pin<Box<dyn Stream<Item = Result<DeltaDiscoveryResponse, Status>> + Send>>;

// === impl DiscoveryService ===

impl DiscoveryService {
    pub fn new(core: Arc<Core>) -> Self {
        Self {
            core,
            next_id: AtomicU64::new(1),
        }
    }
}

#[tonic::async_trait]
impl Discovery for DiscoveryService {
    type DeltaStreamStream = ResponseStream;

    async fn delta_stream(
        &self,
        request: Request<Streaming<DeltaDiscoveryRequest>>,
    ) -> Result<Response<Self::DeltaStreamStream>, Status> {
        // The proxy's identity is what its verified certificate says, nothing else.
        let peer = request
            .extensions()
            .get::<Peer>()
            .and_then(|p| p.identity.clone());
        let mut inbound = request.into_inner();
        let first = match tokio::time::timeout(FIRST_REQUEST_TIMEOUT, inbound.message()).await {
            Ok(Ok(Some(first))) => first,
            Ok(Ok(None)) => {
                return Err(Status::cancelled("stream closed before the first request"));
            }
            Ok(Err(status)) => return Err(status),
            Err(_) => return Err(Status::deadline_exceeded("no first request (node) in time")),
        };
        let Some(node) = first.node.clone() else {
            return Err(Status::invalid_argument(
                "the first request of a stream must carry the node",
            ));
        };
        let mut node =
            node_from_proto(node).map_err(|e| Status::invalid_argument(e.to_string()))?;
        self.core
            .admit(&mut node, peer.as_ref().map(|p| p.as_str()))
            .map_err(|e| match e {
                Denied::Unauthenticated => Status::unauthenticated(e.to_string()),
                e => Status::permission_denied(e.to_string()),
            })?;
        let core = self.core.clone();
        let announce_node = node.clone();
        // Announcing may allocate and persist a VIP (an fsync): off the async workers.
        let lease = tokio::task::spawn_blocking(move || core.announce(&announce_node))
            .await
            .map_err(|_| Status::internal("announce task failed"))?
            .map_err(|e| match e {
                CoreError::Denied(d) => {
                    self.core.metrics.denied(d.reason());
                    tracing::warn!(proxy = %node.id, error = %d, "discovery stream refused");
                    Status::permission_denied(d.to_string())
                }
                e => Status::resource_exhausted(e.to_string()),
            })?;
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        tracing::info!(stream = id, proxy = %node.id, service = %node.service, "proxy connected");
        let (tx, rx) = mpsc::channel(STREAM_BUFFER);
        let stream = stream::ProxyStream::new(id, self.core.clone(), node, tx);
        tokio::spawn(stream.run(first, inbound, lease));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
