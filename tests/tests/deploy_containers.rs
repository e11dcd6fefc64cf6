//! Checks deploy/containers: one multi-stage, non-root Containerfile per shipped binary, exposing ARCHITECTURE.md's ports; the proxy runs as uid 1337.

// Each deploy_* test file uses part of the shared helpers.
#[allow(dead_code)]
mod deploy_support;

use std::collections::BTreeSet;

use deploy_support::{port, read, repo_root, yaml_docs};

const CONTAINERS: &str = "deploy/containers";
const CONTROL_PLANE: &str = "mesh-control-plane";
/// The proxy's dedicated uid: the init rules exempt it from redirection so the proxy's own
/// connections are not looped back (issue "interception"; not in ARCHITECTURE.md's table).
const PROXY_UID: u32 = 1337;

/// One instruction of a Containerfile (continuation lines joined), e.g. ("RUN", "apt-get ...").
fn instructions(text: &str) -> Vec<(String, String)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let line = line.trim();
        if current.is_empty() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    joined
        .into_iter()
        .map(|i| {
            let (op, rest) = i.split_once(' ').unwrap_or((&i, ""));
            (op.to_ascii_uppercase(), rest.trim().to_string())
        })
        .collect()
}

/// Workspace member directories from the root Cargo.toml (`members = [...]`, one or more lines).
fn workspace_members() -> Vec<String> {
    let text = read("Cargo.toml");
    let start = text
        .find("members = [")
        .expect("Cargo.toml lists workspace members")
        + "members = [".len();
    let len = text[start..].find(']').expect("members list is closed");
    text[start..start + len]
        .split(',')
        .map(|m| m.trim().trim_matches('"').to_string())
        .filter(|m| !m.is_empty())
        .collect()
}

/// The product binaries that ship as images: (package, binary). Demo and test binaries
/// elsewhere in the workspace are not shipped.
const IMAGE_BINARIES: &[(&str, &str)] = &[
    ("mesh-control-plane", "mesh-control-plane"),
    ("mesh-sidecar", "mesh-sidecar"),
    ("mesh-cli", "mesh-cli"),
];

/// Whether some workspace member is package `package` with a `[[bin]]` named `bin`.
fn workspace_has_binary(package: &str, bin: &str) -> bool {
    let name_in = |section: &str| {
        section
            .lines()
            .find_map(|l| l.strip_prefix("name = "))
            .map(|n| n.trim().trim_matches('"').to_string())
    };
    workspace_members().iter().any(|dir| {
        let text = read(&format!("{dir}/Cargo.toml"));
        let is_package =
            text.split("[package]").nth(1).and_then(name_in).as_deref() == Some(package);
        is_package
            && text
                .split("[[bin]]")
                .skip(1)
                .filter_map(name_in)
                .any(|b| b == bin)
    })
}

/// The Containerfile building `bin`, by its `cargo build ... --bin <bin>` line.
fn containerfile_for(bin: &str) -> (String, Vec<(String, String)>) {
    let dir = repo_root().join(CONTAINERS);
    let mut found = Vec::new();
    for entry in std::fs::read_dir(&dir).expect("deploy/containers exists") {
        let path = entry.expect("dir entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("Containerfile") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read Containerfile");
        let ins = instructions(&text);
        let builds_it = ins.iter().any(|(op, rest)| {
            op == "RUN"
                && rest.contains("cargo build --release")
                && rest.split_whitespace().any(|w| w == bin)
        });
        if builds_it {
            found.push((path.display().to_string(), ins));
        }
    }
    assert_eq!(
        found.len(),
        1,
        "exactly one Containerfile in {CONTAINERS} builds {bin}"
    );
    found.remove(0)
}

/// Instructions of the last stage (after the last FROM).
fn final_stage(ins: &[(String, String)]) -> &[(String, String)] {
    let last_from = ins
        .iter()
        .rposition(|(op, _)| op == "FROM")
        .expect("a FROM");
    &ins[last_from..]
}

/// The numeric uid of the last USER in the final stage.
fn final_uid(file: &str, ins: &[(String, String)]) -> u32 {
    let user = final_stage(ins)
        .iter()
        .rev()
        .find(|(op, _)| op == "USER")
        .map(|(_, u)| u.clone())
        .unwrap_or_else(|| panic!("{file}: the final stage sets USER"));
    user.split(':')
        .next()
        .and_then(|u| u.parse().ok())
        .unwrap_or_else(|| {
            panic!("{file}: USER `{user}` must be numeric (runAsNonRoot checks numbers)")
        })
}

