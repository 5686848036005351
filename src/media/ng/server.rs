//! The ng control server: a UDP receive loop around a sans-IO [`Handler`].
//!
//! Retransmissions follow rtpengine's `control_ng.c`: Kamailio's and
//! OpenSIPS's `rtpengine` modules resend a request with the same cookie when
//! no reply comes in time, so the reply to every executed request is kept
//! for [`ServerConfig::reply_ttl`] and a repeated cookie is answered from
//! that cache without calling [`MediaControl`] again — an `offer` is never
//! applied twice. Unlike rtpengine the cache is keyed by the source address
//! *and* the cookie: two proxies whose cookies happen to collide are not
//! answered each other's replies (a module resends from the socket it sent
//! from). The cache is bounded in entries and bytes; the oldest reply goes
//! first. Requests that could not be parsed are not cached: they changed
//! nothing and their error reply is recomputed identically.
//!
//! Datagrams without a cookie are dropped unanswered (as rtpengine does);
//! sources outside [`ServerConfig::allow`] are dropped too, so the port
//! cannot be used to reflect error replies at a spoofed address.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use ipnet::IpNet;
use tokio::net::UdpSocket;

use super::command::{parse_datagram, Command, Request, Response};
use super::{MediaControl, NgError};

/// rtpengine's warning (or, with the `fatal` flag, error) for a `delete` of
/// an unknown call.
pub const DELETE_NOT_FOUND: &str = "Call-ID not found or tags didn't match";

/// Largest datagram read; UDP carries at most 65,507 bytes over IPv4.
const MAX_DATAGRAM: usize = 65_536;

/// Server settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// How long a reply is kept for retransmissions: well beyond the time a
    /// proxy keeps resending (Kamailio: `rtpengine_retr` tries,
    /// `rtpengine_tout_ms` apart).
    pub reply_ttl: Duration,
    /// Most replies kept.
    pub reply_cache_entries: usize,
    /// Most bytes of replies (and cookies) kept: offers' SDP replies are a
    /// few kilobytes each.
    pub reply_cache_bytes: usize,
    /// Sources allowed to send requests; empty allows any. The ng port
    /// changes media state unauthenticated: bind it to a private address, and
    /// list the SIP proxies here.
    pub allow: Vec<IpNet>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            reply_ttl: Duration::from_secs(30),
            reply_cache_entries: 10_000,
            reply_cache_bytes: 32 << 20,
            allow: Vec::new(),
        }
    }
}

/// Counters of the ng server, for `/metrics`.
#[derive(Debug, Default)]
pub struct NgMetrics {
    /// By [`Command`] (its declaration order) and result (ok, error).
    requests: [[AtomicU64; 2]; Command::ALL.len()],
    retransmissions: AtomicU64,
    no_cookie: AtomicU64,
    not_allowed: AtomicU64,
    send_errors: AtomicU64,
    reply_cache_entries: AtomicU64,
}

impl NgMetrics {
    fn count(&self, command: Command, ok: bool) {
        self.requests[command as usize][usize::from(!ok)].fetch_add(1, Relaxed);
    }

    /// Requests executed (or refused) with this command and result; replies
    /// from the cache are not counted here.
    pub fn requests(&self, command: Command, ok: bool) -> u64 {
        self.requests[command as usize][usize::from(!ok)].load(Relaxed)
    }

    /// Requests answered from the reply cache.
    pub fn retransmissions(&self) -> u64 {
        self.retransmissions.load(Relaxed)
    }

    /// Datagrams dropped for want of a cookie.
    pub fn no_cookie(&self) -> u64 {
        self.no_cookie.load(Relaxed)
    }

    /// Datagrams dropped because their source is not allowed.
    pub fn not_allowed(&self) -> u64 {
        self.not_allowed.load(Relaxed)
    }

    /// Replies the socket failed to send.
    pub fn send_errors(&self) -> u64 {
        self.send_errors.load(Relaxed)
    }

