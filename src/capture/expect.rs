//! What callgate must do to a replayed call (`callgate trace to-sipp
//! --expect`), turned into sipp checks: the generated UAS checks the
//! INVITE callgate forwards with `<ereg … check_it="true"/>` (sipp fails
//! the call, and exits non-zero, when one does not match), and for a call
//! callgate must refuse, the UAC checks the refusal and the UAS fails on
//! any INVITE. Without expectations, the UAS logs what callgate wrote
//! (sipp's `<log>`, in `-trace_logs`) for the tester to read.
//!
//! What is checked is what the PBX reads (docs/integration.md):
//! - `level`: the first field of `X-Callgate-Risk`;
//! - `reasons`: `X-Callgate-Reasons`, the codes in rule order (`none`: no
//!   such header);
//! - `verstat`: the parameter callgate puts on P-Asserted-Identity, else
//!   From (3GPP TS 24.229 §7.2A.20, ATIS-1000074 §5.3.3);
//! - `action`: `tag` keeps the captured Request-URI; `review` retargets it
//!   (RFC 3261 §16.5) to the review queue, with a History-Info entry of
//!   cause 380 naming the decision (RFC 7044 §5), at `review_uri` when
//!   given; `reject` answers the caller with a final status (`status`, else
//!   one of 403, 603, 608: RFC 8224 §6.2.2, RFC 8688 §3) and forwards
//!   nothing.
//!
//! Sans-IO: text in, XML text out. The values are checked against a
//! token alphabet before they reach a regular expression or an XML
//! attribute, so a value never changes the meaning of either.

use std::fmt::Write as _;

/// The risk levels a decision can have (docs/policy.md, `[levels]`).
const LEVELS: [&str; 4] = ["low", "medium", "high", "critical"];

/// The keys `--expect` and `--expect-file` accept.
const KEYS: &str = "level, action, verstat, reasons, review_uri, status";

/// The statuses callgate refuses a call with when `status` is not given
/// (src/gate/route.rs: 403 or a policy's `reject_code`, 603 or 608).
const REJECT_STATUSES: [u16; 3] = [403, 603, 608];

/// What happens to the call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExpectedAction {
    /// Forwarded to the agents: the captured Request-URI.
    Tag,
    /// Retargeted to the review queue.
    Review,
    /// Refused: the PBX sees nothing.
    Reject,
}

impl ExpectedAction {
    pub fn as_str(self) -> &'static str {
        match self {
            ExpectedAction::Tag => "tag",
            ExpectedAction::Review => "review",
            ExpectedAction::Reject => "reject",
        }
    }
}

/// What callgate must do to the replayed call; `None` is "not checked".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectations {
    pub level: Option<String>,
    pub action: Option<ExpectedAction>,
    pub verstat: Option<String>,
    /// The reason codes in order; empty: no `X-Callgate-Reasons` at all.
    pub reasons: Option<Vec<String>>,
    /// The review queue's Request-URI (the policy's `[review] uri`).
    pub review_uri: Option<String>,
    /// The refusal's status, for `action=reject`.
    pub status: Option<u16>,
}

/// Why an expectation was refused; each names the key and the reason.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExpectError {
    #[error("{origin}: {item:?} is not key=value (keys: {KEYS})")]
    NotKeyValue { origin: String, item: String },
    #[error("{origin}: unknown key {key:?} (keys: {KEYS})")]
    UnknownKey { origin: String, key: String },
    #[error("{origin}: {key} given twice")]
    Duplicate { origin: String, key: String },
    #[error("{origin}: {key}={value:?}: {reason}")]
    BadValue {
        origin: String,
        key: String,
        value: String,
        reason: String,
    },
    #[error("{origin}: {reason}")]
    Inconsistent { origin: String, reason: String },
}

/// Whether `s` is a SIP token as verstat values and reason codes are
/// (RFC 3261 §25.1, without the characters a regular expression reads).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_'))
}

