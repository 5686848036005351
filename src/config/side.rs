//! `[trunk]` and `[pbx]`: one side's listeners, TLS files, ACL, rate limit
//! and next hops, validated into a [`SideConfig`]; and the part of it the
//! SIP core runs with ([`SideSettings`]).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use super::{invalid, resolve, socket_addr, ConfigError};
use crate::dns::{Host, TargetSpec};
use crate::sip::proxy::{SideSettings, Target};
use crate::sip::side::{Side, Transport};
use crate::sip::transport::tls::{SideTls, TlsFiles};
use crate::sip::uri::Uri;

/// What to do with a request from a source the side's ACL does not admit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Denied {
    /// Answer 403 Forbidden.
    Reject,
    /// Stay silent (hides callgate from scanners).
    Drop,
}

/// How callgate treats a request whose User-Agent (or From display name)
/// is a known scanning tool's (sipvicious, sipcli, …; see
/// `crate::gate::screen::SCANNERS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scanners {
    /// Stay silent: the tool cannot tell callgate from a dead address.
    Drop,
    /// Answer 403 Forbidden (within the refusal rate limit).
    Reject,
    /// Let it through to the other phases (only for testing a deployment).
    Pass,
}

/// Who answers an out-of-dialog OPTIONS from the trunk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OptionsAnswer {
    /// callgate itself: 200 with Allow, Accept and Supported (RFC 3261
    /// §11.2); the PBX never sees it, so it cannot tell anything about the
    /// PBX or its extensions.
    Local,
    /// Forwarded to the PBX (after the `numbers` check and with the PBX's
    /// Server/User-Agent removed from the answer), for carriers that want
    /// the PBX's own liveness.
    Forward,
}

/// A Request-URI user part the centre answers for: one E.164 number, or a
/// prefix of them (written with a trailing `*`). A leading `+` is ignored
/// on both sides of the comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NumberPattern {
    pub digits: String,
    pub prefix: bool,
}

impl NumberPattern {
    /// Whether `user` (a Request-URI user part, parameters removed) is this
    /// number or starts with this prefix.
    pub fn matches(&self, user: &[u8]) -> bool {
        let user = user.strip_prefix(b"+").unwrap_or(user);
        if self.prefix {
            user.starts_with(self.digits.as_bytes())
        } else {
            user == self.digits.as_bytes()
        }
    }
}

/// What a carrier may ask out of dialog (`[trunk] methods`, `numbers`,
/// `options`, `scanners`): the trunk is a carrier, not phones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrunkScreen {
    /// Methods accepted outside a dialog; others get 405 with `Allow`.
    pub methods: Vec<String>,
    /// The centre's numbers; `None` admits every Request-URI.
    pub numbers: Option<Vec<NumberPattern>>,
    pub options: OptionsAnswer,
    pub scanners: Scanners,
}

/// The out-of-dialog methods a carrier sends by default: calls and what
/// they need (RFC 3261, 3262, 3311, 6086). REGISTER, SUBSCRIBE, NOTIFY,
/// MESSAGE, PUBLISH and REFER are phones' business, not a carrier's.
pub const DEFAULT_TRUNK_METHODS: [&str; 8] = [
    "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "PRACK", "UPDATE", "INFO",
];

impl Default for TrunkScreen {
    fn default() -> Self {
        TrunkScreen {
            methods: DEFAULT_TRUNK_METHODS
                .iter()
                .map(|m| (*m).to_owned())
                .collect(),
            numbers: None,
            options: OptionsAnswer::Local,
            scanners: Scanners::Drop,
        }
    }
}

