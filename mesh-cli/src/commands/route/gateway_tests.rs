//! Gateway API conversion: examples from the Gateway API docs, refusals, export round trip.

use super::*;

/// The traffic-splitting example of the Gateway API guides (foo-v1/foo-v2 backends).
const SPLIT: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: foo-route
  labels:
    gateway: prod-web-gw
spec:
  parentRefs:
  - name: prod-web
  hostnames:
  - foo.example.com
  rules:
  - backendRefs:
    - name: foo-v1
      port: 8080
      weight: 90
    - name: foo-v2
      port: 8080
      weight: 10
"#;

/// The HTTP routing example of the guides: header match, path match, header modifier.
const ROUTING: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: bar-route
spec:
  parentRefs:
  - name: example-gateway
  hostnames:
  - "bar.example.com"
  rules:
  - matches:
    - headers:
      - type: Exact
        name: env
        value: canary
    backendRefs:
    - name: bar-v2
      port: 8080
  - matches:
    - path:
        type: PathPrefix
        value: /api
      method: GET
      queryParams:
      - name: debug
        value: "1"
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
        - name: x-env
          value: prod
        remove: ["x-debug"]
    - type: URLRewrite
      urlRewrite:
        path:
          type: ReplacePrefixMatch
          replacePrefixMatch: /v2
    - type: RequestMirror
      requestMirror:
        backendRef:
          name: bar-v3
          port: 8080
    backendRefs:
    - name: bar-v1
      port: 8080
    timeouts:
      request: 500ms
  - backendRefs:
    - name: bar-v1
      weight: 1
    - name: bar-v2
      weight: 2
"#;

#[test]
fn docs_traffic_split_example() {
    let routes = parse(SPLIT).unwrap();
    assert_eq!(routes.len(), 1);
    let r = &routes[0];
    assert_eq!(r.service, "foo");
    let b = &r.rules[0].backends;
    assert_eq!(
        (b[0].service.as_str(), b[0].subset.as_str(), b[0].weight),
        ("foo", "v1", 90)
    );
    assert_eq!(
        (b[1].service.as_str(), b[1].subset.as_str(), b[1].weight),
        ("foo", "v2", 10)
    );
}

#[test]
fn docs_routing_example() {
    let r = &parse(ROUTING).unwrap()[0];
    assert_eq!(r.service, "bar");
    assert_eq!(r.rules.len(), 3);
    assert_eq!(r.rules[0].matches[0].headers[0].name, "env");
    assert_eq!(r.rules[0].backends[0].weight, 100);
    let api = &r.rules[1];
    assert_eq!(api.matches[0].path.as_ref().unwrap().value, "/api");
    assert_eq!(api.matches[0].method, "GET");
    assert_eq!(api.rewrite_prefix, "/v2");
    assert_eq!(api.timeout_ms, 500);
    assert_eq!(api.request_headers.len(), 2);
    assert_eq!(api.mirror.as_ref().unwrap().subset, "v3");
    assert_eq!(api.mirror.as_ref().unwrap().permille, 1000);
    // Relative weights 1:2 become percentages summing to 100.
    let w: Vec<u32> = r.rules[2].backends.iter().map(|b| b.weight).collect();
    assert_eq!(w, vec![33, 67]);
}

#[test]
fn unsupported_fields_are_named() {
    let ext = SPLIT.replace(
        "  - backendRefs:",
        "  - filters:\n    - type: ExtensionRef\n      extensionRef: {name: x}\n    backendRefs:",
    );
    assert_eq!(
        parse(&ext).unwrap_err(),
        "document 0: spec.rules[0].filters[0].type: ExtensionRef is not supported"
    );
    let sp = SPLIT.replace(
        "  - backendRefs:",
        "  - sessionPersistence: {}\n    backendRefs:",
    );
    assert!(
        parse(&sp)
            .unwrap_err()
            .starts_with("document 0: spec.rules[0].sessionPersistence is not supported")
    );
    let full = ROUTING.replace(
        "type: ReplacePrefixMatch\n          replacePrefixMatch: /v2",
        "type: ReplaceFullPath\n          replaceFullPath: /x",
    );
    assert!(
        parse(&full)
            .unwrap_err()
            .contains("spec.rules[1].filters[1].urlRewrite.path")
    );
    let gw = SPLIT.replace("kind: HTTPRoute", "kind: Gateway");
    assert!(
        parse(&gw)
            .unwrap_err()
            .contains("kind: \"Gateway\" is not supported")
    );
}

#[test]
fn export_round_trips() {
    for text in [SPLIT, ROUTING] {
        for route in parse(text).unwrap() {
            let yaml =
                serde_norway::to_string(&super::super::export::export(&route).unwrap()).unwrap();
            assert_eq!(parse(&yaml).unwrap(), vec![route], "{yaml}");
        }
    }
}

#[test]
fn grpc_route_methods_become_paths() {
    let g = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {name: echo}
spec:
  rules:
  - matches:
    - method: {service: echo.Echo, method: Say}
    backendRefs: [{name: echo-v2}]
"#;
    let r = &parse(g).unwrap()[0];
    assert_eq!(r.service, "echo");
    assert_eq!(
        r.rules[0].matches[0].path.as_ref().unwrap().value,
        "/echo.Echo/Say"
    );
}
