//! Where a message travels: the [`Side`] of callgate it is on (trunk or
//! PBX) and the SIP [`Transport`] that carries it (RFC 3261 §18). Every
//! layer of the SIP core speaks these two words; the configuration names
//! them but does not own them.

/// Which side of callgate a message arrived on or leaves through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Side {
    /// Facing the carrier's SIP trunk.
    Trunk,
    /// Facing the contact centre's PBX.
    Pbx,
}

impl Side {
    pub fn as_str(&self) -> &'static str {
        match self {
            Side::Trunk => "trunk",
            Side::Pbx => "pbx",
        }
    }
    /// The side a request arriving on `self` leaves through.
    pub fn other(&self) -> Side {
        match self {
            Side::Trunk => Side::Pbx,
            Side::Pbx => Side::Trunk,
        }
    }
    pub fn index(&self) -> usize {
        match self {
            Side::Trunk => 0,
            Side::Pbx => 1,
        }
    }
}

/// SIP transport protocols (RFC 3261 §18).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// Token used in Via (RFC 3261 §20.42).
    pub fn via_token(&self) -> &'static str {
        match self {
            Transport::Udp => "UDP",
            Transport::Tcp => "TCP",
            Transport::Tls => "TLS",
        }
    }
    /// Value of the `transport` URI parameter.
    pub fn param(&self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
    /// Reliable transports carry no retransmissions (RFC 3261 §17.1.1.2).
    pub fn is_reliable(&self) -> bool {
        !matches!(self, Transport::Udp)
    }
    pub fn from_token(token: &[u8]) -> Option<Transport> {
        if token.eq_ignore_ascii_case(b"udp") {
            Some(Transport::Udp)
        } else if token.eq_ignore_ascii_case(b"tcp") {
            Some(Transport::Tcp)
        } else if token.eq_ignore_ascii_case(b"tls") {
            Some(Transport::Tls)
        } else {
            None
        }
    }
}
