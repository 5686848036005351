//! `callgate demo`: callgate on its embedded defaults (moved to free
//! loopback ports) between a simulated carrier and a simulated PBX, all in
//! one process, with STIR/SHAKEN verification on and the shipped risk
//! policy (`sip-config/policy.toml`, embedded with its lists). The demo
//! makes its own STI PKI (`pki.rs`) and serves its certificate over HTTPS
//! (`x5u.rs`), so its signed calls are really signed, fetched and verified.
//! Places the tour's calls — routing cases, then the fraud typology an
//! agent meets: attestation A, B and C, a spoofed own number, a
//! Do-Not-Originate number, a replayed PASSporT, a burst from one number —
//! and prints what happened to each and the tags the PBX received.
//!
//! The simulated user agents build messages as text and read them with
//! callgate's own parser; in-dialog requests follow the Record-Route set
//! like a real UA (RFC 3261 §12.2).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::UdpSocket;

use callgate::config::Config;
use callgate::sip::message::{HeaderName, Limits, SipMessage};
use callgate::stir::keys::SigningKey;

pub(super) mod pki;
pub(super) mod x5u;

const SDP: &str = "v=0\r\no=demo 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 40000 RTP/AVP 0 8\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n";

/// The shipped policy and its lists, written to a scratch directory for
/// the demo's callgate.
pub(super) const POLICY: &str = include_str!("../../../sip-config/policy.toml");
const LISTS: [(&str, &str); 3] = [
    (
        "allow.txt",
        include_str!("../../../sip-config/lists/allow.txt"),
    ),
    ("dno.txt", include_str!("../../../sip-config/lists/dno.txt")),
    (
        "fraud.txt",
        include_str!("../../../sip-config/lists/fraud.txt"),
    ),
];

/// What the simulated PBX saw on each INVITE, by Call-ID: the risk tags.
pub(super) type Tags = Arc<Mutex<HashMap<String, String>>>;

/// A scratch directory with the policy, its lists and the demo PKI's
/// trust files; removed when dropped.
pub(super) struct Scratch(pub(super) std::path::PathBuf);

impl Scratch {
    /// A new directory of its own (random name, mode 700, never one that
    /// already exists: another user of a shared /tmp cannot plant files
    /// the demo would then load).
    pub(super) fn new() -> Result<Scratch, String> {
        use std::os::unix::fs::DirBuilderExt;
        let dir = std::env::temp_dir().join(format!(
            "callgate-demo-{}-{:016x}",
            std::process::id(),
            fastrand::u64(..)
        ));
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("{}: {e}", dir.display()))?;
        let write = |p: std::path::PathBuf, text: &str| {
            std::fs::create_dir_all(p.parent().unwrap_or(Path::new(".")))
                .and_then(|_| std::fs::write(&p, text))
                .map_err(|e| format!("{}: {e}", p.display()))
        };
        write(dir.join("policy.toml"), POLICY)?;
        for (name, text) in LISTS {
            write(dir.join("lists").join(name), text)?;
        }
        Ok(Scratch(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs the demo; exit 0 when every call had its expected outcome. With
/// `keep`, the console is served on a loopback port for the tour and
/// after it, until Ctrl-C.
pub fn main(keep: bool) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("demo: cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(keep)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("demo: {e}");
            ExitCode::FAILURE
        }
    }
}

/// `callgate demo --keep`: the console on a loopback port, a fresh token
/// (a file of the scratch directory, owner-only), and the audit store and
/// decision events the console's live views read.
struct Console {
    port: u16,
    token: String,
    token_file: std::path::PathBuf,
    audit: std::path::PathBuf,
}

impl Console {
    fn new(dir: &Path) -> Result<Console, String> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let token: String = (0..32)
            .map(|_| char::from(b"0123456789abcdef"[fastrand::usize(..16)]))
            .collect();
        let token_file = dir.join("admin.token");
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&token_file)
            .and_then(|mut f| f.write_all(token.as_bytes()))
            .map_err(|e| format!("{}: {e}", token_file.display()))?;
        Ok(Console {
            port: free_port()?,
            token,
            token_file,
            audit: dir.join("demo-audit.db"),
        })
    }

    /// The embedded `[admin]`'s `listen` line replaced: the console's port
    /// and its token.
    fn admin(&self) -> String {
        format!(
            "listen = \"127.0.0.1:{}\"\ntoken_file = \"{}\"",
            self.port,
            self.token_file.display()
        )
    }

    /// The sections it adds: the audit store and the decision events the
    /// console's live views read.
    fn config(&self) -> String {
        format!(
            "\n[audit]\npath = \"{}\"\n\n[events]\n",
            self.audit.display()
        )
    }
}

