//! Checks the trace collectors of deploy/observability: the otelcol pipelines, and rotel.sh against the real rotel-agent (flags, and a span received and printed).

// Each deploy_* test file uses part of the shared helpers.
#[allow(dead_code)]
mod deploy_support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use deploy_support::{repo_root, run_ok, seq_at, str_at, yaml_doc};
use serde_norway::Value;

const OBS: &str = "deploy/observability";

fn obs(rel: &str) -> String {
    format!("{OBS}/{rel}")
}

#[test]
fn otelcol_config_wires_otlp_in_to_debug_file_and_jaeger() {
    let file = obs("otelcol.yaml");
    let doc = yaml_doc(&file);
    let protocols = &doc["receivers"]["otlp"]["protocols"];
    // The OTLP standard ports: 4317 gRPC (what the mesh exports), 4318 HTTP.
    assert!(str_at(&protocols["grpc"], "endpoint", &file).ends_with(":4317"));
    assert!(str_at(&protocols["http"], "endpoint", &file).ends_with(":4318"));

    let pipeline = &doc["service"]["pipelines"]["traces"];
    for (section, key) in [
        ("receivers", "receivers"),
        ("processors", "processors"),
        ("exporters", "exporters"),
    ] {
        let refs = seq_at(pipeline, key);
        assert!(!refs.is_empty(), "{file}: traces pipeline has {key}");
        for r in refs {
            let name = r.as_str().expect("component name");
            assert!(
                doc[section].get(name).is_some(),
                "{file}: {key} `{name}` is defined"
            );
        }
    }
    let exporters: Vec<&str> = seq_at(pipeline, "exporters")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(
        exporters.contains(&"debug") && exporters.contains(&"file"),
        "{file}: debug and file exporters"
    );
    let jaeger = exporters
        .iter()
        .find(|e| e.starts_with("otlp"))
        .unwrap_or_else(|| panic!("{file}: an OTLP exporter (to Jaeger)"));
    assert!(
        str_at(&doc["exporters"][*jaeger], "endpoint", &file).contains("JAEGER"),
        "{file}: the Jaeger endpoint is configurable"
    );
    assert_eq!(
        doc["exporters"]["debug"]["verbosity"].as_str(),
        Some("detailed")
    );
}

// === rotel ===

/// `rotel.sh --print`: the command line it would run, split into words.
fn rotel_command_line(jaeger: Option<&str>) -> Vec<String> {
    let mut cmd = Command::new("bash");
    cmd.arg(repo_root().join(obs("rotel.sh"))).arg("--print");
    match jaeger {
        Some(endpoint) => cmd.env("JAEGER_OTLP_ENDPOINT", endpoint),
        None => cmd.env_remove("JAEGER_OTLP_ENDPOINT"),
    };
    let out = cmd.output().expect("run rotel.sh");
    assert_ne!(
        out.status.code(),
        Some(127),
        "rotel-agent is not installed: run deploy/scripts/setup.sh (it installs PyPI `rotel`)"
    );
    assert!(
        out.status.success(),
        "rotel.sh --print: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect()
}

#[test]
fn rotel_script_uses_flags_rotel_agent_accepts() {
    for jaeger in [None, Some("http://127.0.0.1:14317")] {
        let words = rotel_command_line(jaeger);
        let agent = &words[0];
        assert_eq!(words.get(1).map(String::as_str), Some("start"));
        let help = run_ok(Command::new(agent).args(["start", "--help"]));
        let help = String::from_utf8_lossy(&help.stdout);
        for flag in words.iter().filter(|w| w.starts_with("--")) {
            assert!(
                help.contains(&format!("{flag} ")),
                "`rotel-agent start` has no flag {flag} (used by rotel.sh)"
            );
        }
        for expected in [
            "--debug-log",
            "--debug-log-verbosity",
            "--otlp-grpc-endpoint",
        ] {
            assert!(
                words.iter().any(|w| w == expected),
                "rotel.sh passes {expected}"
            );
        }
        let exporter = words
            .iter()
            .position(|w| w == "--exporter")
            .map(|i| words[i + 1].as_str());
        let expected = if jaeger.is_some() {
            "otlp"
        } else {
            "blackhole"
        };
        assert_eq!(
            exporter,
            Some(expected),
            "exporter with JAEGER_OTLP_ENDPOINT={jaeger:?}"
        );
    }
}

/// Kills the collector when the test ends, even on failure.
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two distinct ports that were free a moment ago (rotel-agent cannot report a port-0 bind).
/// Both listeners are held until both ports are known, so the two cannot coincide.
fn two_free_ports() -> (u16, u16) {
    let bind = || TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    let (a, b) = (bind(), bind());
    let port = |l: &TcpListener| l.local_addr().expect("local addr").port();
    (port(&a), port(&b))
}

/// POSTs an OTLP/HTTP JSON body and returns the status line.
fn post_json(port: u16, path: &str, body: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    // Bounds a hang only: the collector answers at once.
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response.lines().next().unwrap_or_default().to_string())
}

