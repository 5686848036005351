//! One pass over the body: split lines (CRLF or bare LF, RFC 8866 §5), index
//! them, and decode the fields anchoring needs.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::{Connection, Crypto, Direction, Limits, Line, Media, Origin, Rtcp, Sdp, SdpError};

pub(super) fn parse<'a>(body: &'a [u8], limits: &Limits) -> Result<Sdp<'a>, SdpError> {
    if body.len() > limits.max_bytes {
        return Err(SdpError::TooLarge(limits.max_bytes));
    }
    let mut p = Parser {
        body,
        limits,
        line_no: 0,
        lines: Vec::new(),
        origin: None,
        connection: None,
        direction: None,
        session_has_ice: false,
        media: Vec::new(),
    };
    let mut start = 0;
    while start < body.len() {
        let nl = memchr::memchr(b'\n', &body[start..]).map(|i| start + i);
        let end = nl.map_or(body.len(), |i| i + 1);
        let mut value_end = nl.unwrap_or(body.len());
        if value_end > start && body[value_end - 1] == b'\r' {
            value_end -= 1;
        }
        p.line(start, value_end, end)?;
        start = end;
    }
    p.finish()
}

struct Parser<'a, 'l> {
    body: &'a [u8],
    limits: &'l Limits,
    /// 1-based physical line number of the current line, for errors.
    line_no: usize,
    lines: Vec<Line>,
    origin: Option<Origin<'a>>,
    connection: Option<Connection>,
    direction: Option<Direction>,
    session_has_ice: bool,
    media: Vec<Media<'a>>,
}

