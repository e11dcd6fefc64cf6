//! `mesh-cli proxy-config <proxy> certs` against real sidecars of a TLS control plane: the
//! certificate a sidecar with a join token holds (SPIFFE ID, serial, validity, issuer, chain,
//! trust bundle; never the key), and an honest answer for a sidecar without an identity.

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
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

/// Records the server's leaf certificate and accepts it: the test only wants to see what the
/// sidecar presents (signatures are still checked, so the peer really holds the key).
#[derive(Debug)]
struct Capture {
    leaf: Mutex<Option<Vec<u8>>>,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Capture {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        *self.leaf.lock() = Some(end_entity.to_vec());
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algs = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The leaf certificate (DER) the sidecar presents on its inbound port in a real handshake.
/// Without a client certificate the strict inbound ends the handshake afterwards; by then the
/// server's certificate has been received.
fn presented_leaf(inbound: SocketAddr) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let capture = Arc::new(Capture {
        leaf: Mutex::new(None),
        provider: provider.clone(),
    });
    let mut config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(capture.clone())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let name = ServerName::try_from("api").unwrap();
    let mut conn = ClientConnection::new(Arc::new(config), name).unwrap();
    let mut sock = std::net::TcpStream::connect(inbound).unwrap();
    // A local handshake takes milliseconds; 10 s only bounds a hang.
    sock.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    while conn.is_handshaking() && conn.complete_io(&mut sock).is_ok() {}
    capture
        .leaf
        .lock()
        .take()
        .expect("the sidecar presented no certificate")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certs_show_the_workload_certificate_and_trust_bundle() {
    // The test also shows what an identity-less sidecar reports: that one is an anonymous
    // proxy, which this control plane admits on purpose.
    let cp = ControlPlane::start_with(&["--discovery-tls=true", "--allow-anonymous-proxies"]);
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

    // It is the certificate the sidecar really presents to peers.
    let inbound = meshed.inbound;
    let der = tokio::task::spawn_blocking(move || presented_leaf(inbound))
        .await
        .unwrap();
    let (_, presented) =
        x509_parser::parse_x509_certificate(&der).expect("presented certificate parses");
    let presented_serial: Vec<String> = presented
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(presented_serial.join(":"), serial);
    assert_eq!(
        presented.issuer().to_string(),
        leaf["issuer"].as_str().unwrap()
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
    // The overview names it too.
    let overview = cp.cli_async(&["proxy-config", &admin]).await.ok().stdout;
    let line = format!("certificate: {identity} (serial {serial}), expires in");
    assert!(overview.contains(&line), "{overview}");

    // `check` vouches for the certificate (fresh: well before renewal) and the bundle.
    let out = cp.cli_async(&["check", "--proxy-admin", &admin]).await.ok();
    let vouched = format!("ok   proxy {admin}: certificate for {identity} valid for");
    assert!(out.stdout.contains(&vouched), "{}", out.stdout);
    // And for the control plane's CA (its signing certificate's expiry, from Health).
    assert!(
        out.stdout.contains("ok   CA certificate") && out.stdout.contains("days left"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("trust-bundle root(s)"),
        "{}",
        out.stdout
    );

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
    let out = cp.cli_async(&["check", "--proxy-admin", &admin]).await.ok();
    assert!(
        out.stdout.contains("no workload identity"),
        "{}",
        out.stdout
    );

    // An admin address nothing answers on fails the check (exit 3), naming it.
    drop(plain);
    let out = cp.cli_async(&["check", "--proxy-admin", &admin]).await;
    assert_eq!(out.code, 3, "{}", out.stdout);
    let unreachable = format!("FAIL cannot reach the proxy admin at {admin}");
    assert!(out.stdout.contains(&unreachable), "{}", out.stdout);
}
