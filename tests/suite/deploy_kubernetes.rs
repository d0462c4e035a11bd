//! `deploy/kubernetes/`: every manifest passes `kubernetes-validate --strict`
//! (the API schemas, unknown fields refused), the configurations its
//! ConfigMaps carry are accepted by the daemon's own loader and agree with
//! the mounts, args and probes of the workloads that use them, the pods are
//! locked down, and the probes get from the real server what kubelet needs.
//!
//! A virtualenv at `target/kubernetes-validate-venv` gets
//! `kubernetes-validate` (and with it PyYAML, which also reads the manifests
//! for the checks in Rust) from PyPI on first use. Without python3's venv or
//! PyPI the tests skip, saying why; with `TOKENBROKER_TEST_ALL=1` they fail.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use crate::common;
use crate::common::run;

use common::{Fixture, Server};
use serde_json::Value;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use tokenbroker::config::Config;

/// Pinned, so that the schemas (and the Kubernetes versions it carries) do
/// not change under the test.
const VALIDATOR_VERSION: &str = "1.37.0";
/// The oldest Kubernetes the manifests support (native sidecars:
/// `initContainers[].restartPolicy`, on by default since 1.29) and the
/// newest schema the validator carries.
const KUBERNETES_VERSIONS: [&str; 2] = ["1.29", "1.37"];
/// Prints every non-empty YAML document of the files named as JSON:
/// `[{"file": …, "doc": …}, …]`.
const DUMP_YAML: &str = r#"
import json, sys, yaml
out = []
for name in sys.argv[1:]:
    with open(name) as f:
        out.extend({"file": name, "doc": doc} for doc in yaml.safe_load_all(f) if doc)
print(json.dumps(out))
"#;

/// The virtualenv's `bin` directory.
static VENV: OnceLock<Result<PathBuf, String>> = OnceLock::new();

fn manifest_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Makes sure the virtualenv holds the pinned kubernetes-validate (blocking).
fn install() -> Result<PathBuf, String> {
    let venv = manifest_dir().join("target/kubernetes-validate-venv");
    let bin = venv.join("bin");
    let installed = || run(Command::new(bin.join("kubernetes-validate")).arg("--version"));
    if installed().as_deref() == Ok(VALIDATOR_VERSION) {
        return Ok(bin);
    }
    run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
        .map_err(|e| format!("creating the virtualenv {}: {e}", venv.display()))?;
    run(Command::new(bin.join("pip")).args([
        "install",
        "--quiet",
        "--disable-pip-version-check",
        &format!("kubernetes-validate=={VALIDATOR_VERSION}"),
    ]))
    .map_err(|e| format!("installing kubernetes-validate from PyPI: {e}"))?;
    match installed() {
        Ok(version) if version == VALIDATOR_VERSION => Ok(bin),
        other => Err(format!(
            "kubernetes-validate {VALIDATOR_VERSION} is still not there after pip install: {other:?}"
        )),
    }
}

/// The virtualenv's `bin`; installs it once per test binary. `None` (the
/// test skips, saying why) when python3 with venv or PyPI cannot be had
/// here; with `TOKENBROKER_TEST_ALL=1` that is a failure instead.
fn venv() -> Option<&'static Path> {
    match VENV.get_or_init(install) {
        Ok(bin) => Some(bin),
        Err(e) => {
            common::available(
                &format!("python3 with venv and PyPI, for kubernetes-validate ({e})"),
                false,
            );
            None
        }
    }
}

/// Every `*.yaml` and `*.yml` of deploy/kubernetes/, sorted: a new file is
/// covered without touching this test.
fn manifests() -> Vec<PathBuf> {
    let dir = manifest_dir().join("deploy/kubernetes");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| {
            p.extension()
                .is_some_and(|ext| ext == "yaml" || ext == "yml")
        })
        .collect();
    files.sort();
    files
}

/// One YAML document of a manifest.
#[derive(Debug)]
struct Doc {
    file: String,
    doc: Value,
}