#[test]
fn rotel_script_runs_a_collector_that_prints_received_spans() {
    rotel_command_line(None); // fails with the setup hint if rotel is missing
    let (grpc, http) = two_free_ports();
    let mut child = Command::new("bash")
        .arg(repo_root().join(obs("rotel.sh")))
        .env("OTLP_GRPC_ENDPOINT", format!("127.0.0.1:{grpc}"))
        .env("OTLP_HTTP_ENDPOINT", format!("127.0.0.1:{http}"))
        .env_remove("JAEGER_OTLP_ENDPOINT")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rotel.sh");
    let (tx, lines) = mpsc::channel::<String>();
    for pipe in [
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    ]
    .into_iter()
    .flatten()
    {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    let _collector = KillOnDrop(child);

    let trace_id = format!("{:032x}", rand::random::<u128>() | 1);
    let span_id = format!("{:016x}", rand::random::<u64>() | 1);
    let parent_id = format!("{:016x}", rand::random::<u64>() | 1);
    let body = serde_json::json!({ "resourceSpans": [{
        "resource": { "attributes": [{ "key": "service.name", "value": { "stringValue": "deploy-check" } }] },
        "scopeSpans": [{ "scope": { "name": "deploy-check" }, "spans": [{
            "traceId": trace_id, "spanId": span_id, "parentSpanId": parent_id,
            "name": "GET /", "kind": 2,
            "startTimeUnixNano": "1700000000000000000", "endTimeUnixNano": "1700000000100000000"
        }] }]
    }] })
    .to_string();

    // Bounded wait for the listener: 100 tries, 100 ms apart.
    let mut status = None;
    for _ in 0..100 {
        if let Ok(line) = post_json(http, "/v1/traces", &body) {
            status = Some(line);
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = status.expect("rotel-agent listens on its OTLP/HTTP port within 10 s");
    assert!(
        status.contains(" 200"),
        "OTLP/HTTP export accepted: {status}"
    );

    // The debug log prints the span after the batch timeout (200 ms by default).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut seen = Vec::new();
    let (mut trace, mut parent, mut resource) = (false, false, false);
    while !(trace && parent && resource) {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = lines.recv_timeout(left) else {
            panic!(
                "rotel-agent did not print the span within 20 s; output:\n{}",
                seen.join("\n")
            );
        };
        trace |= line.contains("Trace ID") && line.contains(&trace_id);
        parent |= line.contains("Parent ID") && line.contains(&parent_id);
        resource |= line.contains("service.name") && line.contains("deploy-check");
        seen.push(line);
    }
}

#[test]
fn compose_stack_mounts_configs_that_exist() {
    let file = obs("compose.yaml");
    let doc = yaml_doc(&file);
    let services = doc["services"].as_mapping().expect("compose services");
    for name in ["otelcol", "jaeger", "prometheus", "grafana"] {
        assert!(services.contains_key(name), "{file}: service {name}");
    }
    let mut mounts = 0;
    for (name, service) in services {
        for volume in seq_at(service, "volumes").iter().filter_map(Value::as_str) {
            let source = volume.split(':').next().unwrap_or_default();
            if let Some(rel) = source.strip_prefix("./") {
                let path = repo_root().join(OBS).join(rel);
                assert!(
                    path.exists(),
                    "{file}: {name:?} mounts {source}, which does not exist"
                );
                mounts += 1;
            }
        }
    }
    // Collector config, scrape config, rules, Grafana provisioning and dashboards.
    assert_eq!(mounts, 5, "{file}: config mounts");
}
