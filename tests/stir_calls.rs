//! STIR/SHAKEN verification in the call path: INVITEs from the trunk reach
//! the PBX marked with `verstat` (forged marks removed), failed ones carry
//! `Reason: STIR` or are refused, and a hanging certificate server never
//! holds a call past the deadline.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use callgate::stir::sign::{identity_header, SignRequest};
use common::pki::{https_server, pki, Pki};
use common::{config, Callgate, Ports, LOOPBACK};

fn udp() -> UdpSocket {
    let s = UdpSocket::bind((LOOPBACK, 0)).expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(5))).ok();
    s
}

fn recv_starting(s: &UdpSocket, prefix: &str) -> String {
    let mut buf = vec![0u8; 65_535];
    for _ in 0..20 {
        let (n, _) = s.recv_from(&mut buf).expect("datagram within 5 s");
        let m = String::from_utf8_lossy(&buf[..n]).into_owned();
        if m.starts_with(prefix) {
            return m;
        }
    }
    panic!("no message starting with {prefix:?}");
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A SHAKEN Identity header for a new call. Each has its own `origid`, as
/// two calls signed in the same second from and to the same numbers would
/// otherwise be one PASSporT (replay detection keys on the signed content).
fn identity(pki: &Pki, port: u16, path: &str) -> String {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let x5u = format!("https://127.0.0.1:{port}{path}");
    let origid = format!("123e4567-e89b-12d3-a456-{n:012}");
    let req = SignRequest {
        orig: "+15550199",
        dest: "+15550100",
        attest: 'A',
        origid: &origid,
        x5u: &x5u,
        iat: now(),
    };
    identity_header(&pki.signing, &req).expect("sign")
}

/// An INVITE from the carrier with a forged verstat and forged Reason.
fn invite(call: &str, from_port: u16, identity: Option<&str>) -> String {
    let id = identity
        .map(|i| format!("Identity: {i}\r\n"))
        .unwrap_or_default();
    format!(
        "INVITE sip:+15550100@{LOOPBACK} SIP/2.0\r\nVia: SIP/2.0/UDP {LOOPBACK}:{from_port};branch=z9hG4bK-{call};rport\r\nMax-Forwards: 70\r\nFrom: <sip:+15550199@carrier.example>;tag=t-{call}\r\nTo: <sip:+15550100@{LOOPBACK}>\r\nP-Asserted-Identity: <sip:+15550199@carrier.example;user=phone;verstat=TN-Validation-Passed>\r\nReason: STIR;cause=999;text=\"forged\"\r\nCall-ID: {call}\r\nCSeq: 1 INVITE\r\nContact: <sip:+15550199@{LOOPBACK}:{from_port}>\r\n{id}Content-Length: 0\r\n\r\n"
    )
}

fn start(pki: &Pki, on_failure: &str) -> (Callgate, UdpSocket) {
    let pbx = udp();
    let pbx_port = pbx.local_addr().expect("addr").port();
    let ports = Ports::new();
    // 2 s: the first fetch of each x5u (a TLS handshake with the test
    // server, in a debug build) must finish within the deadline on a busy
    // machine, or the "good" call comes out unverified; the hanging server's
    // calls wait the whole deadline.
    let stir = format!(
        "[stir]\nenabled = true\ntrust_dir = \"{}\"\nx5u_ca = [\"{}\"]\nallow_private_x5u = true\ndeadline_ms = 2000\non_failure = \"{on_failure}\"\n",
        pki.trust_dir.display(),
        pki.web_ca.display()
    );
    let cfg = config(
        ports,
        &[format!("sip:127.0.0.1:{pbx_port}")],
        &["sip:127.0.0.1:9".to_owned()],
        &stir,
    );
    (Callgate::start(ports, &cfg), pbx)
}

/// Sends an INVITE and returns the INVITE the PBX side received.
fn through(cg: &Callgate, pbx: &UdpSocket, call: &str, identity: Option<&str>) -> String {
    through_to(cg, pbx, call, identity, "+15550100")
}

/// As [`through`], for another called number (Request-URI and To).
fn through_to(
    cg: &Callgate,
    pbx: &UdpSocket,
    call: &str,
    identity: Option<&str>,
    called: &str,
) -> String {
    send_expecting_trying(cg, call, identity, called);
    forwarded(pbx, call)
}

/// Sends an INVITE from a new carrier socket; returns once its 100 Trying
/// came back.
fn send_expecting_trying(cg: &Callgate, call: &str, identity: Option<&str>, called: &str) {
    let carrier = udp();
    let port = carrier.local_addr().expect("addr").port();
    let msg = invite(call, port, identity).replace("+15550100@", &format!("{called}@"));
    carrier.send_to(msg.as_bytes(), cg.trunk()).expect("send");
    assert!(recv_starting(&carrier, "SIP/2.0 100").contains(call));
}

/// The INVITE of `call` the PBX side received.
fn forwarded(pbx: &UdpSocket, call: &str) -> String {
    // The PBX stand-in never answers, so earlier INVITEs are retransmitted
    // to it: wait for this call's.
    for _ in 0..20 {
        let fwd = recv_starting(pbx, "INVITE ");
        if fwd.contains(&format!("Call-ID: {call}\r\n")) {
            return fwd;
        }
    }
    panic!("{call} never reached the PBX side");
}

fn pai(msg: &str) -> &str {
    msg.lines()
        .find(|l| l.starts_with("P-Asserted-Identity:"))
        .unwrap_or("")
}

#[test]
fn inbound_calls_are_marked_with_verstat() {
    let pki = pki();
    let (port, _) = https_server(&pki);
    let (cg, pbx) = start(&pki, "mark");

    let good = through(
        &cg,
        &pbx,
        "stir-good",
        Some(&identity(&pki, port, "/good.pem")),
    );
    assert_eq!(pai(&good), "P-Asserted-Identity: <sip:+15550199@carrier.example;user=phone;verstat=TN-Validation-Passed-A>");
    assert!(
        !good.contains("Reason: STIR"),
        "the forged Reason is removed: {good}"
    );

    let tampered = identity(&pki, port, "/good.pem").replacen('.', ".e", 1);
    let bad = through(&cg, &pbx, "stir-bad", Some(&tampered));
    assert!(
        pai(&bad).contains(";verstat=TN-Validation-Failed>"),
        "{bad}"
    );
    assert!(bad.contains("Reason: STIR;cause=438;text="), "{bad}");
    assert!(!bad.contains("cause=999"));

    let unsigned = through(&cg, &pbx, "stir-none", None);
    assert!(
        pai(&unsigned).contains(";verstat=No-TN-Validation>"),
        "{unsigned}"
    );

    // A certificate server that hangs: the caller gets its 100 Trying at
    // once, while the INVITE waits for the deadline (not with the forward,
    // as when the phases finish at once); then the call goes on,
    // unvalidated.
    send_expecting_trying(
        &cg,
        "stir-hang",
        Some(&identity(&pki, port, "/hang.pem")),
        "+15550100",
    );
    pbx.set_nonblocking(true).expect("nonblocking");
    let mut buf = vec![0u8; 65_535];
    while let Ok((n, _)) = pbx.recv_from(&mut buf) {
        assert!(
            !String::from_utf8_lossy(&buf[..n]).contains("Call-ID: stir-hang\r\n"),
            "forwarded before the 100 Trying"
        );
    }
    pbx.set_nonblocking(false).expect("blocking");
    let hanging = forwarded(&pbx, "stir-hang");
    assert!(
        pai(&hanging).contains(";verstat=No-TN-Validation>"),
        "{hanging}"
    );

    // A diverted call (RFC 8946): signed for +15550100, now for +15550200,
    // with the diverting service's div PASSporT as a second Identity.
    let div = callgate::stir::sign::div_header(
        &pki.signing,
        &callgate::stir::sign::DivRequest {
            orig: "+15550199",
            dest: "+15550200",
            div: "+15550100",
            x5u: &format!("https://127.0.0.1:{port}/good.pem"),
            iat: now(),
        },
    )
    .expect("sign div");
    let both = format!("{}\r\nIdentity: {div}", identity(&pki, port, "/good.pem"));
    let diverted = through_to(&cg, &pbx, "stir-div", Some(&both), "+15550200");
    assert!(
        pai(&diverted).contains(";verstat=TN-Validation-Passed-A>"),
        "{diverted}"
    );

    let m = cg.metrics();
    // One fetch of /good.pem served every call that named it.
    assert_eq!(
        common::metric_value(
            &m,
            "callgate_stir_fetches_total{kind=\"x5u\",result=\"ok\"}"
        ),
        1.0,
        "{m}"
    );
    for (status, n) in [("passed", 2.0), ("failed", 1.0), ("no-validation", 2.0)] {
        assert_eq!(
            common::metric_value(
                &m,
                &format!("callgate_stir_verifications_total{{status=\"{status}\"}}")
            ),
            n,
            "{m}"
        );
    }
}

#[test]
fn failed_calls_are_refused_when_configured() {
    let pki = pki();
    let (port, _) = https_server(&pki);
    let (cg, pbx) = start(&pki, "reject");
    let carrier = udp();
    let local = carrier.local_addr().expect("addr").port();
    let stale = {
        let x5u = format!("https://127.0.0.1:{port}/good.pem");
        let req = SignRequest {
            orig: "+15550199",
            dest: "+15550100",
            attest: 'A',
            origid: "o",
            x5u: &x5u,
            iat: now() - 3600,
        };
        identity_header(&pki.signing, &req).expect("sign")
    };
    carrier
        .send_to(
            invite("stir-stale", local, Some(&stale)).as_bytes(),
            cg.trunk(),
        )
        .expect("send");
    let refused = recv_starting(&carrier, "SIP/2.0 403");
    assert!(refused.starts_with("SIP/2.0 403 Stale Date"), "{refused}");
    // A valid call still goes through.
    let good = through(
        &cg,
        &pbx,
        "stir-ok",
        Some(&identity(&pki, port, "/good.pem")),
    );
    assert!(pai(&good).contains("TN-Validation-Passed-A"));
}

#[test]
fn a_passport_replayed_on_another_call_fails() {
    let pki = pki();
    let (port, _) = https_server(&pki);
    let (cg, pbx) = start(&pki, "mark");
    let id = identity(&pki, port, "/good.pem");
    let first = through(&cg, &pbx, "replay-1", Some(&id));
    assert!(pai(&first).contains("TN-Validation-Passed-A"), "{first}");
    let second = through(&cg, &pbx, "replay-2", Some(&id));
    assert!(pai(&second).contains("TN-Validation-Failed"), "{second}");
    assert!(
        second.contains(
            "Reason: STIR;cause=438;text=\"replay: PASSporT already used by call replay-1\""
        ),
        "{second}"
    );
}

/// Sends `msg` (an INVITE of `call`) from a new carrier socket and returns
/// the INVITE the PBX side received with `from_tag` (not a retransmission
/// of an earlier INVITE of the same Call-ID).
fn send_raw(cg: &Callgate, pbx: &UdpSocket, call: &str, from_tag: &str, msg: &str) -> String {
    let carrier = udp();
    carrier.send_to(msg.as_bytes(), cg.trunk()).expect("send");
    assert!(recv_starting(&carrier, "SIP/2.0 100").contains(call));
    for _ in 0..20 {
        let fwd = forwarded(pbx, call);
        if fwd.contains(&format!(";tag={from_tag}\r\n")) {
            return fwd;
        }
    }
    panic!("{call} with From tag {from_tag} never reached the PBX side");
}

/// A captured INVITE resent with its Call-ID but a new transaction (Via
/// branch) and a new From tag is a new call, so its PASSporT is a replay
/// (issue 13: only the Call-ID was compared, and such a resend passed).
#[test]
fn a_captured_invite_resent_with_a_new_branch_and_from_tag_is_a_replay() {
    let pki = pki();
    let (port, _) = https_server(&pki);
    let (cg, pbx) = start(&pki, "mark");
    let id = identity(&pki, port, "/good.pem");
    let captured = invite("captured-1", 5999, Some(&id));
    let first = send_raw(&cg, &pbx, "captured-1", "t-captured-1", &captured);
    assert!(pai(&first).contains("TN-Validation-Passed-A"), "{first}");
    let resent = captured
        .replace("branch=z9hG4bK-captured-1", "branch=z9hG4bK-attacker-2")
        .replace("tag=t-captured-1", "tag=attacker-2");
    assert_ne!(resent, captured);
    let second = send_raw(&cg, &pbx, "captured-1", "attacker-2", &resent);
    assert!(pai(&second).contains("TN-Validation-Failed"), "{second}");
    assert!(
        second.contains("text=\"replay: PASSporT already used by call captured-1\""),
        "{second}"
    );
    assert_eq!(cg.metric("callgate_stir_replays_total"), 1.0);
}

/// The order of the P-256 group (FIPS 186-4 D.1.2.3), big-endian.
const P256_N: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xbc, 0xe6, 0xfa, 0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// `n - s` for a big-endian scalar `s < n`.
fn negate_scalar(s: &[u8]) -> Vec<u8> {
    let mut out = vec![0u8; 32];
    let mut borrow = 0i16;
    for i in (0..32).rev() {
        let mut d = i16::from(P256_N[i]) - i16::from(s[i]) - borrow;
        borrow = i16::from(d < 0);
        if d < 0 {
            d += 256;
        }
        out[i] = d as u8;
    }
    assert_eq!(borrow, 0, "s < n");
    out
}

/// The Identity header with its ES256 signature `(r, s)` replaced by the
/// equally valid `(r, n - s)`: a different token for the same PASSporT.
fn malleated(identity: &str) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let (token, params) = identity.split_once(';').expect("identity params");
    let (input, sig) = token.rsplit_once('.').expect("signature");
    let sig = b64.decode(sig).expect("base64url signature");
    assert_eq!(sig.len(), 64, "ES256 JWS signature is r || s");
    let mut other = sig[..32].to_vec();
    other.extend(negate_scalar(&sig[32..]));
    assert_ne!(other, sig);
    format!("{input}.{};{params}", b64.encode(other))
}

