//! The ng control protocol (rtpengine's): bencode decoding and command
//! parsing of datagrams from the signalling proxies allowed to drive the
//! relay.

use bytes::Bytes;

use crate::media::ng::bencode;
use crate::media::ng::command::parse_datagram;

/// Decodes `data` as bencode and as a whole ng datagram (cookie, then a
/// command). What decodes must re-encode to bencode that decodes again and
/// encodes to the same bytes: the encoding is canonical (dictionary keys
/// sorted, BEP 3), while decoding keeps the keys in arrival order, so the
/// values themselves may differ in key order only.
pub fn exercise(data: &[u8]) -> usize {
    let bytes = Bytes::copy_from_slice(data);
    let mut sum = 0;
    if let Ok(v) = bencode::decode(&bytes) {
        let encoded = Bytes::from(v.to_vec());
        sum += encoded.len();
        let again = bencode::decode(&encoded)
            .unwrap_or_else(|e| panic!("our own encoding must decode: {e}"));
        assert_eq!(
            again.to_vec(),
            encoded,
            "bencode encoding must be canonical"
        );
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