impl<'a> Parser<'a, '_> {
    fn line(&mut self, start: usize, value_end: usize, end: usize) -> Result<(), SdpError> {
        self.line_no += 1;
        if self.line_no > self.limits.max_lines {
            return Err(SdpError::TooManyLines(self.limits.max_lines));
        }
        if value_end == start {
            return Ok(()); // empty line: tolerated, copied as is
        }
        let raw = &self.body[start..value_end];
        if raw.len() < 2 || raw[1] != b'=' || !raw[0].is_ascii_alphabetic() {
            return Err(SdpError::MalformedLine { line: self.line_no });
        }
        let kind = raw[0];
        if self.lines.is_empty() && kind != b'v' {
            return Err(SdpError::MissingVersion);
        }
        let index = self.lines.len();
        self.lines.push(Line {
            kind,
            start,
            value_end,
            end,
        });
        if let Some(m) = self.media.last_mut().filter(|_| kind != b'm') {
            m.last_line = index;
        }
        let value = &self.body[start + 2..value_end];
        match kind {
            b'v' => self.version(index, value),
            b'o' => self.origin(start + 2, value),
            b'c' => self.connection_line(index, value),
            b'm' => self.media_line(index, start + 2, value),
            b'a' => self.attribute(index, value),
            _ => Ok(()),
        }
    }

    fn version(&self, index: usize, value: &[u8]) -> Result<(), SdpError> {
        if index != 0 {
            return Err(self.misplaced("v="));
        }
        if value != b"0" {
            return Err(self.bad("v=", "version is not 0"));
        }
        Ok(())
    }

    /// RFC 8866 §5.2.
    fn origin(&mut self, value_at: usize, value: &'a [u8]) -> Result<(), SdpError> {
        if self.origin.is_some() || !self.media.is_empty() {
            return Err(self.misplaced("o="));
        }
        let bad = |reason| self.bad("o=", reason);
        let Some([username, sess_id, version, nettype, addrtype, address]) = exactly(value) else {
            return Err(bad("expected 6 fields"));
        };
        let sess_version = decimal_u64(version.1).ok_or(bad("sess-version is not a number"))?;
        let text = |(_, b): (usize, &'a [u8])| std::str::from_utf8(b).map_err(|_| bad("not UTF-8"));
        self.origin = Some(Origin {
            username: text(username)?,
            sess_id: text(sess_id)?,
            sess_version,
            nettype: text(nettype)?,
            addrtype: text(addrtype)?,
            address: text(address)?,
            version_at: (value_at + version.0, value_at + version.0 + version.1.len()),
        });
        Ok(())
    }

    /// RFC 8866 §5.7, at session level or in the current media description.
    fn connection_line(&mut self, index: usize, value: &[u8]) -> Result<(), SdpError> {
        let addr = match exactly(value) {
            Some([(_, nettype), (_, addrtype), (_, address)]) => {
                connection_address(nettype, addrtype, address)
            }
            None => Err("expected IN IP4|IP6 <address>"),
        }
        .map_err(|reason| self.bad("c=", reason))?;
        let c = Connection { addr, line: index };
        let slot = match self.media.last_mut() {
            Some(m) => &mut m.connection,
            None => &mut self.connection,
        };
        if slot.is_some() {
            return Err(SdpError::Misplaced {
                line: self.line_no,
                field: "c=",
            });
        }
        *slot = Some(c);
        Ok(())
    }

    /// `m=<media> <port>[/<number of ports>] <proto> <fmt> …` (RFC 8866 §5.14).
    fn media_line(
        &mut self,
        index: usize,
        value_at: usize,
        value: &'a [u8],
    ) -> Result<(), SdpError> {
        if self.origin.is_none() {
            return Err(SdpError::MissingOrigin);
        }
        if self.media.len() == self.limits.max_media {
            return Err(SdpError::TooManyMedia(self.limits.max_media));
        }
        let bad = |reason| self.bad("m=", reason);
        let mut f = fields(value);
        let (Some((_, media_type)), Some((port_at, port_field)), Some((proto_at, proto))) =
            (f.next(), f.next(), f.next())
        else {
            return Err(bad("expected <media> <port> <proto> <fmt>…"));
        };
        let (port, count) = match memchr::memchr(b'/', port_field) {
            Some(i) => (&port_field[..i], Some(&port_field[i + 1..])),
            None => (port_field, None),
        };
        let port_at = (value_at + port_at, value_at + port_at + port.len());
        let proto_at = (value_at + proto_at, value_at + proto_at + proto.len());
        let port = decimal_u16(port).ok_or(bad("port is not a number 0-65535"))?;
        let port_count = match count {
            None => 1,
            Some(c) => decimal_u16(c)
                .filter(|n| *n > 0)
                .ok_or(bad("port count is not a positive number"))?,
        };
        let formats = f
            .next()
            .map_or(&value[value.len()..], |(at, _)| &value[at..]);
        let text = |b| std::str::from_utf8(b).map_err(|_| bad("not UTF-8"));
        self.media.push(Media {
            media_type: text(media_type)?,
            port,
            port_count,
            proto: text(proto)?,
            format_list: text(formats)?.trim_end_matches(' '),
            connection: None,
            address: None,
            rtcp: None,
            rtcp_mux: false,
            direction: Direction::SendRecv,
            ptime: None,
            has_ice: false,
            has_crypto: false,
            crypto: Vec::new(),
            on_hold: false,
            declared_direction: None,
            line: index,
            port_at,
            proto_at,
            last_line: index,
        });
        Ok(())
    }

    /// `a=<name>[:<value>]` (RFC 8866 §5.13): only the attributes anchoring
    /// reads; every other one passes through.
    fn attribute(&mut self, index: usize, value: &'a [u8]) -> Result<(), SdpError> {
        let (name, arg) = split_attribute(value);
        if let Some(d) = direction(name) {
            match self.media.last_mut() {
                Some(m) => m.declared_direction = Some(d),
                None => self.direction = Some(d),
            }
            return Ok(());
        }
        if is_ice_attribute(name) {
            match self.media.last_mut() {
                Some(m) => m.has_ice = true,
                None => self.session_has_ice = true,
            }
            return Ok(());
        }
        let line_no = self.line_no;
        // The rest are media-level attributes; at session level they pass through.
        let Some(m) = self.media.last_mut() else {
            return Ok(());
        };
        match name {
            b"rtcp" => {
                if m.rtcp.is_some() {
                    return Err(SdpError::Misplaced {
                        line: line_no,
                        field: "a=rtcp",
                    });
                }
                let (port, addr) =
                    rtcp_value(arg.unwrap_or_default()).map_err(|reason| SdpError::BadField {
                        line: line_no,
                        field: "a=rtcp",
                        reason,
                    })?;
                m.rtcp = Some(Rtcp {
                    port,
                    addr,
                    line: index,
                });
            }
            b"rtcp-mux" => m.rtcp_mux = true,
            b"crypto" => {
                m.has_crypto = true;
                // Not UTF-8: not a key this relay can use; it passes through.
                if let Ok(value) = std::str::from_utf8(arg.unwrap_or_default()) {
                    m.crypto.push(Crypto { value, line: index });
                }
            }
            b"ptime" => m.ptime = arg.and_then(ptime_ms),
            _ => {}
        }
        Ok(())
    }

    fn finish(self) -> Result<Sdp<'a>, SdpError> {
        if self.lines.is_empty() {
            return Err(SdpError::MissingVersion);
        }
        let origin = self.origin.ok_or(SdpError::MissingOrigin)?;
        let mut sdp = Sdp {
            body: self.body,
            lines: self.lines,
            origin,
            connection: self.connection,
            direction: self.direction,
            session_has_ice: self.session_has_ice,
            media: self.media,
        };
        let session_addr = sdp.connection.map(|c| c.addr);
        for i in 0..sdp.media.len() {
            let m = &mut sdp.media[i];
            m.address = m.connection.map(|c| c.addr).or(session_addr);
            if m.address.is_none() && m.port != 0 {
                return Err(SdpError::MissingConnection { media: i });
            }
            m.direction = m
                .declared_direction
                .or(sdp.direction)
                .unwrap_or(Direction::SendRecv);
            let m = &sdp.media[i];
            let on_hold = matches!(m.direction, Direction::SendOnly | Direction::Inactive)
                || sdp.held_by_address(m);
            sdp.media[i].on_hold = on_hold;
        }
        Ok(sdp)
    }

    fn bad(&self, field: &'static str, reason: &'static str) -> SdpError {
        SdpError::BadField {
            line: self.line_no,
            field,
            reason,
        }
    }
    fn misplaced(&self, field: &'static str) -> SdpError {
        SdpError::Misplaced {
            line: self.line_no,
            field,
        }
    }
}