fn exposed(ins: &[(String, String)]) -> BTreeSet<u16> {
    final_stage(ins)
        .iter()
        .filter(|(op, _)| op == "EXPOSE")
        .flat_map(|(_, ports)| {
            ports
                .split_whitespace()
                .map(|p| p.parse().expect("EXPOSE port"))
        })
        .collect()
}

#[test]
fn every_binary_has_a_multi_stage_non_root_container_file() {
    let members = workspace_members();
    // A build-time cargo config (e.g. PROTOC for a dependency) must reach the image build too.
    let cargo_config = repo_root().join(".cargo/config.toml").exists();
    for (package, bin) in IMAGE_BINARIES {
        assert!(
            workspace_has_binary(package, bin),
            "package {package} builds binary {bin}"
        );
        let (file, ins) = containerfile_for(bin);
        let froms = ins.iter().filter(|(op, _)| op == "FROM").count();
        assert!(froms >= 2, "{file}: multi-stage (build + runtime)");
        assert!(
            ins.iter().any(|(op, rest)| op == "RUN"
                && rest.contains(&format!("-p {package}"))
                && rest.contains("--release")),
            "{file}: cargo build --release -p {package}"
        );
        // Cargo needs every member's manifest to build any of them.
        for member in &members {
            assert!(
                ins.iter().any(
                    |(op, rest)| op == "COPY" && rest.split_whitespace().next() == Some(member)
                ),
                "{file}: COPY {member} (a workspace member)"
            );
        }
        if cargo_config {
            assert!(
                ins.iter()
                    .any(|(op, rest)| op == "COPY" && rest.starts_with(".cargo")),
                "{file}: COPY .cargo (the repository has .cargo/config.toml)"
            );
        }
        assert_ne!(final_uid(&file, &ins), 0, "{file}: runs as non-root");
        let entry = final_stage(&ins)
            .iter()
            .find(|(op, _)| op == "ENTRYPOINT")
            .map(|(_, e)| e.clone())
            .unwrap_or_else(|| panic!("{file}: ENTRYPOINT"));
        assert!(
            entry.contains(&format!("/{bin}\"")),
            "{file}: ENTRYPOINT runs {bin}"
        );
    }
}

#[test]
fn container_files_expose_the_default_ports_and_the_proxy_uid() {
    let (file, ins) = containerfile_for(CONTROL_PLANE);
    let control_plane: BTreeSet<u16> = [
        port(CONTROL_PLANE, "discovery"),
        port(CONTROL_PLANE, "admin"),
        port(CONTROL_PLANE, "http"),
    ]
    .into();
    assert_eq!(exposed(&ins), control_plane, "{file}: EXPOSE");
    // The Deployment runs the image's own non-root user.
    let deployment = yaml_docs("deploy/kubernetes/deployment.yaml")
        .into_iter()
        .find(|d| d["kind"].as_str() == Some("Deployment"))
        .expect("deploy/kubernetes/deployment.yaml has the Deployment");
    assert_eq!(
        deployment["spec"]["template"]["spec"]["securityContext"]["runAsUser"].as_u64(),
        Some(u64::from(final_uid(&file, &ins))),
        "Deployment runAsUser = the image's USER"
    );

    let (file, ins) = containerfile_for("mesh-sidecar");
    let sidecar: BTreeSet<u16> = [
        port("mesh-sidecar", "admin"),
        port("mesh-sidecar", "outbound"),
        port("mesh-sidecar", "inbound"),
    ]
    .into();
    assert_eq!(exposed(&ins), sidecar, "{file}: EXPOSE");
    assert_eq!(
        final_uid(&file, &ins),
        PROXY_UID,
        "{file}: the proxy runs as uid {PROXY_UID}"
    );
    // `mesh-sidecar init` runs iptables-restore from the same image.
    assert!(
        final_stage(&ins).iter().any(|(op, rest)| op == "RUN"
            && rest.contains("install")
            && rest.split_whitespace().any(|w| w == "iptables")),
        "{file}: the runtime image installs iptables for the init step"
    );
}
