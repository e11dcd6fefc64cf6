//! CA tests: root creation and persistence, CSR signing rules, operator intermediates, root rotation, garbage CSRs.

use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use mesh_control_plane::ca::{
    CaConfig, CaError, CaStorage, CertificateAuthority, CsrError, FileCaStorage, MemoryCaStorage,
    SpiffeId, parse_certs,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose, SanType,
};
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

fn id(sa: &str) -> SpiffeId {
    SpiffeId::parse(&format!("spiffe://cluster.local/ns/default/sa/{sa}")).unwrap()
}

fn csr_for(uris: &[&str]) -> Vec<u8> {
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::default();
    params.subject_alt_names = uris
        .iter()
        .map(|u| SanType::URI((*u).try_into().unwrap()))
        .collect();
    params.serialize_request(&key).unwrap().der().to_vec()
}

fn memory_ca() -> CertificateAuthority {
    CertificateAuthority::load_or_create(CaConfig::default(), Arc::new(MemoryCaStorage::default()))
        .unwrap()
}

/// Checks `leaf_pem` is signed by `issuer_pem`, returns the parsed URIs and lifetime.
fn check_leaf(leaf_pem: &str, issuer_pem: &str) -> (Vec<String>, Duration) {
    let leaf_der = parse_certs("leaf", leaf_pem).unwrap().remove(0);
    let issuer_der = parse_certs("issuer", issuer_pem).unwrap().remove(0);
    let (_, leaf) = X509Certificate::from_der(&leaf_der).unwrap();
    let (_, issuer) = X509Certificate::from_der(&issuer_der).unwrap();
    leaf.verify_signature(Some(issuer.public_key()))
        .expect("leaf signed by the issuer");
    assert!(!leaf.is_ca());
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    let san = leaf.subject_alternative_name().unwrap().unwrap().value;
    let uris = san
        .general_names
        .iter()
        .map(|n| match n {
            GeneralName::URI(u) => u.to_string(),
            other => panic!("unexpected SAN {other:?}"),
        })
        .collect();
    let v = leaf.validity();
    let life = Duration::from_secs((v.not_after.timestamp() - v.not_before.timestamp()) as u64);
    (uris, life)
}

