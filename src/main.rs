//! The `callgate` binary. See `callgate --help` and docs/operations.md.

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

use callgate::cli::{Cli, Command, DEFAULT_CONFIG};
use callgate::config::{Config, LogFormat};

/// mimalloc instead of glibc's malloc: see docs/decisions/0006-allocator.md.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(_) => {
                println!("{}: ok", file.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                ExitCode::from(2)
            }
        },
        Command::Run { config } => {
            let (cfg, path) = if !config.exists() && config == Path::new(DEFAULT_CONFIG) {
                match Config::embedded() {
                    Ok(c) => (c, None),
                    Err(e) => {
                        eprintln!("embedded configuration: {e}");
                        return ExitCode::from(2);
                    }
                }
            } else {
                match Config::load(&config) {
                    Ok(c) => (c, Some(config)),
                    Err(e) => {
                        eprintln!("{}: {e}", config.display());
                        return ExitCode::from(2);
                    }
                }
            };
            init_logging(&cfg);
            run(cfg, path)
        }
        Command::Demo => callgate::demo::main(),
        Command::Replay {
            policy,
            db,
            pcap,
            baseline,
            since,
            until,
            json,
        } => replay(
            &policy,
            db,
            pcap,
            baseline,
            since.as_deref(),
            until.as_deref(),
            json,
        ),
        Command::Report {
            db,
            since,
            until,
            html,
            json,
        } => report(&db, since.as_deref(), until.as_deref(), html, json),
        Command::Sign {
            orig,
            dest,
            attest,
            origid,
            x5u,
            key,
            iat,
            csv,
        } => match csv {
            None => sign(&orig, &dest, attest, origid, &x5u, &key, iat),
            Some(n) => sign_csv(&orig, &dest, attest, &x5u, &key, iat, n),
        },
        Command::Verify {
            identity,
            from,
            to,
            trust,
            x5u_ca,
            crl,
            crl_fetch,
            allow_private_x5u,
            deadline_ms,
            cert,
            at,
            freshness,
        } => match (cert, trust) {
            (Some(cert), _) => verify(
                identity.first().map(String::as_str).unwrap_or_default(),
                &from,
                &to,
                &cert,
                at,
                freshness,
            ),
            (None, Some(trust)) => verify_fetching(
                &identity,
                &from,
                &to,
                &trust,
                &x5u_ca,
                &crl,
                allow_private_x5u,
                deadline_ms,
                at,
                freshness,
                crl_fetch,
            ),
            (None, None) => {
                eprintln!("verify: give --trust DIR (fetch x5u and validate the chain) or --cert FILE (offline)");
                ExitCode::from(2)
            }
        },
    }
}

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
    let days = callgate::stir::x509::days_from_civil(y, m, day);
    Ok(((days * 86_400) + hh * 3600 + mm * 60 + ss) * 1000)
}