/// callgate started with the configuration `build` makes for a trunk and
/// a PBX port: free ports are found by binding and releasing them, so
/// another process may take one in between; then two more are tried (a
/// few times at most).
pub(super) async fn start_on_free_ports(
    build: impl Fn(u16, u16) -> Result<Config, String>,
) -> Result<(callgate::gate::Running, Config, u16, u16), String> {
    let mut last = String::new();
    for _ in 0..5 {
        let (trunk, pbx) = (free_port()?, free_port()?);
        let cfg = build(trunk, pbx)?;
        match callgate::gate::start(&cfg, None).await {
            Ok(running) => return Ok((running, cfg, trunk, pbx)),
            Err(e) if e.to_string().contains("in use") => last = e.to_string(),
            Err(e) => return Err(e.to_string()),
        }
    }
    Err(last)
}

/// A free loopback port (bound, read, released).
pub(super) fn free_port() -> Result<u16, String> {
    let s = std::net::UdpSocket::bind("127.0.0.1:0").map_err(|e| e.to_string())?;
    let p = s.local_addr().map_err(|e| e.to_string())?.port();
    std::net::TcpListener::bind(("127.0.0.1", p)).map_err(|e| format!("port {p}: {e}"))?;
    Ok(p)
}

pub(super) async fn bind() -> Result<Arc<UdpSocket>, String> {
    UdpSocket::bind("127.0.0.1:0")
        .await
        .map(Arc::new)
        .map_err(|e| e.to_string())
}

pub(super) fn port_of(s: &UdpSocket) -> u16 {
    s.local_addr().map(|a| a.port()).unwrap_or(0)
}

/// The embedded configuration with every address moved to a free port.
/// The simulated peers' ports: the PBX targets in failover order (the
/// first one silent in the demo) and the carrier's UAS.
#[derive(Debug, Clone, Copy)]
pub(super) struct Peers {
    pub(super) dead_pbx: u16,
    pub(super) live_pbx: u16,
    pub(super) carrier: u16,
}

pub(super) fn demo_config(
    trunk: u16,
    pbx: u16,
    peers: Peers,
    pki: &pki::DemoPki,
    policy: &Path,
    admin: &str,
    extra: &str,
) -> Result<Config, String> {
    let Peers {
        dead_pbx,
        live_pbx,
        carrier,
    } = peers;
    let text = callgate::config::EMBEDDED_DEFAULT
        .replace("udp = \"127.0.0.1:5060\"", &format!("udp = \"127.0.0.1:{trunk}\""))
        .replace("tcp = \"127.0.0.1:5060\"", &format!("tcp = \"127.0.0.1:{trunk}\""))
        .replace("udp = \"127.0.0.1:5062\"", &format!("udp = \"127.0.0.1:{pbx}\""))
        .replace("tcp = \"127.0.0.1:5062\"", &format!("tcp = \"127.0.0.1:{pbx}\""))
        .replace("sip:127.0.0.1:5090;transport=udp", &format!("sip:127.0.0.1:{carrier};transport=udp"))
        .replace(
            "targets = [\"sip:127.0.0.1:5080;transport=udp\"]",
            &format!("targets = [\"sip:127.0.0.1:{dead_pbx};transport=udp\", \"sip:127.0.0.1:{live_pbx};transport=udp\"]"),
        )
        .replace("interval_secs = 5", "interval_secs = 1")
        .replace("timeout_ms = 2000", "timeout_ms = 200")
        .replace("down_after = 2", "down_after = 1")
        .replace("no_response_ms = 2000", "no_response_ms = 300")
        // The admin listener: off, or the console's (`admin`).
        .replace(
            "listen = \"127.0.0.1:9060\"",
            if admin.is_empty() { "listen = \"\"" } else { admin },
        )
        .replace("drain_secs = 10", "drain_secs = 1")
        .replace(
            "enabled = false\n# trust_dir = \"/etc/callgate/sti-trust\"",
            // The x5u server is on loopback: a private address the
            // verifier refuses by default (SSRF), allowed for the demo.
            &format!(
                "enabled = true\ntrust_dir = \"{}\"\nx5u_ca = [\"{}\"]\nallow_private_x5u = true",
                pki.trust_dir.display(),
                pki.web_ca.display()
            ),
        );
    let text = format!("{text}\n[risk]\npolicy = \"{}\"\n{extra}", policy.display());
    Config::parse(&text, Path::new("sip-config/callgate.toml")).map_err(|e| e.to_string())
}

