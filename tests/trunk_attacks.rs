//! What the trunk can probe and reflect (issue 13): scanning and toll-fraud
//! tools, methods a carrier never sends, unknown numbers, the PBX's
//! fingerprint and challenges, reflection of callgate's own answers.
//!
//! The sipvicious test runs Debian's `sipvicious` (svmap, svwar, svcrack)
//! from an attacker host in a network namespace against callgate in front of
//! a PBX stand-in with extensions 201–203 (`tests/standins/extension_pbx.py`:
//! 401 for existing extensions, 404 for others, one password accepted);
//! the spoofed-source test also uses a namespace host. Those two need root
//! (as CI). The others run on loopback.
mod common;

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::netns::{Host, Lab};
use common::{await_metric, config, free_port, repo, Callgate, Ports, Udp, LOOPBACK};

/// The PBX stand-in (Python, stdlib only), on 127.0.0.1; ends when dropped
/// (its stdin closes).
struct ExtensionPbx {
    child: Child,
    port: u16,
}

impl ExtensionPbx {
    fn start() -> ExtensionPbx {
        let port = free_port();
        let mut child = Command::new("python3")
            .arg(repo().join("tests/standins/extension_pbx.py"))
            .args([LOOPBACK, &port.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs the PBX stand-in");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("stand-in output");
        assert_eq!(line.trim(), "ready", "PBX stand-in did not start");
        ExtensionPbx { child, port }
    }
}

impl Drop for ExtensionPbx {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// callgate with its trunk on `trunk_ip:ports.trunk` (UDP) admitting
/// `allow`, its PBX side on loopback forwarding to `pbx_port`, and `trunk`
/// lines added to `[trunk]` (the defaults otherwise).
fn gate(ports: Ports, trunk_ip: &str, allow: &str, pbx_port: u16, trunk: &str) -> Callgate {
    let cfg = format!(
        "[trunk]\nudp = \"{trunk_ip}:{t}\"\nallow = [\"{allow}\"]\nrate_limit = 2000\ntargets = [\"sip:127.0.0.1:9\"]\n{trunk}\n\n\
         [pbx]\nudp = \"127.0.0.1:{p}\"\nallow = [\"127.0.0.0/8\"]\ntargets = [\"sip:127.0.0.1:{pbx_port}\"]\n\n\
         [health]\ninterval_secs = 0\n\n[admin]\nlisten = \"127.0.0.1:{a}\"\n\n[log]\nlevel = \"info\"\n",
        t = ports.trunk,
        p = ports.pbx,
        a = ports.admin,
    );
    Callgate::start(ports, &cfg)
}

/// Runs a sipvicious tool from `host` against `target` (bounded); its
/// whole output.
fn sipvicious(host: &Host, tool: &str, args: &[&str], target: &str, port: u16) -> String {
    let out = host
        .command("timeout")
        .arg("90")
        .arg(tool)
        .args(args)
        .args([target, "-p", &port.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("{tool}: {e} (apt-get install sipvicious)"));
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// What each tool learnt, for one callgate configuration.
struct Scan {
    svmap: String,
    svwar: Vec<String>,
    svcrack: String,
}

fn scan(attacker: &Host, cg: &Callgate, dict: &std::path::Path) -> Scan {
    let gate = attacker.gate.to_string();
    let port = cg.ports.trunk;
    let svmap = sipvicious(attacker, "svmap", &[], &gate, port);
    let svwar = ["REGISTER", "INVITE", "OPTIONS"]
        .iter()
        .map(|m| sipvicious(attacker, "svwar", &["-e200-210", "-m", m], &gate, port))
        .collect();
    let dict = dict.display().to_string();
    let svcrack = sipvicious(
        attacker,
        "svcrack",
        &["-u", "201", "-d", &dict],
        &gate,
        port,
    );
    Scan {
        svmap,
        svwar,
        svcrack,
    }
}

/// What a scan must not have learnt: the PBX's product, any of its
/// extensions, extension 201's password.
fn assert_learnt_nothing(s: &Scan, what: &str) {
    assert!(
        !s.svmap.contains("ExtensionBox"),
        "{what}: svmap read the PBX's Server header:\n{}",
        s.svmap
    );
    // svwar reports an extension whose answer differs from a missing
    // one's; a scan that reports every extension alike ("weird", when all
    // answer the same) tells the real ones from none.
    for out in &s.svwar {
        let row = |ext: &str| -> Option<String> {
            out.lines().find_map(|l| {
                let cells: Vec<&str> = l.split('|').map(str::trim).collect();
                (cells.len() > 2 && cells[1] == ext).then(|| cells[2].to_owned())
            })
        };
        let missing = row("200");
        for ext in ["201", "202", "203"] {
            assert_eq!(
                row(ext),
                missing,
                "{what}: svwar told extension {ext} from the missing 200:\n{out}"
            );
        }
    }
    assert!(
        !s.svcrack.contains("secret42"),
        "{what}: svcrack cracked 201's password:\n{}",
        s.svcrack
    );
}

/// sipvicious's svmap, svwar (REGISTER, INVITE and OPTIONS scans) and
/// svcrack, from an admitted attacker host, learn nothing about the PBX's
/// extensions and crack nothing: by default because callgate drops their
/// signature; and with the signature check off (`scanners = "pass"`, as for
/// a tool that disguises itself) because REGISTER gets 405, OPTIONS is
/// answered by callgate, the PBX's challenges become the uniform 404 and
/// its Server header never leaves. On main svmap printed
/// `ExtensionBox-PBX/7.3`, svwar listed 201–203 with every method and
/// svcrack found `secret42`. Needs root (network namespaces).
#[test]
fn sipvicious_learns_nothing_through_callgate() {
    let lab = Lab::new(&["attacker"]);
    let attacker = lab.host(0).clone();
    let pbx = ExtensionPbx::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let dict = dir.path().join("passwords.txt");
    std::fs::write(&dict, "letmein\n1234\nsecret42\npassword\n").expect("dictionary");
    let allow = format!("{}/32", attacker.addr);
    let gate_ip = attacker.gate.to_string();

    let cg = gate(Ports::new(), &gate_ip, &allow, pbx.port, "");
    let s = scan(&attacker, &cg, &dict);
    assert_learnt_nothing(&s, "default");
    assert!(
        cg.metric("callgate_admission_refusals_total{side=\"trunk\",reason=\"scanner\"}") >= 5.0,
        "{}",
        cg.metrics()
    );
    drop(cg);

    let cg = gate(
        Ports::new(),
        &gate_ip,
        &allow,
        pbx.port,
        "scanners = \"pass\"",
    );
    let s = scan(&attacker, &cg, &dict);
    assert_learnt_nothing(&s, "scanners = pass");
    // The tools did reach callgate and got answers (not a silent test).
    assert!(
        s.svmap.contains(&format!("{gate_ip}:{}", cg.ports.trunk)),
        "svmap saw no SIP device at all:\n{}",
        s.svmap
    );
    let m = |series: &str| cg.metric(series);
    assert!(m("callgate_admission_refusals_total{side=\"trunk\",reason=\"method\"}") >= 1.0);
    assert!(m("callgate_admission_refusals_total{side=\"pbx\",reason=\"challenge\"}") >= 1.0);
    assert_eq!(
        m("callgate_sip_requests_total{side=\"pbx\",direction=\"out\",method=\"REGISTER\"}"),
        0.0,
        "{}",
        cg.metrics()
    );
    assert_eq!(
        m("callgate_sip_requests_total{side=\"pbx\",direction=\"out\",method=\"OPTIONS\"}"),
        0.0
    );
}

/// A request as a carrier (or a tool posing as one) writes it.
fn request(method: &str, ruri_user: &str, branch: &str, from_port: u16) -> String {
    format!(
        "{method} sip:{ruri_user}@{LOOPBACK} SIP/2.0\r\nVia: SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bK{branch};rport\r\nMax-Forwards: 70\r\nFrom: <sip:+15551230000@carrier.example>;tag=c{branch}\r\nTo: <sip:{ruri_user}@{LOOPBACK}>\r\nCall-ID: {branch}@carrier\r\nCSeq: 1 {method}\r\nContact: <sip:10.9.9.9:{from_port}>\r\nUser-Agent: Carrier-SBC/4.2\r\nContent-Length: 0\r\n\r\n"
    )
}

/// The next final response on `s`, within 5 s.
fn final_response(s: &Udp) -> String {
    loop {
        let (d, _) = s.recv().expect("a final response within 5 s");
        let text = String::from_utf8_lossy(&d).into_owned();
        if text.starts_with("SIP/2.0 ") && !text.starts_with("SIP/2.0 1") {
            return text;
        }
    }
}

fn header<'a>(msg: &'a str, name: &str) -> Option<&'a str> {
    msg.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// A plain loopback callgate in front of `pbx_port` with `trunk` added to
/// the test config's `[trunk]`.
fn loopback_gate(pbx_port: u16, trunk: &str) -> Callgate {
    let ports = Ports::new();
    let cfg = config(
        ports,
        &[format!("sip:127.0.0.1:{pbx_port}")],
        &["sip:127.0.0.1:9".to_owned()],
        "",
    )
    .replacen("options = \"forward\"\n", &format!("{trunk}\n"), 1);
    Callgate::start(ports, &cfg)
}

/// REGISTER from the trunk: 405 with Allow, formed by callgate, with a To
/// tag (the same on a retransmission) and received/rport on the top Via;
/// the PBX never sees it (the INVITE sent after it is the first thing the
/// PBX gets). On main the REGISTER was forwarded to the PBX.
#[test]
fn register_from_the_trunk_gets_405_and_never_reaches_the_pbx() {
    let pbx = Udp::bind();
    let cg = loopback_gate(pbx.port(), "");
    let carrier = Udp::bind();
    let reg = request("REGISTER", "201", "reg1", carrier.port());
    carrier.send(&cg.trunk(), reg.as_bytes());
    let first = final_response(&carrier);
    assert!(first.starts_with("SIP/2.0 405 "), "{first}");
    assert_eq!(
        header(&first, "Allow"),
        Some("INVITE, ACK, BYE, CANCEL, OPTIONS, PRACK, UPDATE, INFO")
    );
    let via = header(&first, "Via").unwrap_or_default();
    assert_eq!(
        via,
        format!(
            "SIP/2.0/UDP 10.9.9.9:5060;branch=z9hG4bKreg1;rport={};received=127.0.0.1",
            carrier.port()
        )
    );
    let to = header(&first, "To").unwrap_or_default();
    assert!(to.contains(";tag="), "{first}");
    // A retransmission gets the same answer, the same To tag.
    carrier.send(&cg.trunk(), reg.as_bytes());
    assert_eq!(final_response(&carrier), first);
    // The PBX's first request is the INVITE sent after the REGISTERs.
    carrier.send(
        &cg.trunk(),
        request("INVITE", "+15550100", "inv1", carrier.port()).as_bytes(),
    );
    let (got, _) = pbx.recv().expect("the INVITE reaches the PBX");
    let got = String::from_utf8_lossy(&got);
    assert!(got.starts_with("INVITE "), "{got}");
    assert_eq!(
        cg.metric("callgate_admission_refusals_total{side=\"trunk\",reason=\"method\"}"),
        2.0
    );
}

/// An OPTIONS from the trunk is answered by callgate: 200 with Allow,
/// Accept and Supported (RFC 3261 §11.2), a To tag, nothing of the PBX; the
/// PBX never sees it. On main it was forwarded to the PBX.
#[test]
fn options_from_the_trunk_are_answered_by_callgate() {
    let pbx = Udp::bind();
    let cg = loopback_gate(pbx.port(), "");
    let carrier = Udp::bind();
    carrier.send(
        &cg.trunk(),
        request("OPTIONS", "201", "opt1", carrier.port()).as_bytes(),
    );
    let ok = final_response(&carrier);
    assert!(ok.starts_with("SIP/2.0 200 OK\r\n"), "{ok}");
    assert!(
        header(&ok, "Allow").is_some_and(|a| a.contains("INVITE")),
        "{ok}"
    );
    assert_eq!(header(&ok, "Accept"), Some("application/sdp"));
    assert!(header(&ok, "Supported").is_some(), "{ok}");
    assert!(
        header(&ok, "To").is_some_and(|t| t.contains(";tag=")),
        "{ok}"
    );
    assert!(header(&ok, "Server").is_none() && header(&ok, "User-Agent").is_none());
    carrier.send(
        &cg.trunk(),
        request("INVITE", "+15550100", "inv2", carrier.port()).as_bytes(),
    );
    let (got, _) = pbx.recv().expect("the INVITE reaches the PBX");
    assert!(String::from_utf8_lossy(&got).starts_with("INVITE "));
}

/// With `numbers` set, an extension that exists behind callgate (202, which
/// the PBX stand-in challenges) and one that does not (100) get the same
/// answer, formed by callgate; a listed number reaches the PBX, whose 401
/// challenge comes back as the same 404, without the challenge and without
/// the PBX's Server and Warning. On main: 401 with WWW-Authenticate and
/// `Server: ExtensionBox-PBX/7.3` for 202 and 201, 404 for 100.
#[test]
fn every_unknown_number_gets_one_answer_and_the_pbx_stays_hidden() {
    let pbx = ExtensionPbx::start();
    let cg = loopback_gate(pbx.port, "numbers = [\"+15550100\", \"201\"]");
    let carrier = Udp::bind();
    let mut answers = Vec::new();
    for (i, ext) in ["100", "202", "201"].iter().enumerate() {
        carrier.send(
            &cg.trunk(),
            request("INVITE", ext, &format!("num{i}"), carrier.port()).as_bytes(),
        );
        answers.push(final_response(&carrier));
    }
    // The same status line and the same headers but those naming the
    // request (Via, From, To, Call-ID, CSeq).
    let shape = |r: &str| -> Vec<String> {
        r.lines()
            .filter(|l| {
                let name = l.split(':').next().unwrap_or("").to_ascii_lowercase();
                !["via", "from", "to", "call-id", "cseq"].contains(&name.as_str())
            })
            .map(str::to_owned)
            .collect()
    };
    assert!(
        answers[0].starts_with("SIP/2.0 404 Not Found\r\n"),
        "{}",
        answers[0]
    );
    assert_eq!(shape(&answers[0]), shape(&answers[1]), "{answers:#?}");
    // 201 is listed: it reached the PBX, which challenged it.
    let challenged = &answers[2];
    assert!(
        challenged.starts_with("SIP/2.0 404 Not Found\r\n"),
        "{challenged}"
    );
    for hidden in ["WWW-Authenticate", "Server", "Warning", "User-Agent"] {
        assert!(
            header(challenged, hidden).is_none(),
            "{hidden}: {challenged}"
        );
    }
    assert_eq!(
        cg.metric("callgate_admission_refusals_total{side=\"trunk\",reason=\"number\"}"),
        2.0
    );
    assert_eq!(
        cg.metric("callgate_admission_refusals_total{side=\"pbx\",reason=\"challenge\"}"),
        1.0
    );
}

/// A flood of INVITEs from a source outside the trunk's ACL (as a spoofed
/// source would send them) gets no answer at all with the default
/// `on_denied`: callgate reflects nothing. Each is counted — since issue 14
/// by the kernel, as a drop at the trunk socket (the ACL's socket filter
/// refuses them before callgate reads them; tests/floods.rs), no longer as
/// a userspace ACL refusal. Before `on_denied` defaulted to "drop" each got
/// a 403. Needs root.
#[test]
fn a_stranger_flooding_the_trunk_gets_no_answer() {
    let lab = Lab::new(&["carrier", "attacker"]);
    let (carrier, attacker) = (lab.host(0).clone(), lab.host(1).clone());
    let ports = Ports::new();
    // Both hosts reach callgate on the carrier link's gate address.
    let cg = gate(
        ports,
        &carrier.gate.to_string(),
        &format!("{}/32", carrier.addr),
        9,
        "",
    );
    let sock = attacker.udp(0);
    let port = sock.local_addr().map(|a| a.port()).unwrap_or(0);
    let to = std::net::SocketAddr::from((carrier.gate, ports.trunk));
    const FLOOD: usize = 50;
    let drops = "callgate_udp_socket_drops_total{side=\"trunk\"}";
    let before = cg.metric(drops);
    for i in 0..FLOOD {
        let r = request("INVITE", "+15550100", &format!("spoof{i}"), port);
        sock.send_to(r.as_bytes(), to).expect("send");
    }
    await_metric(&cg, drops, before + FLOOD as f64);
    // Every datagram was refused before callgate read it. Nothing arrives.
    sock.set_read_timeout(Some(Duration::from_millis(300))).ok();
    let mut buf = [0u8; 2048];
    assert!(
        sock.recv_from(&mut buf).is_err(),
        "a stranger got an answer: {}",
        String::from_utf8_lossy(&buf)
    );
}

/// Answers callgate forms itself to one source are rate limited
/// (`refusals_per_source = 5`: a burst of 10, then 5 a second): of 100
/// REGISTERs sent at once, only about a burst is answered 405; the rest are
/// refused silently and counted. Without the limit each got its 405.
#[test]
fn refusals_to_one_source_are_rate_limited() {
    let pbx = Udp::bind();
    let cg = loopback_gate(pbx.port(), "refusals_per_source = 5");
    let carrier = UdpSocket::bind((LOOPBACK, 0)).expect("bind");
    let port = carrier.local_addr().map(|a| a.port()).unwrap_or(0);
    const SENT: usize = 100;
    let started = Instant::now();
    for i in 0..SENT {
        let r = request("REGISTER", "201", &format!("lim{i}"), port);
        carrier.send_to(r.as_bytes(), cg.trunk()).expect("send");
    }
    await_metric(
        &cg,
        "callgate_admission_refusals_total{side=\"trunk\",reason=\"method\"}",
        SENT as f64,
    );
    let elapsed = started.elapsed().as_secs_f64();
    carrier
        .set_read_timeout(Some(Duration::from_millis(300)))
        .ok();
    let mut answered = 0usize;
    let mut buf = [0u8; 4096];
    while let Ok((n, _)) = carrier.recv_from(&mut buf) {
        if buf[..n].starts_with(b"SIP/2.0 405 ") {
            answered += 1;
        }
    }
    let bound = 10 + (5.0 * elapsed).ceil() as usize;
    assert!(
        (10..=bound).contains(&answered),
        "{answered} answers (bound {bound} after {elapsed:.2} s)"
    );
    assert_eq!(
        cg.metric("callgate_local_answers_suppressed_total{side=\"trunk\"}"),
        (SENT - answered) as f64,
        "{}",
        cg.metrics()
    );
}