#[allow(clippy::too_many_arguments)]
fn replay(
    policy: &Path,
    db: Option<std::path::PathBuf>,
    pcap: Option<std::path::PathBuf>,
    baseline: Option<std::path::PathBuf>,
    since: Option<&str>,
    until: Option<&str>,
    json: bool,
) -> ExitCode {
    use callgate::risk::{policy::Policy, replay};
    let fail = |e: String| {
        eprintln!("replay: {e}");
        ExitCode::from(2)
    };
    let candidate = match Policy::load(policy) {
        Ok(p) => p,
        Err(e) => return fail(e.to_string()),
    };
    let calls = if let Some(db) = db {
        let times = since
            .map(parse_time)
            .transpose()
            .and_then(|a| until.map(parse_time).transpose().map(|b| (a, b)));
        let (since, until) = match times {
            Ok(t) => t,
            Err(e) => return fail(e),
        };
        match callgate::audit::decisions(&db, since, until) {
            Ok(rows) => replay::audited(&rows, &candidate),
            Err(e) => return fail(e.to_string()),
        }
    } else if let Some(pcap) = pcap {
        let base = match baseline.as_deref().map(Policy::load).transpose() {
            Ok(b) => b,
            Err(e) => return fail(e.to_string()),
        };
        let packets = match std::fs::read(&pcap)
            .map_err(|e| format!("{}: {e}", pcap.display()))
            .and_then(|b| {
                callgate::sip::pcap::payloads(&b).map_err(|e| format!("{}: {e}", pcap.display()))
            }) {
            Ok(p) => p,
            Err(e) => return fail(e),
        };
        replay::captured(&packets, &candidate, base.as_ref())
    } else {
        return fail("give --db or --pcap".into());
    };
    let summary = replay::summary(&calls);
    if json {
        let all = serde_json::json!({ "summary": summary, "calls": calls });
        println!("{}", serde_json::to_string_pretty(&all).unwrap_or_default());
    } else {
        for c in calls.iter().filter(|c| c.differs() || c.before.is_none()) {
            let before = c
                .before
                .as_ref()
                .map(|b| format!("{}/{} [{}]", b.level, b.action, b.reasons.join(",")))
                .unwrap_or_else(|| "-".into());
            println!(
                "{}  {}  {}  ->  {}/{} [{}]",
                c.call_id,
                c.calling,
                before,
                c.candidate.level.as_str(),
                c.candidate.action.as_str(),
                c.candidate.reasons().collect::<Vec<_>>().join(",")
            );
        }
        println!(
            "{} calls replayed under {}, {} compared, {} would be decided differently",
            summary.calls, candidate.version, summary.compared, summary.differ
        );
        for (change, n) in &summary.changes {
            println!("  {n:6}  {change}");
        }
    }
    if summary.differ == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn report(
    db: &Path,
    since: Option<&str>,
    until: Option<&str>,
    html: Option<std::path::PathBuf>,
    json: Option<std::path::PathBuf>,
) -> ExitCode {
    use callgate::audit::{decisions, report};
    let times = since
        .map(parse_time)
        .transpose()
        .and_then(|a| until.map(parse_time).transpose().map(|b| (a, b)));
    let (since, until) = match times {
        Ok(t) => t,
        Err(e) => {
            eprintln!("report: {e}");
            return ExitCode::from(2);
        }
    };
    let rows = match decisions(db, since, until) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("report: {e}");
            return ExitCode::from(2);
        }
    };
    let r = report::build(&rows, since, until);
    let text = serde_json::to_string_pretty(&r).unwrap_or_default();
    let mut ok = true;
    if let Some(p) = &html {
        if let Err(e) = std::fs::write(p, report::html(&r)) {
            eprintln!("report: {}: {e}", p.display());
            ok = false;
        }
    }
    if let Some(p) = &json {
        if let Err(e) = std::fs::write(p, &text) {
            eprintln!("report: {}: {e}", p.display());
            ok = false;
        }
    }
    if html.is_none() && json.is_none() {
        println!("{text}");
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

fn sign(
    orig: &str,
    dest: &str,
    attest: char,
    origid: Option<String>,
    x5u: &str,
    key: &Path,
    iat: Option<i64>,
) -> ExitCode {
    use callgate::stir::{keys::SigningKey, sign};
    let key = match std::fs::read(key)
        .map_err(|e| e.to_string())
        .and_then(|pem| SigningKey::from_pem(&pem).map_err(|e| e.to_string()))
    {
        Ok(k) => k,
        Err(e) => {
            eprintln!("{}: {e}", key.display());
            return ExitCode::from(2);
        }
    };
    let origid = origid.unwrap_or_else(sign::new_origid);
    let req = sign::SignRequest {
        orig,
        dest,
        attest,
        origid: &origid,
        x5u,
        iat: iat.unwrap_or_else(unix_now),
    };
    match sign::identity_header(&key, &req) {
        Ok(h) => {
            println!("{h}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("sign: {e}");
            ExitCode::from(2)
        }
    }
}

/// `callgate sign --csv N`: N signed calls as sipp CSV lines.
fn sign_csv(
    orig: &str,
    dest: &str,
    attest: char,
    x5u: &str,
    key: &Path,
    iat: Option<i64>,
    n: u32,
) -> ExitCode {
    use callgate::stir::{keys::SigningKey, passport::canonical_tn, sign};
    use std::io::Write;
    let key = match std::fs::read(key)
        .map_err(|e| e.to_string())
        .and_then(|pem| SigningKey::from_pem(&pem).map_err(|e| e.to_string()))
    {
        Ok(k) => k,
        Err(e) => {
            eprintln!("{}: {e}", key.display());
            return ExitCode::from(2);
        }
    };
    let digits = canonical_tn(orig);
    let Ok(first) = digits.parse::<u128>() else {
        eprintln!("sign: --orig must be a number to count up from");
        return ExitCode::from(2);
    };
    let plus = if orig.starts_with('+') { "+" } else { "" };
    let iat = iat.unwrap_or_else(unix_now);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let _ = writeln!(out, "SEQUENTIAL");
    for i in 0..u128::from(n) {
        let number = format!("{plus}{:0width$}", first + i, width = digits.len());
        let origid = sign::new_origid();
        let req = sign::SignRequest {
            orig: &number,
            dest,
            attest,
            origid: &origid,
            x5u,
            iat,
        };
        match sign::identity_header(&key, &req) {
            Ok(h) => {
                let token = h.split(';').next().unwrap_or_default();
                let _ = writeln!(out, "{number};{dest};Identity: {token};{x5u}");
            }
            Err(e) => {
                eprintln!("sign: {e}");
                return ExitCode::from(2);
            }
        }
    }
    ExitCode::SUCCESS
}

#[allow(clippy::too_many_arguments)]
fn verify_fetching(
    identity: &[String],
    from: &str,
    to: &str,
    trust: &Path,
    x5u_ca: &[std::path::PathBuf],
    crl: &[std::path::PathBuf],
    allow_private: bool,
    deadline_ms: u64,
    at: Option<i64>,
    freshness: i64,
    crl_fetch: bool,
) -> ExitCode {
    use callgate::stir::{certs::TrustStore, fetch, service};
    let mut store = match TrustStore::from_dir(trust) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("verify: {e}");
            return ExitCode::from(2);
        }
    };
    for f in crl {
        if let Err(e) = std::fs::read(f)
            .map_err(|e| e.to_string())
            .and_then(|d| store.add_crl(&d))
        {
            eprintln!("verify: {}: {e}", f.display());
            return ExitCode::from(2);
        }
    }
    let tls = match fetch::tls_config(x5u_ca) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("verify: {e}");
            return ExitCode::from(2);
        }
    };
    let deadline = std::time::Duration::from_millis(deadline_ms);
    let settings = service::VerifierSettings {
        fetch: fetch::FetchOptions {
            tls,
            timeout: deadline,
            max_bytes: 64 * 1024,
            allow_private,
        },
        deadline,
        freshness_secs: freshness,
        skew_secs: 5,
        min_cache: std::time::Duration::from_secs(60),
        max_cache: std::time::Duration::from_secs(86_400),
        negative_ttl: std::time::Duration::from_secs(30),
        max_entries: 1000,
        crl_fetch,
        counters: Default::default(),
        shared: None,
        offload: None,
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("verify: {e}");
            return ExitCode::FAILURE;
        }
    };
    let verifier = service::Verifier::new(settings, store);
    let ids: Vec<&[u8]> = identity.iter().map(|i| i.as_bytes()).collect();
    let v = rt.block_on(verifier.verify_call(&ids, from, &[to], at.unwrap_or_else(unix_now)));
    print_verification(&v)
}

