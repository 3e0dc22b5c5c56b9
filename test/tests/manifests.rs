//! Offline checks of the install material (no cluster here): RuntimeClass.yaml, the containerd
//! and k3s config snippets under deploy/, the pods kind.sh/k3d.sh apply, and the CI workflow
//! that runs them. Each must parse and name the handler, runtime type and guests that exist.

use std::path::PathBuf;

use serde_yaml::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn yaml_docs(rel: &str) -> Vec<Value> {
    use serde::Deserialize;
    serde_yaml::Deserializer::from_str(&read(rel))
        .map(|d| Value::deserialize(d).unwrap_or_else(|e| panic!("{rel}: {e}")))
        .collect()
}

fn toml_of(rel: &str) -> toml::Table {
    // k3s templates start with Go template directives; the rest is TOML.
    let text: String = read(rel).lines().filter(|l| !l.trim_start().starts_with("{{")).collect::<Vec<_>>().join("\n");
    text.parse::<toml::Table>().unwrap_or_else(|e| panic!("{rel}: {e}"))
}

fn runtime_type(t: &toml::Table, plugin: &str) -> Option<String> {
    t.get("plugins")?.get(plugin)?.get("containerd")?.get("runtimes")?.get("wasm")?.get("runtime_type")?.as_str().map(String::from)
}

#[test]
fn runtime_class_names_the_wasm_handler() {
    let docs = yaml_docs("RuntimeClass.yaml");
    assert_eq!(docs.len(), 1);
    let rc = &docs[0];
    assert_eq!(rc["apiVersion"].as_str(), Some("node.k8s.io/v1"));
    assert_eq!(rc["kind"].as_str(), Some("RuntimeClass"));
    assert_eq!(rc["metadata"]["name"].as_str(), Some("wasm"));
    assert_eq!(rc["handler"].as_str(), Some("wasm"));
}

#[test]
fn containerd_snippets_map_the_handler_to_the_shim() {
    let v2 = toml_of("deploy/containerd-1.x.toml");
    assert_eq!(v2["version"].as_integer(), Some(2));
    assert_eq!(runtime_type(&v2, "io.containerd.grpc.v1.cri").as_deref(), Some("io.containerd.wasm.v1"));
    let v3 = toml_of("deploy/containerd-2.x.toml");
    assert_eq!(v3["version"].as_integer(), Some(3));
    assert_eq!(runtime_type(&v3, "io.containerd.cri.v1.runtime").as_deref(), Some("io.containerd.wasm.v1"));
    let k3s = toml_of("deploy/k3s/config.toml.tmpl");
    assert_eq!(runtime_type(&k3s, "io.containerd.grpc.v1.cri").as_deref(), Some("io.containerd.wasm.v1"));
    let k3s3 = toml_of("deploy/k3s/config-v3.toml.tmpl");
    assert_eq!(runtime_type(&k3s3, "io.containerd.cri.v1.runtime").as_deref(), Some("io.containerd.wasm.v1"));
    assert!(read("deploy/k3s/config.toml.tmpl").starts_with("{{ template \"base\" . }}"));
}

#[test]
fn example_pods_use_the_runtime_class_and_existing_guests() {
    let docs = yaml_docs("test/k8s/wasm-pods.yaml");
    assert_eq!(docs.len(), 3);
    let mut wasm_commands = 0;
    for d in &docs {
        let kind = d["kind"].as_str().unwrap();
        let spec = match kind {
            "Pod" => &d["spec"],
            "Deployment" => {
                assert_eq!(d["apiVersion"].as_str(), Some("apps/v1"));
                assert_eq!(d["spec"]["selector"]["matchLabels"], d["spec"]["template"]["metadata"]["labels"]);
                &d["spec"]["template"]["spec"]
            }
            other => panic!("unexpected kind {other}"),
        };
        assert_eq!(spec["runtimeClassName"].as_str(), Some("wasm"), "{kind} {:?}", d["metadata"]["name"]);
        for c in spec["containers"].as_sequence().unwrap() {
            let image = c["image"].as_str().unwrap();
            if image.starts_with("docker.io/wasmtest/") {
                // Loaded from a tarball, never pulled.
                assert_eq!(c["imagePullPolicy"].as_str(), Some("Never"), "{image}");
                let arg0 = c["command"][0].as_str().unwrap();
                let name = arg0.trim_start_matches('/').trim_end_matches(".wasm");
                assert!(
                    wasm_shim_e2e::guests::RUST_GUESTS.contains(&name) || wasm_shim_e2e::guests::COMPONENT_GUESTS.contains(&name),
                    "{arg0} is not a guest of the test image"
                );
                wasm_commands += 1;
            }
        }
    }
    assert_eq!(wasm_commands, 3);
}

