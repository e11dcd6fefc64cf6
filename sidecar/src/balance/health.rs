//! Active health checking: probes each endpoint of a service (TCP connect or HTTP GET) and
//! takes failing ones out of the pick pool until they recover.

use std::sync::{Arc, Weak};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{LbEndpoint, ServiceLb};
use crate::state::HealthCheck;
use crate::tls::Alpn;

/// Starts the checker of `lb` when its cluster asks for one and a runtime is available. The
/// task holds only a weak reference: it ends once a config update replaced and dropped `lb`
/// (the replacement starts its own checker and keeps the endpoints' health state).
pub fn watch(lb: &Arc<ServiceLb>) {
    let Some(hc) = lb.cluster.health_check.clone() else {
        return;
    };
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let weak = Arc::downgrade(lb);
    rt.spawn(run(weak, hc));
}

async fn run(lb: Weak<ServiceLb>, hc: HealthCheck) {
    loop {
        let Some(strong) = lb.upgrade() else { return };
        let service = strong.service.clone();
        let endpoints: Vec<Arc<LbEndpoint>> = strong.endpoints().to_vec();
        drop(strong);
        let probes = endpoints.iter().map(|ep| async {
            let ok = tokio::time::timeout(hc.timeout, probe(ep, &hc, &service))
                .await
                .unwrap_or(false);
            ep.stats
                .health_result(ok, hc.healthy_threshold, hc.unhealthy_threshold);
        });
        futures_util::future::join_all(probes).await;
        tokio::time::sleep(hc.interval).await;
    }
}

/// One probe: a TCP connect, or `GET <path>` over HTTP/1.1 expecting `expected_status`. A
/// meshed endpoint is probed through its sidecar, naming the app port like real traffic; over
/// mTLS (ALPN `mesh-tcp` + preamble) when it has an identity and this sidecar a certificate,
/// since a strict inbound refuses plaintext.
async fn probe(ep: &LbEndpoint, hc: &HealthCheck, service: &str) -> bool {
    let addr = ep.endpoint.addr;
    let Ok(s) = TcpStream::connect(addr).await else {
        return false;
    };
    let Some(path) = &hc.http_path else {
        return true;
    };
    let app_port = ep.endpoint.app_port;
    let tls = crate::tls::MeshConnector::process();
    if let (Some(tls), Some(id), true) = (tls, &ep.endpoint.identity, ep.endpoint.is_meshed()) {
        let Ok(expected) = crate::identity::SpiffeId::parse(id) else {
            return false;
        };
        if app_port == 0 {
            // No port to name in the preamble: the handshake alone proves the peer is there.
            return tls
                .handshake(s, addr, &expected, Alpn::MeshTcp)
                .await
                .is_ok();
        }
        let Ok(mut s) = tls.handshake(s, addr, &expected, Alpn::MeshTcp).await else {
            return false;
        };
        if crate::proxy::tcp::write_preamble(&mut s, app_port)
            .await
            .is_err()
        {
            return false;
        }
        return http_get(&mut s, path, service, "", hc.expected_status).await;
    }
    let port_hint = if ep.endpoint.is_meshed() && app_port != 0 {
        format!("x-mesh-app-port: {app_port}\r\n")
    } else {
        String::new()
    };
    let mut s = s;
    http_get(&mut s, path, service, &port_hint, hc.expected_status).await
}

/// `GET path` with `connection: close`; true when the status is `expected`.
async fn http_get<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
    path: &str,
    service: &str,
    extra_headers: &str,
    expected: u16,
) -> bool {
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {service}\r\nuser-agent: mesh-health-check\r\n{extra_headers}connection: close\r\n\r\n"
    );
    if s.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    // "HTTP/1.1 200" is 12 bytes: the status code is all the probe needs.
    let mut head = [0u8; 12];
    if s.read_exact(&mut head).await.is_err() {
        return false;
    }
    std::str::from_utf8(&head[9..12])
        .ok()
        .and_then(|c| c.parse::<u16>().ok())
        .is_some_and(|c| c == expected)
}
