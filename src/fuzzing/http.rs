//! The x5u HTTP/1.1 response reader (`stir::fetch`, hyper's client under
//! our status, size and cache rules): whoever serves an `x5u` URL writes
//! every byte it reads.

/// Reads `data` as a whole response followed by the connection's end.
pub fn exercise(data: &[u8]) -> usize {
    match crate::stir::fetch::read_response(data, 64 * 1024) {
        Ok(f) => {
            assert!(f.body.len() <= 64 * 1024, "the size limit must hold");
            f.body.len() + f.max_age.map_or(0, |d| d.as_secs() as usize)
        }
        Err(e) => e.to_string().len(),
    }
}