async fn run(keep: bool) -> Result<bool, String> {
    let carrier = bind().await?;
    let carrier_uas = bind().await?;
    let agent = bind().await?;
    let live_pbx = bind().await?;
    let dead_pbx = bind().await?; // bound but silent: a PBX that hangs
    let scratch = Scratch::new()?;
    let pki = pki::make(&scratch.0)?;
    let x5u = x5u::serve(&pki).await?;
    let signer = Arc::new(Signer {
        key: SigningKey::from_pem(pki.signing_key_pem.as_bytes())
            .map_err(|e| format!("demo PKI: signing key: {e}"))?,
        x5u: x5u.clone(),
    });
    let console = if keep {
        Some(Console::new(&scratch.0)?)
    } else {
        None
    };
    let (running, cfg, trunk, pbx) = start_on_free_ports(|trunk, pbx| {
        let cfg = demo_config(
            trunk,
            pbx,
            Peers {
                dead_pbx: port_of(&dead_pbx),
                live_pbx: port_of(&live_pbx),
                carrier: port_of(&carrier_uas),
            },
            &pki,
            &scratch.0.join("policy.toml"),
            &console.as_ref().map(Console::admin).unwrap_or_default(),
            &console.as_ref().map(Console::config).unwrap_or_default(),
        )?;
        Ok(cfg)
    })
    .await?;
    let metrics = running.gate.metrics.clone();
    let tags: Tags = Arc::default();
    tokio::spawn(uas(live_pbx.clone(), tags.clone()));
    tokio::spawn(uas(carrier_uas.clone(), Arc::default()));
    let trunk_addr: SocketAddr = ([127, 0, 0, 1], trunk).into();
    let pbx_addr: SocketAddr = ([127, 0, 0, 1], pbx).into();
    println!("callgate demo: callgate between a simulated carrier and PBX on loopback");
    println!("  carrier -> callgate trunk side 127.0.0.1:{trunk} -> PBX targets [127.0.0.1:{} (silent), 127.0.0.1:{}]", port_of(&dead_pbx), port_of(&live_pbx));
    println!(
        "  agents  -> callgate PBX side   127.0.0.1:{pbx} -> carrier 127.0.0.1:{}",
        port_of(&carrier_uas)
    );
    println!(
        "  STIR/SHAKEN verification on: the demo's own STI root trusted, its certificate at {x5u}; risk policy {}",
        cfg.risk
            .policy
            .as_ref()
            .map(|p| p.version.as_str())
            .unwrap_or("-")
    );
    if let Some(c) = &console {
        println!(
            "  console: http://127.0.0.1:{}/console  (token: {}; kept running after the tour, Ctrl-C to stop)",
            c.port, c.token
        );
    }
    println!();
    let ua = Ua {
        sock: carrier.clone(),
        to: trunk_addr,
        caller: "+15550199".into(),
        attest: None,
        identity: None,
        tamper: false,
        headers: Vec::new(),
    };
    let agent_ua = Ua {
        sock: agent.clone(),
        to: pbx_addr,
        ..ua.clone()
    };
    let signed = |caller: &str, attest: char| Ua {
        caller: caller.into(),
        attest: Some((attest, signer.clone())),
        ..ua.clone()
    };
    let dno = Ua {
        caller: "+15550100".into(),
        ..ua.clone()
    };
    let own = Ua {
        caller: "+15550107".into(),
        ..ua.clone()
    };
    let mut cases: Vec<(&str, Outcome)> = vec![
        (
            "inbound call; first PBX silent, fails over",
            ua.call("alice", Plan::AnswerAndHangUp).await,
        ),
        (
            "inbound call answered, carrier hangs up",
            ua.call("bob", Plan::AnswerAndHangUp).await,
        ),
        (
            "inbound call the PBX rejects (486)",
            ua.call("busy", Plan::ExpectFinal(486)).await,
        ),
        (
            "inbound call cancelled while ringing",
            ua.call("ring", Plan::CancelWhileRinging).await,
        ),
        (
            "inbound call with Max-Forwards: 0",
            ua.call("loop", Plan::MaxForwardsZero).await,
        ),
        (
            "malformed INVITE (CSeq method mismatch)",
            ua.call("bad", Plan::Malformed).await,
        ),
        (
            "agent's outbound call to the carrier",
            agent_ua.call("+15550123", Plan::AnswerAndHangUp).await,
        ),
        (
            "unsigned call from a Do-Not-Originate number",
            dno.call("sales", Plan::Refused(608)).await,
        ),
        (
            "unsigned call claiming the centre's own number",
            own.call("support", Plan::AnswerAndHangUp).await,
        ),
    ];
    // The signed tour: each call is signed with the demo PKI's key,
    // callgate fetches the certificate over HTTPS and verifies it.
    let a = signed("+15550123", 'A')
        .call(
            CENTRE,
            Plan::Tagged(
                "low, score 0, verstat TN-Validation-Passed-A, signed by Demo Telecom (SPC DEMO)",
            ),
        )
        .await;
    let replayed = Ua {
        identity: a.identity.clone(),
        ..signed("+15550123", 'A')
    };
    cases.push(("signed A: the carrier vouches for the number", a));
    cases.push((
        "signed B: the caller known, not the number",
        signed("+15550124", 'B')
            .call(
                CENTRE,
                Plan::Tagged(
                    "reasons ATTEST_B, verstat TN-Validation-Passed-B, signed by Demo Telecom",
                ),
            )
            .await,
    ));
    cases.push((
        "signed C: from a gateway, nothing vouched",
        signed("+15550125", 'C')
            .call(
                CENTRE,
                Plan::Tagged(
                    "reasons ATTEST_C, verstat TN-Validation-Passed-C, signed by Demo Telecom",
                ),
            )
            .await,
    ));
    cases.push((
        "the A call's PASSporT replayed on a new call",
        replayed.call(CENTRE, Plan::Refused(608)).await,
    ));
    let burst = signed("+15550150", 'A');
    for _ in 0..4 {
        burst.call(CENTRE, Plan::AnswerAndHangUp).await;
    }
    cases.push((
        "a 5th signed call in a minute from one number",
        burst
            .call(CENTRE, Plan::Tagged("reasons BURST_ANI_10M, step-up for"))
            .await,
    ));
    let mut ok = 0;
    for (i, (label, outcome)) in cases.iter().enumerate() {
        let seen = outcome.call_id.as_ref().and_then(|c| {
            tags.lock()
                .unwrap_or_else(|p| p.into_inner())
                .get(c)
                .cloned()
        });
        let tags_ok = outcome
            .expect
            .as_ref()
            .is_none_or(|want| seen.as_ref().is_some_and(|s| s.contains(want.as_str())));
        let verdict = if outcome.ok && tags_ok {
            "OK  "
        } else {
            "FAIL"
        };
        println!("{:>2}. {verdict} {label:<47} {}", i + 1, outcome.detail);
        if let Some(seen) = &seen {
            println!("              the PBX saw: {seen}");
        }
        if let (Some(want), false) = (&outcome.expect, tags_ok) {
            println!("              FAIL: expected the PBX to see {want:?}");
        }
        ok += usize::from(outcome.ok && tags_ok);
    }
    let text = metrics.render();
    let failovers = text
        .lines()
        .find_map(|l| l.strip_prefix("callgate_failovers_total "))
        .unwrap_or("0");
    let up = text
        .lines()
        .find_map(|l| l.strip_prefix("callgate_targets_up{side=\"pbx\"} "))
        .unwrap_or("?");
    println!();
    println!("failovers: {failovers}; PBX targets in rotation after health checks: {up} of 2");
    println!("{ok} of {} calls as expected", cases.len());
    if console.is_some() {
        println!("callgate keeps running with the console open; Ctrl-C to stop");
        if let Err(e) = tokio::signal::ctrl_c().await {
            eprintln!("demo: waiting for Ctrl-C: {e}");
        }
    }
    running.gate.start_drain();
    Ok(ok == cases.len())
}

