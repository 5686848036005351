//! The UAC against the UAS directly, as processes.
use std::process::{Command, Stdio};

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_sip-loadgen")
}

fn free_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn uac_against_uas_all_calls_succeed() {
    let port = free_port();
    let mut uas = Command::new(bin())
        .args([
            "uas",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--idle-exit-s",
            "5",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let out = Command::new(bin())
        .args([
            "uac",
            "--target",
            &format!("127.0.0.1:{port}"),
            "--rate",
            "500",
            "--calls",
            "300",
            "--hold-ms",
            "50",
            "--timeout-s",
            "20",
        ])
        .output()
        .unwrap();
    let _ = uas.kill();
    let _ = uas.wait();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout.trim(), "300 0", "{stderr}");
    assert!(stderr.contains("failures: none"), "{stderr}");
}

#[test]
fn uac_without_a_peer_times_out_and_says_why() {
    // Nothing listens: every INVITE goes unanswered until the run timeout.
    let port = free_port();
    let out = Command::new(bin())
        .args([
            "uac",
            "--target",
            &format!("127.0.0.1:{port}"),
            "--rate",
            "100",
            "--calls",
            "5",
            "--timeout-s",
            "1.2",
        ])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stdout.trim(), "0 5", "{stderr}");
    assert!(stderr.contains("run timeout (Calling)=5"), "{stderr}");
    assert!(stderr.contains("INVITE=5 "), "{stderr}"); // one Timer A retransmission each
}

#[test]
fn json_report_is_written() {
    let port = free_port();
    let mut uas = Command::new(bin())
        .args([
            "uas",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--idle-exit-s",
            "5",
        ])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let json = std::env::temp_dir().join(format!("sip-loadgen-{port}.json"));
    let out = Command::new(bin())
        .args([
            "uac",
            "--target",
            &format!("127.0.0.1:{port}"),
            "--rate",
            "200",
            "--calls",
            "20",
            "--hold-ms",
            "10",
        ])
        .arg("--json")
        .arg(&json)
        .output()
        .unwrap();
    let _ = uas.kill();
    let _ = uas.wait();
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "20 0");
    let text = std::fs::read_to_string(&json).unwrap();
    let _ = std::fs::remove_file(&json);
    assert!(
        text.starts_with("{\"ok\":20,\"failed\":0,\"failures\":{},"),
        "{text}"
    );
    assert!(text.contains("\"uac_socket_drops\":0"), "{text}");
}
