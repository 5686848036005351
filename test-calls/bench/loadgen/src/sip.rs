//! Just enough SIP for a load generator: a one-pass header index over one
//! UDP datagram (no allocation), and the few header-value helpers the UAC
//! and UAS need (name-addr URIs, parameters, comma lists, Via sent-by).

use std::net::{IpAddr, SocketAddr};

/// Most Via or Record-Route header lines kept per message.
pub const MAX_MULTI: usize = 16;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Start<'a> {
    Request { method: &'a [u8], uri: &'a [u8] },
    Response { code: u16 },
}

/// Up to `MAX_MULTI` header values in message order.
#[derive(Clone, Copy, Debug)]
pub struct Multi<'a> {
    items: [&'a [u8]; MAX_MULTI],
    len: usize,
}

impl<'a> Multi<'a> {
    const fn new() -> Self {
        Multi {
            items: [b""; MAX_MULTI],
            len: 0,
        }
    }
    fn push(&mut self, v: &'a [u8]) -> Result<(), &'static str> {
        if self.len == MAX_MULTI {
            return Err("too many header lines");
        }
        self.items[self.len] = v;
        self.len += 1;
        Ok(())
    }
    fn extend_last(&mut self, v: &'a [u8]) {
        if self.len > 0 {
            self.items[self.len - 1] = v;
        }
    }
    pub fn as_slice(&self) -> &[&'a [u8]] {
        &self.items[..self.len]
    }
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// A parsed message: slices into the datagram.
#[derive(Debug)]
pub struct Msg<'a> {
    pub start: Start<'a>,
    /// Via header values, one per header line (a line may hold a comma list).
    pub vias: Multi<'a>,
    pub from: &'a [u8],
    pub to: &'a [u8],
    pub call_id: &'a [u8],
    pub cseq_num: u32,
    pub cseq_method: &'a [u8],
    pub contact: Option<&'a [u8]>,
    /// Record-Route header values, one per header line, in message order.
    pub record_routes: Multi<'a>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Field {
    Via,
    From,
    To,
    CallId,
    CSeq,
    Contact,
    RecordRoute,
    Other,
}

fn field(name: &[u8]) -> Field {
    let eq = |s: &str| name.eq_ignore_ascii_case(s.as_bytes());
    match name.len() {
        1 => match name[0].to_ascii_lowercase() {
            b'v' => Field::Via,
            b'f' => Field::From,
            b't' => Field::To,
            b'i' => Field::CallId,
            b'm' => Field::Contact,
            _ => Field::Other,
        },
        2 if eq("to") => Field::To,
        3 if eq("via") => Field::Via,
        4 if eq("from") => Field::From,
        4 if eq("cseq") => Field::CSeq,
        7 if eq("call-id") => Field::CallId,
        7 if eq("contact") => Field::Contact,
        12 if eq("record-route") => Field::RecordRoute,
        _ => Field::Other,
    }
}

pub fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t' | b'\r' | b'\n', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t' | b'\r' | b'\n'] = s {
        s = rest;
    }
    s
}

fn find(hay: &[u8], b: u8) -> Option<usize> {
    hay.iter().position(|&c| c == b)
}

