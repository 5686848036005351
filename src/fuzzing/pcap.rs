//! The capture reader behind `callgate replay --pcap` (`capture`):
//! captures come from elsewhere and may be truncated or crafted.

use crate::capture;
use crate::sip::message::Limits;

/// Reads `data` as a capture file and frames its SIP messages.
pub fn exercise(data: &[u8]) -> usize {
    match capture::read(data) {
        Ok(c) => {
            let messages = capture::sip::messages(&c.payloads, &Limits::default());
            messages.iter().map(|x| x.data.len()).sum::<usize>()
                + c.payloads.len()
                + c.stats.damage.map_or(0, |d| d.len())
        }
        Err(e) => e.to_string().len(),
    }
}
