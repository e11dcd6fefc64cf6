//! Unit tests for outlier detection, on the paused tokio clock.

use super::*;
use crate::resilience::errors::Cause;
use tokio::time::advance;

const OK: Outcome = Outcome::Response {
    status: 200,
    grpc: None,
    retry_after: None,
};
const E500: Outcome = Outcome::Response {
    status: 500,
    grpc: None,
    retry_after: None,
};
const REFUSED: Outcome = Outcome::Failed(Cause::ConnectRefused);

fn detector(n: usize) -> OutlierDetector {
    OutlierDetector::new(OutlierConfig::default(), n)
}

#[tokio::test(start_paused = true)]
async fn consecutive_gateway_failures_eject_then_readmit_on_probation() {
    let d = detector(3);
    d.report(0, &REFUSED);
    d.report(0, &REFUSED);
    assert!(!d.is_ejected(0));
    d.report(0, &REFUSED);
    assert!(d.is_ejected(0));
    assert_eq!(d.ejected_count(), 1);

    advance(DEFAULT_BASE_EJECTION - Duration::from_millis(10)).await;
    assert!(d.is_ejected(0));
    advance(Duration::from_millis(20)).await;
    assert!(!d.is_ejected(0), "re-admitted after the ejection time");
    assert_eq!(d.ejected_count(), 0);

    // Probation: a single failure ejects again, for twice as long.
    d.report(0, &REFUSED);
    assert!(d.is_ejected(0));
    advance(DEFAULT_BASE_EJECTION + Duration::from_secs(1)).await;
    assert!(d.is_ejected(0), "second ejection lasts 2 × base");
    advance(DEFAULT_BASE_EJECTION).await;
    assert!(!d.is_ejected(0));
    // A success after re-admission ends probation.
    d.report(0, &OK);
    d.report(0, &REFUSED);
    assert!(!d.is_ejected(0));
    assert_eq!(d.ejections_total(), 2);
}

#[tokio::test(start_paused = true)]
async fn consecutive_5xx_needs_an_unbroken_run() {
    let d = detector(4);
    for _ in 0..4 {
        d.report(1, &E500);
    }
    d.report(1, &OK);
    for _ in 0..4 {
        d.report(1, &E500);
    }
    assert!(!d.is_ejected(1));
    d.report(1, &E500);
    assert!(d.is_ejected(1));
}

#[tokio::test(start_paused = true)]
async fn never_ejects_more_than_the_cap_and_keeps_one() {
    let d = detector(3);
    for ep in 0..3 {
        for _ in 0..3 {
            d.report(ep, &REFUSED);
        }
    }
    // 50 % of 3 rounds down to 1.
    assert_eq!(d.ejected_count(), 1);
    assert_eq!((0..3).filter(|&i| d.is_ejected(i)).count(), 1);
    assert!(d.ejections_refused() >= 2);

    let single = detector(1);
    for _ in 0..10 {
        single.report(0, &REFUSED);
    }
    assert!(!single.is_ejected(0), "the last endpoint is never ejected");

    let four = detector(4);
    for ep in 0..4 {
        for _ in 0..3 {
            four.report(ep, &REFUSED);
        }
    }
    assert_eq!(four.ejected_count(), 2);
}

#[tokio::test(start_paused = true)]
async fn failure_percentage_ejects_at_the_interval() {
    let d = detector(3);
    // 16 failures and 4 successes (80 %), interleaved so the consecutive counters never trip.
    for i in 0..20 {
        d.report(2, if i % 5 == 4 { &OK } else { &E500 });
    }
    assert!(!d.is_ejected(2));
    advance(DEFAULT_INTERVAL).await;
    d.report(0, &OK); // any report sweeps the finished interval
    assert!(d.is_ejected(2));
}

#[tokio::test(start_paused = true)]
async fn failure_percentage_needs_min_requests() {
    let d = detector(3);
    for i in 0..10 {
        d.report(2, if i % 5 == 4 { &OK } else { &E500 });
    }
    advance(DEFAULT_INTERVAL).await;
    d.report(0, &OK);
    assert!(!d.is_ejected(2));
}

#[tokio::test(start_paused = true)]
async fn ejection_time_is_capped_and_multiplier_decays() {
    let cfg = OutlierConfig {
        base_ejection: Duration::from_secs(100),
        max_ejection: Duration::from_secs(150),
        ..Default::default()
    };
    let d = OutlierDetector::new(cfg, 2);
    for _ in 0..3 {
        d.report(0, &REFUSED);
    }
    advance(Duration::from_secs(101)).await;
    assert!(!d.is_ejected(0));
    d.report(0, &REFUSED); // probation: second ejection, 200 s capped to 150 s
    advance(Duration::from_secs(151)).await;
    assert!(!d.is_ejected(0));
    d.report(0, &OK);
    // Clean intervals decay the multiplier back to zero (two sweeps).
    for _ in 0..3 {
        advance(DEFAULT_INTERVAL).await;
        d.report(1, &OK);
    }
    for _ in 0..3 {
        d.report(0, &REFUSED);
    }
    advance(Duration::from_secs(101)).await;
    assert!(!d.is_ejected(0), "back to base ejection time");
}

#[tokio::test(start_paused = true)]
async fn disabled_never_ejects_and_bad_index_is_ignored() {
    let d = OutlierDetector::new(OutlierConfig::disabled(), 3);
    for _ in 0..100 {
        d.report(0, &REFUSED);
    }
    assert!(!d.is_ejected(0));
    let d = detector(2);
    d.report(99, &REFUSED);
    assert!(!d.is_ejected(99));
}

#[tokio::test(start_paused = true)]
async fn local_failures_do_not_count_against_the_endpoint() {
    let d = detector(2);
    for _ in 0..20 {
        d.report(0, &Outcome::Failed(Cause::CircuitOpen));
    }
    assert!(!d.is_ejected(0));
}
