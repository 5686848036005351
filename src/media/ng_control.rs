//! The anchor driven over rtpengine's ng protocol: Kamailio's or OpenSIPS's
//! rtpengine module (or a test harness) sends `offer`, `answer`, `delete`
//! and `query`, and callgate's relay does what rtpengine would.

use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::anchor::{AnchorError, AnchorOptions, CallReport, MediaAnchor, Transport};
use super::ng::{
    Counters, DeleteRequest, Ice, LegReport, MediaControl, MediaReport, NgError, OfferRequest,
    QueryReport, QueryRequest, StreamKind, StreamReport,
};
use super::relay::RelayError;
use super::stats::StreamStats;

fn ng_error(e: AnchorError) -> NgError {
    match e {
        AnchorError::UnknownCall(_) | AnchorError::NoOffer(_) => NgError::UnknownCall,
        AnchorError::Sdp(e) => NgError::BadSdp(e.to_string()),
        AnchorError::Rewrite(e) => NgError::BadSdp(e.to_string()),
        AnchorError::Relay(RelayError::NoPorts { .. }) | AnchorError::SourceCap { .. } => {
            NgError::OutOfPorts
        }
        AnchorError::TooManyStreams { .. } => NgError::BadSdp(e.to_string()),
        AnchorError::Relay(e) => NgError::Other(e.to_string()),
        AnchorError::Srtp(e) => NgError::Other(e.to_string()),
    }
}

/// ICE attributes are removed when the request says so (`ICE=remove`,
/// `force`, `default`): the relay offers no candidates of its own.
/// `transport-protocol` converts between RTP and SDES-SRTP as rtpengine
/// does: `RTP/AVP` (or `RTP/AVPF`) terminates SRTP, `RTP/SAVP` (or
/// `RTP/SAVPF`) encrypts plain RTP; anything else passes as offered.
fn options(req: &OfferRequest) -> AnchorOptions {
    AnchorOptions {
        strip_ice: matches!(req.flags.ice, Some(Ice::Remove | Ice::Force | Ice::Default)),
        transport: match req.flags.transport_protocol.as_deref() {
            Some("RTP/AVP" | "RTP/AVPF") => Transport::Rtp,
            Some("RTP/SAVP" | "RTP/SAVPF") => Transport::Srtp,
            _ => Transport::AsOffered,
        },
        ..AnchorOptions::default()
    }
}

fn counters(s: &StreamStats, rtcp: bool) -> Counters {
    let errors = s.dropped_source + s.dropped_send + s.malformed + s.srtp_failed;
    if rtcp {
        Counters {
            packets: s.rtcp_packets,
            bytes: s.rtcp_bytes,
            errors: 0,
        }
    } else {
        Counters {
            packets: s.packets,
            bytes: s.bytes,
            errors,
        }
    }
}

/// The anchor's report in the shape of rtpengine's `query` reply.
fn query_report(r: &CallReport) -> QueryReport {
    let created = SystemTime::now()
        .checked_sub(Duration::from_secs(r.age_secs))
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let legs = (0..2)
        .map(|leg| {
            let medias = r
                .streams
                .iter()
                .zip(&r.details)
                .map(|((index, stats), d)| {
                    let s = if leg == 0 { &stats.a } else { &stats.b };
                    let (rtp_port, rtcp_port) = d.ports[leg];
                    let remote = d.remotes[leg];
                    let mut streams = vec![StreamReport {
                        kind: StreamKind::Rtp,
                        local_port: Some(rtp_port),
                        endpoint: remote.map(|r| r.rtp),
                        advertised_endpoint: remote.map(|r| r.rtp),
                        last_packet: None,
                        stats: counters(s, false),
                    }];
                    if rtcp_port != rtp_port {
                        streams.push(StreamReport {
                            kind: StreamKind::Rtcp,
                            local_port: Some(rtcp_port),
                            endpoint: remote.and_then(|r| r.rtcp),
                            advertised_endpoint: remote.and_then(|r| r.rtcp),
                            last_packet: None,
                            stats: counters(s, true),
                        });
                    }
                    MediaReport {
                        index: *index as u32 + 1,
                        media_type: d.media_type.clone(),
                        protocol: d.proto.clone(),
                        streams,
                    }
                })
                .collect();
            LegReport {
                tag: r.tags[leg].clone(),
                label: None,
                created,
                in_dialogue_with: Some(r.tags[1 - leg].clone()).filter(|t| !t.is_empty()),
                medias,
            }
        })
        .collect();
    QueryReport {
        created,
        last_signal: created,
        legs,
    }
}

