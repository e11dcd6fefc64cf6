//! Tests of route selection order, weighted picks and actions.

use http::Request;
use mesh_proto::types::v1 as pb;

use super::*;

fn backend(svc: &str, subset: &str, weight: u32) -> pb::WeightedBackend {
    pb::WeightedBackend {
        service: svc.into(),
        subset: subset.into(),
        weight,
    }
}

fn path(kind: pb::PathMatchKind, value: &str) -> Option<pb::PathMatch> {
    Some(pb::PathMatch {
        kind: kind as i32,
        value: value.into(),
    })
}

fn route() -> Route {
    let canary = pb::RouteRule {
        name: "canary".into(),
        matches: vec![pb::RouteMatch {
            headers: vec![pb::KeyValueMatch {
                name: "x-canary".into(),
                kind: pb::ValueMatchKind::Exact as i32,
                value: "1".into(),
            }],
            ..Default::default()
        }],
        backends: vec![backend("svc", "v2", 1)],
        ..Default::default()
    };
    let api = pb::RouteRule {
        name: "api".into(),
        matches: vec![
            pb::RouteMatch {
                path: path(pb::PathMatchKind::Prefix, "/api/"),
                method: "get".into(),
                ..Default::default()
            },
            pb::RouteMatch {
                path: path(pb::PathMatchKind::Regex, "/v[0-9]+/.*"),
                query_params: vec![pb::KeyValueMatch {
                    name: "debug".into(),
                    kind: pb::ValueMatchKind::Present as i32,
                    value: String::new(),
                }],
                ..Default::default()
            },
        ],
        backends: vec![backend("svc", "v1", 1)],
        rewrite_prefix: "/internal/".into(),
        ..Default::default()
    };
    let split = pb::RouteRule {
        name: "split".into(),
        backends: vec![backend("svc", "v1", 80), backend("svc", "v2", 20)],
        ..Default::default()
    };
    Route::try_from(&pb::Route {
        service: "svc".into(),
        rules: vec![canary, api, split],
    })
    .unwrap()
}

fn sel<'r>(r: &'r Route, req: &Request<()>) -> &'r str {
    &select(r, RequestInfo::from_request(req)).unwrap().rule.name
}

#[test]
fn first_match_wins_in_order() {
    let r = route();
    let req = Request::get("/api/x")
        .header("x-canary", "1")
        .body(())
        .unwrap();
    assert_eq!(sel(&r, &req), "canary");
    let req = Request::get("/api/x").body(()).unwrap();
    assert_eq!(sel(&r, &req), "api");
    let req = Request::post("/api/x").body(()).unwrap();
    assert_eq!(sel(&r, &req), "split");
    let req = Request::post("/v2/y?a=1&debug").body(()).unwrap();
    assert_eq!(sel(&r, &req), "api");
    let req = Request::post("/v2/y?a=1").body(()).unwrap();
    assert_eq!(sel(&r, &req), "split");
    let req = Request::get("/").header("x-canary", "0").body(()).unwrap();
    assert_eq!(sel(&r, &req), "split");
}

#[test]
fn weighted_pick_covers_weights_exactly() {
    let r = route();
    let rule = &r.rules[2];
    let v2 = (0..rule.total_weight)
        .filter(|&d| pick_backend(rule, d).unwrap().subset.as_deref() == Some("v2"))
        .count();
    assert_eq!(v2, 20);
    assert_eq!(rule.total_weight, 100);
}

#[test]
fn prefix_rewrite_keeps_rest_and_query() {
    let r = route();
    let req = Request::get("/api/users/7?x=1").body(()).unwrap();
    let s = select(&r, RequestInfo::from_request(&req)).unwrap();
    let uri = rewrite(&s, req.uri()).unwrap();
    assert_eq!(uri, "/internal/users/7?x=1");
}

#[test]
fn header_ops_apply_in_order() {
    let ops = RouteRule::try_from(&pb::RouteRule {
        backends: vec![backend("svc", "", 0)],
        request_headers: vec![
            pb::HeaderOp {
                kind: pb::HeaderOpKind::Set as i32,
                name: "x-a".into(),
                value: "1".into(),
            },
            pb::HeaderOp {
                kind: pb::HeaderOpKind::Add as i32,
                name: "x-a".into(),
                value: "2".into(),
            },
            pb::HeaderOp {
                kind: pb::HeaderOpKind::Remove as i32,
                name: "x-gone".into(),
                value: String::new(),
            },
        ],
        ..Default::default()
    })
    .unwrap()
    .request_headers;
    let mut h = HeaderMap::new();
    h.insert("x-a", HeaderValue::from_static("0"));
    h.insert("x-gone", HeaderValue::from_static("0"));
    apply_header_ops(&ops, &mut h);
    let a: Vec<_> = h.get_all("x-a").iter().collect();
    assert_eq!(a, ["1", "2"]);
    assert!(!h.contains_key("x-gone"));
}

#[test]
fn redirect_builds_location() {
    let r = Redirect {
        scheme: Some("https".into()),
        host: None,
        path: None,
        status: 301,
    };
    let uri: Uri = "/a?b=1".parse().unwrap();
    let (status, loc) = redirect_target(&r, &uri, Some("svc")).unwrap();
    assert_eq!(status, StatusCode::MOVED_PERMANENTLY);
    assert_eq!(loc, "https://svc/a?b=1");
}