/// The space-separated fields of a value with their offsets in it. RFC 8866
/// asks for single spaces; runs of spaces are tolerated.
pub(super) fn fields(value: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let mut at = 0;
    value
        .split(|b| *b == b' ')
        .map(move |f| {
            let start = at;
            at += f.len() + 1;
            (start, f)
        })
        .filter(|(_, f)| !f.is_empty())
}

/// Exactly `N` fields (see [`fields`]), or `None`.
fn exactly<const N: usize>(value: &[u8]) -> Option<[(usize, &[u8]); N]> {
    let mut out = [(0, &value[..0]); N];
    let mut it = fields(value);
    for slot in &mut out {
        *slot = it.next()?;
    }
    it.next().is_none().then_some(out)
}

/// `<name>` and the optional `<value>` after the first `:`.
pub(super) fn split_attribute(value: &[u8]) -> (&[u8], Option<&[u8]>) {
    match memchr::memchr(b':', value) {
        Some(i) => (&value[..i], Some(&value[i + 1..])),
        None => (value, None),
    }
}

/// ICE attributes (RFC 8839 §5; `end-of-candidates`: RFC 8840 §8.2).
pub(super) fn is_ice_attribute(name: &[u8]) -> bool {
    matches!(
        name,
        b"candidate"
            | b"remote-candidates"
            | b"end-of-candidates"
            | b"ice-ufrag"
            | b"ice-pwd"
            | b"ice-options"
            | b"ice-lite"
            | b"ice-mismatch"
            | b"ice-pacing"
    )
}

fn direction(name: &[u8]) -> Option<Direction> {
    Some(match name {
        b"sendrecv" => Direction::SendRecv,
        b"sendonly" => Direction::SendOnly,
        b"recvonly" => Direction::RecvOnly,
        b"inactive" => Direction::Inactive,
        _ => return None,
    })
}

/// `IN IP4 <IPv4>` or `IN IP6 <IPv6>`: unicast literals only.
fn connection_address(
    nettype: &[u8],
    addrtype: &[u8],
    address: &[u8],
) -> Result<IpAddr, &'static str> {
    if nettype != b"IN" {
        return Err("network type is not IN");
    }
    let text = std::str::from_utf8(address).map_err(|_| "address is not an IP literal")?;
    match addrtype {
        b"IP4" => text
            .parse::<Ipv4Addr>()
            .map(IpAddr::V4)
            .map_err(|_| "address is not an IPv4 literal"),
        b"IP6" => text
            .parse::<Ipv6Addr>()
            .map(IpAddr::V6)
            .map_err(|_| "address is not an IPv6 literal"),
        _ => Err("address type is not IP4 or IP6"),
    }
}

/// `<port> [IN IP4|IP6 <address>]` (RFC 3605 §2.1).
fn rtcp_value(value: &[u8]) -> Result<(u16, Option<IpAddr>), &'static str> {
    let port = |p| decimal_u16(p).ok_or("port is not a number 0-65535");
    if let Some([(_, p)]) = exactly(value) {
        return Ok((port(p)?, None));
    }
    match exactly(value) {
        Some([(_, p), (_, nettype), (_, addrtype), (_, address)]) => Ok((
            port(p)?,
            Some(connection_address(nettype, addrtype, address)?),
        )),
        None => Err("expected <port> [IN IP4|IP6 <address>]"),
    }
}

/// `a=ptime` may be fractional (RFC 8866 §6.4); whole milliseconds are kept.
fn ptime_ms(value: &[u8]) -> Option<u32> {
    let whole = value.split(|b| *b == b'.').next()?;
    decimal_u64(whole).and_then(|n| u32::try_from(n).ok())
}

fn decimal_u16(digits: &[u8]) -> Option<u16> {
    decimal_u64(digits).and_then(|n| u16::try_from(n).ok())
}

/// ASCII digits only (no sign, no spaces), at most 20 of them, no overflow.
fn decimal_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    digits.iter().try_fold(0u64, |n, d| {
        if d.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        } else {
            None
        }
    })
}
