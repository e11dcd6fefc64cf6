//! Golden tests of the generated rule text; `MESH_UPDATE_GOLDEN=1` rewrites the files.

use clap::Parser;

use super::*;
use crate::init::InitArgs;
use crate::init::options::{InterceptOptions, OptionError};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    init: InitArgs,
}

fn options(flags: &[&str]) -> InterceptOptions {
    let cli = Cli::try_parse_from(std::iter::once("init").chain(flags.iter().copied())).unwrap();
    InterceptOptions::try_from(&cli.init).unwrap()
}

fn golden(name: &str, actual: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("src/init/testdata")
        .join(name);
    if std::env::var_os("MESH_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, actual).unwrap();
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert_eq!(
        actual,
        expected,
        "{} differs (MESH_UPDATE_GOLDEN=1 to accept)",
        path.display()
    );
}

const CUSTOM: &[&str] = &[
    "--proxy-uid=2000",
    "--proxy-gid=2001",
    "--exclude-inbound-ports=22,8080-8090,22",
    "--exclude-outbound-ports=5432",
    "--exclude-outbound-cidrs=169.254.169.254/32,10.1.2.3/16,fd00:ec2::254",
    "--include-outbound-cidrs=10.0.0.0/8,fd00::/8",
];

#[test]
fn default_ipv4() {
    golden(
        "default.v4.rules",
        &generate(&options(&[]), Family::V4).render(),
    );
}

#[test]
fn default_ipv6() {
    golden(
        "default.v6.rules",
        &generate(&options(&[]), Family::V6).render(),
    );
}

#[test]
fn custom_ipv4() {
    golden(
        "custom.v4.rules",
        &generate(&options(CUSTOM), Family::V4).render(),
    );
}

#[test]
fn custom_ipv6() {
    golden(
        "custom.v6.rules",
        &generate(&options(CUSTOM), Family::V6).render(),
    );
}

#[test]
fn no_dns_has_no_dns_rules() {
    let rules = generate(&options(&["--no-dns"]), Family::V4).render();
    assert!(!rules.contains("--dport 53"), "{rules}");
    assert!(!rules.contains("-A MESH_DNS"), "{rules}");
}

#[test]
fn proxy_uid_returns_before_any_redirect() {
    let rules = generate(&options(&[]), Family::V4);
    let pos = |needle: &str| {
        rules
            .chain_rules
            .iter()
            .position(|r| r.contains(needle))
            .unwrap()
    };
    assert!(pos("-A MESH_OUTPUT -m owner --uid-owner 1337 -j RETURN") < pos("-j MESH_REDIRECT"));
    assert!(pos("-A MESH_DNS -m owner --uid-owner 1337") < pos("--to-ports 15053"));
}

#[test]
fn env_style_lists_and_bad_values() {
    let cli = Cli::try_parse_from(["init", "--exclude-inbound-ports", "x"]).unwrap();
    let err = InterceptOptions::try_from(&cli.init).unwrap_err();
    assert_eq!(
        err.to_string(),
        "invalid port \"x\": expected 1-65535 or a range like 8000-8010"
    );
    let cli = Cli::try_parse_from(["init", "--exclude-outbound-cidrs", "10.0.0.0/40"]).unwrap();
    assert!(InterceptOptions::try_from(&cli.init).is_err());
    assert!(Cli::try_parse_from(["init", "--cleanup", "--dry-run"]).is_err());
    for (flags, want) in [
        (&["--proxy-uid=0"][..], OptionError::RootProxy),
        (&["--proxy-gid=0"], OptionError::RootProxy),
        (&["--dns-port=0"], OptionError::ZeroPort("dns-port")),
    ] {
        let cli =
            Cli::try_parse_from(std::iter::once("init").chain(flags.iter().copied())).unwrap();
        assert_eq!(
            InterceptOptions::try_from(&cli.init),
            Err(want),
            "{flags:?}"
        );
    }
}
