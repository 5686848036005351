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

impl HeaderName {
    /// Maps a header name as written (case-insensitive, compact forms
    /// `v f t i m l c k y`, RFC 3261 §7.3.3 and RFC 8224 §4 for `y`).
    pub fn from_bytes(name: &[u8]) -> HeaderName {
        let _ = name;
        todo!()
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
