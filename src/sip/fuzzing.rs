//! One entry point that drives every parser path, for the fuzz target
//! (`fuzz/`) and the robustness test. It must never panic.

use bytes::Bytes;

use crate::sip::message::{frame_stream, HeaderName, Limits, SipMessage};
use crate::sip::response::{build_response, response_to_unparseable};
use crate::sip::splice::Splice;
use crate::sip::uri::{NameAddr, Uri};
use crate::sip::via::Via;

const NAMES: [HeaderName; 18] = [
    HeaderName::Via,
    HeaderName::From,
    HeaderName::To,
    HeaderName::CallId,
    HeaderName::CSeq,
    HeaderName::MaxForwards,
    HeaderName::Route,
    HeaderName::RecordRoute,
    HeaderName::Contact,
    HeaderName::ContentLength,
    HeaderName::ContentType,
    HeaderName::PAssertedIdentity,
    HeaderName::Identity,
    HeaderName::Require,
    HeaderName::ProxyRequire,
    HeaderName::Supported,
    HeaderName::Date,
    HeaderName::Other,
];

/// Runs `data` through framing, parsing, validation, typed views, a splice
/// and response building; returns a checksum so nothing is optimised away.
pub fn exercise(data: &[u8]) -> usize {
    let limits = Limits::default();
    let mut sum = 0;
    if let Ok(Some(f)) = frame_stream(data, &limits) {
        sum += f.len;
    }
    sum += response_to_unparseable(data, 400, "Bad Request").map_or(0, |b| b.len());
    let Ok(m) = SipMessage::parse(Bytes::copy_from_slice(data), &limits) else {
        return sum;
    };
    sum += usize::from(m.validate().is_ok());
    sum += m.top_via().map_or(0, |v| v.host.len());
    sum += m.cseq().map_or(0, |c| c.seq as usize);
    sum += m.max_forwards().ok().flatten().map_or(0, usize::from);
    sum += m.from().map_or(0, |f| f.uri.len()) + m.to().map_or(0, |t| t.params.len());
    sum += m.content_length().unwrap_or(0);
    for n in NAMES {
        for v in m.values(n) {
            sum += Via::parse(v).map_or(0, |x| x.params.len());
            sum += NameAddr::parse(v).map_or(0, |x| x.uri.len());
            sum += Uri::parse(v).map_or(0, |x| x.host.len());
        }
    }
    if let Some(u) = m.request_uri() {
        sum += Uri::parse(u).map_or(0, |x| x.params.len());
    }
    let mut sp = Splice::new(&m);
    sp.prepend_header(b"Via: SIP/2.0/UDP 127.0.0.1;branch=z9hG4bK-f");
    for (i, h) in m.headers().iter().enumerate() {
        match h.name {
            HeaderName::Via => {
                sp.replace_first_value(i, b"SIP/2.0/UDP x;received=1");
            }
            HeaderName::Route => {
                sp.remove_first_value(i);
            }
            HeaderName::MaxForwards => {
                sp.replace_value(i, b"1");
            }
            _ => {}
        }
    }
    sum += sp.to_bytes().len();
    if m.is_request() {
        sum += build_response(
            &m,
            400,
            "Bad Request",
            Some(b"t"),
            "192.0.2.1:5060".parse().ok(),
            &[b"X: y"],
        )
        .len();
    }
    sum
}
