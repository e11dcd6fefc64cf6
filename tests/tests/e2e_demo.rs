//! `mesh-cli demo --duration N` runs the whole local mesh non-interactively, shows traffic
//! moving to v2 after the canary shift, exits 0 and leaves no process or file behind (as root:
//! no namespace, link or iptables rule either).

use std::process::Command;
use std::time::Duration;

use mesh_tests::bin_path;

#[test]
fn demo_runs_shifts_traffic_and_leaves_nothing_behind() {
    let out = Command::new(bin_path("mesh-cli"))
        .args(["demo", "--duration", "9", "--interval", "3"])
        .output()
        .expect("run mesh-cli demo");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    println!("{stdout}\n{stderr}");
    assert!(out.status.success(), "demo exited with {}", out.status);
    assert!(
        stdout.contains("route set api --to v1=80,v2=20"),
        "canary step missing"
    );
    // Both versions served traffic and nothing failed.
    let total = |key: &str| -> (u64, u64) {
        let line = stdout
            .lines()
            .find(|l| l.starts_with(&format!("total {key}:")))
            .unwrap_or_else(|| panic!("no total line for {key}"));
        let nums: Vec<u64> = line
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|n| n.parse().ok())
            .collect();
        (nums[nums.len() - 2], nums[nums.len() - 1])
    };
    let (v2_ok, _) = total("api v2");
    let (web_ok, web_failed) = total("web v1");
    assert!(v2_ok > 0, "v2 never served after the canary shift");
    assert!(web_ok > 0);
    assert_eq!(web_failed, 0, "requests failed during the demo");

    // No leftovers: the demo's data dir is gone and no mesh process mentions it.
    // The demo waited for its children before exiting, so this only bounds a lagging kernel
    // reap: poll for up to 5 s, never assert on how long it took.
    if let Some(dir) = out_pid_dir(&stdout) {
        assert!(!std::path::Path::new(&dir).exists(), "{dir} left behind");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let ps = Command::new("ps").args(["-eo", "args"]).output().unwrap();
            let ps = String::from_utf8_lossy(&ps.stdout).into_owned();
            if !ps.lines().any(|l| l.contains(&dir)) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "a process still runs from {dir}:\n{ps}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    if nix::unistd::geteuid().is_root() {
        assert_no_network_leftovers(&stdout);
    }
}

/// As root the workloads ran intercepted in network namespaces (`mesh-cli run`): none of the
/// namespaces, their veths, the bridge, or a mesh iptables rule on the host outlive the demo.
fn assert_no_network_leftovers(stdout: &str) {
    assert!(
        stdout.contains("interception mode"),
        "as root the demo intercepts"
    );
    let lines = |program: &str, args: &[&str]| -> String {
        let out = Command::new(program).args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let ours: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.split("(namespace ").nth(1)?.strip_suffix(')'))
        .collect();
    assert_eq!(ours.len(), 3, "api v1, api v2 and web each had a namespace");
    let namespaces = lines("ip", &["netns", "list"]);
    let names: Vec<&str> = namespaces
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for ns in &ours {
        assert!(!names.contains(ns), "namespace {ns} left: {namespaces}");
    }
    // The shared bridge goes with the last workload (unless another test's still runs).
    if !namespaces.contains("mesh-run-") {
        let links = lines("ip", &["-o", "link", "show"]);
        assert!(!links.contains("mesh-r"), "links left: {links}");
    }
    let rules = lines("iptables-save", &["-t", "nat"]);
    assert!(!rules.contains("MESH_"), "host rules left: {rules}");
}

/// The demo prints its data dir; None if it did not (then only the exit status is checked).
fn out_pid_dir(stdout: &str) -> Option<String> {
    stdout
        .lines()
        .find_map(|l| l.strip_prefix("demo data dir: "))
        .map(str::to_string)
}
