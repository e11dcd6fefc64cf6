//! Applying and removing the rules atomically: read the current nat table with iptables-save,
//! then feed one `iptables-restore --noflush` transaction that touches only our chains and jumps.

use std::io::Write as _;
use std::process::{Command, Stdio};

use super::InitError;
use super::options::Family;
use super::rules::{CHAIN_PREFIX, CHAINS, RuleSet};

/// What of ours is currently installed in the nat table.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Installed {
    /// Every nat chain named `MESH_*` (ours, including ones an older version created).
    pub chains: Vec<String>,
    /// Rules in built-in chains that jump into one of our chains, exactly as iptables-save
    /// prints them (so `-D` with the same text matches).
    pub jumps: Vec<String>,
}

/// Finds our chains and jumps in `iptables-save -t nat` output.
pub fn parse_installed(save: &str) -> Installed {
    let mut installed = Installed::default();
    let mut in_nat = false;
    for line in save.lines().map(str::trim) {
        if let Some(table) = line.strip_prefix('*') {
            in_nat = table == "nat";
            continue;
        }
        if !in_nat {
            continue;
        }
        if let Some(decl) = line.strip_prefix(':') {
            let name = decl.split_whitespace().next().unwrap_or_default();
            if name.starts_with(CHAIN_PREFIX) {
                installed.chains.push(name.to_string());
            }
        } else if let Some(rule) = line.strip_prefix("-A ") {
            let chain = rule.split_whitespace().next().unwrap_or_default();
            if !chain.starts_with(CHAIN_PREFIX) && jumps_to_ours(rule) {
                installed.jumps.push(line.to_string());
            }
        }
    }
    installed
}

fn jumps_to_ours(rule: &str) -> bool {
    let tokens: Vec<&str> = rule.split_whitespace().collect();
    tokens
        .windows(2)
        .any(|w| matches!(w[0], "-j" | "-g") && w[1].starts_with(CHAIN_PREFIX))
}

/// One transaction that replaces whatever of ours is installed with `rules`: old jumps are
/// deleted and re-added (so running twice never duplicates them), our chains are flushed by
/// their declaration, and chains we no longer use are removed.
pub fn apply_document(rules: &RuleSet, installed: &Installed) -> String {
    let mut out = String::from("*nat\n");
    for jump in &installed.jumps {
        out.push_str(&delete(jump));
    }
    for chain in CHAINS {
        out.push_str(&format!(":{chain} - [0:0]\n"));
    }
    let stale: Vec<&String> = installed
        .chains
        .iter()
        .filter(|c| !CHAINS.contains(&c.as_str()))
        .collect();
    for chain in &stale {
        out.push_str(&format!("-F {chain}\n"));
    }
    for line in rules.chain_rules.iter().chain(&rules.jumps) {
        out.push_str(line);
        out.push('\n');
    }
    for chain in &stale {
        out.push_str(&format!("-X {chain}\n"));
    }
    out.push_str("COMMIT\n");
    out
}

/// One transaction that removes every jump and chain of ours, or `None` if nothing is there.
pub fn cleanup_document(installed: &Installed) -> Option<String> {
    if installed.chains.is_empty() && installed.jumps.is_empty() {
        return None;
    }
    let mut out = String::from("*nat\n");
    for jump in &installed.jumps {
        out.push_str(&delete(jump));
    }
    // Flush all before deleting any: our chains jump into each other.
    for chain in &installed.chains {
        out.push_str(&format!("-F {chain}\n"));
    }
    for chain in &installed.chains {
        out.push_str(&format!("-X {chain}\n"));
    }
    out.push_str("COMMIT\n");
    Some(out)
}

fn delete(jump: &str) -> String {
    format!("-D {}\n", jump.strip_prefix("-A ").unwrap_or(jump))
}

/// The nat table as iptables-save prints it.
pub fn save(family: Family) -> Result<String, InitError> {
    run(family.save_tool(), &["-t", "nat"], None)
}

/// Feeds `document` to `iptables-restore --noflush` (one atomic commit).
pub fn restore(family: Family, document: &str) -> Result<(), InitError> {
    run(family.restore_tool(), &["--noflush"], Some(document)).map(drop)
}

/// Whether `tool` is an executable on PATH (decides IPv6 in `auto` mode).
pub fn on_path(tool: &str) -> bool {
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
        .unwrap_or(false)
}

fn run(tool: &'static str, args: &[&str], stdin: Option<&str>) -> Result<String, InitError> {
    let mut child = Command::new(tool)
        .args(args)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| InitError::Spawn { tool, source })?;
    if let (Some(input), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(input.as_bytes())
            .map_err(|source| InitError::Spawn { tool, source })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| InitError::Spawn { tool, source })?;
    if !out.status.success() {
        return Err(InitError::Failed {
            tool,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::options::InterceptOptions;
    use crate::init::rules::generate;

    const SAVED: &str = "\
# Generated by iptables-save v1.8.9 (nf_tables)
*filter
:INPUT ACCEPT [0:0]
-A INPUT -j MESH_NOT_NAT
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:MESH_OUTPUT - [0:0]
:MESH_OLD - [0:0]
-A PREROUTING -p tcp -j MESH_INBOUND
-A OUTPUT -p tcp -j MESH_OUTPUT
-A OUTPUT -j DOCKER
-A MESH_OUTPUT -j MESH_OLD
COMMIT
";

    #[test]
    fn finds_only_our_nat_chains_and_jumps() {
        let i = parse_installed(SAVED);
        assert_eq!(i.chains, ["MESH_OUTPUT", "MESH_OLD"]);
        assert_eq!(
            i.jumps,
            [
                "-A PREROUTING -p tcp -j MESH_INBOUND",
                "-A OUTPUT -p tcp -j MESH_OUTPUT"
            ]
        );
    }

    #[test]
    fn apply_replaces_jumps_and_drops_stale_chains() {
        let rules = generate(&InterceptOptions::default(), Family::V4);
        let doc = apply_document(&rules, &parse_installed(SAVED));
        assert!(doc.starts_with(
            "*nat\n-D PREROUTING -p tcp -j MESH_INBOUND\n-D OUTPUT -p tcp -j MESH_OUTPUT\n"
        ));
        assert!(doc.contains("-F MESH_OLD\n"));
        assert!(doc.ends_with("-X MESH_OLD\nCOMMIT\n"));
        assert!(
            !doc.contains("DOCKER"),
            "never touches chains that are not ours"
        );
    }

    #[test]
    fn cleanup_removes_everything_of_ours() {
        let doc = cleanup_document(&parse_installed(SAVED)).unwrap();
        assert_eq!(
            doc,
            "*nat\n-D PREROUTING -p tcp -j MESH_INBOUND\n-D OUTPUT -p tcp -j MESH_OUTPUT\n\
             -F MESH_OUTPUT\n-F MESH_OLD\n-X MESH_OUTPUT\n-X MESH_OLD\nCOMMIT\n"
        );
        assert_eq!(cleanup_document(&Installed::default()), None);
    }
}
