//! Command line: `callgate run | reload | check-config | demo | corpus | sign |
//! verify | report | replay | trace | ctl` (the bodies are in the binary's `src/commands/`).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// callgate: a SIP middlebox between a carrier trunk and a contact-centre PBX.
#[derive(Debug, Parser)]
#[command(name = "callgate", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// The operator's control command, over the admin API: calls in
    /// progress, targets, drain and undrain, reload, policy. Exit 0 on
    /// success, 1 when callgate refused or failed (its reason on stderr),
    /// 2 when it could not be asked.
    Ctl {
        #[command(flatten)]
        how: CtlOptions,
        #[command(subcommand)]
        verb: CtlVerb,
    },
    /// What-if before rollout: run recorded calls (from the audit store or
    /// a pcap of SIP) through a candidate policy and print where its
    /// decisions differ. Exit 0 when none differ, 1 when some do.
    Replay {
        /// The candidate policy file.
        #[arg(long)]
        policy: PathBuf,
        /// Replay the decisions in this audit database…
        #[arg(long, conflicts_with = "pcap", required_unless_present = "pcap")]
        db: Option<PathBuf>,
        /// …or the initial INVITEs of this capture (pcap or pcapng).
        #[arg(long)]
        pcap: Option<PathBuf>,
        /// For a capture: compare with this policy (e.g. the active one).
        #[arg(long, requires = "pcap")]
        baseline: Option<PathBuf>,
        /// From this time (audit store): Unix seconds or ISO 8601.
        #[arg(long)]
        since: Option<String>,
        /// Until this time (audit store).
        #[arg(long)]
        until: Option<String>,
        /// Print every replayed call as JSON instead of the differences.
        #[arg(long)]
        json: bool,
        /// Only the calls agents or supervisors gave a verdict (audit
        /// store): what the policy would catch (confirmed fraud sent to
        /// review or rejected) and touch (confirmed customers).
        #[arg(long, requires = "db")]
        labelled: bool,
    },
    /// Captured SIP traces for testers: `trace to-sipp` turns a dialog of a
    /// pcap or pcapng into a sipp scenario pair to replay against callgate.
    Trace {
        #[command(subcommand)]
        verb: TraceVerb,
    },
    /// Consistency report over the audit store: decisions by rule, level,
    /// trunk and hour, review-queue rate, callers treated differently,
    /// shadow-policy disagreements. JSON on stdout unless --html/--json.
    Report {
        /// The audit database (`[audit] path`); several (`--db a.db --db
        /// b.db`, or `--db a.db b.db`), one per instance, are merged.
        #[arg(long, required = true, num_args = 1..)]
        db: Vec<PathBuf>,
        /// From this time: Unix seconds or ISO 8601 (2026-11-24T08:00Z).
        #[arg(long)]
        since: Option<String>,
        /// Until this time (same forms).
        #[arg(long)]
        until: Option<String>,
        /// Write the HTML report here.
        #[arg(long)]
        html: Option<PathBuf>,
        /// Write the JSON report here.
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// Run the proxy. Prints "callgate ready" on stdout once every listener is bound.
    Run {
        /// Configuration file; when the default path does not exist, the
        /// configuration embedded in the binary is used.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: PathBuf,
    },
    /// Reload a running callgate and wait for the outcome: exit 0 when
    /// applied, 1 when refused (the reason on stderr). The systemd unit's
    /// ExecReload=; needs $RUNTIME_DIRECTORY (docs/operations.md).
    Reload {
        /// The running callgate's process id ($MAINPID under systemd).
        #[arg(long)]
        pid: i32,
        /// How long to wait for the outcome.
        #[arg(long, default_value_t = 60)]
        timeout_secs: u64,
    },
    /// Validate a configuration file and exit (0 when valid).
    CheckConfig {
        /// Configuration file to check.
        file: PathBuf,
    },
    /// Run callgate on its embedded defaults between a simulated carrier and
    /// PBX on loopback, place a handful of calls, and print what happened.
    Demo {
        /// Keep callgate running after the tour, with the console on a
        /// loopback port (its URL and a token are printed), until Ctrl-C.
        #[arg(long)]
        keep: bool,
    },
    /// The labelled call corpus (test-calls/corpus/corpus.toml, embedded)
    /// through a callgate under a policy: what it caught and touched.
    Corpus {
        /// The policy to measure (default: the shipped sip-config/policy.toml).
        #[arg(long)]
        policy: Option<PathBuf>,
        /// Another corpus file.
        #[arg(long)]
        corpus: Option<PathBuf>,
        /// Keep the run's audit store here, each call labelled, for
        /// `callgate replay --db FILE --labelled --policy CANDIDATE`.
        #[arg(long)]
        db: Option<PathBuf>,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Sign a SHAKEN PASSporT and print the Identity header value (RFC 8224, 8588).
    Sign {
        /// Calling number.
        #[arg(long)]
        orig: String,
        /// Called number.
        #[arg(long)]
        dest: String,
        /// Attestation level: A, B or C.
        #[arg(long)]
        attest: char,
        /// Origination identifier (default: a new UUID).
        #[arg(long)]
        origid: Option<String>,
        /// https URL of the signing certificate.
        #[arg(long)]
        x5u: String,
        /// PEM private key (PKCS#8 or SEC1, P-256).
        #[arg(long)]
        key: PathBuf,
        /// Issued-at time, seconds since the Unix epoch (default: now).
        #[arg(long)]
        iat: Option<i64>,
        /// Instead of one header, print N lines of a sipp `-inf` CSV for
        /// `test-calls/scenarios/uac-csv.xml`: `orig;dest;Identity: token;x5u`,
        /// the calling number counting up from --orig, each with its own
        /// origid (for load tests with fresh, never-replayed PASSporTs).
        #[arg(long, value_name = "N")]
        csv: Option<u32>,
    },
    /// Verify an Identity header value; prints the verification as JSON and
    /// exits 0 only when it passed.
    Verify {
        /// An Identity header value (repeatable: the SHAKEN PASSporT plus
        /// any `div` (RFC 8946) and `rcd` (RFC 9795) PASSporTs of the call).
        #[arg(long, required = true)]
        identity: Vec<String>,
        /// Calling number as the SIP request carries it (P-Asserted-Identity or From).
        #[arg(long)]
        from: String,
        /// Called number (To or Request-URI).
        #[arg(long)]
        to: String,
        /// Directory of PEM STI trust anchors: fetch the certificate at x5u
        /// and validate its chain at iat.
        #[arg(long)]
        trust: Option<PathBuf>,
        /// Extra CA (PEM) trusted for the HTTPS fetch of x5u, besides the
        /// system roots (repeatable).
        #[arg(long = "x5u-ca")]
        x5u_ca: Vec<PathBuf>,
        /// CRL file (PEM or DER) checked along the chain (repeatable).
        #[arg(long)]
        crl: Vec<PathBuf>,
        /// Also fetch CRLs from the certificates' distribution points.
        #[arg(long)]
        crl_fetch: bool,
        /// Allow x5u on private and loopback addresses (tests).
        #[arg(long)]
        allow_private_x5u: bool,
        /// How long to wait for the certificate, milliseconds.
        #[arg(long, default_value_t = 2000)]
        deadline_ms: u64,
        /// Offline instead: the signer's PEM certificate or public key (no
        /// fetch, no chain check).
        #[arg(long, conflicts_with = "trust")]
        cert: Option<PathBuf>,
        /// Verify as of this time, seconds since the Unix epoch (default: now).
        #[arg(long)]
        at: Option<i64>,
        /// Freshness window for iat, seconds.
        #[arg(long, default_value_t = 60)]
        freshness: i64,
    },
}

/// Where and how `callgate ctl` reaches the admin API.
#[derive(Debug, clap::Args)]
pub struct CtlOptions {
    /// The admin API: `http://host:port` or `host:port` (default:
    /// `[admin] listen` of --config, else env CALLGATE_ADMIN, else
    /// 127.0.0.1:9060).
    #[arg(long, global = true)]
    pub admin: Option<String>,
    /// Read the admin address and token file from this configuration.
    #[arg(long, short, global = true)]
    pub config: Option<PathBuf>,
    /// The bearer token's file (default: `[admin] token_file` of
    /// --config, else env CALLGATE_ADMIN_TOKEN_FILE).
    #[arg(long, global = true)]
    pub token_file: Option<PathBuf>,
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
}

/// What `callgate ctl` does.
#[derive(Debug, Subcommand)]
pub enum CtlVerb {
    /// Calls in progress: decision, state, media.
    Calls {
        /// Every live instance's calls, when several share a state store
        /// (`[state] share_console`), with an INSTANCE column; without it,
        /// this instance's alone (what a drain waits for).
        #[arg(long)]
        all: bool,
    },
    /// One call in progress, by Call-ID or decision id.
    Call { id: String },
    /// Each side's targets: health, last probe, operator override.
    Targets,
    /// Take a target out of rotation (`disable`) or put it back (`enable`).
    Target {
        #[arg(value_enum)]
        action: TargetAction,
        /// `trunk` (the carrier's SBCs) or `pbx` (the PBX nodes).
        side: String,
        /// The target's URI as configured, or its address (ip:port).
        target: String,
    },
    /// Refuse new INVITEs (503 + Retry-After), keep calls; keep running.
    Drain,
    /// Take new INVITEs again after `drain`.
    Undrain,
    /// Re-read the configuration: what changed, or why it was refused.
    Reload,
    /// Active and shadow policy: versions, rules, disagreements.
    Policy,
}

/// What `callgate trace` does.
#[derive(Debug, Subcommand)]
pub enum TraceVerb {
    /// Write `DIR/uac.xml` (the side that sent the initial request),
    /// `DIR/uas.xml` (the other side) and `DIR/README.md` (the sipp
    /// commands) reproducing one dialog of the capture. Exit 0 when
    /// written, 1 when the capture holds no such dialog, 2 when the
    /// capture, the directory, the --resign key or the expectations could
    /// not be used.
    ToSipp {
        /// The capture (pcap or pcapng; UDP, IP fragments reassembled, TCP).
        capture: PathBuf,
        /// The output directory (created if missing).
        #[arg(long)]
        out: PathBuf,
        /// The dialog to convert, by Call-ID (default: the first call, an
        /// initial INVITE, else the first request; the others are listed
        /// on stderr).
        #[arg(long)]
        call_id: Option<String>,
        /// The longest pause written between two messages, milliseconds.
        #[arg(long, default_value_t = 5000)]
        max_pause_ms: u64,
        /// Re-sign each Identity header of the dialog's requests with this
        /// P-256 private key (PEM, owner-only; e.g. test-calls/sti-pki.sh's
        /// sti-key.pem): the captured attestation, orig, dest and origid
        /// are kept, `iat` is now. Run the replay within callgate's
        /// `[stir] freshness_secs` (60 s by default) of the conversion.
        /// Without --resign or --keep-identity, captured Identity headers
        /// are replayed stale, with a warning.
        #[arg(
            long,
            value_name = "KEY",
            requires = "x5u",
            conflicts_with = "keep_identity"
        )]
        resign: Option<PathBuf>,
        /// https URL of the certificate of the --resign key (the re-signed
        /// PASSporTs' x5u).
        #[arg(long, value_name = "URL", requires = "resign")]
        x5u: Option<String>,
        /// Replay the captured Identity headers as they are, stale, on
        /// purpose (a test of callgate's freshness check).
        #[arg(long)]
        keep_identity: bool,
        /// What callgate must do to the call, checked by the scenarios:
        /// comma-separated `key=value` of `level=low|medium|high|critical`,
        /// `action=tag|review|reject`, `verstat=VALUE`,
        /// `reasons=CODE+CODE` (in rule order, or `none`),
        /// `review_uri=URI` (with action=review), `status=CODE` (with
        /// action=reject). The UAS then fails (sipp exits non-zero) when the
        /// INVITE callgate forwards differs; without it, the UAS logs what
        /// it saw (sipp `-trace_logs`).
        #[arg(long, value_name = "KEY=VALUE,...", conflicts_with = "expect_file")]
        expect: Option<String>,
        /// The same expectations from a file, one `key=value` a line
        /// (`#` starts a comment line).
        #[arg(long, value_name = "FILE")]
        expect_file: Option<PathBuf>,
    },
}

/// `ctl target disable|enable`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetAction {
    Disable,
    Enable,
}

pub const DEFAULT_CONFIG: &str = "sip-config/callgate.toml";
