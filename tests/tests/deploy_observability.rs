//! Checks the Prometheus and Grafana parts of deploy/observability with promtool: alert rules and their unit tests, scrape configs, dashboard panels and queries.

// Each deploy_* test file uses part of the shared helpers.
#[allow(dead_code)]
mod deploy_support;

use std::collections::BTreeSet;
use std::process::Command;

use deploy_support::contract::{assert_known_metrics, mesh_metrics_in};
use deploy_support::{port, read, repo_root, require_tool, run_ok, seq_at, str_at, yaml_doc};
use serde_norway::Value;

const OBS: &str = "deploy/observability";
const RULE_FILES: &[&str] = &["prometheus/rules/slo.yml", "prometheus/rules/alerts.yml"];
const RULE_TESTS: &[&str] = &[
    "prometheus/tests/slo_test.yml",
    "prometheus/tests/alerts_test.yml",
];

/// The alerts issue #8 asks for, by the condition each one covers.
const REQUIRED_ALERTS: &[(&str, &str)] = &[
    (
        "MeshErrorBudgetBurnFast",
        "SLO burn rate, fast window (1h/5m)",
    ),
    (
        "MeshErrorBudgetBurnSlow",
        "SLO burn rate, slow window (6h/30m)",
    ),
    ("MeshCACertExpiringSoon", "certificate expiry < 48 h"),
    (
        "MeshWorkloadCertRenewalFailing",
        "workload certificate not renewed",
    ),
    ("MeshProxyConfigRejected", "config sync: NACKs"),
    ("MeshProxyConfigStuck", "config sync failure"),
    ("MeshProxyDisconnected", "config sync: stream down"),
    (
        "MeshConfigRejectedByProxies",
        "config sync: NACKs at the control plane",
    ),
    ("MeshBackendHealthLow", "backend health ratio < 90 %"),
    ("MeshTLSHandshakeFailures", "TLS handshake failures"),
    ("MeshControlPlaneDown", "control plane down"),
    ("MeshControlPlaneAbsent", "control plane missing"),
];

/// Dashboards and the panels each must have (issue #8).
const REQUIRED_PANELS: &[(&str, &[&str])] = &[
    (
        "mesh-executive.json",
        &["Success rate", "p95 latency", "Requests per second"],
    ),
    (
        "mesh-oncall.json",
        &[
            "Error rate",
            "p99 latency",
            "Active connections",
            "Backend health",
            "TLS handshake failures",
        ],
    ),
    (
        "mesh-debug.json",
        &[
            "Requests per backend",
            "Latency per backend (p50, p99)",
            "Outlier ejections",
            "Retries",
            "Config versions",
        ],
    ),
];

fn obs(rel: &str) -> String {
    format!("{OBS}/{rel}")
}

fn promtool() -> Command {
    let mut cmd = Command::new(require_tool("promtool"));
    cmd.current_dir(repo_root());
    cmd
}

/// Every rule of the rule files: (file, rule mapping).
fn rules() -> Vec<(String, Value)> {
    RULE_FILES
        .iter()
        .flat_map(|f| {
            let doc = yaml_doc(&obs(f));
            seq_at(&doc, "groups")
                .iter()
                .flat_map(|g| seq_at(g, "rules").to_vec())
                .map(|r| (f.to_string(), r))
                .collect::<Vec<_>>()
        })
        .collect()
}

/// Names of the recording rules (`mesh:...`).
fn recorded() -> BTreeSet<String> {
    rules()
        .iter()
        .filter_map(|(_, r)| r.get("record").and_then(Value::as_str).map(str::to_string))
        .collect()
}

// === Alert rules ===

#[test]
fn promtool_check_rules_passes() {
    let files: Vec<String> = RULE_FILES.iter().map(|f| obs(f)).collect();
    let out = run_ok(promtool().arg("check").arg("rules").args(&files));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("SUCCESS").count(), files.len(), "{text}");
}

#[test]
fn promtool_rule_unit_tests_pass() {
    let files: Vec<String> = RULE_TESTS.iter().map(|f| obs(f)).collect();
    run_ok(promtool().arg("test").arg("rules").args(&files));
}

#[test]
fn alert_rules_cover_the_required_conditions_and_use_real_metrics() {
    let rules = rules();
    let recorded = recorded();
    let alerts: BTreeSet<&str> = rules
        .iter()
        .filter_map(|(_, r)| r.get("alert").and_then(Value::as_str))
        .collect();
    for (name, what) in REQUIRED_ALERTS {
        assert!(alerts.contains(name), "missing alert {name} ({what})");
    }
    for (file, rule) in &rules {
        let name = rule
            .get("alert")
            .or_else(|| rule.get("record"))
            .and_then(Value::as_str)
            .unwrap_or("?");
        let ctx = format!("{file}: {name}");
        assert_known_metrics(&ctx, str_at(rule, "expr", &ctx), &recorded);
        if rule.get("alert").is_some() {
            let severity = rule["labels"]["severity"].as_str();
            assert!(
                matches!(severity, Some("critical" | "warning")),
                "{ctx}: severity critical|warning, got {severity:?}"
            );
            for key in ["summary", "description"] {
                assert!(
                    rule["annotations"][key]
                        .as_str()
                        .is_some_and(|s| !s.is_empty()),
                    "{ctx}: annotation {key}"
                );
            }
        }
    }
}

