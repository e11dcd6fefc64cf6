//! Unit tests of configuration parsing: defaults, precedence and error reporting.

use std::collections::HashMap;
use std::time::Duration;

use super::{Config, ConfigError};

fn parse(args: &[&str], env: &[(&str, &str)]) -> Result<Config, ConfigError> {
    let args = std::iter::once("mesh-sidecar")
        .chain(args.iter().copied())
        .map(String::from);
    let env: HashMap<String, String> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    Config::from_sources(args, &env)
}

fn invalid(r: Result<Config, ConfigError>) -> Vec<super::Invalid> {
    match r {
        Err(ConfigError::Invalid(all)) => all,
        other => panic!("expected invalid settings, got {other:?}"),
    }
}

#[test]
fn defaults() {
    let c = parse(&["--service", "web"], &[]).unwrap();
    assert_eq!(c.control_plane, "https://127.0.0.1:15010");
    assert!(c.id.starts_with("web-"), "{}", c.id);
    assert_eq!(c.namespace, "default");
    assert_eq!(c.service_account, "web");
    assert_eq!(c.identity(), "spiffe://cluster.local/ns/default/sa/web");
    assert_eq!(c.inbound_addr.to_string(), "0.0.0.0:15006");
    assert_eq!(c.outbound_addr.to_string(), "127.0.0.1:15001");
    assert_eq!(c.admin_addr.to_string(), "127.0.0.1:15000");
    assert_eq!(c.advertise_address.to_string(), "127.0.0.1");
    assert_eq!(c.workers, 1);
    assert_eq!(c.detect_timeout, Duration::from_millis(500));
    assert_eq!(c.detect_timeout, crate::proxy::DEFAULT_DETECT_TIMEOUT);
    assert_eq!(c.max_header_bytes, crate::proxy::DEFAULT_MAX_HEADER_BYTES);
    assert_eq!(c.drain_grace, Duration::from_secs(10));
    assert!(c.data_dir.is_none() && c.static_config.is_none() && c.addrs_file.is_none());
    assert!(c.tcp_forwards.is_empty() && c.app_ports.is_empty());
}

#[test]
fn env_fills_and_flags_win() {
    let c = parse(
        &["--namespace", "prod", "--workers", "4"],
        &[
            ("MESH_SERVICE", "api"),
            ("MESH_NAMESPACE", "ignored"),
            ("MESH_PROXY_ID", "api-7"),
            ("MESH_LABELS", "version=v2, zone=a"),
            ("MESH_APP_PORTS", "8080,9090,8080"),
            ("MESH_SIDECAR_DATA_DIR", "/tmp/x"),
            (
                "MESH_TCP_FORWARD",
                "127.0.0.1:7000=db:5432,127.0.0.1:7001=cache:6379",
            ),
            ("MESH_OUTBOUND_SERVICES", "db, cache"),
        ],
    )
    .unwrap();
    assert_eq!(c.service, "api");
    assert_eq!(c.namespace, "prod");
    assert_eq!(c.id, "api-7");
    assert_eq!(c.workers, 4);
    assert_eq!(c.labels.get("version").map(String::as_str), Some("v2"));
    assert_eq!(c.labels.len(), 2);
    assert_eq!(c.app_ports, vec![8080, 9090]);
    assert_eq!(c.data_dir.as_deref(), Some(std::path::Path::new("/tmp/x")));
    assert_eq!(c.tcp_forwards.len(), 2);
    assert_eq!(c.tcp_forwards[1].service, "cache");
    assert_eq!(c.tcp_forwards[1].port, 6379);
    assert_eq!(c.outbound_services, vec!["db", "cache"]);
}

