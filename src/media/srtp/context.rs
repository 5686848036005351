//! Protecting and unprotecting packets of one direction (RFC 3711 §3.3,
//! §3.4): a context holds the session keys derived from one master key and
//! the index state of each SSRC it has seen.

use aws_lc_rs::hmac;

use super::keys::{aes_cm, MasterKey, SessionKeys};
use super::replay::StreamIndex;
use super::suite::CryptoSuite;
use super::SrtpError;
use crate::media::rtp::RtpHeader;

/// Most SSRCs a context tracks; beyond this the oldest is forgotten (a
/// call has one or two per direction).
const MAX_STREAMS: usize = 16;

/// The E flag of the SRTCP index word: the packet is encrypted (§3.4).
const E_FLAG: u32 = 0x8000_0000;

/// Bytes of the SRTCP index word (E flag and 31-bit index).
const RTCP_INDEX_LEN: usize = 4;

/// SSRC-keyed state, bounded.
struct Streams<T>(Vec<(u32, T)>);

impl<T> Default for Streams<T> {
    fn default() -> Self {
        Streams(Vec::new())
    }
}

impl<T: Copy> Streams<T> {
    fn get(&self, ssrc: u32) -> Option<T> {
        self.0.iter().find(|(s, _)| *s == ssrc).map(|(_, t)| *t)
    }

    fn set(&mut self, ssrc: u32, value: T) {
        if let Some(slot) = self.0.iter_mut().find(|(s, _)| *s == ssrc) {
            slot.1 = value;
            return;
        }
        if self.0.len() == MAX_STREAMS {
            self.0.remove(0);
        }
        self.0.push((ssrc, value));
    }

    /// Whether `ssrc` may be sealed: known, or room for one more. A sealing
    /// context never forgets a stream — its index would start over and a
    /// keystream be used twice (RFC 3711 §9.1).
    fn may_seal(&self, ssrc: u32) -> Result<(), SrtpError> {
        if self.0.len() < MAX_STREAMS || self.0.iter().any(|(s, _)| *s == ssrc) {
            Ok(())
        } else {
            Err(SrtpError::TooManyStreams(MAX_STREAMS))
        }
    }
}

/// One direction of SRTP and SRTCP under one master key: either what a
/// leg sends (unprotect) or what callgate sends to a leg (protect).
pub struct SrtpContext {
    suite: CryptoSuite,
    rtp: SessionKeys,
    rtcp: SessionKeys,
    rtp_streams: Streams<StreamIndex>,
    rtcp_streams: Streams<StreamIndex>,
    /// The SRTCP index of the next packet protected, per SSRC.
    rtcp_next: Streams<u32>,
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

/// Equal without an early exit, so the comparison time says nothing about
/// where a forged tag first differs.
fn tags_equal(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl SrtpContext {
    pub fn new(suite: CryptoSuite, master: &MasterKey) -> Result<SrtpContext, SrtpError> {
        Ok(SrtpContext {
            suite,
            rtp: SessionKeys::derive(master, false)?,
            rtcp: SessionKeys::derive(master, true)?,
            rtp_streams: Streams::default(),
            rtcp_streams: Streams::default(),
            rtcp_next: Streams::default(),
        })
    }

    pub fn suite(&self) -> CryptoSuite {
        self.suite
    }

    /// An RTP packet's header length, SSRC and index, with its stream's
    /// state (a new stream starts at the packet, RFC 3711 §3.3.1).
    fn rtp_index(&self, packet: &[u8]) -> Result<(usize, u32, u64, StreamIndex), SrtpError> {
        let rtp = RtpHeader::parse(packet).ok_or(match packet.first() {
            Some(b) if b >> 6 != 2 => SrtpError::Version,
            _ => SrtpError::Short("RTP"),
        })?;
        let header = rtp.header_len().ok_or(SrtpError::Short("RTP"))?;
        let (seq, ssrc) = (rtp.sequence(), rtp.ssrc());
        let stream = self
            .rtp_streams
            .get(ssrc)
            .unwrap_or_else(|| StreamIndex::starting_at(seq));
        Ok((header, ssrc, stream.estimate(seq)?, stream))
    }

    /// The RTP tag: HMAC-SHA1 over the packet and the ROC (§4.2), cut to
    /// the suite's length.
    fn rtp_tag(&self, authenticated: &[u8], roc: u32) -> hmac::Tag {
        let mut ctx = hmac::Context::with_key(&self.rtp.auth);
        ctx.update(authenticated);
        ctx.update(&roc.to_be_bytes());
        ctx.sign()
    }

    /// Encrypts the RTP packet `buf[..len]` in place and appends its tag;
    /// returns the SRTP packet's length. `buf` needs room for the tag.
    pub fn protect_rtp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let tag_len = self.suite.rtp_tag_len();
        if buf.len() < len + tag_len {
            return Err(SrtpError::NoRoom(tag_len));
        }
        let (header, ssrc, index, mut stream) = self.rtp_index(&buf[..len])?;
        // An index sealed once is never sealed again (the same keystream
        // over two payloads, RFC 3711 §9.1): a repeated or too old sequence
        // number from the plain side is refused.
        self.rtp_streams.may_seal(ssrc)?;
        stream.check(index)?;
        stream.accept(index);
        self.rtp_streams.set(ssrc, stream);
        aes_cm(
            &self.rtp.cipher,
            self.rtp.iv(ssrc, index),
            &mut buf[header..len],
        )?;
        let tag = self.rtp_tag(&buf[..len], StreamIndex::roc_of(index));
        buf[len..len + tag_len].copy_from_slice(&tag.as_ref()[..tag_len]);
        Ok(len + tag_len)
    }

    /// Checks and decrypts the SRTP packet `buf` in place; returns the RTP
    /// packet's length (the tag removed). A forged, replayed or too old
    /// packet is refused and changes nothing.
    pub fn unprotect_rtp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let tag_len = self.suite.rtp_tag_len();
        let len = buf
            .len()
            .checked_sub(tag_len)
            .ok_or(SrtpError::Short("SRTP"))?;
        let (header, ssrc, index, mut stream) = self.rtp_index(&buf[..len])?;
        stream.check(index)?;
        let tag = self.rtp_tag(&buf[..len], StreamIndex::roc_of(index));
        if !tags_equal(&tag.as_ref()[..tag_len], &buf[len..]) {
            return Err(SrtpError::Auth);
        }
        aes_cm(
            &self.rtp.cipher,
            self.rtp.iv(ssrc, index),
            &mut buf[header..len],
        )?;
        stream.accept(index);
        self.rtp_streams.set(ssrc, stream);
        Ok(len)
    }

