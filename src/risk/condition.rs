//! Rule conditions: a small typed language over named signals, compiled
//! from a rule's `when` table at load and evaluated in nanoseconds
//! (docs/policy.md; ADR 0005 says why not CEL).
//!
//! Evaluation is three-valued: a predicate on a signal whose source was
//! unavailable is *unknown*; `all`/`any`/`not` combine unknowns the way SQL
//! does, and a rule whose condition ends unknown fires or not according to
//! the policy's `[unavailable]` mode for that source (fail closed / open).

use super::signals::{Signals, Stir};

/// Where a signal comes from, for the fail-open/closed choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Source {
    Stir,
    Velocity,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Stir => "stir",
            Source::Velocity => "velocity",
        }
    }
}

/// A boolean signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flag {
    Replayed,
    Diverted,
    Rcd,
    Anonymous,
    FromPaiMismatch,
    DiversionHeader,
    PaiForeignDomain,
    UserAgentUnexpected,
    E164Invalid,
    Unassigned,
    OwnNumber,
}

impl Flag {
    pub const ALL: [(&'static str, Flag); 11] = [
        ("replayed", Flag::Replayed),
        ("diverted", Flag::Diverted),
        ("rcd", Flag::Rcd),
        ("anonymous", Flag::Anonymous),
        ("from_pai_mismatch", Flag::FromPaiMismatch),
        ("diversion_header", Flag::DiversionHeader),
        ("pai_foreign_domain", Flag::PaiForeignDomain),
        ("user_agent_unexpected", Flag::UserAgentUnexpected),
        ("e164_invalid", Flag::E164Invalid),
        ("unassigned", Flag::Unassigned),
        ("own_number", Flag::OwnNumber),
    ];

    fn read(self, s: &Signals) -> Option<bool> {
        let stir = s.stir.is_some();
        match self {
            Flag::Replayed => stir.then_some(s.replayed),
            Flag::Diverted => stir.then_some(s.diverted),
            Flag::Rcd => stir.then_some(s.rcd),
            Flag::Anonymous => Some(s.anonymous),
            Flag::FromPaiMismatch => Some(s.from_pai_mismatch),
            Flag::DiversionHeader => Some(s.diversion_header),
            Flag::PaiForeignDomain => Some(s.pai_foreign_domain),
            Flag::UserAgentUnexpected => Some(s.user_agent_unexpected),
            Flag::E164Invalid => Some(s.e164_invalid),
            Flag::Unassigned => Some(s.unassigned),
            Flag::OwnNumber => Some(s.own_number),
        }
    }

    fn source(self) -> Option<Source> {
        matches!(self, Flag::Replayed | Flag::Diverted | Flag::Rcd).then_some(Source::Stir)
    }
}

/// One predicate over the signals.
#[derive(Debug, Clone, PartialEq)]
pub enum Pred {
    /// The STIR outcome is one of these.
    Stir(Vec<Stir>),
    /// The attestation is one of these (`None` matches no attestation).
    Attest(Vec<Option<char>>),
    /// The verification failed with one of these response codes.
    StirCause(Vec<u16>),
    /// `iat` is older than this many seconds.
    IatAgeOver(i64),
    Flag(Flag, bool),
    /// The calling number is (or is not) on the named list.
    List(String, bool),
    /// The named velocity window counted at least this many calls.
    Velocity(String, u64),
    /// The local hour is in `[from, to)`, wrapping past midnight.
    Hours(u8, u8),
    /// The weekday (bit 0 = Monday) is in the mask.
    Days(u8),
}

/// A compiled condition.
#[derive(Debug, Clone, PartialEq)]
pub enum Cond {
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
    Pred(Pred),
}

/// Three-valued result: `Unknown` carries the first unavailable source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Truth {
    True,
    False,
    Unknown(Source),
}

impl Truth {
    fn of(b: bool) -> Truth {
        if b {
            Truth::True
        } else {
            Truth::False
        }
    }
}

impl Pred {
    fn eval(&self, s: &Signals) -> Truth {
        let stir = |f: &dyn Fn(Stir) -> bool| match s.stir {
            Some(st) => Truth::of(f(st)),
            None => Truth::Unknown(Source::Stir),
        };
        match self {
            Pred::Stir(any) => stir(&|st| any.contains(&st)),
            Pred::Attest(any) => stir(&|_| any.contains(&s.attest)),
            Pred::StirCause(any) => stir(&|_| s.stir_cause.is_some_and(|c| any.contains(&c))),
            Pred::IatAgeOver(secs) => stir(&|_| s.iat_age_secs.is_some_and(|a| a > *secs)),
            Pred::Flag(flag, want) => match flag.read(s) {
                Some(v) => Truth::of(v == *want),
                None => Truth::Unknown(flag.source().unwrap_or(Source::Stir)),
            },
            Pred::List(name, want) => Truth::of(s.lists.iter().any(|l| l == name) == *want),
            Pred::Velocity(name, at_least) => match s.velocity(name) {
                Some(n) => Truth::of(n >= *at_least),
                None => Truth::Unknown(Source::Velocity),
            },
            Pred::Hours(from, to) => {
                let h = s.hour;
                Truth::of(if from <= to {
                    (*from..*to).contains(&h)
                } else {
                    h >= *from || h < *to
                })
            }
            Pred::Days(mask) => Truth::of(mask & (1 << s.weekday) != 0),
        }
    }
}

