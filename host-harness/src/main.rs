//! `tip-enrich`: enrich IP addresses from a playbook or a shell.
//!
//! stdout is JSON Lines, one object per input in input order. Exit status: 0
//! when every line is a verdict, 1 when any line is an error, 2 for usage or
//! configuration errors. `splunk-lookup` speaks Splunk's CSV instead and
//! exits 0 even when rows failed.

use std::io::{BufRead, BufWriter, IsTerminal, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Arg, ArgMatches, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use host_harness::egress::Egress;
use host_harness::gate::{Cidr, ClientIpHeader, GATE_COMPONENT, Gate, GateOptions};
use host_harness::keyvalue::KvCtx;
use host_harness::output::{
    Shape, error_line, error_to_core, report_line, trap_line, verdict_line, verdict_to_core,
};
use host_harness::recordings::RecordingSet;
use host_harness::runtime::{
    EnrichError, InstanceOptions, Report, Runner, Runtime, Settings, Verdict, empty_settings,
};
use host_harness::serve::{SERVICE_COMPONENT, ServeOptions, Service};
use host_harness::splunk;
use host_harness::store::{self, Guarded, StoreOptions, StoreSpec};
use host_harness::{BUNDLED_RECORDINGS, url_authority};
use indicatif::{ProgressBar, ProgressStyle};
use tip_enrich::events;
use tip_enrich::settings::{self, SETTINGS, Setting};
use tip_enrich::{Config, Purpose, Secrets};

/// Addresses sent to the component in one call, per unit of concurrency:
/// enough to keep every slot busy, small enough to keep memory flat.
const CHUNK_PER_SLOT: usize = 16;
/// Placeholder key for replays without a key (recordings never check it).
const REPLAY_KEY: &str = "replay-without-a-key";

/// Shape of each output line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// The verdict's own fields (README, "Output").
    Native,
    /// Elastic Common Schema threat-enrichment fields (README, "ECS").
    Ecs,
    /// One STIX 2.1 bundle per line (README, "STIX"); an error stays a native error line.
    Stix,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP service world (GET /v1/ip/{ip}, POST /v1/ip, GET /healthz)
    /// with the same egress rules as a lookup: only the base URL's host, or the
    /// recordings with --replay.
    Serve(ServeArgs),
    /// Look into or empty the answer store (--cache / TIP_ENRICH_CACHE).
    Cache {
        #[command(subcommand)]
        action: CacheAction,
    },
    /// Answer Splunk's external lookup protocol: CSV on stdin whose header
    /// names the lookup's fields, rows with the input field filled; the same
    /// header and rows on stdout with the verdict's fields filled (README,
    /// "Splunk"). Exit 0 even when rows failed.
    SplunkLookup(SplunkArgs),
    /// Enrich NDJSON events (ECS documents, one per line) on stdin: the same
    /// events on stdout, in order, one line per line, each with a
    /// `threat.enrichments[]` entry per address found at the fields (README,
    /// "Events"). Lines that are not JSON objects pass through unchanged.
    Events(EventsArgs),
    /// Run an IP-reputation gate component in front of an origin: each
    /// client is judged by its address (written by this host from the
    /// connection, or kept from a --trusted-proxies peer), blocked with 403 or
    /// forwarded with bodies streamed both ways (README, "The gate").
    Gate(GateArgs),
}

/// What the gate does when the decision cannot be made in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum FailMode {
    /// Forward the request (marked `x-tip-gate: fail-open`).
    Open,
    /// Answer 503.
    Closed,
}

#[derive(Debug, Args)]
struct GateArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// Where allowed requests go (http:// or https://); reached live whatever
    /// the lookup's egress.
    #[arg(long, value_name = "URL")]
    origin: String,

    /// The header the host writes the client address into, and the gate
    /// reads: x-forwarded-for, forwarded, spin-client-addr, x-real-ip or
    /// true-client-ip.
    #[arg(long, value_name = "NAME", default_value = "x-forwarded-for")]
    client_ip_header: String,

    /// Peers (CIDR blocks, comma separated) whose copy of the client header
    /// is kept; from any other peer it is replaced by the peer's address.
    #[arg(long, value_name = "CIDR,...", default_value = "")]
    trusted_proxies: String,

    /// Verdicts that are blocked (comma separated). [default: malicious]
    #[arg(long, value_name = "LIST")]
    block: Option<String>,

    /// What to do when the decision fails or is late. [default: open]
    #[arg(long, value_enum, value_name = "open|closed")]
    fail: Option<FailMode>,

    /// Clients always let through, without a lookup (CIDR blocks).
    #[arg(long, value_name = "CIDR,...")]
    allow: Option<String>,

    /// Clients always blocked, without a lookup (CIDR blocks).
    #[arg(long, value_name = "CIDR,...")]
    deny: Option<String>,

    /// Longest wait for a verdict, in ms. [default: 2000]
    #[arg(long, value_name = "N")]
    decision_timeout_ms: Option<u64>,

    /// Send the verdict to the origin in `x-tip-verdict`.
    #[arg(long)]
    verdict_header: bool,

    /// The origin's connect, first-byte and between-bytes timeout, in ms.
    /// [default: 30000]
    #[arg(long, value_name = "N")]
    origin_timeout_ms: Option<u64>,

    /// Run this build of the gate component instead of the bundled one.
    #[arg(long, value_name = "PATH")]
    gate_component: Option<PathBuf>,

    /// Requests handled at once; more wait for a slot (taken once the
    /// request's head is in).
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_in_flight: usize,

    /// A request's head must be complete within this long from the
    /// connection's start (or the previous answer), or the connection is closed.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout_secs: u64,

    /// Longest gap between two pieces of a request body; a longer one ends
    /// the request. Bodies have no total deadline and no size cap.
    #[arg(long, value_name = "N", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    body_idle_timeout_secs: u64,

    /// Limit of one request on its instance, head to the last byte of the
    /// answer (epoch deadline and wall clock), in ms: an hour, so a long
    /// download through the gate is never cut.
    #[arg(long, value_name = "N", default_value_t = 3_600_000, value_parser = clap::value_parser!(u64).range(1..))]
    request_budget_ms: u64,
}

