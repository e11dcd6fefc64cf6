//! `route apply -f` of a Gateway API HTTPRoute measured on real traffic: the URLRewrite,
//! RequestHeaderModifier and RequestMirror filters reach real apps through real sidecars.

mod support;

use support::echo::Answer;
use support::routed::{Mesh, by_version, only, settled};

const V123: [(&str, Answer); 3] = [("v1", Answer::Ok), ("v2", Answer::Ok), ("v3", Answer::Ok)];

/// A Gateway API HTTPRoute with the filters we support, as an operator would write it.
const HTTPROUTE: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: api-store
spec:
  parentRefs:
  - name: mesh
  hostnames:
  - api
  rules:
  - matches:
    - path:
        type: PathPrefix
        value: /store
    filters:
    - type: URLRewrite
      urlRewrite:
        path:
          type: ReplacePrefixMatch
          replacePrefixMatch: /v2/store
    - type: RequestHeaderModifier
      requestHeaderModifier:
        set:
        - name: x-env
          value: canary
    - type: RequestMirror
      requestMirror:
        backendRef:
          name: api-v3
        percent: 100
    backendRefs:
    - name: api-v2
      port: 9080
  - backendRefs:
    - name: api-v1
      port: 9080
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applied_httproute_filters_change_real_traffic() {
    let m = Mesh::start(&V123).await;
    let file = m.cp.dir.path().join("api-route.yaml");
    std::fs::write(&file, HTTPROUTE).unwrap();
    let out =
        m.cp.cli_async(&["route", "apply", "-f", file.to_str().unwrap(), "--wait"])
            .await
            .ok();
    assert!(out.stdout.contains("route api: ACKed by"), "{}", out.stdout);

    let (v2, v3) = (m.app("v2"), m.app("v3"));
    let (b2, b3) = (v2.count(), settled(v3).await);
    let replies = m.sequential(10, "GET", "/store/items", &[]).await;
    assert_eq!(by_version(&replies), only("v2", 10));
    for s in v2.seen_since(b2) {
        assert_eq!(s.target, "/v2/store/items", "{s:?}");
        assert_eq!(s.header("x-env"), Some("canary"), "{s:?}");
    }
    assert_eq!(settled(v3).await - b3, 10, "every request mirrored");
    assert!(
        v3.seen_since(b3)
            .iter()
            .all(|s| s.target == "/v2/store/items")
    );

    let replies = m.sequential(10, "GET", "/other", &[]).await;
    assert_eq!(by_version(&replies), only("v1", 10));
}
