//! Traces, metrics and access logs from real sidecars: spans reach a real collector (rotel-agent) with parent links across a three-service chain, W3C/B3 context is continued, sampling 0 exports nothing, a dead collector never fails requests, `/metrics` passes promtool and counts known traffic, access logs carry the exported trace ids.

mod observability_support;
// The metric names dashboards and alerts may use (the contract of docs/observability.md).
#[allow(dead_code)]
#[path = "deploy_support/contract.rs"]
mod contract;

use std::time::Duration;

use mesh_proto::admin::v1::{CreateTokenRequest, SetRuntimeRequest};
use mesh_proto::types::v1::Runtime;
use mesh_tests::admin::{admin, route_acked, set_route, split_rule};
use mesh_tests::http::get_via;
use mesh_tests::{ControlPlane, Sidecar, SidecarOpts, eventually};
use observability_support::{
    Collector, GateApp, RelayApp, Span, TraceApp, counter, free_port, metrics_text, promtool_check,
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
            found = true;
        }
    }
    assert!(found);
}

/// A sidecar of `service` (label version=v1, namespace `shop`, proxy id `<service>-proxy`)
/// with a join token, so it speaks mTLS to its peers, exporting spans to `otlp`.
async fn meshed(
    cp: &ControlPlane,
    dir: &std::path::Path,
    service: &str,
    app: Option<u16>,
    otlp: &str,
) -> Sidecar {
    let mut a = admin(cp).await;
    let token = tokio::time::timeout(
        CONVERGE,
        a.create_token(CreateTokenRequest {
            namespace: "shop".into(),
            service_account: service.into(),
            ttl_secs: 0,
        }),
    )
    .await
    .expect("create token in time")
    .expect("create token")
    .into_inner()
    .token;
    let mut extra = cp.sidecar_tls_args();
    extra.extend(flags(
        Some(otlp),
        &dir.join(format!("{service}-access.log")),
    ));
    extra.extend(["--id".to_owned(), format!("{service}-proxy")]);
    Sidecar::start(
        dir,
        &SidecarOpts {
            service: service.into(),
            namespace: Some("shop".into()),
            labels: vec![("version".into(), "v1".into())],
            app_ports: app.into_iter().collect(),
            control_plane: Some(cp.tls_discovery_url()),
            extra,
            env: vec![("MESH_JOIN_TOKEN".into(), token)],
            ..Default::default()
        },
    )
}

fn one<'a>(spans: &'a [Span], service: &str, client: bool) -> &'a Span {
    let found: Vec<&Span> = spans
        .iter()
        .filter(|s| s.resource("service.name") == Some(service))
        .filter(|s| if client { s.is_client() } else { s.is_server() })
        .collect();
    assert_eq!(
        found.len(),
        1,
        "one {} span of {service} expected: {spans:#?}",
        if client { "client" } else { "server" }
    );
    found[0]
}