#[test]
fn creates_root_persists_with_0600_key_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(FileCaStorage::new(dir.path().join("ca")));
    let ca = CertificateAuthority::load_or_create(CaConfig::default(), storage.clone()).unwrap();
    let bundle = ca.trust_bundle();
    assert_eq!(bundle.len(), 1);

    let mode = std::fs::metadata(dir.path().join("ca/ca.key"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let root = parse_certs("root", &bundle[0]).unwrap().remove(0);
    let (_, root) = X509Certificate::from_der(&root).unwrap();
    assert!(root.is_ca());
    let v = root.validity();
    let days = (v.not_after.timestamp() - v.not_before.timestamp()) / 86400;
    assert_eq!(days, 365, "one-year root");

    drop(ca);
    let again = CertificateAuthority::load_or_create(CaConfig::default(), storage).unwrap();
    assert_eq!(again.trust_bundle(), bundle, "same root after restart");
    let leaf = again
        .certify(
            &id("a"),
            id("a").as_str(),
            &csr_for(&[id("a").as_str()]),
            None,
        )
        .unwrap();
    check_leaf(&leaf.leaf_pem, &bundle[0]);
}

#[test]
fn half_written_storage_is_an_error_not_a_new_ca() {
    let dir = tempfile::tempdir().unwrap();
    let storage = Arc::new(FileCaStorage::new(dir.path()));
    CertificateAuthority::load_or_create(CaConfig::default(), storage.clone()).unwrap();
    std::fs::remove_file(dir.path().join("ca.key")).unwrap();
    let err = storage.load().unwrap_err();
    assert!(err.to_string().contains("ca.key"), "{err}");
}

#[test]
fn issues_uri_san_leaf_with_default_and_capped_ttl() {
    let ca = memory_ca();
    let root = ca.trust_bundle().remove(0);
    let a = id("a");
    let leaf = ca
        .certify(&a, a.as_str(), &csr_for(&[a.as_str()]), None)
        .unwrap();
    let (uris, life) = check_leaf(&leaf.leaf_pem, &root);
    assert_eq!(uris, vec![a.to_string()]);
    // Lifetime includes the 60 s backdate.
    assert_eq!(life, Duration::from_secs(24 * 3600 + 60));
    assert!(leaf.chain_pem.is_empty(), "signed by the root directly");
    assert_eq!(leaf.trust_bundle_pem, vec![root.clone()]);

    let short = ca
        .certify(
            &a,
            a.as_str(),
            &csr_for(&[a.as_str()]),
            Some(Duration::from_secs(20)),
        )
        .unwrap();
    assert_eq!(
        check_leaf(&short.leaf_pem, &root).1,
        Duration::from_secs(80)
    );
    let long = ca
        .certify(
            &a,
            a.as_str(),
            &csr_for(&[a.as_str()]),
            Some(Duration::from_secs(365 * 86400)),
        )
        .unwrap();
    assert_eq!(
        check_leaf(&long.leaf_pem, &root).1,
        Duration::from_secs(7 * 86400 + 60)
    );
}

#[test]
fn refuses_other_identities() {
    let ca = memory_ca();
    let (a, b) = (id("a"), id("b"));
    // The identity field differs from the authorised identity.
    let err = ca
        .certify(&a, b.as_str(), &csr_for(&[b.as_str()]), None)
        .unwrap_err();
    assert!(err.is_denied(), "{err}");
    // The field matches but the CSR asks for B.
    let err = ca
        .certify(&a, a.as_str(), &csr_for(&[b.as_str()]), None)
        .unwrap_err();
    assert!(
        matches!(err, CaError::Csr(CsrError::Mismatch { .. })),
        "{err}"
    );
    assert!(err.is_denied());
    // Extra identities, none at all, DNS names, CA rights: refused as bad requests.
    for csr in [csr_for(&[a.as_str(), b.as_str()]), csr_for(&[])] {
        let err = ca.certify(&a, a.as_str(), &csr, None).unwrap_err();
        assert!(err.is_bad_request(), "{err}");
    }
    let key = KeyPair::generate().unwrap();
    let mut params = CertificateParams::new(vec!["evil.example".to_owned()]).unwrap();
    params
        .subject_alt_names
        .push(SanType::URI(a.as_str().try_into().unwrap()));
    let err = ca
        .certify(
            &a,
            a.as_str(),
            params.serialize_request(&key).unwrap().der(),
            None,
        )
        .unwrap_err();
    assert!(err.is_bad_request(), "{err}");
    let mut params = CertificateParams::default();
    params
        .subject_alt_names
        .push(SanType::URI(a.as_str().try_into().unwrap()));
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let err = ca
        .certify(
            &a,
            a.as_str(),
            params.serialize_request(&key).unwrap().der(),
            None,
        )
        .unwrap_err();
    assert!(err.is_bad_request(), "{err}");
    // A malformed identity string.
    let err = ca
        .certify(&a, "spiffe://x/y", &csr_for(&[a.as_str()]), None)
        .unwrap_err();
    assert!(err.is_bad_request(), "{err}");
}

#[test]
fn thousand_garbage_csrs_then_a_valid_one() {
    let ca = memory_ca();
    let a = id("a");
    let good = csr_for(&[a.as_str()]);
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..1000usize {
        // xorshift: deterministic garbage of varying length and shape.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let csr: Vec<u8> = match i % 4 {
            0 => (0..(seed % 2048) as usize)
                .map(|j| (seed >> (j % 56)) as u8)
                .collect(),
            1 => {
                // A real CSR with one flipped byte: signature or structure breaks.
                let mut c = good.clone();
                let at = (seed as usize) % c.len();
                c[at] ^= 0x5a;
                c
            }
            2 => good[..(seed as usize) % good.len()].to_vec(),
            _ => vec![0u8; 17 * 1024],
        };
        let err = ca.certify(&a, a.as_str(), &csr, None).unwrap_err();
        assert!(
            err.is_bad_request() || err.is_denied(),
            "garbage #{i}: {err}"
        );
        assert!(!err.to_string().is_empty());
    }
    let leaf = ca.certify(&a, a.as_str(), &good, None).unwrap();
    check_leaf(&leaf.leaf_pem, &ca.trust_bundle()[0]);
}

