//! ng messages: a datagram into a cookie and a typed [`Request`], a
//! [`Response`] into a datagram.
//!
//! Framing follows rtpengine's `control_ng.c`: the cookie is everything
//! before the first space (a datagram without one is dropped unanswered), the
//! rest is one bencoded dictionary. Key names, the mandatory keys of each
//! command and the error texts follow `docs/ng_control_protocol.md` and
//! rtpengine's `call_interfaces.c` (`No call-id in message`,
//! `Unknown call-id`, ...), so Kamailio's and OpenSIPS's logs read the same
//! whichever relay answered. Like rtpengine, keys and flag strings match with
//! spaces and hyphens treated alike (`received from` = `received-from`).
//!
//! Parsing is strict about what callgate acts on (a malformed
//! `received-from` or `media-address` is an error reply naming the key) and
//! lenient about the rest: unknown keys are ignored, unknown flags are kept
//! in [`OfferFlags::unrecognized`].

use std::net::{IpAddr, SocketAddr};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::bencode::{self, DecodeError, Dict, Value};
use super::{
    AddressFamily, DeleteRequest, Ice, OfferFlags, OfferRequest, QueryReport, QueryRequest,
    Replace, StreamKind,
};

/// Longest cookie accepted. Kamailio's are `<id>_<pid>_<seq>`; OpenSIPS's
/// are similar.
pub const MAX_COOKIE_LEN: usize = 128;

/// Most entries kept in [`OfferFlags::unrecognized`].
const MAX_UNRECOGNIZED: usize = 32;

/// The command of a request, as a metrics label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Command {
    Ping,
    Offer,
    Answer,
    Delete,
    Query,
    /// A command this relay does not implement, or no known command.
    Other,
    /// No command could be read: the payload is not a dictionary naming one.
    Invalid,
}

impl Command {
    pub const ALL: [Command; 7] = [
        Command::Ping,
        Command::Offer,
        Command::Answer,
        Command::Delete,
        Command::Query,
        Command::Other,
        Command::Invalid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Command::Ping => "ping",
            Command::Offer => "offer",
            Command::Answer => "answer",
            Command::Delete => "delete",
            Command::Query => "query",
            Command::Other => "other",
            Command::Invalid => "invalid",
        }
    }
}

/// One parsed request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    Ping,
    Offer(OfferRequest),
    /// An answer; `to_tag` is set.
    Answer(OfferRequest),
    Delete(DeleteRequest),
    Query(QueryRequest),
}

impl Request {
    pub fn command(&self) -> Command {
        match self {
            Request::Ping => Command::Ping,
            Request::Offer(_) => Command::Offer,
            Request::Answer(_) => Command::Answer,
            Request::Delete(_) => Command::Delete,
            Request::Query(_) => Command::Query,
        }
    }

    pub fn call_id(&self) -> Option<&str> {
        match self {
            Request::Ping => None,
            Request::Offer(r) | Request::Answer(r) => Some(&r.call_id),
            Request::Delete(r) => Some(&r.call_id),
            Request::Query(r) => Some(&r.call_id),
        }
    }
}

