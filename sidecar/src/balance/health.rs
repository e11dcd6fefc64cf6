//! Active health checking: probes each endpoint of a service (TCP connect or HTTP GET) and
//! takes failing ones out of the pick pool until they recover.

use std::sync::{Arc, Weak};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::{LbEndpoint, ServiceLb};
use crate::state::HealthCheck;

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
/// meshed endpoint is probed through its sidecar, naming the app port like real traffic.
async fn probe(ep: &LbEndpoint, hc: &HealthCheck, service: &str) -> bool {
    let Ok(mut s) = TcpStream::connect(ep.endpoint.addr).await else {
        return false;
    };
    let Some(path) = &hc.http_path else {
        return true;
    };
    let port_hint = if ep.endpoint.is_meshed() && ep.endpoint.app_port != 0 {
        format!("x-mesh-app-port: {}\r\n", ep.endpoint.app_port)
    } else {
        String::new()
    };
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: {service}\r\nuser-agent: mesh-health-check\r\n{port_hint}connection: close\r\n\r\n"
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
        .is_some_and(|c| c == hc.expected_status)
}
