//! The `callgate` binary: parses the command line and dispatches to the
//! subcommand's body in [`commands`]. See `callgate --help` and
//! docs/operations.md.

mod commands;

use std::process::ExitCode;

use clap::Parser;

use callgate::cli::{Cli, Command};
use commands::{check_config, corpus, ctl, demo, reload, replay, report, run, sign, trace, verify};

/// mimalloc instead of glibc's malloc: see docs/decisions/0006-allocator.md
/// (feature `mimalloc`, on by default).
#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Ctl { how, verb } => ctl::ctl(&how, &verb),
        Command::CheckConfig { file } => check_config::check_config(&file),
        Command::Run { config } => run::start(config),
        Command::Demo { keep } => demo::main(keep),
        Command::Corpus {
            policy,
            corpus: file,
            db,
            json,
        } => corpus::main(policy, file, db, json),
        Command::Reload { pid, timeout_secs } => {
            reload::reload(pid, std::time::Duration::from_secs(timeout_secs))
        }
        Command::Replay {
            policy,
            db,
            pcap,
            baseline,
            since,
            until,
            json,
            labelled,
        } => replay::replay(
            &policy,
            db,
            pcap,
            baseline,
            since.as_deref(),
            until.as_deref(),
            json,
            labelled,
        ),
        Command::Trace {
            verb:
                callgate::cli::TraceVerb::ToSipp {
                    capture,
                    out,
                    call_id,
                    max_pause_ms,
                    resign,
                    x5u,
                    keep_identity,
                    expect,
                    expect_file,
                },
        } => trace::to_sipp(
            &capture,
            &out,
            call_id,
            max_pause_ms,
            trace::Identity {
                resign: resign.zip(x5u),
                keep: keep_identity,
            },
            trace::Expect {
                list: expect,
                file: expect_file,
            },
        ),
        Command::Report {
            db,
            since,
            until,
            html,
            json,
        } => report::report(&db, since.as_deref(), until.as_deref(), html, json),
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
            None => sign::sign(&orig, &dest, attest, origid, &x5u, &key, iat),
            Some(n) => sign::sign_csv(&orig, &dest, attest, &x5u, &key, iat, n),
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
            (Some(cert), _) => verify::verify(
                identity.first().map(String::as_str).unwrap_or_default(),
                &from,
                &to,
                &cert,
                at,
                freshness,
            ),
            (None, Some(trust)) => verify::verify_fetching(
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
