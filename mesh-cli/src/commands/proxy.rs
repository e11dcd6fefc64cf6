//! Commands that talk to sidecars' admin ports: `proxy-config`, `stat`, `explain`.

mod explain;
mod stat;

use serde_json::Value;

use crate::cli::{ConfigSection, Global, ProxyConfigArgs};
use crate::error::{CliError, Result};
use crate::output::{Format, print_structured};
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

pub async fn config(global: &Global, args: ProxyConfigArgs) -> Result<()> {
    let dump = config_dump(&args.proxy).await?;
    let part = match args.section {
        ConfigSection::All => dump,
        s => {
            let key = format!("{s:?}").to_ascii_lowercase();
            section(&dump, &key).cloned().ok_or_else(|| {
                let keys = dump
                    .as_object()
                    .map(|o| o.keys().cloned().collect::<Vec<_>>().join(", "))
                    .unwrap_or_default();
                CliError::server(format!(
                    "the config dump of {} has no {key} section (it has: {keys})",
                    args.proxy
                ))
            })?
        }
    };
    // A config dump is nested; the "table" view is indented JSON.
    let format = if global.output == Format::Table {
        Format::Json
    } else {
        global.output
    };
    print_structured(format, &part)?;
    Ok(())
}

/// Top-level key by name, tolerating singular/plural and case (`routes`, `Route`).
pub fn section<'a>(dump: &'a Value, key: &str) -> Option<&'a Value> {
    let obj = dump.as_object()?;
    let singular = key.trim_end_matches('s');
    obj.iter()
        .find(|(k, _)| {
            let k = k.to_ascii_lowercase();
            k == key || k == singular || k.trim_end_matches('s') == singular
        })
        .map(|(_, v)| v)
}