/// Parses one datagram. Headers only: the body is not needed.
pub fn parse(buf: &[u8]) -> Result<Msg<'_>, &'static str> {
    // Tolerate leading CRLFs (keep-alives are whole datagrams of CRLF).
    let mut pos = 0;
    while pos < buf.len() && (buf[pos] == b'\r' || buf[pos] == b'\n') {
        pos += 1;
    }
    let line_end = |from: usize| -> (usize, usize) {
        match find(&buf[from..], b'\n') {
            Some(i) => {
                let end = from + i;
                let trimmed = if end > from && buf[end - 1] == b'\r' {
                    end - 1
                } else {
                    end
                };
                (trimmed, end + 1)
            }
            None => (buf.len(), buf.len()),
        }
    };
    let (end, next) = line_end(pos);
    let first = &buf[pos..end];
    if first.is_empty() {
        return Err("empty message");
    }
    let start = if let Some(rest) = first.strip_prefix(b"SIP/2.0 ") {
        if rest.len() < 3 || !rest[..3].iter().all(u8::is_ascii_digit) {
            return Err("bad status line");
        }
        let code = rest[..3]
            .iter()
            .fold(0u16, |a, d| a * 10 + u16::from(d - b'0'));
        Start::Response { code }
    } else {
        let sp = find(first, b' ').ok_or("bad request line")?;
        let rest = &first[sp + 1..];
        let sp2 = find(rest, b' ').ok_or("bad request line")?;
        if &rest[sp2 + 1..] != b"SIP/2.0" {
            return Err("bad request line");
        }
        Start::Request {
            method: &first[..sp],
            uri: &rest[..sp2],
        }
    };
    pos = next;
    let mut m = Msg {
        start,
        vias: Multi::new(),
        from: b"",
        to: b"",
        call_id: b"",
        cseq_num: 0,
        cseq_method: b"",
        contact: None,
        record_routes: Multi::new(),
    };
    let mut cseq: &[u8] = b"";
    // (field, value start) of the previous header line, for folded lines.
    let mut last: Option<(Field, usize)> = None;
    loop {
        if pos >= buf.len() {
            break; // no blank line: a datagram may end right after the headers
        }
        let (end, next) = line_end(pos);
        let line = &buf[pos..end];
        if line.is_empty() {
            break;
        }
        if line[0] == b' ' || line[0] == b'\t' {
            // Folded continuation: widen the previous value to this line's end.
            if let Some((f, vstart)) = last {
                let v = trim(&buf[vstart..end]);
                match f {
                    Field::Via => m.vias.extend_last(v),
                    Field::RecordRoute => m.record_routes.extend_last(v),
                    Field::From => m.from = v,
                    Field::To => m.to = v,
                    Field::CallId => m.call_id = v,
                    Field::CSeq => cseq = v,
                    Field::Contact => m.contact = Some(v),
                    Field::Other => {}
                }
            }
            pos = next;
            continue;
        }
        let colon = find(line, b':').ok_or("header without colon")?;
        let f = field(trim(&line[..colon]));
        let vstart = pos + colon + 1;
        let v = trim(&buf[vstart..end]);
        match f {
            Field::Via => m.vias.push(v)?,
            Field::RecordRoute => m.record_routes.push(v)?,
            Field::From => m.from = v,
            Field::To => m.to = v,
            Field::CallId => m.call_id = v,
            Field::CSeq => cseq = v,
            Field::Contact => {
                if m.contact.is_none() {
                    m.contact = Some(v)
                }
            }
            Field::Other => {}
        }
        last = Some((f, vstart));
        pos = next;
    }
    if m.vias.is_empty()
        || m.from.is_empty()
        || m.to.is_empty()
        || m.call_id.is_empty()
        || cseq.is_empty()
    {
        return Err("missing mandatory header");
    }
    let sp = find(cseq, b' ').ok_or("bad CSeq")?;
    let num = &cseq[..sp];
    if num.is_empty() || num.len() > 9 || !num.iter().all(u8::is_ascii_digit) {
        return Err("bad CSeq");
    }
    m.cseq_num = num.iter().fold(0u32, |a, d| a * 10 + u32::from(d - b'0'));
    m.cseq_method = trim(&cseq[sp + 1..]);
    Ok(m)
}

/// Splits a header value on commas outside quotes and angle brackets.
pub fn split_commas(v: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(v);
    std::iter::from_fn(move || loop {
        let s = rest?;
        let (mut quoted, mut angle, mut esc) = (false, false, false);
        let mut cut = None;
        for (i, &c) in s.iter().enumerate() {
            if esc {
                esc = false;
                continue;
            }
            match c {
                b'\\' if quoted => esc = true,
                b'"' => quoted = !quoted,
                b'<' if !quoted => angle = true,
                b'>' if !quoted => angle = false,
                b',' if !quoted && !angle => {
                    cut = Some(i);
                    break;
                }
                _ => {}
            }
        }
        let item = match cut {
            Some(i) => {
                rest = Some(&s[i + 1..]);
                &s[..i]
            }
            None => {
                rest = None;
                s
            }
        };
        let item = trim(item);
        if !item.is_empty() {
            return Some(item);
        }
    })
}

/// The first element of a (possibly comma-separated) header value.
pub fn first_element(v: &[u8]) -> &[u8] {
    split_commas(v).next().unwrap_or(b"")
}