/// ECDSA malleability: `(r, n - s)` verifies like `(r, s)`; keyed on the
/// signature, it made a fresh replay key (issue 13). Keyed on the signed
/// content, it is caught.
#[test]
fn a_malleated_signature_is_still_the_same_passport() {
    let pki = pki();
    let (port, _) = https_server(&pki);
    let (cg, pbx) = start(&pki, "mark");
    let id = identity(&pki, port, "/good.pem");
    let first = through(&cg, &pbx, "malleable-1", Some(&id));
    assert!(pai(&first).contains("TN-Validation-Passed-A"), "{first}");
    // The twin verifies on its own: a call that has not seen the original
    // passes it (so the failure below is the replay, not a bad signature).
    let twin = malleated(&id);
    let (cg2, pbx2) = start(&pki, "mark");
    let alone = through(&cg2, &pbx2, "malleable-alone", Some(&twin));
    assert!(pai(&alone).contains("TN-Validation-Passed-A"), "{alone}");
    let second = through(&cg, &pbx, "malleable-2", Some(&twin));
    assert!(pai(&second).contains("TN-Validation-Failed"), "{second}");
    assert!(
        second.contains("replay: PASSporT already used by call malleable-1"),
        "{second}"
    );
}

/// A PASSporT that fails verification is not remembered: an attacker who
/// saw a PASSporT cannot burn it by sending it first in a failing call
/// (a wrong called number), making the real call look like a replay.
#[test]
fn a_failing_passport_is_not_claimed() {
    let pki = pki();
    let (port, _) = https_server(&pki);
    let (cg, pbx) = start(&pki, "mark");
    let id = identity(&pki, port, "/good.pem");
    let burn = through_to(&cg, &pbx, "burn-1", Some(&id), "+15550555");
    assert!(pai(&burn).contains("TN-Validation-Failed"), "{burn}");
    let real = through(&cg, &pbx, "real-1", Some(&id));
    assert!(pai(&real).contains("TN-Validation-Passed-A"), "{real}");
    assert_eq!(cg.metric("callgate_stir_replays_total"), 0.0);
}

