//! `callgate run`: loads the configuration (the embedded one when the
//! default path does not exist), sets up logging, runs the service until
//! SIGTERM/SIGINT and drains.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use callgate::cli::DEFAULT_CONFIG;
use callgate::config::{Config, LogFormat};

/// Runs callgate on the configuration at `config`.
pub fn start(config: PathBuf) -> ExitCode {
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
    warn_demo_key(&cfg);
    run(cfg, path)
}

/// The demo key in `sip-config/tls/` is public (it is in the repository):
/// whoever has it can impersonate this callgate to the carrier or the PBX.
/// Running with it is allowed (the test suite does, on loopback) but never
/// quietly.
fn warn_demo_key(cfg: &Config) {
    for (key, side) in [("trunk.tls_key", &cfg.trunk), ("pbx.tls_key", &cfg.pbx)] {
        if let Some(path) = side.tls_key.as_deref() {
            if callgate::config::secret::is_demo_key(path) {
                tracing::error!(
                    key,
                    path = %path.display(),
                    "{key} is the PUBLIC demo key shipped in sip-config/tls: anyone can impersonate this callgate; generate a key of your own"
                );
            }
        }
    }
}

/// Logs to stderr at the configured level and format (`RUST_LOG`, when
/// set, overrides the level).
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

/// Starts the service on a single-threaded runtime, prints `callgate ready`
/// with the bound addresses, and returns after the drain.
fn run(cfg: Config, path: Option<PathBuf>) -> ExitCode {
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
    // Every line the signalling thread logs (its tasks run inside this
    // `block_on`) carries the instance name, whatever the log level: the
    // span is at ERROR so that no filter leaves it out.
    let instance = tracing::error_span!("callgate", instance = %cfg.instance);
    let _instance = instance.enter();
    rt.block_on(async move {
        let running = match callgate::gate::start(&cfg, path.clone()).await {
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
        // Every listener is bound: `systemctl start` may return.
        callgate::gate::notify::ready(&format!(
            "serving: trunk {} pbx {} admin {}",
            show(&b.udp[0].or(b.tcp[0]).or(b.tls[0])),
            show(&b.udp[1].or(b.tcp[1]).or(b.tls[1])),
            show(&b.admin)
        ));
        if let (Some(every), Some(path)) = (cfg.watch, path) {
            tokio::spawn(callgate::gate::watch::watch(
                running.gate.clone(),
                path,
                every,
            ));
        }
        running.until_shutdown(cfg.shutdown.drain).await;
        ExitCode::SUCCESS
    })
}
