//! Traces, metrics and access logs from real sidecars and a real collector (rotel-agent): spans linked across two sidecars, W3C/B3 context continued, sampling 0 exports nothing, a dead collector never fails requests, `/metrics` passes promtool and counts known traffic, access logs carry the exported trace ids. Multi-hop traces are in `chain`, metric families and control-plane spans in `families`.

#[path = "observability_support/chain.rs"]
mod chain;
#[path = "observability_support/families.rs"]
mod families;
mod observability_support;
// The metric names dashboards and alerts may use (the contract of docs/observability.md).
#[allow(dead_code)]
#[path = "deploy_support/contract.rs"]
mod contract;

use std::time::Duration;

use mesh_proto::admin::v1::SetRuntimeRequest;
use mesh_proto::types::v1::Runtime;
use mesh_tests::admin::admin;
use mesh_tests::http::get_via;
use mesh_tests::{ControlPlane, Sidecar, SidecarOpts, eventually};
use observability_support::{
    Collector, TraceApp, counter, free_port, metrics_text, promtool_check,
};

/// Bounds each wait for the mesh (or the collector) to converge; a hang guard only.
const CONVERGE: Duration = Duration::from_secs(30);

fn opts(cp: &ControlPlane, service: &str, app: Option<u16>, extra: &[String]) -> SidecarOpts {
    SidecarOpts {
        service: service.into(),
        labels: vec![("version".into(), "v1".into())],
        app_ports: app.into_iter().collect(),
        control_plane: Some(cp.discovery_url()),
        extra: [cp.sidecar_tls_args(), extra.to_vec()].concat(),
        env: cp.join_env(service),
        ..Default::default()
    }
}

fn flags(otlp: Option<&str>, access_log: &std::path::Path) -> Vec<String> {
    let mut f = vec![
        "--access-log".to_owned(),
        access_log.display().to_string(),
        "--access-log-sampling".to_owned(),
        "1".to_owned(),
    ];
    if let Some(e) = otlp {
        f.extend(["--otlp-endpoint".to_owned(), e.to_owned()]);
    }
    f
}