    /// Writes these metrics into `/metrics` (see [`crate::exposition`]).
    pub fn encode(
        &self,
        e: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        use crate::exposition::{counter, one_counter, one_gauge};
        let mut f = counter(
            e,
            "callgate_media_ng_requests_total",
            "ng control protocol requests by command and result (replies from the retransmission cache excluded).",
        )?;
        for command in Command::ALL {
            for (ok, result) in [(true, "ok"), (false, "error")] {
                let labels = [("command", command.as_str()), ("result", result)];
                f.counter(&labels, self.requests(command, ok))?;
            }
        }
        one_counter(
            e,
            "callgate_media_ng_retransmissions_total",
            "ng requests answered from the reply cache (same cookie from the same source), not executed again.",
            self.retransmissions(),
        )?;
        let mut f = counter(
            e,
            "callgate_media_ng_dropped_total",
            "ng datagrams dropped unanswered: no cookie, or a source not allowed.",
        )?;
        f.counter(&[("reason", "no_cookie")], self.no_cookie())?;
        f.counter(&[("reason", "not_allowed")], self.not_allowed())?;
        one_counter(
            e,
            "callgate_media_ng_send_errors_total",
            "ng replies the socket failed to send.",
            self.send_errors(),
        )?;
        one_gauge(
            e,
            "callgate_media_ng_reply_cache_entries",
            "ng replies kept for retransmissions.",
            i64::try_from(self.reply_cache_entries.load(Relaxed)).unwrap_or(i64::MAX),
        )
    }
}

impl crate::exposition::Exposed for NgMetrics {
    fn encode(
        &self,
        e: &mut prometheus_client::encoding::DescriptorEncoder<'_>,
    ) -> std::fmt::Result {
        NgMetrics::encode(self, e)
    }
}

/// Carries out one request: the reply, with rtpengine's semantics for a
/// `delete` of an unknown call (`ok` with a warning unless `fatal`).
pub fn execute(control: &dyn MediaControl, req: &Request) -> Response {
    let error = |e: NgError| Response::Error(e.to_string());
    match req {
        Request::Ping => Response::Pong,
        Request::Offer(o) => control.offer(o).map_or_else(error, Response::Sdp),
        Request::Answer(a) => control.answer(a).map_or_else(error, Response::Sdp),
        Request::Delete(d) => match control.delete(d) {
            Ok(report) => Response::Deleted {
                warning: None,
                report: report.map(Box::new),
            },
            Err(NgError::UnknownCall) if !d.fatal => Response::Deleted {
                warning: Some(DELETE_NOT_FOUND.to_owned()),
                report: None,
            },
            Err(NgError::UnknownCall) => Response::Error(DELETE_NOT_FOUND.to_owned()),
            Err(e) => error(e),
        },
        Request::Query(q) => control
            .query(q)
            .map_or_else(error, |r| Response::Query(Box::new(r))),
    }
}

/// The protocol without the socket: datagram in, reply datagram out.
pub struct Handler {
    control: Arc<dyn MediaControl>,
    metrics: Arc<NgMetrics>,
    cache: ReplyCache,
    allow: Vec<IpNet>,
}

impl Handler {
    pub fn new(
        control: Arc<dyn MediaControl>,
        metrics: Arc<NgMetrics>,
        config: &ServerConfig,
    ) -> Handler {
        Handler {
            control,
            metrics,
            cache: ReplyCache {
                ttl: config.reply_ttl,
                max_entries: config.reply_cache_entries,
                max_bytes: config.reply_cache_bytes,
                map: HashMap::new(),
                order: VecDeque::new(),
                bytes: 0,
            },
            allow: config.allow.clone(),
        }
    }