impl MediaControl for MediaAnchor {
    fn offer(&self, req: &OfferRequest) -> Result<Bytes, NgError> {
        MediaAnchor::offer(self, &req.call_id, &req.from_tag, &req.sdp, options(req))
            .map(Bytes::from)
            .map_err(ng_error)
    }

    fn answer(&self, req: &OfferRequest) -> Result<Bytes, NgError> {
        MediaAnchor::answer(
            self,
            &req.call_id,
            req.to_tag.as_deref(),
            &req.sdp,
            options(req),
        )
        .map(Bytes::from)
        .map_err(ng_error)
    }

    fn delete(&self, req: &DeleteRequest) -> Result<Option<QueryReport>, NgError> {
        MediaAnchor::delete(self, &req.call_id)
            .map(|r| Some(query_report(&r)))
            .map_err(ng_error)
    }

    fn query(&self, req: &QueryRequest) -> Result<QueryReport, NgError> {
        MediaAnchor::query(self, &req.call_id)
            .map(|r| query_report(&r))
            .map_err(ng_error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::media::ng::{OfferFlags, OfferRequest};
    use crate::media::relay::{Relay, RelayConfig};

    fn request(call: &str, sdp: &str, transport: Option<&str>) -> OfferRequest {
        OfferRequest {
            call_id: call.into(),
            from_tag: "a".into(),
            to_tag: None,
            sdp: Bytes::from(sdp.to_owned()),
            flags: OfferFlags {
                transport_protocol: transport.map(str::to_owned),
                ..OfferFlags::default()
            },
        }
    }

    /// `transport-protocol` converts as rtpengine does: `RTP/AVP`
    /// terminates an SDES offer, `RTP/SAVP` keys a plain one, anything
    /// else passes as offered.
    #[test]
    fn the_transport_protocol_flag_converts_between_rtp_and_srtp() {
        let relay = Relay::start(RelayConfig {
            port_min: 40_700,
            port_max: 40_799,
            ..RelayConfig::default()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        let anchor = MediaAnchor::new(relay, std::net::IpAddr::from([127, 0, 0, 1]));
        let plain = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 5004 RTP/AVP 0\r\n";
        let sdes = plain.replace("RTP/AVP 0\r\n", "RTP/SAVP 0\r\na=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:WVNfX19zZW1jdGwgKCkgewkyMjA7fQp9CnVubGVz\r\n");
        let offer = |call: &str, sdp: &str, t: Option<&str>| {
            let out = MediaControl::offer(&anchor, &request(call, sdp, t))
                .unwrap_or_else(|e| panic!("{e:?}"));
            String::from_utf8_lossy(&out).into_owned()
        };
        let out = offer("t1", &sdes, Some("RTP/AVP"));
        assert!(
            out.contains(" RTP/AVP 0") && !out.contains("a=crypto"),
            "{out}"
        );
        let out = offer("t2", plain, Some("RTP/SAVP"));
        assert!(
            out.contains(" RTP/SAVP 0")
                && out.contains("a=crypto:1 AES_CM_128_HMAC_SHA1_80 inline:"),
            "{out}"
        );
        let out = offer("t3", &sdes, Some("UDP/TLS/RTP/SAVP"));
        assert!(
            out.contains(" RTP/SAVP 0") && out.contains("inline:WVNf"),
            "{out}"
        );
        let out = offer("t4", plain, None);
        assert!(
            out.contains(" RTP/AVP 0") && !out.contains("a=crypto"),
            "{out}"
        );
    }
}
