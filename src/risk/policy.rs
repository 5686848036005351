//! The operator's policy (`sip-config/policy.toml`, docs/policy.md): rules
//! over named signals with weights and stable reason codes, score
//! thresholds to levels, and per level an action and the restricted
//! actions. Compiled at load; errors name the rule and key.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use serde::Serialize;

use super::condition::{compile, Cond, Source, Truth};
use super::lists::NumberList;
use super::signals::Signals;

/// Risk levels, lowest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Level {
    Low,
    Medium,
    High,
    Critical,
}

impl Level {
    pub const ALL: [Level; 4] = [Level::Low, Level::Medium, Level::High, Level::Critical];

    pub fn as_str(self) -> &'static str {
        match self {
            Level::Low => "low",
            Level::Medium => "medium",
            Level::High => "high",
            Level::Critical => "critical",
        }
    }
}

/// What happens to a call at a level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Action {
    /// Forward to the PBX with the tags.
    Tag,
    /// Retarget to the review queue (with History-Info), tagged.
    Review,
    /// Answer 603 Decline or 608 Rejected (RFC 8688).
    Reject(u16),
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Tag => "tag",
            Action::Review => "review",
            Action::Reject(_) => "reject",
        }
    }
}

/// What to count for a velocity window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VelocityKey {
    Calling,
    Called,
    Origid,
    /// The first `n` digits of the calling number.
    CallingPrefix(usize),
}

/// A sliding velocity window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Velocity {
    pub name: String,
    pub key: VelocityKey,
    pub window: std::time::Duration,
}

/// A compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    pub code: String,
    pub weight: i32,
    pub when: Cond,
    /// The operator's words for the reason, shown beside the code.
    pub description: Option<Arc<str>>,
}

/// A level's consequences.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelAction {
    pub action: Action,
    pub restrict: Vec<String>,
    /// The operator's words for the level (`[level.NAME] text`).
    pub text: Option<Arc<str>>,
    /// The words for each restricted action that has them
    /// (`[restrictions]`), in `restrict` order.
    pub restrict_text: Vec<RestrictText>,
}

/// What an agent is told about one restricted action.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestrictText {
    #[serde(serialize_with = "shared_text")]
    pub action: Arc<str>,
    #[serde(serialize_with = "shared_text")]
    pub text: Arc<str>,
}

/// A shared text as a JSON string.
fn shared_text<S: serde::Serializer>(t: &Arc<str>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(t)
}

/// An optional shared text as a JSON string (or null).
fn maybe_text<S: serde::Serializer>(t: &Option<Arc<str>>, s: S) -> Result<S::Ok, S::Error> {
    match t {
        Some(t) => s.serialize_some(&**t),
        None => s.serialize_none(),
    }
}

/// Longest text the policy accepts for a description, level or
/// restriction, in characters: what an agent reads in a glance.
pub const MAX_TEXT_CHARS: usize = 200;

/// Number facts the policy needs beyond the lists.
#[derive(Debug, Clone, Default)]
pub struct Numbers {
    /// Prefixes (digits) the contact centre owns.
    pub own: Vec<String>,
    /// Unassigned or invalid ranges (prefixes).
    pub unassigned: Vec<String>,
    /// The trunk's domains (P-Asserted-Identity hosts expected).
    pub trunk_domains: Vec<String>,
    /// Expected User-Agent prefixes; empty: not checked.
    pub user_agents: Vec<String>,
    /// Local time offset from UTC, minutes (for `hours` and `days`).
    pub utc_offset_minutes: i32,
}

/// A compiled policy.
#[derive(Debug, Clone)]
pub struct Policy {
    pub version: String,
    /// Score at which medium, high and critical start.
    pub thresholds: [u32; 3],
    pub levels: [LevelAction; 4],
    /// The review queue's SIP URI.
    pub review_uri: Option<String>,
    pub numbers: Numbers,
    pub lists: Vec<NumberList>,
    pub velocity: Vec<Velocity>,
    /// Per source: `true` = fail closed (an unknown condition fires).
    pub fail_closed: HashMap<&'static str, bool>,
    pub rules: Vec<Rule>,
    /// The operator's words per restricted action (`[restrictions]`).
    pub restrictions: Vec<RestrictText>,
}