/// The URI of a name-addr (`"x" <uri>;p`) or addr-spec (`uri;p`).
pub fn uri_of(v: &[u8]) -> &[u8] {
    if let Some(lt) = find(v, b'<') {
        let rest = &v[lt + 1..];
        return &rest[..find(rest, b'>').unwrap_or(rest.len())];
    }
    // addr-spec: header parameters start at the first ';'.
    trim(&v[..find(v, b';').unwrap_or(v.len())])
}

/// The header parameters of a name-addr/addr-spec value (after `>` or the URI).
fn header_params(v: &[u8]) -> &[u8] {
    if let Some(gt) = find(v, b'>') {
        return &v[gt + 1..];
    }
    &v[find(v, b';').unwrap_or(v.len())..]
}

/// Looks up `;name[=value]` in a parameter list. `Some(b"")` for a flag.
pub fn param<'a>(params: &'a [u8], name: &str) -> Option<&'a [u8]> {
    for p in params.split(|&c| c == b';').skip(1) {
        let p = trim(p);
        let (k, v) = match find(p, b'=') {
            Some(i) => (trim(&p[..i]), trim(&p[i + 1..])),
            None => (p, &b""[..]),
        };
        if k.eq_ignore_ascii_case(name.as_bytes()) {
            return Some(v);
        }
    }
    None
}

/// The `tag` parameter of a From/To value.
pub fn tag(v: &[u8]) -> Option<&[u8]> {
    param(header_params(v), "tag").filter(|t| !t.is_empty())
}

/// Whether a route (name-addr) URI carries `;lr`.
pub fn is_loose(route: &[u8]) -> bool {
    let uri = uri_of(route);
    param(&uri[..find(uri, b'?').unwrap_or(uri.len())], "lr").is_some()
}

/// host and port of a SIP URI (`sip:user@host:port;params`), port 0 if absent.
pub fn uri_host_port(uri: &[u8]) -> Option<(&[u8], u16)> {
    let s = uri
        .strip_prefix(b"sip:")
        .or_else(|| uri.strip_prefix(b"sips:"))
        .or_else(|| uri.strip_prefix(b"SIP:"))?;
    let end = s
        .iter()
        .position(|&c| c == b';' || c == b'?' || c == b'>')
        .unwrap_or(s.len());
    let s = &s[..end];
    let s = match s.iter().rposition(|&c| c == b'@') {
        Some(i) => &s[i + 1..],
        None => s,
    };
    host_port(s)
}

/// `host[:port]` or `[v6][:port]`, port 0 if absent.
pub fn host_port(s: &[u8]) -> Option<(&[u8], u16)> {
    let s = trim(s);
    let (host, rest) = if s.first() == Some(&b'[') {
        let close = find(s, b']')?;
        (&s[1..close], &s[close + 1..])
    } else {
        match find(s, b':') {
            Some(i) => (&s[..i], &s[i..]),
            None => (s, &b""[..]),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match rest.strip_prefix(b":") {
        Some(p) => std::str::from_utf8(p).ok()?.trim().parse().ok()?,
        None if rest.is_empty() => 0,
        None => return None,
    };
    Some((host, port))
}

pub fn parse_ip(host: &[u8]) -> Option<IpAddr> {
    std::str::from_utf8(host).ok()?.parse().ok()
}

/// A SIP URI's address as a socket address (IP literals only; default port 5060).
pub fn uri_addr(uri: &[u8]) -> Option<SocketAddr> {
    let (h, p) = uri_host_port(uri)?;
    Some(SocketAddr::new(parse_ip(h)?, if p == 0 { 5060 } else { p }))
}

/// One Via value split into sent-by and parameters.
#[derive(Debug, PartialEq, Eq)]
pub struct Via<'a> {
    pub host: &'a [u8],
    pub port: u16,
    pub params: &'a [u8],
}

pub fn parse_via(v: &[u8]) -> Option<Via<'_>> {
    // "SIP/2.0/UDP sent-by;params"
    let v = trim(v);
    let ws = v.iter().position(|c| c.is_ascii_whitespace())?;
    let rest = trim(&v[ws..]);
    let semi = find(rest, b';').unwrap_or(rest.len());
    let (host, port) = host_port(&rest[..semi])?;
    Some(Via {
        host,
        port,
        params: &rest[semi..],
    })
}

