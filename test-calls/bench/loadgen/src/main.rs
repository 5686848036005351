//! sip-loadgen uas --listen ADDR [--stats-s S] [--idle-exit-s S] [--tick-us US]
//! sip-loadgen uac --target ADDR --rate R --calls N [--hold-ms MS]
//!                 [--timeout-s T] [--to-user X] [--inf FILE] [--bind ADDR] [--tick-us US]
//!                 [--json FILE]
//! sip-loadgen flood --target ADDR --kind KIND [--rate R] [--duration-s S] [--bind ADDR]
//!                   [--x5u-base URL] [--x5u-count N] [--conns N] [--json FILE]
//!
//! The UAC prints "<successful> <failed>" on stdout and a breakdown of
//! failures and retransmissions on stderr (and, with --json, the same as a
//! JSON object in FILE).

use sip_loadgen::{flood, uac, uas};
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage:
  sip-loadgen uas --listen 127.0.0.1:PORT [--stats-s 1] [--idle-exit-s 0] [--tick-us 1000]
  sip-loadgen uac --target 127.0.0.1:PORT --rate R --calls N [--hold-ms 200]
                  [--timeout-s N/R+30] [--to-user service] [--inf FILE] [--bind 127.0.0.1:0]
                  [--tick-us 1000] [--json FILE]
  sip-loadgen flood --target 127.0.0.1:PORT --kind invite|identity|options|register|response|
                    oversized|headers|vias|halfopen [--rate 0] [--duration-s 10] [--bind 127.0.0.2:0]
                    [--x5u-base https://192.0.2.1] [--x5u-count 1000] [--conns 1000] [--json FILE]
--rate 0 (flood): as fast as the socket takes them.
--tick-us: wake every so many microseconds and handle everything due
(0: wake on every datagram and deadline instead).";

fn die(msg: &str) -> ExitCode {
    eprintln!("sip-loadgen: {msg}\n{USAGE}");
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some(mode) = args.first() else {
        return die("no mode");
    };
    let mut opts = std::collections::HashMap::new();
    let mut it = args[1..].iter();
    while let Some(k) = it.next() {
        let Some(name) = k.strip_prefix("--") else {
            return die(&format!("unexpected argument {k}"));
        };
        let Some(v) = it.next() else {
            return die(&format!("{k} needs a value"));
        };
        opts.insert(name.to_string(), v.clone());
    }
    // An optional value: None if absent.
    macro_rules! opt {
        ($name:expr, $ty:ty) => {
            match opts.remove($name) {
                None => None,
                Some(v) => match v.parse::<$ty>() {
                    Ok(x) => Some(x),
                    Err(_) => return die(&format!("bad --{} {v}", $name)),
                },
            }
        };
    }
    macro_rules! get {
        ($name:expr, $ty:ty, $default:expr) => {
            match opts.remove($name) {
                None => $default,
                Some(v) => match v.parse::<$ty>() {
                    Ok(x) => x,
                    Err(_) => return die(&format!("bad --{} {v}", $name)),
                },
            }
        };
    }
    let code = match mode.as_str() {
        "uas" => {
            let Some(listen) = opt!("listen", std::net::SocketAddr) else {
                return die("--listen is required");
            };
            let cfg = uas::Config {
                listen,
                stats_every: Duration::from_secs_f64(get!("stats-s", f64, 1.0)),
                idle_exit: Duration::from_secs_f64(get!("idle-exit-s", f64, 0.0)),
                tick: Duration::from_micros(get!("tick-us", u64, 1000)),
            };
            if let Some(k) = opts.keys().next() {
                return die(&format!("unknown option --{k}"));
            }
            match uas::Uas::bind(cfg.listen).and_then(|u| u.run(&cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sip-loadgen uas: {e}");
                    ExitCode::from(1)
                }
            }
        }
        "uac" => {
            let Some(target) = opt!("target", std::net::SocketAddr) else {
                return die("--target is required");
            };
            let rate = get!("rate", f64, 0.0);
            let calls = get!("calls", u32, 0);
            if rate.is_nan() || rate <= 0.0 || calls == 0 {
                return die("--rate and --calls are required and positive");
            }
            let inf = match opts.remove("inf") {
                None => None,
                Some(path) => match std::fs::read_to_string(&path) {
                    Ok(t) => {
                        let v = uac::parse_inf(&t);
                        if v.is_empty() {
                            return die(&format!("{path}: no calls"));
                        }
                        if v.len() < calls as usize {
                            eprintln!("sip-loadgen uac: {path} has {} lines for {calls} calls: lines are reused", v.len());
                        }
                        Some(v)
                    }
                    Err(e) => return die(&format!("{path}: {e}")),
                },
            };
            let json_path = opts.remove("json");
            let cfg = uac::Config {
                target,
                bind: get!("bind", std::net::SocketAddr, "127.0.0.1:0".parse().unwrap()),
                rate,
                calls,
                hold: Duration::from_millis(get!("hold-ms", u64, 200)),
                timeout: Duration::from_secs_f64(get!(
                    "timeout-s",
                    f64,
                    f64::from(calls) / rate + 30.0
                )),
                tick: Duration::from_micros(get!("tick-us", u64, 1000)),
                to_user: get!("to-user", String, "service".to_string()),
                inf,
            };
            if let Some(k) = opts.keys().next() {
                return die(&format!("unknown option --{k}"));
            }
            let report = match uac::Uac::new(&cfg) {
                Ok(u) => u.run(),
                Err(e) => {
                    eprintln!("sip-loadgen uac: {e}");
                    return ExitCode::from(1);
                }
            };
            let mut report = report;
            println!("{} {}", report.ok, report.failed);
            eprintln!("{}", report.describe(&cfg));
            if let Some(path) = json_path {
                if let Err(e) = std::fs::write(&path, report.json() + "\n") {
                    eprintln!("sip-loadgen uac: {path}: {e}");
                }
            }
            ExitCode::SUCCESS
        }
        "flood" => {
            let Some(target) = opt!("target", std::net::SocketAddr) else {
                return die("--target is required");
            };
            let Some(kind) = opts.remove("kind").as_deref().and_then(flood::Kind::parse) else {
                return die("--kind is required (invite, identity, options, register, response, oversized, headers, vias, halfopen)");
            };
            let json_path = opts.remove("json");
            let cfg = flood::Config {
                target,
                bind: get!("bind", std::net::SocketAddr, "127.0.0.2:0".parse().unwrap()),
                kind,
                rate: get!("rate", f64, 0.0),
                duration: Duration::from_secs_f64(get!("duration-s", f64, 10.0)),
                x5u_base: get!("x5u-base", String, "https://192.0.2.1".to_string()),
                x5u_count: get!("x5u-count", u32, 1000),
                conns: get!("conns", u32, 1000),
            };
            if let Some(k) = opts.keys().next() {
                return die(&format!("unknown option --{k}"));
            }
            match flood::run(&cfg) {
                Ok(report) => {
                    let json = report.json(&cfg);
                    println!("{json}");
                    if let Some(path) = json_path {
                        if let Err(e) = std::fs::write(&path, json + "\n") {
                            eprintln!("sip-loadgen flood: {path}: {e}");
                        }
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sip-loadgen flood: {e}");
                    ExitCode::from(1)
                }
            }
        }
        _ => return die(&format!("unknown mode {mode}")),
    };
    code
}
