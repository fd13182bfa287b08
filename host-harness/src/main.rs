//! `tip-enrich`: enrich IP addresses from a playbook or a shell.
//!
//! stdout is JSON Lines, one object per input in input order. Exit status: 0
//! when every line is a verdict, 1 when any line is an error, 2 for usage or
//! configuration errors.

use std::io::{BufRead, BufWriter, IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand, ValueEnum};
use host_harness::egress::Egress;
use host_harness::output::{
    ecs_error_json, ecs_verdict_json, error_json, report_json, trap_json, verdict_json,
};
use host_harness::recordings::RecordingSet;
use host_harness::runtime::{
    ApiFlavour, AuthScheme, EnrichError, InstanceOptions, Runner, Runtime, Settings, Verdict,
    empty_settings,
};
use host_harness::serve::{SERVICE_COMPONENT, ServeOptions, Service};
use host_harness::{BUNDLED_RECORDINGS, url_authority};
use indicatif::{ProgressBar, ProgressStyle};

/// Addresses sent to the component in one call, per unit of concurrency:
/// enough to keep every slot busy, small enough to keep memory flat.
const CHUNK_PER_SLOT: usize = 16;
/// Placeholder key for replays without a key (recordings never check it).
const REPLAY_KEY: &str = "replay-without-a-key";

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Api {
    Tip,
    Opentip,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Auth {
    #[value(name = "x-api-key")]
    XApiKey,
    Bearer,
    Basic,
}

/// Shape of each output line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// The verdict's own fields (README, "Output").
    Native,
    /// Elastic Common Schema threat-enrichment fields (README, "ECS").
    Ecs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the HTTP service world (GET /v1/ip/{ip}, POST /v1/ip, GET /healthz)
    /// with the same egress rules as a lookup: only the base URL's host, or the
    /// recordings with --replay.
    Serve(ServeArgs),
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
/// the bundled recordings are replayed (a demo; said on stderr).
#[derive(Debug, Parser)]
#[command(name = "tip-enrich", version)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,

    /// Addresses to enrich; with none, read from stdin, one per line (blank
    /// lines and lines starting with # are skipped).
    #[arg(value_name = "IP")]
    ips: Vec<String>,

    /// API flavour.
    #[arg(long, global = true, value_enum, default_value = "tip")]
    api: Api,

    /// Base URL (default: https://tip.kaspersky.com or https://opentip.kaspersky.com).
    #[arg(long, global = true, value_name = "URL")]
    base_url: Option<String>,

    /// How the key is sent.
    #[arg(long, global = true, value_enum, default_value = "x-api-key")]
    auth: Auth,

    /// Read the key (user:password for basic) from this file.
    #[arg(long, global = true, value_name = "PATH")]
    api_key_file: Option<PathBuf>,

    /// Answer from the recordings in DIR; unrecorded requests are denied.
    #[arg(long, global = true, value_name = "DIR", conflicts_with = "record")]
    replay: Option<PathBuf>,

    /// Query the live API and write each exchange to DIR (credentials redacted).
    #[arg(long, global = true, value_name = "DIR")]
    record: Option<PathBuf>,

    /// Limit of each request, end to end (headers and whole body), in ms.
    #[arg(long, global = true, value_name = "N", default_value_t = 30_000, value_parser = clap::value_parser!(u32).range(1..))]
    timeout_ms: u32,

    /// Run this build of the component instead of the bundled one.
    #[arg(long, global = true, value_name = "PATH")]
    component: Option<PathBuf>,

    /// Print the full report (every section, typed, plus the raw JSON) instead of the verdict.
    #[arg(long, global = true)]
    full: bool,

    /// Sections to request, comma separated (default: the verdict's three; every section with --full).
    #[arg(long, global = true, value_name = "LIST", value_delimiter = ',')]
    sections: Option<Vec<String>>,

    /// Records per list section (TIP).
    #[arg(long, global = true, value_name = "N")]
    count: Option<u32>,

    /// Query the API for reserved addresses too, instead of answering them locally.
    #[arg(long, global = true)]
    query_reserved: bool,

    /// Largest response body accepted, in bytes.
    #[arg(long, global = true, value_name = "N")]
    max_body_bytes: Option<u32>,

    /// Linear-memory cap of the component, in MiB.
    #[arg(long, global = true, value_name = "N", default_value_t = 256)]
    max_memory_mb: usize,

    /// Requests in flight at once.
    #[arg(long, global = true, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=256))]
    concurrency: u32,

    /// Limit of one lookup with all its retries, in ms.
    #[arg(long, global = true, value_name = "N", default_value_t = 120_000, value_parser = clap::value_parser!(u32).range(1..))]
    deadline_ms: u32,

    /// Retries of a 429, a 5xx, or a failure before any response byte.
    #[arg(long, global = true, value_name = "N", default_value_t = 2)]
    retries: u32,

    /// How long an answer stays cached for the rest of the run, in seconds (0: no cache).
    #[arg(long, global = true, value_name = "N", default_value_t = 600)]
    cache_ttl_secs: u32,

    /// Output shape: native JSON or Elastic Common Schema (`threat.enrichments[]`).
    #[arg(long, value_enum, default_value = "native", conflicts_with = "full")]
    format: Format,

    /// With --format ecs: the event field the addresses came from, written as
    /// `threat.enrichments[].matched.field` (e.g. source.ip).
    #[arg(long, value_name = "FIELD")]
    ecs_matched_field: Option<String>,

    /// No progress bar and no end-of-run summary on stderr.
    #[arg(long, global = true, short, global = true)]
    quiet: bool,
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

fn settings(cli: &Cli, key: Option<String>) -> Settings {
    let mut s = empty_settings();
    s.api = Some(match cli.api {
        Api::Tip => ApiFlavour::Tip,
        Api::Opentip => ApiFlavour::Opentip,
    });
    s.base_url = cli.base_url.clone();
    s.auth = Some(match cli.auth {
        Auth::XApiKey => AuthScheme::XApiKey,
        Auth::Bearer => AuthScheme::Bearer,
        Auth::Basic => AuthScheme::Basic,
    });
    s.api_key = key;
    s.total_timeout_ms = Some(cli.timeout_ms);
    s.sections = cli.sections.clone();
    s.count = cli.count;
    s.query_reserved = Some(cli.query_reserved);
    s.max_body_bytes = cli.max_body_bytes;
    s.concurrency = Some(cli.concurrency);
    s.deadline_ms = Some(cli.deadline_ms);
    s.retries = Some(cli.retries);
    s.cache_ttl_secs = Some(cli.cache_ttl_secs);
    s
}

/// Builds the egress policy and the key to use; says on stderr when it is the demo.
fn egress(cli: &Cli, key: Option<String>) -> Result<(Egress, Option<String>)> {
    let base = cli.base_url.clone().unwrap_or_else(|| {
        match cli.api {
            Api::Tip => "https://tip.kaspersky.com",
            Api::Opentip => "https://opentip.kaspersky.com",
        }
        .to_owned()
    });
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
            secrets: tip_enrich::config::key_secrets(&key),
        },
        None => Egress::Live { allowed },
    };
    Ok((egress, Some(key)))
}

