//! RESP2 replies from Redis (`state::resp`): a compromised or
//! impersonated Redis writes them.

use crate::state::resp::parse;

/// Parses consecutive replies from `data` until it fails or needs more.
pub fn exercise(data: &[u8]) -> usize {
    let mut at = 0;
    let mut sum = 0;
    while let Ok(Some((reply, used))) = parse(&data[at..]) {
        assert!(
            used > 0 && at + used <= data.len(),
            "progress within bounds"
        );
        at += used;
        sum += usize::from(matches!(reply, crate::state::resp::Reply::Array(_)));
    }
    sum + at
}