/// Waits until `api` answers 200 through the client sidecar.
async fn reachable(client: &Sidecar) {
    eventually("api reachable through the mesh", CONVERGE, || async {
        get_via(client.outbound, "api", "/ok", &[])
            .await
            .ok()
            .filter(|r| r.0 == 200)
    })
    .await;
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_link_across_two_sidecars_and_w3c_b3_context_continues() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let app = TraceApp::start().await;
    let server_log = dir.path().join("server-access.log");
    let endpoint = collector.endpoint();
    let _server = Sidecar::start(
        dir.path(),
        &opts(
            &cp,
            "api",
            Some(app.addr.port()),
            &flags(Some(&endpoint), &server_log),
        ),
    );
    let client_log = dir.path().join("client-access.log");
    let client = Sidecar::start(
        dir.path(),
        &opts(&cp, "web", None, &flags(Some(&endpoint), &client_log)),
    );
    reachable(&client).await;

    // (a, b) W3C context from the client app: continued, and every hop is a child of the last.
    let tp = format!("00-{TRACE}-{PARENT}-01");
    let (status, _, _, h) = get_via(client.outbound, "api", "/w3c", &[("traceparent", &tp)])
        .await
        .unwrap();
    assert_eq!(status, 200);
    let seen = h["x-seen-traceparent"].to_str().unwrap().to_owned();
    assert!(seen.starts_with(&format!("00-{TRACE}-")), "app saw {seen}");
    let app_parent = seen.split('-').nth(2).unwrap().to_owned();

    let spans = collector.wait_for_spans(TRACE, 2, CONVERGE).await;
    let client_span = spans
        .iter()
        .find(|s| s.kind.to_lowercase().contains("client"))
        .unwrap_or_else(|| panic!("no client span: {spans:?}"));
    let server_span = spans
        .iter()
        .find(|s| s.kind.to_lowercase().contains("server"))
        .unwrap_or_else(|| panic!("no server span: {spans:?}"));
    assert_eq!(client_span.parent, PARENT, "{spans:?}");
    assert_eq!(server_span.parent, client_span.id, "{spans:?}");
    assert_eq!(
        app_parent, server_span.id,
        "the app's parent is the server span"
    );
    let text = collector.text().await;
    for attr in [
        "service.name",
        "mesh.proxy.id",
        "http.response.status_code",
        "url.path",
    ] {
        assert!(text.contains(attr), "{attr} missing from the export");
    }

    // (b) B3 single header in: the app sees b3 with the same trace id.
    let b3_trace = "80f198ee56343ba864fe8b2a57d3eff7";
    let (status, _, _, h) = get_via(
        client.outbound,
        "api",
        "/b3",
        &[("b3", &format!("{b3_trace}-e457b5a2e4d86bd1-1"))],
    )
    .await
    .unwrap();
    assert_eq!(status, 200);
    let b3 = h["x-seen-b3"].to_str().unwrap();
    assert!(b3.starts_with(&format!("{b3_trace}-")), "app saw b3 {b3}");
    // B3 multi header in: propagated in kind.
    let (_, _, _, h) = get_via(
        client.outbound,
        "api",
        "/b3multi",
        &[
            ("x-b3-traceid", "64fe8b2a57d3eff7"),
            ("x-b3-spanid", "e457b5a2e4d86bd1"),
            ("x-b3-sampled", "1"),
        ],
    )
    .await
    .unwrap();
    assert_eq!(h["x-seen-b3-traceid"], "000000000000000064fe8b2a57d3eff7");
    collector.wait_for_spans(b3_trace, 2, CONVERGE).await;

    // (f) access-log lines are JSON and carry the exported trace id.
    let lines = eventually("access log written", CONVERGE, || async {
        let text = std::fs::read_to_string(&server_log).ok()?;
        text.contains(TRACE).then_some(text)
    })
    .await;
    let mut found = false;
    for line in lines.lines() {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("access log line is not JSON ({e}): {line}"));
        if v["trace_id"] == TRACE {
            assert_eq!(v["path"], "/w3c");
            assert_eq!(v["status"], 200);
            assert_eq!(v["span_id"], server_span.id.as_str());
            assert!(v["bytes_out"].as_u64().is_some(), "{line}");
            // A GET has no request body: declared as 0 (or not declared at all).
            assert_eq!(v["bytes_in"].as_u64().unwrap_or(0), 0, "{line}");
            found = true;
        }
    }
    assert!(found);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_zero_exports_no_spans() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let app = TraceApp::start().await;
    let endpoint = collector.endpoint();
    let mut extra = flags(Some(&endpoint), &dir.path().join("s.log"));
    extra.extend(["--trace-sampling".to_owned(), "0".to_owned()]);
    let _server = Sidecar::start(dir.path(), &opts(&cp, "api", Some(app.addr.port()), &extra));
    let client = Sidecar::start(dir.path(), &opts(&cp, "web", None, &extra));
    reachable(&client).await;
    // The control plane's Runtime overrides the flag; set it to 0 too and wait until the
    // client sidecar's decisions (seen by the app as the traceparent flags) say "not sampled".
    let mut admin = admin(&cp).await;
    let runtime = Runtime {
        trace_sampling_ratio: 0.0,
        access_log_ratio: 1.0,
        ..Default::default()
    };
    admin
        .set_runtime(SetRuntimeRequest {
            runtime: Some(runtime),
        })
        .await
        .expect("set runtime");
    eventually("sampling 0 in force", CONVERGE, || async {
        let (_, _, _, h) = get_via(client.outbound, "api", "/probe", &[]).await.ok()?;
        h.get("x-seen-traceparent")?
            .to_str()
            .ok()?
            .ends_with("-00")
            .then_some(())
    })
    .await;
    let mut unsampled = Vec::new();
    for _ in 0..20 {
        let (status, _, _, h) = get_via(client.outbound, "api", "/zero", &[]).await.unwrap();
        assert_eq!(status, 200);
        let tp = h["x-seen-traceparent"].to_str().unwrap().to_owned();
        assert!(tp.ends_with("-00"), "{tp}");
        unsampled.push(tp.split('-').nth(1).unwrap().to_owned());
    }
    // A sampled marker after them: once its spans arrive, the queues (FIFO) have flushed
    // everything recorded before it.
    let tp = format!("00-{TRACE}-{PARENT}-01");
    get_via(client.outbound, "api", "/marker", &[("traceparent", &tp)])
        .await
        .unwrap();
    collector.wait_for_spans(TRACE, 2, CONVERGE).await;
    let text = collector.text().await;
    for t in &unsampled {
        assert!(!text.contains(t.as_str()), "unsampled trace {t} exported");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collector_down_leaves_requests_unaffected() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let app = TraceApp::start().await;
    // Nothing listens there.
    let dead = format!("http://127.0.0.1:{}", free_port());
    let extra = flags(Some(&dead), &dir.path().join("s.log"));
    let server = Sidecar::start(dir.path(), &opts(&cp, "api", Some(app.addr.port()), &extra));
    let client = Sidecar::start(dir.path(), &opts(&cp, "web", None, &extra));
    reachable(&client).await;
    for _ in 0..50 {
        let (status, _, _, _) = get_via(client.outbound, "api", "/ok", &[]).await.unwrap();
        assert_eq!(status, 200);
    }
    // 100 spans (a server and a client span per request) were recorded and none reached a
    // collector: each is counted, as dropped (queue full) or as lost in a failed export.
    let lost = |m: &str| {
        counter(m, "mesh_trace_spans_dropped_total")
            + counter(m, "mesh_trace_spans_export_failed_total")
    };
    let (m, n) = eventually("every span counted as lost", CONVERGE, || async {
        let (s, c) = (
            metrics_text(server.admin).await,
            metrics_text(client.admin).await,
        );
        // The warm-up requests of `reachable` add their spans too.
        let n = lost(&s) + lost(&c);
        (n >= 100.0).then_some((s, n))
    })
    .await;
    assert!(m.contains("mesh_trace_spans_dropped_total"), "{m}");
    println!("{n} spans counted as lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_count_known_traffic() {
    let dir = tempfile::tempdir().unwrap();
    // Requests go straight to the server sidecar's inbound port in plaintext (no client-side
    // retries can add attempts), so this mesh is an anonymous, plaintext one on purpose.
    let cp = ControlPlane::start(&dir.path().join("cp"), &["--discovery-tls=false"]);
    let app = TraceApp::start().await;
    let log = dir.path().join("s.log");
    let server = Sidecar::start(
        dir.path(),
        &opts(&cp, "api", Some(app.addr.port()), &flags(None, &log)),
    );
    let client = Sidecar::start(dir.path(), &opts(&cp, "web", None, &flags(None, &log)));
    reachable(&client).await;

    let series = |class: &str| {
        format!(
            r#"mesh_requests_total{{direction="inbound",service="api",route="",version="v1",status_class="{class}",cause="",grpc_status=""}}"#
        )
    };
    let (ok, failed) = (&series("2xx"), &series("5xx"));
    let before = metrics_text(server.admin).await;
    // 100 requests straight to the server sidecar's inbound listener (no client-side retries
    // can add attempts): 10 of them answered 503 by the app.
    for i in 0..100 {
        let path = if i % 10 == 0 { "/fail" } else { "/ok" };
        let (status, _, _, _) = get_via(server.inbound, "api", path, &[]).await.unwrap();
        assert_eq!(status, if i % 10 == 0 { 503 } else { 200 });
    }
    let after = metrics_text(server.admin).await;
    assert_eq!(counter(&after, ok) - counter(&before, ok), 90.0, "{after}");
    assert_eq!(
        counter(&after, failed) - counter(&before, failed),
        10.0,
        "{after}"
    );
    assert!(
        after.contains("mesh_request_duration_seconds_bucket"),
        "{after}"
    );
    assert!(after.contains("mesh_access_log_dropped_total"), "{after}");
    promtool_check("sidecar", &after);
    promtool_check("control plane", &metrics_text(cp.http).await);
}

/// The difference of one series between two scrapes.
fn delta(before: &str, after: &str, series: &str) -> f64 {
    counter(after, series) - counter(before, series)
}
