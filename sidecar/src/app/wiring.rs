//! Starts the data-path listeners (inbound, outbound, fixed TCP ports, DNS) on the data runtime.

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::config::{Config, TcpForward};
use crate::dns::{DnsConfig, DnsServer, MeshNames, resolv};
use crate::identity::CertStore;
use crate::inbound::{self, InboundConfig, InboundCtx, MtlsTransport, Plaintext};
use crate::outbound::{self, OutboundConfig, OutboundCtx};
use crate::proxy::Drain;
use crate::state::{Name, StateHandle};
use crate::tls::{MeshAcceptor, MeshConnector};

/// Spawns every data-path listener. Each stops accepting when its drain is signalled; live
/// connections hold a `Drain` clone until they finish.
#[allow(
    clippy::too_many_arguments,
    reason = "one call site; each listener, drain and the identity are distinct inputs"
)]
pub(super) fn spawn_data_path(
    cfg: &Config,
    state: &StateHandle,
    inbound: TcpListener,
    inbound_drain: Drain,
    outbound: TcpListener,
    forwards: Vec<(TcpForward, TcpListener)>,
    outbound_drain: Drain,
    identity: Option<Arc<CertStore>>,
    own_ports: Vec<u16>,
) {
    let inbound_ctx = InboundCtx::new(
        state.clone(),
        InboundConfig {
            app_ports: cfg.app_ports.clone(),
            detect_timeout: cfg.detect_timeout,
            max_header_bytes: cfg.max_header_bytes,
            service: Some(cfg.service_key().as_str().into()),
            own_ports,
            ..InboundConfig::default()
        },
    );
    let connector = identity.clone().map(MeshConnector::new);
    if let Some(c) = &connector {
        // Active health checks probe meshed endpoints over mTLS with it.
        c.install_for_process();
    }
    // With a workload identity, peers connect over mTLS; without one, plaintext as before.
    match identity {
        Some(store) => {
            let transport = MtlsTransport::new(MeshAcceptor::new(store), state.clone());
            tokio::spawn(inbound::serve(
                inbound,
                inbound_ctx,
                Arc::new(transport),
                inbound_drain,
            ));
        }
        None => {
            tokio::spawn(inbound::serve(
                inbound,
                inbound_ctx,
                Arc::new(Plaintext),
                inbound_drain,
            ));
        }
    }

    let outbound_ctx = OutboundCtx::new(
        state.clone(),
        OutboundConfig {
            detect_timeout: cfg.detect_timeout,
            max_header_bytes: cfg.max_header_bytes,
            tls: connector,
            namespace: Name::from(cfg.namespace.as_str()),
            ..OutboundConfig::default()
        },
    );
    for (f, listener) in forwards {
        tokio::spawn(outbound::serve_fixed(
            listener,
            outbound_ctx.clone(),
            Name::from(mesh_proto::names::qualified(&f.service, &cfg.namespace).as_str()),
            f.port,
            outbound_drain.clone(),
        ));
    }
    tokio::spawn(outbound::serve(outbound, outbound_ctx, outbound_drain));
}

/// With `--dns-addr`: binds the DNS server there (mesh names answered from `state`, other
/// names forwarded to the resolvers of /etc/resolv.conf as read now) and serves it on the
/// data runtime until the process ends.
pub(super) async fn start_dns(cfg: &Config, state: &StateHandle) -> Result<(), super::AppError> {
    let Some(addr) = cfg.dns_addr else {
        return Ok(());
    };
    // No resolv.conf (a bare container) just means nothing to forward to.
    let upstreams = resolv::read("/etc/resolv.conf".as_ref()).unwrap_or_default();
    let names = MeshNames {
        namespace: cfg.namespace.clone(),
        trust_domain: cfg.trust_domain.clone(),
    };
    let mut dns_cfg = DnsConfig::new(addr.port(), upstreams, names);
    dns_cfg.listen = addr;
    let server = DnsServer::bind(dns_cfg, Arc::new(state.clone()))
        .await
        .map_err(|source| super::AppError::Bind {
            what: "dns",
            addr,
            source,
        })?;
    tracing::info!(addr = %server.local_addr(), "serving the workload's DNS");
    tokio::spawn(server.serve(std::future::pending()));
    Ok(())
}
