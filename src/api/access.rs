//! Who may use the admin API, checked on every request before any handler
//! runs (the attacks each check defends against are named on it):
//!
//! 1. `Host` must name the listener: an IP literal (the listener's own
//!    address, or any when it listens on a wildcard) or one of
//!    `admin.allowed_hosts`. Defends against DNS rebinding: a web page
//!    whose name an attacker re-points at 127.0.0.1 makes the operator's
//!    browser send requests to the API with the attacker's `Host`.
//! 2. A browser's `Origin` (and `Sec-Fetch-Site: cross-site`) must be one
//!    of `admin.allowed_origins`. Defends against cross-site request
//!    forgery: any page the operator opens can POST to a loopback port.
//! 3. A request that changes state (any method but GET and HEAD), any
//!    request of the enforcement API (a call's decision, step-up,
//!    verdict), a read of the calls in progress once `[[admin.tokens]]`
//!    are configured, or any request when `admin.token_for_reads` is set,
//!    needs
//!    `Authorization: Bearer <token>`: `admin.token_file`'s (role `ops`)
//!    or one of `[[admin.tokens]]`, compared in constant time against
//!    every configured token (no timing oracle on a token or on which one
//!    matched). A token that is sent is always checked, also where none is
//!    needed (unless none is configured). Without any token configured,
//!    state-changing requests and the enforcement API are
//!    refused (403): anyone who can reach the port could otherwise reload
//!    the configuration.
//! 4. The token's role must allow the route ([`Need`]): an `agent` reads
//!    a call's decision and records step-up and verdicts; a `supervisor`
//!    also lists every call and the review queue; `ops` does everything.
//!    Defends against a leaked agent token (one per CRM desktop) reloading
//!    or draining the service.
//!
//! Refusals are counted in `callgate_admin_refused_total{reason}`. The
//! caller a request was accepted for ([`Caller`]) travels in its
//! extensions, for handlers that answer by role or record who acted.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::digest;
use axum::http::{header, HeaderMap, Method, StatusCode};

use crate::config::{AdminConfig, Role, LEGACY_TOKEN_NAME};

/// Who a request was accepted for: the token's name and role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// What a route needs of its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    /// `/healthz`, `/readyz`: any token, or none unless `token_for_reads`.
    Health,
    /// The enforcement API: an `agent` token at least, always.
    Agent,
    /// Every call, the review queue, the event stream: a `supervisor`
    /// token at least; none while no `[[admin.tokens]]` are configured
    /// and not `token_for_reads` (as before roles existed).
    Supervisor,
    /// Everything else: an `ops` token (none for reads unless
    /// `token_for_reads`).
    Ops,
}

impl Need {
    /// The need of `method` on `path`.
    pub fn of(method: &Method, path: &str) -> Need {
        let reads = matches!(*method, Method::GET | Method::HEAD);
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        match (reads, segments.as_slice()) {
            (true, ["healthz" | "readyz"]) => Need::Health,
            (true, ["v1", "calls", _, "decision"] | ["v1", "decisions", _]) => Need::Agent,
            (false, ["v1", "calls", _, "step-up" | "verdict"]) => Need::Agent,
            // Every call's numbers: the calls, the review queue, the
            // decision events.
            (true, ["v1", "calls"] | ["v1", "calls", _] | ["v1", "review"] | ["v1", "events"]) => {
                Need::Supervisor
            }
            _ => Need::Ops,
        }
    }

    fn role(self) -> Role {
        match self {
            Need::Health | Need::Agent => Role::Agent,
            Need::Supervisor => Role::Supervisor,
            Need::Ops => Role::Ops,
        }
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `Host` is missing or names something else (DNS rebinding).
    Host,
    /// A cross-site browser request (`Origin`, `Sec-Fetch-Site`).
    Origin,
    /// No or a wrong bearer token.
    Token,
    /// A state-changing request while no token is configured.
    NoToken,
    /// A valid token whose role does not allow the route.
    Role,
}

impl Refusal {
    const ALL: [Refusal; 5] = [
        Refusal::Host,
        Refusal::Origin,
        Refusal::Token,
        Refusal::NoToken,
        Refusal::Role,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Host => "host",
            Refusal::Origin => "origin",
            Refusal::Token => "token",
            Refusal::NoToken => "no_token",
            Refusal::Role => "role",
        }
    }

