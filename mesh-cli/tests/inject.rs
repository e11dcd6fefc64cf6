//! Injection: golden files per workload kind, idempotence, exact reversal, and the real binary.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use mesh_cli::inject::{self, InjectConfig};
use serde_norway::Value;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/inject")
}

/// Every input manifest (`*.yaml` that is not a golden `*.injected.yaml`).
fn inputs() -> Vec<(String, String)> {
    let mut v: Vec<_> = std::fs::read_dir(dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            p.extension().is_some_and(|e| e == "yaml")
                && !p.to_string_lossy().ends_with(".injected.yaml")
        })
        .map(|p| {
            (
                p.file_stem().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    assert!(
        v.len() >= 8,
        "expected one input per workload kind plus a mixed manifest"
    );
    v
}

/// A fixed version so the golden files do not change with the crate version.
fn cfg() -> InjectConfig {
    InjectConfig::for_version("0.0.0-test")
}

fn injected(input: &str) -> String {
    inject::inject(input, &cfg()).unwrap().to_yaml().unwrap()
}

fn docs(s: &str) -> Vec<Value> {
    inject::parse_documents(s).unwrap()
}

#[test]
fn golden_files_match_for_every_kind() {
    let update = std::env::var_os("MESH_UPDATE_GOLDEN").is_some();
    for (name, input) in inputs() {
        let out = injected(&input);
        let golden = dir().join(format!("{name}.injected.yaml"));
        if update {
            std::fs::write(&golden, &out).unwrap();
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (run with MESH_UPDATE_GOLDEN=1 to create it)",
                golden.display()
            )
        });
        assert_eq!(
            out,
            want,
            "{name}: output differs from {}",
            golden.display()
        );
    }
}

#[test]
fn every_workload_kind_gets_init_and_native_sidecar() {
    for (name, input) in inputs().into_iter().filter(|(n, _)| n != "mixed") {
        let doc = &docs(&injected(&input))[0];
        let path: &[&str] = match doc["kind"].as_str().unwrap() {
            "Pod" => &[],
            "CronJob" => &["spec", "jobTemplate", "spec", "template"],
            _ => &["spec", "template"],
        };
        let mut t = doc;
        for k in path {
            t = &t[*k];
        }
        let inits = t["spec"]["initContainers"].as_sequence().unwrap();
        assert_eq!(inits[0]["name"], "mesh-init", "{name}");
        assert_eq!(inits[0]["args"][0], "init", "{name}");
        let caps = &inits[0]["securityContext"]["capabilities"];
        assert_eq!(caps["add"], docs("[NET_ADMIN, NET_RAW]")[0], "{name}");
        assert_eq!(caps["drop"], docs("[ALL]")[0], "{name}");
        assert_eq!(inits[1]["name"], "mesh-proxy", "{name}");
        assert_eq!(inits[1]["restartPolicy"], "Always", "{name}");
        assert_eq!(inits[1]["securityContext"]["runAsUser"], 1337, "{name}");
        assert_eq!(
            inits[1]["startupProbe"]["httpGet"]["path"], "/ready",
            "{name}"
        );
        assert_eq!(
            t["metadata"]["annotations"]["mesh.io/injected"], "0.0.0-test",
            "{name}"
        );
        let env = inits[1]["env"].as_sequence().unwrap();
        let ns = env.iter().find(|e| e["name"] == "MESH_NAMESPACE").unwrap();
        assert_eq!(
            ns["valueFrom"]["fieldRef"]["fieldPath"], "metadata.namespace",
            "{name}"
        );
        let sa = env
            .iter()
            .find(|e| e["name"] == "MESH_SERVICE_ACCOUNT")
            .unwrap();
        assert_eq!(
            sa["valueFrom"]["fieldRef"]["fieldPath"], "spec.serviceAccountName",
            "{name}"
        );
        // Identity: the join token from the service account's Secret, the bundle from the
        // namespace's ConfigMap mounted read-only into the proxy only.
        let account = t["spec"]["serviceAccountName"]
            .as_str()
            .unwrap_or("default");
        let token = env.iter().find(|e| e["name"] == "MESH_JOIN_TOKEN").unwrap();
        let secret = &token["valueFrom"]["secretKeyRef"];
        assert_eq!(
            secret["name"],
            format!("mesh-join-{account}").as_str(),
            "{name}"
        );
        assert_eq!(secret["key"], "token", "{name}");
        let bundle = env.iter().find(|e| e["name"] == "MESH_CA_BUNDLE").unwrap();
        assert_eq!(bundle["value"], "/var/run/mesh/trust-bundle.pem", "{name}");
        assert_eq!(
            inits[1]["volumeMounts"][0]["name"], "mesh-trust-bundle",
            "{name}"
        );
        assert_eq!(inits[1]["volumeMounts"][0]["readOnly"], true, "{name}");
        let volumes = t["spec"]["volumes"].as_sequence().unwrap();
        let vol = volumes
            .iter()
            .find(|v| v["name"] == "mesh-trust-bundle")
            .unwrap();
        assert_eq!(vol["configMap"]["name"], "mesh-trust-bundle", "{name}");
        let control_plane = env
            .iter()
            .find(|e| e["name"] == "MESH_CONTROL_PLANE")
            .unwrap();
        assert!(
            control_plane["value"]
                .as_str()
                .unwrap()
                .starts_with("https://"),
            "{name}"
        );
    }
}

