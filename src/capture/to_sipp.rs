//! A captured SIP dialog turned into a sipp scenario pair
//! (`callgate trace to-sipp`): `uac.xml` plays the side that sent the
//! dialog's initial request, `uas.xml` the other side, each message as
//! seen on the wire, so a tester can replay a carrier's or a PBX's trace
//! against callgate. Sans-IO: messages in, XML text out.
//!
//! What is kept and what is made fresh:
//! - kept verbatim: methods, status lines, CSeq numbers, Max-Forwards and
//!   every header a policy reads (From and To display names and URIs,
//!   P-Asserted-Identity, Identity, Diversion, History-Info, User-Agent,
//!   custom headers), and non-SDP bodies;
//! - Identity headers of requests, whose `iat` is stale by replay time
//!   (RFC 8224 §6.2.2): kept with a warning, kept on purpose, or re-signed
//!   with the tester's key and a fresh `iat` ([`IdentityMode`],
//!   [`super::resign`]);
//! - made fresh with sipp keywords, since a replay runs on other
//!   addresses and must be a new dialog: Call-ID (`[call_id]`), the top
//!   Via (`[branch]`, RFC 3261 §8.1.1.7), the tags of From and To
//!   (§19.3), Contact's host, port and transport (§8.1.1.8), the Request-URI of
//!   in-dialog requests and the route set (`[next_url]`, `[routes]`,
//!   §12.2.1.1), Content-Length (`[len]`, §20.14), and the SDP's
//!   addresses and ports (RFC 4566 §5.2, §5.7, §5.14); a response echoes
//!   the request's Via, From, To, Call-ID, CSeq and Record-Route
//!   (`[last_Via:]` … , §8.2.6.2, §12.1.1);
//! - retransmissions (the same start line, CSeq and top Via again in the
//!   same direction, RFC 3261 §17) are played once: sipp retransmits by
//!   itself (`retrans`);
//! - provisional responses are optional on the UAC side (a proxy such as
//!   callgate sends its own 100 and may absorb others, §16.7);
//! - a pause before each message sent, from the capture's timing,
//!   bounded by [`Options::max_pause_ms`].
//!
//! A capture is attacker data: everything from it is XML-escaped, its
//! text goes into CDATA sections with any `]]>` split, and characters
//! XML cannot carry are replaced.

use std::collections::HashSet;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;

use crate::sip::header::HeaderName;
use crate::sip::message::{Limits, SipMessage, StartLine};

use super::expect::Expectations;
use super::media::{self, MediaError};
use super::resign::{ResignError, Resigner};
use super::{Payload, Transport};

/// What becomes of the captured Identity headers of requests.
#[derive(Debug, Clone, Default)]
pub enum IdentityMode {
    /// Replayed as captured, with a warning that they are stale.
    #[default]
    Stale,
    /// Replayed as captured on purpose (`--keep-identity`: a test of the
    /// freshness check).
    Keep,
    /// Re-signed with the tester's key, fresh `iat` (`--resign`).
    Resign(Arc<Resigner>),
}

/// What was done to the dialog's Identity headers, for the README.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityNote {
    /// The dialog's requests carry none.
    Absent,
    /// `n` replayed as captured without being asked to: stale.
    Stale(usize),
    /// `n` replayed as captured (`--keep-identity`).
    Kept(usize),
    /// `n` re-signed at `iat` for the certificate at `x5u`.
    Resigned { n: usize, iat: i64, x5u: String },
}

/// How the conversion is done.
#[derive(Debug, Clone)]
pub struct Options {
    /// The dialog to convert (its Call-ID); default: the first dialog an
    /// initial INVITE starts, else the first that starts with a request.
    pub call_id: Option<String>,
    /// The longest pause written, milliseconds (a trace may hold a
    /// minutes-long call).
    pub max_pause_ms: u64,
    /// Gaps shorter than this are not written as pauses, milliseconds
    /// (they are network and processing time, not a peer's behaviour).
    pub min_pause_ms: u64,
    /// What becomes of the captured Identity headers.
    pub identity: IdentityMode,
    /// What callgate must do to the call, checked by the scenarios
    /// (`--expect`); empty: the UAS logs what it saw.
    pub expect: Expectations,
    /// The directory the RTP pcaps are written to, as the scenarios name
    /// them (sipp opens `play_pcap_audio` files from its working
    /// directory); empty: names relative to it.
    pub media_dir: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            call_id: None,
            max_pause_ms: 5_000,
            min_pause_ms: 20,
            identity: IdentityMode::Stale,
            expect: Expectations::default(),
            media_dir: String::new(),
        }
    }
}

/// Why no scenario could be written.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ToSippError {
    #[error("no SIP dialog in the capture ({0} SIP messages read, none a request with a Call-ID)")]
    NoDialog(usize),
    #[error("no dialog with Call-ID {wanted:?} in the capture (it holds: {found})")]
    NoSuchCall { wanted: String, found: String },
    #[error(transparent)]
    Resign(#[from] ResignError),
    #[error(transparent)]
    Media(#[from] MediaError),
}

/// One dialog found in a capture, for the listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DialogSummary {
    pub call_id: String,
    /// The method of its first request, if it has one.
    pub method: Option<String>,
    pub messages: usize,
}

/// A converted dialog: the two scenarios and what was left out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scenarios {
    pub call_id: String,
    /// The transport of the dialog (for sipp's `-t`).
    pub transport: Transport,
    /// Where the initial request came from and went to in the capture.
    pub uac_addr: SocketAddr,
    pub uas_addr: SocketAddr,
    pub uac: String,
    pub uas: String,
    /// Messages played, retransmissions skipped, and messages of the same
    /// Call-ID on other legs (another hop of a proxy) left out.
    pub played: usize,
    pub retransmissions: usize,
    pub other_legs: usize,
    /// What was done to the Identity headers of requests.
    pub identity: IdentityNote,
    /// What the scenarios check callgate did (`--expect`).
    pub expect: Expectations,
    /// The dialog's RTP, each side's as the pcap its scenario plays.
    pub rtp: RtpFiles,
    /// What the tester should know: text sipp would read as a keyword,
    /// characters replaced.
    pub warnings: Vec<String>,
}

/// The RTP each side sent in the capture, as the pcap files
/// ([`RTP_FILES`]) their scenarios play; `None` when the capture has none.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RtpFiles {
    pub uac: Option<Vec<u8>>,
    pub uas: Option<Vec<u8>>,
    /// Packets in each.
    pub uac_packets: usize,
    pub uas_packets: usize,
}

/// The names of the RTP pcaps: the UAC's, the UAS's.
pub const RTP_FILES: [&str; 2] = ["uac-rtp.pcap", "uas-rtp.pcap"];

/// A parsed message of the capture.
struct Captured {
    time_us: i64,
    src: SocketAddr,
    dst: SocketAddr,
    transport: Transport,
    msg: SipMessage,
}

fn parse_all(messages: &[Payload], limits: &Limits) -> Vec<Captured> {
    messages
        .iter()
        .filter_map(|p| {
            let msg = SipMessage::parse(Bytes::from(p.data.clone()), limits).ok()?;
            msg.call_id()?;
            Some(Captured {
                time_us: p.time_us,
                src: p.flow.src,
                dst: p.flow.dst,
                transport: p.flow.transport,
                msg,
            })
        })
        .collect()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The dialogs of `messages` (SIP messages of a capture), by Call-ID in
/// order of first appearance.
pub fn dialogs(messages: &[Payload], limits: &Limits) -> Vec<DialogSummary> {
    let mut out: Vec<DialogSummary> = Vec::new();
    for c in parse_all(messages, limits) {
        let id = text(c.msg.call_id().unwrap_or_default());
        let method = c.msg.method_bytes().map(text);
        match out.iter_mut().find(|d| d.call_id == id) {
            Some(d) => {
                d.messages += 1;
                if d.method.is_none() {
                    d.method = method;
                }
            }
            None => out.push(DialogSummary {
                call_id: id,
                method,
                messages: 1,
            }),
        }
    }
    out
}

/// Which side of the dialog a scenario plays.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Uac,
    Uas,
}

