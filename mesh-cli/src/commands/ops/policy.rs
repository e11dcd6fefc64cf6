//! `policy set|get`: read-modify-write of a service's cluster policy.

use mesh_proto::admin::v1::{ServiceRef, SetClusterPolicyRequest};
use mesh_proto::types::v1 as pb;
use tonic::Code;

use crate::cli::{Global, HashOn, Lb, PolicyCommand, PolicySetArgs, Protocol, TlsMode};
use crate::client;
use crate::error::{CliError, Result};
use crate::output::{Table, print_structured};
use crate::spec::millis;

pub async fn policy(global: &Global, cmd: PolicyCommand) -> Result<()> {
    if let PolicyCommand::Set(args) = &cmd
        && args.hash_on.is_some()
        && args
            .lb
            .is_some_and(|lb| !matches!(lb, Lb::RingHash | Lb::Maglev))
    {
        return Err(CliError::usage(
            "--hash-on needs a hashing balancer: use --lb ring-hash (or maglev)",
        ));
    }
    let mut admin = client::connect(global).await?;
    match cmd {
        PolicyCommand::Get { service, .. } => {
            let resp = admin
                .client
                .get_cluster_policy(ServiceRef {
                    service: service.clone(),
                })
                .await;
            let entry = resp
                .map_err(|s| admin.error(&format!("policy of {service}"), s))?
                .into_inner();
            if !print_structured(global.output, &entry)? {
                table(&entry.cluster.unwrap_or_default(), &entry.version).print();
            }
            Ok(())
        }
        PolicyCommand::Set(args) => {
            let current = match admin
                .client
                .get_cluster_policy(ServiceRef {
                    service: args.service.clone(),
                })
                .await
            {
                Ok(r) => r.into_inner().cluster,
                Err(s) if s.code() == Code::NotFound => None,
                Err(s) => return Err(admin.error(&format!("policy of {}", args.service), s)),
            };
            let cluster = apply(
                current.unwrap_or_else(|| pb::Cluster {
                    name: args.service.clone(),
                    ..Default::default()
                }),
                &args,
            )?;
            let req = SetClusterPolicyRequest {
                cluster: Some(cluster),
                dry_run: args.dry_run,
            };
            let resp = admin.client.set_cluster_policy(req).await;
            let version = resp
                .map_err(|s| admin.error(&format!("policy of {}", args.service), s))?
                .into_inner()
                .version;
            let out = serde_json::json!({"service": args.service, "version": version, "dry_run": args.dry_run});
            if !print_structured(global.output, &out)? {
                let verb = if args.dry_run {
                    "validated (dry run, nothing stored)"
                } else {
                    "set"
                };
                println!(
                    "policy of {} {verb}: version {}",
                    args.service,
                    version.chars().take(12).collect::<String>()
                );
            }
            Ok(())
        }
    }
}

