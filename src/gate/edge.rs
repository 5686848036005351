//! The transport edge of the running service: sends what the proxy core
//! asks for (UDP, or a stream connection opened on demand, TCP or TLS),
//! reports failed sends back to the core, accepts and serves stream
//! connections, drives the core's timers, answers sources outside the ACL
//! with 403, and measures the time spent on each message.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::net::TcpListener;

use super::{lock, Gate};
use crate::api::exhaustion::ConnectionEnd;
use crate::api::metrics::Phase;
use crate::api::tls_metrics::TlsDirection;
use crate::config::{Side, Transport};
use crate::sip::message::SipMessage;
use crate::sip::method::Method;
use crate::sip::proxy::{Outgoing, Peer};
use crate::sip::response::build_response;
use crate::sip::transport::connections::{ConnectionCounter, ConnectionSlot};
use crate::sip::transport::stream::{self, StreamId, StreamSettings};
use crate::sip::transport::tls::HandshakeFailure;
use crate::sip::transport::Sink;
use crate::stir::offload::offload_after;

impl Gate {
    /// Records the time spent on one message, and at the end of each load
    /// window switches signature offload on or off
    /// ([`crate::stir::offload`]).
    pub(super) fn observe_busy(&self, started: Instant) {
        let now = Instant::now();
        let busy = now.saturating_duration_since(started);
        self.metrics.observe(Phase::Process, busy);
        if let Some(pool) = &self.offload {
            if let Some(demand) = lock(&self.load).record(busy, now, || pool.take_busy()) {
                pool.set_active(offload_after(pool.is_active(), demand));
            }
        }
    }

    /// Answers 403 to a request from a source outside the ACL, its refusal
    /// token already taken by the admit phase (a spoofed source must not
    /// make callgate a reflector).
    pub(super) fn forbid(&self, peer: Peer, data: Bytes) {
        let Ok(msg) = SipMessage::parse(data, &Default::default()) else {
            return;
        };
        if msg.is_request() && msg.method() != Some(Method::Ack) {
            let r = build_response(&msg, 403, "Forbidden", None, Some(peer.addr), &[]);
            self.send_answer(peer, r, 403);
        }
    }

    /// Wakes the timer task if the core's next deadline moved earlier.
    pub(super) fn rearm(&self, next: Option<Instant>) {
        let Some(next) = next else { return };
        let mut armed = lock(&self.armed);
        if armed.is_none_or(|a| next < a) {
            *armed = Some(next);
            drop(armed);
            self.timer_wake.notify_one();
        }
    }