/// Where a response to a request with this top Via goes, RFC 3261 §18.2.2
/// for unreliable transports (no maddr handling, IP literals only) with the
/// server's own `received` (RFC 3261 §18.2.1) and RFC 3581 `rport`: returns
/// the address and whether `received`/`rport` are to be added to the Via.
pub fn response_dest(
    top_via: &Via<'_>,
    src: SocketAddr,
) -> (SocketAddr, Option<IpAddr>, Option<u16>) {
    let port = if top_via.port == 0 {
        5060
    } else {
        top_via.port
    };
    let sent_by_ip = parse_ip(top_via.host);
    // §18.2.1: received when sent-by is not the source address (or a name).
    let received = if sent_by_ip == Some(src.ip()) {
        None
    } else {
        Some(src.ip())
    };
    match param(top_via.params, "rport") {
        // RFC 3581 §4: rport without a value: answer the source port, and
        // received is always added then.
        Some(b"") => (src, Some(src.ip()), Some(src.port())),
        _ => {
            let ip = received.or(sent_by_ip).unwrap_or(src.ip());
            (SocketAddr::new(ip, port), received, None)
        }
    }
}

/// Writes the top Via value with `received`/`rport` filled in.
pub fn write_top_via(
    out: &mut Vec<u8>,
    via_line: &[u8],
    received: Option<IpAddr>,
    rport: Option<u16>,
) {
    use std::io::Write;
    let top = first_element(via_line);
    let rest_start = top.as_ptr() as usize - via_line.as_ptr() as usize + top.len();
    let rest = &via_line[rest_start..];
    if rport.is_none() && received.is_none() {
        out.extend_from_slice(via_line);
        return;
    }
    // Rewrite parameters: drop a bare rport, then append ours.
    let semi = find(top, b';').unwrap_or(top.len());
    out.extend_from_slice(&top[..semi]);
    for p in top[semi..].split(|&c| c == b';').skip(1) {
        let k = trim(p);
        if rport.is_some() && k.eq_ignore_ascii_case(b"rport") {
            continue;
        }
        if received.is_some() && k.len() >= 8 && k[..8].eq_ignore_ascii_case(b"received") {
            continue;
        }
        out.push(b';');
        out.extend_from_slice(p);
    }
    if let Some(ip) = received {
        let _ = write!(out, ";received={ip}");
    }
    if let Some(p) = rport {
        let _ = write!(out, ";rport={p}");
    }
    out.extend_from_slice(rest);
}

#[cfg(test)]
mod tests {
    use super::*;

    const INVITE: &[u8] = b"INVITE sip:+15550100@127.0.0.1:61080 SIP/2.0\r\n\
Via: SIP/2.0/UDP 127.0.0.1:61062;branch=z9hG4bKproxy;rport\r\n\
v: SIP/2.0/UDP 127.0.0.1:40000;branch=z9hG4bK-a;received=127.0.0.1\r\n\
Record-Route: <sip:127.0.0.1:61062;lr>, <sip:127.0.0.1:61060;lr;r2=on>\r\n\
Record-Route: <sip:10.0.0.1;lr>\r\n\
f: \"Carrier, Inc\" <sip:+15550199@127.0.0.1:40000>;tag=abc\r\n\
To: <sip:+15550100@127.0.0.1:61060;user=phone>\r\n\
i: 12-xyz@lg\r\n\
CSeq:  1  INVITE\r\n\
m: <sip:+15550199@127.0.0.1:40000;transport=udp>\r\n\
Subject: folded\r\n continued\r\n\
Content-Length: 0\r\n\r\n";

    #[test]
    fn parses_request_with_compact_and_multi_headers() {
        let m = parse(INVITE).unwrap();
        assert_eq!(
            m.start,
            Start::Request {
                method: b"INVITE",
                uri: b"sip:+15550100@127.0.0.1:61080"
            }
        );
        assert_eq!(m.vias.as_slice().len(), 2);
        assert_eq!(m.record_routes.as_slice().len(), 2);
        assert_eq!(m.call_id, b"12-xyz@lg");
        assert_eq!((m.cseq_num, m.cseq_method), (1, &b"INVITE"[..]));
        assert_eq!(tag(m.from), Some(&b"abc"[..]));
        assert_eq!(tag(m.to), None);
        assert_eq!(
            uri_of(m.contact.unwrap()),
            b"sip:+15550199@127.0.0.1:40000;transport=udp"
        );
    }