/// Overlays the given flags on the current policy; flags not given keep their value.
fn apply(mut c: pb::Cluster, a: &PolicySetArgs) -> Result<pb::Cluster> {
    if let Some(lb) = a.lb {
        c.lb_policy = match lb {
            Lb::P2c => pb::LbPolicy::P2cEwma,
            Lb::RoundRobin => pb::LbPolicy::RoundRobin,
            Lb::WeightedRoundRobin => pb::LbPolicy::WeightedRoundRobin,
            Lb::RingHash => pb::LbPolicy::RingHash,
            Lb::Maglev => pb::LbPolicy::Maglev,
        } as i32;
    }
    if let Some(h) = &a.hash_on {
        let key = match h {
            HashOn::Header(n) => pb::hash_on::Key::Header(n.clone()),
            HashOn::Cookie(n) => pb::hash_on::Key::Cookie(n.clone()),
            HashOn::SourceIp => pb::hash_on::Key::SourceIp(true),
        };
        c.hash_on = Some(pb::HashOn {
            key: Some(key),
            ..c.hash_on.unwrap_or_default()
        });
    }
    let hashing =
        [pb::LbPolicy::RingHash as i32, pb::LbPolicy::Maglev as i32].contains(&c.lb_policy);
    if a.hash_on.is_some() && !hashing {
        return Err(CliError::usage(
            "--hash-on needs a hashing balancer: add --lb ring-hash (or maglev)",
        ));
    }
    if hashing && c.hash_on.as_ref().and_then(|h| h.key.as_ref()).is_none() {
        return Err(CliError::usage(
            "--lb ring-hash needs a key: add --hash-on header:NAME, cookie:NAME or source-ip",
        ));
    }
    let od = c.outlier_detection.get_or_insert_with(Default::default);
    set(&mut od.consecutive_5xx, a.consecutive_5xx);
    set(&mut od.base_ejection_ms, a.ejection_time.map(millis));
    set(&mut od.max_ejection_percent, a.max_ejection_percent);
    if a.no_outlier_detection {
        od.disabled = true;
    } else if a.consecutive_5xx.is_some() {
        od.disabled = false;
    }
    let cb = c.circuit_breakers.get_or_insert_with(Default::default);
    set(&mut cb.max_pending_requests, a.max_pending);
    set(&mut cb.max_requests, a.max_requests);
    set(&mut cb.max_retries, a.max_retries);
    let hc = c.health_check.get_or_insert_with(Default::default);
    set(&mut hc.http_path, a.health_check_path.clone());
    set(&mut hc.interval_ms, a.health_check_interval.map(millis));
    set(&mut hc.timeout_ms, a.health_check_timeout.map(millis));
    set(&mut c.connect_timeout_ms, a.connect_timeout.map(millis));
    set(&mut c.idle_timeout_ms, a.idle_timeout.map(millis));
    set(&mut c.request_timeout_ms, a.request_timeout.map(millis));
    if let Some(t) = a.tls_mode {
        c.tls_mode = match t {
            TlsMode::Strict => pb::TlsMode::Strict,
            TlsMode::Permissive => pb::TlsMode::Permissive,
            TlsMode::Disabled => pb::TlsMode::Disabled,
        } as i32;
    }
    if let Some(p) = a.protocol {
        c.protocol = match p {
            Protocol::Detect => pb::Protocol::Unspecified,
            Protocol::Http1 => pb::Protocol::Http1,
            Protocol::Http2 => pb::Protocol::Http2,
            Protocol::Grpc => pb::Protocol::Grpc,
            Protocol::Tcp => pb::Protocol::Tcp,
        } as i32;
    }
    Ok(c)
}

fn set<T>(field: &mut T, v: Option<T>) {
    if let Some(v) = v {
        *field = v;
    }
}

fn table(c: &pb::Cluster, version: &str) -> Table {
    let ms = |v: u64| {
        if v == 0 {
            "default".to_string()
        } else {
            format!("{v}ms")
        }
    };
    let n = |v: u32| {
        if v == 0 {
            "default".to_string()
        } else {
            v.to_string()
        }
    };
    let lb = pb::LbPolicy::try_from(c.lb_policy).map_or("?".into(), |l| format!("{l:?}"));
    let hash = c
        .hash_on
        .as_ref()
        .and_then(|h| h.key.as_ref())
        .map_or(String::new(), |k| match k {
            pb::hash_on::Key::Header(h) => format!("header:{h}"),
            pb::hash_on::Key::Cookie(c) => format!("cookie:{c}"),
            pb::hash_on::Key::SourceIp(_) => "source-ip".into(),
        });
    let od = c.outlier_detection.unwrap_or_default();
    let cb = c.circuit_breakers.unwrap_or_default();
    let hc = c.health_check.clone().unwrap_or_default();
    let tls = pb::TlsMode::try_from(c.tls_mode).map_or("?".into(), |t| format!("{t:?}"));
    let mut t = Table::new(&["FIELD", "VALUE"]);
    for (k, v) in [
        ("service", c.name.clone()),
        ("version", version.chars().take(12).collect()),
        ("lb", lb),
        ("hash-on", hash),
        (
            "outlier",
            if od.disabled {
                "disabled".into()
            } else {
                format!(
                    "consecutive-5xx={} ejection={} max-ejection%={}",
                    n(od.consecutive_5xx),
                    ms(od.base_ejection_ms),
                    n(od.max_ejection_percent)
                )
            },
        ),
        (
            "circuit-breakers",
            format!(
                "pending={} requests={} retries={}",
                n(cb.max_pending_requests),
                n(cb.max_requests),
                n(cb.max_retries)
            ),
        ),
        (
            "health-check",
            format!(
                "path={} interval={} timeout={}",
                if hc.http_path.is_empty() {
                    "tcp"
                } else {
                    &hc.http_path
                },
                ms(hc.interval_ms),
                ms(hc.timeout_ms)
            ),
        ),
        (
            "timeouts",
            format!(
                "connect={} idle={} request={}",
                ms(c.connect_timeout_ms),
                ms(c.idle_timeout_ms),
                ms(c.request_timeout_ms)
            ),
        ),
        ("tls-mode", tls),
        ("vip", c.vip.clone()),
        (
            "ports",
            c.ports
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        ),
    ] {
        t.row(vec![k.to_string(), v]);
    }
    t
}