impl Expectations {
    /// `level=high,action=review,…` as given to `--expect`.
    pub fn parse_list(list: &str) -> Result<Expectations, ExpectError> {
        let mut e = Expectations::default();
        for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            e.set("--expect", item)?;
        }
        e.check("--expect")?;
        Ok(e)
    }

    /// A file of the same `key=value` items, one a line; blank lines and
    /// lines starting with `#` are skipped. `name` names it in errors.
    pub fn parse_file(text: &str, name: &str) -> Result<Expectations, ExpectError> {
        let mut e = Expectations::default();
        for (n, line) in text.lines().enumerate() {
            let item = line.trim();
            if item.is_empty() || item.starts_with('#') {
                continue;
            }
            e.set(&format!("{name} line {}", n + 1), item)?;
        }
        e.check(name)?;
        Ok(e)
    }

    /// Whether nothing is expected (the UAS then only logs).
    pub fn is_empty(&self) -> bool {
        *self == Expectations::default()
    }

    /// The expectations as `--expect` takes them, in the order of the
    /// keys.
    pub fn to_list(&self) -> String {
        let mut items = Vec::new();
        if let Some(l) = &self.level {
            items.push(format!("level={l}"));
        }
        if let Some(a) = self.action {
            items.push(format!("action={}", a.as_str()));
        }
        if let Some(v) = &self.verstat {
            items.push(format!("verstat={v}"));
        }
        match &self.reasons {
            Some(r) if r.is_empty() => items.push("reasons=none".into()),
            Some(r) => items.push(format!("reasons={}", r.join("+"))),
            None => {}
        }
        if let Some(u) = &self.review_uri {
            items.push(format!("review_uri={u}"));
        }
        if let Some(s) = self.status {
            items.push(format!("status={s}"));
        }
        items.join(",")
    }

    /// Whether the call must be refused (the UAC ends at the refusal).
    pub fn rejects(&self) -> bool {
        self.action == Some(ExpectedAction::Reject)
    }

    fn set(&mut self, origin: &str, item: &str) -> Result<(), ExpectError> {
        let Some((key, value)) = item.split_once('=') else {
            return Err(ExpectError::NotKeyValue {
                origin: origin.into(),
                item: item.into(),
            });
        };
        let (key, value) = (key.trim(), value.trim());
        let bad = |reason: &str| ExpectError::BadValue {
            origin: origin.into(),
            key: key.into(),
            value: value.into(),
            reason: reason.into(),
        };
        let twice = || ExpectError::Duplicate {
            origin: origin.into(),
            key: key.into(),
        };
        match key {
            "level" => {
                if !LEVELS.contains(&value) {
                    return Err(bad("not a level (low, medium, high, critical)"));
                }
                replace(&mut self.level, value.to_owned()).ok_or_else(twice)
            }
            "action" => {
                let all = [
                    ExpectedAction::Tag,
                    ExpectedAction::Review,
                    ExpectedAction::Reject,
                ];
                let Some(a) = all.into_iter().find(|a| a.as_str() == value) else {
                    return Err(bad("not an action (tag, review, reject)"));
                };
                replace(&mut self.action, a).ok_or_else(twice)
            }
            "verstat" => {
                if !is_token(value) {
                    return Err(bad(
                        "not a verstat value (letters, digits, - and _, e.g. TN-Validation-Passed-A)",
                    ));
                }
                replace(&mut self.verstat, value.to_owned()).ok_or_else(twice)
            }
            "reasons" => {
                let codes: Vec<String> = if value == "none" {
                    Vec::new()
                } else {
                    value.split('+').map(|c| c.trim().to_owned()).collect()
                };
                if codes.iter().any(|c| !is_token(c)) {
                    return Err(bad(
                        "not reason codes (CODE+CODE in rule order, letters, digits, - and _; or none)",
                    ));
                }
                replace(&mut self.reasons, codes).ok_or_else(twice)
            }
            "review_uri" => {
                let lower = value.to_ascii_lowercase();
                let scheme = lower.starts_with("sip:") || lower.starts_with("sips:");
                if !scheme
                    || value.len() > 256
                    || value
                        .bytes()
                        .any(|b| !b.is_ascii_graphic() || matches!(b, b'<' | b'>' | b'"' | b'\''))
                {
                    return Err(bad(
                        "not a SIP URI (sip: or sips:, no spaces, quotes or angle brackets)",
                    ));
                }
                replace(&mut self.review_uri, value.to_owned()).ok_or_else(twice)
            }
            "status" => match value.parse::<u16>() {
                Ok(s) if (300..700).contains(&s) => replace(&mut self.status, s).ok_or_else(twice),
                _ => Err(bad("not a final status that refuses a call (300-699)")),
            },
            _ => Err(ExpectError::UnknownKey {
                origin: origin.into(),
                key: key.into(),
            }),
        }
    }

    /// What the keys say together must be possible.
    fn check(&self, origin: &str) -> Result<(), ExpectError> {
        let inconsistent = |reason: &str| {
            Err(ExpectError::Inconsistent {
                origin: origin.into(),
                reason: reason.into(),
            })
        };
        if self.review_uri.is_some() && self.action != Some(ExpectedAction::Review) {
            return inconsistent("review_uri needs action=review");
        }
        if self.status.is_some() && !self.rejects() {
            return inconsistent("status needs action=reject");
        }
        if self.rejects()
            && (self.level.is_some() || self.verstat.is_some() || self.reasons.is_some())
        {
            return inconsistent(
                "a rejected call reaches no PBX, so its level, verstat and reasons cannot be \
                 checked there (check them in the audit record: callgate report)",
            );
        }
        Ok(())
    }

    /// The `<ereg>` actions the UAS runs on the INVITE callgate forwards:
    /// `called` is the user part of the captured Request-URI, `pai`
    /// whether the captured INVITE has a P-Asserted-Identity (callgate
    /// puts verstat there, else on From).
    pub fn uas_checks(&self, called: Option<&str>, pai: bool) -> String {
        let mut c = Checks::default();
        if let Some(level) = &self.level {
            c.header("X-Callgate-Risk:", &format!("^ *{level}(;|$)"), "level");
        }
        match &self.reasons {
            Some(codes) if codes.is_empty() => c.msg_absent("X-Callgate-Reasons *:", "no_reasons"),
            Some(codes) => c.header(
                "X-Callgate-Reasons:",
                &format!("^ *{} *$", codes.join(",")),
                "reasons",
            ),
            None => {}
        }
        if let Some(v) = &self.verstat {
            let header = if pai { "P-Asserted-Identity:" } else { "From:" };
            c.header(header, &format!("verstat={v}([;>?&]|$)"), "verstat");
        }
        let called = called.map(regex_escape);
        // callgate's History-Info entry for the retarget: a Reason of
        // cause 380 naming the review, escaped in the URI (RFC 7044 §10).
        let review_mark =
            "cause(=|%3D)380(;|%3B)text(=|%3D)(\"|%22)callgate(%20| )risk(%20| )review";
        match self.action {
            Some(ExpectedAction::Tag) => {
                if let Some(user) = &called {
                    c.msg(&format!("^INVITE sips?:{user}@"), "to_agents");
                }
                c.msg_absent(review_mark, "not_reviewed");
            }
            Some(ExpectedAction::Review) => {
                match (&self.review_uri, &called) {
                    (Some(uri), _) => c.msg(&format!("^INVITE {} ", regex_escape(uri)), "review"),
                    (None, Some(user)) => {
                        c.msg_absent(&format!("^INVITE sips?:{user}@"), "retargeted")
                    }
                    (None, None) => {}
                }
                c.msg(review_mark, "history");
            }
            Some(ExpectedAction::Reject) => c.msg(
                "^callgate must refuse this call: the PBX must never see it",
                "refused",
            ),
            None => {}
        }
        c.finish()
    }

    /// The responses the UAC accepts as the refusal, each jumping to
    /// `label`; the provisional responses before it are optional.
    pub fn uac_refusal(&self, label: &str) -> String {
        let mut out = String::new();
        for p in [100, 180, 183] {
            let _ = writeln!(out, "  <recv response=\"{p}\" optional=\"true\"/>");
        }
        let statuses: Vec<u16> = match self.status {
            Some(s) => vec![s],
            None => REJECT_STATUSES.to_vec(),
        };
        let last = statuses.len() - 1;
        for (i, s) in statuses.iter().enumerate() {
            let optional = if i < last { " optional=\"true\"" } else { "" };
            let _ = writeln!(out, "  <recv response=\"{s}\"{optional} next=\"{label}\"/>");
        }
        let _ = writeln!(out, "  <label id=\"{label}\"/>");
        out
    }
}