impl Doc {
    fn kind(&self) -> &str {
        self.doc["kind"].as_str().unwrap_or_default()
    }

    fn name(&self) -> &str {
        self.doc["metadata"]["name"].as_str().unwrap_or_default()
    }
}

/// Every document of every manifest, read by PyYAML (as kubectl would:
/// YAML 1.1, so `0400` is octal).
fn documents(bin: &Path) -> Vec<Doc> {
    let json = run(Command::new(bin.join("python"))
        .arg("-c")
        .arg(DUMP_YAML)
        .args(manifests()))
    .unwrap();
    let all: Vec<Value> = serde_json::from_str(&json).unwrap();
    all.into_iter()
        .map(|mut entry| Doc {
            file: entry["file"].as_str().unwrap().to_owned(),
            doc: entry["doc"].take(),
        })
        .collect()
}

fn find<'a>(docs: &'a [Doc], kind: &str, name: &str) -> &'a Value {
    &docs
        .iter()
        .find(|d| d.kind() == kind && d.name() == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in deploy/kubernetes/"))
        .doc
}

/// The workloads' pod specs: (kind/name, spec).
fn pod_specs(docs: &[Doc]) -> Vec<(String, &Value)> {
    docs.iter()
        .filter(|d| matches!(d.kind(), "DaemonSet" | "Deployment" | "StatefulSet" | "Job"))
        .map(|d| {
            (
                format!("{}/{}", d.kind(), d.name()),
                &d.doc["spec"]["template"]["spec"],
            )
        })
        .collect()
}

fn list(value: &Value) -> &[Value] {
    value.as_array().map(Vec::as_slice).unwrap_or_default()
}

/// Containers and init containers of a pod spec.
fn all_containers(spec: &Value) -> impl Iterator<Item = &Value> {
    list(&spec["initContainers"])
        .iter()
        .chain(list(&spec["containers"]))
}

/// The container running `tokenbroker serve` in a pod spec, if any.
fn broker_container(spec: &Value) -> Option<&Value> {
    all_containers(spec).find(|c| list(&c["args"]).first() == Some(&Value::from("serve")))
}

/// The value following `flag` in a container's args.
fn arg_after<'a>(container: &'a Value, flag: &str) -> Option<&'a str> {
    let args = list(&container["args"]);
    let at = args.iter().position(|a| a == flag)?;
    args.get(at + 1)?.as_str()
}

/// The pod volume mounted at the directory `dir` in `container`.
fn volume_at<'a>(spec: &'a Value, container: &Value, dir: &Path) -> &'a Value {
    let mount = list(&container["volumeMounts"])
        .iter()
        .find(|m| m["mountPath"].as_str().map(Path::new) == Some(dir))
        .unwrap_or_else(|| panic!("nothing is mounted at {}", dir.display()));
    list(&spec["volumes"])
        .iter()
        .find(|v| v["name"] == mount["name"])
        .unwrap_or_else(|| panic!("no volume {}", mount["name"]))
}

/// The configuration a pod's broker container is started with: its
/// `--config` path and the text of the ConfigMap key mounted there.
fn broker_config<'a>(docs: &'a [Doc], spec: &Value) -> (PathBuf, &'a str) {
    let broker = broker_container(spec).unwrap();
    let path = PathBuf::from(arg_after(broker, "--config").expect("serve --config"));
    let volume = volume_at(spec, broker, path.parent().unwrap());
    let map = volume["configMap"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("{} is not a ConfigMap", path.display()));
    let key = path.file_name().unwrap().to_str().unwrap();
    let text = find(docs, "ConfigMap", map)["data"][key]
        .as_str()
        .unwrap_or_else(|| panic!("ConfigMap {map} has no key {key}"));
    (path, text)
}

