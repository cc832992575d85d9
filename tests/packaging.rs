//! The packaging files agree with dockgate and with each other: the systemd unit passes
//! `systemd-analyze verify` and grants only `CAP_NET_BIND_SERVICE`; the Containerfile's image
//! runs the config it ships, as a non-root user, exposing the ports that config listens on; the
//! Kubernetes manifests probe the admin port and paths their ConfigMap's dockgate.toml serves,
//! mount the Secret where that config reads its certificate, and give a pod time to drain; and
//! every dockgate.toml they carry passes `dockgate check-config`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::{json, Value};

const UNIT: &str = "contrib/systemd/dockgate.service";
const CONTAINERFILE: &str = "Containerfile";
const IMAGE_CONFIG: &str = "contrib/container/dockgate.toml";
const KUBERNETES: &str = "deploy/kubernetes";

#[test]
fn the_systemd_unit_verifies_and_grants_only_the_bind_capability() {
    let unit = read(UNIT);
    let service = unit_section(&unit, "Service");
    let one = |key: &str| -> String {
        let values = &service
            .get(key)
            .unwrap_or_else(|| panic!("{UNIT}: no {key}="));
        assert_eq!(values.len(), 1, "{UNIT}: {key}= once");
        values[0].clone()
    };
    assert_eq!(
        one("Type"),
        "notify",
        "dockgate sends READY=1 and RELOADING=1"
    );
    assert_eq!(
        one("ExecStart"),
        "/usr/local/bin/dockgate serve --config /etc/dockgate/dockgate.toml"
    );
    assert_eq!(one("ExecReload"), "/bin/kill -HUP $MAINPID");
    assert_eq!(one("CapabilityBoundingSet"), "CAP_NET_BIND_SERVICE");
    assert_eq!(one("AmbientCapabilities"), "CAP_NET_BIND_SERVICE");
    assert_eq!(one("RestrictAddressFamilies"), "AF_INET AF_INET6 AF_UNIX");
    assert_eq!(one("LimitNOFILE"), "1048576");
    assert_eq!(one("StateDirectory"), "dockgate");
    assert_eq!(one("User"), "dockgate");
    for (key, value) in [
        ("DynamicUser", "yes"),
        ("NoNewPrivileges", "yes"),
        ("ProtectSystem", "strict"),
        ("ProtectHome", "yes"),
        ("PrivateTmp", "yes"),
        ("PrivateDevices", "yes"),
    ] {
        assert_eq!(one(key), value, "{UNIT}: {key}=");
    }
    // SIGTERM drains for `shutdown_grace`: systemd must wait longer before SIGKILL.
    let stop = seconds(&one("TimeoutStopSec"));
    let sample = sample_config(&unit);
    let grace = seconds(&effective(
        &check_config(&sample),
        "timeouts",
        "shutdown_grace",
    ));
    assert!(
        stop > grace,
        "TimeoutStopSec={stop}s must exceed shutdown_grace={grace}s"
    );

    let Some(analyze) = which("systemd-analyze") else {
        println!("note: systemd-analyze is not installed; `verify` of {UNIT} skipped");
        return;
    };
    // verify wants the ExecStart binary to exist: the one this test run built.
    let tmp = tempfile::tempdir().expect("tempdir");
    let copy = tmp.path().join("dockgate.service");
    std::fs::write(
        &copy,
        unit.replace("/usr/local/bin/dockgate", env!("CARGO_BIN_EXE_dockgate")),
    )
    .expect("write the unit's copy");
    let verified = Command::new(analyze)
        .arg("verify")
        .arg(&copy)
        .output()
        .expect("run systemd-analyze verify");
    let said = text(&verified);
    assert!(verified.status.success(), "systemd-analyze verify:\n{said}");
    let about_unit: Vec<&str> = said
        .lines()
        .filter(|l| l.contains("dockgate.service"))
        .collect();
    assert!(
        about_unit.is_empty(),
        "systemd-analyze verify warns:\n{said}"
    );
}