/// Sets `slot` unless it was set: `None` when it was (a duplicate key).
fn replace<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    if slot.is_some() {
        return None;
    }
    *slot = Some(value);
    Some(())
}

/// The headers the PBX reads, logged by the UAS when nothing is
/// expected: (header, sipp variable).
const LOGGED: [(&str, &str); 7] = [
    ("X-Callgate-Risk:", "risk"),
    ("X-Callgate-Reasons:", "reasons"),
    ("X-Callgate-Verify:", "verify"),
    ("X-Callgate-Restrict:", "restrict"),
    ("P-Asserted-Identity:", "pai"),
    ("From:", "from"),
    ("History-Info:", "history"),
];

/// What callgate wrote on the INVITE, logged by the UAS (sipp's `<log>`,
/// written with `-trace_logs` to `uas_<pid>_logs.log`): the Request-URI
/// and each header the PBX reads, one line each, empty when absent.
pub fn uas_log() -> String {
    let mut out = String::from(
        "      <ereg regexp=\"^[A-Z]+ [^ ]*\" search_in=\"msg\" assign_to=\"request_line\"/>\n",
    );
    for (h, var) in LOGGED {
        let _ = writeln!(
            out,
            "      <ereg regexp=\".*\" search_in=\"hdr\" header=\"{h}\" assign_to=\"{var}\"/>"
        );
    }
    out.push_str("      <log message=\"callgate forwarded: [$request_line]\"/>\n");
    for (h, var) in LOGGED {
        let _ = writeln!(out, "      <log message=\"{h}[${var}]\"/>");
    }
    out
}