#[test]
fn agents_outbound_calls_are_signed_and_pbx_identity_is_never_forwarded() {
    use callgate::stir::keys::PublicKey;
    use callgate::stir::passport::Expect;
    use callgate::stir::verify::{verify, Status};
    let key = rcgen::KeyPair::generate().expect("key");
    let dir = tempfile::tempdir().expect("tempdir");
    let key_file = dir.path().join("sign.pem");
    std::fs::write(&key_file, key.serialize_pem()).expect("write key");
    // Owner-only, as callgate demands of a signing key.
    std::fs::set_permissions(
        &key_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )
    .expect("chmod 600");
    let carrier = udp();
    let carrier_port = carrier.local_addr().expect("addr").port();
    let ports = Ports::new();
    let stir = format!(
        "[stir]\nsign = true\nsign_key = \"{}\"\nsign_x5u = \"https://cert.contact-centre.example/sti.pem\"\nsign_full_attestation_prefixes = [\"1555\"]\nsign_other_attestation = \"C\"\n",
        key_file.display()
    );
    let cfg = config(
        ports,
        &["sip:127.0.0.1:9".to_owned()],
        &[format!("sip:127.0.0.1:{carrier_port}")],
        &stir,
    );
    let cg = Callgate::start(ports, &cfg);
    let public = PublicKey::from_pem(key.public_key_pem().as_bytes()).expect("public key");
    for (call, from, attest) in [
        ("out-own", "+15550123", "A"),
        ("out-other", "+442071234567", "C"),
    ] {
        let agent = udp();
        let port = agent.local_addr().expect("addr").port();
        let invite = format!(
            "INVITE sip:+15559876@{LOOPBACK} SIP/2.0\r\nVia: SIP/2.0/UDP {LOOPBACK}:{port};branch=z9hG4bK-{call};rport\r\nMax-Forwards: 70\r\nFrom: <sip:{from}@pbx.example>;tag=t\r\nTo: <sip:+15559876@{LOOPBACK}>\r\nCall-ID: {call}\r\nCSeq: 1 INVITE\r\nContact: <sip:agent@{LOOPBACK}:{port}>\r\nIdentity: forged.by.pbx;info=<https://evil.example/x.pem>;alg=ES256;ppt=shaken\r\nContent-Length: 0\r\n\r\n"
        );
        agent.send_to(invite.as_bytes(), cg.pbx()).expect("send");
        let fwd = loop {
            let m = recv_starting(&carrier, "INVITE ");
            if m.contains(&format!("Call-ID: {call}\r\n")) {
                break m;
            }
        };
        let ids: Vec<&str> = fwd
            .lines()
            .filter_map(|l| l.trim_end().strip_prefix("Identity: "))
            .collect();
        assert_eq!(ids.len(), 1, "exactly one Identity, callgate's: {fwd}");
        assert!(!fwd.contains("forged.by.pbx"));
        let expect = Expect {
            orig: from,
            dest: &["15559876"],
            now: now(),
            freshness_secs: 60,
            skew_secs: 5,
        };
        let v = verify(ids[0].as_bytes(), &expect, &public);
        assert_eq!(v.status, Status::Passed, "{v:#?}");
        assert_eq!(v.attest.as_deref(), Some(attest));
    }
}

