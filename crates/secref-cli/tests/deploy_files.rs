//! The examples in `deploy/` are not run here; this checks that they parse,
//! have the structure the README promises (two replicas, Redis, probes on
//! `/readyz` and `/healthz`, a Secret for the token, non-root, read-only
//! root filesystem) and agree with `deploy/secref.toml` (port, TLS, Redis).

use std::path::PathBuf;

use yaml_rust2::{Yaml, YamlLoader};

fn deploy(name: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn yaml(name: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&deploy(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The YAML merge key (`<<: *anchor`), which yaml-rust2 leaves as a key:
/// the mapping with the merged keys under its own.
fn merged(node: &Yaml) -> Yaml {
    let Yaml::Hash(h) = node else {
        return node.clone();
    };
    let mut out = match h.get(&Yaml::String("<<".into())) {
        Some(Yaml::Hash(base)) => base.clone(),
        _ => Default::default(),
    };
    for (k, v) in h {
        if k.as_str() != Some("<<") {
            out.insert(k.clone(), v.clone());
        }
    }
    Yaml::Hash(out)
}

fn strs(node: &Yaml) -> Vec<String> {
    node.as_vec()
        .map(|v| {
            v.iter()
                .filter_map(|s| s.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// `deploy/secref.toml` and its `[server]` settings, loaded as the server
/// loads them.
fn server_config(text: &str) -> (toml::Table, secref_server::ServerConfig) {
    let table: toml::Table = toml::from_str(text).expect("valid TOML");
    secref::Config::from_toml_str(text)
        .unwrap_or_else(|e| panic!("the example config does not load: {e}"));
    secref::state::StateSettings::from_table(table["state"].as_table().expect("[state]"))
        .unwrap_or_else(|e| panic!("the example [state] does not load: {e}"));
    let server =
        secref_server::ServerConfig::from_table(table.get("server").and_then(|s| s.as_table()))
            .unwrap_or_else(|e| panic!("the example [server] does not load: {e}"));
    (table, server)
}

#[test]
fn the_example_config_loads_and_listens_with_tls() {
    let (table, server) = server_config(&deploy("secref.toml"));
    assert!(!server.bind.ip().is_loopback());
    let tls = server.tls.expect("a non-loopback example needs TLS");
    assert!(tls.cert.is_absolute() && tls.key.is_absolute());
    let state = table["state"].as_table().expect("[state]");
    assert_eq!(state["backend"].as_str(), Some("redis"));
    assert!(state["url"].as_str().unwrap().starts_with("redis://redis:"));
}

#[test]
fn compose_runs_two_replicas_and_redis() {
    let (_, server) = server_config(&deploy("secref.toml"));
    let port = server.bind.port().to_string();
    let docs = yaml("docker-compose.yml");
    assert_eq!(docs.len(), 1);
    let services = docs[0]["services"].as_hash().expect("services");
    let redis = &docs[0]["services"]["redis"];
    assert!(redis["image"].as_str().unwrap().starts_with("redis"));
    // Single-use markers live in Redis: it must persist them.
    let redis_cmd = strs(&redis["command"]).join(" ");
    assert!(
        redis_cmd.contains("--appendonly yes") && redis_cmd.contains("--appendfsync always"),
        "{redis_cmd}"
    );
    assert!(strs(&redis["volumes"])
        .iter()
        .any(|v| v.ends_with(":/data")));
    let secrefs: Vec<Yaml> = services
        .values()
        .map(merged)
        .filter(|s| s["image"].as_str().is_some_and(|i| i.starts_with("secref")))
        .collect();
    assert_eq!(secrefs.len(), 2, "two secref replicas");
    for s in &secrefs {
        let cmd = strs(&s["command"]);
        assert_eq!(cmd.first().map(String::as_str), Some("serve"));
        // The config file it names is the example, mounted read-only.
        let config = cmd.iter().skip_while(|a| *a != "--config").nth(1).unwrap();
        let volumes = strs(&s["volumes"]);
        assert!(
            volumes.iter().any(|v| v.starts_with("./secref.toml:")
                && v.contains(&format!(":{config}"))
                && v.ends_with(":ro")),
            "{volumes:?}"
        );
        assert!(volumes.iter().any(|v| v.contains(":/etc/secref/tls:ro")));
        // Token from the environment, never written in the file.
        let token = s["environment"]["SECREF_SERVE_TOKEN"].as_str().unwrap();
        assert!(token.starts_with("${SECREF_SERVE_TOKEN"), "{token}");
        let ports = strs(&s["ports"]);
        assert!(
            ports.iter().all(|p| p.ends_with(&format!(":{port}"))),
            "{ports:?}"
        );
        assert_eq!(strs(&s["depends_on"]), ["redis"]);
        assert_eq!(s["read_only"].as_bool(), Some(true));
        assert!(!s["user"].as_str().unwrap().starts_with("0"));
    }
}

fn of_kind<'a>(docs: &'a [Yaml], kind: &str) -> Vec<&'a Yaml> {
    docs.iter()
        .filter(|d| d["kind"].as_str() == Some(kind))
        .collect()
}

fn named<'a>(docs: &'a [Yaml], kind: &str, name: &str) -> Option<&'a Yaml> {
    of_kind(docs, kind)
        .into_iter()
        .find(|d| d["metadata"]["name"].as_str() == Some(name))
}

#[test]
fn kubernetes_deployment_service_secret_and_probes() {
    let docs = yaml("kubernetes.yaml");
    for d in &docs {
        assert!(d["apiVersion"].as_str().is_some() && d["kind"].as_str().is_some());
        assert!(d["metadata"]["name"].as_str().is_some());
    }
    let deployments = of_kind(&docs, "Deployment");
    assert_eq!(deployments.len(), 1);
    let dep = deployments[0];
    assert_eq!(dep["apiVersion"].as_str(), Some("apps/v1"));
    assert_eq!(dep["spec"]["replicas"].as_i64(), Some(2));
    let pod = &dep["spec"]["template"];
    let labels = pod["metadata"]["labels"].as_hash().unwrap();
    assert_eq!(
        dep["spec"]["selector"]["matchLabels"].as_hash(),
        Some(labels)
    );
    assert_eq!(
        pod["spec"]["securityContext"]["runAsNonRoot"].as_bool(),
        Some(true)
    );
    let containers = pod["spec"]["containers"].as_vec().unwrap();
    assert_eq!(containers.len(), 1);
    let c = &containers[0];

    // The config the pod runs is the ConfigMap's, and it agrees with the
    // example: same listen port, TLS (so HTTPS probes), Redis state.
    let args = strs(&c["args"]);
    assert_eq!(args.first().map(String::as_str), Some("serve"));
    let config_path = args.iter().skip_while(|a| *a != "--config").nth(1).unwrap();
    let (dir, file) = config_path.rsplit_once('/').unwrap();
    let mounts = c["volumeMounts"].as_vec().unwrap();
    let volumes = pod["spec"]["volumes"].as_vec().unwrap();
    let volume_of = |path: &str| {
        let m = mounts
            .iter()
            .find(|m| m["mountPath"].as_str() == Some(path))
            .unwrap_or_else(|| panic!("nothing mounted at {path}"));
        volumes
            .iter()
            .find(|v| v["name"] == m["name"])
            .unwrap_or_else(|| panic!("no volume {:?}", m["name"]))
    };
    let cm_name = volume_of(dir)["configMap"]["name"].as_str().unwrap();
    let cm = named(&docs, "ConfigMap", cm_name).expect("the ConfigMap exists");
    let (_, in_cluster) = server_config(cm["data"][file].as_str().unwrap());
    let (_, example) = server_config(&deploy("secref.toml"));
    assert_eq!(in_cluster.bind, example.bind);
    let tls = in_cluster.tls.expect("TLS in the cluster config");
    let tls_dir = tls.cert.parent().unwrap().to_str().unwrap();
    let tls_volume = volume_of(tls_dir);
    // The key is a credential: owner-only (secref refuses anything else).
    assert_eq!(tls_volume["secret"]["defaultMode"].as_i64(), Some(0o400));

    let port = in_cluster.bind.port() as i64;
    let ports = c["ports"].as_vec().unwrap();
    let port_named = |name: &Yaml| -> i64 {
        if let Some(n) = name.as_i64() {
            return n;
        }
        ports
            .iter()
            .find(|p| p["name"] == *name)
            .and_then(|p| p["containerPort"].as_i64())
            .unwrap_or_else(|| panic!("no container port {name:?}"))
    };
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(port_named(&get["port"]), port, "{probe}");
        assert_eq!(get["scheme"].as_str(), Some("HTTPS"), "{probe}");
    }
    let sc = &c["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true));
    assert_eq!(sc["allowPrivilegeEscalation"].as_bool(), Some(false));

    // Every Secret the container reads exists, with that key; the token is
    // one of them.
    let env = c["env"].as_vec().unwrap();
    let mut token_from_secret = false;
    for e in env {
        let r = &e["valueFrom"]["secretKeyRef"];
        if r.is_badvalue() {
            continue;
        }
        let secret = named(&docs, "Secret", r["name"].as_str().unwrap())
            .unwrap_or_else(|| panic!("Secret {:?} is not in the manifest", r["name"]));
        let key = r["key"].as_str().unwrap();
        assert!(!secret["stringData"][key].is_badvalue() || !secret["data"][key].is_badvalue());
        token_from_secret |= e["name"].as_str() == Some("SECREF_SERVE_TOKEN");
    }
    assert!(token_from_secret);

    // The Service selects the pods and forwards to the server's port.
    let services = of_kind(&docs, "Service");
    assert_eq!(services.len(), 1);
    let svc = services[0];
    assert_eq!(svc["spec"]["selector"].as_hash(), Some(labels));
    for p in svc["spec"]["ports"].as_vec().unwrap() {
        assert_eq!(port_named(&p["targetPort"]), port);
    }
}