/// Why a payload is not a request this relay can carry out; the `Display`
/// text is the reply's `error-reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("Invalid data (no payload)")]
    NoPayload,
    #[error("Could not decode dictionary: {0}")]
    Decode(#[from] DecodeError),
    #[error("Could not decode dictionary: the message is not a dictionary")]
    NotADictionary,
    #[error("Dictionary contains no key \"command\"")]
    NoCommand,
    /// An rtpengine command this relay does not implement.
    #[error("Unsupported command \"{0}\"")]
    Unsupported(&'static str),
    /// A command rtpengine does not know either (the name, sanitised).
    #[error("Unrecognized command \"{0}\"")]
    Unrecognized(String),
    /// A mandatory key is absent or empty.
    #[error("No {} in message", key_title(.key))]
    Missing { command: Command, key: &'static str },
    /// A key holds the wrong kind of value.
    #[error("Invalid value for \"{key}\": expected {expected}")]
    WrongType {
        command: Command,
        key: &'static str,
        expected: &'static str,
    },
    /// A key's value is of the right kind but unusable.
    #[error("Invalid value for \"{key}\": {reason}")]
    BadValue {
        command: Command,
        key: &'static str,
        reason: String,
    },
}

impl RequestError {
    /// The command the failed request named, as far as it was read.
    pub fn command(&self) -> Command {
        match self {
            RequestError::NoPayload
            | RequestError::Decode(_)
            | RequestError::NotADictionary
            | RequestError::NoCommand => Command::Invalid,
            RequestError::Unsupported(_) | RequestError::Unrecognized(_) => Command::Other,
            RequestError::Missing { command, .. }
            | RequestError::WrongType { command, .. }
            | RequestError::BadValue { command, .. } => *command,
        }
    }
}

/// rtpengine's wording: "No SDP body in message", "No call-id in message".
fn key_title(key: &str) -> &str {
    if key == "sdp" {
        "SDP body"
    } else {
        key
    }
}

/// rtpengine commands this relay answers with [`RequestError::Unsupported`]
/// (`ng_control_protocol.md`'s list, and `list`).
const UNSUPPORTED: [&str; 20] = [
    "list",
    "start recording",
    "stop recording",
    "pause recording",
    "block DTMF",
    "unblock DTMF",
    "block media",
    "unblock media",
    "silence media",
    "unsilence media",
    "start forwarding",
    "stop forwarding",
    "play media",
    "stop media",
    "play DTMF",
    "statistics",
    "publish",
    "subscribe request",
    "subscribe answer",
    "unsubscribe",
];

/// Splits a datagram into its cookie and payload: the cookie is the bytes
/// before the first space, 1 to [`MAX_COOKIE_LEN`] visible ASCII characters.
/// `None`: no usable cookie, so no reply can be addressed.
pub fn split_cookie(datagram: &Bytes) -> Option<(Bytes, Bytes)> {
    let head = &datagram[..datagram.len().min(MAX_COOKIE_LEN + 1)];
    let sp = memchr::memchr(b' ', head)?;
    if sp == 0 || !head[..sp].iter().all(|c| c.is_ascii_graphic()) {
        return None;
    }
    Some((datagram.slice(..sp), datagram.slice(sp + 1..)))
}

/// Splits and parses a datagram. `None`: no cookie (drop it); otherwise the
/// cookie and the request or why it is refused.
pub fn parse_datagram(datagram: &Bytes) -> Option<(Bytes, Result<Request, RequestError>)> {
    let (cookie, payload) = split_cookie(datagram)?;
    Some((cookie, parse_request(&payload)))
}

/// Parses the bencoded dictionary of a request. Trailing ASCII whitespace
/// (a newline from `echo ... | nc -u`) is ignored.
pub fn parse_request(payload: &Bytes) -> Result<Request, RequestError> {
    let end = payload
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(0, |i| i + 1);
    if end == 0 {
        return Err(RequestError::NoPayload);
    }
    let value = bencode::decode(&payload.slice(..end))?;
    let dict = value.as_dict().ok_or(RequestError::NotADictionary)?;
    let name = match lookup(dict, "command") {
        Some(Value::Bytes(b)) => b,
        _ => return Err(RequestError::NoCommand),
    };
    match name.as_ref() {
        b"ping" => Ok(Request::Ping),
        b"offer" => offer(dict, Command::Offer).map(Request::Offer),
        b"answer" => offer(dict, Command::Answer).map(Request::Answer),
        b"delete" => delete(dict).map(Request::Delete),
        b"query" => query(dict).map(Request::Query),
        other => match UNSUPPORTED.iter().find(|c| same_name(other, c.as_bytes())) {
            Some(c) => Err(RequestError::Unsupported(c)),
            None => Err(RequestError::Unrecognized(sanitise(other, 64))),
        },
    }
}

/// Printable ASCII only, at most `max` characters: safe to log and echo.
fn sanitise(b: &[u8], max: usize) -> String {
    b.iter()
        .take(max)
        .map(|&c| {
            if c.is_ascii_graphic() || c == b' ' {
                char::from(c)
            } else {
                '?'
            }
        })
        .collect()
}

fn norm(c: u8) -> u8 {
    if c == b' ' {
        b'-'
    } else {
        c
    }
}

/// Equal with spaces and hyphens alike.
fn same_name(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| norm(*x) == norm(*y))
}

/// The value under `key` (written with hyphens), or under its spelling with
/// spaces.
fn lookup<'d>(dict: &'d Dict, key: &str) -> Option<&'d Value> {
    dict.get(key.as_bytes()).or_else(|| {
        dict.iter()
            .find(|(k, _)| same_name(k, key.as_bytes()))
            .map(|(_, v)| v)
    })
}

struct Reader<'d> {
    dict: &'d Dict,
    command: Command,
}

impl<'d> Reader<'d> {
    fn wrong(&self, key: &'static str, expected: &'static str) -> RequestError {
        RequestError::WrongType {
            command: self.command,
            key,
            expected,
        }
    }

    fn bad(&self, key: &'static str, reason: impl Into<String>) -> RequestError {
        RequestError::BadValue {
            command: self.command,
            key,
            reason: reason.into(),
        }
    }

