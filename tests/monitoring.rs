//! The monitoring kit (issue 15): `/metrics` of a real callgate that has
//! carried a call with media, with Redis, STIR, a policy and an audit
//! store configured, read by a real Prometheus parser (`promtool check
//! metrics`, from the Debian `prometheus` package test-calls/run-tests.sh
//! installs); every metric the Grafana dashboard and the alert rules in
//! deploy/monitoring/ name is in that scrape; the rules pass `promtool
//! check rules` and their unit tests; each runbook they link to is a
//! heading of docs/operations.md; and the media counters move while a call
//! is live, not only when it ends.

mod common;

use std::collections::BTreeSet;
use std::io::Write;
use std::net::UdpSocket;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{config, free_port, repo, scenario, Callgate, Ports, Sipp, Udp};

/// A policy version with the characters that once broke the whole scrape
/// (a `"` ended the label value early). The policy file allows any
/// printable ASCII but `;` and `,`; a newline is covered by the unit test
/// of `api::metrics`.
const ODD_VERSION: &str = r#"mon"1\x"#;

/// callgate with media, Redis, STIR, the example policy (version
/// [`ODD_VERSION`]) and an audit store; the PBX a sipp UAS echoing RTP.
struct Kit {
    cg: Callgate,
    _redis: common::redis::RedisServer,
    _pbx: Sipp,
    _dir: tempfile::TempDir,
    _pki: common::pki::Pki,
    pbx_port: u16,
}

fn start_kit(media_base: u16) -> Kit {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let redis = common::redis::RedisServer::start(free_port());
    let pki = common::pki::pki();
    let policy_text = std::fs::read_to_string(repo().join("sip-config/policy.toml"))
        .unwrap_or_else(|e| panic!("{e}"));
    // Whatever the shipped version is: its `version = …` line replaced.
    let policy_text = policy_text
        .lines()
        .map(|l| {
            if l.starts_with("version = ") {
                format!("version = '{ODD_VERSION}'")
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        policy_text.contains(ODD_VERSION),
        "the example policy's version line moved"
    );
    let policy = dir.path().join("policy.toml");
    std::fs::write(&policy, policy_text).unwrap_or_else(|e| panic!("{e}"));
    // The lists the example policy names resolve against its directory.
    let lists = dir.path().join("lists");
    std::fs::create_dir(&lists).unwrap_or_else(|e| panic!("{e}"));
    for list in ["allow.txt", "dno.txt", "fraud.txt"] {
        std::fs::copy(repo().join("sip-config/lists").join(list), lists.join(list))
            .unwrap_or_else(|e| panic!("{list}: {e}"));
    }
    let pbx_port = free_port();
    let pbx_media = common::free_ports(4);
    let pbx = Sipp::uas(
        &scenario("uas-basic.xml"),
        pbx_port,
        1,
        "u1",
        &["-mp", &pbx_media.to_string(), "-rtp_echo"],
    );
    let media_min = media_base + (std::process::id() % 50) as u16 * 20;
    let ports = Ports::new();
    // A webhook whose receiver is not there: the events' families are
    // exposed (the alert rules use them).
    let hook_key = dir.path().join("hook.key");
    std::fs::write(&hook_key, "monitoring-kit-webhook-key-0123").unwrap_or_else(|e| panic!("{e}"));
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&hook_key, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let extra = format!(
        "[media]\nenabled = true\nbind = \"127.0.0.1\"\nport_min = {media_min}\nport_max = {}\n\n\
         [stir]\nenabled = true\ntrust_dir = \"{}\"\n\n\
         [risk]\npolicy = \"{}\"\n\n\
         [audit]\npath = \"{}\"\n\n\
         [state]\nredis = \"redis://127.0.0.1:{}\"\n\n\
         [events]\n\n[[events.webhook]]\nname = \"crm\"\nurl = \"http://127.0.0.1:{}/\"\nsecret_file = \"{}\"\n",
        media_min + 19,
        pki.trust_dir.display(),
        policy.display(),
        dir.path().join("audit.db").display(),
        redis.port,
        free_port(),
        hook_key.display(),
    );
    let cg = Callgate::start(
        ports,
        &config(
            ports,
            &[format!("sip:127.0.0.1:{pbx_port}")],
            &["sip:127.0.0.1:9".to_owned()],
            &extra,
        ),
    );
    Kit {
        cg,
        _redis: redis,
        _pbx: pbx,
        _dir: dir,
        _pki: pki,
        pbx_port,
    }
}

/// RTP packet `seq` (PCMU, 20 ms).
fn rtp(seq: u16) -> Vec<u8> {
    let mut p = vec![0x80, 0, 0, 0, 0, 0, 0, 0, 0x11, 0x22, 0x33, 0x44];
    p[2..4].copy_from_slice(&seq.to_be_bytes());
    p[4..8].copy_from_slice(&(u32::from(seq) * 160).to_be_bytes());
    p.extend_from_slice(&[0xff; 160]);
    p
}

/// Places a call from a hand-made carrier with SDP naming `media`'s port;
/// returns the relay port (leg A) from the 200's SDP. The call stays up.
fn call_with_media(kit: &Kit, carrier: &Udp, media: &UdpSocket) -> u16 {
    let trunk = kit.cg.trunk();
    let me = format!("127.0.0.1:{}", carrier.port());
    let my_media = media.local_addr().map(|a| a.port()).unwrap_or(0);
    let sdp = format!(
        "v=0\r\no=carrier 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio {my_media} RTP/AVP 0\r\na=rtpmap:0 PCMU/8000\r\na=ptime:20\r\n"
    );
    let invite = format!(
        "INVITE sip:+15550100@{trunk} SIP/2.0\r\nVia: SIP/2.0/UDP {me};branch=z9hG4bK-mon-1\r\nMax-Forwards: 70\r\nFrom: <sip:+15550199@{me}>;tag=mon\r\nTo: <sip:+15550100@{trunk}>\r\nCall-ID: monitoring-1\r\nCSeq: 1 INVITE\r\nContact: <sip:+15550199@{me}>\r\nContent-Type: application/sdp\r\nContent-Length: {}\r\n\r\n{sdp}",
        sdp.len()
    );
    carrier.send(&trunk, invite.as_bytes());
    let ok = carrier
        .recv_until("SIP/2.0 200 OK")
        .pop()
        .unwrap_or_default();
    ok.lines()
        .find_map(|l| l.strip_prefix("m=audio "))
        .and_then(|m| m.split(' ').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no relay port in the 200 (PBX on {}): {ok}", kit.pbx_port))
}

/// Sends RTP `seqs` to the relay and waits for each echo from the PBX.
fn send_rtp(media: &UdpSocket, leg_a: u16, seqs: &[u16]) {
    for &seq in seqs {
        media
            .send_to(&rtp(seq), ("127.0.0.1", leg_a))
            .unwrap_or_else(|e| panic!("{e}"));
        let mut buf = [0u8; 512];
        media
            .recv_from(&mut buf)
            .unwrap_or_else(|e| panic!("echo of {seq} did not come back through the relay: {e}"));
    }
}

fn media_socket() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    s.set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap_or_else(|e| panic!("{e}"));
    s
}

/// `promtool check metrics` on `text`: (exit code, what it printed).
fn promtool_check_metrics(text: &str) -> (Option<i32>, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("promtool (apt-get install prometheus): {e}"));
    child
        .stdin
        .take()
        .map(|mut i| i.write_all(text.as_bytes()))
        .transpose()
        .unwrap_or_else(|e| panic!("{e}"));
    let out = child.wait_with_output().unwrap_or_else(|e| panic!("{e}"));
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

/// Sample names (without labels) of an exposition.
fn sample_names(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| l.split(['{', ' ']).next())
        .map(str::to_owned)
        .collect()
}

/// Metric names (`callgate_…`, `process_…`) in a dashboard or rules file.
fn names_used(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for prefix in ["callgate_", "process_"] {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().last();
            let tail = &rest[i..];
            let end = tail
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(tail.len());
            if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_') {
                names.insert(tail[..end].to_owned());
            }
            rest = &tail[end..];
        }
    }
    names
}

