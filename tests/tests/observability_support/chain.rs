//! Traces across hops: a three-service mTLS chain with an app forwarding context in the middle, a span that waits for its response body, gRPC with `rpc.*` attributes.

use std::time::Duration;

use mesh_proto::admin::v1::CreateTokenRequest;
use mesh_tests::admin::{admin, route_acked, set_route, split_rule};
use mesh_tests::http::get_via;
use mesh_tests::{ControlPlane, Sidecar, SidecarOpts, eventually};

use super::observability_support::{
    Collector, GateApp, RelayApp, Span, TraceApp, counter, metrics_text, promtool_check,
};
use super::{CONVERGE, PARENT, delta, flags, opts};

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
            // The workload's own account serves its service (as `mesh-cli run` binds it).
            services: vec![service.into()],
            max_uses: 0,
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
    // The chain runs in namespace shop: its api is the service `api.shop`.
    let version = set_route(
        &mut a,
        "api.shop",
        vec![split_rule("api.shop", "main", &[("v1", 100)])],
    )
    .await;
    eventually("the api route is in force", CONVERGE, || {
        let mut a = a.clone();
        let version = version.clone();
        async move {
            route_acked(&mut a, "api.shop", &version)
                .await
                .then_some(())
        }
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
    assert_eq!(web_client.attr("mesh.backend"), Some("api.shop"));
    assert_eq!(
        web_client.attr("mesh.endpoint"),
        Some(api.inbound.to_string().as_str())
    );
    assert_eq!(web_client.attr("mesh.retries"), Some("0"));
    assert_eq!(api_client.attr("mesh.backend"), Some("db.shop"));
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

    // web's access-log line for the request names the same facts as its span.
    let web_log = dir.path().join("web-access.log");
    let line = eventually("web's access log line", CONVERGE, || async {
        let text = std::fs::read_to_string(&web_log).ok()?;
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["trace_id"] == CHAIN_TRACE)
    })
    .await;
    assert_eq!(line["span_id"], web_client.id.as_str(), "{line}");
    assert_eq!(line["route"], "main", "{line}");
    assert_eq!(line["upstream"], api.inbound.to_string().as_str(), "{line}");
    assert_eq!(line["retries"], 0, "{line}");
    assert_eq!(line["tls"], true, "{line}");
    assert!(
        line["peer_identity"].as_str().unwrap().ends_with("/sa/api"),
        "{line}"
    );

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