    fn bytes(&self, key: &'static str) -> Result<Option<&'d Bytes>, RequestError> {
        match lookup(self.dict, key) {
            None => Ok(None),
            Some(Value::Bytes(b)) => Ok(Some(b)),
            Some(_) => Err(self.wrong(key, "a string")),
        }
    }

    fn text(&self, key: &'static str) -> Result<Option<String>, RequestError> {
        self.bytes(key)?
            .map(|b| {
                std::str::from_utf8(b)
                    .map(str::to_owned)
                    .map_err(|_| self.bad(key, "not UTF-8"))
            })
            .transpose()
    }

    /// An optional string; empty counts as absent (as in rtpengine).
    fn optional(&self, key: &'static str) -> Result<Option<String>, RequestError> {
        Ok(self.text(key)?.filter(|s| !s.is_empty()))
    }

    /// A mandatory, non-empty string.
    fn required(&self, key: &'static str) -> Result<String, RequestError> {
        self.optional(key)?.ok_or(RequestError::Missing {
            command: self.command,
            key,
        })
    }

    /// An optional list of byte strings.
    fn list(&self, key: &'static str) -> Result<Option<Vec<&'d Bytes>>, RequestError> {
        match lookup(self.dict, key) {
            None => Ok(None),
            Some(Value::List(items)) => items
                .iter()
                .map(|v| {
                    v.as_bytes()
                        .ok_or_else(|| self.wrong(key, "a list of strings"))
                })
                .collect::<Result<Vec<_>, _>>()
                .map(Some),
            Some(_) => Err(self.wrong(key, "a list of strings")),
        }
    }

    fn ip(&self, key: &'static str, s: &str) -> Result<IpAddr, RequestError> {
        s.parse().map_err(|_| {
            self.bad(
                key,
                format!("{:?} is not an IP address", sanitise(s.as_bytes(), 64)),
            )
        })
    }
}

fn utf8(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn family(s: &[u8]) -> Option<AddressFamily> {
    match s {
        b"IP4" => Some(AddressFamily::Ip4),
        b"IP6" => Some(AddressFamily::Ip6),
        _ => None,
    }
}

/// `offer` and `answer`: mandatory `sdp`, `call-id`, `from-tag` and, in an
/// answer, `to-tag` — checked in rtpengine's order.
fn offer(dict: &Dict, command: Command) -> Result<OfferRequest, RequestError> {
    let r = Reader { dict, command };
    let sdp = r
        .bytes("sdp")?
        .filter(|b| !b.is_empty())
        .cloned()
        .ok_or(RequestError::Missing {
            command,
            key: "sdp",
        })?;
    let call_id = r.required("call-id")?;
    let from_tag = r.required("from-tag")?;
    let to_tag = if command == Command::Answer {
        Some(r.required("to-tag")?)
    } else {
        r.optional("to-tag")?
    };
    Ok(OfferRequest {
        call_id,
        from_tag,
        to_tag,
        sdp,
        flags: offer_flags(&r)?,
    })
}

fn offer_flags(r: &Reader<'_>) -> Result<OfferFlags, RequestError> {
    let mut f = OfferFlags::default();

    for item in r.list("flags")?.unwrap_or_default() {
        let name = utf8(item).replace(' ', "-");
        let on = match name.as_str() {
            "trust-address" => &mut f.trust_address,
            "SIP-source-address" => &mut f.sip_source_address,
            "symmetric" => &mut f.symmetric,
            "asymmetric" => &mut f.asymmetric,
            "strict-source" => &mut f.strict_source,
            "media-handover" => &mut f.media_handover,
            "port-latching" => &mut f.port_latching,
            "no-rtcp-attribute" => &mut f.no_rtcp_attribute,
            "full-rtcp-attribute" => &mut f.full_rtcp_attribute,
            "loop-protect" => &mut f.loop_protect,
            "original-sendrecv" => &mut f.original_sendrecv,
            "reject-ICE" => &mut f.reject_ice,
            // rtpengine also takes replace-flags in the flags list.
            _ => match name.strip_prefix("replace-") {
                Some(what) if set_replace(&mut f.replace, what) => continue,
                _ => {
                    note(&mut f, utf8(item));
                    continue;
                }
            },
        };
        *on = true;
    }

    for item in r.list("replace")?.unwrap_or_default() {
        let name = utf8(item).replace(' ', "-");
        if !set_replace(&mut f.replace, &name) {
            note(&mut f, format!("replace={}", utf8(item)));
        }
    }

    if let Some(ice) = r.bytes("ICE")? {
        f.ice = match ice.as_ref() {
            b"remove" => Some(Ice::Remove),
            b"force" => Some(Ice::Force),
            b"default" => Some(Ice::Default),
            b"force-relay" | b"force_relay" | b"force relay" => Some(Ice::ForceRelay),
            b"optional" => Some(Ice::Optional),
            other => {
                note(&mut f, format!("ICE={}", utf8(other)));
                None
            }
        };
    }

    if let Some(list) = r.list("direction")? {
        match list.as_slice() {
            [a, b] => f.direction = Some([utf8(a), utf8(b)]),
            _ => return Err(r.bad("direction", "expected a list of two interface names")),
        }
    }

    if let Some(list) = r.list("received-from")? {
        let [fam, addr] = list.as_slice() else {
            return Err(r.bad(
                "received-from",
                "expected a list of an address family and an address",
            ));
        };
        let ip = r.ip("received-from", &utf8(addr))?;
        match (family(fam), ip) {
            (Some(AddressFamily::Ip4), IpAddr::V4(_))
            | (Some(AddressFamily::Ip6), IpAddr::V6(_)) => f.received_from = Some(ip),
            _ => {
                return Err(r.bad(
                    "received-from",
                    format!("family {:?} does not fit {ip}", sanitise(fam, 16)),
                ))
            }
        }
    }

    if let Some(s) = r.optional("media-address")? {
        f.media_address = Some(r.ip("media-address", &s)?);
    }

    if let Some(s) = r.bytes("address-family")? {
        f.address_family =
            Some(family(s).ok_or_else(|| r.bad("address-family", "expected IP4 or IP6"))?);
    }

    f.transport_protocol = r.optional("transport-protocol")?;

    for item in r.list("rtcp-mux")?.unwrap_or_default() {
        match item.as_ref() {
            b"offer" => f.rtcp_mux.offer = true,
            b"require" => f.rtcp_mux.require = true,
            b"demux" => f.rtcp_mux.demux = true,
            b"accept" => f.rtcp_mux.accept = true,
            b"reject" => f.rtcp_mux.reject = true,
            other => note(&mut f, format!("rtcp-mux={}", utf8(other))),
        }
    }

    f.via_branch = r.optional("via-branch")?;
    f.label = match r.optional("label")? {
        Some(l) => Some(l),
        None => r.optional("from-label")?,
    };
    Ok(f)
}

/// Keeps an option not acted on, for the session layer to log.
fn note(f: &mut OfferFlags, s: String) {
    if f.unrecognized.len() < MAX_UNRECOGNIZED {
        f.unrecognized.push(s);
    }
}

/// Sets the replace-flag `name` (hyphenated); false if unknown.
fn set_replace(r: &mut Replace, name: &str) -> bool {
    let flag = match name {
        "origin" => &mut r.origin,
        "session-connection" => &mut r.session_connection,
        "SDP-version" => &mut r.sdp_version,
        "force-increment-sdp-ver" => &mut r.force_increment_sdp_ver,
        "username" => &mut r.username,
        "session-name" => &mut r.session_name,
        "zero-address" => &mut r.zero_address,
        _ => return false,
    };
    *flag = true;
    true
}

/// `delete`: `call-id` is mandatory; without tags the whole call goes.
fn delete(dict: &Dict) -> Result<DeleteRequest, RequestError> {
    let r = Reader {
        dict,
        command: Command::Delete,
    };
    let call_id = r.required("call-id")?;
    let fatal = r
        .list("flags")?
        .unwrap_or_default()
        .iter()
        .any(|f| f.as_ref() == b"fatal");
    let delete_delay = match lookup(dict, "delete-delay") {
        None => None,
        Some(Value::Int(i)) => {
            Some(u32::try_from(*i).map_err(|_| r.bad("delete-delay", "out of range"))?)
        }
        // rtpengine's legacy form: the number as a string.
        Some(Value::Bytes(b)) => Some(
            std::str::from_utf8(b)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or_else(|| r.bad("delete-delay", "not a number of seconds"))?,
        ),
        Some(_) => return Err(r.wrong("delete-delay", "an integer")),
    };
    Ok(DeleteRequest {
        call_id,
        from_tag: r.optional("from-tag")?,
        to_tag: r.optional("to-tag")?,
        via_branch: r.optional("via-branch")?,
        fatal,
        delete_delay,
    })
}

/// `query`: `call-id` is mandatory, tags narrow the report.
fn query(dict: &Dict) -> Result<QueryRequest, RequestError> {
    let r = Reader {
        dict,
        command: Command::Query,
    };
    Ok(QueryRequest {
        call_id: r.required("call-id")?,
        from_tag: r.optional("from-tag")?,
        to_tag: r.optional("to-tag")?,
    })
}

/// A reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// `{"result": "pong"}`.
    Pong,
    /// `{"result": "ok", "sdp": ...}` to an offer or answer.
    Sdp(Bytes),
    /// `{"result": "ok"}` to a delete, with rtpengine's `warning` when the
    /// call was not found, and the call's statistics when known.
    Deleted {
        warning: Option<String>,
        report: Option<Box<QueryReport>>,
    },
    /// `{"result": "ok", "created": ..., "tags": ..., "totals": ...}`.
    Query(Box<QueryReport>),
    /// `{"result": "error", "error-reason": ...}`.
    Error(String),
}

impl Response {
    pub fn is_error(&self) -> bool {
        matches!(self, Response::Error(_))
    }

    /// The reply dictionary.
    pub fn to_dict(&self) -> Dict {
        let mut d = Dict::new();
        match self {
            Response::Pong => d.insert("result", "pong"),
            Response::Sdp(sdp) => {
                d.insert("result", "ok");
                d.insert("sdp", sdp.clone());
            }
            Response::Deleted { warning, report } => {
                d.insert("result", "ok");
                if let Some(w) = warning {
                    d.insert("warning", w);
                }
                if let Some(r) = report {
                    report_into(&mut d, r);
                }
            }
            Response::Query(r) => {
                d.insert("result", "ok");
                report_into(&mut d, r);
            }
            Response::Error(reason) => {
                d.insert("result", "error");
                d.insert("error-reason", reason);
            }
        }
        d
    }

    /// The reply datagram: `<cookie> <bencoded dictionary>`.
    pub fn encode(&self, cookie: &[u8]) -> Bytes {
        let mut out = Vec::with_capacity(cookie.len() + 64);
        out.extend_from_slice(cookie);
        out.push(b' ');
        Value::Dict(self.to_dict()).encode(&mut out);
        Bytes::from(out)
    }
}

/// Seconds and microseconds since the UNIX epoch (0 before it).
fn unix(t: SystemTime) -> (u64, u32) {
    t.duration_since(UNIX_EPOCH)
        .map_or((0, 0), |d| (d.as_secs(), d.subsec_micros()))
}

fn endpoint(addr: &SocketAddr) -> Dict {
    let mut d = Dict::new();
    d.insert(
        "family",
        match addr {
            SocketAddr::V4(_) => "IPv4",
            SocketAddr::V6(_) => "IPv6",
        },
    );
    d.insert("address", addr.ip().to_string());
    d.insert("port", addr.port());
    d
}

fn counters(c: &super::Counters) -> Dict {
    let mut d = Dict::new();
    d.insert("packets", c.packets);
    d.insert("bytes", c.bytes);
    d.insert("errors", c.errors);
    d
}

/// Adds the keys of rtpengine's `ng_call_stats()` to `d`.
fn report_into(d: &mut Dict, r: &QueryReport) {
    let (secs, micros) = unix(r.created);
    d.insert("created", secs);
    d.insert("created_us", micros);
    d.insert("last signal", unix(r.last_signal).0);
    let mut tags = Dict::new();
    for leg in &r.legs {
        let mut t = Dict::new();
        t.insert("tag", &leg.tag);
        if let Some(l) = &leg.label {
            t.insert("label", l);
        }
        t.insert("created", unix(leg.created).0);
        if let Some(peer) = &leg.in_dialogue_with {
            t.insert("in dialogue with", peer);
        }
        let medias = leg
            .medias
            .iter()
            .map(|m| {
                let mut md = Dict::new();
                md.insert("index", m.index);
                md.insert("type", &m.media_type);
                md.insert("protocol", &m.protocol);
                let streams = m
                    .streams
                    .iter()
                    .map(|s| {
                        let mut sd = Dict::new();
                        if let Some(p) = s.local_port {
                            sd.insert("local port", p);
                        }
                        if let Some(e) = &s.endpoint {
                            sd.insert("endpoint", endpoint(e));
                        }
                        if let Some(e) = &s.advertised_endpoint {
                            sd.insert("advertised endpoint", endpoint(e));
                        }
                        sd.insert("last packet", s.last_packet.map_or(0, |t| unix(t).0));
                        sd.insert(
                            "flags",
                            vec![Value::from(match s.kind {
                                StreamKind::Rtp => "RTP",
                                StreamKind::Rtcp => "RTCP",
                            })],
                        );
                        sd.insert("stats", counters(&s.stats));
                        Value::Dict(sd)
                    })
                    .collect::<Vec<_>>();
                md.insert("streams", streams);
                Value::Dict(md)
            })
            .collect::<Vec<_>>();
        t.insert("medias", medias);
        tags.insert(leg.tag.clone(), t);
    }
    d.insert("tags", tags);
    let (rtp, rtcp) = r.totals();
    let mut totals = Dict::new();
    totals.insert("RTP", counters(&rtp));
    totals.insert("RTCP", counters(&rtcp));
    d.insert("totals", totals);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::super::{Counters, LegReport, MediaReport, RtcpMux, StreamReport};
    use super::*;

    const SDP: &str = "v=0\r\no=user1 53655765 2353687637 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0 8 101\r\na=rtpmap:101 telephone-event/8000\r\na=candidate:1 1 UDP 2130706431 198.51.100.7 6000 typ host\r\n";

    fn bstr(s: &str) -> String {
        format!("{}:{s}", s.len())
    }

    /// What Kamailio's `rtpengine_offer("replace-origin
    /// replace-session-connection ICE=remove trust-address")` sends: keys
    /// unsorted, `command` last, `received-from` added by the module.
    fn kamailio_offer() -> Bytes {
        Bytes::from(format!(
            "2_23151_17 d5:flagsl13:trust-addresse7:replacel6:origin18:session-connectione3:ICE6:remove3:sdp{}7:call-id{}13:received-froml3:IP410:192.0.2.10e8:from-tag{}10:via-branch{}7:command5:offere",
            bstr(SDP),
            bstr("a84b4c76e66710@pc33.example.com"),
            bstr("1928301774"),
            bstr("z9hG4bK776asdhds"),
        ))
    }

    fn parse(s: &[u8]) -> Result<Request, RequestError> {
        parse_request(&Bytes::copy_from_slice(s))
    }

    #[test]
    fn ping_from_the_protocol_document() {
        let d = Bytes::from_static(b"5323_1 d7:command4:pinge");
        let (cookie, req) = parse_datagram(&d).unwrap();
        assert_eq!(cookie.as_ref(), b"5323_1");
        assert_eq!(req, Ok(Request::Ping));
        assert_eq!(
            Response::Pong.encode(&cookie).as_ref(),
            b"5323_1 d6:result4:ponge"
        );
    }

    #[test]
    fn kamailio_offer_is_parsed() {
        let (cookie, req) = parse_datagram(&kamailio_offer()).unwrap();
        assert_eq!(cookie.as_ref(), b"2_23151_17");
        let Ok(Request::Offer(o)) = req else {
            panic!("{req:?}")
        };
        assert_eq!(o.call_id, "a84b4c76e66710@pc33.example.com");
        assert_eq!(o.from_tag, "1928301774");
        assert_eq!(o.to_tag, None);
        assert_eq!(o.sdp.as_ref(), SDP.as_bytes());
        assert_eq!(
            o.flags,
            OfferFlags {
                replace: Replace {
                    origin: true,
                    session_connection: true,
                    ..Replace::default()
                },
                ice: Some(Ice::Remove),
                received_from: Some("192.0.2.10".parse().unwrap()),
                via_branch: Some("z9hG4bK776asdhds".into()),
                trust_address: true,
                ..OfferFlags::default()
            }
        );
    }

    #[test]
    fn answer_needs_a_to_tag() {
        let base = format!(
            "7:command6:answer7:call-id3:c-13:sdp{}8:from-tag2:f1",
            bstr(SDP)
        );
        let err = parse(format!("d{base}e").as_bytes()).unwrap_err();
        assert_eq!(err.to_string(), "No to-tag in message");
        assert_eq!(err.command(), Command::Answer);
        let Ok(Request::Answer(a)) = parse(format!("d{base}6:to-tag2:t1e").as_bytes()) else {
            panic!()
        };
        assert_eq!(a.to_tag.as_deref(), Some("t1"));
        assert_eq!(a.from_tag, "f1");
    }

    #[test]
    fn reoffer_carries_the_to_tag() {
        let Ok(Request::Offer(o)) = parse(
            format!(
                "d7:command5:offer7:call-id1:c8:from-tag1:f6:to-tag1:t3:sdp{}e",
                bstr(SDP)
            )
            .as_bytes(),
        ) else {
            panic!()
        };
        assert_eq!(o.to_tag.as_deref(), Some("t"));
    }

    #[test]
    fn missing_keys_are_named_in_rtpengine_order() {
        let sdp = bstr(SDP);
        for (body, reason) in [
            ("7:command5:offer".to_owned(), "No SDP body in message"),
            (
                "7:command5:offer3:sdp0:7:call-id1:c8:from-tag1:f".to_owned(),
                "No SDP body in message",
            ),
            (
                format!("7:command5:offer3:sdp{sdp}"),
                "No call-id in message",
            ),
            (
                format!("7:command5:offer3:sdp{sdp}7:call-id0:"),
                "No call-id in message",
            ),
            (
                format!("7:command5:offer3:sdp{sdp}7:call-id1:c"),
                "No from-tag in message",
            ),
            ("7:command6:delete".to_owned(), "No call-id in message"),
            ("7:command5:query".to_owned(), "No call-id in message"),
        ] {
            let err = parse(format!("d{body}e").as_bytes()).unwrap_err();
            assert_eq!(err.to_string(), reason, "{body}");
        }
    }

    #[test]
    fn wrong_types_are_named() {
        let err = parse(b"d7:command5:query7:call-idi5ee").unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid value for \"call-id\": expected a string"
        );
        assert_eq!(err.command(), Command::Query);
        let err = parse(
            format!(
                "d7:command5:offer7:call-id1:c8:from-tag1:f3:sdp{}5:flags5:fatale",
                bstr(SDP)
            )
            .as_bytes(),
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            "Invalid value for \"flags\": expected a list of strings"
        );
        let err = parse(b"d7:command5:query7:call-id2:\xff\xfee").unwrap_err();
        assert_eq!(err.to_string(), "Invalid value for \"call-id\": not UTF-8");
    }

    fn offer_with(extra: &str) -> Result<OfferFlags, RequestError> {
        match parse(
            format!(
                "d7:command5:offer7:call-id1:c8:from-tag1:f3:sdp{}{extra}e",
                bstr(SDP)
            )
            .as_bytes(),
        )? {
            Request::Offer(o) => Ok(o.flags),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn flags_with_spaces_or_hyphens() {
        let f = offer_with(
            "5:flagsl13:trust address9:symmetric10:asymmetric13:strict-source14:media handover18:SIP-source-address13:port latching17:no-rtcp-attribute19:full rtcp attribute12:loop-protect17:original sendrecv10:reject-ICE14:replace-origin26:replace-session-connection10:always-onee",
        )
        .unwrap();
        assert!(f.trust_address && f.symmetric && f.asymmetric && f.strict_source);
        assert!(f.media_handover && f.sip_source_address && f.port_latching);
        assert!(f.no_rtcp_attribute && f.full_rtcp_attribute && f.loop_protect);
        assert!(f.original_sendrecv && f.reject_ice);
        assert!(f.replace.origin && f.replace.session_connection);
        assert_eq!(f.unrecognized, ["always-one"]);
    }

    #[test]
    fn replace_list_in_both_spellings() {
        let f = offer_with(
            "7:replacel6:origin18:session connection11:SDP-version8:username12:session-name12:zero address23:force-increment-sdp-ver5:boguse",
        )
        .unwrap();
        assert_eq!(
            f.replace,
            Replace {
                origin: true,
                session_connection: true,
                sdp_version: true,
                force_increment_sdp_ver: true,
                username: true,
                session_name: true,
                zero_address: true,
            }
        );
        assert_eq!(f.unrecognized, ["replace=bogus"]);
    }

    #[test]
    fn ice_values() {
        for (v, ice) in [
            ("remove", Some(Ice::Remove)),
            ("force", Some(Ice::Force)),
            ("default", Some(Ice::Default)),
            ("force-relay", Some(Ice::ForceRelay)),
            ("force_relay", Some(Ice::ForceRelay)),
            ("optional", Some(Ice::Optional)),
            ("sometimes", None),
        ] {
            let f = offer_with(&format!("3:ICE{}", bstr(v))).unwrap();
            assert_eq!(f.ice, ice, "{v}");
        }
        assert_eq!(
            offer_with("3:ICE6:fuzzyz").unwrap().unrecognized,
            ["ICE=fuzzyz"]
        );
    }

    #[test]
    fn addressing_options() {
        let f = offer_with(
            "9:directionl4:priv3:pube13:received froml3:IP611:2001:db8::1e13:media address11:203.0.113.514:address family3:IP618:transport-protocol8:RTP/SAVP8:rtcp-muxl5:offer5:demux7:requiree5:label6:caller",
        )
        .unwrap();
        assert_eq!(f.direction, Some(["priv".to_owned(), "pub".to_owned()]));
        assert_eq!(f.received_from, Some("2001:db8::1".parse().unwrap()));
        assert_eq!(f.media_address, Some("203.0.113.5".parse().unwrap()));
        assert_eq!(f.address_family, Some(AddressFamily::Ip6));
        assert_eq!(f.transport_protocol.as_deref(), Some("RTP/SAVP"));
        assert_eq!(
            f.rtcp_mux,
            RtcpMux {
                offer: true,
                demux: true,
                require: true,
                ..RtcpMux::default()
            }
        );
        assert_eq!(f.label.as_deref(), Some("caller"));
    }

    #[test]
    fn bad_addressing_options_are_errors_naming_the_key() {
        for (extra, reason) in [
            (
                "13:received-froml3:IP49:not-an-ipe",
                "Invalid value for \"received-from\": \"not-an-ip\" is not an IP address",
            ),
            (
                "13:received-froml3:IP69:192.0.2.1e",
                "Invalid value for \"received-from\": family \"IP6\" does not fit 192.0.2.1",
            ),
            (
                "13:received-froml3:IP4e",
                "Invalid value for \"received-from\": expected a list of an address family and an address",
            ),
            (
                "13:media-address4:here",
                "Invalid value for \"media-address\": \"here\" is not an IP address",
            ),
            (
                "14:address-family4:IPv4",
                "Invalid value for \"address-family\": expected IP4 or IP6",
            ),
            (
                "9:directionl4:prive",
                "Invalid value for \"direction\": expected a list of two interface names",
            ),
        ] {
            let err = offer_with(extra).unwrap_err();
            assert_eq!(err.to_string(), reason, "{extra}");
            assert_eq!(err.command(), Command::Offer);
        }
    }

    #[test]
    fn delete_and_query() {
        assert_eq!(
            parse(b"d7:command6:delete7:call-id1:c8:from-tag1:f10:via-branch2:vb5:flagsl5:fatale12:delete delayi0ee"),
            Ok(Request::Delete(DeleteRequest {
                call_id: "c".into(),
                from_tag: Some("f".into()),
                to_tag: None,
                via_branch: Some("vb".into()),
                fatal: true,
                delete_delay: Some(0),
            }))
        );
        let Ok(Request::Delete(d)) = parse(b"d7:command6:delete7:call-id1:c12:delete-delay2:30e")
        else {
            panic!()
        };
        assert_eq!(
            (d.from_tag, d.fatal, d.delete_delay),
            (None, false, Some(30))
        );
        assert_eq!(
            parse(b"d7:command6:delete7:call-id1:c12:delete-delayi-1ee")
                .unwrap_err()
                .to_string(),
            "Invalid value for \"delete-delay\": out of range"
        );
        assert_eq!(
            parse(b"d7:command5:query7:call-id1:c6:to-tag1:t8:from-tag0:e"),
            Ok(Request::Query(QueryRequest {
                call_id: "c".into(),
                from_tag: None,
                to_tag: Some("t".into()),
            }))
        );
    }

    #[test]
    fn commands_other_than_the_five() {
        let err = parse(b"d7:command15:start recording7:call-id1:ce").unwrap_err();
        assert_eq!(err.to_string(), "Unsupported command \"start recording\"");
        assert_eq!(err.command(), Command::Other);
        let err = parse(b"d7:command10:block-DTMFe").unwrap_err();
        assert_eq!(err, RequestError::Unsupported("block DTMF"));
        let err = parse(b"d7:command6:fly\x00mee").unwrap_err();
        assert_eq!(err.to_string(), "Unrecognized command \"fly?me\"");
        // Commands are case-sensitive.
        assert!(matches!(
            parse(b"d7:command4:PINGe"),
            Err(RequestError::Unrecognized(_))
        ));
    }

    #[test]
    fn undecodable_payloads() {
        assert_eq!(parse(b""), Err(RequestError::NoPayload));
        assert_eq!(parse(b" \r\n"), Err(RequestError::NoPayload));
        assert_eq!(parse(b"le"), Err(RequestError::NotADictionary));
        assert_eq!(parse(b"de"), Err(RequestError::NoCommand));
        assert_eq!(parse(b"d7:commandi1ee"), Err(RequestError::NoCommand));
        let err = parse(b"d7:command4:ping").unwrap_err();
        assert_eq!(err.command(), Command::Invalid);
        assert_eq!(
            err.to_string(),
            "Could not decode dictionary: input ends inside a value (after 16 bytes)"
        );
        // A trailing newline (echo | nc -u) is fine.
        assert_eq!(parse(b"d7:command4:pinge\n"), Ok(Request::Ping));
    }

    #[test]
    fn cookies() {
        let split = |s: &'static [u8]| split_cookie(&Bytes::from_static(s)).map(|(c, _)| c);
        assert_eq!(
            split(b"abc d7:command4:pinge").as_deref(),
            Some(&b"abc"[..])
        );
        assert_eq!(split(b"abc "), Some(Bytes::from_static(b"abc")));
        assert_eq!(split(b"d7:command4:pinge"), None); // no space
        assert_eq!(split(b" d7:command4:pinge"), None); // empty cookie
        assert_eq!(split(b"a\x00b d7:command4:pinge"), None); // not visible ASCII
        assert_eq!(split(b""), None);
        let long = format!("{} de", "c".repeat(MAX_COOKIE_LEN));
        assert!(split_cookie(&Bytes::from(long)).is_some());
        let too_long = format!("{} de", "c".repeat(MAX_COOKIE_LEN + 1));
        assert!(split_cookie(&Bytes::from(too_long)).is_none());
        // Only the first space splits; the payload keeps the rest.
        let (c, p) = split_cookie(&Bytes::from_static(b"k  de")).unwrap();
        assert_eq!((c.as_ref(), p.as_ref()), (&b"k"[..], &b" de"[..]));
    }

    #[test]
    fn replies_are_encoded_with_sorted_keys() {
        assert_eq!(
            Response::Sdp(Bytes::from_static(b"v=0\r\n"))
                .encode(b"c1")
                .as_ref(),
            b"c1 d6:result2:ok3:sdp5:v=0\r\ne"
        );
        assert_eq!(
            Response::Error("No call-id in message".into())
                .encode(b"c2")
                .as_ref(),
            &b"c2 d12:error-reason21:No call-id in message6:result5:errore"[..]
        );
        assert_eq!(
            Response::Deleted {
                warning: Some("Call-ID not found or tags didn't match".into()),
                report: None
            }
            .encode(b"c3")
            .as_ref(),
            &b"c3 d6:result2:ok7:warning38:Call-ID not found or tags didn't matche"[..]
        );
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn stream(kind: StreamKind, port: u16, packets: u64, bytes: u64) -> StreamReport {
        StreamReport {
            kind,
            local_port: Some(port),
            endpoint: Some("10.0.0.1:57370".parse().unwrap()),
            advertised_endpoint: None,
            last_packet: Some(at(1_402_064_124)),
            stats: Counters {
                packets,
                bytes,
                errors: 0,
            },
        }
    }

    #[test]
    fn query_reply_has_rtpengines_layout() {
        let report = QueryReport {
            created: at(1_402_064_111) + Duration::from_micros(250),
            last_signal: at(1_402_064_116),
            legs: vec![
                LegReport {
                    tag: "cs6kn1rloc".into(),
                    label: None,
                    created: at(1_402_064_111),
                    in_dialogue_with: Some("0f0d2e18".into()),
                    medias: vec![MediaReport {
                        index: 1,
                        media_type: "audio".into(),
                        protocol: "RTP/AVP".into(),
                        streams: vec![
                            stream(StreamKind::Rtp, 30018, 343, 56950),
                            stream(StreamKind::Rtcp, 30019, 2, 164),
                        ],
                    }],
                },
                LegReport {
                    tag: "0f0d2e18".into(),
                    label: Some("callee".into()),
                    created: at(1_402_064_112),
                    in_dialogue_with: Some("cs6kn1rloc".into()),
                    medias: vec![MediaReport {
                        index: 1,
                        media_type: "audio".into(),
                        protocol: "RTP/AVP".into(),
                        streams: vec![
                            stream(StreamKind::Rtp, 30016, 362, 43337),
                            stream(StreamKind::Rtcp, 30017, 20, 2080),
                        ],
                    }],
                },
            ],
        };
        let wire = Response::Query(Box::new(report)).encode(b"q1");
        let dict = bencode::decode(&wire.slice(3..)).unwrap();
        let d = dict.as_dict().unwrap();
        let int = |d: &Dict, k: &str| d.get(k.as_bytes()).and_then(Value::as_int);
        let sub = |d: &Dict, k: &str| {
            d.get(k.as_bytes())
                .and_then(Value::as_dict)
                .cloned()
                .unwrap()
        };
        assert_eq!(d.get(b"result").and_then(Value::as_str), Some("ok"));
        assert_eq!(int(d, "created"), Some(1_402_064_111));
        assert_eq!(int(d, "created_us"), Some(250));
        assert_eq!(int(d, "last signal"), Some(1_402_064_116));
        let totals = sub(d, "totals");
        let rtp = sub(&totals, "RTP");
        assert_eq!(
            (
                int(&rtp, "packets"),
                int(&rtp, "bytes"),
                int(&rtp, "errors")
            ),
            (Some(705), Some(100_287), Some(0))
        );
        let rtcp = sub(&totals, "RTCP");
        assert_eq!(
            (int(&rtcp, "packets"), int(&rtcp, "bytes")),
            (Some(22), Some(2244))
        );
        let tags = sub(d, "tags");
        let caller = sub(&tags, "cs6kn1rloc");
        assert_eq!(
            caller.get(b"tag").and_then(Value::as_str),
            Some("cs6kn1rloc")
        );
        assert_eq!(
            caller.get(b"in dialogue with").and_then(Value::as_str),
            Some("0f0d2e18")
        );
        assert_eq!(
            sub(&tags, "0f0d2e18").get(b"label").and_then(Value::as_str),
            Some("callee")
        );
        let media = caller.get(b"medias").and_then(Value::as_list).unwrap()[0]
            .as_dict()
            .cloned()
            .unwrap();
        assert_eq!(media.get(b"type").and_then(Value::as_str), Some("audio"));
        assert_eq!(int(&media, "index"), Some(1));
        let s0 = media.get(b"streams").and_then(Value::as_list).unwrap()[0]
            .as_dict()
            .cloned()
            .unwrap();
        assert_eq!(int(&s0, "local port"), Some(30018));
        assert_eq!(int(&s0, "last packet"), Some(1_402_064_124));
        assert_eq!(
            s0.get(b"flags").and_then(Value::as_list),
            Some(&[Value::from("RTP")][..])
        );
        let ep = sub(&s0, "endpoint");
        assert_eq!(ep.get(b"family").and_then(Value::as_str), Some("IPv4"));
        assert_eq!(ep.get(b"address").and_then(Value::as_str), Some("10.0.0.1"));
        assert_eq!(int(&ep, "port"), Some(57370));
        assert_eq!(int(&sub(&s0, "stats"), "packets"), Some(343));
        assert!(s0.get(b"advertised endpoint").is_none());
    }

    #[test]
    fn every_prefix_of_an_offer_is_refused_without_panic() {
        let d = kamailio_offer();
        for end in 0..d.len() {
            let prefix = d.slice(..end);
            if let Some((_, req)) = parse_datagram(&prefix) {
                assert!(req.is_err(), "prefix {end} parsed");
            }
        }
    }

    #[test]
    fn random_mutations_of_an_offer_never_panic() {
        let mut rng = fastrand::Rng::with_seed(0x0ffe);
        let base = kamailio_offer().to_vec();
        let alphabet = b"0123456789:ilde- ";
        let mut ok = 0;
        for _ in 0..20_000 {
            let mut m = base.clone();
            for _ in 0..rng.usize(1..4) {
                let i = rng.usize(..m.len());
                match rng.u8(..4) {
                    0 => m[i] = alphabet[rng.usize(..alphabet.len())],
                    1 => m[i] = rng.u8(..),
                    2 => {
                        m.remove(i);
                    }
                    _ => m.insert(i, alphabet[rng.usize(..alphabet.len())]),
                }
            }
            if let Some((cookie, req)) = parse_datagram(&Bytes::from(m)) {
                let resp = match req {
                    Ok(_) => {
                        ok += 1;
                        Response::Pong
                    }
                    Err(e) => Response::Error(e.to_string()),
                };
                // Every reply is a well-formed datagram.
                let wire = resp.encode(&cookie);
                assert!(bencode::decode(&wire.slice(cookie.len() + 1..)).is_ok());
            }
        }
        assert!(ok > 0);
    }
}
