//! The Kubernetes manifests (`deploy/kubernetes/`): valid against the API
//! schemas (kubernetes-validate, offline), shaped as the issue asks, and
//! their ConfigMap's configuration started with the real binary the way the
//! DaemonSet runs it (NODE_IP from the environment, keys and the audit
//! store where the volumes put them), reloading when its file changes as
//! the kubelet changes a mounted ConfigMap; the init container that seeds
//! the lists the console edits is run as the pod would run it.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::{self, await_metric, free_port, repo, Callgate, Ports};

fn manifests() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo().join("deploy/kubernetes"))
        .expect("deploy/kubernetes")
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn manifest(name: &str) -> String {
    std::fs::read_to_string(repo().join("deploy/kubernetes").join(name)).expect(name)
}

/// Strict: unknown fields are errors too (a misspelt key would otherwise
/// be dropped by the API server without a word).
#[test]
fn every_manifest_validates_against_the_kubernetes_schemas() {
    let files = manifests();
    assert!(files.len() >= 4, "{files:?}");
    let out = Command::new("kubernetes-validate")
        .arg("--strict")
        .args(&files)
        .output()
        .expect("kubernetes-validate (PyPI; test-calls/run-tests.sh installs it)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    for kind in [
        "configmap/",
        "daemonset/",
        "poddisruptionbudget/",
        "secret/",
    ] {
        assert!(
            said.contains(&format!("passed for resource {kind}")),
            "{kind}: {said}"
        );
    }
}

/// What the issue asks of the manifests, read from them.
#[test]
fn the_daemonset_is_host_network_with_node_ip_and_admin_on_loopback() {
    let ds = manifest("daemonset.yaml");
    for want in [
        "hostNetwork: true",
        "fieldRef: {fieldPath: status.hostIP}",
        "runAsNonRoot: true",
        "secretName: callgate-keys",
        "hostPath: {path: /var/lib/callgate",
        "httpGet: {host: 127.0.0.1, path: /readyz, port: 9060}",
    ] {
        assert!(ds.contains(want), "daemonset.yaml lacks {want:?}");
    }
    assert!(
        !ds.contains("subPath"),
        "a subPath mount is never updated by the kubelet"
    );
    let cfg = configmap_toml();
    for want in [
        "advertise = \"${NODE_IP}\"",
        "listen = \"127.0.0.1:9060\"",
        "token_file = \"/run/callgate/keys/admin.token\"",
        "path = \"/var/lib/callgate/audit.db\"",
        "watch_secs = ",
    ] {
        assert!(
            cfg.contains(want),
            "configmap's callgate.toml lacks {want:?}"
        );
    }
    assert!(manifest("pdb.yaml").contains("kind: PodDisruptionBudget"));
}

/// The `callgate.toml` block of the ConfigMap (a YAML literal block
/// indented by four spaces).
fn configmap_toml() -> String {
    let text = manifest("configmap.yaml");
    let mut lines = text.lines().skip_while(|l| l.trim() != "callgate.toml: |");
    lines.next().expect("callgate.toml block");
    lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.strip_prefix("    ").unwrap_or(l))
        .collect::<Vec<_>>()
        .join("\n")
}

/// A private file, as the init container leaves the keys.
fn owner_only(path: &Path, data: &[u8]) {
    std::fs::write(path, data).expect("write key");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
}

