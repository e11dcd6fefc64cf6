//! Unit tests of the admin-access resolution: address file, URL, bundle and token precedence.

use super::*;

fn dir_with(addrs: Option<&str>, token: Option<&str>) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    if let Some(a) = addrs {
        std::fs::write(dir.path().join(ADDRS_FILE), a).expect("write addrs");
    }
    if let Some(t) = token {
        std::fs::write(dir.path().join(TOKEN_FILE), t).expect("write token");
    }
    dir
}

fn sources(dir: &Path) -> Sources {
    Sources {
        data_dir: Some(dir.to_path_buf()),
        ..Sources::default()
    }
}

#[test]
fn addrs_file_parses_and_rejects_garbage() {
    let a = parse_addrs(
        r#"{"discovery":"127.0.0.1:1","admin":"127.0.0.1:2","http":"127.0.0.1:3","admin_url":"https://127.0.0.1:2","discovery_url":"http://127.0.0.1:1"}"#,
    )
    .expect("valid file");
    assert_eq!(a.discovery, "127.0.0.1:1".parse().expect("addr"));
    assert_eq!(a.admin, Some("127.0.0.1:2".parse().expect("addr")));
    assert_eq!(a.admin_url.as_deref(), Some("https://127.0.0.1:2"));
    assert_eq!(a.discovery_url.as_deref(), Some("http://127.0.0.1:1"));
    // An older control plane's file has no URLs.
    let old = parse_addrs(r#"{"discovery":"127.0.0.1:1","admin":"127.0.0.1:2"}"#).expect("old");
    assert_eq!(old.admin_url, None);
    assert!(parse_addrs(r#"{"admin":"127.0.0.1:2"}"#).is_err());
    assert!(parse_addrs(r#"{"discovery":"nope"}"#).is_err());
    assert!(parse_addrs(r#"{"discovery":"127.0.0.1:1","admin_url":"127.0.0.1:2"}"#).is_err());
    assert!(parse_addrs(r#"{"discovery":1}"#).is_err());
    assert!(parse_addrs("not json").is_err());
}

#[test]
fn admin_url_prefers_the_setting_then_addrs_json_then_the_default() {
    let file =
        r#"{"discovery":"127.0.0.1:1","admin":"127.0.0.1:2","admin_url":"http://127.0.0.1:2"}"#;
    let dir = dir_with(Some(file), None);
    let mut s = sources(dir.path());
    assert_eq!(s.admin_target().url, "http://127.0.0.1:2");
    s.admin = Some("cp.example:15011".into());
    assert_eq!(
        s.admin_target(),
        AdminTarget {
            url: "https://cp.example:15011".into(),
            shown: "cp.example:15011".into()
        },
        "a scheme-less setting means TLS"
    );
    s.admin = Some("http://cp.example:15011".into());
    assert_eq!(s.admin_target().url, "http://cp.example:15011");

    let old = dir_with(
        Some(r#"{"discovery":"127.0.0.1:1","admin":"127.0.0.1:9"}"#),
        None,
    );
    assert_eq!(
        sources(old.path()).admin_target().url,
        "https://127.0.0.1:9"
    );
    let empty = dir_with(None, None);
    assert_eq!(
        sources(empty.path()).admin_target().url,
        "https://127.0.0.1:15011"
    );
}

#[test]
fn bundle_and_token_come_from_the_settings_else_the_data_dir() {
    let dir = dir_with(None, Some("file-token\n"));
    let mut s = sources(dir.path());
    assert_eq!(s.bundle_path(), dir.path().join("ca/trust-bundle.pem"));
    assert_eq!(s.token().expect("token"), "file-token");
    s.ca_bundle = Some("/etc/mesh/bundle.pem".into());
    s.token = Some(" env-token ".into());
    assert_eq!(s.bundle_path(), PathBuf::from("/etc/mesh/bundle.pem"));
    assert_eq!(s.token().expect("token"), "env-token");

    let none = dir_with(None, Some("  \n"));
    let err = sources(none.path()).token().expect_err("empty file");
    assert!(
        err.to_string().contains("MESH_ADMIN_TOKEN is unset"),
        "{err}"
    );
}

#[tokio::test]
async fn an_unusable_bundle_or_url_is_a_clear_error() {
    let dir = dir_with(None, None);
    // Something listens, so the missing bundle is the problem reported.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let target = AdminTarget::from_setting(&addr.to_string());
    let bundle = dir.path().join("missing.pem");
    let err = target.connect(&bundle).await.expect_err("no bundle");
    assert!(matches!(err, AccessError::NoBundle { .. }), "{err}");
    assert!(err.to_string().contains("MESH_CA_BUNDLE"), "{err}");
    drop(listener);
    // Nothing listens: unreachable is reported first.
    let err = target.connect(&bundle).await.expect_err("closed");
    assert!(matches!(err, AccessError::Unreachable { .. }), "{err}");

    let err = AdminTarget::from_setting("ftp://h:1")
        .connect(&bundle)
        .await
        .expect_err("bad scheme");
    assert!(matches!(err, AccessError::BadUrl(..)), "{err}");
}
