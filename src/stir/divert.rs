//! Diverted calls (RFC 8946): when a call is retargeted, each diverting
//! service adds a `div` PASSporT saying "the call from `orig`, originally
//! for `div`, now goes to `dest`". A verifier whose SIP request no longer
//! names the SHAKEN PASSporT's `dest` follows these PASSporTs as a chain
//! from that original destination to the current one (RFC 8946 §6).
//!
//! Pure functions over decoded PASSporTs; the signatures and certificates
//! of the hops used are checked by the verification service.

use super::passport::{canonical_tn, Passport};

/// The original destination (`div.tn`) and the new ones (`dest.tn`) of a
/// `div` PASSporT, canonical.
fn hop(p: &Passport) -> Option<(String, Vec<String>)> {
    let from = canonical_tn(p.claims.div.as_ref()?.tn.as_deref()?);
    let to: Vec<String> = p.claims.dest.tn.iter().map(|t| canonical_tn(t)).collect();
    (!from.is_empty() && !to.is_empty()).then_some((from, to))
}

/// Every number the call may have been for before its diversions: the
/// SIP request's called numbers and, transitively, the `div.tn` of each
/// `div` PASSporT whose `dest` is one of them. The SHAKEN PASSporT's `dest`
/// must be one of these.
pub fn reachable(sip_dest: &[&str], divs: &[&Passport]) -> Vec<String> {
    let mut out: Vec<String> = sip_dest.iter().map(|d| canonical_tn(d)).collect();
    // Each pass adds at least one number or stops: bounded by divs.len().
    for _ in 0..divs.len() {
        let before = out.len();
        for (from, to) in divs.iter().filter_map(|p| hop(p)) {
            if to.iter().any(|t| out.contains(t)) && !out.contains(&from) {
                out.push(from);
            }
        }
        if out.len() == before {
            break;
        }
    }
    out
}

/// The `div` PASSporTs (indices into `divs`) leading from the SHAKEN
/// `original` destinations to one of the SIP request's, in diversion
/// order. Empty when the call was not diverted (an original destination is
/// already in the request); `None` when no chain connects them.
pub fn path(original: &[String], sip_dest: &[&str], divs: &[&Passport]) -> Option<Vec<usize>> {
    let sip: Vec<String> = sip_dest.iter().map(|d| canonical_tn(d)).collect();
    let original: Vec<String> = original.iter().map(|t| canonical_tn(t)).collect();
    if original.iter().any(|o| sip.contains(o)) {
        return Some(vec![]);
    }
    let hops: Vec<Option<(String, Vec<String>)>> = divs.iter().map(|p| hop(p)).collect();
    // Breadth-first from the original destinations; each PASSporT used once.
    let mut frontier: Vec<(String, Vec<usize>)> =
        original.iter().map(|o| (o.clone(), vec![])).collect();
    for _ in 0..divs.len() {
        let mut next = Vec::new();
        for (at, used) in &frontier {
            for (i, h) in hops.iter().enumerate() {
                let Some((from, to)) = h else { continue };
                if from != at || used.contains(&i) {
                    continue;
                }
                let mut chain = used.clone();
                chain.push(i);
                if to.iter().any(|t| sip.contains(t)) {
                    return Some(chain);
                }
                next.extend(to.iter().map(|t| (t.clone(), chain.clone())));
            }
        }
        if next.is_empty() {
            break;
        }
        frontier = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stir::passport::{Claims, Dest, Div, Header};

    fn div(from: &str, to: &str) -> Passport {
        Passport {
            header: Header::default(),
            claims: Claims {
                dest: Dest {
                    tn: vec![to.into()],
                    uri: vec![],
                },
                div: Some(Div {
                    tn: Some(from.into()),
                    uri: None,
                }),
                ..Claims::default()
            },
            signing_input: String::new(),
            signature: vec![],
        }
    }

    #[test]
    fn chains_from_the_original_destination_to_the_current_one() {
        let a = div("15550100", "15550200");
        let b = div("15550200", "15550300");
        let stray = div("15559999", "15550300");
        let divs = [&stray, &b, &a];
        let orig = ["15550100".to_owned()];
        assert_eq!(path(&orig, &["+1 555 0100"], &divs), Some(vec![]));
        assert_eq!(path(&orig, &["15550300"], &divs), Some(vec![2, 1]));
        assert_eq!(path(&orig, &["15550400"], &divs), None);
        let r = reachable(&["15550300"], &divs);
        assert!(r.contains(&"15550100".to_owned()) && r.contains(&"15559999".to_owned()));
        // A cycle does not loop.
        let back = div("15550300", "15550100");
        assert_eq!(path(&orig, &["15550400"], &[&a, &b, &back]), None);
    }
}