fn kit_file(name: &str) -> String {
    let path = repo().join("deploy/monitoring").join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn a_live_scrape_parses_and_holds_every_metric_the_dashboard_and_rules_use() {
    let kit = start_kit(44_000);
    let carrier = Udp::bind();
    let media = media_socket();
    let leg_a = call_with_media(&kit, &carrier, &media);
    send_rtp(&media, leg_a, &[1, 2, 3]);

    let (status, text) = common::http(("127.0.0.1", kit.cg.ports.admin), "GET", "/metrics");
    assert_eq!(status, 200, "{text}");
    let (code, problems) = promtool_check_metrics(&text);
    assert_eq!(
        code,
        Some(0),
        "promtool check metrics refused the scrape:\n{problems}\n--- scrape:\n{text}"
    );
    assert!(
        text.contains(r#"callgate_policy_info{version="mon\"1\\x",shadow=""} 1"#),
        "the version escaped as the format requires:\n{text}"
    );
    for line in [
        "# TYPE callgate_build_info gauge",
        "# TYPE process_cpu_seconds_total counter",
        "# TYPE process_resident_memory_bytes gauge",
        "# TYPE process_open_fds gauge",
        "# TYPE process_max_fds gauge",
        "# TYPE process_start_time_seconds gauge",
        "# TYPE process_threads gauge",
        r#"callgate_phase_seconds_bucket{phase="verify",le="0.3"}"#,
        r#"callgate_phase_seconds_bucket{phase="verify",le="2.5"}"#,
    ] {
        assert!(text.contains(line), "{line} missing:\n{text}");
    }

    let scraped = sample_names(&text);
    for file in ["callgate-dashboard.json", "callgate-alerts.yml"] {
        let used = names_used(&kit_file(file));
        assert!(used.len() > 10, "{file} names only {used:?}");
        let missing: Vec<_> = used.difference(&scraped).collect();
        assert!(
            missing.is_empty(),
            "{file} uses metrics callgate does not expose: {missing:?}\n--- scrape:\n{text}"
        );
    }
}

#[test]
fn media_counters_count_a_live_call() {
    let kit = start_kit(44_400);
    let carrier = Udp::bind();
    let media = media_socket();
    let leg_a = call_with_media(&kit, &carrier, &media);
    // Sequence 4 never comes: one packet lost on the way in and, as the PBX
    // echoes what it got, one on the way back (RFC 3550 A.3).
    send_rtp(&media, leg_a, &[1, 2, 3, 5, 6]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let (mut packets, mut lost) = (0.0, 0.0);
    while Instant::now() < deadline {
        packets = kit.cg.metric("callgate_media_packets_total");
        lost = kit.cg.metric("callgate_media_lost_packets_total");
        if packets >= 10.0 && lost >= 2.0 {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(
        kit.cg.metric("callgate_media_sessions"),
        1.0,
        "the call is still up"
    );
    assert!(
        packets >= 10.0,
        "5 packets each way while the call is live, got {packets}:\n{}",
        kit.cg.metrics()
    );
    assert_eq!(lost, 2.0, "{}", kit.cg.metrics());
    assert!(kit.cg.metric("callgate_media_bytes_total") >= 10.0 * 172.0);
}

/// Every `expr` of the dashboard, with Grafana's variables given values.
fn dashboard_queries() -> Vec<String> {
    fn walk(v: &serde_json::Value, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    match (k.as_str(), v.as_str()) {
                        ("expr", Some(e)) => out.push(
                            e.replace("$__rate_interval", "5m")
                                .replace("$job", ".*")
                                .replace("$instance", ".*"),
                        ),
                        _ => walk(v, out),
                    }
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(&kit_file("callgate-dashboard.json"))
        .unwrap_or_else(|e| panic!("the dashboard is not JSON: {e}"));
    let mut out = Vec::new();
    walk(&dashboard, &mut out);
    out
}

/// Each query of the dashboard is PromQL that Prometheus parses: promtool
/// checks them as the expressions of recording rules.
#[test]
fn every_dashboard_query_is_valid_promql() {
    let queries = dashboard_queries();
    assert!(queries.len() > 40, "{queries:?}");
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, q) in queries.iter().enumerate() {
        let quoted = serde_json::to_string(q).unwrap_or_else(|e| panic!("{e}"));
        rules.push_str(&format!(
            "      - record: dashboard_query_{i}\n        expr: {quoted}\n"
        ));
    }
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let file = dir.path().join("dashboard-queries.yml");
    std::fs::write(&file, &rules).unwrap_or_else(|e| panic!("{e}"));
    let check = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap_or_else(|e| panic!("promtool (apt-get install prometheus): {e}"));
    assert!(
        check.status.success(),
        "{}{}\n{rules}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn the_alert_rules_check_pass_their_unit_tests_and_link_to_runbooks_that_exist() {
    let dir = repo().join("deploy/monitoring");
    let check = Command::new("promtool")
        .args(["check", "rules", "callgate-alerts.yml"])
        .current_dir(&dir)
        .output()
        .unwrap_or_else(|e| panic!("promtool (apt-get install prometheus): {e}"));
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );
    let test = Command::new("promtool")
        .args(["test", "rules", "callgate-alerts.test.yml"])
        .current_dir(dir.join("tests"))
        .output()
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        test.status.success(),
        "{}{}",
        String::from_utf8_lossy(&test.stdout),
        String::from_utf8_lossy(&test.stderr)
    );

    // Each runbook link names a heading of docs/operations.md (GitHub's
    // anchor: lower case, spaces to '-', punctuation but '-' and '_' gone).
    let ops = std::fs::read_to_string(repo().join("docs/operations.md"))
        .unwrap_or_else(|e| panic!("{e}"));
    let anchors: BTreeSet<String> = ops
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|h| {
            h.trim_start_matches('#')
                .trim()
                .to_lowercase()
                .chars()
                .filter_map(|c| match c {
                    ' ' => Some('-'),
                    c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
                    _ => None,
                })
                .collect()
        })
        .collect();
    let rules = kit_file("callgate-alerts.yml");
    let links: Vec<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook_url: \"docs/operations.md#"))
        .map(|l| l.trim_end_matches('"'))
        .collect();
    assert!(links.len() >= 10, "{links:?}");
    for link in links {
        assert!(
            anchors.contains(link),
            "no heading for #{link} in docs/operations.md"
        );
    }
}