/// What the carrier does with a call.
#[derive(Debug, Clone, Copy)]
pub(super) enum Plan {
    AnswerAndHangUp,
    /// Answered, and the PBX must have seen tags containing this.
    Tagged(&'static str),
    /// Answered (then hung up) or refused (then acknowledged): whatever
    /// callgate decides (`callgate corpus`).
    Any,
    ExpectFinal(u16),
    /// callgate's policy refuses the call with this status.
    Refused(u16),
    CancelWhileRinging,
    MaxForwardsZero,
    Malformed,
}

pub(super) struct Outcome {
    pub(super) ok: bool,
    pub(super) detail: String,
    /// The call's Call-ID, to look up what the PBX saw.
    pub(super) call_id: Option<String>,
    /// What the PBX must have seen in its tags.
    expect: Option<String>,
    /// The Identity header the INVITE carried.
    pub(super) identity: Option<String>,
}

fn outcome(ok: bool, detail: impl Into<String>) -> Outcome {
    Outcome {
        ok,
        detail: detail.into(),
        call_id: None,
        expect: None,
        identity: None,
    }
}

/// `header` with the last character of its signature changed: the
/// PASSporT no longer verifies (RFC 8225 §6).
fn tampered(header: &str) -> String {
    let end = header.find(';').unwrap_or(header.len());
    let mut out = header.to_owned();
    if let Some(last) = out[..end].chars().last() {
        let swapped = if last == 'A' { 'B' } else { 'A' };
        out.replace_range(end - last.len_utf8()..end, &swapped.to_string());
    }
    out
}

/// The centre's number the signed tour calls (a PASSporT's `dest`).
pub(super) const CENTRE: &str = "+15550101";

/// What signs the simulated carrier's INVITEs: the demo PKI's key, and
/// where its certificate is.
pub(super) struct Signer {
    pub(super) key: SigningKey,
    pub(super) x5u: String,
}

/// A simulated caller sending to callgate at `to` as `caller`.
#[derive(Clone)]
pub(super) struct Ua {
    pub(super) sock: Arc<UdpSocket>,
    pub(super) to: SocketAddr,
    pub(super) caller: String,
    /// Signs each INVITE with this attestation (RFC 8588); `None`: unsigned.
    pub(super) attest: Option<(char, Arc<Signer>)>,
    /// An Identity header sent as is (a replayed PASSporT).
    pub(super) identity: Option<String>,
    /// The signature of each PASSporT altered after signing (a PASSporT
    /// tampered with in transit).
    pub(super) tamper: bool,
    /// Header lines added to each INVITE, as the carrier sent them.
    pub(super) headers: Vec<String>,
}

impl Ua {
    fn local(&self) -> u16 {
        port_of(&self.sock)
    }