#[test]
fn the_container_image_runs_the_config_it_ships_as_a_user_on_the_ports_it_exposes() {
    let file = read(CONTAINERFILE);
    let instructions = containerfile(&file);
    let of = |keyword: &str| -> Vec<String> {
        instructions
            .iter()
            .filter(|(k, _)| k == keyword)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let from = of("FROM");
    assert_eq!(from.len(), 2, "a build stage and a runtime stage: {from:?}");
    assert!(
        from[0].starts_with("docker.io/library/rust:1-bookworm AS "),
        "{}",
        from[0]
    );
    assert_eq!(from[1], "docker.io/library/debian:bookworm-slim");
    assert!(
        of("RUN")
            .iter()
            .any(|r| r.contains("cargo build --release --locked")),
        "a release build"
    );
    let user = of("USER").last().cloned().expect("a USER");
    assert!(
        !user.starts_with("root") && !user.starts_with("0"),
        "USER {user}"
    );

    let entrypoint: Vec<String> =
        serde_json::from_str(&of("ENTRYPOINT").last().cloned().expect("an ENTRYPOINT"))
            .expect("ENTRYPOINT in exec form");
    assert_eq!(
        entrypoint,
        [
            "/usr/local/bin/dockgate",
            "serve",
            "--config",
            "/etc/dockgate/dockgate.toml"
        ]
    );
    let shipped = format!("{IMAGE_CONFIG} {}", entrypoint[3]);
    assert!(
        of("COPY").contains(&shipped),
        "COPY {shipped}: the image carries the config its ENTRYPOINT reads"
    );
    let ignore = read(".dockerignore");
    for source in ["Cargo.toml", "Cargo.lock", "src/", "contrib/container/"] {
        assert!(
            ignore.lines().any(|l| l == format!("!{source}")),
            ".dockerignore lets {source} into the build context"
        );
    }

    // The config it ships checks, and the image exposes its ports and keeps its certificates.
    let config = check_config(&read(IMAGE_CONFIG));
    let exposed: Vec<String> = of("EXPOSE")
        .iter()
        .flat_map(|e| e.split_whitespace().map(str::to_string).collect::<Vec<_>>())
        .collect();
    let listen = effective(&config, "", "listen");
    let admin = effective(&config, "admin", "listen");
    for addr in [first_in_list(&listen), admin.clone()] {
        assert!(
            addr.starts_with("0.0.0.0:"),
            "{addr}: reachable from outside the container"
        );
        let port = addr.rsplit(':').next().unwrap_or_default().to_string();
        assert!(
            exposed.contains(&port),
            "EXPOSE {port} ({addr}): {exposed:?}"
        );
    }
    assert_eq!(
        of("VOLUME"),
        [effective(&config, "tls", "dir")],
        "the minted certificates are a volume"
    );
}

#[test]
fn the_kubernetes_manifests_probe_what_their_config_serves() {
    let docs = kubernetes_documents();
    let kinds: Vec<&str> = docs.values().filter_map(|d| d["kind"].as_str()).collect();
    for kind in [
        "ConfigMap",
        "Deployment",
        "Service",
        "Secret",
        "PodDisruptionBudget",
        "Kustomization",
    ] {
        assert!(kinds.contains(&kind), "a {kind} in {KUBERNETES}: {kinds:?}");
    }
    let of_kind = |kind: &str| -> &Value {
        docs.values()
            .find(|d| d["kind"] == kind)
            .unwrap_or_else(|| panic!("a {kind}"))
    };
    let (configmap, deployment, service, secret, pdb) = (
        of_kind("ConfigMap"),
        of_kind("Deployment"),
        of_kind("Service"),
        of_kind("Secret"),
        of_kind("PodDisruptionBudget"),
    );
    for doc in [configmap, deployment, service, secret, pdb] {
        assert_eq!(doc["metadata"]["namespace"], "dockgate", "{}", doc["kind"]);
    }

    // The kustomization applies everything but the Secret template.
    let mut resources: Vec<&str> = of_kind("Kustomization")["resources"]
        .as_array()
        .expect("resources")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    resources.sort();
    assert_eq!(
        resources,
        [
            "configmap.yaml",
            "deployment.yaml",
            "pdb.yaml",
            "service.yaml"
        ]
    );

    let spec = &deployment["spec"];
    assert_eq!(spec["replicas"], 2);
    let pod = &spec["template"];
    let labels = &pod["metadata"]["labels"];
    for (who, selector) in [
        ("the Deployment", &spec["selector"]["matchLabels"]),
        ("the Service", &service["spec"]["selector"]),
        (
            "the PodDisruptionBudget",
            &pdb["spec"]["selector"]["matchLabels"],
        ),
    ] {
        let selector = selector.as_object().expect("a selector");
        assert!(!selector.is_empty(), "{who} selects something");
        for (key, value) in selector {
            assert_eq!(&labels[key], value, "{who} selects the pods by {key}");
        }
    }
    let min_available = pdb["spec"]["minAvailable"].as_i64().expect("minAvailable");
    assert!(
        (1..2).contains(&min_available),
        "a drain can take one of the two replicas, never both"
    );

    let containers = pod["spec"]["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let container = &containers[0];
    let port_of = |port: &Value| -> i64 {
        match port {
            Value::Number(n) => n.as_i64().expect("a port number"),
            Value::String(name) => container["ports"]
                .as_array()
                .expect("container ports")
                .iter()
                .find(|p| p["name"] == name.as_str())
                .and_then(|p| p["containerPort"].as_i64())
                .unwrap_or_else(|| panic!("no container port named {name}")),
            other => panic!("not a port: {other}"),
        }
    };

    // The config the ConfigMap carries, checked by dockgate with its certificate paths pointing
    // at real files.
    let toml_text = configmap["data"]["dockgate.toml"]
        .as_str()
        .expect("data.dockgate.toml");
    let raw: toml::Value = toml::from_str(toml_text).expect("the ConfigMap's dockgate.toml");
    let cert = raw["tls"]["cert"].as_str().expect("tls.cert").to_string();
    let key = raw["tls"]["key"].as_str().expect("tls.key").to_string();
    let tmp = tempfile::tempdir().expect("tempdir");
    let issued = issue_certificate(tmp.path());
    let checkable = toml_text
        .replace(&cert, &issued.join("server.crt").display().to_string())
        .replace(&key, &issued.join("server.key").display().to_string());
    let config = check_config(&checkable);
    let admin = effective(&config, "admin", "listen");
    let listen = first_in_list(&effective(&config, "", "listen"));
    let port = |addr: &str| -> i64 {
        addr.rsplit(':')
            .next()
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("{addr}"))
    };
    assert!(
        admin.starts_with("0.0.0.0:"),
        "the kubelet probes the pod's IP, so the admin listener cannot be loopback: {admin}"
    );

    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(
            port_of(&get["port"]),
            port(&admin),
            "{probe} asks the admin port"
        );
    }
    assert_eq!(
        port_of(&json!("https")),
        port(&listen),
        "the https port is dockgate's listen"
    );
    let service_ports = service["spec"]["ports"].as_array().expect("service ports");
    assert_eq!(
        service_ports.len(),
        1,
        "only the registry port is published"
    );
    assert_eq!(port_of(&service_ports[0]["targetPort"]), port(&listen));

    // SIGTERM comes after the preStop sleep, and dockgate then drains for shutdown_grace: the
    // grace period must cover both.
    let sleep: Vec<&str> = container["lifecycle"]["preStop"]["exec"]["command"]
        .as_array()
        .expect("a preStop command")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert_eq!(sleep.first(), Some(&"sleep"), "{sleep:?}");
    let slept: u64 = sleep[1].parse().expect("seconds to sleep");
    let grace = seconds(&effective(&config, "timeouts", "shutdown_grace"));
    let termination = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        termination > slept + grace,
        "terminationGracePeriodSeconds {termination} <= preStop {slept} + shutdown_grace {grace}"
    );

    // The config is mounted where the image's ENTRYPOINT reads it, and the certificate where
    // the config reads it.
    let volumes = pod["spec"]["volumes"].as_array().expect("volumes");
    let mounts = container["volumeMounts"].as_array().expect("volumeMounts");
    let volume = |name: &str| -> &Value {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .unwrap_or_else(|| panic!("a volume {name}"))
    };
    let mounted_from = |path: &str| -> (&Value, &Value) {
        let mount = mounts
            .iter()
            .find(|m| path.starts_with(m["mountPath"].as_str().unwrap_or("//")))
            .unwrap_or_else(|| panic!("nothing mounted at {path}"));
        (
            mount,
            volume(mount["name"].as_str().expect("a mount's volume")),
        )
    };
    let (mount, from) = mounted_from("/etc/dockgate/dockgate.toml");
    assert_eq!(from["configMap"]["name"], configmap["metadata"]["name"]);
    assert_eq!(mount["mountPath"], "/etc/dockgate/dockgate.toml");
    assert_eq!(mount["subPath"], "dockgate.toml");
    for file in [&cert, &key] {
        let (mount, from) = mounted_from(file);
        assert_eq!(
            from["secret"]["secretName"], secret["metadata"]["name"],
            "{file}"
        );
        let name = file
            .strip_prefix(mount["mountPath"].as_str().unwrap_or_default())
            .map(|rest| rest.trim_start_matches('/'))
            .unwrap_or_default();
        assert!(
            secret["stringData"].get(name).is_some(),
            "the Secret has the key {name} that {file} names"
        );
    }
    // The image's user, so runAsNonRoot holds and the Secret's files are readable.
    let user = containerfile(&read(CONTAINERFILE))
        .into_iter()
        .rev()
        .find(|(k, _)| k == "USER")
        .map(|(_, v)| v)
        .expect("USER");
    assert_eq!(
        pod["spec"]["securityContext"]["runAsUser"].to_string(),
        user.split(':').next().unwrap_or_default()
    );
    assert_eq!(pod["spec"]["securityContext"]["runAsNonRoot"], true);

    if let Some(kubectl) = which("kubectl") {
        let built = Command::new(kubectl)
            .args(["kustomize", KUBERNETES])
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .expect("run kubectl kustomize");
        assert!(
            built.status.success(),
            "kubectl kustomize:\n{}",
            text(&built)
        );
    } else {
        println!("note: kubectl is not installed; `kubectl kustomize {KUBERNETES}` skipped");
    }
}

