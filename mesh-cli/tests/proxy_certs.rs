//! `mesh-cli proxy-config <proxy> certs` against real sidecars of a TLS control plane: the
//! certificate a sidecar with a join token holds (SPIFFE ID, serial, validity, issuer, chain,
//! trust bundle; never the key), and an honest answer for a sidecar without an identity.

mod support;

use serde_json::Value;
use support::ControlPlane;
use support::golden::snapshot;
use support::mesh::Sidecar;

/// Certificate fields that differ on every run (fresh CA and leaf): masked before comparing
/// the output's shape with its snapshot.
const PER_RUN: [&str; 5] = [
    "serial",
    "not_before",
    "not_after",
    "received_at",
    "expires_in_secs",
];

/// Masks `PER_RUN` keys and the CA's random name suffix (a long hex word in subjects/issuers).
fn mask_certs(v: &mut Value) {
    match v {
        Value::Object(o) => {
            for (k, x) in o.iter_mut() {
                if PER_RUN.contains(&k.as_str()) {
                    *x = Value::String("<per-run>".into());
                } else {
                    mask_certs(x);
                }
            }
        }
        Value::Array(a) => a.iter_mut().for_each(mask_certs),
        Value::String(s) => {
            let words: Vec<&str> = s
                .split(' ')
                .map(|w| {
                    if w.len() >= 12 && w.bytes().all(|b| b.is_ascii_hexdigit()) {
                        "<id>"
                    } else {
                        w
                    }
                })
                .collect();
            *s = words.join(" ");
        }
        _ => {}
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certs_show_the_workload_certificate_and_trust_bundle() {
    let cp = ControlPlane::start_with(&["--discovery-tls=true"]);
    let dir = cp.dir.path().to_path_buf();
    let url = format!("https://{}", cp.discovery);
    let bundle = dir.join("ca").join("trust-bundle.pem");
    let bundle_arg = bundle.to_str().unwrap();

    let token = cp
        .cli_async(&["token", "create", "--service-account", "api", "-o", "json"])
        .await
        .ok()
        .json();
    let identity = token["identity"].as_str().unwrap().to_string();
    let token_file = dir.join("api.token");
    std::fs::write(&token_file, token["token"].as_str().unwrap()).unwrap();
    let meshed = Sidecar::start_with(
        &dir,
        &url,
        "api",
        "v1",
        None,
        &[
            "--join-token-file",
            token_file.to_str().unwrap(),
            "--ca-bundle",
            bundle_arg,
        ],
    )
    .await;
    let admin = meshed.admin.to_string();

    let certs = cp
        .cli_async(&["proxy-config", &admin, "certs", "-o", "json"])
        .await
        .ok()
        .json();
    assert_eq!(certs["identity"], identity.as_str(), "{certs}");
    let leaf = &certs["leaf"];
    assert_eq!(leaf["spiffe_id"], identity.as_str(), "{certs}");
    assert!(leaf["chain_length"].as_u64().unwrap() >= 1, "{certs}");
    let serial = leaf["serial"].as_str().unwrap();
    assert!(
        !serial.is_empty() && serial.split(':').all(|b| b.len() == 2),
        "{serial}"
    );
    let (nb, na) = (
        leaf["not_before"].as_str().unwrap(),
        leaf["not_after"].as_str().unwrap(),
    );
    // RFC 3339 UTC timestamps compare as strings.
    assert!(
        nb.ends_with('Z') && na.ends_with('Z') && nb < na,
        "{nb} {na}"
    );
    assert!(certs["rotations"].as_u64().unwrap() >= 1);
    // Issued just now for longer than a minute: positive and below the root's.
    let leaf_left = leaf["expires_in_secs"].as_i64().unwrap();
    assert!(leaf_left > 60, "{certs}");

    // The trust bundle is the control plane's: as many roots as its bundle file, and the leaf
    // was issued by one of them.
    let roots = certs["trust_bundle"].as_array().unwrap();
    let pem = std::fs::read_to_string(&bundle).unwrap();
    assert_eq!(roots.len(), pem.matches("BEGIN CERTIFICATE").count());
    assert!(
        roots.iter().any(|r| r["subject"] == leaf["issuer"]),
        "issuer {} not among the roots {roots:?}",
        leaf["issuer"]
    );
    assert!(roots.iter().all(|r| r["not_after"].as_str().unwrap() > na));
    assert!(
        roots
            .iter()
            .all(|r| r["expires_in_secs"].as_i64().unwrap() > leaf_left)
    );

    // The JSON is stable apart from per-run certificate values (must-demonstrate 7).
    let mut shape = certs.clone();
    mask_certs(&mut shape);
    snapshot("proxy_config_certs", &shape.to_string());

    // Never the key, in the section or anywhere in the dump.
    let all = cp
        .cli_async(&["proxy-config", &admin, "-o", "json"])
        .await
        .ok()
        .stdout;
    assert!(
        !all.contains("PRIVATE KEY"),
        "the dump must not carry the key"
    );
    assert!(all.contains(serial));

    // The table names the same certificate.
    let table = cp
        .cli_async(&["proxy-config", &admin, "certs"])
        .await
        .ok()
        .stdout;
    assert!(table.contains(&format!("identity {identity}")), "{table}");
    let leaf_row = table.lines().find(|l| l.starts_with("leaf")).unwrap();
    assert!(leaf_row.contains(&identity) && leaf_row.contains(serial) && leaf_row.contains(na));
    assert!(table.lines().any(|l| l.starts_with("root[0]")), "{table}");

    // A sidecar without a join token holds nothing and says so.
    let plain =
        Sidecar::start_with(&dir, &url, "web", "v1", None, &["--ca-bundle", bundle_arg]).await;
    let admin = plain.admin.to_string();
    let out = cp
        .cli_async(&["proxy-config", &admin, "certs", "-o", "json"])
        .await
        .ok();
    assert!(out.json().is_null(), "{}", out.stdout);
    let out = cp.cli_async(&["proxy-config", &admin, "certs"]).await.ok();
    assert!(
        out.stdout.contains("no workload identity"),
        "{}",
        out.stdout
    );
}