    /// The reply to `datagram` from `from` at `now`, or `None` to drop it.
    pub fn handle(&mut self, from: SocketAddr, datagram: &Bytes, now: Instant) -> Option<Bytes> {
        let source = from.ip().to_canonical();
        if !self.allow.is_empty() && !self.allow.iter().any(|net| net.contains(&source)) {
            self.metrics.not_allowed.fetch_add(1, Relaxed);
            tracing::debug!(%from, "ng datagram from a source not allowed dropped");
            return None;
        }
        let Some((cookie, parsed)) = parse_datagram(datagram) else {
            self.metrics.no_cookie.fetch_add(1, Relaxed);
            tracing::debug!(%from, len = datagram.len(), "ng datagram without a cookie dropped");
            return None;
        };
        let cached = self.cache.get(from, &cookie, now);
        self.update_cache_gauge();
        if let Some(reply) = cached {
            self.metrics.retransmissions.fetch_add(1, Relaxed);
            tracing::info!(%from, cookie = %String::from_utf8_lossy(&cookie), "ng retransmission answered from the reply cache");
            return Some(reply);
        }
        let cookie_text = String::from_utf8_lossy(&cookie);
        let (command, response, cache) = match parsed {
            Ok(req) => {
                let response = execute(self.control.as_ref(), &req);
                match &response {
                    Response::Error(reason) => {
                        tracing::info!(%from, cookie = %cookie_text, command = req.command().as_str(), call_id = req.call_id(), reason = %reason, "ng request refused")
                    }
                    _ => {
                        tracing::debug!(%from, cookie = %cookie_text, command = req.command().as_str(), call_id = req.call_id(), "ng request")
                    }
                }
                (req.command(), response, true)
            }
            Err(e) => {
                tracing::warn!(%from, cookie = %cookie_text, error = %e, "ng protocol error");
                (e.command(), Response::Error(e.to_string()), false)
            }
        };
        self.metrics.count(command, !response.is_error());
        let wire = response.encode(&cookie);
        if cache {
            self.cache.insert(from, &cookie, wire.clone(), now);
            self.update_cache_gauge();
        }
        Some(wire)
    }

    fn update_cache_gauge(&self) {
        self.metrics
            .reply_cache_entries
            .store(self.cache.map.len() as u64, Relaxed);
    }
}

/// Replies by (source, cookie), oldest first out.
struct ReplyCache {
    ttl: Duration,
    max_entries: usize,
    max_bytes: usize,
    map: HashMap<(SocketAddr, Bytes), (Instant, Bytes)>,
    /// Insertion order, for expiry and eviction.
    order: VecDeque<(Instant, SocketAddr, Bytes)>,
    bytes: usize,
}

/// Bytes an entry holds, with a rough allowance for the map and queue.
fn cost(cookie: &[u8], reply: &[u8]) -> usize {
    cookie.len() * 2 + reply.len() + 96
}

impl ReplyCache {
    fn get(&mut self, from: SocketAddr, cookie: &Bytes, now: Instant) -> Option<Bytes> {
        self.expire(now);
        self.map
            .get(&(from, cookie.clone()))
            .map(|(_, reply)| reply.clone())
    }

    fn insert(&mut self, from: SocketAddr, cookie: &[u8], reply: Bytes, now: Instant) {
        self.expire(now);
        // A copy, so the cache does not pin the whole received datagram.
        let cookie = Bytes::copy_from_slice(cookie);
        let size = cost(&cookie, &reply);
        if let Some((_, old)) = self.map.insert((from, cookie.clone()), (now, reply)) {
            self.bytes = self.bytes.saturating_sub(cost(&cookie, &old));
        }
        self.bytes += size;
        self.order.push_back((now, from, cookie));
        while self.map.len() > self.max_entries || self.bytes > self.max_bytes {
            if !self.pop_oldest() {
                break;
            }
        }
    }

    fn expire(&mut self, now: Instant) {
        while let Some((at, _, _)) = self.order.front() {
            if now.saturating_duration_since(*at) < self.ttl {
                break;
            }
            self.pop_oldest();
        }
    }