#[test]
fn annotations_reach_init_args_env_and_resources() {
    let find = |name: &str| inputs().into_iter().find(|(n, _)| n == name).unwrap().1;
    let sts =
        &docs(&injected(&find("statefulset")))[0]["spec"]["template"]["spec"]["initContainers"];
    assert_eq!(
        sts[0]["args"],
        docs("[init, --proxy-uid, '1337', --exclude-inbound-ports, '9187']")[0]
    );
    let env = sts[1]["env"].as_sequence().unwrap();
    assert!(
        env.iter()
            .any(|e| e["name"] == "MESH_OPAQUE_PORTS" && e["value"] == "5432")
    );
    assert!(
        env.iter()
            .any(|e| e["name"] == "MESH_SERVICE" && e["value"] == "db")
    );
    // The app's own init container still runs, after the proxy.
    assert_eq!(sts[2]["name"], "fix-perms");

    let ds =
        &docs(&injected(&find("daemonset")))[0]["spec"]["template"]["spec"]["initContainers"][0];
    assert_eq!(ds["args"][3], "--exclude-outbound-ports");
    assert_eq!(ds["args"][4], "9200,9300");

    let rs =
        &docs(&injected(&find("replicaset")))[0]["spec"]["template"]["spec"]["initContainers"][1];
    assert_eq!(rs["resources"]["requests"]["cpu"], "250m");
    assert_eq!(rs["resources"]["limits"]["memory"], "128Mi");

    // No `app` label: the service is the workload's name.
    let job = &docs(&injected(&find("job")))[0]["spec"]["template"]["spec"]["initContainers"][1]["env"]
        [0];
    assert_eq!(job["value"], "migrate");
}

#[test]
fn inject_twice_is_inject_once() {
    for (name, input) in inputs() {
        let once = injected(&input);
        assert_eq!(injected(&once), once, "{name}");
    }
}

#[test]
fn uninject_restores_the_original_objects() {
    for (name, input) in inputs() {
        let back = inject::uninject(&injected(&input))
            .unwrap()
            .to_yaml()
            .unwrap();
        assert_eq!(docs(&back), docs(&input), "{name}");
        // And uninject of something never injected changes nothing.
        assert_eq!(
            docs(&inject::uninject(&input).unwrap().to_yaml().unwrap()),
            docs(&input),
            "{name}"
        );
    }
}

#[test]
fn output_is_the_same_objects_apart_from_the_additions() {
    for (name, input) in inputs() {
        for (orig, out) in docs(&input).iter().zip(docs(&injected(&input)).iter()) {
            contained(orig, out, &mut vec![name.clone()]);
        }
    }
}