impl Role {
    /// The tag this side puts in its From (requests) or To (responses):
    /// fresh per call (RFC 3261 §19.3).
    fn tag(self) -> &'static str {
        match self {
            Role::Uac => "[pid]SIPpTag00[call_number]",
            Role::Uas => "[pid]SIPpTag01[call_number]",
        }
    }
}

/// Converts the chosen dialog of `messages` (SIP messages of a capture,
/// in capture order) into a sipp scenario pair, without media.
pub fn convert(
    messages: &[Payload],
    limits: &Limits,
    options: &Options,
) -> Result<Scenarios, ToSippError> {
    convert_with_media(messages, &[], limits, options)
}

/// [`convert`], and the RTP of the dialog among `datagrams` (the
/// capture's payloads): each side's scenario plays what it sent, from the
/// ACK of the 2xx on (RFC 3264 §5: the offer's side receives at the
/// offer's address, the answer's at the answer's).
pub fn convert_with_media(
    messages: &[Payload],
    datagrams: &[Payload],
    limits: &Limits,
    options: &Options,
) -> Result<Scenarios, ToSippError> {
    let all = parse_all(messages, limits);
    let first = match &options.call_id {
        Some(id) => all
            .iter()
            .position(|c| c.msg.is_request() && c.msg.call_id() == Some(id.as_bytes()))
            .ok_or_else(|| ToSippError::NoSuchCall {
                wanted: id.clone(),
                found: dialogs(messages, limits)
                    .iter()
                    .map(|d| d.call_id.clone())
                    .collect::<Vec<_>>()
                    .join(", "),
            })?,
        // A capture on a proxy's host is full of keepalive OPTIONS: the
        // first call is what a tester means.
        None => all
            .iter()
            .position(|c| c.msg.method_bytes() == Some(b"INVITE") && c.msg.to_tag().is_none())
            .or_else(|| all.iter().position(|c| c.msg.is_request()))
            .ok_or(ToSippError::NoDialog(all.len()))?,
    };
    let head = &all[first];
    let call_id = head.msg.call_id().unwrap_or_default().to_vec();
    let (a, b) = (head.src, head.dst);
    let mut played = Vec::new();
    let mut seen = HashSet::new();
    let (mut retransmissions, mut other_legs) = (0, 0);
    // The time of the dialog's previous message on this leg, played or
    // not: a peer that waited for a retransmission waited that long.
    let mut last: Option<i64> = None;
    for c in all[first..]
        .iter()
        .filter(|c| c.msg.call_id() == Some(&call_id[..]))
    {
        let from_a = c.src == a && c.dst == b;
        let from_b = c.src == b && c.dst == a;
        if !(from_a || from_b) {
            other_legs += 1;
            continue;
        }
        let key = (
            from_a,
            c.msg.slice(&(0..c.msg.headers_start())).to_vec(),
            c.msg.first(HeaderName::CSeq).map(<[u8]>::to_vec),
            c.msg.first(HeaderName::Via).map(<[u8]>::to_vec),
        );
        if !seen.insert(key) {
            retransmissions += 1;
            last = Some(c.time_us);
            continue;
        }
        played.push(Played {
            from_a,
            after: last,
            c,
        });
        last = Some(c.time_us);
    }
    if options.expect.rejects() {
        // Refused: the caller sees the refusal, the callee nothing.
        played.truncate(1);
    }
    let mut warnings = Vec::new();
    if head.msg.to_tag().is_some() {
        // The capture starts inside the dialog (the INVITE was not
        // captured): the replay's first request names a dialog nobody
        // set up, and callgate answers it 481 (RFC 3261 §12.2.2).
        warnings.push(format!(
            "the capture starts mid-dialog: its first request ({}) has a To tag and no INVITE              of the call was captured, so the replay sends it outside any dialog and callgate              answers 481; capture from before the call starts",
            text(head.msg.method_bytes().unwrap_or_default())
        ));
    }
    let mut identities = 0;
    let streams = dialog_rtp(&played, datagrams, head.time_us);
    let mut rtp = RtpFiles::default();
    let mut plays: [Option<(String, u64)>; 2] = [None, None];
    for (i, stream) in streams.iter().enumerate() {
        if stream.is_empty() || options.expect.rejects() {
            continue;
        }
        let file = media::pcap(stream)?;
        let path = if options.media_dir.is_empty() {
            RTP_FILES[i].to_owned()
        } else {
            format!(
                "{}/{}",
                options.media_dir.trim_end_matches('/'),
                RTP_FILES[i]
            )
        };
        plays[i] = Some((path, media::duration_ms(stream)));
        if i == 0 {
            (rtp.uac, rtp.uac_packets) = (Some(file), stream.len());
        } else {
            (rtp.uas, rtp.uas_packets) = (Some(file), stream.len());
        }
    }
    let [uac_play, uas_play] = plays;
    let uac = scenario(
        Role::Uac,
        &played,
        options,
        uac_play,
        &mut warnings,
        &mut identities,
    )?;
    let uas = scenario(
        Role::Uas,
        &played,
        options,
        uas_play,
        &mut warnings,
        &mut identities,
    )?;
    let identity = match &options.identity {
        _ if identities == 0 => IdentityNote::Absent,
        IdentityMode::Stale => {
            warnings.push(format!(
                "{identities} Identity header(s) replayed as captured: their iat is stale, so \
                 callgate will treat them as stale PASSporTs (re-sign them with --resign KEY \
                 --x5u URL, or say --keep-identity to test exactly that)"
            ));
            IdentityNote::Stale(identities)
        }
        IdentityMode::Keep => IdentityNote::Kept(identities),
        IdentityMode::Resign(r) => IdentityNote::Resigned {
            n: identities,
            iat: r.iat(),
            x5u: r.x5u().to_owned(),
        },
    };
    Ok(Scenarios {
        call_id: text(&call_id),
        transport: head.transport,
        uac_addr: a,
        uas_addr: b,
        uac,
        uas,
        played: played.len(),
        retransmissions,
        other_legs,
        identity,
        expect: options.expect.clone(),
        rtp,
        warnings,
    })
}

/// The RTP the UAC side sent (to the answer's audio address) and the UAS
/// side sent (to the offer's), from `since` on.
fn dialog_rtp<'p>(
    played: &[Played<'_>],
    datagrams: &'p [Payload],
    since: i64,
) -> [Vec<&'p Payload>; 2] {
    let sdp_of = |request: bool| {
        played.iter().find_map(|p| {
            let m = &p.c.msg;
            let fits = if request {
                p.from_a && m.method_bytes() == Some(b"INVITE")
            } else {
                !p.from_a
                    && is_invite_cseq(m)
                    && m.status().is_some_and(|s| (200..300).contains(&s))
            };
            fits.then(|| media::audio_addr(m.body())).flatten()
        })
    };
    let (offer, answer) = (sdp_of(true), sdp_of(false));
    let stream = |to: Option<SocketAddr>| {
        to.map(|a| media::rtp_to(datagrams, a, since))
            .unwrap_or_default()
    };
    [stream(answer), stream(offer)]
}

/// A message of the chosen dialog and leg, with the time of the message
/// before it.
struct Played<'c> {
    /// Sent by the UAC side.
    from_a: bool,
    after: Option<i64>,
    c: &'c Captured,
}

/// The state a scenario's writer keeps across messages.
struct Writer<'w> {
    role: Role,
    out: String,
    warnings: &'w mut Vec<String>,
    identity: &'w IdentityMode,
    /// Identity headers of requests sent, both scenarios counted.
    identities: &'w mut usize,
    /// Whether the last request this side received had a To tag (an
    /// in-dialog request): a response to it echoes the tag.
    last_request_in_dialog: bool,
    /// The last final response to an INVITE this side received.
    last_invite_final: Option<u16>,
    /// The method of the last request this side received: a response to
    /// another request (the 487 to an INVITE after the CANCEL's 200)
    /// keeps its own CSeq, not the last request's.
    last_request_method: String,
    /// Initial INVITEs this side sent: each has a branch of its own that
    /// its CANCEL repeats (RFC 3261 §9.1).
    invites: u32,
    /// The message received next must arrive (a provisional response is
    /// otherwise optional on the UAC).
    awaited: bool,
    /// Whether this UAS sends requests in the dialog, and so needs the
    /// caller's From (sipp refuses a variable that is never read).
    keeps_peer: bool,
    /// The actions on the initial INVITE this side receives: the
    /// expectations' checks, or the log of what callgate wrote.
    invite_actions: String,
    /// The RTP this side plays once the dialog is confirmed (its pcap's
    /// path and length, ms), until it has started.
    play: Option<(String, u64)>,
}