#[test]
fn ci_workflow_runs_the_cluster_scripts() {
    let docs = yaml_docs(".github/workflows/k8s.yml");
    let jobs = docs[0]["jobs"].as_mapping().unwrap();
    let runs = |job: &str| -> String {
        jobs.get(job).unwrap()["steps"].as_sequence().unwrap().iter().filter_map(|s| s["run"].as_str()).collect::<Vec<_>>().join("\n")
    };
    assert!(runs("kind").contains("test/k8s/kind.sh"));
    assert!(runs("k3d").contains("test/k8s/k3d.sh"));
    for script in ["test/k8s/kind.sh", "test/k8s/k3d.sh", "test/k8s/lib.sh"] {
        assert!(root().join(script).exists(), "{script}");
    }
}

#[test]
fn runtime_entries_pass_the_shims_pod_annotations() {
    for rel in ["deploy/containerd-1.x.toml", "deploy/containerd-2.x.toml", "deploy/k3s/config.toml.tmpl", "deploy/k3s/config-v3.toml.tmpl"] {
        let t = toml_of(rel);
        let plugins = t["plugins"].as_table().unwrap();
        let wasm = plugins.values().find_map(|p| p.get("containerd")?.get("runtimes")?.get("wasm")).unwrap_or_else(|| panic!("{rel}: no wasm runtime"));
        let keys: Vec<&str> = wasm["pod_annotations"].as_array().unwrap_or_else(|| panic!("{rel}: no pod_annotations")).iter().filter_map(|v| v.as_str()).collect();
        assert_eq!(keys, ["wasm.containerd.io/*"], "{rel}");
    }
}

/// The pod template of an example, with its annotations checked the way the shim reads them.
fn check_http_example(rel: &str, template: &Value) {
    let annotations = &template["metadata"]["annotations"];
    let mut map = serde_json::Map::new();
    for (k, v) in annotations.as_mapping().unwrap_or_else(|| panic!("{rel}: no annotations")) {
        let (k, v) = (k.as_str().unwrap(), v.as_str().unwrap_or_else(|| panic!("{rel}: {k:?} is not a string")));
        if k.starts_with("wasm.containerd.io/") {
            map.insert(k.to_string(), v.into());
        }
    }
    assert!(!map.is_empty(), "{rel}: no wasm.containerd.io annotations");
    let spec: oci_spec::runtime::Spec = serde_json::from_value(serde_json::json!({
        "ociVersion": "1.0.2", "root": {"path": "rootfs"},
        "process": {"args": ["/http.wasm"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "annotations": map,
    }))
    .unwrap();
    wasm_shim_oci::http_config(&spec, &[]).unwrap_or_else(|e| panic!("{rel}: {e}"));
    let pod = &template["spec"];
    assert_eq!(pod["runtimeClassName"].as_str(), Some("wasm"), "{rel}");
    let c = &pod["containers"][0];
    assert_eq!(c["image"].as_str(), Some(wasm_shim_e2e::images::GUESTS_IMAGE), "{rel}");
    assert_eq!(c["command"][0].as_str(), Some("/http.wasm"), "{rel}");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"].as_str(), Some("/"), "{rel}");
}

#[test]
fn http_examples_run_the_component_through_the_runtime_class() {
    let docs = yaml_docs("examples/http/deployment.yaml");
    assert_eq!(docs[0]["kind"].as_str(), Some("Deployment"));
    check_http_example("examples/http/deployment.yaml", &docs[0]["spec"]["template"]);
    assert_eq!(docs[1]["kind"].as_str(), Some("Service"));
    let ksvc = yaml_docs("examples/knative/service.yaml");
    assert_eq!(ksvc[0]["apiVersion"].as_str(), Some("serving.knative.dev/v1"));
    assert_eq!(ksvc[0]["kind"].as_str(), Some("Service"));
    check_http_example("examples/knative/service.yaml", &ksvc[0]["spec"]["template"]);
}