#[test]
fn the_configmaps_configuration_starts_on_the_node_address_and_reloads_on_change() {
    let root = tempfile::tempdir().expect("tempdir");
    let keys = root.path().join("run/callgate/keys");
    std::fs::create_dir_all(&keys).expect("keys");
    let tls = repo().join("sip-config/tls");
    std::fs::copy(tls.join("callgate-demo.crt"), keys.join("tls.crt")).expect("cert");
    owner_only(
        &keys.join("tls.key"),
        &std::fs::read(tls.join("callgate-demo.key")).expect("key"),
    );
    owner_only(&keys.join("admin.token"), common::ADMIN_TOKEN.as_bytes());
    let ports = Ports::new();
    let carrier_port = free_port();
    let text = configmap_toml()
        .replace("/run/callgate/keys", &keys.display().to_string())
        .replace(
            "/var/lib/callgate",
            &root.path().join("var/lib/callgate").display().to_string(),
        )
        .replace(":5060\"", &format!(":{}\"", ports.trunk))
        .replace(":5061\"", &format!(":{}\"", ports.trunk_tls))
        .replace(":5062\"", &format!(":{}\"", ports.pbx))
        .replace(":9060\"", &format!(":{}\"", ports.admin))
        .replace("198.51.100.0/24", "127.0.0.0/8")
        .replace("10.0.0.0/24", "127.0.0.0/8")
        .replace("198.51.100.20:5060", &format!("127.0.0.1:{carrier_port}"))
        .replace("watch_secs = 5", "watch_secs = 1");
    assert!(text.contains("${NODE_IP}"), "{text}");
    let cg = Callgate::start_with_env(ports, &text, &[("NODE_IP", Path::new("127.0.0.1"))]);
    assert_eq!(cg.admin("GET", "/healthz").0, 200, "{}", cg.log());
    assert!(root.path().join("var/lib/callgate/audit.db").exists());

    // As the kubelet updates a mounted ConfigMap: the file changes, no
    // signal comes; the watcher reloads.
    std::fs::write(
        &cg.config_path,
        text.replace("drain_secs = 30", "drain_secs = 20"),
    )
    .expect("edit");
    await_metric(&cg, "callgate_config_reloads_total", 1.0);
    std::fs::write(
        &cg.config_path,
        text.replace("drain_secs = 30", "drain_secs = 20\nbogus = 1"),
    )
    .expect("break");
    await_metric(&cg, "callgate_config_reload_failures_total", 1.0);
    assert_eq!(cg.metric("callgate_config_reloads_total"), 1.0);
    assert!(
        cg.log().contains("configuration files changed; reloading"),
        "{}",
        cg.log()
    );
}

/// The script of the init container `name` (its `command`'s literal
/// block, indented by fourteen spaces in daemonset.yaml).
fn init_script(name: &str) -> String {
    let text = manifest("daemonset.yaml");
    let mut lines = text
        .lines()
        .skip_while(|l| l.trim() != format!("- name: {name}"))
        .skip_while(|l| l.trim() != "- |");
    lines
        .next()
        .unwrap_or_else(|| panic!("no init container {name} with a script"));
    lines
        .take_while(|l| l.starts_with(&" ".repeat(14)))
        .map(|l| &l[14..])
        .collect::<Vec<_>>()
        .join("\n")
}

/// The init container `seed-lists`, run as the pod would run it (the
/// ConfigMap at /etc/callgate/config, the node's volume at
/// /var/lib/callgate, both moved under a temporary root): the lists the
/// console edits are created on the volume from the ConfigMap's keys, or
/// empty without them, and a list already there (with the console's
/// additions) is never overwritten by a later pod start.
#[test]
fn the_init_container_seeds_the_editable_lists_once() {
    let script = init_script("seed-lists");
    let root = tempfile::tempdir().expect("tempdir");
    let config = root.path().join("etc/callgate/config");
    let volume = root.path().join("var/lib/callgate");
    std::fs::create_dir_all(&config).expect("config");
    std::fs::create_dir_all(&volume).expect("volume");
    std::fs::write(config.join("fraud.txt"), "+15550666\n").expect("fraud key");
    let run = || {
        let out = Command::new("/bin/sh")
            .arg("-ec")
            .arg(
                script
                    .replace("/etc/callgate/config", &config.display().to_string())
                    .replace("/var/lib/callgate", &volume.display().to_string()),
            )
            .output()
            .expect("run /bin/sh");
        assert!(
            out.status.success(),
            "seed-lists failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run();
    let lists = volume.join("lists");
    assert_eq!(
        std::fs::read_to_string(lists.join("fraud.txt")).expect("fraud"),
        "+15550666\n"
    );
    assert_eq!(
        std::fs::metadata(lists.join("allow.txt"))
            .map(|m| m.len())
            .ok(),
        Some(0),
        "no allow.txt key: an empty list"
    );
    // The console added a number; the ConfigMap's seed changed since.
    std::fs::write(lists.join("fraud.txt"), "+15550666\n+15557654321\n").expect("append");
    std::fs::write(config.join("fraud.txt"), "+15550999\n").expect("new seed");
    run();
    assert_eq!(
        std::fs::read_to_string(lists.join("fraud.txt")).expect("fraud"),
        "+15550666\n+15557654321\n",
        "a later pod start keeps the node's list"
    );
}