/// Reads addresses from stdin lazily, skipping blank and `#` lines.
fn stdin_ips() -> impl Iterator<Item = String> {
    let mut input = std::io::stdin().lock();
    let mut buf = Vec::new();
    std::iter::from_fn(move || {
        loop {
            buf.clear();
            match input.read_until(b'\n', &mut buf) {
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

/// The settings as `wasi:config/store` pairs for the service component.
fn config_pairs(settings: &Settings) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    let mut put = |key: &str, value: Option<String>| {
        if let Some(value) = value {
            pairs.push((key.to_owned(), value));
        }
    };
    put(
        "tip_api",
        settings.api.map(|a| match a {
            ApiFlavour::Tip => "tip".to_owned(),
            ApiFlavour::Opentip => "opentip".to_owned(),
        }),
    );
    put("tip_base_url", settings.base_url.clone());
    put(
        "tip_auth",
        settings.auth.map(|a| match a {
            AuthScheme::XApiKey => "x-api-key".to_owned(),
            AuthScheme::Bearer => "bearer".to_owned(),
            AuthScheme::Basic => "basic".to_owned(),
        }),
    );
    put("tip_api_key", settings.api_key.clone());
    put(
        "tip_timeout_ms",
        settings.total_timeout_ms.map(|v| v.to_string()),
    );
    put(
        "tip_sections",
        settings.sections.as_ref().map(|s| s.join(",")),
    );
    put("tip_count", settings.count.map(|v| v.to_string()));
    put(
        "tip_query_reserved",
        settings.query_reserved.map(|v| v.to_string()),
    );
    put(
        "tip_max_body_bytes",
        settings.max_body_bytes.map(|v| v.to_string()),
    );
    put(
        "tip_concurrency",
        settings.concurrency.map(|v| v.to_string()),
    );
    put(
        "tip_deadline_ms",
        settings.deadline_ms.map(|v| v.to_string()),
    );
    put("tip_retries", settings.retries.map(|v| v.to_string()));
    put(
        "tip_cache_ttl_secs",
        settings.cache_ttl_secs.map(|v| v.to_string()),
    );
    pairs
}

fn serve(cli: &Cli, args: &ServeArgs) -> Result<ExitCode> {
    let key = read_key(cli)?;
    let (egress, key) = egress(cli, key)?;
    let wasm = match &args.service_component {
        Some(path) => std::fs::read(path)
            .with_context(|| format!("reading --service-component {}", path.display()))?,
        None => SERVICE_COMPONENT.to_vec(),
    };
    let options = ServeOptions {
        egress,
        config: config_pairs(&settings(cli, key)),
        max_memory_bytes: cli.max_memory_mb.saturating_mul(1024 * 1024),
        request_budget: Duration::from_millis(args.request_budget_ms),
        header_timeout: Duration::from_secs(args.header_timeout_secs),
        body_timeout: Duration::from_secs(args.body_timeout_secs),
        max_in_flight: args.max_in_flight,
        log_requests: !cli.quiet,
        log: Default::default(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let service = Service::new(&wasm, options)
            .map_err(anyhow::Error::from)
            .context("loading the service component")?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let addr = listener.local_addr()?;
        eprintln!(
            "tip-enrich: serving http://{addr} (GET /v1/ip/{{ip}}, POST /v1/ip, GET /healthz)"
        );
        host_harness::serve::serve(listener, Arc::new(service), shutdown_signal()).await?;
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

fn run(cli: Cli) -> Result<ExitCode> {
    if let Some(Command::Serve(args)) = &cli.command {
        return serve(&cli, args);
    }
    let key = read_key(&cli)?;
    let (egress, key) = egress(&cli, key)?;
    let settings = settings(&cli, key);
    let runtime = match &cli.component {
        Some(path) => Runtime::from_file(path),
        None => Runtime::bundled(),
    }
    .map_err(|e| anyhow::anyhow!("{e:?}"))
    .context("loading the component")?;
    let mut options = InstanceOptions::new(egress);
    options.max_memory_bytes = cli.max_memory_mb.saturating_mul(1024 * 1024);
    let mut runner = Runner::new(runtime, options);
    // Epoch budgets: a lookup takes at most its deadline (retries included).
    let per_lookup = Duration::from_millis(u64::from(cli.deadline_ms)) + Duration::from_secs(1);
    let chunk_size = CHUNK_PER_SLOT * cli.concurrency as usize;
    let bar = progress(cli.quiet);

    let mut ips: Box<dyn Iterator<Item = String>> = if cli.ips.is_empty() {
        Box::new(stdin_ips())
    } else {
        Box::new(cli.ips.clone().into_iter())
    };
    let stdout = std::io::stdout();
    let mut out = BufWriter::new(stdout.lock());
    let mut tally = Tally::default();
    let field = cli.ecs_matched_field.as_deref();
    // A line, and the quota the answer reported (for the end-of-run summary).
    let verdict_line = |v: &Verdict| {
        let line = match cli.format {
            Format::Native => verdict_json(v),
            Format::Ecs => ecs_verdict_json(v, field),
        };
        (line, quota_of(v))
    };
    let emit = |out: &mut BufWriter<_>, value: serde_json::Value| -> Result<()> {
        serde_json::to_writer(&mut *out, &value)?;
        out.write_all(b"\n")?;
        Ok(())
    };

    loop {
        let chunk: Vec<String> = ips.by_ref().take(chunk_size).collect();
        if chunk.is_empty() {
            break;
        }
        // Per input: Ok(Ok(line)) a verdict or report, Ok(Err(e)) an error, Err(trap).
        type Line = (serde_json::Value, Option<(u64, u64)>);
        type Outcome = Result<Result<Line, EnrichError>, String>;
        let outcomes: Vec<Outcome> = if cli.full {
            chunk
                .iter()
                .map(|ip| {
                    runner
                        .call(|i| i.lookup(ip, &settings, per_lookup))
                        .map(|r| r.map(|report| (report_json(&report), quota_of(&report.verdict))))
                        .map_err(|t| t.to_string())
                })
                .collect()
        } else {
            let rounds = chunk.len().div_ceil(cli.concurrency as usize);
            let budget =
                per_lookup * u32::try_from(rounds).unwrap_or(u32::MAX) + Duration::from_secs(5);
            match runner.call(|i| i.enrich_batch(&chunk, &settings, budget)) {
                Ok(results) if results.len() == chunk.len() => results
                    .into_iter()
                    .map(|r| Ok(r.map(|v| verdict_line(&v))))
                    .collect(),
                // A trap (or a wrong-length answer): retry one by one on fresh
                // instances so one bad input cannot sink its neighbours.
                _ => chunk
                    .iter()
                    .map(|ip| {
                        runner
                            .call(|i| i.enrich(ip, &settings, per_lookup))
                            .map(|r| r.map(|v| verdict_line(&v)))
                            .map_err(|t| t.to_string())
                    })
                    .collect(),
            }
        };
        for (ip, outcome) in chunk.iter().zip(outcomes) {
            let line = match outcome {
                Ok(Ok((json, quota))) => {
                    tally.quota(quota);
                    json
                }
                Ok(Err(e)) => {
                    tally.error(&e);
                    match cli.format {
                        Format::Native => error_json(ip, &e),
                        Format::Ecs => ecs_error_json(ip, &e, field),
                    }
                }
                Err(trap) => {
                    tally.errors += 1;
                    trap_json(ip, &format!("the component trapped: {trap}"))
                }
            };
            emit(&mut out, line)?;
            bar.inc(1);
        }
        out.flush()?;
    }
    out.flush()?;
    bar.finish_and_clear();
    if let Some((used, quota)) = tally.quota
        && !cli.quiet
    {
        eprintln!(
            "tip-enrich: quota: {used} of {quota} requests used today, {} left",
            quota.saturating_sub(used)
        );
    }
    Ok(if tally.config_errors > 0 {
        ExitCode::from(2)
    } else if tally.errors > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tip-enrich: {e:#}");
            ExitCode::from(2)
        }
    }
}