// --- systemd ----------------------------------------------------------------------------------

/// `Key=value` lines of one `[Section]`, each key with every value it was given.
fn unit_section(unit: &str, name: &str) -> BTreeMap<String, Vec<String>> {
    let mut section = BTreeMap::<String, Vec<String>>::new();
    let mut inside = false;
    for line in unit.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == format!("[{name}]");
        } else if inside && !line.is_empty() && !line.starts_with('#') {
            let (key, value) = line.split_once('=').unwrap_or_else(|| panic!("{line:?}"));
            section
                .entry(key.to_string())
                .or_default()
                .push(value.to_string());
        }
    }
    section
}

/// The sample dockgate.toml in the unit's opening comment, uncommented.
fn sample_config(unit: &str) -> String {
    let lines: Vec<&str> = unit
        .lines()
        .skip_while(|l| !l.contains("A minimal /etc/dockgate/dockgate.toml"))
        .skip(2)
        .take_while(|l| l.starts_with("#   "))
        .map(|l| &l[4..])
        .collect();
    assert!(lines.len() > 3, "{UNIT}: a sample config in the comment");
    lines.join("\n") + "\n"
}

/// `30s`, `2m`, `45` (systemd's seconds): whole seconds.
fn seconds(value: &str) -> u64 {
    let value = value.trim_matches('"');
    let (number, unit) = value.split_at(
        value
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(value.len()),
    );
    let n: u64 = number
        .parse()
        .unwrap_or_else(|_| panic!("a duration: {value:?}"));
    match unit {
        "" | "s" => n,
        "m" | "min" => n * 60,
        _ => panic!("a duration unit: {value:?}"),
    }
}