/// One side's listeners, ACL and next hops.
#[derive(Debug, Clone)]
pub struct SideConfig {
    pub side: Side,
    pub udp: Option<SocketAddr>,
    pub tcp: Option<SocketAddr>,
    pub tls: Option<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// CA certificates (PEM) trusted when callgate connects to TLS targets.
    pub tls_ca: Option<PathBuf>,
    /// CA certificates (PEM) a client certificate on this side's TLS
    /// listener must chain to: set, the listener requires one (mutual TLS).
    pub tls_client_ca: Option<PathBuf>,
    /// Names (DNS or IP) a client certificate must carry one of in its
    /// subjectAltName, with `tls_client_ca`; empty accepts any.
    pub tls_client_names: Vec<String>,
    /// The side's TLS configurations, built and checked from the files
    /// above at load (swapped whole on reload).
    pub tls_context: SideTls,
    /// Host written in our Via and Record-Route on this side.
    pub advertise: Option<String>,
    pub allow: Vec<IpNet>,
    pub on_denied: Denied,
    /// Requests per second per source address; 0 disables the limit.
    pub rate_limit: u32,
    /// Bytes per second per source address, requests and responses
    /// together, checked before parsing; 0 disables the budget. Default
    /// [`BYTES_PER_MESSAGE`] × `rate_limit`.
    pub rate_limit_bytes: u64,
    /// A source refused at three times `rate_limit` or more is throttled
    /// in the kernel's socket filter (`gate/throttle.rs`).
    pub kernel_throttle: bool,
    /// The next hops as configured: IP literals, or host names resolved
    /// at the edge (`crate::dns`, RFC 3263).
    pub targets: Vec<TargetSpec>,
    /// Answers callgate forms itself (403, 404, 405, 481, 400, OPTIONS
    /// 200…) per second to one source address (burst twice that): callgate
    /// never becomes a reflector for spoofed UDP sources.
    pub refusals_per_source: u32,
    /// Such answers per second on this side in all (burst twice that).
    pub refusals_total: u32,
    /// The trunk's out-of-dialog screen (`None` on the PBX side).
    pub screen: Option<TrunkScreen>,
}

impl SideConfig {
    /// Whether `ip` may send to this side.
    pub fn admits(&self, ip: std::net::IpAddr) -> bool {
        crate::sip::proxy::admits(&self.allow, ip)
    }

    /// What the SIP core needs of this side, before any host name is
    /// resolved: the targets written as IP addresses.
    pub fn core(&self) -> SideSettings {
        self.core_with(
            self.targets
                .iter()
                .filter_map(TargetSpec::literal)
                .collect(),
        )
    }

    /// What the SIP core needs of this side with `targets` as its next
    /// hops (the host names resolved): their addresses are peers of the
    /// side too, so the ACL admits them beside `allow`.
    pub fn core_with(&self, targets: Vec<Target>) -> SideSettings {
        SideSettings {
            side: self.side,
            udp: self.udp,
            tcp: self.tcp,
            tls: self.tls,
            advertise: self.advertise.clone(),
            allow: self.allow_with(&targets),
            targets,
        }
    }

