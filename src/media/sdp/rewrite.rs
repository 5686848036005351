//! The anchoring rewrite: point each anchored stream at the relay by editing
//! only `c=`, the `m=` port, `a=rtcp` and the `o=` sess-version, and
//! optionally removing ICE lines. Every other byte is copied.
//!
//! # Rules
//!
//! For each m-line with an [`Anchor`] (`None` leaves the m-line as it is):
//! * the `m=` port becomes [`Anchor::rtp_port`] (RFC 8866 §5.14);
//! * `a=rtcp` (RFC 3605 §2.1), only when the original has one, gets
//!   [`Anchor::rtcp_port`] — or the RTP port when that is `None`, i.e. RTCP
//!   multiplexed (RFC 5761 §5.1.1; RFC 8858) — and, if it carried an address, the
//!   anchor address; `a=rtcp-mux` stays;
//! * the connection address becomes the anchor address, written `IN IP4` or
//!   `IN IP6` after the anchor's family (RFC 8866 §5.7). An RFC 2543 hold
//!   address (`0.0.0.0` or `::` without ICE, see [`Media::is_on_hold`])
//!   is kept, so a held stream stays held (RFC 3264 §8.4).
//!
//! Where the connection address is written:
//! * a media-level `c=` is replaced in place;
//! * the session-level `c=` is replaced when every enabled m-line that uses it
//!   (has no `c=` of its own) is anchored and not held by address: it takes
//!   the first such anchor's address, and any of those m-lines anchored at
//!   another address gets its own `c=`. When no m-line uses it, it takes the
//!   first anchor's address, so the original address does not leak;
//! * otherwise (an m-line left as it is, or held, still uses it) the
//!   session-level `c=` stays, and each anchored m-line that used it gets
//!   its own `c=`;
//! * an inserted `c=` goes after the `m=` line and its `i=` lines (RFC 8866
//!   §5 order) and ends like the line before it.
//!
//! With [`RewriteOptions::strip_ice`], every ICE attribute line (see
//! [`Media::has_ice`]) is removed, at session and media level.
//! With [`RewriteOptions::origin_version`], the `o=` sess-version is set; the
//! caller keeps the per-leg counter that RFC 3264 §8 asks to increase.

use std::io::Write as _;
use std::net::IpAddr;
use std::ops::Range;

use super::parse::{is_ice_attribute, split_attribute};
use super::{Line, Media, Sdp};

/// Where the relay receives one stream, and how its keying changes. For a
/// disabled stream (port 0) only the keying applies, and the ports must be
/// 0 and `None`: it stays disabled, with the proto and keys of the side it
/// goes to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    pub addr: IpAddr,
    pub rtp_port: u16,
    /// `None`: RTCP is multiplexed on the RTP port (RFC 5761).
    pub rtcp_port: Option<u16>,
    pub keying: Keying,
}

/// What the rewrite does to a stream's SDES-SRTP keying (RFC 4568) and
/// its transport protocol.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Keying {
    /// The proto and `a=crypto` lines stay: plain RTP, or SRTP passed
    /// through with the sides' own keys.
    #[default]
    AsIs,
    /// The relay terminates SRTP and the receiving side gets plain RTP:
    /// `RTP/SAVP` becomes `RTP/AVP` (`RTP/SAVPF` becomes `RTP/AVPF`) and
    /// every `a=crypto` line is removed.
    Plain,
    /// The relay speaks SRTP with the receiving side: `RTP/AVP` becomes
    /// `RTP/SAVP` (`RTP/AVPF` becomes `RTP/SAVPF`) and the stream's
    /// `a=crypto` lines are these values instead (in place of the first
    /// original one, else after the description's last line).
    Sdes(Vec<String>),
}

/// `RTP/AVP` → `RTP/SAVP` and `RTP/AVPF` → `RTP/SAVPF` (RFC 3711 §12,
/// RFC 5124 §6); `None` for any other proto.
pub fn secure_proto(proto: &str) -> Option<&'static str> {
    match proto {
        "RTP/AVP" | "RTP/SAVP" => Some("RTP/SAVP"),
        "RTP/AVPF" | "RTP/SAVPF" => Some("RTP/SAVPF"),
        _ => None,
    }
}