    /// Encrypts the compound RTCP packet `buf[..len]` in place after its
    /// first 8 bytes, appends the E flag with the SRTCP index and the tag
    /// (§3.4); returns the SRTCP packet's length.
    pub fn protect_rtcp(&mut self, buf: &mut [u8], len: usize) -> Result<usize, SrtpError> {
        let tag_len = self.suite.rtcp_tag_len();
        if len < 8 {
            return Err(SrtpError::Short("RTCP"));
        }
        if buf.len() < len + RTCP_INDEX_LEN + tag_len {
            return Err(SrtpError::NoRoom(RTCP_INDEX_LEN + tag_len));
        }
        let ssrc = be32(&buf[4..8]);
        self.rtcp_next.may_seal(ssrc)?;
        let index = self.rtcp_next.get(ssrc).unwrap_or(0);
        self.rtcp_next.set(ssrc, (index + 1) & !E_FLAG);
        aes_cm(
            &self.rtcp.cipher,
            self.rtcp.iv(ssrc, u64::from(index)),
            &mut buf[8..len],
        )?;
        buf[len..len + RTCP_INDEX_LEN].copy_from_slice(&(E_FLAG | index).to_be_bytes());
        let end = len + RTCP_INDEX_LEN;
        let tag = hmac::sign(&self.rtcp.auth, &buf[..end]);
        buf[end..end + tag_len].copy_from_slice(&tag.as_ref()[..tag_len]);
        Ok(end + tag_len)
    }

    /// Checks and decrypts the SRTCP packet `buf` in place; returns the
    /// RTCP packet's length.
    pub fn unprotect_rtcp(&mut self, buf: &mut [u8]) -> Result<usize, SrtpError> {
        let tag_len = self.suite.rtcp_tag_len();
        if buf.len() < 8 + RTCP_INDEX_LEN + tag_len {
            return Err(SrtpError::Short("SRTCP"));
        }
        let end = buf.len() - tag_len;
        let len = end - RTCP_INDEX_LEN;
        let word = be32(&buf[len..end]);
        let index = u64::from(word & !E_FLAG);
        let ssrc = be32(&buf[4..8]);
        let mut stream = self
            .rtcp_streams
            .get(ssrc)
            .unwrap_or_else(|| StreamIndex::at_index(index));
        stream.check(index)?;
        let tag = hmac::sign(&self.rtcp.auth, &buf[..end]);
        if !tags_equal(&tag.as_ref()[..tag_len], &buf[end..]) {
            return Err(SrtpError::Auth);
        }
        if word & E_FLAG != 0 {
            aes_cm(
                &self.rtcp.cipher,
                self.rtcp.iv(ssrc, index),
                &mut buf[8..len],
            )?;
        }
        stream.accept(index);
        self.rtcp_streams.set(ssrc, stream);
        Ok(len)
    }
}