#[derive(Debug, Args)]
struct EventsArgs {
    /// An event field holding an address or an array of them, as a dotted
    /// path (nested objects and dotted keys both count); repeatable, or a
    /// comma-separated list. [default: source.ip, destination.ip, client.ip,
    /// server.ip, host.ip, related.ip]
    #[arg(long = "field", value_name = "PATH")]
    fields: Vec<String>,

    /// Which verdicts become enrichments: all, or a list of malicious,
    /// suspicious, benign, unknown.
    #[arg(long, value_name = "LIST", default_value = "malicious,suspicious")]
    only: String,

    /// Longest line enriched, in bytes; a longer one is passed through
    /// unchanged (and counted on stderr).
    #[arg(long, value_name = "N", default_value_t = 1 << 20, value_parser = clap::value_parser!(u64).range(2..))]
    max_event_bytes: u64,
}

#[derive(Debug, Args)]
struct SplunkArgs {
    /// The column holding the addresses; it is echoed, never overwritten.
    #[arg(long, value_name = "NAME", default_value = "ip")]
    input_field: String,

    /// The lookup's field names, as Splunk passes them from `external_cmd`;
    /// accepted and ignored (the CSV header names the same fields).
    #[arg(value_name = "FIELD")]
    fields: Vec<String>,
}

#[derive(Debug, Subcommand)]
enum CacheAction {
    /// Entries, bytes, the oldest entry and the quota state, as one JSON line.
    Stats,
    /// Delete entries (all of them, or those stored longer ago than --older-than).
    Purge {
        /// Only entries stored longer ago than this: e.g. 30m, 12h, 7d, 1h30m.
        #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
        older_than: Option<Duration>,
    },
}

/// `90s`, `30m`, `12h`, `7d`, `2w`, or a sum of them (`1h30m`); a bare
/// number is seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let mut total: u64 = 0;
    let mut number = String::new();
    for c in text.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit: u64 = match c {
            's' => 1,
            'm' => 60,
            'h' => 3600,
            'd' => 86_400,
            'w' => 604_800,
            _ => {
                return Err(format!(
                    "{text:?}: use a number and s, m, h, d or w (e.g. 7d, 1h30m)"
                ));
            }
        };
        let n: u64 = number
            .parse()
            .map_err(|_| format!("{text:?}: a unit needs a number before it (e.g. 7d)"))?;
        total = total.saturating_add(n.saturating_mul(unit));
        number.clear();
    }
    if text.is_empty() || !number.is_empty() {
        return Err(format!(
            "{text:?}: end with a unit: s, m, h, d or w (e.g. 7d)"
        ));
    }
    Ok(Duration::from_secs(total))
}

#[derive(Debug, Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,

    /// Run this build of the service component instead of the bundled one.
    #[arg(long, value_name = "PATH")]
    service_component: Option<PathBuf>,

    /// Limit of one request on its instance (epoch deadline and wall clock), in ms.
    #[arg(long, value_name = "N", default_value_t = 600_000, value_parser = clap::value_parser!(u64).range(1..))]
    request_budget_ms: u64,

    /// Requests handled at once; more wait for a slot. A request takes a
    /// slot only once its body is in.
    #[arg(long, value_name = "N", default_value_t = 64)]
    max_in_flight: usize,

    /// A request's head must be complete within this long from the
    /// connection's start (or the previous answer), or the connection is closed.
    #[arg(long, value_name = "N", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..))]
    header_timeout_secs: u64,

    /// A request's body must be complete within this long after its head,
    /// or it is answered 408.
    #[arg(long, value_name = "N", default_value_t = 30, value_parser = clap::value_parser!(u64).range(1..))]
    body_timeout_secs: u64,
}

/// Enrich IP addresses with Kaspersky Threat Intelligence Portal verdicts.
///
/// The API key comes from the TIP_API_KEY environment variable or
/// --api-key-file, never from the command line. With no key and no --replay,
/// the bundled recordings are replayed (a demo; said on stderr). Every lookup
/// setting is a flag here and a TIP_* variable (the flag wins); the table is
/// `tip_enrich::settings::SETTINGS`, also in the README.
#[derive(Debug, Parser)]
#[command(name = "tip-enrich", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Addresses to enrich; with none, read from stdin, one per line (blank
    /// lines and lines starting with # are skipped).
    #[arg(value_name = "IP")]
    ips: Vec<String>,

    /// Read the key (user:password for basic) from this file.
    #[arg(long, global = true, value_name = "PATH")]
    api_key_file: Option<PathBuf>,

    /// Answer from the recordings in DIR; unrecorded requests are denied.
    #[arg(long, global = true, value_name = "DIR", conflicts_with = "record")]
    replay: Option<PathBuf>,

    /// Query the live API and write each exchange to DIR (credentials redacted).
    #[arg(long, global = true, value_name = "DIR")]
    record: Option<PathBuf>,

    /// Run this build of the component instead of the bundled one.
    #[arg(long, global = true, value_name = "PATH")]
    component: Option<PathBuf>,

    /// Print the full report: the verdict's fields plus `sections`, the API's answer as JSON (every section unless --sections says otherwise).
    #[arg(long, global = true)]
    full: bool,

    /// Linear-memory cap of the component, in MiB.
    #[arg(long, global = true, value_name = "N", default_value_t = 256)]
    max_memory_mb: usize,

    /// Output shape: native JSON, Elastic Common Schema (`threat.enrichments[]`) or a STIX 2.1 bundle.
    #[arg(long, value_enum, default_value = "native", conflicts_with = "full")]
    format: Format,

    /// With --format ecs: the event field the addresses came from, written as
    /// `threat.enrichments[].matched.field` (e.g. source.ip).
    #[arg(long, value_name = "FIELD")]
    ecs_matched_field: Option<String>,

    /// No progress bar and no end-of-run summary on stderr.
    #[arg(long, global = true, short, global = true)]
    quiet: bool,

    /// Where answers are kept between runs: a SQLite file (PATH), a shared
    /// Redis (redis://HOST:PORT[/DB]), memory (this process only) or off.
    /// [env: TIP_ENRICH_CACHE] [default: answers.sqlite in the cache
    /// directory: $TIP_ENRICH_CACHE_DIR, else $XDG_CACHE_HOME/tip-enrich, else
    /// ~/.cache/tip-enrich]
    #[arg(
        long,
        global = true,
        value_name = "PATH|redis://HOST:PORT[/DB]|memory|off"
    )]
    cache: Option<String>,

    /// Size bound of a SQLite store, in MiB; the oldest entries go first.
    #[arg(long, global = true, value_name = "N", default_value_t = 256)]
    cache_max_mb: u64,
}

