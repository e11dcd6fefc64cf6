//! Rule evaluation as the proxy does it: first match wins, with the reason for each rule.

use mesh_proto::types::v1 as pb;

use super::{Req, evaluate};

fn route() -> pb::Route {
    let header = pb::KeyValueMatch {
        name: "x-canary".into(),
        kind: pb::ValueMatchKind::Exact as i32,
        value: "1".into(),
    };
    let api = pb::PathMatch {
        kind: pb::PathMatchKind::Prefix as i32,
        value: "/api".into(),
    };
    pb::Route {
        service: "reviews".into(),
        rules: vec![
            pb::RouteRule {
                name: "canary".into(),
                matches: vec![pb::RouteMatch {
                    headers: vec![header],
                    ..Default::default()
                }],
                ..Default::default()
            },
            pb::RouteRule {
                name: "api-get".into(),
                matches: vec![pb::RouteMatch {
                    path: Some(api),
                    method: "GET".into(),
                    ..Default::default()
                }],
                ..Default::default()
            },
            pb::RouteRule {
                name: "default".into(),
                ..Default::default()
            },
        ],
    }
}

fn req(method: &str, path: &str, headers: &[(&str, &str)]) -> Req {
    Req {
        method: method.into(),
        host: "reviews".into(),
        path: path.into(),
        query: Vec::new(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

#[test]
fn first_match_wins_with_reasons() {
    let v = evaluate(&route(), &req("GET", "/api/x", &[("x-canary", "1")]));
    assert_eq!(v.len(), 1);
    assert!(v[0].matched && v[0].name == "canary");

    let v = evaluate(&route(), &req("GET", "/api/x", &[]));
    assert_eq!(v[0].why, "header x-canary is absent");
    assert!(v[1].matched && v[1].name == "api-get", "{v:?}");

    let v = evaluate(&route(), &req("POST", "/api/x", &[("x-canary", "0")]));
    assert_eq!(v[0].why, "header x-canary=0 is not 1");
    assert_eq!(v[1].why, "method POST is not GET");
    assert!(v[2].matched && v[2].name == "default");
}