/// The `<ereg>` checks of one message, then a `<log>` of what each
/// matched (sipp refuses a variable that is never read).
#[derive(Default)]
struct Checks {
    out: String,
    names: Vec<&'static str>,
}

impl Checks {
    /// Fails the call unless `header`'s value matches `re` (or when the
    /// message has no such header).
    fn header(&mut self, header: &str, re: &str, name: &'static str) {
        self.ereg(
            &format!("search_in=\"hdr\" header=\"{header}\" check_it=\"true\""),
            re,
            name,
        );
    }

    /// Fails the call unless the whole message matches `re`.
    fn msg(&mut self, re: &str, name: &'static str) {
        self.ereg("search_in=\"msg\" check_it=\"true\"", re, name);
    }

    /// Fails the call when the whole message matches `re`.
    fn msg_absent(&mut self, re: &str, name: &'static str) {
        self.ereg("search_in=\"msg\" check_it_inverse=\"true\"", re, name);
    }

    fn ereg(&mut self, how: &str, re: &str, name: &'static str) {
        let _ = writeln!(
            self.out,
            "      <ereg regexp=\"{}\" {how} assign_to=\"expect_{name}\"/>",
            super::to_sipp::attr(re)
        );
        self.names.push(name);
    }

    fn finish(mut self) -> String {
        for name in &self.names {
            let _ = writeln!(
                self.out,
                "      <log message=\"expected {name}: [$expect_{name}]\"/>"
            );
        }
        self.out
    }
}

/// `s` with the characters a POSIX extended regular expression reads
/// escaped (IEEE 1003.1 §9.4.3).
fn regex_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() * 2);
    for c in s.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The README's word on the expectations: what is checked and how a