/// The store `--cache` / `TIP_ENRICH_CACHE` names, and its size bound.
fn store_spec(cli: &Cli) -> Result<(StoreSpec, StoreOptions)> {
    let spec =
        StoreSpec::resolve(cli.cache.as_deref()).map_err(|e| anyhow::anyhow!("--cache: {e}"))?;
    let options = StoreOptions {
        max_bytes: cli.cache_max_mb.saturating_mul(1024 * 1024),
    };
    Ok((spec, options))
}

/// The answer store of this run, behind [`Guarded`]: a store that cannot be
/// opened is one warning on stderr, and the run goes on without it.
fn open_store(cli: &Cli) -> Result<KvCtx> {
    let (spec, options) = store_spec(cli)?;
    let describe = spec.describe();
    match store::open(&spec, &options) {
        Ok(Some(backend)) => Ok(KvCtx::new(Some(Arc::new(Guarded::new(backend, describe))))),
        Ok(None) => Ok(KvCtx::new(None)),
        Err(e) => {
            eprintln!(
                "tip-enrich: warning: the answer store ({describe}) failed: {e}; lookups go on uncached"
            );
            Ok(KvCtx::new(None))
        }
    }
}

/// `tip-enrich cache stats|purge`.
fn cache_command(cli: &Cli, action: &CacheAction) -> Result<ExitCode> {
    let (spec, options) = store_spec(cli)?;
    let Some(backend) = store::open(&spec, &options)
        .with_context(|| format!("opening the answer store ({})", spec.describe()))?
    else {
        bail!("the answer store is off (--cache off / TIP_ENRICH_CACHE=off): nothing to show");
    };
    let line = match action {
        CacheAction::Stats => host_harness::cache_stats(&*backend)?,
        CacheAction::Purge { older_than } => {
            let purged = backend.purge(*older_than)?;
            serde_json::json!({ "store": spec.describe(), "purged": purged }).to_string()
        }
    };
    println!("{line}");
    Ok(ExitCode::SUCCESS)
}

fn read_key(cli: &Cli) -> Result<Option<String>> {
    if let Some(path) = &cli.api_key_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading --api-key-file {}", path.display()))?;
        let key = text.trim().to_owned();
        if key.is_empty() {
            bail!("--api-key-file {} is empty", path.display());
        }
        return Ok(Some(key));
    }
    Ok(std::env::var("TIP_API_KEY")
        .ok()
        .map(|k| k.trim().to_owned())
        .filter(|k| !k.is_empty()))
}

/// The clap command: the derived flags plus one per setting of the table
/// (all but the key), each with its `TIP_*` variable as a fallback.
fn command() -> clap::Command {
    let mut command = Cli::command();
    for s in SETTINGS.iter().filter(|s| s.in_wit) {
        let help = match s.default {
            Some(d) if !d.is_empty() => format!("{} [default: {d}]", s.doc),
            _ => s.doc.to_owned(),
        };
        let mut arg = Arg::new(s.name)
            .long(s.name)
            .value_name(s.value)
            .help(help)
            .env(s.env)
            .global(true);
        if *s == settings::QUERY_RESERVED {
            // `--query-reserved` alone means true; `--query-reserved=false` too.
            arg = arg
                .num_args(0..=1)
                .require_equals(true)
                .default_missing_value("true");
        }
        command = command.arg(arg);
    }
    command
}