#[test]
fn preloaded_certificates_serve_calls_and_stir_settings_reload() {
    let pki = pki();
    let (port, _) = https_server(&pki);
    // A chain for an x5u nobody serves: only the pre-load can provide it.
    let preload = pki._dir.path().join("preload");
    std::fs::create_dir(&preload).expect("mkdir");
    let offline_x5u = "https://127.0.0.1:1/preloaded.pem";
    let mut file = format!("# x5u: {offline_x5u}\n").into_bytes();
    file.extend_from_slice(&pki.routes["/good.pem"]);
    std::fs::write(preload.join("sp.pem"), file).expect("write");
    let pbx = udp();
    let pbx_port = pbx.local_addr().expect("addr").port();
    let ports = Ports::new();
    let stir = |on_failure: &str| {
        format!(
            "[stir]\nenabled = true\ntrust_dir = \"{}\"\nx5u_ca = [\"{}\"]\nallow_private_x5u = true\ndeadline_ms = 2000\non_failure = \"{on_failure}\"\npreload_dir = \"{}\"\n",
            pki.trust_dir.display(),
            pki.web_ca.display(),
            preload.display()
        )
    };
    let cfg = |on_failure: &str| {
        config(
            ports,
            &[format!("sip:127.0.0.1:{pbx_port}")],
            &["sip:127.0.0.1:9".to_owned()],
            &stir(on_failure),
        )
    };
    let cg = Callgate::start(ports, &cfg("mark"));
    let signed_offline = {
        let req = SignRequest {
            orig: "+15550199",
            dest: "+15550100",
            attest: 'B',
            origid: "123e4567-e89b-12d3-a456-426655440009",
            x5u: offline_x5u,
            iat: now(),
        };
        identity_header(&pki.signing, &req).expect("sign")
    };
    let fwd = through(&cg, &pbx, "preloaded", Some(&signed_offline));
    assert!(
        pai(&fwd).contains(";verstat=TN-Validation-Passed-B>"),
        "{fwd}"
    );

    // Reload into reject mode: a failing call is now refused.
    std::fs::write(&cg.config_path, cfg("reject")).expect("rewrite config");
    assert_eq!(cg.admin("POST", "/reload"), (200, "reloaded\n".to_owned()));
    let carrier = udp();
    let local = carrier.local_addr().expect("addr").port();
    let tampered = identity(&pki, port, "/good.pem").replacen('.', ".e", 1);
    carrier
        .send_to(
            invite("after-reload", local, Some(&tampered)).as_bytes(),
            cg.trunk(),
        )
        .expect("send");
    let refused = recv_starting(&carrier, "SIP/2.0 438");
    assert!(refused.contains("after-reload"), "{refused}");

    // A broken [stir] on reload is refused, naming the key; the running
    // settings stay (the pre-loaded certificate still serves calls).
    let broken = cfg("reject").replace(
        "deadline_ms = 2000",
        "deadline_ms = 2000\ncertificate_policies = [\"not-an-oid\"]",
    );
    std::fs::write(&cg.config_path, broken).expect("rewrite config");
    let (code, body) = cg.admin("POST", "/reload");
    assert_eq!(code, 422, "{body}");
    assert!(body.contains("stir.certificate_policies[0]"), "{body}");
    let again = {
        let req = SignRequest {
            orig: "+15550199",
            dest: "+15550100",
            attest: 'B',
            origid: "123e4567-e89b-12d3-a456-42665544000a",
            x5u: offline_x5u,
            iat: now(),
        };
        identity_header(&pki.signing, &req).expect("sign")
    };
    let fwd = through(&cg, &pbx, "preloaded-again", Some(&again));
    assert!(
        pai(&fwd).contains(";verstat=TN-Validation-Passed-B>"),
        "{fwd}"
    );
}