/// failure shows, or, without any, where the UAS logs what it saw.
pub fn readme_section(e: &Expectations, t: &str) -> String {
    if e.is_empty() {
        return format!(
            "\n## What callgate did\n\nNo expectations were given (`--expect`), so the UAS \
             checks nothing callgate decided; it logs the Request-URI and the headers the PBX \
             reads (`X-Callgate-Risk`, `-Reasons`, `-Verify`, `-Restrict`, \
             P-Asserted-Identity and From with `verstat`, History-Info) of the INVITE it \
             receives. Run it with `-trace_logs` and read `uas_<pid>_logs.log` (or name the \
             file with `-log_file`):\n\n```sh\n\
             sipp -sf uas.xml -i 127.0.0.1 -p 5080 -t {t} -m 1 -trace_logs\n```\n\n\
             To make the replay a test, convert again with what callgate must do, e.g. \
             `--expect level=high,action=review,reasons=KNOWN_FRAUD`.\n"
        );
    }
    let mut out = format!(
        "\n## Expectations\n\nConverted with `--expect '{}'`: ",
        e.to_list()
    );
    if e.rejects() {
        out.push_str(&format!(
            "callgate must refuse the call. `uac.xml` waits for the refusal ({}) and sends \
             its ACK; a call that is answered or fails otherwise fails the UAC (sipp exits \
             1). `uas.xml` fails on any INVITE it receives, so the PBX side needs no run \
             (run it with `-timeout 10s` to watch that nothing arrives).\n",
            match e.status {
                Some(s) => s.to_string(),
                None => REJECT_STATUSES
                    .iter()
                    .map(u16::to_string)
                    .collect::<Vec<_>>()
                    .join(", "),
            }
        ));
        return out;
    }
    out.push_str("`uas.xml` checks the INVITE callgate forwards (sipp `<ereg check_it>`):\n\n");
    if let Some(l) = &e.level {
        let _ = writeln!(out, "- `X-Callgate-Risk` level `{l}`;");
    }
    match &e.reasons {
        Some(r) if r.is_empty() => out.push_str("- no `X-Callgate-Reasons`;\n"),
        Some(r) => {
            let _ = writeln!(
                out,
                "- `X-Callgate-Reasons: {}` (in rule order);",
                r.join(",")
            );
        }
        None => {}
    }
    if let Some(v) = &e.verstat {
        let _ = writeln!(
            out,
            "- `verstat={v}` on P-Asserted-Identity (From when the call has none);"
        );
    }
    match (e.action, &e.review_uri) {
        (Some(ExpectedAction::Review), Some(uri)) => {
            let _ = writeln!(
                out,
                "- the call retargeted to the review queue: Request-URI `{uri}`, and callgate's \
                 History-Info entry (cause 380);"
            );
        }
        (Some(ExpectedAction::Review), None) => out.push_str(
            "- the call retargeted to the review queue: not the captured Request-URI, and \
             callgate's History-Info entry (cause 380);\n",
        ),
        (Some(ExpectedAction::Tag), _) => out.push_str(
            "- the call sent to the agents: the captured Request-URI, no review retarget;\n",
        ),
        _ => {}
    }
    out.push_str(
        "\nWhen callgate does otherwise, the UAS counts a failed call and exits 1; \
         `-trace_err` (`uas_<pid>_errors.log`) names the check: `Failed regexp match: \
         looking in '…', with regexp '…'`. With `-trace_logs`, it logs what each check \
         matched (`expected level:  high;`).\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parsed(list: &str) -> Expectations {
        Expectations::parse_list(list).unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_list_and_a_file_give_the_same_expectations() {
        let e = parsed("level=high, action=review,verstat=TN-Validation-Passed-A,reasons=A_B+C");
        assert_eq!(e.level.as_deref(), Some("high"));
        assert_eq!(e.action, Some(ExpectedAction::Review));
        assert_eq!(e.reasons, Some(vec!["A_B".to_owned(), "C".to_owned()]));
        let file = "# what callgate must do\nlevel=high\n\naction=review\n\
                    verstat=TN-Validation-Passed-A\nreasons=A_B+C\n";
        assert_eq!(Expectations::parse_file(file, "f"), Ok(e.clone()));
        assert_eq!(parsed(&e.to_list()), e);
        assert!(parsed("").is_empty());
        assert_eq!(parsed("reasons=none").reasons, Some(Vec::new()));
    }

    #[test]
    fn a_bad_expectation_names_the_key_and_the_reason() {
        let err = |list: &str| {
            Expectations::parse_list(list)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        assert!(err("level=severe").contains("level=\"severe\": not a level"));
        assert!(err("colour=red").contains("unknown key \"colour\""));
        assert!(err("level=high,level=low").contains("level given twice"));
        assert!(err("high").contains("\"high\" is not key=value"));
        assert!(err("reasons=A+B C").contains("reasons="));
        assert!(err("verstat=a\"b").contains("verstat="));
        assert!(err("review_uri=http://x").contains("not a SIP URI"));
        assert!(err("review_uri=sip:a@b").contains("review_uri needs action=review"));
        assert!(err("action=review,status=608").contains("status needs action=reject"));
        assert!(err("action=reject,level=critical").contains("reaches no PBX"));
        assert!(err("action=reject,status=200").contains("300-699"));
        let e = Expectations::parse_file("level=high\nlevel=low\n", "--expect-file x")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(
            e.contains("--expect-file x line 2: level given twice"),
            "{e}"
        );
    }

    #[test]
    fn the_uas_checks_what_the_pbx_reads() {
        let checks = parsed(
            "level=high,action=review,review_uri=sip:review@10.0.0.1,verstat=No-TN-Validation,reasons=X+Y",
        )
        .uas_checks(Some("+15550100"), false);
        for want in [
            "regexp=\"^ *high(;|$)\" search_in=\"hdr\" header=\"X-Callgate-Risk:\" check_it=\"true\"",
            "regexp=\"^ *X,Y *$\" search_in=\"hdr\" header=\"X-Callgate-Reasons:\"",
            "header=\"From:\"",
            "verstat=No-TN-Validation([;&gt;?&amp;]|$)",
            "regexp=\"^INVITE sip:review@10\\.0\\.0\\.1 \" search_in=\"msg\" check_it=\"true\"",
            "cause(=|%3D)380",
            "<log message=\"expected level: [$expect_level]\"/>",
        ] {
            assert!(checks.contains(want), "lacks {want:?}:\n{checks}");
        }
        let tag = parsed("action=tag,reasons=none").uas_checks(Some("+1555"), true);
        for want in [
            "regexp=\"^INVITE sips?:\\+1555@\" search_in=\"msg\" check_it=\"true\"",
            "check_it_inverse=\"true\" assign_to=\"expect_not_reviewed\"",
            "regexp=\"X-Callgate-Reasons *:\" search_in=\"msg\" check_it_inverse=\"true\"",
        ] {
            assert!(tag.contains(want), "lacks {want:?}:\n{tag}");
        }
        // Each variable assigned is read (sipp refuses one that is not).
        for checks in [&checks, &tag] {
            assert_eq!(
                checks.matches("assign_to=\"expect_").count(),
                checks.matches("[$expect_").count(),
                "{checks}"
            );
        }
    }

    #[test]
    fn the_uac_of_a_refused_call_waits_for_the_refusal() {
        let any = parsed("action=reject").uac_refusal("refused");
        assert!(any.contains("<recv response=\"403\" optional=\"true\" next=\"refused\"/>"));
        assert!(any.contains("<recv response=\"608\" next=\"refused\"/>"));
        let one = parsed("action=reject,status=603").uac_refusal("refused");
        assert!(
            one.contains("<recv response=\"603\" next=\"refused\"/>"),
            "{one}"
        );
        assert!(!one.contains("608"), "{one}");
        assert!(one.contains("<recv response=\"100\" optional=\"true\"/>"));
    }
}