impl Cond {
    /// Evaluates the condition (SQL-style three-valued logic).
    pub fn eval(&self, s: &Signals) -> Truth {
        match self {
            Cond::Pred(p) => p.eval(s),
            Cond::Not(c) => match c.eval(s) {
                Truth::True => Truth::False,
                Truth::False => Truth::True,
                u => u,
            },
            Cond::All(cs) => {
                let mut unknown = None;
                for c in cs {
                    match c.eval(s) {
                        Truth::False => return Truth::False,
                        Truth::Unknown(src) => {
                            unknown.get_or_insert(src);
                        }
                        Truth::True => {}
                    }
                }
                unknown.map_or(Truth::True, Truth::Unknown)
            }
            Cond::Any(cs) => {
                let mut unknown = None;
                for c in cs {
                    match c.eval(s) {
                        Truth::True => return Truth::True,
                        Truth::Unknown(src) => {
                            unknown.get_or_insert(src);
                        }
                        Truth::False => {}
                    }
                }
                unknown.map_or(Truth::False, Truth::Unknown)
            }
        }
    }

    /// Names of the velocity windows the condition reads.
    pub fn velocities<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Cond::Pred(Pred::Velocity(name, _)) => out.push(name),
            Cond::Pred(_) => {}
            Cond::Not(c) => c.velocities(out),
            Cond::All(cs) | Cond::Any(cs) => cs.iter().for_each(|c| c.velocities(out)),
        }
    }

    /// Names of the lists the condition reads.
    pub fn lists<'a>(&'a self, out: &mut Vec<&'a str>) {
        match self {
            Cond::Pred(Pred::List(name, _)) => out.push(name),
            Cond::Pred(_) => {}
            Cond::Not(c) => c.lists(out),
            Cond::All(cs) | Cond::Any(cs) => cs.iter().for_each(|c| c.lists(out)),
        }
    }
}