// === Scrape configs ===

#[test]
fn promtool_check_config_passes_on_the_local_scrape_config() {
    run_ok(promtool().args(["check", "config", &obs("prometheus/prometheus-local.yml")]));
}

#[test]
fn promtool_check_config_passes_on_the_kubernetes_scrape_config() {
    let file = obs("prometheus/prometheus.yml");
    let out = promtool()
        .args(["check", "config", &file])
        .output()
        .expect("run promtool");
    if out.status.success() {
        return;
    }
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Debian's prometheus package is built without Kubernetes service discovery, so its
    // promtool does not know `kubernetes_sd_configs`. Then check everything else (relabel
    // rules, rule files, globals) on a copy whose discovery blocks are static targets.
    assert!(
        text.contains("kubernetes_sd_configs not found"),
        "promtool check config {file} failed:\n{text}"
    );
    eprintln!(
        "this promtool has no Kubernetes service discovery; checking {file} with static targets instead"
    );
    let mut doc = yaml_doc(&file);
    let dir = repo_root().join(OBS).join("prometheus");
    if let Some(files) = doc.get_mut("rule_files").and_then(Value::as_sequence_mut) {
        for f in files.iter_mut() {
            let rel = f.as_str().expect("rule file path").to_string();
            *f = Value::String(dir.join(rel).display().to_string());
        }
    }
    let jobs = doc
        .get_mut("scrape_configs")
        .and_then(Value::as_sequence_mut)
        .expect("scrape_configs");
    for job in jobs.iter_mut() {
        let job = job.as_mapping_mut().expect("scrape config mapping");
        if job.remove("kubernetes_sd_configs").is_some() {
            let statics: Value =
                serde_norway::from_str("[{targets: ['127.0.0.1:9']}]").expect("static config");
            job.insert(Value::String("static_configs".into()), statics);
        }
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = tmp.path().join("prometheus.yml");
    std::fs::write(&copy, serde_norway::to_string(&doc).expect("serialize")).expect("write copy");
    run_ok(promtool().arg("check").arg("config").arg(&copy));
}

/// The `keep` regex on the container port of a scrape job.
fn kept_port(job: &Value) -> Option<u16> {
    seq_at(job, "relabel_configs").iter().find_map(|r| {
        let on_port = seq_at(r, "source_labels")
            .iter()
            .any(|l| l.as_str() == Some("__meta_kubernetes_pod_container_port_number"));
        (on_port && r["action"].as_str() == Some("keep"))
            .then(|| r["regex"].as_str().and_then(|p| p.parse().ok()))
            .flatten()
    })
}

fn job<'a>(doc: &'a Value, name: &str, file: &str) -> &'a Value {
    seq_at(doc, "scrape_configs")
        .iter()
        .find(|j| j["job_name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("{file}: no scrape job {name}"))
}

#[test]
fn scrape_configs_target_the_default_metrics_ports() {
    let cp = port("mesh-control-plane", "http");
    let sidecar = port("mesh-sidecar", "admin");

    let file = obs("prometheus/prometheus.yml");
    let k8s = yaml_doc(&file);
    for (name, expected) in [("mesh-control-plane", cp), ("mesh-sidecars", sidecar)] {
        let j = job(&k8s, name, &file);
        let roles: Vec<&str> = seq_at(j, "kubernetes_sd_configs")
            .iter()
            .filter_map(|sd| sd["role"].as_str())
            .collect();
        assert_eq!(roles, ["pod"], "{file}: {name} discovers pods");
        assert_eq!(
            kept_port(j),
            Some(expected),
            "{file}: {name} keeps port {expected}"
        );
    }

    let file = obs("prometheus/prometheus-local.yml");
    let local = yaml_doc(&file);
    for (name, expected) in [("mesh-control-plane", cp), ("mesh-sidecars", sidecar)] {
        let targets: Vec<String> = seq_at(job(&local, name, &file), "static_configs")
            .iter()
            .flat_map(|s| seq_at(s, "targets").to_vec())
            .filter_map(|t| t.as_str().map(str::to_string))
            .collect();
        assert!(
            targets.iter().any(|t| t.ends_with(&format!(":{expected}"))),
            "{file}: {name} scrapes port {expected}: {targets:?}"
        );
    }

    // Both configs load exactly the rule files the tests check.
    for file in [
        "prometheus/prometheus.yml",
        "prometheus/prometheus-local.yml",
    ] {
        let doc = yaml_doc(&obs(file));
        let listed: BTreeSet<String> = seq_at(&doc, "rule_files")
            .iter()
            .filter_map(|f| f.as_str().map(|f| format!("prometheus/{f}")))
            .collect();
        let expected: BTreeSet<String> = RULE_FILES.iter().map(|f| f.to_string()).collect();
        assert_eq!(listed, expected, "{file}: rule_files");
    }
}

// === Dashboards ===

/// Every panel of a dashboard, rows' nested panels included.
fn panels(dashboard: &serde_json::Value) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for p in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(p.clone());
        out.extend(p["panels"].as_array().into_iter().flatten().cloned());
    }
    out
}

