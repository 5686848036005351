//! The ng control protocol (rtpengine's): bencode decoding and command
//! parsing of datagrams from the signalling proxies allowed to drive the
//! relay.

use bytes::Bytes;

use crate::media::ng::bencode;
use crate::media::ng::command::parse_datagram;

/// Decodes `data` as bencode (what decodes must re-encode to the same
/// value) and as a whole ng datagram (cookie, then a command).
pub fn exercise(data: &[u8]) -> usize {
    let bytes = Bytes::copy_from_slice(data);
    let mut sum = 0;
    if let Ok(v) = bencode::decode(&bytes) {
        let encoded = Bytes::from(v.to_vec());
        sum += encoded.len();
        let again = bencode::decode(&encoded);
        assert_eq!(again.as_ref().ok(), Some(&v), "bencode must round-trip");
    }
    if let Some((cookie, request)) = parse_datagram(&bytes) {
        sum += cookie.len();
        if let Ok(r) = request {
            sum += r.call_id().map_or(0, str::len);
            sum += r.command().as_str().len();
        }
    }
    sum
}