/// One rule that fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Fired {
    pub code: String,
    pub weight: i32,
    /// Fired because a source was unavailable and fails closed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_closed: Option<&'static str>,
    /// The rule's `description`.
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "maybe_text")]
    pub text: Option<Arc<str>>,
}

/// A policy's verdict on one call's signals.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verdict {
    pub policy_version: String,
    pub score: u32,
    pub level: Level,
    pub action: Action,
    pub fired: Vec<Fired>,
    pub restrict: Vec<String>,
    /// The level's words (`[level.NAME] text`).
    #[serde(skip_serializing_if = "Option::is_none", serialize_with = "maybe_text")]
    pub level_text: Option<Arc<str>>,
    /// The words of the restricted actions that have them.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub restrict_text: Vec<RestrictText>,
}

impl Verdict {
    /// Reason codes of the fired rules, in rule order.
    pub fn reasons(&self) -> impl Iterator<Item = &str> {
        self.fired.iter().map(|f| f.code.as_str())
    }

    /// The words of the fired rules that have a description, in rule
    /// order, with their codes.
    pub fn reason_texts(&self) -> impl Iterator<Item = (&str, &str)> {
        self.fired
            .iter()
            .filter_map(|f| f.text.as_deref().map(|t| (f.code.as_str(), t)))
    }
}

/// Why a policy did not load.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path}: {key}: {reason}")]
    Invalid {
        path: PathBuf,
        key: String,
        reason: String,
    },
}

impl Policy {
    /// Evaluates the rules on `s` (microseconds for dozens of rules).
    pub fn decide(&self, s: &Signals) -> Verdict {
        let mut fired = Vec::new();
        let mut sum: i64 = 0;
        for r in &self.rules {
            let fire = match r.when.eval(s) {
                Truth::True => Some(None),
                Truth::False => None,
                Truth::Unknown(src) => self.closed(src).then_some(Some(src.name())),
            };
            if let Some(fail_closed) = fire {
                sum += i64::from(r.weight);
                fired.push(Fired {
                    code: r.code.clone(),
                    weight: r.weight,
                    fail_closed,
                    text: r.description.clone(),
                });
            }
        }
        let score = sum.clamp(0, 100) as u32;
        let level = self.level_of(score);
        let la = &self.levels[level as usize];
        Verdict {
            policy_version: self.version.clone(),
            score,
            level,
            action: la.action,
            fired,
            restrict: la.restrict.clone(),
            level_text: la.text.clone(),
            restrict_text: la.restrict_text.clone(),
        }
    }

    fn closed(&self, src: Source) -> bool {
        self.fail_closed.get(src.name()).copied().unwrap_or(false)
    }

    /// The level of a score.
    pub fn level_of(&self, score: u32) -> Level {
        match self.thresholds.iter().rposition(|t| score >= *t) {
            Some(i) => Level::ALL[i + 1],
            None => Level::Low,
        }
    }

    /// The names of the lists the calling number is on.
    pub fn lists_of(&self, calling_digits: &str) -> Vec<String> {
        self.lists
            .iter()
            .filter(|l| l.contains(calling_digits))
            .map(|l| l.name.clone())
            .collect()
    }

    /// Loads and compiles a policy file. List files are relative to it.
    pub fn load(path: &Path) -> Result<Policy, PolicyError> {
        let text = std::fs::read_to_string(path).map_err(|source| PolicyError::Read {
            path: path.to_owned(),
            source,
        })?;
        let base = path.parent().unwrap_or(Path::new("."));
        Policy::parse(&text, base).map_err(|e| match e {
            Parse::Syntax(message) => PolicyError::Syntax {
                path: path.to_owned(),
                message,
            },
            Parse::Invalid(key, reason) => PolicyError::Invalid {
                path: path.to_owned(),
                key,
                reason,
            },
        })
    }