fn scenario(
    role: Role,
    played: &[Played<'_>],
    options: &Options,
    play: Option<(String, u64)>,
    warnings: &mut Vec<String>,
    identities: &mut usize,
) -> Result<String, ResignError> {
    let name = match role {
        Role::Uac => "uac",
        Role::Uas => "uas",
    };
    let mut w = Writer {
        role,
        out: String::new(),
        warnings,
        identity: &options.identity,
        identities,
        last_request_in_dialog: false,
        last_invite_final: None,
        last_request_method: String::new(),
        invites: 0,
        awaited: false,
        keeps_peer: role == Role::Uas && played.iter().any(|p| !p.from_a && p.c.msg.is_request()),
        invite_actions: match (role, played.first()) {
            (Role::Uas, Some(_)) if options.expect.is_empty() => super::expect::uas_log(),
            (Role::Uas, Some(p)) => {
                let called = p.c.msg.request_uri().and_then(crate::sip::parties::user_of);
                let pai = p.c.msg.first(HeaderName::PAssertedIdentity).is_some();
                options.expect.uas_checks(called.as_deref(), pai)
            }
            _ => String::new(),
        },
        play,
    };
    let _ = write!(
        w.out,
        "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<!DOCTYPE scenario SYSTEM \"sipp.dtd\">\n\
         <!-- Generated by `callgate trace to-sipp` from a capture: the {}. -->\n\
         <scenario name=\"{}\">\n",
        match role {
            Role::Uac => "side that sent the initial request",
            Role::Uas => "side the initial request was sent to",
        },
        attr(&format!("to-sipp {name}")),
    );
    let mut first_received = true;
    for (i, Played { from_a, after, c }) in played.iter().enumerate() {
        let mine = *from_a == (role == Role::Uac);
        // The provisional response right before this side's CANCEL is
        // awaited, not optional: a CANCEL waits for a provisional response
        // (RFC 3261 §9.1), and sipp refuses a pause after optional
        // receives alone.
        w.awaited = !mine
            && played.get(i + 1).is_some_and(|next| {
                next.from_a == (role == Role::Uac) && next.c.msg.method_bytes() == Some(b"CANCEL")
            });
        if mine {
            if let Some(prev) = after {
                let gap_ms = u64::try_from((c.time_us - prev) / 1000).unwrap_or(0);
                if gap_ms >= options.min_pause_ms {
                    let _ = writeln!(
                        w.out,
                        "  <pause milliseconds=\"{}\"/>",
                        gap_ms.min(options.max_pause_ms)
                    );
                }
            }
            w.send(&c.msg)?;
        } else {
            w.recv(&c.msg, first_received);
            first_received = false;
        }
        if c.msg.method_bytes() == Some(b"ACK") {
            w.start_media(options.max_pause_ms);
        }
    }
    if role == Role::Uac && options.expect.rejects() {
        if let Some(first) = played.first() {
            w.out.push_str(&options.expect.uac_refusal("refused"));
            w.last_invite_final = Some(600);
            match refusal_ack(&first.c.msg) {
                Some(ack) => w.send(&ack)?,
                None => w.warnings.push(
                    "the captured INVITE's headers do not make an ACK: add one to uac.xml after \
                     the refusal"
                        .into(),
                ),
            }
        }
    }
    if role == Role::Uac {
        w.out.push_str(LATE_PROVISIONALS);
    } else {
        w.out.push_str("  <timewait milliseconds=\"500\"/>\n");
    }
    w.out.push_str("</scenario>\n");
    Ok(w.out)
}

/// A late 100/180/183 (a proxy's worker, a retransmission) after the
/// dialog moved on is absorbed, as RFC 3261 §17.1.1.2 has a UA do; sipp
/// sends every unexpected message to `_unexp.main`.
const LATE_PROVISIONALS: &str = "  <nop next=\"done\"/>\n  <label id=\"_unexp.main\"/>\n  \
<recv response=\"100\" optional=\"true\" next=\"resume\"/>\n  \
<recv response=\"183\" optional=\"true\" next=\"resume\"/>\n  \
<recv response=\"180\" next=\"resume\"/>\n  <label id=\"resume\"/>\n  <nop>\n    <action>\n      \
<pauserestore variable=\"_unexp.pausedaddr\"/>\n      <jump variable=\"_unexp.retaddr\"/>\n    \
</action>\n  </nop>\n  <label id=\"done\"/>\n  <nop/>\n";

fn is_invite_cseq(msg: &SipMessage) -> bool {
    msg.cseq()
        .map(|c| c.method_bytes.eq_ignore_ascii_case(b"INVITE"))
        .unwrap_or(false)
}

impl Writer<'_> {
    /// Plays this side's RTP (sipp `play_pcap_audio`, from its media
    /// port to the address the peer's SDP names) once the dialog is
    /// confirmed by the ACK.
    fn start_media(&mut self, max_pause_ms: u64) {
        let Some((path, ms)) = self.play.take() else {
            return;
        };
        let _ = writeln!(
            self.out,
            "  <nop>\n    <action>\n      <exec play_pcap_audio=\"{}\"/>\n    </action>\n  </nop>",
            attr(&path)
        );
        if ms > max_pause_ms {
            self.warnings.push(format!(
                "the captured RTP lasts {ms} ms and pauses are at most {max_pause_ms} ms: \
                 the call may end before it is all played (raise --max-pause-ms)"
            ));
        }
    }

    fn recv(&mut self, msg: &SipMessage, first: bool) {
        match msg.start_line() {
            StartLine::Request { .. } => {
                let method = text(msg.method_bytes().unwrap_or_default());
                self.last_request_in_dialog = msg.to_tag().is_some();
                self.last_request_method = method.to_ascii_uppercase();
                let initial_invite = method == "INVITE" && msg.to_tag().is_none();
                let _ = write!(self.out, "  <recv request=\"{}\"", attr(&method));
                if initial_invite {
                    self.out.push_str(" rrs=\"true\"");
                }
                let mut actions = String::new();
                if first && self.keeps_peer {
                    // The caller's From, tag included: the To of requests
                    // this side sends in the dialog (RFC 3261 §12.2.1.1).
                    actions.push_str(
                        "      <ereg regexp=\"^[^\\r\\n]*\" search_in=\"hdr\" \
                         header=\"From:\" assign_to=\"peer\"/>\n",
                    );
                }
                if first && initial_invite {
                    actions.push_str(&self.invite_actions);
                }
                if actions.is_empty() {
                    self.out.push_str("/>\n");
                } else {
                    let _ = write!(
                        self.out,
                        ">\n    <action>\n{actions}    </action>\n  </recv>\n"
                    );
                }
            }
            StartLine::Response { status, .. } => {
                let invite = is_invite_cseq(msg);
                if invite && *status >= 200 {
                    self.last_invite_final = Some(*status);
                }
                let _ = write!(self.out, "  <recv response=\"{status}\"");
                if *status < 200 && self.role == Role::Uac && !self.awaited {
                    self.out.push_str(" optional=\"true\"");
                }
                if invite && (200..300).contains(status) {
                    self.out.push_str(" rrs=\"true\"");
                }
                self.out.push_str("/>\n");
            }
        }
    }

    /// The branch of a request's Via: sipp's `[branch]` (fresh for each
    /// message), but one of its own for each initial INVITE, repeated by
    /// its CANCEL — a CANCEL must carry its INVITE's branch to match its
    /// transaction (RFC 3261 §9.1, §17.2.3), and sipp's `[branch]` differs
    /// from message to message.
    fn branch(&mut self, method: &str, in_dialog: bool) -> String {
        if method.eq_ignore_ascii_case("INVITE") && !in_dialog {
            self.invites += 1;
        } else if !method.eq_ignore_ascii_case("CANCEL") {
            return "[branch]".into();
        }
        format!("z9hG4bK-[pid]-[call_number]-invite{}", self.invites.max(1))
    }

    /// Whether a response with CSeq `cseq` answers the last request this
    /// side received (then `[last_CSeq:]` copies it).
    fn answers_last_request(&self, cseq: &[u8]) -> bool {
        let method = text(cseq)
            .split_whitespace()
            .nth(1)
            .unwrap_or_default()
            .to_ascii_uppercase();
        method == self.last_request_method
    }

    fn send(&mut self, msg: &SipMessage) -> Result<(), ResignError> {
        let mut lines: Vec<String> = Vec::new();
        let request = msg.is_request();
        let method = msg.method_bytes().map(text).unwrap_or_default();
        let in_dialog = request && msg.to_tag().is_some();
        let ack_non_2xx =
            method.eq_ignore_ascii_case("ACK") && self.last_invite_final.is_some_and(|s| s >= 300);
        let retrans = if request {
            !method.eq_ignore_ascii_case("ACK")
        } else {
            msg.status().is_some_and(|s| (200..300).contains(&s)) && is_invite_cseq(msg)
        };
        match msg.start_line() {
            StartLine::Request { .. } if in_dialog && !ack_non_2xx => {
                lines.push(format!(
                    "{} [next_url] SIP/2.0",
                    self.verbatim(method.as_bytes())
                ));
            }
            StartLine::Request { .. } => {
                let user = msg
                    .request_uri()
                    .and_then(crate::sip::parties::user_of)
                    .map(|u| format!("{}@", self.verbatim(u.as_bytes())))
                    .unwrap_or_default();
                lines.push(format!(
                    "{} sip:{user}[remote_ip]:[remote_port] SIP/2.0",
                    self.verbatim(method.as_bytes())
                ));
            }
            StartLine::Response { .. } => {
                let end = msg.headers_start() as usize;
                let line = msg.as_slice()[..end].trim_ascii_end();
                lines.push(self.verbatim(line));
            }
        }
        let (mut via_done, mut rr_done) = (false, false);
        for h in msg.headers() {
            let value = msg.value(h);
            let name = text(msg.slice(&h.name_range));
            match h.name {
                HeaderName::Via if !via_done => {
                    via_done = true;
                    if !request || ack_non_2xx {
                        lines.push("[last_Via:]".into());
                    } else {
                        lines.push(format!(
                            "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch={}",
                            self.branch(&method, in_dialog)
                        ));
                    }
                    if in_dialog && !ack_non_2xx {
                        lines.push("[routes]".into());
                    }
                }
                HeaderName::Via | HeaderName::Route => {}
                HeaderName::RecordRoute => {
                    if !request && !rr_done {
                        rr_done = true;
                        lines.push("[last_Record-Route:]".into());
                    }
                }
                HeaderName::From if request => {
                    let v = self.verbatim(value);
                    lines.push(format!("From: {}", with_tag(&v, Some(self.role.tag()))));
                }
                HeaderName::From => lines.push("[last_From:]".into()),
                HeaderName::To if ack_non_2xx => lines.push("[last_To:]".into()),
                HeaderName::To if request && self.role == Role::Uas && in_dialog => {
                    lines.push("To: [$peer]".into());
                }
                HeaderName::To if request && in_dialog => {
                    let v = self.verbatim(value);
                    lines.push(format!("To: {}[peer_tag_param]", with_tag(&v, None)));
                }
                HeaderName::To if request => lines.push(format!("To: {}", self.verbatim(value))),
                HeaderName::To => {
                    let echo_tag = msg.to_tag().is_some() && !self.last_request_in_dialog;
                    if echo_tag {
                        lines.push(format!("[last_To:];tag={}", self.role.tag()));
                    } else {
                        lines.push("[last_To:]".into());
                    }
                }
                HeaderName::CallId if request => lines.push("Call-ID: [call_id]".into()),
                HeaderName::CallId => lines.push("[last_Call-ID:]".into()),
                HeaderName::CSeq if !request && self.answers_last_request(value) => {
                    lines.push("[last_CSeq:]".into())
                }
                HeaderName::Contact => {
                    let v = self.verbatim(value);
                    lines.push(format!("Contact: {}", contact_here(&v)));
                }
                HeaderName::ContentLength => lines.push("Content-Length: [len]".into()),
                HeaderName::Identity if request => {
                    *self.identities += 1;
                    let v = match self.identity {
                        IdentityMode::Resign(r) => r.resign(&method, value)?,
                        IdentityMode::Stale | IdentityMode::Keep => self.verbatim(value),
                    };
                    lines.push(format!("{name}: {v}"));
                }
                _ => {
                    let v = self.verbatim(value);
                    lines.push(format!("{name}: {v}"));
                }
            }
        }
        if msg.first(HeaderName::ContentLength).is_none() {
            lines.push("Content-Length: [len]".into());
        }
        let sdp = msg
            .first(HeaderName::ContentType)
            .is_some_and(|t| t.to_ascii_lowercase().starts_with(b"application/sdp"));
        let body = msg.body();
        let mut message = lines.join("\n");
        message.push_str("\n\n");
        if !body.is_empty() {
            let body_text = if sdp {
                sdp_here(&text(body))
            } else {
                self.check_keywords(&text(body));
                text(body)
            };
            for line in body_text.lines() {
                message.push_str(line.trim_end_matches('\r'));
                message.push('\n');
            }
        }
        let _ = writeln!(
            self.out,
            "  <send{}>\n    <![CDATA[\n\n{}\n    ]]>\n  </send>",
            if retrans { " retrans=\"500\"" } else { "" },
            cdata(&message)
        );
        Ok(())
    }

    /// Capture bytes kept as they were: lossy UTF-8, folded lines
    /// unfolded (sipp reads a message line by line), a warning when sipp
    /// would read part of it as a keyword.
    fn verbatim(&mut self, value: &[u8]) -> String {
        let v = text(value).replace("\r\n", " ").replace(['\r', '\n'], " ");
        self.check_keywords(&v);
        v
    }

    fn check_keywords(&mut self, v: &str) {
        if v.contains('[') {
            let shown: String = v.chars().take(60).collect();
            let note = format!(
                "sipp reads `[…]` as a keyword: check the text kept from the capture ({shown:?})"
            );
            if !self.warnings.contains(&note) {
                self.warnings.push(note);
            }
        }
    }
}