#[test]
fn every_manifest_passes_kubernetes_validate_strict() {
    let Some(bin) = venv() else { return };
    let files = manifests();
    let docs = documents(bin);
    assert!(
        docs.len() >= 5,
        "only {} documents in deploy/kubernetes/",
        docs.len()
    );
    let mut command = Command::new(bin.join("kubernetes-validate"));
    command.arg("--strict");
    for version in KUBERNETES_VERSIONS {
        command.args(["-k", version]);
    }
    let out = command
        .args(&files)
        .stdin(Stdio::null())
        .output()
        .expect("run kubernetes-validate");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    eprintln!("{stdout}{stderr}");
    assert!(
        out.status.success(),
        "kubernetes-validate failed ({}):\n{stdout}{stderr}",
        out.status
    );
    // A kind it has no schema for is only a WARN with exit 0: refuse that too.
    for line in stdout.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            line.starts_with("INFO ") && line.contains(" passed for resource "),
            "kubernetes-validate: {line}"
        );
    }
    for doc in &docs {
        for version in KUBERNETES_VERSIONS {
            let line = format!(
                "INFO {} passed for resource {}/{} against version {version}",
                doc.file,
                doc.kind().to_lowercase(),
                doc.name()
            );
            assert!(
                stdout.lines().any(|l| l == line),
                "missing from kubernetes-validate's output: {line}\n{stdout}"
            );
        }
    }
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("INFO ")).count(),
        docs.len() * KUBERNETES_VERSIONS.len()
    );
}

#[test]
fn the_shipped_configurations_are_accepted_by_the_daemon() {
    let Some(bin) = venv() else { return };
    let docs = documents(bin);
    let specs = pod_specs(&docs);
    assert!(specs.len() >= 2, "{specs:?}");
    let mut checked = 0;
    for (workload, spec) in specs {
        let Some(broker) = broker_container(spec) else {
            continue;
        };
        assert_eq!(
            list(&broker["args"]),
            [
                "serve",
                "--config",
                "/etc/tokenbroker/tokenbroker.toml",
                "--log-format",
                "json"
            ],
            "{workload}"
        );
        let (path, text) = broker_config(&docs, spec);
        let config = Config::parse(text, &path)
            .unwrap_or_else(|e| panic!("{workload}: the daemon refuses its configuration: {e}"));
        let server = &config.server;
        // allow_remote is there for metrics_listen only: the token API stays
        // on the pod's loopback.
        assert!(server.listen.ip().is_loopback(), "{workload}");
        assert!(server.watch_config, "{workload}");
        // The credential comes from a Secret, mounted read-only, mode 0400.
        for file in [&config.app().certificate, &config.app().private_key] {
            let file = file.as_deref().expect("certificate and private_key");
            let volume = volume_at(spec, broker, file.parent().unwrap());
            assert!(volume["secret"]["secretName"].is_string(), "{workload}");
            assert_eq!(volume["secret"]["defaultMode"], 0o400, "{workload}");
        }
        // The probes reach metrics_listen (kubelet connects to the pod IP):
        // liveness /healthz, readiness (and startup) /readyz, with no Host
        // header, since that listener takes any Host.
        let metrics = server
            .metrics_listen
            .expect("metrics_listen for the probes");
        assert!(metrics.ip().is_unspecified(), "{workload}: {metrics}");
        let port = list(&broker["ports"])
            .iter()
            .find(|p| p["containerPort"] == metrics.port())
            .unwrap_or_else(|| panic!("{workload}: no containerPort {}", metrics.port()));
        for (probe, path, required) in [
            ("livenessProbe", "/healthz", true),
            ("readinessProbe", "/readyz", true),
            ("startupProbe", "/readyz", false),
        ] {
            let get = &broker[probe]["httpGet"];
            if !required && broker[probe].is_null() {
                continue;
            }
            assert!(get.is_object(), "{workload}: no {probe}");
            assert_eq!(get["path"], path, "{workload}: {probe}");
            assert!(
                get["port"] == port["name"] || get["port"] == metrics.port(),
                "{workload}: {probe} is not on metrics_listen"
            );
            assert!(
                !list(&get["httpHeaders"]).iter().any(|h| h["name"]
                    .as_str()
                    .is_some_and(|n| n.eq_ignore_ascii_case("host"))),
                "{workload}: {probe} sends a Host header; metrics_listen needs none"
            );
        }
        // The state file of a warm restart outlives the container, and
        // its key is a Secret like the credential.
        if let Some(state) = &config.cache.state_file {
            let volume = volume_at(spec, broker, state.parent().unwrap());
            assert!(
                volume["hostPath"].is_object()
                    || volume["emptyDir"].is_object() && volume["emptyDir"]["medium"].is_null(),
                "{workload}: the state file outlives the container"
            );
            let key = config.cache.state_key_file.as_deref().unwrap();
            let volume = volume_at(spec, broker, key.parent().unwrap());
            assert_eq!(volume["secret"]["defaultMode"], 0o400, "{workload}");
        }
        // Sockets live where the pod mounts a directory for them.
        if let Some(socket) = &server.unix_socket {
            let volume = volume_at(spec, broker, socket.parent().unwrap());
            assert_eq!(volume["hostPath"]["path"], "/run/tokenbroker", "{workload}");
        }
        if let Some(socket) = &server.admin_socket {
            let volume = volume_at(spec, broker, socket.parent().unwrap());
            assert!(volume["emptyDir"].is_object(), "{workload}: admin socket");
        }
        checked += 1;
    }
    assert_eq!(checked, 2, "the DaemonSet and the sidecar example");
}