/// Every value of `orig` is in `out` unchanged; `initContainers` may gain our two at the front,
/// `volumes` the trust bundle at the end.
fn contained(orig: &Value, out: &Value, path: &mut Vec<String>) {
    match (orig, out) {
        (Value::Mapping(a), Value::Mapping(b)) => {
            for (k, v) in a {
                path.push(k.as_str().unwrap_or("?").to_string());
                let w = b
                    .get(k)
                    .unwrap_or_else(|| panic!("{} missing from the output", path.join(".")));
                contained(v, w, path);
                path.pop();
            }
            for k in b.keys().filter(|k| !a.contains_key(*k)) {
                let k = k.as_str().unwrap();
                assert!(
                    [
                        "initContainers",
                        "volumes",
                        "annotations",
                        "metadata",
                        "mesh.io/injected"
                    ]
                    .contains(&k),
                    "{}.{k} was added",
                    path.join(".")
                );
            }
        }
        (Value::Sequence(a), Value::Sequence(b))
            if path.last().is_some_and(|p| p == "initContainers") =>
        {
            assert_eq!(b[0]["name"], "mesh-init");
            assert_eq!(b[1]["name"], "mesh-proxy");
            assert_eq!(&b[2..], a.as_slice(), "{}", path.join("."));
        }
        (Value::Sequence(a), Value::Sequence(b)) if path.last().is_some_and(|p| p == "volumes") => {
            assert_eq!(b.last().unwrap()["name"], "mesh-trust-bundle");
            assert_eq!(&b[..b.len() - 1], a.as_slice(), "{}", path.join("."));
        }
        (Value::Sequence(a), Value::Sequence(b)) => {
            assert_eq!(a.len(), b.len(), "{}", path.join("."));
            for (i, (v, w)) in a.iter().zip(b).enumerate() {
                path.push(i.to_string());
                contained(v, w, path);
                path.pop();
            }
        }
        _ => assert_eq!(orig, out, "{}", path.join(".")),
    }
}

#[test]
fn skipped_workloads_are_unchanged_and_reported() {
    let (_, input) = inputs().into_iter().find(|(n, _)| n == "mixed").unwrap();
    let outcome = inject::inject(&input, &cfg()).unwrap();
    let (orig, out) = (docs(&input), &outcome.documents);
    assert_eq!(orig.len(), 5);
    for i in 0..4 {
        assert_eq!(orig[i], out[i], "document {i} must pass through unchanged");
    }
    assert_ne!(
        orig[4], out[4],
        "the Deployment inside the List is injected"
    );
    let notes = outcome.notes.join("\n");
    assert!(
        notes.contains("Deployment/legacy: unchanged (mesh.io/inject: disabled)"),
        "{notes}"
    );
    assert!(
        notes.contains("DaemonSet/node-exporter: unchanged (hostNetwork"),
        "{notes}"
    );
}

fn cli(args: &[&str], stdin: &str) -> (i32, String, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_mesh-cli"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8(out.stderr).unwrap(),
    )
}

#[test]
fn binary_injects_stdin_and_uninjects_back() {
    let (_, input) = inputs()
        .into_iter()
        .find(|(n, _)| n == "deployment")
        .unwrap();
    let (code, out, err) = cli(
        &["inject", "-f", "-", "--image", "registry.local/sidecar:dev"],
        &input,
    );
    assert_eq!(code, 0, "{err}");
    let doc = &docs(&out)[0]["spec"]["template"];
    assert_eq!(
        doc["spec"]["initContainers"][1]["image"],
        "registry.local/sidecar:dev"
    );
    assert_eq!(
        doc["metadata"]["annotations"]["mesh.io/injected"],
        env!("CARGO_PKG_VERSION")
    );
    let (code, back, err) = cli(&["uninject", "-f", "-"], &out);
    assert_eq!(code, 0, "{err}");
    assert_eq!(docs(&back), docs(&input));
}

#[test]
fn binary_rejects_bad_input_with_exit_2() {
    let (code, _, err) = cli(&["inject", "-f", "/nonexistent/app.yaml"], "");
    assert_eq!(code, 2);
    assert!(err.contains("cannot read /nonexistent/app.yaml"), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");

    let bad = "kind: Pod\nmetadata:\n  name: p\n  annotations:\n    mesh.io/exclude-inbound-ports: \"80,http\"\nspec: {}\n";
    let (code, out, err) = cli(&["inject", "-f", "-"], bad);
    assert_eq!(code, 2);
    assert!(out.is_empty(), "nothing is printed on error: {out}");
    assert!(
        err.contains("Pod/p: annotation mesh.io/exclude-inbound-ports: \"http\" is not a port"),
        "{err}"
    );

    let (code, _, err) = cli(&["inject", "-f", "-"], "kind: Pod\n  bad: [indent\n");
    assert_eq!(code, 2);
    assert!(err.contains("not valid YAML"), "{err}");
}