/// The ACK of a refused INVITE (RFC 3261 §17.1.1.3): its Request-URI,
/// Call-ID, From and top Via, the To of the refusal, CSeq of the INVITE's
/// number and method ACK. Written with the INVITE's own values, for
/// [`Writer::send`] to make them fresh as it does for a captured ACK.
fn refusal_ack(invite: &SipMessage) -> Option<SipMessage> {
    let mut text = format!(
        "ACK {} SIP/2.0\r\n",
        String::from_utf8_lossy(invite.request_uri().unwrap_or(b"sip:invalid"))
    );
    for h in [
        HeaderName::Via,
        HeaderName::From,
        HeaderName::To,
        HeaderName::CallId,
    ] {
        if let Some(v) = invite.first(h) {
            let _ = write!(text, "{}: {}\r\n", h.as_str(), String::from_utf8_lossy(v));
        }
    }
    let number = invite.cseq().map(|c| c.seq).unwrap_or(1);
    let _ = write!(
        text,
        "CSeq: {number} ACK\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    SipMessage::parse(Bytes::from(text.into_bytes()), &Limits::default()).ok()
}

/// `value` (a From or To header value) with its tag parameter (RFC 3261
/// §19.3) replaced by `tag`, or removed when `tag` is None.
fn with_tag(value: &str, tag: Option<&str>) -> String {
    // Parameters of the header follow the closing `>` of a name-addr, or
    // the URI itself in the addr-spec form (RFC 3261 §20.20).
    let params_from = value.rfind('>').map(|i| i + 1).unwrap_or(0);
    let lower = value.to_ascii_lowercase();
    let mut out = value.to_owned();
    if let Some(rel) = lower[params_from..].find(";tag=") {
        let start = params_from + rel;
        let end = value[start + 1..]
            .find(';')
            .map(|i| start + 1 + i)
            .unwrap_or(value.len());
        out.replace_range(start..end, "");
    }
    if let Some(tag) = tag {
        out.push_str(";tag=");
        out.push_str(tag);
    }
    out
}

/// A Contact value with its URI's host and port replaced by this sipp's
/// own and its transport parameter by the replay's (RFC 3261 §8.1.1.8:
/// the Contact is where the peer reaches us, §19.1.1 `transport`); an
/// addr-spec is put in angle brackets so the parameter stays the URI's
/// (§20.10).
fn contact_here(value: &str) -> String {
    let lower = value.to_ascii_lowercase();
    let Some(scheme) = lower.find("sip:").or_else(|| lower.find("sips:")) else {
        return value.to_owned();
    };
    let after = scheme
        + if lower[scheme..].starts_with("sips:") {
            5
        } else {
            4
        };
    let end = value[after..]
        .find(['>', ';', '?', ' '])
        .map(|i| after + i)
        .unwrap_or(value.len());
    let host = value[after..end]
        .rfind('@')
        .map(|i| after + i + 1)
        .unwrap_or(after);
    let bracketed = value[..scheme].contains('<');
    let uri_end = if bracketed {
        value[end..]
            .find('>')
            .map(|i| end + i)
            .unwrap_or(value.len())
    } else {
        end
    };
    let params: String = value[end..uri_end]
        .split(';')
        .filter(|p| !p.is_empty() && !p.to_ascii_lowercase().starts_with("transport="))
        .map(|p| format!(";{p}"))
        .collect();
    let uri = format!(
        "{}[local_ip]:[local_port]{params};transport=[transport]",
        &value[scheme..host]
    );
    if bracketed {
        format!("{}{uri}{}", &value[..scheme], &value[uri_end..])
    } else {
        format!("{}<{uri}>{}", &value[..scheme], &value[end..])
    }
}

/// An SDP body (RFC 4566) with its origin and connection addresses and
/// its media ports replaced by this sipp's own.
fn sdp_here(body: &str) -> String {
    let mut out = String::new();
    let mut media = 0u32;
    for line in body.lines() {
        let line = line.trim_end_matches('\r');
        let fresh = if let Some(o) = line.strip_prefix("o=") {
            // o=<username> <sess-id> <sess-version> <nettype> <addrtype> <addr> (§5.2)
            let fields: Vec<&str> = o.split(' ').collect();
            if fields.len() == 6 {
                format!(
                    "o={} {} {} IN IP[local_ip_type] [local_ip]",
                    fields[0], fields[1], fields[2]
                )
            } else {
                line.to_owned()
            }
        } else if line.starts_with("c=") {
            "c=IN IP[media_ip_type] [media_ip]".to_owned()
        } else if let Some(m) = line.strip_prefix("m=") {
            // m=<media> <port> <proto> <fmt> … (§5.14)
            let mut fields = m.splitn(3, ' ');
            let (kind, _port, rest) = (fields.next(), fields.next(), fields.next());
            let port = if media == 0 {
                "[media_port]".to_owned()
            } else {
                format!("[media_port+{}]", media * 2)
            };
            media += 1;
            match (kind, rest) {
                (Some(kind), Some(rest)) => format!("m={kind} {port} {rest}"),
                _ => line.to_owned(),
            }
        } else {
            line.to_owned()
        };
        out.push_str(&fresh);
        out.push('\n');
    }
    out
}

/// Text safe inside a CDATA section: `]]>` split across two sections,
/// characters XML 1.0 cannot carry (§2.2) replaced by U+FFFD.
fn cdata(s: &str) -> String {
    xml_chars(s).replace("]]>", "]]]]><![CDATA[>")
}

/// Text safe inside an attribute value (XML 1.0 §2.3, §2.4).
pub(super) fn attr(s: &str) -> String {
    xml_chars(s)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn xml_chars(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            c if (c as u32) < 0x20 || c == '\u{FFFE}' || c == '\u{FFFF}' => '\u{FFFD}',
            c => c,
        })
        .collect()
}