/// The settings given (flag, else `TIP_*` variable), with the key.
type Given = Vec<(&'static Setting, String)>;

fn given_settings(matches: &ArgMatches, key: Option<String>) -> Given {
    let mut given: Given = SETTINGS
        .iter()
        .filter(|s| s.in_wit)
        .filter_map(|s| Some((s, matches.get_one::<String>(s.name)?.clone())))
        .collect();
    if let Some(key) = key {
        given.push((&settings::API_KEY, key));
    }
    given
}

/// The settings resolved natively, as the component will resolve them: the
/// CLI reads concurrency and deadlines from it and stops early (exit 2) on a
/// setting the component would refuse.
fn resolve(given: &Given, purpose: Purpose) -> Result<Config> {
    let env = |name: &str| {
        given
            .iter()
            .find(|(s, _)| s.env == name)
            .map(|(_, v)| v.clone())
    };
    Config::resolve(&tip_enrich::settings::empty(), &env, purpose).map_err(|e| {
        let key = env(settings::API_KEY.env);
        anyhow::anyhow!(
            "{}",
            tip_enrich::json::error_message(&e.into_wit(&Secrets::of_key(key.as_deref())))
        )
    })
}

/// Builds the egress policy and the key to use; says on stderr when it is the demo.
fn egress(cli: &Cli, config: &Config, key: Option<String>) -> Result<(Egress, Option<String>)> {
    let base = config.base_url.to_url();
    let load = |dir: &Path| -> Result<Egress> {
        let set = RecordingSet::load(dir)
            .with_context(|| format!("loading recordings from {}", dir.display()))?;
        Ok(Egress::Replay(Arc::new(set)))
    };
    if let Some(dir) = &cli.replay {
        return Ok((
            load(dir)?,
            Some(key.unwrap_or_else(|| REPLAY_KEY.to_owned())),
        ));
    }
    let Some(key) = key else {
        if cli.record.is_some() {
            bail!("--record needs a key: set TIP_API_KEY or pass --api-key-file");
        }
        eprintln!(
            "tip-enrich: no TIP_API_KEY and no --replay: replaying the bundled recordings in {} (demo mode)",
            BUNDLED_RECORDINGS
        );
        return Ok((
            load(Path::new(BUNDLED_RECORDINGS))?,
            Some(REPLAY_KEY.to_owned()),
        ));
    };
    let Some((_, allowed)) = url_authority(&base) else {
        bail!("--base-url must be an http:// or https:// URL with a host and no credentials");
    };
    let egress = match &cli.record {
        Some(dir) => Egress::Record {
            allowed,
            dir: dir.clone(),
            secrets: Secrets::of_key(Some(&key)),
        },
        None => Egress::Live { allowed },
    };
    Ok((egress, Some(key)))
}

/// Longest part of a stdin line kept: an address is at most 45 bytes, so a
/// longer line is invalid whatever follows, and memory stays flat on a
/// 20 MB line.
const MAX_LINE_BYTES: u64 = 4096;

/// Reads addresses from stdin lazily, skipping blank and `#` lines.
fn stdin_ips() -> impl Iterator<Item = String> {
    let mut input = std::io::stdin().lock();
    let mut buf = Vec::new();
    std::iter::from_fn(move || {
        loop {
            buf.clear();
            let read = (&mut input)
                .take(MAX_LINE_BYTES)
                .read_until(b'\n', &mut buf);
            if matches!(read, Ok(n) if n > 0) && !buf.ends_with(b"\n") {
                // The rest of an over-long line is skipped, not kept.
                let _ = input.skip_until(b'\n');
            }
            match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf);
                    let line = line.trim_end_matches(['\n', '\r']);
                    if line.trim().is_empty() || line.trim_start().starts_with('#') {
                        continue;
                    }
                    return Some(line.to_owned());
                }
            }
        }
    })
}

#[derive(Default)]
struct Tally {
    errors: usize,
    config_errors: usize,
    /// The latest quota the API reported: (requests today, daily quota).
    quota: Option<(u64, u64)>,
}

impl Tally {
    /// 2 when any setting was refused, 1 when any line is an error, else 0.
    fn exit_code(&self) -> ExitCode {
        if self.config_errors > 0 {
            ExitCode::from(2)
        } else if self.errors > 0 {
            ExitCode::from(1)
        } else {
            ExitCode::SUCCESS
        }
    }

    fn error(&mut self, e: &EnrichError) {
        self.errors += 1;
        if matches!(e, EnrichError::Config(_)) {
            self.config_errors += 1;
        }
    }

    /// Remembers the highest day-requests count seen (answers may arrive out of order).
    fn quota(&mut self, reported: Option<(u64, u64)>) {
        if let Some((used, quota)) = reported
            && self.quota.is_none_or(|(u, _)| used >= u)
        {
            self.quota = Some((used, quota));
        }
    }
}

/// (requests today, daily quota) when the answer carried both.
fn quota_of(v: &Verdict) -> Option<(u64, u64)> {
    let q = v.quota.as_ref()?;
    Some((q.day_requests?, q.day_quota?))
}

/// A progress bar on stderr when it is a terminal and not `--quiet`.
fn progress(quiet: bool) -> ProgressBar {
    if quiet || !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new_spinner();
    if let Ok(style) = ProgressStyle::with_template("{spinner} {pos} addresses [{elapsed_precise}]")
    {
        bar.set_style(style);
    }
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

/// What a `wasi:http` host (serve, gate) gives its component.
struct HttpHost {
    /// The lookup's egress.
    egress: Egress,
    /// Every lookup setting as its `tip_*` `wasi:config` key, the key included.
    pairs: Vec<(String, String)>,
    /// The API's authority (the base URL's, normalised), which the gate's
    /// origin must not share.
    api: Option<String>,
}

fn http_host_config(cli: &Cli, matches: &ArgMatches) -> Result<HttpHost> {
    let key = read_key(cli)?;
    let config = resolve(&given_settings(matches, None), Purpose::Verdict)?;
    let api = url_authority(&config.base_url.to_url()).map(|(_, authority)| authority);
    let (egress, key) = egress(cli, &config, key)?;
    let pairs = given_settings(matches, key)
        .into_iter()
        .map(|(s, v)| (s.key.to_owned(), v))
        .collect();
    Ok(HttpHost { egress, pairs, api })
}

/// A listener on `addr`, and the address it got (the port of `:0`).
async fn listen(addr: SocketAddr) -> Result<(tokio::net::TcpListener, SocketAddr)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("listening on {addr}"))?;
    let local = listener.local_addr()?;
    Ok((listener, local))
}

