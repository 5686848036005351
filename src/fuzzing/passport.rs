//! The Identity header (RFC 8224 §4.1) and the PASSporT it carries
//! (RFC 8225, RFC 8588, RFC 8946 `div`, RFC 9795 `rcd`): the claim checks
//! run on whatever the trunk sends, before any signature check.

use crate::stir::identity::IdentityHeader;
use crate::stir::passport::{check_claims, check_companion, ppt_of, Expect, Passport};
use crate::stir::rcd::{from_claims, RcdSource};

/// Parses `data` as an Identity header value, decodes its PASSporT and runs
/// every claim check against a fixed expectation.
pub fn exercise(data: &[u8]) -> usize {
    let mut sum = ppt_of(data).map_or(0, |p| p.len());
    let Ok(identity) = IdentityHeader::parse(data) else {
        return sum;
    };
    sum += identity.token.len();
    let Ok(passport) = Passport::decode(identity.token) else {
        return sum;
    };
    let dest = ["15550100"];
    let expect = Expect {
        orig: "15550199",
        dest: &dest,
        now: 1_700_000_000,
        freshness_secs: 60,
        skew_secs: 5,
    };
    let (checks, failure) = check_claims(&identity, &passport, &expect);
    sum += checks.len() + usize::from(failure.is_some());
    let (checks, _) = check_companion(&identity, &passport, "div", &expect);
    sum += checks.len();
    sum += from_claims(&passport.claims, RcdSource::Rcd).map_or(0, |_| 1);
    sum
}