#[test]
fn operator_intermediate_is_used_with_its_chain() {
    let dir = tempfile::tempdir().unwrap();
    let root_key = KeyPair::generate().unwrap();
    let mut root_params = CertificateParams::default();
    root_params
        .distinguished_name
        .push(DnType::CommonName, "operator root");
    root_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    root_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let root = root_params.self_signed(&root_key).unwrap();
    let int_key = KeyPair::generate().unwrap();
    let mut int_params = CertificateParams::default();
    int_params
        .distinguished_name
        .push(DnType::CommonName, "operator intermediate");
    int_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    int_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let int = int_params
        .signed_by(&int_key, &Issuer::from_params(&root_params, &root_key))
        .unwrap();
    let p = |n: &str| dir.path().join(n);
    std::fs::write(p("int.crt"), int.pem()).unwrap();
    std::fs::write(p("int.key"), int_key.serialize_pem()).unwrap();
    std::fs::write(p("root.crt"), root.pem()).unwrap();

    let storage = Arc::new(FileCaStorage::new(p("ca")));
    // Without the root bundle an intermediate is refused.
    let err = CertificateAuthority::from_operator_files(
        CaConfig::default(),
        storage.clone(),
        &p("int.crt"),
        &p("int.key"),
        None,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("root"), "{err}");
    // A key that is not the cert's is refused.
    let err = CertificateAuthority::from_operator_files(
        CaConfig::default(),
        storage.clone(),
        &p("int.crt"),
        &p("int.key").with_file_name("nope.key"),
        Some(&p("root.crt")),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("nope.key"), "{err}");
    std::fs::write(p("other.key"), KeyPair::generate().unwrap().serialize_pem()).unwrap();
    let err = CertificateAuthority::from_operator_files(
        CaConfig::default(),
        storage.clone(),
        &p("int.crt"),
        &p("other.key"),
        Some(&p("root.crt")),
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("does not belong"), "{err}");

    let ca = CertificateAuthority::from_operator_files(
        CaConfig::default(),
        storage.clone(),
        &p("int.crt"),
        &p("int.key"),
        Some(&p("root.crt")),
    )
    .unwrap();
    let a = id("a");
    let leaf = ca
        .certify(&a, a.as_str(), &csr_for(&[a.as_str()]), None)
        .unwrap();
    assert_eq!(leaf.chain_pem.len(), 1);
    check_leaf(&leaf.leaf_pem, &leaf.chain_pem[0]);
    let int_der = parse_certs("int", &leaf.chain_pem[0]).unwrap().remove(0);
    let (_, int_cert) = X509Certificate::from_der(&int_der).unwrap();
    let (_, root_cert) = X509Certificate::from_der(root.der()).unwrap();
    int_cert
        .verify_signature(Some(root_cert.public_key()))
        .expect("the chain leads to the operator root");
    assert_eq!(leaf.trust_bundle_pem.len(), 1);
    // Stored in the data dir: a restart uses the intermediate without the operator files.
    let again = CertificateAuthority::load_or_create(CaConfig::default(), storage).unwrap();
    let leaf2 = again
        .certify(&a, a.as_str(), &csr_for(&[a.as_str()]), None)
        .unwrap();
    check_leaf(&leaf2.leaf_pem, &leaf.chain_pem[0]);
}

#[test]
fn root_rotation_keeps_old_and_new_until_retired() {
    let storage = Arc::new(MemoryCaStorage::default());
    let ca = CertificateAuthority::load_or_create(CaConfig::default(), storage.clone()).unwrap();
    let old = ca.trust_bundle().remove(0);
    let a = id("a");
    ca.rotate_root().unwrap();
    let bundle = ca.trust_bundle();
    assert_eq!(bundle.len(), 2);
    assert_eq!(bundle[0], old);
    let new = bundle[1].clone();
    let leaf = ca
        .certify(&a, a.as_str(), &csr_for(&[a.as_str()]), None)
        .unwrap();
    check_leaf(&leaf.leaf_pem, &new);
    assert_eq!(leaf.trust_bundle_pem, bundle);
    assert_eq!(
        storage.load().unwrap().unwrap().roots_pem,
        bundle,
        "rotation is stored"
    );

    assert!(ca.retire_root(&new).is_err(), "the signing root stays");
    assert!(ca.retire_root(&old).unwrap());
    assert_eq!(ca.trust_bundle(), vec![new.clone()]);
    assert!(!ca.retire_root(&old).unwrap());
    assert_eq!(ca.retire_expired_roots(SystemTime::now()).unwrap(), 0);
}
