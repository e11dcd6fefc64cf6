//! `mesh-sidecar init` for real in a fresh network namespace: idempotent install, update,
//! foreign rules untouched, complete cleanup (root only; prints SKIPPED otherwise).

mod netns_support;

use std::process::Command;

use clap::Parser;
use mesh_sidecar::init::{InitArgs, InitOutcome, run_init};
use mesh_tests::netns::{self, Netns, TestNet};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    init: InitArgs,
}

/// Entry point of the re-executed test binary (a no-op in a normal run).
#[test]
fn child_process_entry() {
    netns_support::run_child_role();
}

/// Runs `init ARGS` inside `ns` in a child process and returns its outcome line.
fn init(ns: &Netns, args: &[&str]) -> String {
    let cmd = netns_support::init_cmd(args);
    let out = ns.wrap(&cmd).output().expect("running the init child");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout
        .lines()
        .find(|l| l.starts_with("INIT-"))
        .unwrap_or_default();
    assert!(
        line.starts_with("INIT-OK"),
        "init {args:?} failed: {stdout}"
    );
    line.to_string()
}

/// The nat table as iptables-save prints it, without comments and counters.
fn nat(ns: &Netns, tool: &str) -> String {
    let out = ns.run(tool, &["-t", "nat"]).unwrap();
    out.lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| l.split(" [").next().unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

fn has_ip6tables() -> bool {
    Command::new("ip6tables-save")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[test]
fn init_is_idempotent_and_cleanup_is_complete() {
    if !netns::can_run() {
        return;
    }
    let net = TestNet::new().unwrap();
    let ns = &net.a;
    let tools: &[&str] = if has_ip6tables() {
        &["iptables-save", "ip6tables-save"]
    } else {
        &["iptables-save"]
    };

    // A rule that is not ours: init and cleanup must leave it alone.
    for save in tools {
        let tool = save.trim_end_matches("-save");
        ns.run(
            tool,
            &[
                "-t", "nat", "-A", "OUTPUT", "-p", "tcp", "--dport", "9999", "-j", "RETURN",
            ],
        )
        .unwrap();
    }
    let before: Vec<String> = tools.iter().map(|t| nat(ns, t)).collect();

    let first = init(ns, &[]);
    assert!(first.contains("Applied"), "{first}");
    let once: Vec<String> = tools.iter().map(|t| nat(ns, t)).collect();
    init(ns, &[]);
    let twice: Vec<String> = tools.iter().map(|t| nat(ns, t)).collect();
    assert_eq!(
        once, twice,
        "running init twice must give exactly the same rules"
    );

    for (tool, rules) in tools.iter().zip(&once) {
        for chain in [
            "MESH_INBOUND",
            "MESH_IN_REDIRECT",
            "MESH_OUTPUT",
            "MESH_REDIRECT",
            "MESH_DNS",
        ] {
            assert!(
                rules.lines().any(|l| l == format!(":{chain} -")),
                "{tool}: no {chain}:\n{rules}"
            );
        }
        // Each jump exactly once, after the foreign rule.
        assert_eq!(
            rules.matches("-A OUTPUT -p tcp -j MESH_OUTPUT").count(),
            1,
            "{rules}"
        );
        assert_eq!(
            rules
                .matches("-A PREROUTING -p tcp -j MESH_INBOUND")
                .count(),
            1,
            "{rules}"
        );
        assert!(
            rules.contains("--dport 9999 -j RETURN"),
            "{tool} lost a foreign rule"
        );
        assert!(
            rules.contains("-A MESH_OUTPUT -m owner --uid-owner 1337 -j RETURN"),
            "{rules}"
        );
    }

    // Changed options replace the old rules instead of adding to them.
    init(ns, &["--exclude-inbound-ports=2222", "--no-dns"]);
    let changed = nat(ns, "iptables-save");
    assert!(
        changed.contains("-A MESH_INBOUND -p tcp -m tcp --dport 2222 -j RETURN"),
        "{changed}"
    );
    assert!(
        !changed.contains("--dport 53"),
        "DNS jumps removed with --no-dns:\n{changed}"
    );
    assert!(!changed.contains("-A MESH_DNS"), "{changed}");
    assert_eq!(changed.matches("-j MESH_OUTPUT").count(), 1, "{changed}");

    let cleaned = init(ns, &["--cleanup"]);
    assert!(cleaned.contains("CleanedUp"), "{cleaned}");
    let after: Vec<String> = tools.iter().map(|t| nat(ns, t)).collect();
    for rules in &after {
        assert!(
            !rules.contains("MESH_"),
            "cleanup left something behind:\n{rules}"
        );
    }
    assert_eq!(
        after, before,
        "cleanup restores the table exactly as it was"
    );
    // Cleaning up what is already clean is fine.
    init(ns, &["--cleanup"]);
}

#[test]
fn dry_run_prints_rules_and_touches_nothing() {
    if !netns::can_run() {
        return;
    }
    let net = TestNet::new().unwrap();
    let before = nat(&net.a, "iptables-save");
    let line = init(&net.a, &["--dry-run", "--ipv6=never"]);
    assert!(
        line.contains("DryRun") && line.contains("MESH_REDIRECT"),
        "{line}"
    );
    assert_eq!(nat(&net.a, "iptables-save"), before);
}

#[test]
fn dry_run_without_root_returns_the_rules() {
    let cli = Cli::try_parse_from(["init", "--dry-run", "--ipv6=always"]).unwrap();
    let InitOutcome::DryRun(text) = run_init(cli.init).unwrap() else {
        panic!("not a dry run")
    };
    assert_eq!(text.matches("*nat").count(), 2, "{text}");
    assert!(
        text.contains("-A MESH_OUTPUT -d ::1/128 -j RETURN"),
        "{text}"
    );
}