/// `README.md` of an output directory: what was converted and the two
/// sipp commands that replay it against callgate.
pub fn readme(s: &Scenarios, capture: &str) -> String {
    let t = match s.transport {
        Transport::Udp => "u1",
        Transport::Tcp => "t1",
    };
    let mut out = format!(
        "# sipp replay of Call-ID `{}`\n\nConverted by `callgate trace to-sipp` from `{}`: \
         {} messages between {} (the UAC, `uac.xml`) and {} (the UAS, `uas.xml`); \
         {} retransmissions played once (sipp retransmits by itself), {} messages of \
         the same Call-ID on other legs left out.\n\n\
         Run the UAS first, as the PBX, on the port callgate's `[pbx] targets` point to \
         (here 5080), then the UAC, as the carrier, against callgate's trunk listener \
         (here 127.0.0.1:5060):\n\n```sh\n\
         sipp -sf uas.xml -i 127.0.0.1 -p 5080 -t {t} -m 1\n\
         sipp 127.0.0.1:5060 -sf uac.xml -i 127.0.0.1 -t {t} -m 1 -timeout 60s -timeout_error\n```\n\n\
         sipp exits 0 when the call went as in the capture. Add `-trace_msg` to either \
         to keep the messages it sent and received.\n",
        s.call_id.replace('`', "'"),
        capture.replace('`', "'"),
        s.played,
        s.uac_addr,
        s.uas_addr,
        s.retransmissions,
        s.other_legs,
    );
    out.push_str(&identity_section(s, &capture.replace('`', "'"), t));
    out.push_str(&super::expect::readme_section(&s.expect, t));
    out.push_str(&media_section(&s.rtp));
    if !s.warnings.is_empty() {
        out.push_str("\n## Warnings\n\n");
        for w in &s.warnings {
            let _ = writeln!(out, "- {}", w.replace('`', "'"));
        }
    }
    out
}

/// The README's word on the dialog's RTP, when the capture has some.
fn media_section(rtp: &RtpFiles) -> String {
    if rtp.uac.is_none() && rtp.uas.is_none() {
        return String::new();
    }
    let mut out = String::from("\n## Media\n\nThe capture has the call's RTP: ");
    let mut parts = Vec::new();
    if rtp.uac.is_some() {
        parts.push(format!(
            "`uac.xml` plays the {} packets the caller sent (`{}`)",
            rtp.uac_packets, RTP_FILES[0]
        ));
    }
    if rtp.uas.is_some() {
        parts.push(format!(
            "`uas.xml` plays the {} packets the callee sent (`{}`)",
            rtp.uas_packets, RTP_FILES[1]
        ));
    }
    out.push_str(&parts.join(", and "));
    out.push_str(
        ", from the ACK on, with their captured timing (sipp `play_pcap_audio`, from \
         its media port to the address the other side's SDP names: callgate's relay when \
         `[media]` is enabled). Give each sipp its own media port (`-mp`) when both run on \
         one host. That the audio crossed callgate shows in its `callgate_media_packets_total` \
         (both streams' packets) and on the call's line of `callgate ctl calls`; with \
         `-trace_msg`, the SDP each side received names the relay.\n",
    );
    out
}