    /// Drops the oldest entry; false if there is none.
    fn pop_oldest(&mut self) -> bool {
        let Some((at, from, cookie)) = self.order.pop_front() else {
            return false;
        };
        let key = (from, cookie);
        // Skip a queue record whose entry was replaced since.
        if self.map.get(&key).is_some_and(|(t, _)| *t == at) {
            if let Some((_, reply)) = self.map.remove(&key) {
                self.bytes = self.bytes.saturating_sub(cost(&key.1, &reply));
            }
        }
        true
    }
}

/// Serves the ng protocol on `socket` until `shutdown` completes, with
/// [`ServerConfig::default`] and metrics of its own.
pub async fn serve(socket: UdpSocket, control: Arc<dyn MediaControl>, shutdown: impl Future) {
    serve_with(
        socket,
        control,
        ServerConfig::default(),
        Arc::new(NgMetrics::default()),
        shutdown,
    )
    .await;
}

/// Serves the ng protocol on `socket` until `shutdown` completes. Requests
/// are handled one at a time, in arrival order.
pub async fn serve_with(
    socket: UdpSocket,
    control: Arc<dyn MediaControl>,
    config: ServerConfig,
    metrics: Arc<NgMetrics>,
    shutdown: impl Future,
) {
    let mut handler = Handler::new(control, metrics.clone(), &config);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    tokio::pin!(shutdown);
    loop {
        let (n, from) = tokio::select! {
            biased;
            _ = &mut shutdown => return,
            received = socket.recv_from(&mut buf) => match received {
                Ok(r) => r,
                Err(e) => {
                    // ICMP errors surface here on Linux (ECONNREFUSED after
                    // a reply to a closed port); not fatal for this socket.
                    tracing::debug!(error = %e, "ng receive error");
                    continue;
                }
            },
        };
        let datagram = Bytes::copy_from_slice(&buf[..n]);
        if let Some(reply) = handler.handle(from, &datagram, Instant::now()) {
            if let Err(e) = socket.send_to(&reply, from).await {
                metrics.send_errors.fetch_add(1, Relaxed);
                tracing::warn!(%from, error = %e, len = reply.len(), "ng reply not sent");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::super::bencode::{self, Value};
    use super::super::{
        Counters, DeleteRequest, LegReport, MediaReport, OfferRequest, QueryReport, QueryRequest,
        StreamKind, StreamReport,
    };
    use super::*;

    const SDP: &str = "v=0\r\no=- 1 1 IN IP4 198.51.100.7\r\ns=-\r\nc=IN IP4 198.51.100.7\r\nt=0 0\r\nm=audio 6000 RTP/AVP 0\r\n";

    /// Records the calls; rewrites the SDP's address to the relay's.
    #[derive(Default)]
    struct Recorder {
        calls: Mutex<Vec<String>>,
    }

    impl Recorder {
        fn calls(&self) -> Vec<String> {
            self.calls.lock().unwrap().clone()
        }

        fn record(&self, s: String) {
            self.calls.lock().unwrap().push(s);
        }
    }

    fn rewrite(sdp: &[u8]) -> Bytes {
        Bytes::from(
            String::from_utf8_lossy(sdp)
                .replace("198.51.100.7", "203.0.113.1")
                .replace(" 6000 ", " 30000 "),
        )
    }

    impl MediaControl for Recorder {
        fn offer(&self, req: &OfferRequest) -> Result<Bytes, NgError> {
            self.record(format!("offer {} {}", req.call_id, req.from_tag));
            if req.call_id == "full" {
                return Err(NgError::OutOfPorts);
            }
            Ok(rewrite(&req.sdp))
        }

        fn answer(&self, req: &OfferRequest) -> Result<Bytes, NgError> {
            self.record(format!(
                "answer {} {}",
                req.call_id,
                req.to_tag.as_deref().unwrap_or("")
            ));
            Ok(rewrite(&req.sdp))
        }

        fn delete(&self, req: &DeleteRequest) -> Result<Option<QueryReport>, NgError> {
            self.record(format!("delete {}", req.call_id));
            if req.call_id == "gone" {
                return Err(NgError::UnknownCall);
            }
            Ok(None)
        }

        fn query(&self, req: &QueryRequest) -> Result<QueryReport, NgError> {
            self.record(format!("query {}", req.call_id));
            if req.call_id == "gone" {
                return Err(NgError::UnknownCall);
            }
            let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
            Ok(QueryReport {
                created: t,
                last_signal: t,
                legs: vec![LegReport {
                    tag: "f1".into(),
                    label: None,
                    created: t,
                    in_dialogue_with: None,
                    medias: vec![MediaReport {
                        index: 1,
                        media_type: "audio".into(),
                        protocol: "RTP/AVP".into(),
                        streams: vec![StreamReport {
                            kind: StreamKind::Rtp,
                            local_port: Some(30000),
                            endpoint: None,
                            advertised_endpoint: None,
                            last_packet: Some(SystemTime::now()),
                            stats: Counters {
                                packets: 50,
                                bytes: 8600,
                                errors: 1,
                            },
                        }],
                    }],
                }],
            })
        }
    }

    fn bstr(s: &str) -> String {
        format!("{}:{s}", s.len())
    }

    fn offer(cookie: &str, call_id: &str) -> Bytes {
        Bytes::from(format!(
            "{cookie} d7:replacel6:origin18:session-connectione3:ICE6:remove3:sdp{}7:call-id{}8:from-tag2:f113:received-froml3:IP49:127.0.0.1e7:command5:offere",
            bstr(SDP),
            bstr(call_id)
        ))
    }

    fn reply_dict(wire: &[u8], cookie: &str) -> bencode::Dict {
        let body = wire
            .strip_prefix(format!("{cookie} ").as_bytes())
            .unwrap_or_else(|| panic!("cookie {cookie}: {}", String::from_utf8_lossy(wire)));
        bencode::decode(&Bytes::copy_from_slice(body))
            .unwrap()
            .as_dict()
            .unwrap()
            .clone()
    }

    fn text(d: &bencode::Dict, key: &str) -> Option<String> {
        d.get(key.as_bytes())
            .and_then(Value::as_str)
            .map(str::to_owned)
    }

    fn handler(config: &ServerConfig) -> (Handler, Arc<Recorder>, Arc<NgMetrics>) {
        let rec = Arc::new(Recorder::default());
        let metrics = Arc::new(NgMetrics::default());
        (
            Handler::new(rec.clone(), metrics.clone(), config),
            rec,
            metrics,
        )
    }

    fn proxy() -> SocketAddr {
        "192.0.2.10:5060".parse().unwrap()
    }

    #[test]
    fn same_cookie_is_answered_from_the_cache_without_reexecuting() {
        let (mut h, rec, metrics) = handler(&ServerConfig::default());
        let t0 = Instant::now();
        let first = h.handle(proxy(), &offer("8_1_1", "c1"), t0).unwrap();
        let again = h
            .handle(proxy(), &offer("8_1_1", "c1"), t0 + Duration::from_secs(1))
            .unwrap();
        assert_eq!(first, again);
        assert_eq!(rec.calls(), ["offer c1 f1"]);
        assert_eq!(metrics.requests(Command::Offer, true), 1);
        assert_eq!(metrics.retransmissions(), 1);
        // A new cookie is a new request.
        h.handle(proxy(), &offer("8_1_2", "c1"), t0).unwrap();
        assert_eq!(rec.calls().len(), 2);
        // The same cookie from another source is another proxy's request.
        let other: SocketAddr = "192.0.2.11:5060".parse().unwrap();
        h.handle(other, &offer("8_1_1", "c1"), t0).unwrap();
        assert_eq!(rec.calls().len(), 3);
    }

    #[test]
    fn cached_replies_expire() {
        let (mut h, rec, _) = handler(&ServerConfig::default());
        let t0 = Instant::now();
        h.handle(proxy(), &offer("c", "c1"), t0);
        h.handle(
            proxy(),
            &offer("c", "c1"),
            t0 + Duration::from_millis(29_999),
        );
        assert_eq!(rec.calls().len(), 1);
        h.handle(proxy(), &offer("c", "c1"), t0 + Duration::from_secs(30));
        assert_eq!(rec.calls().len(), 2);
        assert_eq!(h.cache.map.len(), 1);
        assert_eq!(h.cache.order.len(), 1);
    }

    #[test]
    fn cache_is_bounded_in_entries_and_bytes() {
        let config = ServerConfig {
            reply_cache_entries: 3,
            ..ServerConfig::default()
        };
        let (mut h, rec, metrics) = handler(&config);
        let t0 = Instant::now();
        for i in 0..5 {
            h.handle(proxy(), &offer(&format!("k{i}"), "c"), t0);
        }
        assert_eq!(h.cache.map.len(), 3);
        assert_eq!(metrics.reply_cache_entries.load(Relaxed), 3);
        // The oldest were evicted: k0 runs again, k4 does not.
        h.handle(proxy(), &offer("k4", "c"), t0);
        assert_eq!(rec.calls().len(), 5);
        h.handle(proxy(), &offer("k0", "c"), t0);
        assert_eq!(rec.calls().len(), 6);

        let one = cost(b"k0", &h.handle(proxy(), &offer("k9", "c"), t0).unwrap());
        let config = ServerConfig {
            reply_cache_bytes: one * 2,
            ..ServerConfig::default()
        };
        let (mut h, _, _) = handler(&config);
        for i in 0..5 {
            h.handle(proxy(), &offer(&format!("k{i}"), "c"), t0);
            assert!(h.cache.bytes <= one * 2);
        }
        assert_eq!(h.cache.map.len(), 2);
        assert_eq!(h.cache.bytes, one * 2);
    }

    #[test]
    fn refused_requests_are_cached_but_parse_errors_are_not() {
        let (mut h, rec, metrics) = handler(&ServerConfig::default());
        let t0 = Instant::now();
        // The relay's refusal is cached like any executed request.
        let full = h.handle(proxy(), &offer("a", "full"), t0).unwrap();
        assert_eq!(
            text(&reply_dict(&full, "a"), "error-reason").as_deref(),
            Some("Ran out of ports")
        );
        h.handle(proxy(), &offer("a", "full"), t0);
        assert_eq!(rec.calls().len(), 1);
        assert_eq!(metrics.requests(Command::Offer, false), 1);
        // An undecodable request is answered, not cached, counted each time.
        let bad = Bytes::from_static(b"b d7:command");
        let r1 = h.handle(proxy(), &bad, t0).unwrap();
        let r2 = h.handle(proxy(), &bad, t0).unwrap();
        assert_eq!(r1, r2);
        assert_eq!(metrics.requests(Command::Invalid, false), 2);
        assert_eq!(metrics.retransmissions(), 1);
        assert_eq!(h.cache.map.len(), 1);
    }

    #[test]
    fn delete_and_query_semantics() {
        let (mut h, _, _) = handler(&ServerConfig::default());
        let t0 = Instant::now();
        let r = h
            .handle(
                proxy(),
                &Bytes::from_static(b"d1 d7:command6:delete7:call-id4:gonee"),
                t0,
            )
            .unwrap();
        let d = reply_dict(&r, "d1");
        assert_eq!(text(&d, "result").as_deref(), Some("ok"));
        assert_eq!(text(&d, "warning").as_deref(), Some(DELETE_NOT_FOUND));
        let r = h
            .handle(
                proxy(),
                &Bytes::from_static(b"d2 d7:command6:delete7:call-id4:gone5:flagsl5:fatalee"),
                t0,
            )
            .unwrap();
        let d = reply_dict(&r, "d2");
        assert_eq!(text(&d, "result").as_deref(), Some("error"));
        assert_eq!(text(&d, "error-reason").as_deref(), Some(DELETE_NOT_FOUND));
        let r = h
            .handle(
                proxy(),
                &Bytes::from_static(b"d3 d7:command6:delete7:call-id2:c18:from-tag2:f1e"),
                t0,
            )
            .unwrap();
        assert_eq!(r.as_ref(), b"d3 d6:result2:oke");
        let r = h
            .handle(
                proxy(),
                &Bytes::from_static(b"q1 d7:command5:query7:call-id4:gonee"),
                t0,
            )
            .unwrap();
        assert_eq!(
            text(&reply_dict(&r, "q1"), "error-reason").as_deref(),
            Some("Unknown call-id")
        );
        let r = h
            .handle(
                proxy(),
                &Bytes::from_static(b"q2 d7:command5:query7:call-id2:c1e"),
                t0,
            )
            .unwrap();
        let d = reply_dict(&r, "q2");
        let rtp = d
            .get(b"totals")
            .and_then(Value::as_dict)
            .and_then(|t| t.get(b"RTP"))
            .and_then(Value::as_dict)
            .unwrap();
        assert_eq!(rtp.get(b"packets"), Some(&Value::Int(50)));
        assert_eq!(rtp.get(b"errors"), Some(&Value::Int(1)));
        assert_eq!(d.get(b"created"), Some(&Value::Int(1_700_000_000)));
    }

    #[test]
    fn allow_list_and_cookieless_datagrams() {
        let config = ServerConfig {
            allow: vec!["192.0.2.0/28".parse().unwrap()],
            ..ServerConfig::default()
        };
        let (mut h, _, metrics) = handler(&config);
        let t0 = Instant::now();
        let ping = Bytes::from_static(b"p d7:command4:pinge");
        assert!(h.handle(proxy(), &ping, t0).is_some());
        // IPv4 seen through a dual-stack socket.
        let mapped: SocketAddr = "[::ffff:192.0.2.10]:5060".parse().unwrap();
        assert!(h.handle(mapped, &ping, t0).is_some());
        let outsider: SocketAddr = "198.51.100.1:5060".parse().unwrap();
        assert!(h.handle(outsider, &ping, t0).is_none());
        assert_eq!(metrics.not_allowed(), 1);
        assert!(h
            .handle(proxy(), &Bytes::from_static(b"d7:command4:pinge"), t0)
            .is_none());
        assert_eq!(metrics.no_cookie(), 1);
        assert_eq!(metrics.requests(Command::Ping, true), 2);
    }

    #[test]
    fn metrics_render_as_prometheus_text() {
        let (mut h, _, metrics) = handler(&ServerConfig::default());
        let t0 = Instant::now();
        h.handle(proxy(), &offer("o", "c1"), t0);
        h.handle(proxy(), &offer("o", "c1"), t0);
        h.handle(proxy(), &Bytes::from_static(b"x d7:command5:dancee"), t0);
        let out = crate::exposition::text_of(metrics.clone());
        for line in [
            "# TYPE callgate_media_ng_requests_total counter",
            "callgate_media_ng_requests_total{command=\"offer\",result=\"ok\"} 1",
            "callgate_media_ng_requests_total{command=\"offer\",result=\"error\"} 0",
            "callgate_media_ng_requests_total{command=\"other\",result=\"error\"} 1",
            "callgate_media_ng_retransmissions_total 1",
            "callgate_media_ng_dropped_total{reason=\"no_cookie\"} 0",
            "callgate_media_ng_send_errors_total 0",
            "callgate_media_ng_reply_cache_entries 1",
        ] {
            assert!(out.lines().any(|l| l == line), "{line}\n{out}");
        }
        // Every sample line belongs to a declared metric.
        for l in out.lines().filter(|l| !l.starts_with('#')) {
            let name = l.split(['{', ' ']).next().unwrap();
            assert!(out.contains(&format!("# TYPE {name} ")), "{l}");
        }
    }

    async fn exchange(client: &UdpSocket, datagram: &[u8]) -> Vec<u8> {
        client.send(datagram).await.unwrap();
        recv(client).await
    }

    async fn recv(client: &UdpSocket) -> Vec<u8> {
        let mut buf = vec![0u8; 65_536];
        let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf))
            .await
            .expect("no reply within 5 s")
            .unwrap();
        buf.truncate(n);
        buf
    }

    #[tokio::test]
    async fn serves_on_a_loopback_socket() {
        let server = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let addr = server.local_addr().unwrap();
        let rec = Arc::new(Recorder::default());
        let metrics = Arc::new(NgMetrics::default());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(serve_with(
            server,
            rec.clone(),
            ServerConfig::default(),
            metrics.clone(),
            stopped,
        ));
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        client.connect(addr).await.unwrap();

        // ping → pong
        assert_eq!(
            exchange(&client, b"5323_1 d7:command4:pinge").await,
            b"5323_1 d6:result4:ponge"
        );

        // offer → rewritten SDP
        let o = offer("5323_2", "a84b4c76e66710@pc33.example.com");
        let reply = exchange(&client, &o).await;
        let d = reply_dict(&reply, "5323_2");
        assert_eq!(text(&d, "result").as_deref(), Some("ok"));
        let sdp = text(&d, "sdp").unwrap();
        assert!(sdp.contains("c=IN IP4 203.0.113.1\r\n"), "{sdp}");
        assert!(sdp.contains("m=audio 30000 RTP/AVP 0\r\n"), "{sdp}");

        // The same cookie again: the same reply, no second offer.
        assert_eq!(exchange(&client, &o).await, reply);
        assert_eq!(rec.calls(), ["offer a84b4c76e66710@pc33.example.com f1"]);

        // Answer.
        let answer = format!(
            "5323_3 d7:command6:answer7:call-id1:c8:from-tag2:f16:to-tag2:t13:sdp{}e",
            bstr(SDP)
        );
        let d = reply_dict(&exchange(&client, answer.as_bytes()).await, "5323_3");
        assert!(text(&d, "sdp").unwrap().contains("203.0.113.1"));

        // Garbage: dropped without a cookie, an error reply with one; the
        // server keeps serving.
        let mut rng = fastrand::Rng::with_seed(3);
        for _ in 0..200 {
            let junk: Vec<u8> = (0..rng.usize(0..300))
                .map(|_| if rng.u8(..8) == 0 { b' ' } else { rng.u8(..) })
                .collect();
            client.send(&junk).await.unwrap();
        }
        client.send(b"no-cookie-at-all").await.unwrap();
        client.send(b"").await.unwrap();
        let bad = exchange(&client, b"g1 d7:command5:offer3:sdpi1ee").await;
        // Replies to junk that happened to carry a cookie may arrive first.
        let mut bad = bad;
        while !bad.starts_with(b"g1 ") {
            bad = recv(&client).await;
        }
        assert_eq!(
            text(&reply_dict(&bad, "g1"), "error-reason").as_deref(),
            Some("Invalid value for \"sdp\": expected a string")
        );

        // Unknown command → error reply.
        let d = reply_dict(
            &exchange(&client, b"5323_4 d7:command5:dancee").await,
            "5323_4",
        );
        assert_eq!(text(&d, "result").as_deref(), Some("error"));
        assert_eq!(
            text(&d, "error-reason").as_deref(),
            Some("Unrecognized command \"dance\"")
        );

        // Still alive.
        assert_eq!(
            exchange(&client, b"5323_5 d7:command4:pinge").await,
            b"5323_5 d6:result4:ponge"
        );
        assert_eq!(metrics.requests(Command::Offer, true), 1);
        assert_eq!(metrics.retransmissions(), 1);
        assert!(metrics.no_cookie() >= 2);

        stop.send(()).unwrap();
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("serve did not stop")
            .unwrap();
    }
}