/// Compiles a `when` table. Errors name the offending key under `at`
/// (e.g. `when.stir`).
pub fn compile(table: &toml::Table, at: &str) -> Result<Cond, String> {
    let mut all = Vec::new();
    let mut velocity: Option<String> = None;
    let mut at_least: Option<u64> = None;
    for (key, value) in table {
        let here = format!("{at}.{key}");
        let strings = || -> Result<Vec<String>, String> {
            match value {
                toml::Value::String(s) => Ok(vec![s.clone()]),
                toml::Value::Array(a) => a
                    .iter()
                    .map(|v| {
                        v.as_str()
                            .map(str::to_owned)
                            .ok_or_else(|| format!("{here}: expected strings"))
                    })
                    .collect(),
                _ => Err(format!("{here}: expected a string or a list of strings")),
            }
        };
        let boolean = || {
            value
                .as_bool()
                .ok_or_else(|| format!("{here}: expected true or false"))
        };
        let pred = match key.as_str() {
            "stir" => Pred::Stir(
                strings()?
                    .iter()
                    .map(|v| match v.as_str() {
                        "passed" => Ok(Stir::Passed),
                        "failed" => Ok(Stir::Failed),
                        "none" => Ok(Stir::None),
                        other => Err(format!(
                            "{here}: {other:?} is not \"passed\", \"failed\" or \"none\""
                        )),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            "attest" => Pred::Attest(
                strings()?
                    .iter()
                    .map(|v| match v.as_str() {
                        "A" | "B" | "C" => Ok(v.chars().next()),
                        "none" => Ok(None),
                        other => Err(format!("{here}: {other:?} is not A, B, C or \"none\"")),
                    })
                    .collect::<Result<_, _>>()?,
            ),
            "stir_cause" => {
                let codes: Vec<u16> = match value {
                    toml::Value::Integer(i) => vec![*i],
                    toml::Value::Array(a) => a.iter().filter_map(toml::Value::as_integer).collect(),
                    _ => vec![],
                }
                .into_iter()
                .filter_map(|i| u16::try_from(i).ok())
                .filter(|c| (300..700).contains(c))
                .collect();
                if codes.is_empty() {
                    return Err(format!(
                        "{here}: expected SIP response codes (e.g. 438 or [403, 438])"
                    ));
                }
                Pred::StirCause(codes)
            }
            "iat_age_over" => Pred::IatAgeOver(
                value
                    .as_integer()
                    .filter(|i| *i >= 0)
                    .ok_or_else(|| format!("{here}: expected seconds (an integer ≥ 0)"))?,
            ),
            "list" | "not_list" => {
                let names = strings()?;
                let want = key == "list";
                let mut any: Vec<Cond> = names
                    .into_iter()
                    .map(|n| Cond::Pred(Pred::List(n, want)))
                    .collect();
                if any.len() == 1 {
                    all.push(any.remove(0));
                } else if want {
                    all.push(Cond::Any(any));
                } else {
                    all.push(Cond::All(any));
                }
                continue;
            }
            "velocity" => {
                velocity = Some(
                    value
                        .as_str()
                        .ok_or_else(|| {
                            format!("{here}: expected the name of a [velocity.NAME] window")
                        })?
                        .to_owned(),
                );
                continue;
            }
            "at_least" => {
                at_least = Some(
                    value
                        .as_integer()
                        .and_then(|i| u64::try_from(i).ok())
                        .filter(|i| *i >= 1)
                        .ok_or_else(|| format!("{here}: expected a count ≥ 1"))?,
                );
                continue;
            }
            "hours" => {
                let h: Vec<i64> = value
                    .as_array()
                    .map(|a| a.iter().filter_map(toml::Value::as_integer).collect())
                    .unwrap_or_default();
                match h.as_slice() {
                    [from, to] if (0..24).contains(from) && (0..=24).contains(to) && from != to => {
                        Pred::Hours(*from as u8, *to as u8)
                    }
                    _ => {
                        return Err(format!(
                            "{here}: expected [from, to) local hours, e.g. [22, 6]"
                        ))
                    }
                }
            }
            "days" => {
                let mut mask = 0u8;
                for d in strings()? {
                    let i = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
                        .iter()
                        .position(|x| d.eq_ignore_ascii_case(x))
                        .ok_or_else(|| format!("{here}: {d:?} is not a day (mon … sun)"))?;
                    mask |= 1 << i;
                }
                Pred::Days(mask)
            }
            "any" => {
                let items = value
                    .as_array()
                    .ok_or_else(|| format!("{here}: expected a list of condition tables"))?;
                let mut any = Vec::new();
                for (i, item) in items.iter().enumerate() {
                    let t = item
                        .as_table()
                        .ok_or_else(|| format!("{here}[{i}]: expected a condition table"))?;
                    any.push(compile(t, &format!("{here}[{i}]"))?);
                }
                if any.is_empty() {
                    return Err(format!("{here}: empty"));
                }
                all.push(Cond::Any(any));
                continue;
            }
            "not" => {
                let t = value
                    .as_table()
                    .ok_or_else(|| format!("{here}: expected a condition table"))?;
                all.push(Cond::Not(Box::new(compile(t, &here)?)));
                continue;
            }
            other => match Flag::ALL.iter().find(|(n, _)| *n == other) {
                Some((_, flag)) => Pred::Flag(*flag, boolean()?),
                None => {
                    return Err(format!(
                        "{here}: unknown condition (see docs/policy.md for the signals)"
                    ))
                }
            },
        };
        all.push(Cond::Pred(pred));
    }
    match (velocity, at_least) {
        (Some(name), Some(n)) => all.push(Cond::Pred(Pred::Velocity(name, n))),
        (None, None) => {}
        (Some(_), None) => return Err(format!("{at}: velocity needs at_least")),
        (None, Some(_)) => return Err(format!("{at}: at_least needs velocity")),
    }
    match all.len() {
        0 => Err(format!("{at}: empty condition")),
        1 => Ok(all.remove(0)),
        _ => Ok(Cond::All(all)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cond(text: &str) -> Result<Cond, String> {
        let t: toml::Table = toml::from_str(text).map_err(|e| e.to_string())?;
        compile(&t, "when")
    }

    #[test]
    fn compiles_and_evaluates_three_valued() {
        let c =
            cond("stir = \"failed\"\nattest = [\"A\", \"B\"]").unwrap_or_else(|e| panic!("{e}"));
        let mut s = Signals::default();
        assert_eq!(c.eval(&s), Truth::Unknown(Source::Stir));
        s.stir = Some(Stir::Failed);
        assert_eq!(c.eval(&s), Truth::False);
        s.attest = Some('B');
        assert_eq!(c.eval(&s), Truth::True);
        let v = cond("velocity = \"ani\"\nat_least = 3").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(v.eval(&s), Truth::Unknown(Source::Velocity));
        s.velocity = vec![("ani".into(), Some(3))];
        assert_eq!(v.eval(&s), Truth::True);
        let any = cond("any = [{ list = \"dno\" }, { anonymous = true }]")
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(any.eval(&s), Truth::False);
        s.lists.push("dno".into());
        assert_eq!(any.eval(&s), Truth::True);
        let not = cond("not = { stir = \"passed\" }").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(not.eval(&s), Truth::True);
        let night = cond("hours = [22, 6]").unwrap_or_else(|e| panic!("{e}"));
        s.hour = 23;
        assert_eq!(night.eval(&s), Truth::True);
        s.hour = 12;
        assert_eq!(night.eval(&s), Truth::False);
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            ("stir = \"maybe\"", "when.stir"),
            ("colour = \"red\"", "when.colour"),
            ("velocity = \"x\"", "velocity needs at_least"),
            ("hours = [5]", "when.hours"),
            ("days = [\"funday\"]", "when.days"),
            ("stir_cause = \"x\"", "when.stir_cause"),
            ("any = [1]", "when.any[0]"),
            ("anonymous = 1", "when.anonymous"),
        ] {
            let e = cond(text).err().unwrap_or_default();
            assert!(e.contains(key), "{text}: {e}");
        }
    }
}
