//! The pcap reader behind `callgate replay` (`sip::pcap`): captures come
//! from elsewhere and may be truncated or crafted.

/// Reads every SIP payload of `data` as a capture file.
pub fn exercise(data: &[u8]) -> usize {
    match crate::sip::pcap::payloads(data) {
        Ok(p) => p.iter().map(|x| x.data.len()).sum::<usize>() + p.len(),
        Err(e) => e.to_string().len(),
    }
}