// --- the Containerfile ------------------------------------------------------------------------

/// Its instructions in order, `(KEYWORD, arguments)`, continuation lines joined.
fn containerfile(text: &str) -> Vec<(String, String)> {
    let mut joined = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if current.is_empty() && (trimmed.is_empty() || trimmed.starts_with('#')) {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part.trim());
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                joined.push(std::mem::take(&mut current));
            }
        }
    }
    joined
        .into_iter()
        .map(|line| {
            let (keyword, rest) = line.split_once(' ').unwrap_or((&line, ""));
            (keyword.to_uppercase(), rest.trim().to_string())
        })
        .collect()
}

// --- dockgate ---------------------------------------------------------------------------------

/// `dockgate check-config` on `text`; panics with its message unless it passes. Returns the
/// effective configuration it prints.
fn check_config(text: &str) -> String {
    let tmp = tempfile::tempdir().expect("tempdir");
    let file = tmp.path().join("dockgate.toml");
    std::fs::write(&file, text).expect("write the config");
    let out = Command::new(env!("CARGO_BIN_EXE_dockgate"))
        .arg("check-config")
        .arg("--config")
        .arg(&file)
        .output()
        .expect("run dockgate check-config");
    assert!(
        out.status.success(),
        "check-config refused:\n{text}\n---\n{}",
        self::text(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// `key` of `[table]` (or top level, for "") in check-config's effective configuration, as a
/// string.
fn effective(printed: &str, table: &str, key: &str) -> String {
    let parsed: toml::Value = toml::from_str(printed)
        .unwrap_or_else(|e| panic!("check-config printed TOML ({e}):\n{printed}"));
    let scope = if table.is_empty() {
        &parsed
    } else {
        &parsed[table]
    };
    match scope.get(key) {
        Some(toml::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => panic!("no {table}.{key} in:\n{printed}"),
    }
}

/// The first address of a printed `["a", "b"]` list.
fn first_in_list(list: &str) -> String {
    let parsed: toml::Value = toml::from_str(&format!("v = {list}")).expect("a TOML list");
    parsed["v"][0].as_str().expect("an address").to_string()
}

/// A CA and a certificate for registry.example.com from it, by `dockgate` itself.
fn issue_certificate(dir: &Path) -> PathBuf {
    let ca = dir.join("ca");
    let server = dir.join("server");
    for args in [
        vec!["generate-ca", "--out", ca.to_str().expect("a UTF-8 path")],
        vec![
            "issue-cert",
            "--ca",
            ca.to_str().expect("a UTF-8 path"),
            "--hostname",
            "registry.example.com",
            "--out",
            server.to_str().expect("a UTF-8 path"),
        ],
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_dockgate"))
            .args(&args)
            .output()
            .expect("run dockgate");
        assert!(out.status.success(), "dockgate {args:?}:\n{}", text(&out));
    }
    server
}

// --- YAML -------------------------------------------------------------------------------------

/// Each `deploy/kubernetes/*.yaml` as JSON, by file name. The files keep to a small block
/// subset of YAML (mappings, sequences, quoted and plain scalars, `|` literals, `{}`) that the
/// parser below reads; where PyYAML is installed, it must read them the same way.
fn kubernetes_documents() -> BTreeMap<String, Value> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(KUBERNETES);
    let mut docs = BTreeMap::new();
    for entry in std::fs::read_dir(&dir).expect("read deploy/kubernetes") {
        let path = entry.expect("a directory entry").path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).expect("read a manifest");
        let name = path
            .file_name()
            .expect("a file name")
            .to_string_lossy()
            .into_owned();
        let doc = yaml(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        if let Some(pyyaml) = pyyaml(&path) {
            assert_eq!(
                doc, pyyaml,
                "{name}: this test and PyYAML read it differently"
            );
        }
        docs.insert(name, doc);
    }
    if !python_has_yaml() {
        println!(
            "note: PyYAML is not installed; the manifests were read by this test's parser only"
        );
    }
    docs
}

fn python_has_yaml() -> bool {
    Command::new("python3")
        .args(["-c", "import yaml"])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The file as PyYAML's `safe_load` reads it, as JSON; `None` without PyYAML.
fn pyyaml(path: &Path) -> Option<Value> {
    if !python_has_yaml() {
        return None;
    }
    let out = Command::new("python3")
        .args([
            "-c",
            "import json, sys, yaml; print(json.dumps(yaml.safe_load(open(sys.argv[1]))))",
        ])
        .arg(path)
        .output()
        .expect("run python3");
    assert!(
        out.status.success(),
        "PyYAML on {}:\n{}",
        path.display(),
        text(&out)
    );
    Some(serde_json::from_slice(&out.stdout).expect("PyYAML's JSON"))
}

/// One YAML document of the block subset, as JSON.
fn yaml(text: &str) -> Result<Value, String> {
    let lines: Vec<String> = text.lines().map(str::to_string).collect();
    let mut parser = Yaml { lines, at: 0 };
    parser.skip_blank();
    let Some((indent, _)) = parser.peek() else {
        return Ok(Value::Null);
    };
    let value = parser.node(indent)?;
    parser.skip_blank();
    match parser.peek() {
        None => Ok(value),
        Some(_) => Err(format!("line {}: not part of the document", parser.at + 1)),
    }
}

struct Yaml {
    lines: Vec<String>,
    at: usize,
}

impl Yaml {
    /// The current line's indent and content, comments and blank lines skipped first.
    fn peek(&mut self) -> Option<(usize, String)> {
        self.skip_blank();
        let line = self.lines.get(self.at)?;
        let content = line.trim_start();
        Some((line.len() - content.len(), content.to_string()))
    }

    fn skip_blank(&mut self) {
        while self
            .lines
            .get(self.at)
            .is_some_and(|l| l.trim().is_empty() || l.trim_start().starts_with('#'))
        {
            self.at += 1;
        }
    }

    fn node(&mut self, indent: usize) -> Result<Value, String> {
        match self.peek() {
            Some((_, content)) if content == "-" || content.starts_with("- ") => {
                self.sequence(indent)
            }
            Some(_) => self.mapping(indent),
            None => Ok(Value::Null),
        }
    }

    fn sequence(&mut self, indent: usize) -> Result<Value, String> {
        let mut items = Vec::new();
        while let Some((at, content)) = self.peek() {
            if at != indent || !(content == "-" || content.starts_with("- ")) {
                break;
            }
            let rest = content[1..].trim_start();
            if rest.is_empty() {
                self.at += 1;
                let (inner, _) = self.peek().ok_or("an empty item")?;
                items.push(self.node(inner)?);
            } else if key_and_rest(rest).is_some() {
                // `- key: value` opens a mapping whose keys line up with `key`.
                let column = indent + (content.len() - rest.len());
                self.lines[self.at] = format!("{}{rest}", " ".repeat(column));
                items.push(self.mapping(column)?);
            } else {
                self.at += 1;
                items.push(scalar(rest)?);
            }
        }
        Ok(Value::Array(items))
    }

    fn mapping(&mut self, indent: usize) -> Result<Value, String> {
        let mut map = serde_json::Map::new();
        while let Some((at, content)) = self.peek() {
            if at < indent {
                break;
            }
            if at > indent {
                return Err(format!("line {}: unexpected indent", self.at + 1));
            }
            let line = self.at + 1;
            let (key, rest) =
                key_and_rest(&content).ok_or_else(|| format!("line {line}: not `key: value`"))?;
            self.at += 1;
            let value = match rest.as_str() {
                "" => match self.peek() {
                    Some((inner, _)) if inner > indent => self.node(inner)?,
                    Some((inner, c)) if inner == indent && c.starts_with("- ") => {
                        self.sequence(indent)?
                    }
                    _ => Value::Null,
                },
                "|" => Value::String(self.literal(indent)),
                _ => scalar(&rest).map_err(|e| format!("line {line}: {e}"))?,
            };
            if map.insert(key.clone(), value).is_some() {
                return Err(format!("line {line}: {key} twice"));
            }
        }
        Ok(Value::Object(map))
    }

    /// A `|` block: the lines indented deeper than its key, less their common indent, ending
    /// with exactly one newline.
    fn literal(&mut self, indent: usize) -> String {
        let mut block: Vec<&str> = Vec::new();
        let mut deeper = None;
        while let Some(line) = self.lines.get(self.at) {
            let content = line.trim_start();
            let at = line.len() - content.len();
            if !content.is_empty() && at <= indent {
                break;
            }
            if !content.is_empty() && deeper.is_none() {
                deeper = Some(at);
            }
            block.push(line);
            self.at += 1;
        }
        let cut = deeper.unwrap_or(0);
        let mut text: Vec<&str> = block.iter().map(|l| l.get(cut..).unwrap_or("")).collect();
        while text.last().is_some_and(|l| l.is_empty()) {
            text.pop();
        }
        text.join("\n") + "\n"
    }
}

/// `key: rest` or `key:`, the key plain or quoted.
fn key_and_rest(content: &str) -> Option<(String, String)> {
    let (key, rest) = if let Some(quoted) = content.strip_prefix('"') {
        let end = quoted.find('"')?;
        (
            quoted[..end].to_string(),
            quoted[end + 1..].strip_prefix(':')?,
        )
    } else {
        let end = content
            .find(": ")
            .or_else(|| content.ends_with(':').then(|| content.len() - 1))?;
        (content[..end].to_string(), &content[end + 1..])
    };
    Some((key, strip_comment(rest.trim()).to_string()))
}

fn strip_comment(value: &str) -> &str {
    if value.starts_with('"') || value.starts_with('\'') {
        return value;
    }
    match value.find(" #") {
        Some(at) => value[..at].trim_end(),
        None => value,
    }
}

fn scalar(value: &str) -> Result<Value, String> {
    let value = strip_comment(value);
    if let Some(inner) = value.strip_prefix('"') {
        let inner = inner.strip_suffix('"').ok_or("an unclosed quote")?;
        if inner.contains('\\') {
            return Err("escapes are outside the subset".into());
        }
        return Ok(Value::String(inner.to_string()));
    }
    if let Some(inner) = value.strip_prefix('\'') {
        let inner = inner.strip_suffix('\'').ok_or("an unclosed quote")?;
        return Ok(Value::String(inner.replace("''", "'")));
    }
    Ok(match value {
        "{}" => json!({}),
        "[]" => json!([]),
        "true" => json!(true),
        "false" => json!(false),
        "null" | "~" => Value::Null,
        v if v.starts_with(['[', '{', '&', '*', '!', '>', '|', '%', '@', '`']) => {
            return Err(format!("{v:?} is outside the subset"));
        }
        v if !v.is_empty()
            && v.trim_start_matches('-')
                .chars()
                .all(|c| c.is_ascii_digit()) =>
        {
            if v.len() > 1 && v.trim_start_matches('-').starts_with('0') {
                return Err(format!("{v:?}: YAML 1.1 reads a leading 0 as octal"));
            }
            json!(v.parse::<i64>().map_err(|e| e.to_string())?)
        }
        v => Value::String(v.to_string()),
    })
}

// --- helpers ----------------------------------------------------------------------------------

fn read(path: &str) -> String {
    let full = Path::new(env!("CARGO_MANIFEST_DIR")).join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("read {}: {e}", full.display()))
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