/// `RTP/SAVP` → `RTP/AVP` and `RTP/SAVPF` → `RTP/AVPF`; `None` for any
/// other proto (DTLS-SRTP's `UDP/TLS/RTP/SAVP` among them).
pub fn plain_proto(proto: &str) -> Option<&'static str> {
    match proto {
        "RTP/AVP" | "RTP/SAVP" => Some("RTP/AVP"),
        "RTP/AVPF" | "RTP/SAVPF" => Some("RTP/AVPF"),
        _ => None,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RewriteOptions {
    /// Remove ICE attributes (a trunk or PBX that does not do ICE).
    pub strip_ice: bool,
    /// New `o=` sess-version; `None` keeps the original.
    pub origin_version: Option<u64>,
}

/// A plan that does not fit the description.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RewriteError {
    #[error("plan has {got} entries for {expected} media descriptions")]
    PlanLength { expected: usize, got: usize },
    /// A port-0 stream stays disabled (RFC 3264 §6): plan `None` for it, or
    /// an anchor with port 0 that only changes its keying.
    #[error("media description {media} is disabled (port 0) and cannot be anchored")]
    Disabled { media: usize },
    /// `m=<media> <port>/<count>` needs `count` port pairs; one anchor has one.
    #[error("media description {media} uses {count} ports; an anchor has one")]
    PortCount { media: usize, count: u16 },
    #[error("anchor for media description {media} has port 0")]
    ZeroPort { media: usize },
}

/// The rewritten body, as edits over the original: [`Rewrite::len`] gives
/// the new Content-Length before any byte is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewrite<'a> {
    body: &'a [u8],
    /// Sorted, non-overlapping: replace `body[at]` with `arena[text]`.
    edits: Vec<(Range<usize>, Range<usize>)>,
    arena: Vec<u8>,
}

impl Rewrite<'_> {
    /// Length of the new body.
    pub fn len(&self) -> usize {
        self.edits
            .iter()
            .fold(self.body.len(), |n, (at, text)| n - at.len() + text.len())
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Appends the new body to `out`.
    pub fn write_to(&self, out: &mut Vec<u8>) {
        out.reserve(self.len());
        let mut pos = 0;
        for (at, text) in &self.edits {
            out.extend_from_slice(&self.body[pos..at.start]);
            out.extend_from_slice(&self.arena[text.clone()]);
            pos = at.end;
        }
        out.extend_from_slice(&self.body[pos..]);
    }
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::new();
        self.write_to(&mut out);
        out
    }

    /// Replaces `body[at]` (empty: inserts) with what `write` appends.
    fn edit(&mut self, at: Range<usize>, write: impl FnOnce(&mut Vec<u8>)) {
        let start = self.arena.len();
        write(&mut self.arena);
        self.edits.push((at, start..self.arena.len()));
    }
    fn replace(&mut self, at: Range<usize>, text: std::fmt::Arguments<'_>) {
        // Writing into a Vec cannot fail.
        self.edit(at, |w| drop(w.write_fmt(text)));
    }

    /// Inserts a line (`text`, without its ending) after `line`, ending it
    /// like `line`. After an unterminated last line the new line goes
    /// before whatever is left of the ending, introduced by
    /// `fallback_ending`.
    fn insert_line_after(
        &mut self,
        line: &Line,
        text: std::fmt::Arguments<'_>,
        fallback_ending: &[u8],
    ) {
        let body = self.body;
        let ending = &body[line.value_end..line.end];
        if ending.ends_with(b"\n") {
            self.edit(line.end..line.end, |w| {
                drop(w.write_fmt(text));
                w.extend_from_slice(ending);
            });
        } else {
            self.edit(line.value_end..line.value_end, |w| {
                w.extend_from_slice(fallback_ending);
                drop(w.write_fmt(text));
            });
        }
    }
}