    /// The status and body of the answer.
    pub fn answer(self) -> (StatusCode, &'static str) {
        match self {
            Refusal::Host => (StatusCode::FORBIDDEN, "Host is not this admin listener\n"),
            Refusal::Origin => (StatusCode::FORBIDDEN, "cross-site request refused\n"),
            Refusal::Token => (StatusCode::UNAUTHORIZED, "bearer token required\n"),
            Refusal::NoToken => (
                StatusCode::FORBIDDEN,
                "state-changing requests need admin.token_file or [[admin.tokens]]\n",
            ),
            Refusal::Role => (
                StatusCode::FORBIDDEN,
                "this token's role does not allow this request\n",
            ),
        }
    }
}

/// One configured token: SHA-256 of its bytes (compared in constant
/// time, whatever its length), and who it stands for.
struct Known {
    digest: digest::Digest,
    caller: Caller,
}

/// The access rules of one admin listener, and its refusal counters.
pub struct Access {
    listen: IpAddr,
    tokens: Vec<Known>,
    /// `[[admin.tokens]]` are configured.
    roles: bool,
    token_for_reads: bool,
    hosts: Vec<String>,
    origins: Vec<String>,
    refused: [AtomicU64; 5],
}

impl Access {
    /// The rules of `[admin]` for a listener bound to `listen`.
    pub fn new(cfg: &AdminConfig, listen: SocketAddr) -> Access {
        let legacy = cfg.token.as_ref().map(|t| Known {
            digest: digest::digest(&digest::SHA256, &t.0),
            caller: Caller {
                name: LEGACY_TOKEN_NAME.to_owned(),
                role: Role::Ops,
            },
        });
        let named = cfg.tokens.iter().map(|t| Known {
            digest: digest::digest(&digest::SHA256, &t.token.0),
            caller: Caller {
                name: t.name.clone(),
                role: t.role,
            },
        });
        Access {
            listen: listen.ip(),
            tokens: legacy.into_iter().chain(named).collect(),
            roles: !cfg.tokens.is_empty(),
            token_for_reads: cfg.token_for_reads,
            hosts: cfg.allowed_hosts.clone(),
            origins: cfg.allowed_origins.clone(),
            refused: Default::default(),
        }
    }