    /// Sends what the core produced; failures go back to the core.
    pub(super) fn dispatch(&self, mut out: Vec<Outgoing>) {
        // Final responses and BYEs are parsed once, for both observers, and
        // only while some call is open or anchored.
        let media = self.media.as_ref().filter(|m| m.anchors_calls());
        let sent = {
            let mut outcomes = lock(&self.outcomes);
            if outcomes.is_empty() && media.is_none() {
                Vec::new()
            } else {
                let sent = super::outcome::endings(&out);
                outcomes.observe(&sent, self.audit.as_ref());
                sent
            }
        };
        if let Some(media) = media {
            media.observe_sent(&sent);
        }
        while !out.is_empty() {
            let mut failed = Vec::new();
            for o in out.drain(..) {
                match o.to.transport {
                    Transport::Udp => {
                        let sock = self.udp[o.to.side.index()]
                            .as_ref()
                            .or(self.udp[o.to.side.other().index()].as_ref());
                        let Some(sock) = sock else {
                            failed.extend(o.client);
                            continue;
                        };
                        match sock.try_send_to(&o.bytes, o.to.addr) {
                            Ok(_) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                                let sock = sock.clone();
                                tokio::spawn(async move {
                                    let _ = sock.send_to(&o.bytes, o.to.addr).await;
                                });
                            }
                            Err(e) => {
                                tracing::debug!(to = %o.to.addr, error = %e, "udp send failed");
                                failed.extend(o.client);
                            }
                        }
                    }
                    Transport::Tcp | Transport::Tls => {
                        if let Some(h) = self.conns.find(&o.to) {
                            if h.tx.try_send(o.bytes.clone()).is_ok() {
                                continue;
                            }
                        }
                        self.connect_and_send(o);
                    }
                }
            }
            if !failed.is_empty() {
                let now = Instant::now();
                let mut core = lock(&self.core);
                for key in failed {
                    core.on_transport_error(&key, now, &mut out);
                }
            }
        }
    }

    /// Opens a stream connection to `o.to` and sends `o.bytes` on it; a
    /// failure is reported to the core as a transport error.
    fn connect_and_send(&self, o: Outgoing) {
        let Some(me) = self.me.upgrade() else { return };
        tokio::spawn(async move {
            let to = o.to;
            let connect = tokio::time::timeout(
                Duration::from_secs(2),
                tokio::net::TcpStream::connect(to.addr),
            )
            .await;
            match (connect, to.transport) {
                (Ok(Ok(s)), Transport::Tcp) => {
                    let _ = s.set_nodelay(true);
                    me.serve_stream(s, to.side, Transport::Tcp, to.addr, Some(o.bytes))
                        .await;
                }
                (Ok(Ok(s)), Transport::Tls) => {
                    let Some(connector) = me.tls_of(to.side).connector.clone() else {
                        tracing::warn!(side = to.side.as_str(), to = %to.addr, "TLS target but no tls_ca configured on this side; failing over");
                        me.transport_failed(o.client);
                        return;
                    };
                    // The certificate must name the target (a mismatch is a
                    // failed handshake, reason name_mismatch): the host name
                    // of a target resolved by DNS (RFC 5922 §4.1, sent as
                    // SNI too), else the address in an IP subjectAltName.
                    use tokio_rustls::rustls::pki_types::ServerName;
                    let name = me
                        .dns
                        .tls_name(to.side, to.addr)
                        .and_then(|n| ServerName::try_from(n).ok())
                        .unwrap_or_else(|| ServerName::IpAddress(to.addr.ip().into()));
                    match tokio::time::timeout(Duration::from_secs(2), connector.connect(name, s))
                        .await
                    {
                        Ok(Ok(tls)) => {
                            me.serve_stream(tls, to.side, Transport::Tls, to.addr, Some(o.bytes))
                                .await;
                        }
                        Ok(Err(e)) => {
                            let why = HandshakeFailure::of(&e);
                            me.metrics
                                .tls
                                .handshake_failed(to.side, TlsDirection::Outbound, why);
                            tracing::warn!(side = to.side.as_str(), to = %to.addr, reason = why.as_str(), error = %e, "TLS handshake with target failed; failing over");
                            me.transport_failed(o.client);
                        }
                        Err(_) => {
                            me.metrics.tls.handshake_failed(
                                to.side,
                                TlsDirection::Outbound,
                                HandshakeFailure::Io,
                            );
                            tracing::warn!(side = to.side.as_str(), to = %to.addr, "TLS handshake with target not finished in 2 s; failing over");
                            me.transport_failed(o.client);
                        }
                    }
                }
                _ => {
                    tracing::info!(to = %to.addr, transport = ?to.transport, "connect failed");
                    me.transport_failed(o.client);
                }
            }
        });
    }

    /// Runs one stream connection to its end, counted in the metrics.
    async fn serve_stream<S>(
        self: &Arc<Self>,
        s: S,
        side: Side,
        transport: Transport,
        remote: SocketAddr,
        first: Option<Bytes>,
    ) where
        S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + 'static,
    {
        self.metrics.tcp_connection_opened();
        let sink: Arc<dyn Sink> = self.clone();
        let id = StreamId {
            side,
            transport,
            remote,
        };
        // Framing takes the limits in force when the connection opens
        // (after any reload), as the pipeline's parse phase does.
        let settings = StreamSettings {
            limits: self.phases().limits,
            ..self.stream_settings
        };
        let closed = stream::serve(s, id, self.conns.clone(), sink, settings, first).await;
        self.metrics.tcp_connection_closed();
        if let Some(end) = ConnectionEnd::of(closed) {
            self.metrics.exhaustion.connection_end(side, end);
        }
    }

    fn transport_failed(&self, client: Option<Bytes>) {
        let Some(key) = client else { return };
        let mut out = Vec::new();
        let next = {
            let mut core = lock(&self.core);
            core.on_transport_error(&key, Instant::now(), &mut out);
            core.next_deadline()
        };
        self.dispatch(out);
        self.rearm(next);
    }

    /// Drives the core's timers: sleeps until the earliest deadline or until
    /// a message arms an earlier one.
    pub(super) async fn timer_loop(self: Arc<Self>) {
        loop {
            let next = *lock(&self.armed);
            match next {
                Some(at) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(at.into()) => {}
                        _ = self.timer_wake.notified() => continue,
                    }
                }
                None => {
                    self.timer_wake.notified().await;
                    continue;
                }
            }
            let now = Instant::now();
            let mut out = Vec::new();
            let next = {
                let mut core = lock(&self.core);
                core.on_timer(now, &mut out);
                core.next_deadline()
            };
            *lock(&self.armed) = next;
            self.dispatch(out);
        }
    }

    /// The next connection on `l` from a source the side's ACL admits and
    /// that is within its connection caps (`counter`), with its slot:
    /// others are closed at once, before a TLS handshake or a byte is read
    /// (counted as ACL refusals, or in `callgate_connections_closed_total`
    /// by the cap reached). An accept error (EMFILE, ENFILE, ENOBUFS)
    /// backs off, 10 ms doubling to 1 s, instead of spinning.
    async fn accept_admitted(
        &self,
        side: Side,
        l: &TcpListener,
        counter: &Arc<ConnectionCounter>,
    ) -> (tokio::net::TcpStream, SocketAddr, ConnectionSlot) {
        let mut backoff = Duration::from_millis(10);
        loop {
            match l.accept().await {
                Ok((s, remote)) => {
                    backoff = Duration::from_millis(10);
                    if !lock(&self.admission[side.index()]).admits(remote.ip()) {
                        self.metrics
                            .refused(side, crate::api::metrics::Refusal::Acl);
                        tracing::debug!(side = side.as_str(), from = %remote, "connection from outside the ACL closed");
                        continue;
                    }
                    match counter.admit(remote.ip()) {
                        Ok(slot) => return (s, remote, slot),
                        Err(cap) => {
                            self.metrics.exhaustion.connection_end(side, cap.into());
                            tracing::info!(side = side.as_str(), from = %remote, cap = ?cap, "connection over its cap closed");
                        }
                    }
                }
                Err(e) => {
                    tracing::warn!(side = side.as_str(), error = %e, backoff_ms = backoff.as_millis() as u64, "accept failed; backing off");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                }
            }
        }
    }

    /// Accepts TCP connections on `l` for `side`, each served as a stream
    /// while it holds its slot in `counter`.
    pub(super) async fn accept_tcp(
        self: Arc<Self>,
        side: Side,
        l: TcpListener,
        counter: Arc<ConnectionCounter>,
    ) {
        loop {
            let (s, remote, slot) = self.accept_admitted(side, &l, &counter).await;
            let _ = s.set_nodelay(true);
            let g = self.clone();
            tokio::spawn(async move {
                g.serve_stream(s, side, Transport::Tcp, remote, None).await;
                drop(slot);
            });
        }
    }

    /// Accepts TLS connections on `l` for `side`: the handshake within
    /// `limits.tls_handshake_secs` of the accept (a client that opens a
    /// connection and never finishes its handshake holds a slot only that
    /// long), then each served as a stream while it holds its slot. Each
    /// handshake uses the side's TLS in force at its accept, so a reload
    /// (new certificate, new client CAs) applies to the next connection
    /// while established ones keep their session.
    pub(super) async fn accept_tls(
        self: Arc<Self>,
        side: Side,
        l: TcpListener,
        counter: Arc<ConnectionCounter>,
        handshake: Duration,
    ) {
        loop {
            let (s, remote, slot) = self.accept_admitted(side, &l, &counter).await;
            let _ = s.set_nodelay(true);
            let g = self.clone();
            let Some(acceptor) = self.tls_of(side).acceptor.clone() else {
                continue;
            };
            tokio::spawn(async move {
                let tls = match tokio::time::timeout(handshake, acceptor.accept(s)).await {
                    Ok(Ok(tls)) => tls,
                    Ok(Err(e)) => {
                        let why = HandshakeFailure::of(&e);
                        g.metrics
                            .exhaustion
                            .connection_end(side, ConnectionEnd::HandshakeFailed);
                        g.metrics
                            .tls
                            .handshake_failed(side, TlsDirection::Inbound, why);
                        tracing::info!(side = side.as_str(), %remote, reason = why.as_str(), error = %e, "TLS handshake failed");
                        return;
                    }
                    Err(_) => {
                        g.metrics
                            .exhaustion
                            .connection_end(side, ConnectionEnd::HandshakeTimeout);
                        tracing::info!(%remote, secs = handshake.as_secs(), "TLS handshake not finished in time; closed");
                        return;
                    }
                };
                g.serve_stream(tls, side, Transport::Tls, remote, None)
                    .await;
                drop(slot);
            });
        }
    }
}
