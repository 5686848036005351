//! Times on the command line: `--since`/`--until` as Unix seconds or ISO
//! 8601, and the current Unix time for defaults.

/// Unix milliseconds of `s`: Unix seconds, or ISO 8601 UTC
/// (`YYYY-MM-DD`, `YYYY-MM-DDTHH:MM[:SS][Z]`).
fn parse_time(s: &str) -> Result<i64, String> {
    if let Ok(secs) = s.parse::<i64>() {
        return Ok(secs * 1000);
    }
    let bad = || format!("{s:?}: expected Unix seconds or YYYY-MM-DD[THH:MM[:SS]][Z]");
    let s = s.trim_end_matches('Z');
    let (date, time) = s.split_once('T').unwrap_or((s, "00:00:00"));
    let d: Vec<i64> = date
        .split('-')
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let t: Vec<i64> = time
        .split(':')
        .map(|x| x.parse().map_err(|_| bad()))
        .collect::<Result<_, _>>()?;
    let [y, m, day] = d[..] else {
        return Err(bad());
    };
    let (hh, mm, ss) = match t[..] {
        [h, m] => (h, m, 0),
        [h, m, s] => (h, m, s),
        _ => return Err(bad()),
    };
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return Err(bad());
    }
    let days = callgate::pki::civil::days_from_civil(y, m, day);
    Ok(((days * 86_400) + hh * 3600 + mm * 60 + ss) * 1000)
}

pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// `--since` and `--until` as Unix milliseconds (each optional).
pub fn time_range(
    since: Option<&str>,
    until: Option<&str>,
) -> Result<(Option<i64>, Option<i64>), String> {
    Ok((
        since.map(parse_time).transpose()?,
        until.map(parse_time).transpose()?,
    ))
}
