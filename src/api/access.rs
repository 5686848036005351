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
//! 3. A request that changes state (any method but GET and HEAD), or any
//!    request when `admin.token_for_reads` is set, needs
//!    `Authorization: Bearer <admin.token_file's token>`, compared in
//!    constant time (no timing oracle on the token). Without a token
//!    file, state-changing requests are refused (403): anyone who can
//!    reach the port could otherwise reload the configuration.
//!
//! Refusals are counted in `callgate_admin_refused_total{reason}`.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};

use aws_lc_rs::digest;
use axum::http::{header, HeaderMap, Method, StatusCode};

use crate::config::AdminConfig;

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
}

impl Refusal {
    const ALL: [Refusal; 4] = [
        Refusal::Host,
        Refusal::Origin,
        Refusal::Token,
        Refusal::NoToken,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::Host => "host",
            Refusal::Origin => "origin",
            Refusal::Token => "token",
            Refusal::NoToken => "no_token",
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
                "state-changing requests need admin.token_file\n",
            ),
        }
    }
}

/// The access rules of one admin listener, and its refusal counters.
pub struct Access {
    listen: IpAddr,
    /// SHA-256 of the token: compared in constant time, whatever its length.
    token: Option<digest::Digest>,
    token_for_reads: bool,
    hosts: Vec<String>,
    origins: Vec<String>,
    refused: [AtomicU64; 4],
}

impl Access {
    /// The rules of `[admin]` for a listener bound to `listen`.
    pub fn new(cfg: &AdminConfig, listen: SocketAddr) -> Access {
        Access {
            listen: listen.ip(),
            token: cfg
                .token
                .as_ref()
                .map(|t| digest::digest(&digest::SHA256, &t.0)),
            token_for_reads: cfg.token_for_reads,
            hosts: cfg.allowed_hosts.clone(),
            origins: cfg.allowed_origins.clone(),
            refused: Default::default(),
        }
    }

    /// Checks a request's method and headers; counts a refusal.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
        let verdict = self.verdict(method, headers);
        if let Err(r) = verdict {
            self.refused[r as usize].fetch_add(1, Ordering::Relaxed);
        }
        verdict
    }

    fn verdict(&self, method: &Method, headers: &HeaderMap) -> Result<(), Refusal> {
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
        let reads = matches!(*method, Method::GET | Method::HEAD);
        if reads && !self.token_for_reads {
            return Ok(());
        }
        let Some(want) = &self.token else {
            return Err(Refusal::NoToken);
        };
        let given = text(header::AUTHORIZATION.as_str())
            .and_then(|a| a.strip_prefix("Bearer "))
            .map(|t| digest::digest(&digest::SHA256, t.trim().as_bytes()));
        match given {
            Some(g)
                if aws_lc_rs::constant_time::verify_slices_are_equal(g.as_ref(), want.as_ref())
                    .is_ok() =>
            {
                Ok(())
            }
            _ => Err(Refusal::Token),
        }
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
    use crate::config::AdminToken;

    fn admin_with_token(token: &[u8]) -> AdminConfig {
        AdminConfig {
            listen: None,
            token: Some(AdminToken(token.to_vec())),
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

    #[test]
    fn hosts_rebinding_origins_and_tokens() {
        let a = Access::new(
            &admin_with_token(b"0123456789abcdef-token"),
            "127.0.0.1:9060".parse().expect("addr"),
        );
        let ok_host = ("host", "127.0.0.1:9060");
        assert_eq!(a.check(&Method::GET, &headers(&[ok_host])), Ok(()));
        assert_eq!(
            a.check(&Method::GET, &headers(&[("host", "localhost:9060")])),
            Ok(())
        );
        assert_eq!(
            a.check(&Method::GET, &headers(&[("host", "evil.example:9060")])),
            Err(Refusal::Host)
        );
        assert_eq!(
            a.check(&Method::GET, &headers(&[("host", "10.0.0.1")])),
            Err(Refusal::Host)
        );
        assert_eq!(a.check(&Method::GET, &headers(&[])), Err(Refusal::Host));
        assert_eq!(
            a.check(
                &Method::GET,
                &headers(&[ok_host, ("origin", "https://evil.example")])
            ),
            Err(Refusal::Origin)
        );
        assert_eq!(
            a.check(
                &Method::GET,
                &headers(&[ok_host, ("sec-fetch-site", "cross-site")])
            ),
            Err(Refusal::Origin)
        );
        assert_eq!(
            a.check(&Method::POST, &headers(&[ok_host])),
            Err(Refusal::Token)
        );
        assert_eq!(
            a.check(
                &Method::POST,
                &headers(&[ok_host, ("authorization", "Bearer 0123456789abcdef-toke")])
            ),
            Err(Refusal::Token)
        );
        assert_eq!(
            a.check(
                &Method::POST,
                &headers(&[ok_host, ("authorization", "Bearer 0123456789abcdef-token")])
            ),
            Ok(())
        );
        let v6 = Access::new(
            &admin_with_token(b"0123456789abcdef-token"),
            "[::1]:9060".parse().expect("addr"),
        );
        assert_eq!(
            v6.check(&Method::GET, &headers(&[("host", "[::1]:9060")])),
            Ok(())
        );
        assert_eq!(
            v6.check(&Method::GET, &headers(&[("host", "[::2]:9060")])),
            Err(Refusal::Host)
        );
    }
}