    /// Compiles policy text; `base` resolves list files.
    pub fn parse(text: &str, base: &Path) -> Result<Policy, Parse> {
        let doc: toml::Table = toml::from_str(text).map_err(|e| Parse::Syntax(e.to_string()))?;
        let bad = |k: &str, r: String| Parse::Invalid(k.to_owned(), r);
        for key in doc.keys() {
            if ![
                "version",
                "levels",
                "level",
                "review",
                "numbers",
                "lists",
                "velocity",
                "unavailable",
                "restrictions",
                "rule",
            ]
            .contains(&key.as_str())
            {
                return Err(bad(key, "unknown section".into()));
            }
        }
        let version = doc
            .get("version")
            .and_then(toml::Value::as_str)
            .filter(|v| {
                !v.is_empty()
                    && v.bytes()
                        .all(|b| b.is_ascii_graphic() && b != b';' && b != b',')
            })
            .ok_or_else(|| {
                bad(
                    "version",
                    "required: a token such as \"2026-11-24.1\" (recorded on every decision)"
                        .into(),
                )
            })?
            .to_owned();
        let thresholds = thresholds(doc.get("levels"))?;
        let restrictions = restrictions(doc.get("restrictions"))?;
        let mut levels = level_actions(doc.get("level"))?;
        for la in &mut levels {
            la.restrict_text = la
                .restrict
                .iter()
                .filter_map(|a| restrictions.iter().find(|r| *r.action == **a).cloned())
                .collect();
        }
        let review_uri = match doc.get("review").and_then(|r| r.get("uri")) {
            Some(u) => {
                let u = u
                    .as_str()
                    .filter(|u| {
                        (u.starts_with("sip:") || u.starts_with("sips:"))
                            && !u.contains(['<', '>', ' ', '\r', '\n'])
                    })
                    .ok_or_else(|| {
                        bad("review.uri", "expected a SIP URI (sip:queue@pbx)".into())
                    })?;
                Some(u.to_owned())
            }
            None => None,
        };
        if review_uri.is_none() && levels.iter().any(|l| l.action == Action::Review) {
            return Err(bad(
                "review.uri",
                "required when a level's action is \"review\"".into(),
            ));
        }
        let numbers = numbers(doc.get("numbers"))?;
        let mut lists = Vec::new();
        if let Some(t) = doc.get("lists") {
            let t = t
                .as_table()
                .ok_or_else(|| bad("lists", "expected a table".into()))?;
            for (name, spec) in t {
                lists.push(
                    NumberList::from_spec(name, spec, base)
                        .map_err(|r| bad(&format!("lists.{name}"), r))?,
                );
            }
        }
        let velocity = velocities(doc.get("velocity"))?;
        let mut fail_closed = HashMap::new();
        if let Some(t) = doc.get("unavailable") {
            let t = t
                .as_table()
                .ok_or_else(|| bad("unavailable", "expected a table".into()))?;
            for (k, v) in t {
                let src = [Source::Stir, Source::Velocity]
                    .into_iter()
                    .find(|s| s.name() == k)
                    .ok_or_else(|| {
                        bad(
                            &format!("unavailable.{k}"),
                            "unknown signal source (stir, velocity)".into(),
                        )
                    })?;
                let closed = match v.as_str() {
                    Some("open") => false,
                    Some("closed") => true,
                    _ => {
                        return Err(bad(
                            &format!("unavailable.{k}"),
                            "must be \"open\" or \"closed\"".into(),
                        ))
                    }
                };
                fail_closed.insert(src.name(), closed);
            }
        }
        let mut rules = Vec::new();
        let raw_rules = match doc.get("rule") {
            Some(r) => r
                .as_array()
                .ok_or_else(|| bad("rule", "expected [[rule]] tables".into()))?
                .clone(),
            None => vec![],
        };
        for (i, r) in raw_rules.iter().enumerate() {
            let r = r
                .as_table()
                .ok_or_else(|| bad(&format!("rule[{i}]"), "expected a table".into()))?;
            let code = r
                .get("code")
                .and_then(toml::Value::as_str)
                .filter(|c| {
                    !c.is_empty()
                        && c.bytes()
                            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
                })
                .ok_or_else(|| {
                    bad(
                        &format!("rule[{i}].code"),
                        "required: UPPER_SNAKE_CASE (a stable reason code)".into(),
                    )
                })?
                .to_owned();
            let at = format!("rule[{i}] ({code})");
            if rules.iter().any(|x: &Rule| x.code == code) {
                return Err(bad(&at, "duplicate code".into()));
            }
            for k in r.keys() {
                if !["code", "weight", "when", "description"].contains(&k.as_str()) {
                    return Err(bad(
                        &format!("{at}.{k}"),
                        "unknown key (code, weight, when, description)".into(),
                    ));
                }
            }
            let weight = r
                .get("weight")
                .and_then(toml::Value::as_integer)
                .filter(|w| (-100..=100).contains(w))
                .ok_or_else(|| {
                    bad(
                        &format!("{at}.weight"),
                        "required: an integer from -100 to 100".into(),
                    )
                })? as i32;
            let when = r
                .get("when")
                .and_then(toml::Value::as_table)
                .ok_or_else(|| bad(&format!("{at}.when"), "required: a condition table".into()))?;
            let when = compile(when, "when").map_err(|e| {
                bad(
                    &format!("{at}.{}", e.split_once(": ").map_or(e.as_str(), |(k, _)| k)),
                    e.split_once(": ")
                        .map_or(String::new(), |(_, r)| r.to_owned()),
                )
            })?;
            let mut used = Vec::new();
            when.velocities(&mut used);
            for v in used {
                if !velocity.iter().any(|w| w.name == v) {
                    return Err(bad(
                        &format!("{at}.when.velocity"),
                        format!("no [velocity.{v}] window"),
                    ));
                }
            }
            let mut used = Vec::new();
            when.lists(&mut used);
            for l in used {
                if !lists.iter().any(|x: &NumberList| x.name == l) {
                    return Err(bad(&format!("{at}.when.list"), format!("no [lists.{l}]")));
                }
            }
            let description = match r.get("description") {
                Some(d) => Some(words(d, &format!("{at}.description"))?),
                None => None,
            };
            rules.push(Rule {
                code,
                weight,
                when,
                description,
            });
        }
        Ok(Policy {
            version,
            thresholds,
            levels,
            review_uri,
            numbers,
            lists,
            velocity,
            fail_closed,
            rules,
            restrictions,
        })
    }
}