/// The README's word on the dialog's Identity headers. Re-signing is
/// done at conversion time, not at replay time: a sipp scenario is
/// static text and sipp cannot sign, and the one alternative, an `-inf`
/// CSV that `callgate sign --csv` regenerates, would have to reproduce
/// each captured PASSporT's claims (`origid`, `div`, `rcd`, several
/// PASSporTs per request) in a second tool. Running the conversion again
/// takes well under a second, so "convert, then replay at once" is one
/// shell line that keeps every claim of the capture.
fn identity_section(s: &Scenarios, capture: &str, t: &str) -> String {
    // The Call-ID is capture data: named in a shell line only when it
    // cannot be read as shell syntax.
    let call_id = if !s.call_id.is_empty()
        && s.call_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"@._:+-".contains(&b))
    {
        format!("'{}'", s.call_id)
    } else {
        "CALL-ID".to_owned()
    };
    let expect = if s.expect.is_empty() {
        String::new()
    } else {
        format!(" --expect '{}'", s.expect.to_list())
    };
    match &s.identity {
        IdentityNote::Absent => String::new(),
        IdentityNote::Stale(n) => format!(
            "\n## Identity\n\n{n} Identity header(s) are replayed as captured: their `iat` \
             is stale by now, and callgate treats them as any stale PASSporT \
             (RFC 8224 §6.2.2, `[stir] freshness_secs`). To replay the call as signed, \
             convert again with `--resign KEY --x5u URL`; to test the rejection of stale \
             PASSporTs on purpose, with `--keep-identity`.\n"
        ),
        IdentityNote::Kept(n) => format!(
            "\n## Identity\n\n{n} Identity header(s) are replayed as captured \
             (`--keep-identity`): their `iat` is stale, so callgate must treat them as \
             stale PASSporTs (RFC 8224 §6.2.2: `TN-Validation-Failed`, or a 403 with \
             `[stir] on_failure = \"reject\"`).\n"
        ),
        IdentityNote::Resigned { n, iat, x5u } => format!(
            "\n## Identity\n\n{n} Identity header(s) were re-signed at conversion time \
             (`iat` {iat}) with the tester's key, for the certificate at <{x5u}>: the \
             captured attestation, orig, dest and origid are kept. callgate accepts a \
             PASSporT up to `[stir] freshness_secs` old (60 s by default) and trusts it \
             only if that certificate chains to its `trust_dir`, so run the UAC within \
             that window, and once: the same PASSporT on a second call in the window is \
             a replay (RFC 8224 §12.1), so use `-m 1`. Convert again right before each \
             run, in one line:\n\n```sh\n\
             callgate trace to-sipp {capture} --out . --call-id {call_id} --resign KEY --x5u {x5u}{expect} && \\\n  \
             sipp 127.0.0.1:5060 -sf uac.xml -i 127.0.0.1 -t {t} -m 1 -timeout 60s -timeout_error\n```\n\n\
             The scenario is static text and sipp cannot sign, so the signature is made \
             here rather than at replay time; a sipp `-inf` CSV regenerated by \
             `callgate sign --csv` would lose the claims kept from the capture.\n"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capture::Flow;

    const CARRIER: &str = "127.0.0.10:5060";
    const PBX: &str = "127.0.0.20:5060";

    fn payload(ms: i64, src: &str, dst: &str, data: &str) -> Payload {
        Payload {
            time_us: 1_795_478_400_000_000 + ms * 1000,
            flow: Flow {
                transport: Transport::Udp,
                src: src.parse().unwrap_or_else(|e| panic!("{e}")),
                dst: dst.parse().unwrap_or_else(|e| panic!("{e}")),
            },
            data: data.replace('\n', "\r\n").into_bytes(),
        }
    }

    fn sip(start: &str, headers: &[&str], body: &str) -> String {
        let mut s = format!("{start}\n");
        for h in headers {
            s.push_str(h);
            s.push('\n');
        }
        s.push_str(&format!(
            "Content-Length: {}\n\n{body}",
            body.replace('\n', "\r\n").len()
        ));
        s
    }

    const SDP: &str = "v=0\no=carrier 1 1 IN IP4 127.0.0.10\ns=-\nc=IN IP4 127.0.0.10\nt=0 0\nm=audio 30000 RTP/AVP 0 101\na=rtpmap:0 PCMU/8000\n";

    const IDENTITY: &str = "Identity: eyJhbGciOiJFUzI1NiJ9.eyJhdHRlc3QiOiJBIn0.c2ln;info=<https://cert.carrier.example/sti.pem>;alg=ES256;ppt=shaken";

    /// INVITE/100/180/200/ACK/BYE/200, a retransmitted 200, a leg of
    /// the same call elsewhere, and a second dialog.
    fn dialog(call: &str, custom: &str) -> Vec<Payload> {
        let dlg = |h: &[&str]| -> Vec<String> {
            let mut v = vec![
                format!("Via: SIP/2.0/UDP 127.0.0.10:5060;branch=z9hG4bK-{call}"),
                "From: \"Carrier\" <sip:+15550199@carrier.example>;tag=cr-1".into(),
            ];
            v.extend(h.iter().map(|s| s.to_string()));
            v.push(format!("Call-ID: {call}"));
            v
        };
        let invite = {
            let mut h = dlg(&["To: <sip:+15550100@127.0.0.20>"]);
            h.extend([
                "CSeq: 1 INVITE".to_owned(),
                "Contact: <sip:+15550199@127.0.0.10:5060>".into(),
                "P-Asserted-Identity: <sip:+15550199@carrier.example;user=phone>".into(),
                "Diversion: <sip:+15550111@carrier.example>;reason=unconditional".into(),
                "User-Agent: CarrierSBC/1.0".into(),
                IDENTITY.into(),
                custom.into(),
                "Content-Type: application/sdp".into(),
            ]);
            let h: Vec<&str> = h.iter().map(String::as_str).collect();
            sip("INVITE sip:+15550100@127.0.0.20 SIP/2.0", &h, SDP)
        };
        let response = |status: &str, cseq: &str, tag: bool, body: &str| {
            let to = if tag {
                "To: <sip:+15550100@127.0.0.20>;tag=pbx-9"
            } else {
                "To: <sip:+15550100@127.0.0.20>"
            };
            let mut h = dlg(&[to]);
            h.push(format!("CSeq: {cseq}"));
            h.push("Contact: <sip:agent@127.0.0.20:5060>".into());
            if !body.is_empty() {
                h.push("Content-Type: application/sdp".into());
            }
            let h: Vec<&str> = h.iter().map(String::as_str).collect();
            sip(&format!("SIP/2.0 {status}"), &h, body)
        };
        let in_dialog = |method: &str, cseq: &str| {
            let mut h = dlg(&["To: <sip:+15550100@127.0.0.20>;tag=pbx-9"]);
            h.push(format!("CSeq: {cseq}"));
            let h: Vec<&str> = h.iter().map(String::as_str).collect();
            sip(
                &format!("{method} sip:agent@127.0.0.20:5060 SIP/2.0"),
                &h,
                "",
            )
        };
        vec![
            payload(0, CARRIER, PBX, &invite),
            payload(
                2,
                PBX,
                CARRIER,
                &response("100 Trying", "1 INVITE", false, ""),
            ),
            payload(
                300,
                PBX,
                CARRIER,
                &response("180 Ringing", "1 INVITE", true, ""),
            ),
            payload(
                1300,
                PBX,
                CARRIER,
                &response("200 OK", "1 INVITE", true, SDP),
            ),
            payload(
                1800,
                PBX,
                CARRIER,
                &response("200 OK", "1 INVITE", true, SDP),
            ),
            payload(1801, CARRIER, PBX, &in_dialog("ACK", "1 ACK")),
            payload(1802, "127.0.0.20:5060", "127.0.0.30:5060", &invite),
            payload(60_000, CARRIER, PBX, &in_dialog("BYE", "2 BYE")),
            payload(60_001, PBX, CARRIER, &response("200 OK", "2 BYE", true, "")),
        ]
    }

    fn convert_default(p: &[Payload]) -> Scenarios {
        convert(p, &Limits::default(), &Options::default()).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn the_uac_sends_what_the_caller_sent_with_fresh_dialog_values() {
        let s = convert_default(&dialog("call-1", "X-Case: fraud-42"));
        assert_eq!(s.call_id, "call-1");
        assert_eq!((s.played, s.retransmissions, s.other_legs), (7, 1, 1));
        let uac = &s.uac;
        for kept in [
            "INVITE sip:+15550100@[remote_ip]:[remote_port] SIP/2.0",
            "From: \"Carrier\" <sip:+15550199@carrier.example>;tag=[pid]SIPpTag00[call_number]",
            "To: <sip:+15550100@127.0.0.20>\n",
            "P-Asserted-Identity: <sip:+15550199@carrier.example;user=phone>",
            "Diversion: <sip:+15550111@carrier.example>;reason=unconditional",
            "User-Agent: CarrierSBC/1.0",
            IDENTITY,
            "X-Case: fraud-42",
            "Call-ID: [call_id]",
            "Via: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]",
            "Contact: <sip:+15550199@[local_ip]:[local_port];transport=[transport]>",
            "Content-Length: [len]",
            "c=IN IP[media_ip_type] [media_ip]",
            "m=audio [media_port] RTP/AVP 0 101",
            "o=carrier 1 1 IN IP[local_ip_type] [local_ip]",
            "<recv response=\"100\" optional=\"true\"/>",
            "<recv response=\"180\" optional=\"true\"/>",
            "<recv response=\"200\" rrs=\"true\"/>",
            "ACK [next_url] SIP/2.0",
            "BYE [next_url] SIP/2.0",
            "To: <sip:+15550100@127.0.0.20>[peer_tag_param]",
            "CSeq: 2 BYE",
        ] {
            assert!(uac.contains(kept), "uac.xml lacks {kept:?}:\n{uac}");
        }
        for fresh in ["call-1", "cr-1", "pbx-9", "z9hG4bK-call-1", "30000"] {
            assert!(!uac.contains(fresh), "uac.xml keeps {fresh:?}:\n{uac}");
        }
        // The 58 s gap before the BYE is bounded; the 1 ms before the ACK
        // is no pause.
        assert!(uac.contains("<pause milliseconds=\"5000\"/>"), "{uac}");
        assert_eq!(uac.matches("<pause milliseconds").count(), 1, "{uac}");
    }

    #[test]
    fn the_uas_answers_with_the_last_request_s_values() {
        let s = convert_default(&dialog("call-1", "X-Case: 1"));
        let uas = &s.uas;
        for kept in [
            "<recv request=\"INVITE\" rrs=\"true\">\n    <action>\n",
            "SIP/2.0 100 Trying\n[last_Via:]\n[last_From:]\n[last_To:]\n",
            "SIP/2.0 180 Ringing\n[last_Via:]\n[last_From:]\n[last_To:];tag=[pid]SIPpTag01[call_number]\n[last_Call-ID:]\n[last_CSeq:]",
            "<send retrans=\"500\">",
            "<recv request=\"ACK\"/>",
            "<recv request=\"BYE\"/>",
            "Contact: <sip:agent@[local_ip]:[local_port];transport=[transport]>",
            "<pause milliseconds=\"298\"/>",
            "<pause milliseconds=\"1000\"/>",
        ] {
            assert!(uas.contains(kept), "uas.xml lacks {kept:?}:\n{uas}");
        }
        // The 200 to the BYE (in dialog) echoes the To with its tag.
        let bye_ok = uas
            .rsplit("<recv request=\"BYE\"/>")
            .next()
            .unwrap_or_default();
        assert!(bye_ok.contains("[last_To:]\n"), "{bye_ok}");
        assert!(!bye_ok.contains("SIPpTag01"), "{bye_ok}");
        // It sends no request, so keeps no peer variable (sipp refuses
        // one that is never read); the log reads those it keeps.
        assert!(!uas.contains("assign_to=\"peer\""), "{uas}");
        // One 200 to the INVITE: the retransmission is sipp's job.
        assert_eq!(uas.matches("SIP/2.0 200 OK").count(), 2, "{uas}");
    }

    /// The text of `xml` outside its CDATA sections, as an XML parser
    /// sees the markup.
    fn outside_cdata(xml: &str) -> String {
        let mut out = String::new();
        let mut rest = xml;
        while let Some(open) = rest.find("<![CDATA[") {
            out.push_str(&rest[..open]);
            let inner = &rest[open + 9..];
            let close = inner.find("]]>").unwrap_or(inner.len());
            rest = inner.get(close + 3..).unwrap_or_default();
        }
        out.push_str(rest);
        out
    }

    #[test]
    fn capture_text_cannot_break_out_of_the_xml() {
        let s = convert_default(&dialog(
            "call-x",
            "X-Evil: ]]></send><send><![CDATA[ & \"<x>\"",
        ));
        assert!(!s.uac.contains("]]></send><send>"), "{}", s.uac);
        assert!(
            s.uac
                .contains("X-Evil: ]]]]><![CDATA[></send><send><![CDATA[ & \"<x>\""),
            "{}",
            s.uac
        );
        // As a parser sees it: the three messages the caller sent, and
        // nothing of the header outside character data.
        let markup = outside_cdata(&s.uac);
        assert_eq!(markup.matches("<send").count(), 3, "{markup}");
        assert!(!markup.contains("X-Evil"), "{markup}");
        assert!(!s.warnings.is_empty(), "the `[` is reported");
        // Characters XML 1.0 cannot carry are replaced; attributes escaped.
        assert_eq!(cdata("a\u{1}b]]>c"), "a\u{FFFD}b]]]]><![CDATA[>c");
        assert_eq!(attr("<\"&'>"), "&lt;&quot;&amp;'&gt;");
    }

    #[test]
    fn a_call_is_picked_by_its_call_id_and_a_missing_one_is_named() {
        let mut p = dialog("first", "X-A: 1");
        p.extend(dialog("second", "X-B: 2"));
        let listed: Vec<String> = dialogs(&p, &Limits::default())
            .into_iter()
            .map(|d| d.call_id)
            .collect();
        assert_eq!(listed, ["first", "second"]);
        let options = Options {
            call_id: Some("second".into()),
            ..Options::default()
        };
        let s = convert(&p, &Limits::default(), &options).unwrap_or_else(|e| panic!("{e}"));
        assert!(s.uac.contains("X-B: 2") && !s.uac.contains("X-A: 1"));
        let options = Options {
            call_id: Some("third".into()),
            ..Options::default()
        };
        let err = convert(&p, &Limits::default(), &options).err();
        assert_eq!(
            err,
            Some(ToSippError::NoSuchCall {
                wanted: "third".into(),
                found: "first, second".into()
            })
        );
        assert_eq!(
            convert(&[], &Limits::default(), &Options::default()).err(),
            Some(ToSippError::NoDialog(0))
        );
    }

    #[test]
    fn by_default_the_first_call_is_taken_not_a_keepalive() {
        let options = sip(
            "OPTIONS sip:127.0.0.20:5060 SIP/2.0",
            &[
                "Via: SIP/2.0/UDP 127.0.0.30:5060;branch=z9hG4bK-ka",
                "From: <sip:proxy@127.0.0.30>;tag=ka",
                "To: <sip:127.0.0.20:5060>",
                "Call-ID: keepalive-1",
                "CSeq: 1 OPTIONS",
            ],
            "",
        );
        let mut p = vec![payload(0, "127.0.0.30:5060", PBX, &options)];
        p.extend(dialog("the-call", "X-A: 1"));
        assert_eq!(convert_default(&p).call_id, "the-call");
        // Without a call, the first request's dialog.
        assert_eq!(convert_default(&p[..1]).call_id, "keepalive-1");
    }

    #[test]
    fn a_bye_from_the_uas_side_goes_back_along_the_dialog() {
        let mut p = dialog("call-b", "X-A: 1");
        p.truncate(p.len() - 2);
        let h = [
            "Via: SIP/2.0/UDP 127.0.0.20:5060;branch=z9hG4bK-pbx",
            "From: <sip:+15550100@127.0.0.20>;tag=pbx-9",
            "To: \"Carrier\" <sip:+15550199@carrier.example>;tag=cr-1",
            "Call-ID: call-b",
            "CSeq: 1 BYE",
        ];
        p.push(payload(
            9_000,
            PBX,
            CARRIER,
            &sip("BYE sip:+15550199@127.0.0.10:5060 SIP/2.0", &h, ""),
        ));
        p.push(payload(9_001, CARRIER, PBX, &sip("SIP/2.0 200 OK", &h, "")));
        let s = convert_default(&p);
        for kept in [
            "assign_to=\"peer\"",
            "BYE [next_url] SIP/2.0\nVia: SIP/2.0/[transport] [local_ip]:[local_port];branch=[branch]\n[routes]\n",
            "From: <sip:+15550100@127.0.0.20>;tag=[pid]SIPpTag01[call_number]",
            "To: [$peer]",
        ] {
            assert!(s.uas.contains(kept), "uas.xml lacks {kept:?}:\n{}", s.uas);
        }
        let answer = s
            .uac
            .rsplit("<recv request=\"BYE\"/>")
            .next()
            .unwrap_or_default();
        assert!(
            answer.contains("SIP/2.0 200 OK\n[last_Via:]\n[last_From:]\n[last_To:]\n"),
            "{answer}"
        );
    }

    #[test]
    fn identity_headers_are_re_signed_kept_or_warned_about() {
        use crate::stir::{identity::IdentityHeader, keys, passport::Passport, sign};
        let pem = |pair: &rcgen::KeyPair| pair.serialize_pem();
        let new_pair = || {
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
                .unwrap_or_else(|e| panic!("{e}"))
        };
        let (carrier, tester) = (new_pair(), new_pair());
        let key = |pair: &rcgen::KeyPair| {
            keys::SigningKey::from_pem(pem(pair).as_bytes()).unwrap_or_else(|e| panic!("{e}"))
        };
        let captured = sign::identity_header(
            &key(&carrier),
            &sign::SignRequest {
                orig: "+15550199",
                dest: "+15550100",
                attest: 'A',
                origid: "origid-42",
                x5u: "https://cert.carrier.example/sti.pem",
                iat: 1_700_000_000,
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let p: Vec<Payload> = dialog("call-s", "X-A: 1")
            .into_iter()
            .map(|mut p| {
                let data = String::from_utf8_lossy(&p.data)
                    .replace(IDENTITY, &format!("Identity: {captured}"));
                p.data = data.into_bytes();
                p
            })
            .collect();
        let x5u = "https://127.0.0.1:8443/sti.pem";
        let resigner =
            Resigner::new(key(&tester), x5u, 1_800_000_000).unwrap_or_else(|e| panic!("{e}"));
        let options = Options {
            identity: IdentityMode::Resign(Arc::new(resigner)),
            ..Options::default()
        };
        let s = convert(&p, &Limits::default(), &options).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            s.identity,
            IdentityNote::Resigned {
                n: 1,
                iat: 1_800_000_000,
                x5u: x5u.into()
            }
        );
        assert!(!s.uac.contains(&captured), "{}", s.uac);
        let line = s
            .uac
            .lines()
            .find_map(|l| l.strip_prefix("Identity: "))
            .unwrap_or_else(|| panic!("no Identity in {}", s.uac));
        let h = IdentityHeader::parse(line.as_bytes()).unwrap_or_else(|e| panic!("{e:?}"));
        let passport = Passport::decode(h.token).unwrap_or_else(|e| panic!("{e:?}"));
        let public =
            keys::PublicKey::from_point(tester.public_key_raw()).unwrap_or_else(|e| panic!("{e}"));
        assert!(public.verifies(passport.signing_input.as_bytes(), &passport.signature));
        let c = &passport.claims;
        assert_eq!(
            (c.attest.as_deref(), c.orig.tn.as_deref(), &c.dest.tn[..]),
            (Some("A"), Some("15550199"), &["15550100".to_owned()][..])
        );
        assert_eq!(
            (c.origid.as_deref(), c.iat),
            (Some("origid-42"), Some(1_800_000_000))
        );
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        let readme = readme(&s, "call.pcap");
        assert!(readme.contains("re-signed at conversion time"), "{readme}");
        assert!(
            readme.contains(
                "callgate trace to-sipp call.pcap --out . --call-id 'call-s' --resign KEY \
                 --x5u https://127.0.0.1:8443/sti.pem && \\\n  sipp 127.0.0.1:5060 -sf uac.xml \
                 -i 127.0.0.1 -t u1 -m 1"
            ),
            "{readme}"
        );

        // Kept on purpose: verbatim, no warning; by default: a warning.
        let options = Options {
            identity: IdentityMode::Keep,
            ..Options::default()
        };
        let s = convert(&p, &Limits::default(), &options).unwrap_or_else(|e| panic!("{e}"));
        assert!(s.uac.contains(&captured) && s.warnings.is_empty());
        assert_eq!(s.identity, IdentityNote::Kept(1));
        let s = convert_default(&p);
        assert!(s.uac.contains(&captured));
        assert_eq!(s.identity, IdentityNote::Stale(1));
        assert!(
            s.warnings.iter().any(|w| w.contains("stale")),
            "{:?}",
            s.warnings
        );

        // A captured Identity that is no PASSporT cannot be re-signed.
        let options = Options {
            identity: IdentityMode::Resign(Arc::new(
                Resigner::new(key(&tester), x5u, 0).unwrap_or_else(|e| panic!("{e}")),
            )),
            ..Options::default()
        };
        let broken: Vec<Payload> = p
            .iter()
            .cloned()
            .map(|mut p| {
                p.data = String::from_utf8_lossy(&p.data)
                    .replace(&captured, "a.b")
                    .into_bytes();
                p
            })
            .collect();
        let err = convert(&broken, &Limits::default(), &options).err();
        assert!(
            matches!(&err, Some(ToSippError::Resign(ResignError::Header { method, .. })) if method == "INVITE"),
            "{err:?}"
        );
    }

    #[test]
    fn an_expected_refusal_ends_the_uac_at_the_refusal_and_fails_the_uas() {
        let options = Options {
            expect: Expectations::parse_list("action=reject,status=608")
                .unwrap_or_else(|e| panic!("{e}")),
            ..Options::default()
        };
        let s = convert(&dialog("call-r", "X-A: 1"), &Limits::default(), &options)
            .unwrap_or_else(|e| panic!("{e}"));
        let uac = &s.uac;
        for want in [
            "<recv response=\"608\" next=\"refused\"/>",
            "ACK sip:+15550100@[remote_ip]:[remote_port] SIP/2.0\n[last_Via:]\n",
            "[last_To:]\nCall-ID: [call_id]\nCSeq: 1 ACK",
        ] {
            assert!(uac.contains(want), "uac.xml lacks {want:?}:\n{uac}");
        }
        assert!(!uac.contains("BYE"), "{uac}");
        assert_eq!(s.uas.matches("<recv").count(), 1, "{}", s.uas);
        assert!(
            s.uas.contains("callgate must refuse this call"),
            "{}",
            s.uas
        );
        assert!(s
            .uas
            .contains("<recv request=\"INVITE\" rrs=\"true\">\n    <action>"));
        let text = readme(&s, "c.pcap");
        assert!(
            text.contains("Converted with `--expect 'action=reject,status=608'`"),
            "{text}"
        );
        // Without expectations the UAS logs what it saw.
        let s = convert_default(&dialog("call-r", "X-A: 1"));
        assert!(
            s.uas.contains("<log message=\"X-Callgate-Risk:[$risk]\"/>"),
            "{}",
            s.uas
        );
        assert!(readme(&s, "c.pcap").contains("-trace_logs"));
    }

    #[test]
    fn a_capture_that_starts_mid_dialog_is_converted_with_a_warning() {
        let all = dialog("call-m", "X-A: 1");
        let from_bye: Vec<Payload> = all
            .iter()
            .skip_while(|p| !p.data.starts_with(b"BYE "))
            .cloned()
            .collect();
        assert!(!from_bye.is_empty(), "the test dialog has a BYE");
        let s = convert_default(&from_bye);
        assert!(
            s.warnings
                .iter()
                .any(|w| w.contains("mid-dialog") && w.contains("481")),
            "{:?}",
            s.warnings
        );
        // A whole call: no such warning.
        let whole = convert_default(&all);
        assert!(!whole.warnings.iter().any(|w| w.contains("mid-dialog")));
    }

    #[test]
    fn tags_and_contacts_are_rewritten_in_place() {
        assert_eq!(
            with_tag("<sip:a@b;tag=x>;tag=old;x=1", Some("new")),
            "<sip:a@b;tag=x>;x=1;tag=new"
        );
        assert_eq!(with_tag("sip:a@b;TAG=old", None), "sip:a@b");
        assert_eq!(
            contact_here("\"A\" <sips:alice@10.0.0.1:5061;transport=tls>;expires=60"),
            "\"A\" <sips:alice@[local_ip]:[local_port];transport=[transport]>;expires=60"
        );
        assert_eq!(
            contact_here("<sip:10.0.0.1;lr>"),
            "<sip:[local_ip]:[local_port];lr;transport=[transport]>"
        );
        assert_eq!(
            contact_here("sip:bob@10.0.0.2:5070;expires=5"),
            "<sip:bob@[local_ip]:[local_port];transport=[transport]>;expires=5"
        );
    }
}