    #[test]
    fn parses_response_and_rejects_garbage() {
        let m = parse(b"SIP/2.0 180 Ringing\r\nVia: SIP/2.0/UDP h;branch=x\r\nFrom: <sip:a@h>;tag=1\r\nTo: sip:b@h;tag=2\r\nCall-ID: c\r\nCSeq: 7 BYE\r\n\r\n").unwrap();
        assert_eq!(m.start, Start::Response { code: 180 });
        assert_eq!(tag(m.to), Some(&b"2"[..]));
        assert_eq!(m.cseq_method, b"BYE");
        assert!(parse(b"\r\n\r\n").is_err());
        assert!(parse(b"SIP/2.0 2x0 OK\r\n\r\n").is_err());
        assert!(parse(b"INVITE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h\r\n\r\n").is_err());
    }

    #[test]
    fn folded_via_line_is_kept_whole() {
        let m = parse(b"BYE sip:x SIP/2.0\r\nVia: SIP/2.0/UDP h:1\r\n ;branch=z\r\nFrom: <sip:a@h>;tag=1\r\nTo: <sip:b@h>;tag=2\r\nCall-ID: c\r\nCSeq: 2 BYE\r\n\r\n").unwrap();
        let v = parse_via(m.vias.as_slice()[0]).unwrap();
        assert_eq!(param(v.params, "branch"), Some(&b"z"[..]));
    }

    #[test]
    fn comma_lists_respect_quotes_and_brackets() {
        let v: Vec<&[u8]> = split_commas(b"<sip:a;lr>, \"x,y\" <sip:b?h=1,2>;p , sip:c").collect();
        assert_eq!(
            v,
            [&b"<sip:a;lr>"[..], b"\"x,y\" <sip:b?h=1,2>;p", b"sip:c"]
        );
        assert_eq!(
            first_element(b"SIP/2.0/UDP a:1;branch=x, SIP/2.0/UDP b"),
            b"SIP/2.0/UDP a:1;branch=x"
        );
    }

    #[test]
    fn uris_hosts_and_params() {
        assert_eq!(
            uri_host_port(b"sip:u@127.0.0.1:61060;lr"),
            Some((&b"127.0.0.1"[..], 61060))
        );
        assert_eq!(
            uri_host_port(b"sip:[::1]:5080;transport=udp"),
            Some((&b"::1"[..], 5080))
        );
        assert_eq!(
            uri_host_port(b"sip:example.com"),
            Some((&b"example.com"[..], 0))
        );
        assert_eq!(
            uri_addr(b"sip:10.0.0.1;lr"),
            Some("10.0.0.1:5060".parse().unwrap())
        );
        assert!(is_loose(b"<sip:127.0.0.1:61060;lr;r2=on>"));
        assert!(!is_loose(b"<sip:127.0.0.1:61060;transport=udp>"));
        assert_eq!(uri_of(b"sip:a@b;tag=1"), b"sip:a@b");
        assert_eq!(tag(b"sip:a@b;tag=1"), Some(&b"1"[..]));
        assert_eq!(tag(b"<sip:a@b;tag=no>"), None);
    }

    #[test]
    fn response_goes_to_sent_by_or_rport() {
        let src: SocketAddr = "127.0.0.1:61062".parse().unwrap();
        let v = parse_via(b"SIP/2.0/UDP 127.0.0.1:61062;branch=z9hG4bKx").unwrap();
        assert_eq!(response_dest(&v, src), (src, None, None));
        // sent-by differs from the source: received, sent-by port.
        let v = parse_via(b"SIP/2.0/UDP 192.0.2.1:5062;branch=z9hG4bKx").unwrap();
        assert_eq!(
            response_dest(&v, src),
            ("127.0.0.1:5062".parse().unwrap(), Some(src.ip()), None)
        );
        // rport: the source port.
        let v = parse_via(b"SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx;rport").unwrap();
        assert_eq!(response_dest(&v, src), (src, Some(src.ip()), Some(61062)));
        let mut out = Vec::new();
        write_top_via(
            &mut out,
            b"SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx;rport, SIP/2.0/UDP b",
            Some(src.ip()),
            Some(61062),
        );
        assert_eq!(
            out,
            b"SIP/2.0/UDP 192.0.2.1;branch=z9hG4bKx;received=127.0.0.1;rport=61062, SIP/2.0/UDP b"
        );
    }
}
