//! Diverted calls (RFC 8946): when a call is retargeted, each diverting
//! service adds a `div` PASSporT saying "the call from `orig`, originally
//! for `div`, now goes to `dest`". A verifier whose SIP request no longer
//! names the SHAKEN PASSporT's `dest` follows these PASSporTs as a chain
//! from that original destination to the current one (RFC 8946 §6).
//!
//! Pure functions over decoded PASSporTs; the signatures and certificates
//! of the hops used are checked by the verification service.
//!
//! The PASSporTs are the caller's to choose, and this runs on the
//! signalling thread, so the work is bounded (issue 13: seven `div`
//! PASSporTs diverting a number to itself a few times over made the old
//! search enumerate millions of partial chains): at most
//! [`MAX_DIV_PASSPORTS`] are followed, a `dest` list is deduplicated and a
//! PASSporT naming more than [`MAX_DIV_DEST_TNS`] numbers is not followed,
//! and the search visits each number once (breadth first, so the chain
//! found is a shortest one, at most [`MAX_DIV_HOPS`] long). The cost is
//! linear in the numbers named: at most 5 × 10 of them.

use std::collections::{HashMap, HashSet, VecDeque};

use super::passport::{canonical_tn, Passport};

/// `div` PASSporTs followed per call; others are not used (a call is
/// rarely retargeted more than twice).
pub const MAX_DIV_PASSPORTS: usize = 5;
/// Distinct numbers a `div` PASSporT's `dest` may name (RFC 8946 §5
/// expects one); a PASSporT naming more is not followed.
pub const MAX_DIV_DEST_TNS: usize = 10;
/// Longest chain of diversions followed.
pub const MAX_DIV_HOPS: usize = MAX_DIV_PASSPORTS;

/// One usable diversion: the original destination (`div.tn`) and the new
/// ones (`dest.tn`), canonical and without duplicates.
struct Hop {
    from: String,
    to: Vec<String>,
}

/// The hop of a `div` PASSporT, if it is usable within the bounds.
fn hop(p: &Passport) -> Option<Hop> {
    let from = canonical_tn(p.claims.div.as_ref()?.tn.as_deref()?);
    let mut to: Vec<String> = Vec::new();
    for t in &p.claims.dest.tn {
        let t = canonical_tn(t);
        if !to.contains(&t) {
            if to.len() == MAX_DIV_DEST_TNS {
                return None;
            }
            to.push(t);
        }
    }
    (!from.is_empty() && !to.is_empty()).then_some(Hop { from, to })
}

/// The usable hops of the first [`MAX_DIV_PASSPORTS`] PASSporTs, with
/// their index in `divs`.
fn hops(divs: &[&Passport]) -> Vec<(usize, Hop)> {
    divs.iter()
        .take(MAX_DIV_PASSPORTS)
        .enumerate()
        .filter_map(|(i, p)| Some((i, hop(p)?)))
        .collect()
}

/// Whether some of `divs` are beyond the bounds and not followed (more
/// than [`MAX_DIV_PASSPORTS`], or a `dest` list too long).
pub fn over_bounds(divs: &[&Passport]) -> bool {
    divs.len() > MAX_DIV_PASSPORTS
        || divs.iter().any(|p| {
            let mut seen: Vec<String> = Vec::new();
            p.claims.dest.tn.iter().any(|t| {
                let t = canonical_tn(t);
                if !seen.contains(&t) {
                    seen.push(t);
                }
                seen.len() > MAX_DIV_DEST_TNS
            })
        })
}