fn dashboards() -> Vec<(String, serde_json::Value)> {
    REQUIRED_PANELS
        .iter()
        .map(|(file, _)| {
            let rel = obs(&format!("grafana/dashboards/{file}"));
            let json = serde_json::from_str(&read(&rel))
                .unwrap_or_else(|e| panic!("{rel}: invalid JSON: {e}"));
            (rel, json)
        })
        .collect()
}

/// (dashboard file, panel title, PromQL) of every query.
fn queries() -> Vec<(String, String, String)> {
    dashboards()
        .iter()
        .flat_map(|(file, d)| {
            panels(d).into_iter().flat_map(move |p| {
                let title = p["title"].as_str().unwrap_or("?").to_string();
                let file = file.clone();
                p["targets"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|t| t["expr"].as_str().map(str::to_string))
                    .map(move |e| (file.clone(), title.clone(), e))
            })
        })
        .collect()
}

#[test]
fn dashboards_are_valid_json_with_the_named_panels() {
    let mut uids = BTreeSet::new();
    for ((rel, dashboard), (_, required)) in dashboards().iter().zip(REQUIRED_PANELS) {
        let uid = dashboard["uid"]
            .as_str()
            .unwrap_or_else(|| panic!("{rel}: uid"));
        assert!(uids.insert(uid.to_string()), "{rel}: uid {uid} is unique");
        let variables: Vec<&str> = dashboard["templating"]["list"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|v| v["name"].as_str())
            .collect();
        assert!(
            variables.contains(&"datasource"),
            "{rel}: a datasource variable"
        );
        let all = panels(dashboard);
        for title in *required {
            let panel = all
                .iter()
                .find(|p| p["title"].as_str() == Some(title))
                .unwrap_or_else(|| panic!("{rel}: no panel `{title}`"));
            let exprs: Vec<&str> = panel["targets"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|t| t["expr"].as_str())
                .collect();
            assert!(
                exprs.iter().any(|e| !mesh_metrics_in(e).is_empty()),
                "{rel}: panel `{title}` queries a mesh metric"
            );
        }
    }
}

#[test]
fn dashboard_queries_are_valid_promql_on_real_metrics() {
    let recorded = recorded();
    let queries = queries();
    assert!(
        queries.len() >= 20,
        "dashboards have their queries: {}",
        queries.len()
    );
    // promtool parses PromQL in rule files: one recording rule per query, with Grafana's
    // variables replaced by what they expand to.
    let rules: Vec<serde_json::Value> = queries
        .iter()
        .enumerate()
        .map(|(i, (file, title, expr))| {
            assert_known_metrics(&format!("{file}: {title}"), expr, &recorded);
            let expr = expr
                .replace("$__rate_interval", "5m")
                .replace("$namespace", ".*")
                .replace("$service", ".*");
            serde_json::json!({ "record": format!("dashboard:query_{i}"), "expr": expr })
        })
        .collect();
    let doc = serde_json::json!({ "groups": [{ "name": "dashboards", "rules": rules }] });
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("dashboard-queries.yml");
    // JSON is YAML: promtool reads it as a rule file.
    std::fs::write(&path, doc.to_string()).expect("write rule file");
    run_ok(promtool().arg("check").arg("rules").arg(&path));
}

#[test]
fn dashboards_are_what_the_generator_produces() {
    // The JSON is generated: a hand edit (or a Grafana export) that generate.py does not
    // know would be lost at the next regeneration.
    let tmp = tempfile::tempdir().expect("tempdir");
    run_ok(
        Command::new(require_tool("python3"))
            .arg(repo_root().join(obs("grafana/generate.py")))
            .arg(tmp.path()),
    );
    for (file, _) in REQUIRED_PANELS {
        let committed = read(&obs(&format!("grafana/dashboards/{file}")));
        let generated =
            std::fs::read_to_string(tmp.path().join(file)).expect("generated dashboard");
        assert!(
            committed == generated,
            "grafana/dashboards/{file} differs from generate.py's output: run python3 deploy/observability/grafana/generate.py"
        );
    }
}
