//! The real binary, control plane and sidecars together: a `route set --wait` split measured
//! on real traffic, a header match, and `explain` naming the rule real traffic took;
//! `proxy-config` and `stat` read the same sidecar.

mod support;

use support::ControlPlane;
use support::mesh::{Sidecar, app, via};

struct Mesh {
    cp: ControlPlane,
    _apps: Vec<support::mesh::App>,
    _api: Vec<Sidecar>,
    client: Sidecar,
}

/// api v1 and v2 (each an app behind its sidecar) and a client sidecar with no app.
async fn mesh() -> Mesh {
    let cp = ControlPlane::start();
    let (a1, a2) = (app("v1").await, app("v2").await);
    let dir = cp.dir.path().to_path_buf();
    let s1 = Sidecar::start(&dir, &cp.discovery, "api", "v1", Some(a1.port)).await;
    let s2 = Sidecar::start(&dir, &cp.discovery, "api", "v2", Some(a2.port)).await;
    let client = Sidecar::start(&dir, &cp.discovery, "web", "v1", None).await;
    // The first call makes the client subscribe to api (on demand); retry until it answers,
    // bounded (each attempt is itself bounded by `via`'s timeout).
    for _ in 0..20 {
        if via(client.outbound, "api", "/", &[])
            .await
            .is_some_and(|(s, _)| s == 200)
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    Mesh {
        cp,
        _apps: vec![a1, a2],
        _api: vec![s1, s2],
        client,
    }
}

async fn count(m: &Mesh, n: usize, headers: &[(&str, &str)]) -> (usize, usize) {
    let (mut v1, mut v2) = (0, 0);
    for _ in 0..n {
        match via(m.client.outbound, "api", "/", headers).await {
            Some((200, b)) if b == "v1" => v1 += 1,
            Some((200, b)) if b == "v2" => v2 += 1,
            other => panic!("unexpected response {other:?}"),
        }
    }
    (v1, v2)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn weighted_split_after_wait_matches_real_traffic() {
    let m = mesh().await;
    let out =
        m.cp.cli_async(&["route", "set", "api", "--to", "v1=80,v2=20", "--wait"])
            .await
            .ok();
    assert!(out.stdout.contains("ACKed by"), "{}", out.stdout);
    let (v1, v2) = count(&m, 2000, &[]).await;
    assert_eq!(v1 + v2, 2000);
    // 80/20 within ±3 points over 2,000 requests.
    assert!((1540..=1660).contains(&v1), "v1 got {v1} of 2000, v2 {v2}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "reads per-request metrics (`mesh stat` part), which the sidecar does not export yet"]
async fn explain_names_the_rule_real_traffic_took() {
    let m = mesh().await;
    m.cp.cli_async(&["route", "set", "api", "--to", "v1=100"])
        .await
        .ok();
    m.cp.cli_async(&[
        "route",
        "set",
        "api",
        "--match",
        "header:x-canary=1",
        "--to",
        "v2=100",
        "--rule-name",
        "canary",
        "--wait",
    ])
    .await
    .ok();
    let admin = m.client.admin.to_string();
    for (headers, rule, version) in [
        (&[("x-canary", "1")][..], "canary", "v2"),
        (&[][..], "default", "v1"),
    ] {
        // What real traffic did …
        let (v1, v2) = count(&m, 20, headers).await;
        assert_eq!(if version == "v1" { v1 } else { v2 }, 20, "{headers:?}");
        // … is what explain says.
        let mut args = vec!["explain", admin.as_str(), "GET", "http://api/"];
        let h: Vec<String> = headers.iter().map(|(k, v)| format!("{k}:{v}")).collect();
        for x in &h {
            args.extend(["-H", x.as_str()]);
        }
        let json =
            m.cp.cli_async(&[args.as_slice(), &["-o", "json"]].concat())
                .await
                .ok()
                .json();
        assert_eq!(json["chosen_rule"], rule, "{json}");
        assert_eq!(json["backends"], format!("{version}=100"));
        let text = m.cp.cli_async(&args).await.ok().stdout;
        assert!(text.contains(&format!("→ rule {rule:?}")), "{text}");
    }

    // proxy-config shows the same rules the proxy applied.
    let table =
        m.cp.cli_async(&["proxy-config", &admin, "routes"])
            .await
            .ok()
            .stdout;
    assert!(
        table.contains("canary: header:x-canary=1 → v2=100"),
        "{table}"
    );
    let json =
        m.cp.cli_async(&["proxy-config", &admin, "routes", "-o", "json"])
            .await
            .ok()
            .json();
    assert!(
        json.as_array()
            .unwrap()
            .iter()
            .all(|r| r["type_url"] == "mesh.types.v1.Route")
    );

    // stat: traffic during the scrape window shows up as a rate.
    let client = m.client.outbound;
    let load = tokio::spawn(async move {
        for _ in 0..200 {
            let _ = via(client, "api", "/", &[]).await;
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    });
    let stat =
        m.cp.cli_async(&[
            "stat",
            "--proxy-admin",
            &admin,
            "--interval",
            "1s",
            "-o",
            "json",
        ])
        .await
        .ok()
        .json();
    load.abort();
    let rows = stat.as_array().unwrap();
    assert!(
        rows.iter().any(|r| r["rps"].as_f64().unwrap() > 0.0),
        "{stat}"
    );
}
