//! Property tests: the SPIFFE ID parser, token verification and CSR validation never panic on arbitrary input.

use std::sync::Arc;

use mesh_control_plane::ca::{
    CaConfig, CertificateAuthority, JoinTokens, MemoryCaStorage, SpiffeId, TrustDomain,
};
use proptest::prelude::*;

proptest! {
    #[test]
    fn spiffe_parse_never_panics(s in ".{0,300}") {
        let _ = SpiffeId::parse(&s);
    }

    #[test]
    fn valid_ids_round_trip(ns in "[a-z0-9][a-z0-9-]{0,20}", sa in "[a-zA-Z0-9._-]{1,30}") {
        prop_assume!(sa != "." && sa != "..");
        let id = TrustDomain::default().workload(&ns, &sa).unwrap();
        let back = SpiffeId::parse(id.as_str()).unwrap();
        prop_assert_eq!(back.namespace(), ns.as_str());
        prop_assert_eq!(back.service_account(), sa.as_str());
    }

    #[test]
    fn token_verify_never_panics(s in ".{0,100}") {
        let tokens = JoinTokens::in_memory();
        prop_assert!(tokens.verify(&s).is_err());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]
    #[test]
    fn csr_validation_never_panics(der in proptest::collection::vec(any::<u8>(), 0..1024)) {
        let ca = CertificateAuthority::load_or_create(
            CaConfig::default(),
            Arc::new(MemoryCaStorage::default()),
        ).unwrap();
        let id = TrustDomain::default().workload("a", "b").unwrap();
        let err = ca.certify(&id, id.as_str(), &der, None).unwrap_err();
        prop_assert!(err.is_bad_request(), "{}", err);
    }
}