    async fn send(&self, text: &str) -> Result<(), String> {
        self.sock
            .send_to(text.as_bytes(), self.to)
            .await
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// The next response for `call_id`, within 3 s.
    async fn response(&self, call_id: &str) -> Result<SipMessage, String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(3);
        let mut buf = vec![0u8; 65_535];
        loop {
            let (n, _) = tokio::time::timeout_at(deadline, self.sock.recv_from(&mut buf))
                .await
                .map_err(|_| "no response within 3 s".to_owned())?
                .map_err(|e| e.to_string())?;
            let Ok(msg) = SipMessage::parse(Bytes::copy_from_slice(&buf[..n]), &Limits::default())
            else {
                continue;
            };
            if msg.status().is_some() && msg.call_id() == Some(call_id.as_bytes()) {
                return Ok(msg);
            }
        }
    }

    /// The next final response (≥ 200) for `call_id`, collecting provisionals.
    async fn final_response(
        &self,
        call_id: &str,
        seen: &mut Vec<u16>,
    ) -> Result<SipMessage, String> {
        loop {
            let r = self.response(call_id).await?;
            let st = r.status().unwrap_or(0);
            seen.push(st);
            if st >= 200 {
                return Ok(r);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn request(
        &self,
        method: &str,
        ruri: &str,
        call_id: &str,
        cseq: u32,
        branch: &str,
        extra: &str,
        to_tag: &str,
        body: &str,
    ) -> String {
        let local = self.local();
        let caller = &self.caller;
        let ctype = if body.is_empty() {
            ""
        } else {
            "Content-Type: application/sdp\r\n"
        };
        format!(
            "{method} {ruri} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:{local};branch=z9hG4bK-{call_id}-{branch};rport\r\nMax-Forwards: 70\r\n{extra}From: <sip:{caller}@127.0.0.1>;tag=demo-{call_id}\r\nTo: <{ruri}>{to_tag}\r\nCall-ID: {call_id}\r\nCSeq: {cseq} {method}\r\nContact: <sip:caller@127.0.0.1:{local}>\r\n{ctype}Content-Length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    pub(super) async fn call(&self, user: &str, plan: Plan) -> Outcome {
        let call_id = format!("demo-{user}-{}", fastrand::u32(..));
        let identity = match self.identity_for(user) {
            Ok(i) => i,
            Err(e) => return outcome(false, e),
        };
        let mut o = match self
            .try_call(user, plan, &call_id, identity.as_deref())
            .await
        {
            Ok(o) => o,
            Err(e) => outcome(false, e),
        };
        o.call_id = Some(call_id);
        o.identity = identity;
        if let Plan::Tagged(want) = plan {
            o.expect = Some(want.to_owned());
        }
        o
    }

    /// The Identity header value of an INVITE to `user`: the one to
    /// replay, or a fresh SHAKEN PASSporT (RFC 8588) from `caller` to
    /// `user`, or none.
    fn identity_for(&self, user: &str) -> Result<Option<String>, String> {
        if let Some(id) = &self.identity {
            return Ok(Some(id.clone()));
        }
        let Some((attest, signer)) = &self.attest else {
            return Ok(None);
        };
        let iat = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let origid = callgate::stir::sign::new_origid();
        let request = callgate::stir::sign::SignRequest {
            orig: &self.caller,
            dest: user,
            attest: *attest,
            origid: &origid,
            x5u: &signer.x5u,
            iat,
        };
        let header = callgate::stir::sign::identity_header(&signer.key, &request)
            .map_err(|e| format!("signing: {e}"))?;
        Ok(Some(if self.tamper {
            tampered(&header)
        } else {
            header
        }))
    }

    async fn try_call(
        &self,
        user: &str,
        plan: Plan,
        call_id: &str,
        identity: Option<&str>,
    ) -> Result<Outcome, String> {
        let mut identity = identity
            .map(|i| format!("Identity: {i}\r\n"))
            .unwrap_or_default();
        for h in &self.headers {
            identity.push_str(h);
            identity.push_str("\r\n");
        }
        let call_id = call_id.to_owned();
        let ruri = format!("sip:{user}@{}", self.to);
        let started = Instant::now();
        let mut seen = Vec::new();
        let invite = match plan {
            Plan::MaxForwardsZero => self
                .request("INVITE", &ruri, &call_id, 1, "i1", "", "", SDP)
                .replace("Max-Forwards: 70", "Max-Forwards: 0"),
            Plan::Malformed => self
                .request("INVITE", &ruri, &call_id, 1, "i1", "", "", SDP)
                .replace("CSeq: 1 INVITE", "CSeq: 1 OPTIONS"),
            _ => self.request("INVITE", &ruri, &call_id, 1, "i1", &identity, "", SDP),
        };
        self.send(&invite).await?;
        if let Plan::CancelWhileRinging = plan {
            loop {
                let r = self.response(&call_id).await?;
                seen.push(r.status().unwrap_or(0));
                if r.status() == Some(180) {
                    break;
                }
            }
            self.send(&self.request("CANCEL", &ruri, &call_id, 1, "i1", "", "", ""))
                .await?;
            let c = self.response(&call_id).await?;
            seen.push(c.status().unwrap_or(0));
            let fin = self.final_response(&call_id, &mut seen).await?;
            let tag = fin
                .to()
                .ok()
                .and_then(|t| t.tag())
                .map(|t| format!(";tag={}", String::from_utf8_lossy(t)))
                .unwrap_or_default();
            self.send(&self.request("ACK", &ruri, &call_id, 1, "i1", "", &tag, ""))
                .await?;
            let ok = c.status() == Some(200) && fin.status() == Some(487);
            return Ok(outcome(
                ok,
                format!("responses {seen:?}: 200 to CANCEL, 487 to INVITE"),
            ));
        }
        let fin = self.final_response(&call_id, &mut seen).await?;
        let st = fin.status().unwrap_or(0);
        match plan {
            Plan::ExpectFinal(_)
            | Plan::Refused(_)
            | Plan::MaxForwardsZero
            | Plan::Malformed
            | Plan::Any
                if st >= 300 =>
            {
                let want = match plan {
                    Plan::ExpectFinal(w) | Plan::Refused(w) => w,
                    Plan::MaxForwardsZero => 483,
                    Plan::Any => st,
                    _ => 400,
                };
                let tag = fin
                    .to()
                    .ok()
                    .and_then(|t| t.tag())
                    .map(|t| format!(";tag={}", String::from_utf8_lossy(t)))
                    .unwrap_or_default();
                if st != 400 {
                    self.send(&self.request("ACK", &ruri, &call_id, 1, "i1", "", &tag, ""))
                        .await?;
                }
                let who = match plan {
                    Plan::ExpectFinal(_) => "from the PBX",
                    Plan::Any => "",
                    Plan::Refused(_) => "from callgate's risk policy; never reached the PBX",
                    _ => "from callgate; never reached the PBX",
                };
                Ok(outcome(
                    st == want,
                    format!("responses {seen:?}: {st} {who}"),
                ))
            }
            Plan::AnswerAndHangUp | Plan::Tagged(_) | Plan::Any if (200..300).contains(&st) => {
                let answer_ms = started.elapsed().as_secs_f64() * 1000.0;
                // Route set: the Record-Route of the 2xx, reversed (§12.1.2).
                let rr: Vec<&[u8]> = fin.values(HeaderName::RecordRoute).collect();
                let route: Vec<String> = rr
                    .iter()
                    .rev()
                    .map(|r| String::from_utf8_lossy(r).into_owned())
                    .collect();
                let target = fin
                    .first(HeaderName::Contact)
                    .and_then(|c| callgate::sip::uri::NameAddr::parse(c).ok())
                    .map(|n| String::from_utf8_lossy(n.uri).into_owned())
                    .ok_or("2xx without Contact")?;
                let tag = fin
                    .to()
                    .ok()
                    .and_then(|t| t.tag())
                    .map(|t| format!(";tag={}", String::from_utf8_lossy(t)))
                    .unwrap_or_default();
                let route_hdr = if route.is_empty() {
                    String::new()
                } else {
                    format!("Route: {}\r\n", route.join(", "))
                };
                let ack = self
                    .request("ACK", &target, &call_id, 1, "a1", &route_hdr, &tag, "")
                    .replace(&format!("To: <{target}>"), &format!("To: <{ruri}>"));
                self.send(&ack).await?;
                if !matches!(plan, Plan::Any) {
                    // A moment of conversation, as a person would have.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                let bye = self
                    .request("BYE", &target, &call_id, 2, "b1", &route_hdr, &tag, "")
                    .replace(&format!("To: <{target}>"), &format!("To: <{ruri}>"));
                self.send(&bye).await?;
                let bye_ok = self.response(&call_id).await?.status() == Some(200);
                Ok(outcome(
                    bye_ok && rr.len() == 2,
                    format!("responses {seen:?} in {answer_ms:.1} ms; ACK and BYE routed through {} Record-Routes; BYE answered 200", rr.len()),
                ))
            }
            _ => Ok(outcome(false, format!("unexpected responses {seen:?}"))),
        }
    }
}

/// A simulated PBX (or carrier) answering calls, by Request-URI user:
/// `busy` → 486; `ring` → 180 until CANCEL → 487; anything else → 180, 200.
pub(super) async fn uas(sock: Arc<UdpSocket>, tags: Tags) {
    let port = port_of(&sock);
    let mut buf = vec![0u8; 65_535];
    let mut ringing: HashMap<Vec<u8>, SipMessage> = HashMap::new();
    loop {
        let Ok((n, from)) = sock.recv_from(&mut buf).await else {
            continue;
        };
        let Ok(req) = SipMessage::parse(Bytes::copy_from_slice(&buf[..n]), &Limits::default())
        else {
            continue;
        };
        let Some(method) = req.method_bytes().map(<[u8]>::to_vec) else {
            continue;
        };
        let user = req
            .request_uri()
            .and_then(|u| callgate::sip::uri::Uri::parse(u).ok())
            .and_then(|u| u.user.map(<[u8]>::to_vec))
            .unwrap_or_default();
        if method == b"INVITE" {
            remember_tags(&req, &user, &tags);
        }
        let mut replies: Vec<String> = Vec::new();
        match method.as_slice() {
            b"INVITE" if user == b"busy" => {
                replies.push(reply(&req, "486 Busy Here", false, "", port))
            }
            b"INVITE" if user == b"ring" => {
                replies.push(reply(&req, "180 Ringing", true, "", port));
                ringing.insert(req.call_id().unwrap_or_default().to_vec(), req.clone());
            }
            b"INVITE" => {
                replies.push(reply(&req, "180 Ringing", true, "", port));
                replies.push(reply(&req, "200 OK", true, SDP, port));
            }
            b"CANCEL" => {
                replies.push(reply(&req, "200 OK", false, "", port));
                if let Some(inv) = ringing.remove(req.call_id().unwrap_or_default()) {
                    replies.push(reply(&inv, "487 Request Terminated", false, "", port));
                }
            }
            b"ACK" => {}
            _ => replies.push(reply(&req, "200 OK", false, "", port)),
        }
        for r in replies {
            let _ = sock.send_to(r.as_bytes(), from).await;
        }
    }
}

/// Notes the risk tags of an INVITE as the agent's desktop would show them.
fn remember_tags(req: &SipMessage, user: &[u8], tags: &Tags) {
    let get = |name: &str| {
        req.other(name)
            .next()
            .map(|v| String::from_utf8_lossy(v).into_owned())
    };
    let Some(risk) = get("X-Callgate-Risk") else {
        return;
    };
    let level_score: String = risk
        .split(";policy=")
        .next()
        .unwrap_or_default()
        .replace(";score=", ", score ");
    let mut seen = level_score;
    if let Some(r) = get("X-Callgate-Reasons") {
        seen.push_str(&format!(", reasons {r}"));
    }
    if let Some(r) = get("X-Callgate-Restrict") {
        seen.push_str(&format!(", step-up for {r}"));
    }
    // The verification result as the PBX reads it (RFC 8224 §6.2.2.1).
    let verstat = [HeaderName::PAssertedIdentity, HeaderName::From]
        .into_iter()
        .flat_map(|h| req.values(h))
        .find_map(|v| {
            let v = String::from_utf8_lossy(v);
            let at = v.find("verstat=")? + "verstat=".len();
            let rest = &v[at..];
            let end = rest.find([';', '>', ',', ' ']).unwrap_or(rest.len());
            Some(rest[..end].to_owned())
        });
    if let Some(v) = verstat {
        seen.push_str(&format!(", verstat {v}"));
    }
    // Who signed, as the verification text names a verified signer.
    if let Some(by) = get("X-Callgate-Verify-Text").and_then(|t| {
        let at = t.find(", signed by ")? + 2;
        let end = t[at..].find(". Attestation")?;
        Some(t[at..at + end].to_owned())
    }) {
        seen.push_str(&format!(", {by}"));
    }
    if user == b"fraud-review" {
        seen.push_str(" -> routed to the review queue");
    }
    tags.lock().unwrap_or_else(|p| p.into_inner()).insert(
        String::from_utf8_lossy(req.call_id().unwrap_or_default()).into_owned(),
        seen,
    );
}

/// A response copying Via, From, To (+ our tag), Call-ID, CSeq and, for
/// dialog-creating responses, Record-Route (§12.1.1).
fn reply(req: &SipMessage, status: &str, dialog: bool, body: &str, port: u16) -> String {
    let mut out = format!("SIP/2.0 {status}\r\n");
    for h in req.headers() {
        let keep = match h.name {
            HeaderName::Via | HeaderName::From | HeaderName::CallId | HeaderName::CSeq => true,
            HeaderName::RecordRoute => dialog,
            _ => false,
        };
        if keep {
            out.push_str(&String::from_utf8_lossy(req.slice(&h.line)));
        }
    }
    let to = String::from_utf8_lossy(req.first(HeaderName::To).unwrap_or_default()).into_owned();
    let tag = if to.contains("tag=") {
        String::new()
    } else {
        ";tag=uas".to_owned()
    };
    out.push_str(&format!(
        "To: {to}{tag}\r\nContact: <sip:agent@127.0.0.1:{port}>\r\n"
    ));
    if !body.is_empty() {
        out.push_str("Content-Type: application/sdp\r\n");
    }
    out.push_str(&format!("Content-Length: {}\r\n\r\n{body}", body.len()));
    out
}
