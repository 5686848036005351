//! deploy/two-instances/: both configurations pass `check-config` laid out
//! as on their hosts, and the pair agrees on everything that decides a
//! call — only the instance name and the host's addresses differ.

use std::path::Path;
use std::process::Command;

use callgate::config::Config;

use crate::common::repo;

/// `deploy/two-instances/callgate-NAME.toml` as `/etc/callgate/callgate.toml`
/// with the policy and trust directory beside it.
fn host(name: &str) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("tempdir");
    let d = dir.path();
    let example = repo().join("deploy/two-instances");
    std::fs::copy(
        example.join(format!("callgate-{name}.toml")),
        d.join("callgate.toml"),
    )
    .expect("config");
    std::fs::copy(repo().join("sip-config/policy.toml"), d.join("policy.toml")).expect("policy");
    std::fs::create_dir_all(d.join("lists")).expect("lists");
    for l in ["allow.txt", "dno.txt", "fraud.txt"] {
        std::fs::copy(
            repo().join("sip-config/lists").join(l),
            d.join("lists").join(l),
        )
        .expect("list");
    }
    std::fs::create_dir_all(d.join("sti-trust")).expect("trust dir");
    std::fs::create_dir_all(d.join("credentials")).expect("credentials");
    std::fs::write(
        d.join("credentials/admin.token"),
        crate::common::ADMIN_TOKEN,
    )
    .expect("token");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        d.join("credentials/admin.token"),
        std::fs::Permissions::from_mode(0o600),
    )
    .expect("chmod");
    dir
}

fn env(d: &Path) -> [(&'static str, String); 3] {
    [
        ("REDIS_PASSWORD", "pw-of-the-example".to_owned()),
        (
            "CREDENTIALS_DIRECTORY",
            d.join("credentials").display().to_string(),
        ),
        ("STATE_DIRECTORY", d.join("state").display().to_string()),
    ]
}

#[test]
fn the_two_instance_example_is_valid_and_the_pair_agrees() {
    let (a, b) = (host("a"), host("b"));
    for dir in [&a, &b] {
        let out = Command::new(env!("CARGO_BIN_EXE_callgate"))
            .arg("check-config")
            .arg(dir.path().join("callgate.toml"))
            .envs(env(dir.path()))
            .output()
            .expect("run check-config");
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The same values through the library (the process environment is
    // this test's own: the files' variables have defaults but one).
    let load = |dir: &tempfile::TempDir| {
        let text = std::fs::read_to_string(dir.path().join("callgate.toml")).expect("read");
        let text = text
            .replace("${REDIS_PASSWORD}", "pw-of-the-example")
            .replace(
                "${CREDENTIALS_DIRECTORY:-/etc/callgate/credentials}",
                &dir.path().join("credentials").display().to_string(),
            );
        Config::parse(&text, &dir.path().join("callgate.toml")).unwrap_or_else(|e| panic!("{e}"))
    };
    let (ca, cb) = (load(&a), load(&b));
    assert_eq!(
        (ca.instance.as_str(), cb.instance.as_str()),
        ("cg-a", "cg-b")
    );
    assert_eq!(
        ca.state, cb.state,
        "one Redis, one database, one key prefix"
    );
    assert!(ca.state.redis.is_some());
    assert_eq!(ca.trunk.allow, cb.trunk.allow);
    assert_eq!(ca.trunk.targets, cb.trunk.targets);
    assert_eq!(ca.pbx.targets, cb.pbx.targets);
    assert_eq!(ca.stir.enabled, cb.stir.enabled);
    let version = |c: &Config| c.risk.policy.as_ref().map(|p| p.version.clone());
    assert!(version(&ca).is_some() && version(&ca) == version(&cb));
    assert_ne!(ca.trunk.udp, cb.trunk.udp, "each host its own address");
}