    /// `allow` and one host network per address of `targets` that a
    /// host name resolved to (an IP-literal target is the operator's to
    /// list in `allow`).
    pub fn allow_with(&self, targets: &[Target]) -> Vec<IpNet> {
        let mut allow = self.allow.clone();
        for t in targets {
            let named = self.targets.iter().any(|s| s.is_name() && s.uri == t.uri);
            let net = IpNet::from(crate::sip::proxy::canonical_ip(t.addr.ip()));
            if named && !allow.iter().any(|n| n.contains(&net.addr())) {
                allow.push(net);
            }
        }
        allow
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSide {
    udp: Option<String>,
    tcp: Option<String>,
    tls: Option<String>,
    tls_cert: Option<PathBuf>,
    tls_key: Option<PathBuf>,
    tls_ca: Option<PathBuf>,
    tls_client_ca: Option<PathBuf>,
    #[serde(default)]
    tls_client_names: Vec<String>,
    advertise: Option<String>,
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    on_denied: Option<String>,
    #[serde(default)]
    rate_limit: Option<u32>,
    rate_limit_bytes: Option<u64>,
    kernel_throttle: Option<bool>,
    #[serde(default)]
    targets: Vec<String>,
    refusals_per_source: Option<u32>,
    refusals_total: Option<u32>,
    methods: Option<Vec<String>>,
    numbers: Option<Vec<String>>,
    options: Option<String>,
    scanners: Option<String>,
}

pub(super) fn side(
    which: Side,
    raw: Option<RawSide>,
    base: &Path,
) -> Result<SideConfig, ConfigError> {
    let name = which.as_str();
    let raw = raw.ok_or_else(|| invalid(name, "section is missing"))?;
    let key = |k: &str| format!("{name}.{k}");
    let addr = |k: &str, v: &Option<String>| -> Result<Option<SocketAddr>, ConfigError> {
        v.as_deref().map(|s| socket_addr(&key(k), s)).transpose()
    };
    let udp = addr("udp", &raw.udp)?;
    let tcp = addr("tcp", &raw.tcp)?;
    let tls = addr("tls", &raw.tls)?;
    if udp.is_none() && tcp.is_none() && tls.is_none() {
        return Err(invalid(name, "needs at least one of udp, tcp or tls"));
    }
    let file = |k: &str, p: &Option<PathBuf>| -> Result<Option<PathBuf>, ConfigError> {
        let Some(p) = p else { return Ok(None) };
        resolve(p, base)
            .map(Some)
            .map_err(|at| invalid(key(k), format!("file {} not found", at.display())))
    };
    let tls_cert = file("tls_cert", &raw.tls_cert)?;
    let tls_key = file("tls_key", &raw.tls_key)?;
    if let Some(k) = &tls_key {
        super::secret::owner_only(&key("tls_key"), k)?;
    }
    let tls_ca = file("tls_ca", &raw.tls_ca)?;
    if tls.is_some() && (tls_cert.is_none() || tls_key.is_none()) {
        return Err(invalid(key("tls"), "needs tls_cert and tls_key"));
    }
    let tls_client_ca = file("tls_client_ca", &raw.tls_client_ca)?;
    if tls_client_ca.is_some() && tls.is_none() {
        return Err(invalid(
            key("tls_client_ca"),
            "needs tls (it checks the clients of this side's TLS listener)",
        ));
    }
    let tls_context = SideTls::load(
        &TlsFiles {
            section: name,
            cert: tls_cert.as_deref(),
            key: tls_key.as_deref(),
            ca: tls_ca.as_deref(),
            client_ca: tls_client_ca.as_deref(),
            client_names: &raw.tls_client_names,
        },
        crate::sip::transport::tls::files::now(),
    )
    .map_err(|e| invalid(e.key, e.reason))?;
    let mut allow = Vec::with_capacity(raw.allow.len());
    for (i, s) in raw.allow.iter().enumerate() {
        let net = s
            .parse::<IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
            .map_err(|_| {
                invalid(
                    format!("{name}.allow[{i}]"),
                    format!("{s:?} is not a CIDR or IP address"),
                )
            })?;
        allow.push(net);
    }
    // Toward the trunk a refusal answer goes to an address anyone can
    // spoof on UDP: silence is the default there (no reflection).
    let denied_default = if which == Side::Trunk {
        "drop"
    } else {
        "reject"
    };
    let on_denied = match raw.on_denied.as_deref().unwrap_or(denied_default) {
        "reject" => Denied::Reject,
        "drop" => Denied::Drop,
        other => {
            return Err(invalid(
                key("on_denied"),
                format!("must be \"reject\" or \"drop\", not {other:?}"),
            ))
        }
    };
    if raw.targets.is_empty() {
        return Err(invalid(
            key("targets"),
            "needs at least one next-hop SIP URI",
        ));
    }
    let mut targets = Vec::with_capacity(raw.targets.len());
    for (i, t) in raw.targets.iter().enumerate() {
        targets.push(target(&format!("{name}.targets[{i}]"), t)?);
    }
    if allow.is_empty() && !targets.iter().any(TargetSpec::is_name) {
        return Err(invalid(
            key("allow"),
            "is empty and every target is an IP address: no peer could send on this side (callgate is never an open relay; list the peers' CIDRs)",
        ));
    }
    if let Some(adv) = &raw.advertise {
        if adv.is_empty()
            || adv
                .bytes()
                .any(|b| b.is_ascii_whitespace() || b == b';' || b == b',')
        {
            return Err(invalid(
                key("advertise"),
                "must be a host name or IP address",
            ));
        }
    }
    let rate_limit = raw.rate_limit.unwrap_or(0);
    let rate_limit_bytes =
        byte_rate_key(&key("rate_limit_bytes"), raw.rate_limit_bytes, rate_limit)?;
    let refusals_per_source = rate_key(&key("refusals_per_source"), raw.refusals_per_source, 20)?;
    let refusals_total = rate_key(&key("refusals_total"), raw.refusals_total, 200)?;
    let screen = match which {
        Side::Trunk => Some(trunk_screen(
            raw.methods,
            raw.numbers,
            raw.options,
            raw.scanners,
        )?),
        Side::Pbx => {
            for (k, set) in [
                ("methods", raw.methods.is_some()),
                ("numbers", raw.numbers.is_some()),
                ("options", raw.options.is_some()),
                ("scanners", raw.scanners.is_some()),
            ] {
                if set {
                    return Err(invalid(key(k), "applies to [trunk] only"));
                }
            }
            None
        }
    };
    Ok(SideConfig {
        side: which,
        udp,
        tcp,
        tls,
        tls_cert,
        tls_key,
        tls_ca,
        tls_client_ca,
        tls_client_names: raw.tls_client_names,
        tls_context,
        advertise: raw.advertise,
        allow,
        on_denied,
        rate_limit,
        rate_limit_bytes,
        kernel_throttle: raw.kernel_throttle.unwrap_or(true),
        targets,
        refusals_per_source,
        refusals_total,
        screen,
    })
}

/// The default byte budget per request of `rate_limit`: a real signed
/// INVITE is 2–5 KB and a call's traffic from one peer, responses
/// included, comes to 1–3 KB per request, so a peer at its full request
/// rate has room to spare, while one sending 60 KB messages is held to a
/// fifteenth of that rate (issue 14, `oversized`).
pub const BYTES_PER_MESSAGE: u64 = 4096;

/// Smallest and largest byte budget (0 turns it off).
const BYTE_RATE_RANGE: std::ops::RangeInclusive<u64> = 1024..=1 << 40;

/// `rate_limit_bytes`: 0 (off) or [`BYTE_RATE_RANGE`] bytes per second;
/// unset, [`BYTES_PER_MESSAGE`] × `rate_limit` (0 when that is off).
fn byte_rate_key(key: &str, v: Option<u64>, rate_limit: u32) -> Result<u64, ConfigError> {
    match v {
        None => Ok(u64::from(rate_limit) * BYTES_PER_MESSAGE),
        Some(0) => Ok(0),
        Some(b) if BYTE_RATE_RANGE.contains(&b) => Ok(b),
        Some(b) => Err(invalid(
            key,
            format!(
                "must be 0 (off) or {} ..= {} bytes per second, not {b}",
                BYTE_RATE_RANGE.start(),
                BYTE_RATE_RANGE.end()
            ),
        )),
    }
}

/// A per-second rate of answers: 1 ..= 100000, `default` when unset.
fn rate_key(key: &str, v: Option<u32>, default: u32) -> Result<u32, ConfigError> {
    match v.unwrap_or(default) {
        r @ 1..=100_000 => Ok(r),
        r => Err(invalid(
            key,
            format!("must be 1 ..= 100000 per second, not {r}"),
        )),
    }
}

/// `[trunk] methods`, `numbers`, `options` and `scanners`.
fn trunk_screen(
    methods: Option<Vec<String>>,
    numbers: Option<Vec<String>>,
    options: Option<String>,
    scanners: Option<String>,
) -> Result<TrunkScreen, ConfigError> {
    let mut screen = TrunkScreen::default();
    if let Some(methods) = methods {
        for (i, m) in methods.iter().enumerate() {
            if !crate::sip::scan::is_token(m.as_bytes()) {
                return Err(invalid(
                    format!("trunk.methods[{i}]"),
                    format!("{m:?} is not a SIP method token"),
                ));
            }
        }
        if !methods.iter().any(|m| m == "INVITE") {
            return Err(invalid(
                "trunk.methods",
                "must include \"INVITE\" (a trunk that cannot call is not a trunk)",
            ));
        }
        screen.methods = methods;
    }
    if let Some(numbers) = numbers {
        let mut patterns = Vec::with_capacity(numbers.len());
        for (i, n) in numbers.iter().enumerate() {
            let (body, prefix) = match n.strip_suffix('*') {
                Some(b) => (b, true),
                None => (n.as_str(), false),
            };
            let digits = body.strip_prefix('+').unwrap_or(body);
            if digits.is_empty() || digits.len() > 15 || !digits.bytes().all(|b| b.is_ascii_digit())
            {
                return Err(invalid(
                    format!("trunk.numbers[{i}]"),
                    format!("{n:?} is not an E.164 number (up to 15 digits, optional leading +) or a prefix of one ending in *"),
                ));
            }
            patterns.push(NumberPattern {
                digits: digits.to_owned(),
                prefix,
            });
        }
        if patterns.is_empty() {
            return Err(invalid(
                "trunk.numbers",
                "is empty: no call could come in (leave it out to admit every number)",
            ));
        }
        screen.numbers = Some(patterns);
    }
    screen.options = match options.as_deref().unwrap_or("local") {
        "local" => OptionsAnswer::Local,
        "forward" => OptionsAnswer::Forward,
        other => {
            return Err(invalid(
                "trunk.options",
                format!("must be \"local\" or \"forward\", not {other:?}"),
            ))
        }
    };
    screen.scanners = match scanners.as_deref().unwrap_or("drop") {
        "drop" => Scanners::Drop,
        "reject" => Scanners::Reject,
        "pass" => Scanners::Pass,
        other => {
            return Err(invalid(
                "trunk.scanners",
                format!("must be \"drop\", \"reject\" or \"pass\", not {other:?}"),
            ))
        }
    };
    Ok(screen)
}

/// Parses a target URI such as `sip:192.0.2.10:5060;transport=tcp` or
/// `sip:pbx.example.com;transport=tcp`. Host names are not resolved at
/// load: the gate resolves them in the background (`crate::dns`), so a
/// DNS outage never stops a configuration from loading.
fn target(key: &str, s: &str) -> Result<TargetSpec, ConfigError> {
    let uri = Uri::parse(s.as_bytes())
        .map_err(|e| invalid(key, format!("{s:?} is not a SIP URI: {e}")))?;
    if !uri.is_sip() {
        return Err(invalid(key, format!("{s:?}: scheme must be sip or sips")));
    }
    let sips = uri.scheme.eq_ignore_ascii_case(b"sips");
    let transport = match uri.param("transport") {
        Some(t) => Transport::from_token(t)
            .ok_or_else(|| invalid(key, format!("{s:?}: transport must be udp, tcp or tls")))?,
        None if sips => Transport::Tls,
        None => Transport::Udp,
    };
    // A sips target is TLS whatever its transport says (RFC 3261 §26.2.2;
    // `transport=tcp` is TLS over TCP, RFC 5630); UDP cannot carry it.
    let transport = match (sips, transport) {
        (true, Transport::Udp) => {
            return Err(invalid(
                key,
                format!("{s:?}: a sips target needs TLS; transport=udp cannot carry it"),
            ))
        }
        (true, _) => Transport::Tls,
        (false, t) => t,
    };
    let host = std::str::from_utf8(uri.host).map_err(|_| invalid(key, "host is not UTF-8"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let host = match host.parse::<std::net::IpAddr>() {
        Ok(ip) => Host::Ip(ip),
        Err(_) if crate::dns::spec::is_host_name(host) => {
            Host::Name(host.trim_end_matches('.').to_ascii_lowercase())
        }
        Err(_) => {
            return Err(invalid(
                key,
                format!("{s:?}: host must be an IP address or a DNS name"),
            ))
        }
    };
    Ok(TargetSpec {
        uri: s.to_owned(),
        host,
        port: uri.port,
        transport,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    const EXAMPLE: &str = include_str!("../../sip-config/callgate.toml");

    fn parse(from: &str, to: &str) -> Result<Config, ConfigError> {
        assert!(EXAMPLE.contains(from), "example lacks {from:?}");
        Config::parse(
            &EXAMPLE.replacen(from, to, 1),
            Path::new("sip-config/callgate.toml"),
        )
    }

    #[test]
    fn the_kernel_throttle_is_on_unless_switched_off() {
        let cfg = parse("rate_limit = 2000", "rate_limit = 2000").unwrap_or_else(|e| panic!("{e}"));
        assert!(cfg.trunk.kernel_throttle && cfg.pbx.kernel_throttle);
        let off = parse(
            "rate_limit = 2000",
            "rate_limit = 2000\nkernel_throttle = false",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        assert!(!off.trunk.kernel_throttle);
        let err = parse(
            "rate_limit = 2000",
            "rate_limit = 2000\nkernel_throttle = \"yes\"",
        )
        .err()
        .unwrap_or_else(|| panic!("a string was accepted"))
        .to_string();
        assert!(err.contains("kernel_throttle"), "{err}");
    }

    #[test]
    fn trunk_screen_keys_name_the_key_and_reason() {
        let methods = "methods = [\"INVITE\", \"ACK\", \"BYE\", \"CANCEL\", \"OPTIONS\", \"PRACK\", \"UPDATE\", \"INFO\"]";
        for (from, to, key) in [
            (methods, "methods = [\"ACK\"]", "trunk.methods"),
            (
                methods,
                "methods = [\"INVITE\", \"BAD METHOD\"]",
                "trunk.methods[1]",
            ),
            (methods, "numbers = []", "trunk.numbers"),
            (methods, "numbers = [\"+1555x\"]", "trunk.numbers[0]"),
            (
                methods,
                "numbers = [\"1234567890123456\"]",
                "trunk.numbers[0]",
            ),
            (
                "options = \"local\"",
                "options = \"ignore\"",
                "trunk.options",
            ),
            (
                "scanners = \"drop\"",
                "scanners = \"allow\"",
                "trunk.scanners",
            ),
            (
                "refusals_per_source = 20",
                "refusals_per_source = 0",
                "trunk.refusals_per_source",
            ),
        ] {
            let err = parse(from, to)
                .err()
                .unwrap_or_else(|| panic!("{to} was accepted"));
            assert!(err.to_string().contains(key), "{to}: {err}");
        }
        // The trunk-only keys are refused on [pbx].
        let err = parse(
            "[pbx]\nudp = \"127.0.0.1:5062\"",
            "[pbx]\nnumbers = [\"+15550100\"]\nudp = \"127.0.0.1:5062\"",
        )
        .err()
        .unwrap_or_else(|| panic!("numbers accepted on [pbx]"));
        assert!(err.to_string().contains("pbx.numbers"), "{err}");
    }

    #[test]
    fn trunk_defaults_are_strict() {
        let cfg = parse("on_denied = \"drop\"\n", "").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.trunk.on_denied, Denied::Drop);
        assert_eq!(cfg.pbx.on_denied, Denied::Reject);
        let screen = cfg.trunk.screen.unwrap_or_default();
        assert_eq!(screen, TrunkScreen::default());
        assert!(!screen.methods.iter().any(|m| m == "REGISTER"));
        assert_eq!(screen.options, OptionsAnswer::Local);
        assert_eq!(screen.scanners, Scanners::Drop);
        assert!(cfg.pbx.screen.is_none());
        let numbers = parse(
            "scanners = \"drop\"",
            "numbers = [\"+15550100\", \"1555012*\"]",
        )
        .unwrap_or_else(|e| panic!("{e}"))
        .trunk
        .screen
        .and_then(|s| s.numbers)
        .unwrap_or_default();
        assert!(numbers[0].matches(b"15550100") && numbers[0].matches(b"+15550100"));
        assert!(!numbers[0].matches(b"155501001"));
        assert!(numbers[1].matches(b"+15550123") && !numbers[1].matches(b"+1555013"));
    }

    #[test]
    fn the_byte_budget_follows_rate_limit_unless_set() {
        let cfg = parse("on_denied = \"drop\"\n", "").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(cfg.trunk.rate_limit, 2000);
        assert_eq!(cfg.trunk.rate_limit_bytes, 2000 * BYTES_PER_MESSAGE);
        let off = parse("rate_limit = 2000", "rate_limit = 0").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            off.trunk.rate_limit_bytes, 0,
            "no rate limit, no default budget"
        );
        for (to, want) in [
            ("rate_limit = 2000\nrate_limit_bytes = 0", 0),
            ("rate_limit = 2000\nrate_limit_bytes = 1048576", 1_048_576),
            ("rate_limit = 0\nrate_limit_bytes = 4096", 4096),
        ] {
            let cfg = parse("rate_limit = 2000", to).unwrap_or_else(|e| panic!("{to}: {e}"));
            assert_eq!(cfg.trunk.rate_limit_bytes, want, "{to}");
        }
        for bad in [
            "rate_limit_bytes = 1023",
            "rate_limit_bytes = 1099511627777",
        ] {
            let err = parse("rate_limit = 2000", &format!("rate_limit = 2000\n{bad}"))
                .err()
                .unwrap_or_else(|| panic!("{bad} was accepted"));
            let text = err.to_string();
            assert!(
                text.contains("trunk.rate_limit_bytes") && text.contains("bytes per second"),
                "{bad}: {text}"
            );
        }
    }

    #[test]
    fn host_name_targets_are_kept_for_the_resolver_and_widen_the_acl() {
        let pbx = "allow = [\"127.0.0.0/8\", \"::1/128\"]\non_denied = \"reject\"\nrate_limit = 2000\ntargets = [\"sip:127.0.0.1:5080;transport=udp\"]";
        let named = "allow = []\non_denied = \"reject\"\nrate_limit = 2000\ntargets = [\"sip:PBX.example.com.;transport=tcp\", \"sip:192.0.2.7\"]";
        let cfg = parse(pbx, named).unwrap_or_else(|e| panic!("{e}"));
        let t = &cfg.pbx.targets;
        assert_eq!(t[0].host, Host::Name("pbx.example.com".into()));
        assert_eq!((t[0].port, t[0].transport), (None, Transport::Tcp));
        assert_eq!(t[1].host, Host::Ip([192, 0, 2, 7].into()));
        let core = cfg.pbx.core();
        assert_eq!(core.targets.len(), 1, "only the literal before resolution");
        assert!(core.allow.is_empty());
        let resolved = vec![
            t[0].at("198.51.100.4:5060"
                .parse()
                .unwrap_or_else(|e| panic!("{e}"))),
            t[1].at("192.0.2.7:5060".parse().unwrap_or_else(|e| panic!("{e}"))),
        ];
        let core = cfg.pbx.core_with(resolved);
        assert!(
            core.admits([198, 51, 100, 4].into()),
            "a resolved address is a peer"
        );
        assert!(
            !core.admits([192, 0, 2, 7].into()),
            "an IP-literal target is the operator's to list in allow"
        );
        let err = parse(pbx, "allow = []\non_denied = \"reject\"\nrate_limit = 2000\ntargets = [\"sip:127.0.0.1:5080;transport=udp\"]")
            .err()
            .unwrap_or_else(|| panic!("an empty allow with IP targets was accepted"));
        assert!(err.to_string().starts_with("pbx.allow"), "{err}");
        let err = parse(pbx, "allow = []\ntargets = [\"sip:pbx_1.example.com\"]")
            .err()
            .unwrap_or_else(|| panic!("a bad host name was accepted"));
        assert!(err.to_string().starts_with("pbx.targets[0]"), "{err}");
    }
}
