//! Rich call data (RFC 9795): a display name, a call reason and other
//! caller details signed into a PASSporT — in a SHAKEN PASSporT's `rcd`
//! and `crn` claims, or in a separate `ppt=rcd` PASSporT. callgate keeps
//! them only when the PASSporT that carries them verified, and does not
//! fetch linked content (`jcl`, `icn`): that is flagged instead.

use serde::Serialize;

use super::passport::Claims;

/// Which PASSporT carried the rich call data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RcdSource {
    Shaken,
    Rcd,
}

/// Verified rich call data, for the risk phase, the audit and the agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RichCallData {
    /// Display name (`rcd.nam`), control characters removed, at most 64 characters.
    pub nam: Option<String>,
    /// Call reason (`crn`, RFC 9795 §6), cleaned the same way.
    pub crn: Option<String>,
    /// The `rcd` claim as signed.
    pub claims: Option<serde_json::Value>,
    pub source: RcdSource,
    /// `jcl` or `icn` links were present; their content was not fetched,
    /// so `rcdi` integrity was not checked (RFC 9795 §5.2).
    pub links_unchecked: bool,
}

/// Printable text for display: no control characters, bounded length.
fn clean(s: &str) -> String {
    s.chars().filter(|c| !c.is_control()).take(64).collect()
}

/// The rich call data of a verified PASSporT's claims, if it carries any.
pub fn from_claims(c: &Claims, source: RcdSource) -> Option<RichCallData> {
    if c.rcd.is_none() && c.crn.is_none() {
        return None;
    }
    let obj = c.rcd.as_ref().and_then(|r| r.as_object());
    Some(RichCallData {
        nam: obj
            .and_then(|o| o.get("nam"))
            .and_then(|n| n.as_str())
            .map(clean),
        crn: c.crn.as_deref().map(clean),
        claims: c.rcd.clone(),
        source,
        links_unchecked: obj.is_some_and(|o| o.contains_key("jcl") || o.contains_key("icn")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_cleaned_and_links_flagged() {
        let c = Claims {
            rcd: Some(serde_json::json!({"nam": "Acme\r\nBank", "jcl": "https://x/j.json"})),
            crn: Some("Fraud alert".into()),
            ..Claims::default()
        };
        let r = from_claims(&c, RcdSource::Shaken).unwrap_or_else(|| panic!("rcd"));
        assert_eq!(r.nam.as_deref(), Some("AcmeBank"));
        assert_eq!(r.crn.as_deref(), Some("Fraud alert"));
        assert!(r.links_unchecked);
        assert!(from_claims(&Claims::default(), RcdSource::Rcd).is_none());
    }
}