/// Client app → sidecar web → sidecar api → app api, which calls db through its own sidecar
/// (forwarding the trace headers it received) → sidecar db → app db: one trace of four
/// spans, each the child of the previous hop, with resource and semantic-convention
/// attributes; a failing request carries `mesh.error`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_service_chain_is_one_trace_with_linked_spans_and_attributes() {
    const CHAIN_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    const CLIENT_SPAN: &str = "b7ad6b7169203331";
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start();
    let cp = ControlPlane::start(&dir.path().join("cp"), &["--discovery-tls=true"]);
    let otlp = collector.endpoint();
    let db_app = TraceApp::start().await;
    let api_app = RelayApp::start("db").await;
    let db = meshed(&cp, dir.path(), "db", Some(db_app.addr.port()), &otlp).await;
    let api = meshed(&cp, dir.path(), "api", Some(api_app.addr.port()), &otlp).await;
    api_app.set_proxy(api.outbound);
    let web = meshed(&cp, dir.path(), "web", None, &otlp).await;
    eventually("the chain answers", CONVERGE, || async {
        get_via(web.outbound, "api", "/warm", &[])
            .await
            .ok()
            .filter(|r| r.0 == 200)
    })
    .await;
    // A named rule for api (web subscribes to api's route since the call above), so the
    // client span can say which rule matched.
    let mut a = admin(&cp).await;
    let version = set_route(
        &mut a,
        "api",
        vec![split_rule("api", "main", &[("v1", 100)])],
    )
    .await;
    eventually("the api route is in force", CONVERGE, || {
        let mut a = a.clone();
        let version = version.clone();
        async move { route_acked(&mut a, "api", &version).await.then_some(()) }
    })
    .await;

    let tp = format!("00-{CHAIN_TRACE}-{CLIENT_SPAN}-01");
    let (status, _, _, h) = get_via(web.outbound, "api", "/chain", &[("traceparent", &tp)])
        .await
        .unwrap();
    assert_eq!(status, 200);
    let spans = collector.wait_for_spans(CHAIN_TRACE, 4, CONVERGE).await;
    let web_client = one(&spans, "web", true);
    let api_server = one(&spans, "api", false);
    let api_client = one(&spans, "api", true);
    let db_server = one(&spans, "db", false);
    assert_eq!(
        web_client.parent, CLIENT_SPAN,
        "web's client span continues the caller"
    );
    assert_eq!(
        api_server.parent, web_client.id,
        "api's server span under web's client span"
    );
    assert_eq!(
        api_client.parent, api_server.id,
        "api's call out under its server span"
    );
    assert_eq!(
        db_server.parent, api_client.id,
        "db's server span under api's client span"
    );
    // What the apps saw: each app's parent is its own sidecar's server span.
    let relay_seen = h["x-relay-seen-traceparent"].to_str().unwrap();
    assert_eq!(relay_seen.split('-').nth(2), Some(api_server.id.as_str()));
    let db_seen = h["x-seen-traceparent"].to_str().unwrap();
    assert!(
        db_seen.starts_with(&format!("00-{CHAIN_TRACE}-")),
        "{db_seen}"
    );
    assert_eq!(db_seen.split('-').nth(2), Some(db_server.id.as_str()));

    for s in [web_client, api_server, api_client, db_server] {
        let service = s.resource("service.name").unwrap();
        assert_eq!(s.resource("service.namespace"), Some("shop"), "{s:#?}");
        assert_eq!(s.resource("service.version"), Some("v1"), "{s:#?}");
        let proxy = format!("{service}-proxy");
        assert_eq!(s.resource("mesh.proxy.id"), Some(proxy.as_str()), "{s:#?}");
        assert_eq!(s.attr("http.request.method"), Some("GET"), "{s:#?}");
        assert_eq!(s.attr("url.path"), Some("/chain"), "{s:#?}");
        assert_eq!(s.attr("http.response.status_code"), Some("200"), "{s:#?}");
        assert_eq!(s.attr("mesh.tls"), Some("true"), "{s:#?}");
        assert!(s.attr("network.protocol.version").is_some(), "{s:#?}");
        assert!(s.attr("server.address").is_some(), "{s:#?}");
    }
    // Client side: the rule, the backend, the endpoint, attempts, the server's identity.
    assert_eq!(web_client.attr("server.address"), Some("api"));
    assert_eq!(web_client.attr("network.protocol.version"), Some("1.1"));
    assert_eq!(
        web_client.attr("mesh.route"),
        Some("main"),
        "{web_client:#?}"
    );
    assert_eq!(web_client.attr("mesh.backend"), Some("api"));
    assert_eq!(
        web_client.attr("mesh.endpoint"),
        Some(api.inbound.to_string().as_str())
    );
    assert_eq!(web_client.attr("mesh.retries"), Some("0"));
    assert_eq!(api_client.attr("mesh.backend"), Some("db"));
    assert_eq!(
        api_client.attr("mesh.endpoint"),
        Some(db.inbound.to_string().as_str())
    );
    for (s, peer) in [
        (web_client, "/sa/api"),
        (api_server, "/sa/web"),
        (api_client, "/sa/db"),
        (db_server, "/sa/api"),
    ] {
        let id = s
            .attr("mesh.peer_identity")
            .unwrap_or_else(|| panic!("{s:#?}"));
        assert!(
            id.starts_with("spiffe://") && id.ends_with(peer),
            "{id} for {s:#?}"
        );
    }

    // With a workload certificate the sidecar reports its expiry (in the future).
    let m = metrics_text(web.admin).await;
    let leaf = counter(&m, r#"mesh_cert_expiration_timestamp_seconds{cert="leaf"}"#);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(leaf > now, "leaf expiry {leaf} not after {now}:\n{m}");
    let root = counter(&m, r#"mesh_cert_expiration_timestamp_seconds{cert="root"}"#);
    assert!(
        root >= leaf,
        "root expiry {root} before the leaf's {leaf}:\n{m}"
    );
    promtool_check("mTLS sidecar", &m);

    // A request the proxy answers itself carries the cause.
    const ERR_TRACE: &str = "5b8aa5a2d2c872e8321cf37308d69df2";
    let tp = format!("00-{ERR_TRACE}-{CLIENT_SPAN}-01");
    let (status, _, _, _) = get_via(web.outbound, "nowhere", "/x", &[("traceparent", &tp)])
        .await
        .unwrap();
    assert!(status >= 400, "{status}");
    let spans = collector.wait_for_spans(ERR_TRACE, 1, CONVERGE).await;
    assert_eq!(spans[0].attr("mesh.error"), Some("no-route"), "{spans:#?}");
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
    let m = metrics_text(server.admin).await;
    assert!(m.contains("mesh_trace_spans_dropped_total"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_pass_promtool_and_count_known_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
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

/// The control plane traces its own work: a `route set` through the admin API yields an
/// admin-call span (method, status) and a push span per proxy it reaches (type URL, resource
/// count, version, proxy id), exported to a real collector.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_traces_admin_calls_and_pushes() {
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start();
    let endpoint = collector.endpoint();
    let cp = ControlPlane::start(&dir.path().join("cp"), &["--otlp-endpoint", &endpoint]);
    let app = TraceApp::start().await;
    let _server = Sidecar::start(dir.path(), &opts(&cp, "api", Some(app.addr.port()), &[]));
    let client = Sidecar::start(
        dir.path(),
        &opts(
            &cp,
            "web",
            None,
            &["--id".to_owned(), "web-proxy".to_owned()],
        ),
    );
    // The client now subscribes to api's route, so a change to it is pushed to the client.
    reachable(&client).await;
    let mut a = admin(&cp).await;
    let version = set_route(
        &mut a,
        "api",
        vec![split_rule("api", "traced", &[("v1", 100)])],
    )
    .await;
    let spans = collector
        .wait_for("admin SetRoute", CONVERGE, |s| {
            s.attr("rpc.method") == Some("SetRoute")
        })
        .await;
    let call = spans
        .iter()
        .find(|s| s.attr("rpc.method") == Some("SetRoute"))
        .unwrap();
    assert_eq!(
        call.attr("rpc.service"),
        Some("mesh.admin.v1.Admin"),
        "{call:#?}"
    );
    assert_eq!(call.attr("rpc.grpc.status_code"), Some("0"), "{call:#?}");
    assert_eq!(call.resource("service.name"), Some("mesh-control-plane"));
    let spans = collector
        .wait_for("push of the route to web", CONVERGE, |s| {
            s.attr("mesh.type_url") == Some(mesh_proto::type_url::ROUTE)
                && s.attr("mesh.proxy.id") == Some("web-proxy")
        })
        .await;
    let push = spans
        .iter()
        .find(|s| {
            s.attr("mesh.type_url") == Some(mesh_proto::type_url::ROUTE)
                && s.attr("mesh.proxy.id") == Some("web-proxy")
        })
        .unwrap();
    assert_eq!(push.attr("mesh.resource_count"), Some("1"), "{push:#?}");
    assert!(push.attr("mesh.version").is_some(), "{push:#?}");
    assert!(!version.is_empty());

    // A rejected call is traced with its status code (InvalidArgument = 3).
    let bad = a
        .set_route(mesh_proto::admin::v1::SetRouteRequest {
            route: None,
            dry_run: false,
        })
        .await;
    assert!(bad.is_err());
    collector
        .wait_for("failed SetRoute", CONVERGE, |s| {
            s.attr("rpc.method") == Some("SetRoute") && s.attr("rpc.grpc.status_code") == Some("3")
        })
        .await;
}

/// The difference of one series between two scrapes.
fn delta(before: &str, after: &str, series: &str) -> f64 {
    counter(after, series) - counter(before, series)
}

/// Known traffic moves each metric family by what it should: requests by route and version,
/// the latency histogram, retries, errors by cause, authz decisions, TCP connections and bytes
/// (a CONNECT tunnel), protocol detection timeouts, endpoints by state, discovery state; the
/// control plane counts proxies, pushes and store operations; both pages pass promtool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metric_families_move_with_known_traffic() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let app = TraceApp::start().await;
    let api = Sidecar::start(dir.path(), &opts(&cp, "api", Some(app.addr.port()), &[]));
    let web = Sidecar::start(dir.path(), &opts(&cp, "web", None, &[]));
    reachable(&web).await;
    let mut a = admin(&cp).await;
    let mut rule = split_rule("api", "retrying", &[("v1", 100)]);
    rule.retry = Some(mesh_proto::types::v1::RetryPolicy {
        attempts: 3,
        retry_on: vec!["5xx".into()],
        backoff_base_ms: 1,
        backoff_max_ms: 1,
        ..Default::default()
    });
    let version = set_route(&mut a, "api", vec![rule]).await;
    eventually("the api route is in force", CONVERGE, || {
        let mut a = a.clone();
        let version = version.clone();
        async move { route_acked(&mut a, "api", &version).await.then_some(()) }
    })
    .await;

    let (web0, api0) = (metrics_text(web.admin).await, metrics_text(api.admin).await);
    for _ in 0..10 {
        let (status, _, _, _) = get_via(web.outbound, "api", "/ok", &[]).await.unwrap();
        assert_eq!(status, 200);
    }
    let (status, _, _, _) = get_via(web.outbound, "nowhere", "/", &[]).await.unwrap();
    assert!(status >= 400, "{status}");
    let (web1, api1) = (metrics_text(web.admin).await, metrics_text(api.admin).await);

    let out = |class: &str| {
        format!(
            r#"{{direction="outbound",service="api",route="retrying",version="v1",status_class="{class}"#
        )
    };
    let requests = |class: &str| {
        format!(
            "mesh_requests_total{}\",cause=\"\",grpc_status=\"\"}}",
            out(class)
        )
    };
    assert_eq!(delta(&web0, &web1, &requests("2xx")), 10.0, "{web1}");
    let hist = format!("mesh_request_duration_seconds_count{}\"}}", out("2xx"));
    assert_eq!(delta(&web0, &web1, &hist), 10.0, "{web1}");
    assert_eq!(
        delta(&web0, &web1, r#"mesh_errors_total{cause="no-route"}"#),
        1.0,
        "{web1}"
    );
    // Every request reached api's inbound and was allowed (no policy).
    let allowed = r#"mesh_authz_total{decision="allow"}"#;
    assert_eq!(delta(&api0, &api1, allowed), 10.0, "{api1}");
    let endpoints = |state: &str| format!(r#"mesh_endpoints{{service="api",state="{state}"}}"#);
    assert_eq!(counter(&web1, &endpoints("healthy")), 1.0, "{web1}");
    assert!(web1.contains("mesh_discovery_connected 1"), "{web1}");

    // An opaque tunnel: CONNECT through web to api's app port, one HTTP exchange inside.
    let mut s = tokio::net::TcpStream::connect(web.outbound).await.unwrap();
    let port = app.addr.port();
    let connect = format!("CONNECT api:{port} HTTP/1.1\r\nHost: api:{port}\r\n\r\n");
    s.write_all(connect.as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        let n = tokio::time::timeout(CONVERGE, s.read(&mut b))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, 1, "tunnel closed: {}", String::from_utf8_lossy(&head));
        head.push(b[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s.write_all(b"GET /ok HTTP/1.1\r\nHost: api\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut rsp = Vec::new();
    tokio::time::timeout(CONVERGE, s.read_to_end(&mut rsp))
        .await
        .unwrap()
        .unwrap();
    assert!(
        rsp.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&rsp)
    );
    drop(s);
    let web2 = eventually("the tunnel counted as closed", CONVERGE, || async {
        let m = metrics_text(web.admin).await;
        (delta(&web1, &m, "mesh_tcp_connections_closed_total") >= 1.0).then_some(m)
    })
    .await;
    assert!(delta(&web1, &web2, "mesh_tcp_connections_opened_total") >= 1.0);
    for dir in ["to_upstream", "to_downstream"] {
        let series = format!(r#"mesh_tcp_bytes_total{{direction="{dir}"}}"#);
        assert!(delta(&web1, &web2, &series) > 0.0, "{series}\n{web2}");
    }
    assert!(web2.contains("mesh_tcp_connection_duration_seconds_count"));

    // A client that connects to api's inbound and says nothing: detection times out.
    let silent = tokio::net::TcpStream::connect(api.inbound).await.unwrap();
    let api2 = eventually("detection timeout counted", CONVERGE, || async {
        let m = metrics_text(api.admin).await;
        (delta(&api1, &m, "mesh_protocol_detect_timeouts_total") >= 1.0).then_some(m)
    })
    .await;
    drop(silent);

    // Two failing requests, 3 attempts each: up to 4 retries (each made or refused by the
    // budget); six 5xx in a row eject api's only endpoint (5 consecutive is the default).
    for _ in 0..2 {
        let (status, _, _, _) = get_via(web.outbound, "api", "/fail", &[]).await.unwrap();
        assert_eq!(status, 503);
    }
    let web3 = metrics_text(web.admin).await;
    assert_eq!(delta(&web2, &web3, &requests("5xx")), 2.0, "{web3}");
    let retries = delta(&web2, &web3, "mesh_retries_total");
    let refused = delta(&web2, &web3, "mesh_retry_budget_exhausted_total");
    assert!(
        retries >= 2.0 && retries + refused <= 4.0,
        "{retries} {refused}\n{web3}"
    );
    if retries == 4.0 {
        assert!(
            delta(&web2, &web3, "mesh_outlier_ejections_total") >= 1.0,
            "{web3}"
        );
        assert_eq!(counter(&web3, &endpoints("ejected")), 1.0, "{web3}");
    }

    promtool_check("web sidecar", &web3);
    promtool_check("api sidecar", &api2);
    // Every family the dashboards and alerts use is on the page. Not here: TLS handshake
    // failures (counted by the TLS layer) and certificate expiry (needs a workload
    // certificate: checked in the mTLS chain test).
    for name in contract::SIDECAR_METRICS {
        if [
            "mesh_tls_handshake_failures_total",
            "mesh_cert_expiration_timestamp_seconds",
        ]
        .contains(name)
        {
            continue;
        }
        let family = name.trim_end_matches("_bucket");
        assert!(
            web3.contains(&format!("# TYPE {family} ")),
            "{family} missing from the sidecar's /metrics:\n{web3}"
        );
    }

    let cpm = metrics_text(cp.http).await;
    assert_eq!(counter(&cpm, "mesh_cp_connected_proxies"), 2.0, "{cpm}");
    assert!(
        counter(&cpm, "mesh_cp_push_duration_seconds_count") >= 1.0,
        "{cpm}"
    );
    assert!(cpm.contains("mesh_cp_store_ops_total{"), "{cpm}");
    promtool_check("control plane", &cpm);
    for name in contract::CONTROL_PLANE_METRICS {
        let family = name.trim_end_matches("_bucket");
        assert!(
            cpm.contains(&format!("# TYPE {family} ")),
            "{family} missing from the control plane's /metrics:\n{cpm}"
        );
    }
}

/// A hop ends when its response body ends: while the last chunk is held back, neither sidecar
/// has counted the request in the latency histogram or exported its span; once it flows,
/// both do.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spans_and_latency_end_with_the_response_body() {
    use http_body_util::BodyExt as _;
    const BODY_TRACE: &str = "6e0c63257de34c926f9efcd03927272e";
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start();
    let endpoint = collector.endpoint();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let app = GateApp::start().await;
    let log = dir.path().join("gate.log");
    let api = Sidecar::start(
        dir.path(),
        &opts(
            &cp,
            "api",
            Some(app.addr.port()),
            &flags(Some(&endpoint), &log),
        ),
    );
    let web = Sidecar::start(
        dir.path(),
        &opts(&cp, "web", None, &flags(Some(&endpoint), &log)),
    );
    // Warm-up: each waits for a permit, so hand out one per attempt.
    eventually("api reachable through the mesh", CONVERGE, || async {
        app.open();
        get_via(web.outbound, "api", "/warm", &[])
            .await
            .ok()
            .filter(|r| r.0 == 200)
    })
    .await;
    app.close();
    let count = |dir: &str| {
        format!(
            r#"mesh_request_duration_seconds_count{{direction="{dir}",service="api",route="",version="v1",status_class="2xx"}}"#
        )
    };
    let (web0, api0) = (metrics_text(web.admin).await, metrics_text(api.admin).await);

    let stream = tokio::net::TcpStream::connect(web.outbound).await.unwrap();
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::get("/stream")
        .header("host", "api")
        .header("traceparent", format!("00-{BODY_TRACE}-{PARENT}-01"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let mut rsp = tokio::time::timeout(CONVERGE, send.send_request(req))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rsp.status(), 200);
    let first = tokio::time::timeout(CONVERGE, rsp.body_mut().frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.into_data().unwrap(), "first");
    // Head and first chunk delivered, last chunk held: the hop is still open on both sides.
    let (web1, api1) = (metrics_text(web.admin).await, metrics_text(api.admin).await);
    assert_eq!(delta(&web0, &web1, &count("outbound")), 0.0, "{web1}");
    assert_eq!(delta(&api0, &api1, &count("inbound")), 0.0, "{api1}");
    assert!(!collector.text().await.contains(BODY_TRACE));

    app.open();
    let rest = tokio::time::timeout(CONVERGE, rsp.into_body().collect())
        .await
        .unwrap()
        .unwrap()
        .to_bytes();
    assert_eq!(rest, "last");
    eventually(
        "both hops counted once the body ended",
        CONVERGE,
        || async {
            let (w, a) = (metrics_text(web.admin).await, metrics_text(api.admin).await);
            (delta(&web0, &w, &count("outbound")) == 1.0
                && delta(&api0, &a, &count("inbound")) == 1.0)
                .then_some(())
        },
    )
    .await;
    let spans = collector.wait_for_spans(BODY_TRACE, 2, CONVERGE).await;
    assert!(spans.iter().any(Span::is_client) && spans.iter().any(Span::is_server));
}

/// A stand-in gRPC workload (the mesh's own Identity service): `deny` fails with
/// PERMISSION_DENIED, anything else succeeds.
struct GrpcApp;

#[tonic::async_trait]
impl mesh_proto::identity::v1::identity_server::Identity for GrpcApp {
    async fn certify(
        &self,
        r: tonic::Request<mesh_proto::identity::v1::CertifyRequest>,
    ) -> Result<tonic::Response<mesh_proto::identity::v1::CertifyResponse>, tonic::Status> {
        if r.into_inner().token == "deny" {
            return Err(tonic::Status::permission_denied("denied by the app"));
        }
        Ok(tonic::Response::new(Default::default()))
    }
}

/// gRPC through two sidecars: the client span carries `rpc.*` attributes with the gRPC status
/// (from trailers), and `mesh_requests_total` counts by `grpc_status`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_calls_are_traced_and_counted_by_grpc_status() {
    use mesh_proto::identity::v1::CertifyRequest;
    use mesh_proto::identity::v1::identity_client::IdentityClient;
    use mesh_proto::identity::v1::identity_server::IdentityServer;
    const GRPC_TRACE: &str = "3d1d6e1b8a5f4c0b9e2a7c6d5f4e3a2b";
    let dir = tempfile::tempdir().unwrap();
    let collector = Collector::start();
    let endpoint = collector.endpoint();
    let cp = ControlPlane::start(&dir.path().join("cp"), &[]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let app_port = listener.local_addr().unwrap().port();
    let app = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(IdentityServer::new(GrpcApp))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let log = dir.path().join("grpc.log");
    let _api = Sidecar::start(
        dir.path(),
        &opts(&cp, "api", Some(app_port), &flags(Some(&endpoint), &log)),
    );
    let web = Sidecar::start(
        dir.path(),
        &opts(&cp, "web", None, &flags(Some(&endpoint), &log)),
    );
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", web.outbound))
        .unwrap()
        .origin("http://api".parse().unwrap())
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .unwrap();
    let client = IdentityClient::new(channel);
    let call = |token: &'static str, traceparent: Option<String>| {
        let mut client = client.clone();
        async move {
            let mut req = tonic::Request::new(CertifyRequest {
                token: token.into(),
                ..Default::default()
            });
            if let Some(tp) = traceparent {
                req.metadata_mut()
                    .insert("traceparent", tp.parse().unwrap());
            }
            client.certify(req).await
        }
    };
    eventually("gRPC through the mesh", CONVERGE, || async {
        call("warm", None).await.ok()
    })
    .await;
    let before = metrics_text(web.admin).await;
    call("ok", Some(format!("00-{GRPC_TRACE}-{PARENT}-01")))
        .await
        .expect("ok call");
    let denied = call("deny", None).await.expect_err("denied call");
    assert_eq!(denied.code(), tonic::Code::PermissionDenied);
    let after = metrics_text(web.admin).await;
    let series = |code: &str| {
        format!(
            r#"mesh_requests_total{{direction="outbound",service="api",route="",version="v1",status_class="2xx",cause="",grpc_status="{code}"}}"#
        )
    };
    assert_eq!(delta(&before, &after, &series("0")), 1.0, "{after}");
    assert_eq!(delta(&before, &after, &series("7")), 1.0, "{after}");

    let spans = collector.wait_for_spans(GRPC_TRACE, 2, CONVERGE).await;
    let client_span = spans.iter().find(|s| s.is_client()).unwrap();
    assert_eq!(
        client_span.attr("rpc.system"),
        Some("grpc"),
        "{client_span:#?}"
    );
    assert_eq!(
        client_span.attr("rpc.service"),
        Some("mesh.identity.v1.Identity")
    );
    assert_eq!(client_span.attr("rpc.method"), Some("Certify"));
    assert_eq!(client_span.attr("rpc.grpc.status_code"), Some("0"));
    assert_eq!(client_span.attr("network.protocol.version"), Some("2"));
    app.abort();
}