/// A policy text error: TOML syntax, or a key and reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse {
    Syntax(String),
    Invalid(String, String),
}

fn thresholds(v: Option<&toml::Value>) -> Result<[u32; 3], Parse> {
    let mut out = [30, 60, 85];
    if let Some(t) = v {
        let t = t
            .as_table()
            .ok_or_else(|| Parse::Invalid("levels".into(), "expected a table".into()))?;
        for (k, v) in t {
            let i = ["medium", "high", "critical"]
                .iter()
                .position(|n| n == k)
                .ok_or_else(|| {
                    Parse::Invalid(
                        format!("levels.{k}"),
                        "unknown level (medium, high, critical; low starts at 0)".into(),
                    )
                })?;
            out[i] = v
                .as_integer()
                .filter(|s| (1..=100).contains(s))
                .ok_or_else(|| {
                    Parse::Invalid(format!("levels.{k}"), "a score from 1 to 100".into())
                })? as u32;
        }
    }
    if !(out[0] < out[1] && out[1] < out[2]) {
        return Err(Parse::Invalid(
            "levels".into(),
            format!(
                "thresholds must increase: medium {} < high {} < critical {}",
                out[0], out[1], out[2]
            ),
        ));
    }
    Ok(out)
}

/// Text the operator writes for agents: one line of at most
/// [`MAX_TEXT_CHARS`] characters, no control characters (it goes into SIP
/// headers, RFC 3261 §25.1, and onto screens).
fn words(v: &toml::Value, key: &str) -> Result<Arc<str>, Parse> {
    let bad = |r: &str| Parse::Invalid(key.to_owned(), r.to_owned());
    let t = v.as_str().ok_or_else(|| bad("expected a string"))?.trim();
    if t.is_empty() {
        return Err(bad("empty: write what the agent should know and do"));
    }
    if t.chars().any(char::is_control) {
        return Err(bad(
            "control characters (line breaks, tabs) are not allowed: one line of text",
        ));
    }
    let n = t.chars().count();
    if n > MAX_TEXT_CHARS {
        return Err(Parse::Invalid(
            key.to_owned(),
            format!("{n} characters, at most {MAX_TEXT_CHARS}: what an agent reads in a glance"),
        ));
    }
    Ok(Arc::from(t))
}