/// Every number the call may have been for before its diversions: the
/// SIP request's called numbers and, transitively, the `div.tn` of each
/// `div` PASSporT whose `dest` is one of them. The SHAKEN PASSporT's `dest`
/// must be one of these.
pub fn reachable(sip_dest: &[&str], divs: &[&Passport]) -> Vec<String> {
    let hops = hops(divs);
    let mut out: Vec<String> = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    for d in sip_dest {
        let d = canonical_tn(d);
        if seen.insert(d.clone()) {
            out.push(d);
        }
    }
    // Each pass adds at least one number or stops: at most hops.len() passes
    // over at most MAX_DIV_PASSPORTS × MAX_DIV_DEST_TNS numbers.
    for _ in 0..hops.len() {
        let before = out.len();
        for (_, h) in &hops {
            if !seen.contains(&h.from) && h.to.iter().any(|t| seen.contains(t)) {
                seen.insert(h.from.clone());
                out.push(h.from.clone());
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
/// already in the request); `None` when no chain of at most
/// [`MAX_DIV_HOPS`] connects them.
pub fn path(original: &[String], sip_dest: &[&str], divs: &[&Passport]) -> Option<Vec<usize>> {
    let sip: HashSet<String> = sip_dest.iter().map(|d| canonical_tn(d)).collect();
    let original: Vec<String> = original.iter().map(|t| canonical_tn(t)).collect();
    if original.iter().any(|o| sip.contains(o)) {
        return Some(vec![]);
    }
    let hops = hops(divs);
    // Breadth first over numbers, each visited once; `via` remembers how a
    // number was reached (the number before it and the PASSporT used).
    let mut via: HashMap<String, Option<(String, usize)>> = HashMap::new();
    let mut queue: VecDeque<(String, usize)> = VecDeque::new();
    for o in original {
        if !via.contains_key(&o) {
            via.insert(o.clone(), None);
            queue.push_back((o, 0));
        }
    }
    while let Some((at, depth)) = queue.pop_front() {
        if depth == MAX_DIV_HOPS {
            continue;
        }
        for (i, h) in hops.iter().filter(|(_, h)| h.from == at) {
            for t in &h.to {
                if via.contains_key(t) {
                    continue;
                }
                via.insert(t.clone(), Some((at.clone(), *i)));
                if sip.contains(t) {
                    return Some(chain_to(t, &via));
                }
                queue.push_back((t.clone(), depth + 1));
            }
        }
    }
    None
}

/// The PASSporTs used to reach `end`, first diversion first.
fn chain_to(end: &str, via: &HashMap<String, Option<(String, usize)>>) -> Vec<usize> {
    let mut chain = Vec::new();
    let mut at = end;
    // Each step goes one number back towards an original destination;
    // bounded by the numbers visited.
    for _ in 0..=via.len() {
        match via.get(at) {
            Some(Some((prev, i))) => {
                chain.push(*i);
                at = prev;
            }
            _ => break,
        }
    }
    chain.reverse();
    chain
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stir::passport::{Claims, Dest, Div, Header};

    fn div_to(from: &str, to: &[&str]) -> Passport {
        Passport {
            header: Header::default(),
            claims: Claims {
                dest: Dest {
                    tn: to.iter().map(|t| (*t).to_owned()).collect(),
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

    fn div(from: &str, to: &str) -> Passport {
        div_to(from, &[to])
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

    /// The attacker's set of issue 13: seven PASSporTs diverting a number
    /// to itself many times over, none reaching the called number. The old
    /// search enumerated every ordering of them (millions of partial
    /// chains for three copies each); now duplicates collapse, two
    /// PASSporTs are beyond the count, and the answer is "no path".
    #[test]
    fn self_loops_and_duplicates_are_searched_once() {
        let set: Vec<Passport> = (0..7)
            .map(|_| div_to("15550100", &["15550100"; 1000]))
            .collect();
        let refs: Vec<&Passport> = set.iter().collect();
        assert!(over_bounds(&refs), "seven is more than five");
        assert_eq!(hops(&refs).len(), MAX_DIV_PASSPORTS);
        assert!(hops(&refs).iter().all(|(_, h)| h.to.len() == 1));
        let orig = ["15550100".to_owned()];
        assert_eq!(path(&orig, &["15559999"], &refs), None);
        assert_eq!(reachable(&["15550100"], &refs), vec!["15550100"]);
    }

    #[test]
    fn a_long_dest_list_is_not_followed_and_chains_stop_at_the_hop_bound() {
        let many: Vec<String> = (0..=MAX_DIV_DEST_TNS)
            .map(|i| format!("1555020{i:02}"))
            .collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let wide = div_to("15550100", &many);
        let orig = ["15550100".to_owned()];
        assert!(over_bounds(&[&wide]));
        assert_eq!(
            path(&orig, &[many[0]], &[&wide]),
            None,
            "11 numbers: not followed"
        );
        let ten = div_to("15550100", &many[..MAX_DIV_DEST_TNS]);
        assert_eq!(path(&orig, &[many[0]], &[&ten]), Some(vec![0]));
        // A chain of five diversions is followed; the sixth PASSporT is not.
        let n = |i: usize| format!("155503{i:02}");
        let chain: Vec<Passport> = (0..6).map(|i| div(&n(i), &n(i + 1))).collect();
        let refs: Vec<&Passport> = chain.iter().collect();
        let start = [n(0)];
        assert_eq!(path(&start, &[&n(5)], &refs), Some(vec![0, 1, 2, 3, 4]));
        assert_eq!(path(&start, &[&n(6)], &refs), None);
    }
}
