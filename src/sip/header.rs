//! Header name ids, long and compact forms (RFC 3261 §7.3.3, §20).

/// The headers callgate reads; everything else is [`HeaderName::Other`] and is
/// forwarded untouched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum HeaderName {
    Via,
    From,
    To,
    CallId,
    CSeq,
    MaxForwards,
    Route,
    RecordRoute,
    Contact,
    ContentLength,
    ContentType,
    PAssertedIdentity,
    Identity,
    Require,
    ProxyRequire,
    Supported,
    Date,
    Other,
}

const NAMES: [(&[u8], HeaderName); 17] = [
    (b"via", HeaderName::Via),
    (b"from", HeaderName::From),
    (b"to", HeaderName::To),
    (b"call-id", HeaderName::CallId),
    (b"cseq", HeaderName::CSeq),
    (b"max-forwards", HeaderName::MaxForwards),
    (b"route", HeaderName::Route),
    (b"record-route", HeaderName::RecordRoute),
    (b"contact", HeaderName::Contact),
    (b"content-length", HeaderName::ContentLength),
    (b"content-type", HeaderName::ContentType),
    (b"p-asserted-identity", HeaderName::PAssertedIdentity),
    (b"identity", HeaderName::Identity),
    (b"require", HeaderName::Require),
    (b"proxy-require", HeaderName::ProxyRequire),
    (b"supported", HeaderName::Supported),
    (b"date", HeaderName::Date),
];

impl HeaderName {
    /// Maps a header name as written (case-insensitive, compact forms
    /// `v f t i m l c k y`, RFC 3261 §7.3.3 and RFC 8224 §4 for `y`).
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        if let [c] = name {
            return match c.to_ascii_lowercase() {
                b'v' => HeaderName::Via,
                b'f' => HeaderName::From,
                b't' => HeaderName::To,
                b'i' => HeaderName::CallId,
                b'm' => HeaderName::Contact,
                b'l' => HeaderName::ContentLength,
                b'c' => HeaderName::ContentType,
                b'k' => HeaderName::Supported,
                b'y' => HeaderName::Identity,
                _ => HeaderName::Other,
            };
        }
        // Dispatch on length first: most lengths hold one known name, so an
        // unknown header costs one comparison at most.
        let candidates: &[(&[u8], HeaderName)] = match name.len() {
            2 => &NAMES[2..3],
            3 => &NAMES[0..1],
            4 => &[NAMES[1], NAMES[4], NAMES[16]],
            5 => &NAMES[6..7],
            7 => &[NAMES[3], NAMES[8], NAMES[13]],
            8 => &NAMES[12..13],
            9 => &NAMES[15..16],
            12 => &[NAMES[5], NAMES[7], NAMES[10]],
            13 => &NAMES[14..15],
            14 => &NAMES[9..10],
            19 => &NAMES[11..12],
            _ => &[],
        };
        candidates
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, h)| *h)
            .unwrap_or(HeaderName::Other)
    }

    /// Canonical long name, for building messages.
    pub fn as_str(&self) -> &'static str {
        match self {
            HeaderName::Via => "Via",
            HeaderName::From => "From",
            HeaderName::To => "To",
            HeaderName::CallId => "Call-ID",
            HeaderName::CSeq => "CSeq",
            HeaderName::MaxForwards => "Max-Forwards",
            HeaderName::Route => "Route",
            HeaderName::RecordRoute => "Record-Route",
            HeaderName::Contact => "Contact",
            HeaderName::ContentLength => "Content-Length",
            HeaderName::ContentType => "Content-Type",
            HeaderName::PAssertedIdentity => "P-Asserted-Identity",
            HeaderName::Identity => "Identity",
            HeaderName::Require => "Require",
            HeaderName::ProxyRequire => "Proxy-Require",
            HeaderName::Supported => "Supported",
            HeaderName::Date => "Date",
            HeaderName::Other => "",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_compact_and_case_insensitive() {
        assert_eq!(
            HeaderName::from_bytes(b"MaX-fOrWaRdS"),
            HeaderName::MaxForwards
        );
        assert_eq!(HeaderName::from_bytes(b"v"), HeaderName::Via);
        assert_eq!(HeaderName::from_bytes(b"L"), HeaderName::ContentLength);
        assert_eq!(HeaderName::from_bytes(b"y"), HeaderName::Identity);
        assert_eq!(HeaderName::from_bytes(b"s"), HeaderName::Other);
        assert_eq!(HeaderName::from_bytes(b"C%6Fntact"), HeaderName::Other);
        assert_eq!(
            HeaderName::from_bytes(b"P-Asserted-Identity"),
            HeaderName::PAssertedIdentity
        );
    }
}
