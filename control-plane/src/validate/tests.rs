//! Unit tests of the validation rules that are not covered through the admin API.

use super::*;

#[test]
fn spiffe_ids() {
    assert!(identity("f", "spiffe://cluster.local/ns/default/sa/web").is_ok());
    assert!(identity("f", "spiffe://cluster.local").is_err());
    assert!(identity("f", "http://cluster.local/ns/a").is_err());
    assert!(identity("f", "spiffe://Cluster/ns/a").is_err());
    assert!(identity("f", "spiffe://td/ns//sa").is_err());
    assert!(identity_pattern("f", "spiffe://td/ns/prod/*").is_ok());
    assert!(identity_pattern("f", "spiffe://td/sa/*").is_err());
    assert!(identity_pattern("f", "*").is_ok());
}

#[test]
fn timeouts_and_ratios() {
    assert_eq!(timeout_ms("f", 0).unwrap(), None);
    assert!(timeout_ms("f", 3_600_000).is_ok());
    let e = timeout_ms("t", 3_600_001).unwrap_err();
    assert_eq!(e.field, "t");
    assert!(ratio_ppm("r", f64::NAN).is_err());
    assert!(ratio_ppm("r", 1.5).is_err());
    assert_eq!(ratio_ppm("r", 0.25).unwrap(), 250_000);
}

#[test]
fn service_names() {
    assert!(service_name("s", "reviews").is_ok());
    assert!(service_name("s", "reviews.default-1_x").is_ok());
    assert!(service_name("s", "").is_err());
    assert!(service_name("s", "-x").is_err());
    assert!(service_name("s", "a b").is_err());
}