/// Formats `IN IP4 <addr>` / `IN IP6 <addr>`.
struct Conn(IpAddr);

impl std::fmt::Display for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0 {
            IpAddr::V4(a) => write!(f, "IN IP4 {a}"),
            IpAddr::V6(a) => write!(f, "IN IP6 {a}"),
        }
    }
}

impl<'a> Sdp<'a> {
    /// Applies an anchoring plan (one entry per m-line, in order) under the
    /// rules in the [module docs](mod@crate::media::sdp::rewrite).
    pub fn rewrite(
        &self,
        plan: &[Option<Anchor>],
        options: &RewriteOptions,
    ) -> Result<Rewrite<'a>, RewriteError> {
        self.check_plan(plan)?;
        let mut out = Rewrite {
            body: self.body,
            edits: Vec::new(),
            arena: Vec::new(),
        };
        if let Some(version) = options.origin_version {
            let (start, end) = self.origin.version_at;
            out.replace(start..end, format_args!("{version}"));
        }
        let session_addr = self.session_connection_target(plan);
        if let (Some(c), Some(addr)) = (self.connection, session_addr) {
            out.replace(
                self.lines[c.line].value_range(),
                format_args!("{}", Conn(addr)),
            );
        }
        for (m, anchor) in self.media.iter().zip(plan) {
            match anchor {
                Some(a) if m.is_disabled() => self.rekey_media(&mut out, m, &a.keying),
                Some(a) => self.anchor_media(&mut out, m, a, session_addr),
                None => {}
            }
        }
        if options.strip_ice {
            for line in &self.lines {
                let (name, _) = split_attribute(&self.body[line.value_range()]);
                if line.kind == b'a' && is_ice_attribute(name) {
                    out.edits.push((line.range(), 0..0));
                }
            }
        }
        // An insertion at a line's end sorts before the removal of the next line.
        out.edits.sort_by_key(|(at, _)| (at.start, at.end));
        Ok(out)
    }

    fn check_plan(&self, plan: &[Option<Anchor>]) -> Result<(), RewriteError> {
        if plan.len() != self.media.len() {
            return Err(RewriteError::PlanLength {
                expected: self.media.len(),
                got: plan.len(),
            });
        }
        for (media, (m, anchor)) in self.media.iter().zip(plan).enumerate() {
            let Some(anchor) = anchor else { continue };
            if m.is_disabled() {
                // Only its keying may change: it stays disabled.
                if anchor.rtp_port != 0 || anchor.rtcp_port.is_some() {
                    return Err(RewriteError::Disabled { media });
                }
                continue;
            }
            if m.port_count != 1 {
                return Err(RewriteError::PortCount {
                    media,
                    count: m.port_count,
                });
            }
            if anchor.rtp_port == 0 || anchor.rtcp_port == Some(0) {
                return Err(RewriteError::ZeroPort { media });
            }
        }
        Ok(())
    }

    /// The address the session-level `c=` should take, if it changes.
    fn session_connection_target(&self, plan: &[Option<Anchor>]) -> Option<IpAddr> {
        let session = self.connection?;
        let mut users = self
            .media
            .iter()
            .zip(plan)
            .filter(|(m, _)| m.connection.is_none() && !m.is_disabled())
            .peekable();
        if users.peek().is_none() {
            if session.addr.is_unspecified() {
                return None;
            }
            return self
                .media
                .iter()
                .zip(plan)
                .filter(|(m, _)| !m.is_disabled())
                .find_map(|(m, a)| a.as_ref().filter(|_| !self.held_by_address(m)))
                .map(|a| a.addr);
        }
        // Every user anchored and not held: the first one's address; users
        // anchored elsewhere get their own c=.
        let mut target = None;
        for (m, anchor) in users {
            let addr = anchor.as_ref().filter(|_| !self.held_by_address(m))?.addr;
            target.get_or_insert(addr);
        }
        target
    }

    /// The first line's ending when it has one, else CRLF.
    fn line_ending(&self) -> &'a [u8] {
        let first = &self.lines[0];
        let ending = &self.body[first.value_end..first.end];
        if ending.ends_with(b"\n") {
            ending
        } else {
            b"\r\n"
        }
    }

    fn anchor_media(
        &self,
        out: &mut Rewrite<'_>,
        m: &Media<'_>,
        anchor: &Anchor,
        session_addr: Option<IpAddr>,
    ) {
        let (start, end) = m.port_at;
        out.replace(start..end, format_args!("{}", anchor.rtp_port));
        let held = self.held_by_address(m);
        match m.connection {
            Some(c) if !held => {
                let at = self.lines[c.line].value_range();
                out.replace(at, format_args!("{}", Conn(anchor.addr)));
            }
            None if !held && session_addr != Some(anchor.addr) => {
                let after = self.lines[m.line + 1..]
                    .iter()
                    .take_while(|l| l.kind == b'i')
                    .last()
                    .unwrap_or(&self.lines[m.line]);
                out.insert_line_after(
                    after,
                    format_args!("c={}", Conn(anchor.addr)),
                    self.line_ending(),
                );
            }
            _ => {}
        }
        if let Some(rtcp) = m.rtcp {
            let port = anchor.rtcp_port.unwrap_or(anchor.rtp_port);
            let at = self.lines[rtcp.line].value_range();
            let at = at.start + "rtcp:".len()..at.end;
            match rtcp.addr {
                None => out.replace(at, format_args!("{port}")),
                Some(orig) => {
                    let addr = if held && orig.is_unspecified() {
                        orig
                    } else {
                        anchor.addr
                    };
                    out.replace(at, format_args!("{port} {}", Conn(addr)));
                }
            }
        }
        self.rekey_media(out, m, &anchor.keying);
    }

    /// Applies a [`Keying`] to one media description.
    fn rekey_media(&self, out: &mut Rewrite<'_>, m: &Media<'_>, keying: &Keying) {
        let (proto, values) = match keying {
            Keying::AsIs => return,
            Keying::Plain => (plain_proto(m.proto), &[][..]),
            Keying::Sdes(values) => (secure_proto(m.proto), &values[..]),
        };
        if let Some(p) = proto.filter(|p| *p != m.proto) {
            let (start, end) = m.proto_at;
            out.replace(start..end, format_args!("{p}"));
        }
        let mut old = m.crypto.iter().map(|c| &self.lines[c.line]);
        match (old.next(), values.split_first()) {
            (Some(first), Some((v0, rest))) => {
                // The new lines take the first old line's place and ending.
                let ending = &self.body[first.value_end..first.end];
                let ending = if ending.is_empty() {
                    self.line_ending()
                } else {
                    ending
                };
                out.edit(first.value_range(), |w| {
                    drop(write!(w, "crypto:{v0}"));
                    for v in rest {
                        w.extend_from_slice(ending);
                        drop(write!(w, "a=crypto:{v}"));
                    }
                });
            }
            (Some(first), None) => out.edits.push((first.range(), 0..0)),
            (None, _) if values.is_empty() => {}
            (None, _) => {
                // After the description's last line. When that line is the
                // body's unterminated last line: before it (the ICE strip
                // may remove it), or after it if it is the m= line itself.
                let last = &self.lines[m.last_line];
                let ending = &self.body[last.value_end..last.end];
                let le = self.line_ending();
                let (at, lead, sep, trail): (usize, &[u8], &[u8], &[u8]) =
                    if ending.ends_with(b"\n") {
                        (last.end, b"", ending, ending)
                    } else if m.last_line == m.line {
                        (last.value_end, le, le, b"")
                    } else {
                        (last.start, b"", le, le)
                    };
                out.edit(at..at, |w| {
                    w.extend_from_slice(lead);
                    for (i, v) in values.iter().enumerate() {
                        if i > 0 {
                            w.extend_from_slice(sep);
                        }
                        drop(write!(w, "a=crypto:{v}"));
                    }
                    w.extend_from_slice(trail);
                });
            }
        }
        for line in old {
            out.edits.push((line.range(), 0..0));
        }
    }
}