#[test]
fn the_pods_are_locked_down() {
    let Some(bin) = venv() else { return };
    let docs = documents(bin);
    for (workload, spec) in pod_specs(&docs) {
        assert_eq!(spec["automountServiceAccountToken"], false, "{workload}");
        assert_eq!(spec["securityContext"]["runAsNonRoot"], true, "{workload}");
        assert_eq!(
            spec["securityContext"]["seccompProfile"]["type"], "RuntimeDefault",
            "{workload}"
        );
        for container in list(&spec["containers"])
            .iter()
            .chain(broker_container(spec))
        {
            let name = &container["name"];
            let security = &container["securityContext"];
            assert_eq!(security["runAsNonRoot"], true, "{workload} {name}");
            assert_eq!(
                security["readOnlyRootFilesystem"], true,
                "{workload} {name}"
            );
            assert_eq!(
                security["allowPrivilegeEscalation"], false,
                "{workload} {name}"
            );
            assert_eq!(
                list(&security["capabilities"]["drop"]),
                ["ALL"],
                "{workload} {name}"
            );
            assert!(
                security["capabilities"]["add"].is_null(),
                "{workload} {name}"
            );
            assert!(
                container["resources"]["requests"]["memory"].is_string()
                    && container["resources"]["limits"]["memory"].is_string(),
                "{workload} {name}: memory request and limit"
            );
        }
        // Every root init container drops everything and adds back only what
        // handing over a directory takes.
        for init in list(&spec["initContainers"]) {
            let security = &init["securityContext"];
            assert_eq!(security["allowPrivilegeEscalation"], false, "{workload}");
            assert_eq!(security["readOnlyRootFilesystem"], true, "{workload}");
            assert_eq!(list(&security["capabilities"]["drop"]), ["ALL"]);
            for cap in list(&security["capabilities"]["add"]) {
                assert!(cap == "CHOWN" || cap == "FOWNER", "{workload}: {cap}");
            }
        }
    }

    let daemonset = find(&docs, "DaemonSet", "tokenbroker");
    let spec = &daemonset["spec"]["template"]["spec"];
    let broker = broker_container(spec).unwrap();
    assert_eq!(broker["securityContext"]["runAsUser"], 10001);
    assert_eq!(broker["securityContext"]["runAsGroup"], 10001);
    assert_eq!(spec["securityContext"]["fsGroup"], 10001);
    assert_eq!(broker["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(broker["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(broker["resources"]["requests"]["cpu"], "50m");
    assert_eq!(broker["resources"]["requests"]["memory"], "64Mi");
    assert_eq!(broker["resources"]["limits"]["memory"], "256Mi");
    assert_eq!(
        daemonset["spec"]["updateStrategy"]["rollingUpdate"]["maxSurge"], 0,
        "two brokers on a node would fight over the socket"
    );
    let service_account = spec["serviceAccountName"].as_str().unwrap();
    assert_eq!(
        find(&docs, "ServiceAccount", service_account)["automountServiceAccountToken"],
        false
    );
    let socket_dir = list(&spec["volumes"])
        .iter()
        .find(|v| v["hostPath"].is_object())
        .expect("a hostPath volume for the socket directory");
    assert_eq!(socket_dir["hostPath"]["path"], "/run/tokenbroker");
    assert_eq!(socket_dir["hostPath"]["type"], "DirectoryOrCreate");
    // No token route on a port: the broker's only port is metrics_listen.
    assert_eq!(list(&broker["ports"]).len(), 1);
    // Every inbound connection refused (kubelet, on the node, passes).
    let policy = find(&docs, "NetworkPolicy", "tokenbroker");
    assert_eq!(
        policy["spec"]["podSelector"]["matchLabels"],
        daemonset["spec"]["selector"]["matchLabels"]
    );
    assert!(list(&policy["spec"]["policyTypes"]).contains(&Value::from("Ingress")));
    assert!(list(&policy["spec"]["ingress"]).is_empty());
    assert_eq!(
        find(&docs, "Secret", "tokenbroker-credential")["type"],
        "kubernetes.io/tls"
    );
}

#[test]
fn the_sidecar_example_points_the_sdk_at_its_broker() {
    let Some(bin) = venv() else { return };
    let docs = documents(bin);
    let deployment = find(&docs, "Deployment", "mail-sync");
    let spec = &deployment["spec"]["template"]["spec"];
    let broker = broker_container(spec).unwrap();
    // A native sidecar: started before the app, kept running.
    assert_eq!(broker["restartPolicy"], "Always");
    let (path, text) = broker_config(&docs, spec);
    let config = Config::parse(text, &path).unwrap();
    let app = list(&spec["containers"])
        .iter()
        .find(|c| c["name"] == "app")
        .unwrap();
    let env = |name: &str| {
        list(&app["env"])
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("the app has no {name}"))
    };
    assert_eq!(
        env("IDENTITY_ENDPOINT")["value"],
        format!("http://{}/msi/token", config.server.listen)
    );
    let header = &env("IDENTITY_HEADER")["valueFrom"]["secretKeyRef"];
    assert!(header["name"].is_string() && header["key"].is_string());
    // /msi/token without client_id needs the account's default tenant.
    let account = &config.accounts[0];
    assert!(account.default_tenant.is_some());
    // The app holds its account secret, not the app's key or configuration.
    assert!(list(&app["volumeMounts"]).is_empty());
}

/// The DaemonSet's configuration, on the real server (paths and ports made
/// local, the authority simulated): what kubelet's probes and a node's pods
/// get.
#[tokio::test]
async fn the_probes_get_what_kubelet_asks_for() {
    let docs = tokio::task::spawn_blocking(|| venv().map(documents))
        .await
        .unwrap();
    let Some(docs) = docs else { return };
    let spec = &find(&docs, "DaemonSet", "tokenbroker")["spec"]["template"]["spec"];
    let (_, text) = broker_config(&docs, spec);
    let shipped = Config::parse(text, Path::new("/etc/tokenbroker/tokenbroker.toml")).unwrap();
    let metrics_ip = shipped.server.metrics_listen.unwrap().ip();

    let f = Fixture::new("").await;
    f.sim.consent("contoso.onmicrosoft.com");
    let dir = f.dir.path();
    let mut table: toml::Table = toml::from_str(text).unwrap();
    let app = table["app"].as_table_mut().unwrap();
    app.insert("client_id".into(), common::CLIENT_ID.into());
    app.insert("authority_host".into(), f.sim.url().into());
    app.insert(
        "certificate".into(),
        dir.join("app.crt").to_str().unwrap().into(),
    );
    app.insert(
        "private_key".into(),
        dir.join("app.key").to_str().unwrap().into(),
    );
    let server = table["server"].as_table_mut().unwrap();
    server.insert("listen".into(), "127.0.0.1:0".into());
    server.insert(
        "metrics_listen".into(),
        std::net::SocketAddr::new(metrics_ip, 0).to_string().into(),
    );
    server.insert(
        "admin_socket".into(),
        dir.join("admin.sock").to_str().unwrap().into(),
    );
    // The state file and its key, in this test's directory.
    if let Some(cache) = table.get_mut("cache").and_then(|c| c.as_table_mut()) {
        let key = dir.join("state.key");
        std::fs::write(&key, "q6urq6urq6urq6urq6urq6urq6urq6urq6urq6urq6s=\n").unwrap();
        cache.insert("state_key_file".into(), key.to_str().unwrap().into());
        let state = dir.join("cache.sealed");
        cache.insert("state_file".into(), state.to_str().unwrap().into());
    }
    // This test's uid stands for the node pod running as the account's uid.
    let account = &mut table["accounts"].as_array_mut().unwrap()[0];
    account.as_table_mut().unwrap().insert(
        "unix_uids".into(),
        toml::Value::Array(vec![i64::from(common::own_uid()).into()]),
    );
    std::fs::write(&f.config_path, toml::to_string(&table).unwrap()).unwrap();

    let server = Server::start(&f, |_, _| {}).await;
    let port = server.metrics_addr.unwrap().port();
    let connect = || tokio::net::TcpStream::connect(("127.0.0.1", port));
    // kubelet and Prometheus name the pod IP and port as Host.
    let pod_ip = "10.1.2.3:9765";
    let probe = |target: &'static str, host: &'static str| async move {
        let stream = connect().await.unwrap();
        common::request(stream, "GET", target, &[("Host", host)]).await
    };
    // Liveness and readiness: 200 whatever the Host (metrics_listen skips
    // the allow-list) ...
    for target in ["/healthz", "/readyz"] {
        assert_eq!(probe(target, pod_ip).await.status, 200, "{target}");
        assert_eq!(probe(target, "localhost").await.status, 200, "{target}");
        // ... and with no Host header at all.
        let stream = connect().await.unwrap();
        let answer = raw_request(stream, &format!("GET {target} HTTP/1.1")).await;
        assert_eq!(answer.status, 200, "{target} without Host");
    }
    // Prometheus, scraping the pod IP.
    let scrape = probe("/metrics", pod_ip).await;
    assert_eq!(scrape.status, 200);
    assert!(scrape.body.contains("# TYPE "), "{}", scrape.body);
    // No token route there, whatever the Host: the pod-IP port hands out nothing.
    for host in [pod_ip, "localhost"] {
        assert_eq!(probe("/v1/token?tenant=contoso", host).await.status, 404);
        assert_eq!(
            probe(
                "/msi/token?api-version=2019-08-01&resource=https://graph.microsoft.com",
                host
            )
            .await
            .status,
            404
        );
        assert_eq!(probe("/", host).await.status, 404);
    }
    // The API listeners keep the Host allow-list (DNS-rebinding defence).
    assert_eq!(server.get("/readyz", &[("Host", pod_ip)]).await.status, 421);
    assert_eq!(server.get("/readyz", &[]).await.status, 200);
    assert_eq!(server.get_unix("/readyz", &[]).await.status, 200);
    // A pod on the node, as the account's uid, over the socket: a token, no secret.
    let answer = server.get_unix("/v1/token?tenant=contoso", &[]).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["token_type"], "Bearer");
    server.stop().await;
}

/// `request_line`, with no header but `Connection: close` (no Host).
async fn raw_request(mut stream: tokio::net::TcpStream, request_line: &str) -> common::HttpAnswer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let text = format!("{request_line}\r\nConnection: close\r\n\r\n");
    stream.write_all(text.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    common::parse_answer(&raw)
}
