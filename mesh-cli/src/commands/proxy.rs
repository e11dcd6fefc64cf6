//! Commands that talk to sidecars' admin ports: `proxy-config`, `stat`, `explain`.

pub mod certs;
mod explain;
mod stat;

use mesh_proto::type_url;
use mesh_proto::types::v1 as pb;
use serde_json::Value;

use crate::cli::{ConfigSection, Global, ProxyConfigArgs};
use crate::commands::route::show;
use crate::error::{CliError, Result};
use crate::output::{Table, print_structured};
use crate::proxy_http;

pub use explain::explain;
pub use stat::stat;

/// Fetches and parses the proxy's `/config_dump`.
pub async fn config_dump(proxy: &str) -> Result<Value> {
    let text = proxy_http::get(proxy, "/config_dump").await?;
    serde_json::from_str(&text).map_err(|e| {
        CliError::server(format!(
            "the proxy at {proxy} returned a config dump that is not JSON: {e}"
        ))
    })
}

/// What the proxy holds: `resources[]` entries (type_url, name, version, resource) filtered by
/// section, plus the stream state and last NACK; a table by default.
pub async fn config(global: &Global, args: ProxyConfigArgs) -> Result<()> {
    let dump = config_dump(&args.proxy).await?;
    let want = match args.section {
        ConfigSection::All => None,
        ConfigSection::Routes => Some(type_url::ROUTE),
        ConfigSection::Clusters => Some(type_url::CLUSTER),
        ConfigSection::Endpoints => Some(type_url::ENDPOINTS),
        ConfigSection::Listeners => Some(type_url::LISTENER),
        ConfigSection::Certs => return certs::print(global, &args.proxy, &dump),
    };
    let resources: Vec<&Value> = dump
        .get("resources")
        .and_then(Value::as_array)
        .ok_or_else(|| {
            CliError::server(format!(
                "the config dump of {} has no `resources` list",
                args.proxy
            ))
        })?
        .iter()
        .filter(|r| want.is_none_or(|t| r.get("type_url").and_then(Value::as_str) == Some(t)))
        .collect();
    if want.is_some() {
        if print_structured(global.output, &resources)? {
            return Ok(());
        }
    } else if print_structured(global.output, &dump)? {
        return Ok(());
    }
    let s = |v: &Value, k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    };
    println!(
        "proxy {}: source {}, connected {}, generation {}",
        args.proxy,
        dump.get("source").map_or(String::new(), |v| v
            .to_string()
            .trim_matches('"')
            .to_string()),
        dump.get("connected")
            .and_then(Value::as_bool)
            .unwrap_or(false),
        dump.get("generation").and_then(Value::as_u64).unwrap_or(0)
    );
    if let Some(n) = dump.get("last_nack").filter(|n| !n.is_null()) {
        println!("last NACK: {n}");
    }
    let mut t = Table::new(&["TYPE", "NAME", "VERSION", "SUMMARY"]);
    for r in resources {
        let ty = s(r, "type_url");
        let body = r
            .get("resource")
            .and_then(|x| x.get("kind"))
            .cloned()
            .unwrap_or_default();
        t.row(vec![
            ty.rsplit('.').next().unwrap_or_default().to_string(),
            s(r, "name"),
            s(r, "version").chars().take(12).collect(),
            summary(&body),
        ]);
    }
    t.print();
    Ok(())
}

/// One line per resource: rules for routes, policy for clusters, counts for endpoints.
fn summary(kind: &Value) -> String {
    if let Some(route) = kind
        .get("route")
        .and_then(|r| serde_json::from_value::<pb::Route>(r.clone()).ok())
    {
        return route
            .rules
            .iter()
            .map(|r| {
                format!(
                    "{}: {} → {}",
                    r.name,
                    show::matches(r),
                    show::backends(&route.service, &r.backends)
                )
            })
            .collect::<Vec<_>>()
            .join("; ");
    }
    if let Some(c) = kind
        .get("cluster")
        .and_then(|c| serde_json::from_value::<pb::Cluster>(c.clone()).ok())
    {
        let lb = pb::LbPolicy::try_from(c.lb_policy).map_or("?".into(), |l| format!("{l:?}"));
        return format!("lb {lb}, vip {}, ports {:?}", c.vip, c.ports);
    }
    if let Some(e) = kind
        .get("endpoints")
        .and_then(|e| serde_json::from_value::<pb::Endpoints>(e.clone()).ok())
    {
        let addrs: Vec<String> = e.endpoints.iter().map(|x| x.address.clone()).collect();
        return format!("{} endpoint(s): {}", addrs.len(), addrs.join(", "));
    }
    if let Some(l) = kind
        .get("listener")
        .and_then(|l| serde_json::from_value::<pb::Listener>(l.clone()).ok())
    {
        return format!("app ports {:?}, opaque {:?}", l.app_ports, l.opaque_ports);
    }
    String::new()
}