#[test]
fn repeated_tcp_forward_flags() {
    let c = parse(
        &[
            "--service=web",
            "--tcp-forward",
            "127.0.0.1:0=db:5432",
            "--tcp-forward=[::1]:7001=mq:5672",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(c.tcp_forwards.len(), 2);
    assert_eq!(c.tcp_forwards[1].listen.to_string(), "[::1]:7001");
}

#[test]
fn every_bad_setting_is_reported_once() {
    let errs = invalid(parse(
        &[
            "--service",
            "Web_1",
            "--workers",
            "0",
            "--inbound-addr",
            "nope",
            "--labels",
            "version",
            "--tcp-forward",
            "127.0.0.1:7000=db",
        ],
        &[
            ("MESH_APP_PORTS", "80,99999"),
            ("MESH_CONTROL_PLANE", "grpc://x"),
        ],
    ));
    let origins: Vec<&str> = errs.iter().map(|e| e.origin.as_str()).collect();
    assert_eq!(
        origins,
        [
            "--service",
            "MESH_CONTROL_PLANE",
            "--labels",
            "MESH_APP_PORTS",
            "--inbound-addr",
            "--workers",
            "--tcp-forward",
        ]
    );
    let all = ConfigError::Invalid(errs).to_string();
    assert!(all.starts_with("7 invalid setting(s):"), "{all}");
    assert!(all.contains("MESH_APP_PORTS=\"80,99999\""), "{all}");
}

#[test]
fn missing_service_names_flag_and_env() {
    let errs = invalid(parse(&[], &[]));
    assert_eq!(errs.len(), 1);
    assert!(errs[0].reason.contains("MESH_SERVICE"), "{:?}", errs[0]);
}

#[test]
fn unknown_flag_is_a_usage_error() {
    match parse(&["--service", "a", "--bogus", "1"], &[]) {
        Err(ConfigError::Usage(e)) => assert!(e.to_string().contains("--bogus")),
        other => panic!("expected a usage error, got {other:?}"),
    }
}

#[test]
fn control_plane_url_is_http_or_https_with_a_host() {
    for bad in ["127.0.0.1:15010", "http://", "cp"] {
        let errs = invalid(parse(&["--service", "a", "--control-plane", bad], &[]));
        assert_eq!(errs[0].origin, "--control-plane", "{bad}");
    }
    let c = parse(
        &["--service", "a", "--control-plane", "http://cp.mesh:15010"],
        &[],
    )
    .unwrap();
    assert_eq!(c.control_plane, "http://cp.mesh:15010");
}

#[test]
fn advertise_address_must_be_dialable() {
    let errs = invalid(parse(
        &["--service", "a", "--advertise-address", "0.0.0.0"],
        &[],
    ));
    assert_eq!(errs[0].origin, "--advertise-address");
}

#[test]
fn limits_and_durations() {
    let errs = invalid(parse(
        &[
            "--service",
            "a",
            "--detect-timeout-ms",
            "0",
            "--max-header-bytes",
            "10",
            "--drain-grace-ms",
            "-1",
            "--log",
            "info,[",
        ],
        &[],
    ));
    assert_eq!(errs.len(), 4, "{errs:?}");
    let c = parse(
        &[
            "--service",
            "a",
            "--detect-timeout-ms",
            "250",
            "--drain-grace-ms",
            "0",
            "--log",
            "debug,h2=info",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(c.detect_timeout, Duration::from_millis(250));
    assert_eq!(c.drain_grace, Duration::ZERO);
    assert_eq!(c.log, "debug,h2=info");
}

#[test]
fn loopback_helper_is_valid() {
    let c = Config::for_service("bench");
    assert_eq!(c.inbound_addr.port(), 0);
    assert_eq!(c.admin_addr.ip().to_string(), "127.0.0.1");
}

mod never_panics {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Any value of any setting, from a flag or the environment, parses or is reported:
        /// never a panic, and every reported origin names the setting that was given.
        #[test]
        fn any_values(values in proptest::collection::vec(".{0,40}", crate::config::SETTINGS.len())) {
            let mut env = HashMap::new();
            let mut args = vec!["mesh-sidecar".to_string()];
            for (i, (s, v)) in crate::config::SETTINGS.iter().zip(&values).enumerate() {
                if i % 2 == 0 {
                    env.insert(s.env.to_string(), v.clone());
                } else {
                    args.push(format!("--{}={v}", s.flag));
                }
            }
            match Config::from_sources(args, &env) {
                Ok(c) => prop_assert!(!c.service.is_empty()),
                Err(ConfigError::Usage(_)) => {}
                Err(ConfigError::Invalid(all)) => {
                    for e in all {
                        prop_assert!(crate::config::SETTINGS.iter().any(|s| {
                            e.origin == s.env || e.origin == format!("--{}", s.flag)
                        }), "unknown origin {}", e.origin);
                    }
                }
            }
        }
    }
}

#[test]
fn observability_settings() {
    let c = parse(&["--service", "a"], &[]).unwrap();
    assert_eq!(c.otlp_endpoint, None);
    assert_eq!(c.access_log, super::AccessLogDest::Stdout);
    let c = parse(
        &[
            "--service",
            "a",
            "--trace-sampling",
            "0.25",
            "--access-log",
            "/tmp/x.log",
            "--access-log-sampling",
            "1",
        ],
        &[("MESH_OTLP_ENDPOINT", "http://127.0.0.1:4317")],
    )
    .unwrap();
    assert_eq!(c.otlp_endpoint.as_deref(), Some("http://127.0.0.1:4317"));
    assert_eq!((c.trace_sampling, c.access_log_sampling), (0.25, 1.0));
    assert_eq!(
        c.access_log,
        super::AccessLogDest::File("/tmp/x.log".into())
    );
    let c = parse(
        &[
            "--service",
            "a",
            "--otlp-endpoint",
            "",
            "--access-log",
            "off",
        ],
        &[],
    )
    .unwrap();
    assert_eq!(c.otlp_endpoint, None);
    assert_eq!(c.access_log, super::AccessLogDest::Off);
    let bad = invalid(parse(&["--service", "a", "--trace-sampling", "1.5"], &[]));
    assert_eq!(bad.len(), 1, "{bad:?}");
}
