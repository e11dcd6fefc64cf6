//! Unit tests for the flag-value parsers.

use std::time::Duration;

use super::*;

#[test]
fn durations() {
    assert_eq!(duration("100ms"), Ok(Duration::from_millis(100)));
    assert_eq!(duration("2s"), Ok(Duration::from_secs(2)));
    assert_eq!(duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(duration("1m"), Ok(Duration::from_secs(60)));
    for bad in ["", "2", "2x", "s", "-1s", "1.2.3s", "25h"] {
        assert!(duration(bad).is_err(), "{bad}");
    }
    assert_eq!(millis(Duration::from_micros(500)), 1);
}

#[test]
fn percentages() {
    assert_eq!(percent("10%"), Ok(100));
    assert_eq!(percent("0.5%"), Ok(5));
    assert_eq!(percent("100%"), Ok(1000));
    for bad in ["10", "101%", "-1%", "0.05%", "x%"] {
        assert!(percent(bad).is_err(), "{bad}");
    }
}

#[test]
fn weights_must_sum_to_100() {
    let b = backends("v1=90,v2=10").unwrap().0;
    assert_eq!(
        b[0],
        BackendSpec {
            service: None,
            subset: "v1".into(),
            weight: 90
        }
    );
    let b = backends("other:v1=50,other:=50").unwrap().0;
    assert_eq!(
        b[1],
        BackendSpec {
            service: Some("other".into()),
            subset: String::new(),
            weight: 50
        }
    );
    assert!(backends("v1=90,v2=20").unwrap_err().contains("sum to 110"));
    assert!(backends("v1=90").unwrap_err().contains("sum to 90"));
    assert!(backends("v1").is_err());
    assert!(backends("v1=50,v1=50").unwrap_err().contains("twice"));
    assert!(backends("v1=abc").is_err());
    assert!(backends("=100").is_err());
}

#[test]
fn matches() {
    assert_eq!(
        route_match("path-prefix=/api"),
        Ok(MatchSpec::PathPrefix("/api".into()))
    );
    assert_eq!(
        route_match("header:X-Canary=1"),
        Ok(MatchSpec::Header("x-canary".into(), Some("1".into())))
    );
    assert_eq!(
        route_match("header:x-debug"),
        Ok(MatchSpec::Header("x-debug".into(), None))
    );
    assert_eq!(
        route_match("method=get"),
        Ok(MatchSpec::Method("GET".into()))
    );
    assert_eq!(
        route_match("query:v=2"),
        Ok(MatchSpec::Query("v".into(), Some("2".into())))
    );
    for bad in [
        "path=api",
        "method=FETCH",
        "host=x",
        "header:=1",
        "nonsense",
    ] {
        assert!(route_match(bad).is_err(), "{bad}");
    }
}

#[test]
fn faults_mirror_headers_retries() {
    assert_eq!(
        fault_delay("100ms@10%"),
        Ok(FaultDelay {
            delay: Duration::from_millis(100),
            permille: 100
        })
    );
    assert_eq!(
        fault_abort("503@5%"),
        Ok(FaultAbort {
            status: 503,
            permille: 50
        })
    );
    assert!(fault_abort("700@5%").is_err());
    assert!(fault_delay("100ms").is_err());
    assert_eq!(mirror("v3=10%").unwrap().subset, "v3");
    assert_eq!(
        mirror("shadow:v1=100%").unwrap().service.as_deref(),
        Some("shadow")
    );
    assert!(header_kv("x-env=canary").is_ok());
    assert!(header_kv("bad header=1").is_err());
    assert_eq!(
        retry_on("5xx,reset,503,grpc:unavailable").unwrap().0.len(),
        4
    );
    assert!(retry_on("5xx,sometimes").is_err());
}