    /// Checks a request's method, path and headers; counts a refusal.
    /// `Ok(None)`: accepted without a token (an open read).
    pub fn check(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Option<Caller>, Refusal> {
        let verdict = self.verdict(method, path, headers);
        if let Err(r) = &verdict {
            self.refused[*r as usize].fetch_add(1, Ordering::Relaxed);
        }
        verdict
    }

    /// The configured token `given` is, compared with every one of them
    /// in constant time (no early exit: which one matched takes as long
    /// to find as a miss).
    fn caller_of(&self, given: &str) -> Option<&Caller> {
        let given = digest::digest(&digest::SHA256, given.trim().as_bytes());
        let mut found = None;
        for known in &self.tokens {
            let same = aws_lc_rs::constant_time::verify_slices_are_equal(
                given.as_ref(),
                known.digest.as_ref(),
            )
            .is_ok();
            if same {
                found = Some(&known.caller);
            }
        }
        found
    }

    fn verdict(
        &self,
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Option<Caller>, Refusal> {
        let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        if !text(header::HOST.as_str()).is_some_and(|h| self.host_allowed(h)) {
            return Err(Refusal::Host);
        }
        if let Some(origin) = headers.get(header::ORIGIN) {
            if !origin
                .to_str()
                .is_ok_and(|o| self.origins.iter().any(|a| a.eq_ignore_ascii_case(o)))
            {
                return Err(Refusal::Origin);
            }
        } else if text("sec-fetch-site") == Some("cross-site") {
            return Err(Refusal::Origin);
        }
        let need = Need::of(method, path);
        let reads = matches!(*method, Method::GET | Method::HEAD);
        let open_read = reads
            && !self.token_for_reads
            && match need {
                Need::Health | Need::Ops => true,
                // Once agents hold tokens, the calls and their numbers
                // are for supervisors only.
                Need::Supervisor => !self.roles,
                Need::Agent => false,
            };
        if self.tokens.is_empty() {
            // Nothing a sent token could be checked against.
            return if open_read {
                Ok(None)
            } else {
                Err(Refusal::NoToken)
            };
        }
        let Some(given) = text(header::AUTHORIZATION.as_str()) else {
            return if open_read {
                Ok(None)
            } else {
                Err(Refusal::Token)
            };
        };
        let caller = given
            .strip_prefix("Bearer ")
            .and_then(|t| self.caller_of(t))
            .ok_or(Refusal::Token)?;
        if caller.role < need.role() {
            return Err(Refusal::Role);
        }
        Ok(Some(caller.clone()))
    }

    /// `host[:port]`: an IP literal of the listener or an allowed name.
    fn host_allowed(&self, host: &str) -> bool {
        let name = match host.strip_prefix('[') {
            Some(v6) => v6.split(']').next().unwrap_or_default(),
            None if host.matches(':').count() > 1 => host,
            None => host.rsplit_once(':').map_or(host, |(h, _)| h),
        };
        match name.parse::<IpAddr>() {
            Ok(ip) => self.listen.is_unspecified() || ip == self.listen,
            Err(_) => self.hosts.iter().any(|h| h.eq_ignore_ascii_case(name)),
        }
    }

    /// `callgate_admin_refused_total{reason}` (see [`crate::exposition`]).
    pub fn encode(
        &self,
        e: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        let mut f = crate::exposition::counter(
            e,
            "callgate_admin_refused_total",
            "Admin API requests refused, by reason.",
        )?;
        for r in Refusal::ALL {
            f.counter(
                &[("reason", r.as_str())],
                self.refused[r as usize].load(Ordering::Relaxed),
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{AdminToken, RoleToken};

    fn admin_with_token(token: &[u8]) -> AdminConfig {
        AdminConfig {
            listen: None,
            token: Some(AdminToken(token.to_vec())),
            tokens: vec![],
            token_for_reads: false,
            allowed_hosts: vec!["localhost".into()],
            allowed_origins: vec![],
        }
    }

    fn headers(list: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in list {
            h.insert(*n, v.parse().expect("header value"));
        }
        h
    }

    fn ok(a: &Access, m: &Method, path: &str, h: &[(&'static str, &str)]) -> Option<String> {
        match a.check(m, path, &headers(h)) {
            Ok(c) => Some(c.map_or_else(|| "-".to_owned(), |c| c.name)),
            Err(r) => panic!("{m} {path} refused: {r:?}"),
        }
    }

    fn no(a: &Access, m: &Method, path: &str, h: &[(&'static str, &str)]) -> Refusal {
        match a.check(m, path, &headers(h)) {
            Ok(c) => panic!("{m} {path} accepted for {c:?}"),
            Err(r) => r,
        }
    }

    #[test]
    fn hosts_rebinding_origins_and_tokens() {
        let a = Access::new(
            &admin_with_token(b"0123456789abcdef-token"),
            "127.0.0.1:9060".parse().expect("addr"),
        );
        let ok_host = ("host", "127.0.0.1:9060");
        let p = "/v1/targets";
        assert_eq!(ok(&a, &Method::GET, p, &[ok_host]), Some("-".into()));
        ok(&a, &Method::GET, p, &[("host", "localhost:9060")]);
        let get = Method::GET;
        assert_eq!(
            no(&a, &get, p, &[("host", "evil.example:9060")]),
            Refusal::Host
        );
        assert_eq!(no(&a, &get, p, &[("host", "10.0.0.1")]), Refusal::Host);
        assert_eq!(no(&a, &get, p, &[]), Refusal::Host);
        let evil = ("origin", "https://evil.example");
        assert_eq!(no(&a, &get, p, &[ok_host, evil]), Refusal::Origin);
        let cross = ("sec-fetch-site", "cross-site");
        assert_eq!(no(&a, &get, p, &[ok_host, cross]), Refusal::Origin);
        let post = Method::POST;
        assert_eq!(no(&a, &post, "/v1/drain", &[ok_host]), Refusal::Token);
        let short = ("authorization", "Bearer 0123456789abcdef-toke");
        assert_eq!(
            no(&a, &post, "/v1/drain", &[ok_host, short]),
            Refusal::Token
        );
        let right = ("authorization", "Bearer 0123456789abcdef-token");
        assert_eq!(
            ok(&a, &post, "/v1/drain", &[ok_host, right]),
            Some(LEGACY_TOKEN_NAME.into())
        );
        let v6 = Access::new(
            &admin_with_token(b"0123456789abcdef-token"),
            "[::1]:9060".parse().expect("addr"),
        );
        ok(&v6, &get, p, &[("host", "[::1]:9060")]);
        assert_eq!(no(&v6, &get, p, &[("host", "[::2]:9060")]), Refusal::Host);
    }

    #[test]
    fn each_role_reaches_its_routes_and_no_further() {
        let mut cfg = admin_with_token(b"ops-token-0123456789");
        for (name, role) in [("desk-1", Role::Agent), ("floor", Role::Supervisor)] {
            cfg.tokens.push(RoleToken {
                name: name.into(),
                role,
                token: AdminToken(format!("{name}-token-0123456789").into_bytes()),
            });
        }
        let a = Access::new(&cfg, "127.0.0.1:9060".parse().expect("addr"));
        let host = ("host", "127.0.0.1:9060");
        let agent = ("authorization", "Bearer desk-1-token-0123456789");
        let sup = ("authorization", "Bearer floor-token-0123456789");
        let ops = ("authorization", "Bearer ops-token-0123456789");
        let (get, post) = (Method::GET, Method::POST);
        let decision = "/v1/calls/abc@host/decision";
        for (m, path) in [
            (&get, decision),
            (&get, "/v1/decisions/cg-1"),
            (&post, "/v1/calls/abc/step-up"),
            (&post, "/v1/calls/abc/verdict"),
        ] {
            assert_eq!(ok(&a, m, path, &[host, agent]), Some("desk-1".into()));
            assert_eq!(ok(&a, m, path, &[host, sup]), Some("floor".into()));
            assert_eq!(ok(&a, m, path, &[host, ops]), Some("admin".into()));
            // The enforcement API always needs a token.
            assert_eq!(no(&a, m, path, &[host]), Refusal::Token);
        }
        for path in ["/v1/calls", "/v1/calls/abc", "/v1/review", "/v1/events"] {
            assert_eq!(no(&a, &get, path, &[host, agent]), Refusal::Role);
            assert_eq!(ok(&a, &get, path, &[host, sup]), Some("floor".into()));
        }
        for (m, path) in [
            (&post, "/v1/reload"),
            (&post, "/reload"),
            (&get, "/metrics"),
        ] {
            assert_eq!(no(&a, m, path, &[host, agent]), Refusal::Role);
            assert_eq!(no(&a, m, path, &[host, sup]), Refusal::Role);
            ok(&a, m, path, &[host, ops]);
        }
        ok(&a, &get, "/healthz", &[host, agent]);
        // Without a token: probes and scrapes as before; not the calls.
        assert_eq!(ok(&a, &get, "/metrics", &[host]), Some("-".into()));
        assert_eq!(no(&a, &get, "/v1/calls", &[host]), Refusal::Token);
        let wrong = ("authorization", "Bearer desk-2-token-0123456789");
        assert_eq!(no(&a, &get, decision, &[host, wrong]), Refusal::Token);
        // Refusals are counted per reason.
        let counted = |r: Refusal| a.refused[r as usize].load(Ordering::Relaxed);
        assert_eq!((counted(Refusal::Role), counted(Refusal::Token)), (10, 6));
    }
}