fn print_verification(v: &callgate::stir::verify::Verification) -> ExitCode {
    match serde_json::to_string_pretty(v) {
        Ok(json) => println!("{json}"),
        Err(e) => eprintln!("verify: {e}"),
    }
    if v.status == callgate::stir::verify::Status::Passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

fn verify(
    identity: &str,
    from: &str,
    to: &str,
    cert: &Path,
    at: Option<i64>,
    freshness: i64,
) -> ExitCode {
    use callgate::stir::{keys::PublicKey, passport::Expect, verify};
    let key = match std::fs::read(cert)
        .map_err(|e| e.to_string())
        .and_then(|pem| PublicKey::from_pem(&pem).map_err(|e| e.to_string()))
    {
        Ok(k) => k,
        Err(e) => {
            eprintln!("{}: {e}", cert.display());
            return ExitCode::from(2);
        }
    };
    let dest = [to];
    let expect = Expect {
        orig: from,
        dest: &dest,
        now: at.unwrap_or_else(unix_now),
        freshness_secs: freshness,
        skew_secs: 5,
    };
    print_verification(&verify::verify(identity.as_bytes(), &expect, &key))
}

fn init_logging(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}

fn run(cfg: Config, path: Option<std::path::PathBuf>) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    rt.block_on(async move {
        let running = match callgate::gate::start(&cfg, path).await {
            Ok(r) => r,
            Err(e) => {
                tracing::error!(error = %e, "cannot start");
                eprintln!("callgate: {e}");
                return ExitCode::FAILURE;
            }
        };
        let b = &running.bound;
        let show = |a: &Option<std::net::SocketAddr>| {
            a.map(|a| a.to_string()).unwrap_or_else(|| "-".to_owned())
        };
        println!(
            "callgate ready trunk udp={} tcp={} tls={} pbx udp={} tcp={} tls={} admin={}",
            show(&b.udp[0]),
            show(&b.tcp[0]),
            show(&b.tls[0]),
            show(&b.udp[1]),
            show(&b.tcp[1]),
            show(&b.tls[1]),
            show(&b.admin)
        );
        use std::io::Write;
        let _ = std::io::stdout().flush();
        running.until_shutdown(cfg.shutdown.drain).await;
        ExitCode::SUCCESS
    })
}