/// Whether `s` is a restricted action's name (lower-case-with-dashes).
fn action_name(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// `[restrictions]`: per restricted action, the words the agent reads.
fn restrictions(v: Option<&toml::Value>) -> Result<Vec<RestrictText>, Parse> {
    let Some(v) = v else { return Ok(vec![]) };
    let t = v.as_table().ok_or_else(|| {
        Parse::Invalid(
            "restrictions".into(),
            "expected a table: action-name = \"text\"".into(),
        )
    })?;
    t.iter()
        .map(|(name, text)| {
            let key = format!("restrictions.{name}");
            if !action_name(name) {
                return Err(Parse::Invalid(
                    key,
                    "names are lower-case-with-dashes (e.g. \"credential-reset\")".into(),
                ));
            }
            Ok(RestrictText {
                action: Arc::from(name.as_str()),
                text: words(text, &key)?,
            })
        })
        .collect()
}

fn level_actions(v: Option<&toml::Value>) -> Result<[LevelAction; 4], Parse> {
    let default = |action| LevelAction {
        action,
        restrict: vec![],
        text: None,
        restrict_text: vec![],
    };
    let mut out = [
        default(Action::Tag),
        default(Action::Tag),
        default(Action::Tag),
        default(Action::Reject(603)),
    ];
    let Some(t) = v else { return Ok(out) };
    let t = t
        .as_table()
        .ok_or_else(|| Parse::Invalid("level".into(), "expected [level.NAME] tables".into()))?;
    for (name, spec) in t {
        let i = Level::ALL
            .iter()
            .position(|l| l.as_str() == name)
            .ok_or_else(|| {
                Parse::Invalid(
                    format!("level.{name}"),
                    "unknown level (low, medium, high, critical)".into(),
                )
            })?;
        let at = |k: &str| format!("level.{name}.{k}");
        let spec = spec
            .as_table()
            .ok_or_else(|| Parse::Invalid(format!("level.{name}"), "expected a table".into()))?;
        for k in spec.keys() {
            if !["action", "restrict", "reject_code", "text"].contains(&k.as_str()) {
                return Err(Parse::Invalid(
                    at(k),
                    "unknown key (action, restrict, reject_code, text)".into(),
                ));
            }
        }
        if let Some(t) = spec.get("text") {
            out[i].text = Some(words(t, &at("text"))?);
        }
        let code = match spec.get("reject_code") {
            None => 603,
            Some(c) => match c.as_integer() {
                Some(603) => 603,
                Some(608) => 608,
                _ => {
                    return Err(Parse::Invalid(
                        at("reject_code"),
                        "603 (Decline) or 608 (Rejected, RFC 8688)".into(),
                    ))
                }
            },
        };
        if let Some(a) = spec.get("action") {
            out[i].action = match a.as_str() {
                Some("tag") => Action::Tag,
                Some("review") => Action::Review,
                Some("reject") => Action::Reject(code),
                _ => {
                    return Err(Parse::Invalid(
                        at("action"),
                        "\"tag\", \"review\" or \"reject\"".into(),
                    ))
                }
            };
        }
        if let Some(r) = spec.get("restrict") {
            let list = r.as_array().ok_or_else(|| {
                Parse::Invalid(at("restrict"), "expected a list of action names".into())
            })?;
            let mut restrict = Vec::new();
            for item in list {
                let s = item.as_str().filter(|s| action_name(s)).ok_or_else(|| {
                    Parse::Invalid(
                        at("restrict"),
                        "names are lower-case-with-dashes (e.g. \"credential-reset\")".into(),
                    )
                })?;
                restrict.push(s.to_owned());
            }
            out[i].restrict = restrict;
        }
    }
    Ok(out)
}

fn digit_list(t: &toml::Table, key: &str) -> Result<Vec<String>, Parse> {
    let Some(v) = t.get(key) else {
        return Ok(vec![]);
    };
    let items = v.as_array().ok_or_else(|| {
        Parse::Invalid(
            format!("numbers.{key}"),
            "expected a list of digit prefixes".into(),
        )
    })?;
    items
        .iter()
        .map(|i| {
            i.as_str()
                .map(crate::stir::passport::canonical_tn)
                .filter(|d| !d.is_empty())
                .ok_or_else(|| {
                    Parse::Invalid(
                        format!("numbers.{key}"),
                        "entries are number prefixes (digits)".into(),
                    )
                })
        })
        .collect()
}

fn text_list(t: &toml::Table, key: &str) -> Result<Vec<String>, Parse> {
    let Some(v) = t.get(key) else {
        return Ok(vec![]);
    };
    v.as_array()
        .ok_or_else(|| {
            Parse::Invalid(
                format!("numbers.{key}"),
                "expected a list of strings".into(),
            )
        })?
        .iter()
        .map(|i| {
            i.as_str()
                .map(str::to_owned)
                .ok_or_else(|| Parse::Invalid(format!("numbers.{key}"), "expected strings".into()))
        })
        .collect()
}

fn numbers(v: Option<&toml::Value>) -> Result<Numbers, Parse> {
    let Some(t) = v else {
        return Ok(Numbers::default());
    };
    let t = t
        .as_table()
        .ok_or_else(|| Parse::Invalid("numbers".into(), "expected a table".into()))?;
    for k in t.keys() {
        if ![
            "own",
            "unassigned",
            "trunk_domains",
            "user_agents",
            "utc_offset_minutes",
        ]
        .contains(&k.as_str())
        {
            return Err(Parse::Invalid(format!("numbers.{k}"), "unknown key".into()));
        }
    }
    Ok(Numbers {
        own: digit_list(t, "own")?,
        unassigned: digit_list(t, "unassigned")?,
        trunk_domains: text_list(t, "trunk_domains")?
            .into_iter()
            .map(|d| d.to_ascii_lowercase())
            .collect(),
        user_agents: text_list(t, "user_agents")?,
        utc_offset_minutes: match t.get("utc_offset_minutes") {
            None => 0,
            Some(v) => v
                .as_integer()
                .filter(|m| (-14 * 60..=14 * 60).contains(m))
                .ok_or_else(|| {
                    Parse::Invalid(
                        "numbers.utc_offset_minutes".into(),
                        "minutes from -840 to 840".into(),
                    )
                })? as i32,
        },
    })
}

fn velocities(v: Option<&toml::Value>) -> Result<Vec<Velocity>, Parse> {
    let Some(t) = v else { return Ok(vec![]) };
    let t = t.as_table().ok_or_else(|| {
        Parse::Invalid("velocity".into(), "expected [velocity.NAME] tables".into())
    })?;
    let mut out = Vec::new();
    for (name, spec) in t {
        let at = |k: &str| format!("velocity.{name}.{k}");
        let spec = spec
            .as_table()
            .ok_or_else(|| Parse::Invalid(format!("velocity.{name}"), "expected a table".into()))?;
        let prefix_len = spec.get("prefix_len").and_then(toml::Value::as_integer);
        let key = match spec.get("key").and_then(toml::Value::as_str) {
            Some("calling") => VelocityKey::Calling,
            Some("called") => VelocityKey::Called,
            Some("origid") => VelocityKey::Origid,
            Some("calling_prefix") => VelocityKey::CallingPrefix(
                prefix_len.filter(|n| (1..=15).contains(n)).ok_or_else(|| {
                    Parse::Invalid(
                        at("prefix_len"),
                        "required for calling_prefix: 1 to 15 digits".into(),
                    )
                })? as usize,
            ),
            _ => {
                return Err(Parse::Invalid(
                    at("key"),
                    "\"calling\", \"called\", \"origid\" or \"calling_prefix\"".into(),
                ))
            }
        };
        let secs = spec
            .get("window_secs")
            .and_then(toml::Value::as_integer)
            .filter(|s| (1..=7 * 86_400).contains(s))
            .ok_or_else(|| {
                Parse::Invalid(at("window_secs"), "required: 1 second to 7 days".into())
            })?;
        out.push(Velocity {
            name: name.clone(),
            key,
            window: std::time::Duration::from_secs(secs as u64),
        });
    }
    Ok(out)
}