/// The async runtime of `serve` and `gate`.
fn http_runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn serve(cli: &Cli, matches: &ArgMatches, args: &ServeArgs) -> Result<ExitCode> {
    // Every setting reaches the service as its `wasi:config` key.
    let HttpHost { egress, pairs, .. } = http_host_config(cli, matches)?;
    let wasm = match &args.service_component {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("reading --service-component {}", path.display()))?,
        None => SERVICE_COMPONENT.to_vec(),
    };
    let options = ServeOptions {
        egress,
        also_live: None,
        config: pairs,
        max_memory_bytes: cli.max_memory_mb.saturating_mul(1024 * 1024),
        request_budget: Duration::from_millis(args.request_budget_ms),
        header_timeout: Duration::from_secs(args.header_timeout_secs),
        body_timeout: Duration::from_secs(args.body_timeout_secs),
        max_in_flight: args.max_in_flight,
        log_requests: !cli.quiet,
        log: Default::default(),
        store: open_store(cli)?,
    };
    http_runtime()?.block_on(async {
        let service = Service::new(&wasm, options)
            .map_err(anyhow::Error::from)
            .context("loading the service component")?;
        let (listener, addr) = listen(args.listen).await?;
        eprintln!(
            "tip-enrich: serving http://{addr} (GET /v1/ip/{{ip}}, POST /v1/ip, GET /healthz)"
        );
        host_harness::serve::serve(listener, Arc::new(service), shutdown_signal()).await?;
        eprintln!("tip-enrich: stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// `tip-enrich gate`: the gate component in front of `--origin`.
fn gate(cli: &Cli, matches: &ArgMatches, args: &GateArgs) -> Result<ExitCode> {
    let HttpHost {
        egress,
        mut pairs,
        api,
    } = http_host_config(cli, matches)?;
    let Some((_, origin)) = host_harness::url_authority(&args.origin) else {
        bail!(
            "--origin must be an http:// or https:// URL with a host, no credentials and no query"
        );
    };
    // The origin is reached live whatever the egress: sharing the API's
    // authority, the API's requests would bypass --replay and --record.
    if api.as_deref() == Some(origin.as_str()) {
        bail!(
            "--origin must not be the API's host ({origin}): its requests would bypass the lookup's egress"
        );
    }
    let client_ip_header = ClientIpHeader::parse(&args.client_ip_header)
        .map_err(|e| anyhow::anyhow!("--client-ip-header {e}"))?;
    let trusted_proxies = Cidr::parse_list(&args.trusted_proxies)
        .map_err(|e| anyhow::anyhow!("--trusted-proxies {e}"))?;
    for (flag, list) in [("--allow", &args.allow), ("--deny", &args.deny)] {
        if let Some(list) = list {
            Cidr::parse_list(list).map_err(|e| anyhow::anyhow!("{flag} {e}"))?;
        }
    }
    // The gate's own settings (`settings::GATE_SETTINGS`), as their
    // `tip_gate_*` keys; the client header
    // and trusted proxies always, so host and guest read the same ones.
    let number = |n: Option<u64>| n.map(|n| n.to_string());
    let gate_settings = [
        (settings::GATE_ORIGIN.key, Some(args.origin.clone())),
        (
            settings::GATE_CLIENT_IP_HEADER.key,
            Some(client_ip_header.name().to_owned()),
        ),
        (
            settings::GATE_TRUSTED_PROXIES.key,
            Some(args.trusted_proxies.clone()),
        ),
        (settings::GATE_BLOCK.key, args.block.clone()),
        (settings::GATE_ALLOW.key, args.allow.clone()),
        (settings::GATE_DENY.key, args.deny.clone()),
        (
            settings::GATE_FAIL.key,
            args.fail.map(|f| match f {
                FailMode::Open => "open".to_owned(),
                FailMode::Closed => "closed".to_owned(),
            }),
        ),
        (
            settings::GATE_DECISION_TIMEOUT_MS.key,
            number(args.decision_timeout_ms),
        ),
        (
            settings::GATE_VERDICT_HEADER.key,
            args.verdict_header.then(|| "true".to_owned()),
        ),
        (
            settings::GATE_ORIGIN_TIMEOUT_MS.key,
            number(args.origin_timeout_ms),
        ),
    ];
    pairs.extend(
        gate_settings
            .into_iter()
            .filter_map(|(s, v)| Some((s.to_owned(), v?))),
    );
    let wasm = match &args.gate_component {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("reading --gate-component {}", path.display()))?,
        None => GATE_COMPONENT.to_vec(),
    };
    let options = ServeOptions {
        egress,
        also_live: Some(origin),
        config: pairs,
        max_memory_bytes: cli.max_memory_mb.saturating_mul(1024 * 1024),
        request_budget: Duration::from_millis(args.request_budget_ms),
        header_timeout: Duration::from_secs(args.header_timeout_secs),
        // Not used by the gate: its bodies stream, bounded by the idle gap.
        body_timeout: Duration::from_secs(args.body_idle_timeout_secs),
        max_in_flight: args.max_in_flight,
        log_requests: !cli.quiet,
        log: Default::default(),
        store: open_store(cli)?,
    };
    let gate_options = GateOptions {
        client_ip_header,
        trusted_proxies,
        body_idle_timeout: Duration::from_secs(args.body_idle_timeout_secs),
    };
    http_runtime()?.block_on(async {
        let gate = Gate::new(&wasm, options, gate_options)
            .map_err(anyhow::Error::from)
            .context("loading the gate component")?;
        let (listener, addr) = listen(args.listen).await?;
        eprintln!("tip-enrich: gate serving http://{addr} in front of the origin");
        host_harness::gate::serve(listener, gate, shutdown_signal()).await?;
        eprintln!("tip-enrich: stopped");
        Ok(ExitCode::SUCCESS)
    })
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = terminate => {},
    }
}

/// The lookup path of a run (the default command and `splunk-lookup`): the
/// component on one instance at a time, its settings and its budgets.
struct Lookups {
    runner: Runner,
    settings: Settings,
    /// Epoch budget of one lookup: its deadline (retries included) and a second.
    per_lookup: Duration,
    concurrency: usize,
    /// The shortest time the answer store keeps an answer (found or not).
    shortest_ttl: Duration,
}

/// Per input: a verdict, an error, or a trap (its message).
type Outcome<T> = Result<Result<T, EnrichError>, String>;

impl Lookups {
    /// Key, settings, egress (the demo when there is no key), the component
    /// and the answer store of `cli`. With `strict`, a setting the component
    /// would refuse is an error here (exit 2); otherwise the host runs on the
    /// defaults for its own budgets and the component answers each input with
    /// the `config` error.
    fn new(cli: &Cli, matches: &ArgMatches, purpose: Purpose, strict: bool) -> Result<Lookups> {
        let key = read_key(cli)?;
        let config = match resolve(&given_settings(matches, None), purpose) {
            Ok(config) => config,
            Err(e) if strict => return Err(e),
            Err(_) => resolve(&Vec::new(), purpose)?,
        };
        let (egress, key) = egress(cli, &config, key)?;
        let runtime = match &cli.component {
            Some(path) => Runtime::from_file(path),
            None => Runtime::bundled(),
        }
        .map_err(|e| anyhow::anyhow!("{e:?}"))
        .context("loading the component")?;
        let mut options = InstanceOptions::new(egress);
        options.max_memory_bytes = cli.max_memory_mb.saturating_mul(1024 * 1024);
        options.store = open_store(cli)?;
        // The component reads every setting from its environment, as in any
        // other host (`wasmtime run --env`); the call passes `{:}`.
        options.env = given_settings(matches, key)
            .into_iter()
            .map(|(s, v)| (s.env.to_owned(), v))
            .collect();
        Ok(Lookups {
            runner: Runner::new(runtime, options),
            settings: empty_settings(),
            per_lookup: Duration::from_millis(u64::from(config.deadline_ms))
                + Duration::from_secs(1),
            concurrency: config.concurrency.max(1) as usize,
            shortest_ttl: Duration::from_secs(u64::from(
                config.cache_ttl_secs.min(config.cache_not_found_ttl_secs),
            )),
        })
    }

    /// Addresses per call: every slot busy, memory flat.
    fn chunk_size(&self) -> usize {
        CHUNK_PER_SLOT * self.concurrency
    }

    /// Verdicts for `chunk`, in order: one `enrich-batch` call; after a trap
    /// (or a wrong-length answer), one by one on fresh instances so one bad
    /// input cannot sink its neighbours.
    fn enrich_chunk(&mut self, chunk: &[String]) -> Vec<Outcome<Verdict>> {
        let rounds = chunk.len().div_ceil(self.concurrency);
        let budget =
            self.per_lookup * u32::try_from(rounds).unwrap_or(u32::MAX) + Duration::from_secs(5);
        let settings = &self.settings;
        match self
            .runner
            .call(|i| i.enrich_batch(chunk, settings, budget))
        {
            Ok(results) if results.len() == chunk.len() => results.into_iter().map(Ok).collect(),
            _ => chunk
                .iter()
                .map(|ip| {
                    self.runner
                        .call(|i| i.enrich(ip, settings, self.per_lookup))
                        .map_err(|t| t.to_string())
                })
                .collect(),
        }
    }

    /// `--full`: one `lookup` call per address.
    fn lookup_chunk(&mut self, chunk: &[String]) -> Vec<Outcome<Report>> {
        let settings = &self.settings;
        chunk
            .iter()
            .map(|ip| {
                self.runner
                    .call(|i| i.lookup(ip, settings, self.per_lookup))
                    .map_err(|t| t.to_string())
            })
            .collect()
    }
}

/// `tip-enrich splunk-lookup`: Splunk's CSV on stdin, the same CSV with the
/// verdicts' fields filled on stdout (`host_harness::splunk`). Exit 0 even
/// when rows failed (Splunk takes a nonzero exit for a failed lookup); 2 for
/// configuration errors and input that is not the protocol's CSV.
fn splunk_lookup(cli: &Cli, matches: &ArgMatches, args: &SplunkArgs) -> Result<ExitCode> {
    let mut lookups = Lookups::new(cli, matches, Purpose::Verdict, true)?;
    let chunk_rows = lookups.chunk_size();
    let stdout = std::io::stdout();
    let result = splunk::lookup_csv(
        std::io::stdin().lock(),
        BufWriter::new(stdout.lock()),
        &args.input_field,
        chunk_rows,
        |ips| lookups.enrich_chunk(ips),
    );
    match result {
        Ok(summary) => {
            if summary.failed > 0 && !cli.quiet {
                eprintln!(
                    "tip-enrich: {} of {} rows failed (their output fields are empty)",
                    summary.failed, summary.rows
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) if e.is_closed_pipe() => Ok(ExitCode::SUCCESS),
        Err(e) => Err(e.into()),
    }
}

/// Events read before they are enriched together (their distinct addresses
/// go to the component in one call per chunk of it)...
const EVENTS_PER_CHUNK: usize = 4096;
/// ...unless they add up to this many bytes first.
const EVENT_CHUNK_BYTES: usize = 16 << 20;

/// Whether stdin has input (or its end) ready to read without waiting. A
/// chunk of events is enriched and written as soon as the input pauses, so
/// `tail -f log | tip-enrich events` answers each event as it comes.
fn stdin_ready() -> bool {
    use rustix::event::{PollFd, PollFlags, Timespec, poll};
    let stdin = std::io::stdin();
    let mut fds = [PollFd::new(&stdin, PollFlags::IN)];
    let now = Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // A failed poll reads as ready: the read that follows simply waits.
    poll(&mut fds, Some(&now)).map_or(true, |n| n > 0)
}

/// How long `events` reuses a verdict it has seen in this run before asking
/// the component (and so the answer store) again; never longer than the
/// store keeps an answer.
const EVENT_MEMO_TTL: Duration = Duration::from_secs(60);
/// Verdicts `events` keeps at most, in two generations of half each.
const EVENT_MEMO_ENTRIES: usize = 65_536;

type MemoEntry = (std::time::Instant, tip_enrich::bindings::Verdict);

/// The verdicts of this run's recent lookups, so an address repeated over
/// millions of events costs one component call per [`EVENT_MEMO_TTL`], not
/// one per chunk. Bounded: when the newer generation is full it becomes the
/// older one and the older is dropped (an LRU, near enough, without a
/// list). Only answers are kept; a failed lookup is asked again.
struct Memo {
    newer: std::collections::HashMap<String, MemoEntry>,
    older: std::collections::HashMap<String, MemoEntry>,
    ttl: Duration,
}

impl Memo {
    fn new(ttl: Duration) -> Memo {
        Memo {
            newer: Default::default(),
            older: Default::default(),
            ttl,
        }
    }

    fn get(&mut self, ip: &str) -> Option<tip_enrich::bindings::Verdict> {
        let ttl = self.ttl;
        let fresh = |entry: &MemoEntry| entry.0.elapsed() < ttl;
        if let Some(entry) = self.newer.get(ip).filter(|e| fresh(e)) {
            return Some(entry.1.clone());
        }
        let entry = self.older.remove(ip).filter(fresh)?;
        let verdict = entry.1.clone();
        self.insert(ip.to_owned(), entry);
        Some(verdict)
    }

    fn put(&mut self, ip: &str, verdict: tip_enrich::bindings::Verdict) {
        if !self.ttl.is_zero() {
            self.insert(ip.to_owned(), (std::time::Instant::now(), verdict));
        }
    }

    fn insert(&mut self, ip: String, entry: MemoEntry) {
        if self.newer.len() >= EVENT_MEMO_ENTRIES / 2 {
            self.older = std::mem::take(&mut self.newer);
        }
        self.newer.insert(ip, entry);
    }
}

/// The lookups of a chunk's distinct addresses, in order: from the memo, or
/// from the component in calls of at most [`Lookups::chunk_size`].
fn lookup_events(lookups: &mut Lookups, memo: &mut Memo, ips: &[String]) -> Vec<events::Lookup> {
    let mut results: Vec<Option<events::Lookup>> =
        ips.iter().map(|ip| memo.get(ip).map(Ok)).collect();
    let missing: Vec<usize> = (0..ips.len()).filter(|i| results[*i].is_none()).collect();
    for chunk in missing.chunks(lookups.chunk_size()) {
        let asked: Vec<String> = chunk.iter().map(|i| ips[*i].clone()).collect();
        let answers = lookups.enrich_chunk(&asked);
        for ((i, ip), outcome) in chunk.iter().zip(&asked).zip(answers) {
            results[*i] = Some(match outcome {
                Ok(Ok(v)) => {
                    let v = verdict_to_core(&v);
                    memo.put(ip, v.clone());
                    Ok(v)
                }
                Ok(Err(e)) => Err(events::LookupError::from(&error_to_core(&e))),
                Err(trap) => Err(events::LookupError {
                    kind: "trap".into(),
                    message: format!("the component trapped: {trap}"),
                }),
            });
        }
    }
    // `enrich_chunk` answers every input, so nothing is dropped here; were
    // one missing, the core reports its address as a failed lookup.
    results.into_iter().flatten().collect()
}

/// `tip-enrich events`: NDJSON events in, the same events out with
/// `threat.enrichments[]` appended (`tip_enrich::events`). Exit 0, or 1 when
/// any lookup failed (listed in its event), 2 for configuration errors.
fn events(cli: &Cli, matches: &ArgMatches, args: &EventsArgs) -> Result<ExitCode> {
    let options = events::Options {
        fields: events::parse_fields(&args.fields).map_err(|e| anyhow::anyhow!("--field {e}"))?,
        only: events::Only::parse(&args.only).map_err(|e| anyhow::anyhow!("--only {e}"))?,
    };
    let mut lookups = Lookups::new(cli, matches, Purpose::Verdict, true)?;
    let mut memo = Memo::new(EVENT_MEMO_TTL.min(lookups.shortest_ttl));
    let mut input = std::io::BufReader::with_capacity(1 << 20, std::io::stdin().lock());
    let stdout = std::io::stdout();
    let mut out = BufWriter::with_capacity(1 << 20, stdout.lock());
    let mut tally = events::Tally::default();
    let mut too_long: u64 = 0;
    // The pending chunk: each line without its `\n`, and whether it had one.
    let mut lines: Vec<Vec<u8>> = Vec::new();
    let mut newlines: Vec<bool> = Vec::new();
    let mut bytes = 0usize;
    let mut flush = |lines: &mut Vec<Vec<u8>>,
                     newlines: &mut Vec<bool>,
                     out: &mut BufWriter<std::io::StdoutLock<'_>>,
                     tally: &mut events::Tally|
     -> std::io::Result<()> {
        if lines.is_empty() {
            return Ok(());
        }
        let (outputs, counts) = events::enrich_lines(lines, &options, |ips| {
            lookup_events(&mut lookups, &mut memo, ips)
        });
        for (line, newline) in outputs.iter().zip(newlines.iter()) {
            out.write_all(line)?;
            if *newline {
                out.write_all(b"\n")?;
            }
        }
        tally.add(&counts);
        lines.clear();
        newlines.clear();
        out.flush()
    };
    let closed = |r: std::io::Result<()>| quit_on_closed_pipe(r);
    loop {
        if !lines.is_empty() && input.buffer().is_empty() && !stdin_ready() {
            if closed(flush(&mut lines, &mut newlines, &mut out, &mut tally))? {
                return Ok(ExitCode::SUCCESS);
            }
            bytes = 0;
        }
        let mut line = Vec::new();
        let read = (&mut input)
            .take(args.max_event_bytes + 1)
            .read_until(b'\n', &mut line)
            .context("reading stdin")?;
        if read == 0 {
            break;
        }
        let newline = line.ends_with(b"\n");
        if !newline && line.len() as u64 > args.max_event_bytes {
            // Too long to enrich: written as it comes, never held whole.
            too_long += 1;
            tally.lines += 1;
            if closed(flush(&mut lines, &mut newlines, &mut out, &mut tally))? {
                return Ok(ExitCode::SUCCESS);
            }
            bytes = 0;
            if closed(
                out.write_all(&line)
                    .and_then(|()| copy_line_rest(&mut input, &mut out)),
            )? {
                return Ok(ExitCode::SUCCESS);
            }
            continue;
        }
        if newline {
            line.pop();
        }
        bytes += line.len();
        lines.push(line);
        newlines.push(newline);
        if lines.len() >= EVENTS_PER_CHUNK || bytes >= EVENT_CHUNK_BYTES {
            if closed(flush(&mut lines, &mut newlines, &mut out, &mut tally))? {
                return Ok(ExitCode::SUCCESS);
            }
            bytes = 0;
        }
    }
    if closed(flush(&mut lines, &mut newlines, &mut out, &mut tally))? {
        return Ok(ExitCode::SUCCESS);
    }
    if !cli.quiet {
        eprintln!(
            "tip-enrich: events: {} lines, {} events, {} enriched ({} enrichments), {} failed lookups{}{}{}",
            tally.lines,
            tally.events,
            tally.enriched,
            tally.enrichments,
            tally.errors,
            match tally.not_objects {
                0 => String::new(),
                n => format!(", {n} lines not JSON objects passed through unchanged"),
            },
            match too_long {
                0 => String::new(),
                n => format!(", {n} lines over --max-event-bytes passed through unchanged"),
            },
            match tally.unwritable {
                0 => String::new(),
                n => format!(
                    ", {n} events whose threat or kaspersky field is not an object left unchanged"
                ),
            },
        );
    }
    Ok(if tally.errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// Copies the rest of the current line (its `\n` included) from `input` to
/// `out`, a buffer at a time.
fn copy_line_rest(input: &mut impl BufRead, out: &mut impl Write) -> std::io::Result<()> {
    loop {
        let available = input.fill_buf()?;
        if available.is_empty() {
            return Ok(());
        }
        match available.iter().position(|b| *b == b'\n') {
            Some(at) => {
                out.write_all(available.get(..=at).unwrap_or(available))?;
                input.consume(at + 1);
                return Ok(());
            }
            None => {
                let n = available.len();
                out.write_all(available)?;
                input.consume(n);
            }
        }
    }
}

fn run(cli: Cli, matches: &ArgMatches) -> Result<ExitCode> {
    match &cli.command {
        Some(Command::Serve(args)) => return serve(&cli, matches, args),
        Some(Command::Gate(args)) => return gate(&cli, matches, args),
        Some(Command::Cache { action }) => return cache_command(&cli, action),
        Some(Command::SplunkLookup(args)) => return splunk_lookup(&cli, matches, args),
        Some(Command::Events(args)) => return events(&cli, matches, args),
        None => {}
    }
    let purpose = if cli.full {
        Purpose::Report
    } else {
        Purpose::Verdict
    };
    // A setting the component will refuse still gets one error line per
    // input (kind `config`, exit 2), from the component itself.
    let mut lookups = Lookups::new(&cli, matches, purpose, false)?;
    let chunk_size = lookups.chunk_size();
    let bar = progress(cli.quiet);

    let mut ips: Box<dyn Iterator<Item = String>> = if cli.ips.is_empty() {
        Box::new(stdin_ips())
    } else {
        Box::new(cli.ips.clone().into_iter())
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut tally = Tally::default();
    let shape = match cli.format {
        Format::Native => Shape::Native,
        Format::Ecs => Shape::Ecs(cli.ecs_matched_field.as_deref()),
        // The portal the references point to; a setting the component refuses
        // gives error lines anyway.
        Format::Stix => Shape::Stix(
            resolve(&given_settings(matches, None), purpose)
                .map_or(tip_enrich::bindings::ApiFlavour::Tip, |c| c.api),
        ),
    };
    // A line, and the quota the answer reported (for the end-of-run summary).
    let verdict_line = |v: &Verdict| (verdict_line(v, shape), quota_of(v));

    loop {
        let chunk: Vec<String> = ips.by_ref().take(chunk_size).collect();
        if chunk.is_empty() {
            break;
        }
        // Per input: a line and its quota, an error, or a trap.
        type Line = (String, Option<(u64, u64)>);
        let outcomes: Vec<Outcome<Line>> = if cli.full {
            lookups
                .lookup_chunk(&chunk)
                .into_iter()
                .map(|o| {
                    o.map(|r| r.map(|report| (report_line(&report), quota_of(&report.verdict))))
                })
                .collect()
        } else {
            lookups
                .enrich_chunk(&chunk)
                .into_iter()
                .map(|o| o.map(|r| r.map(|v| verdict_line(&v))))
                .collect()
        };
        for (ip, outcome) in chunk.iter().zip(outcomes) {
            let line = match outcome {
                Ok(Ok((line, quota))) => {
                    tally.quota(quota);
                    line
                }
                Ok(Err(e)) => {
                    tally.error(&e);
                    error_line(ip, &e, shape)
                }
                Err(trap) => {
                    tally.errors += 1;
                    trap_line(ip, &format!("the component trapped: {trap}"), shape)
                }
            };
            if quit_on_closed_pipe(writeln!(out, "{line}"))? {
                return Ok(tally.exit_code());
            }
            bar.inc(1);
        }
        if quit_on_closed_pipe(out.flush())? {
            return Ok(tally.exit_code());
        }
    }
    if quit_on_closed_pipe(out.flush())? {
        return Ok(tally.exit_code());
    }
    bar.finish_and_clear();
    if let Some((used, quota)) = tally.quota
        && !cli.quiet
    {
        eprintln!(
            "tip-enrich: quota: {used} of {quota} requests used today, {} left",
            quota.saturating_sub(used)
        );
    }
    Ok(tally.exit_code())
}

/// `Ok(true)` when the reader has gone (`tip-enrich < big.txt | head -1`):
/// the run then ends quietly, as `head`'s user expects. Other write errors
/// are errors.
fn quit_on_closed_pipe(result: std::io::Result<()>) -> Result<bool> {
    match result {
        Ok(()) => Ok(false),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(true),
        Err(e) => Err(anyhow::Error::from(e).context("writing to stdout")),
    }
}

fn main() -> ExitCode {
    let matches = command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(e) => e.exit(),
    };
    match run(cli, &matches) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tip-enrich: {e:#}");
            ExitCode::from(2)
        }
    }
}
