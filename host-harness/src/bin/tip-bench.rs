//! `tip-bench`: measures the component and prints one table, every figure
//! from this run on this machine (the machine is shared and noisy, so the
//! figures that matter are ratios taken side by side).
//!
//! ```sh
//! cargo run --release -p host-harness --bin tip-bench
//! cargo run --release -p host-harness --bin tip-bench -- store   # the answer store (issue 11)
//! ```
//!
//! Rows: component size; load by compiling vs deserialising a precompiled
//! artefact; instantiation (on-demand and pooling allocators); guest CPU per
//! call on three answers against the same core natively; a batch of 256
//! distinct addresses against a loopback server with 50 ms latency at
//! concurrency 1, 8 and 32 against the ideal; a sequential Python client on
//! the same batch; CLI startup with a warm precompiled cache; peak RSS of the
//! CLI and peak guest linear memory for the batch.
//!
//! `tip-bench events` (its own section, [`events_bench`]): `tip-enrich
//! events` on a 1 M-line ECS file against the plain address mode on the same
//! addresses: events per second and peak RSS.
//!
//! `tip-bench serve-vs-wasmtime` (its own section, [`serve_vs_wasmtime`]):
//! throughput of `tip-enrich serve` against the stock `wasmtime serve` on the
//! same service component, interleaved rounds; `--help` for its flags.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow};
use host_harness::BUNDLED_RECORDINGS;
use host_harness::egress::Egress;
use host_harness::recordings::RecordingSet;
use host_harness::runtime::{COMPONENT, InstanceOptions, Runtime, empty_settings};
use wasmtime::component::Component;

const LATENCY: Duration = Duration::from_millis(50);
const BATCH: usize = 256;

/// Prints rows as they are measured.
struct Table;

impl Table {
    fn row(&mut self, what: &str, value: String, note: impl Into<String>) {
        println!("{what:<58} {value:>14}  {}", note.into());
    }
}

fn median(mut xs: Vec<Duration>) -> Duration {
    xs.sort();
    xs.get(xs.len() / 2).copied().unwrap_or_default()
}

fn time<R>(runs: usize, mut f: impl FnMut() -> R) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                std::hint::black_box(f());
                t.elapsed()
            })
            .collect(),
    )
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn us(d: Duration) -> String {
    format!("{:.1} µs", d.as_secs_f64() * 1e6)
}

/// A loopback server: every request waits `LATENCY`, then gets a green answer.
struct SlowServer {
    addr: String,
    stop: Arc<AtomicBool>,
}

impl SlowServer {
    fn start() -> Result<SlowServer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?.to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if flag.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    std::thread::spawn(move || serve(conn));
                }
            }
        });
        Ok(SlowServer { addr, stop })
    }
}

impl Drop for SlowServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(&self.addr);
    }
}

fn serve(mut conn: TcpStream) {
    let _ = conn.set_nodelay(true);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 2048];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(chunk.get(..n).unwrap_or_default()),
        }
    }
    std::thread::sleep(LATENCY);
    let body = br#"{"LicenseInfo":{"DayRequests":1,"DayQuota":100000},"Zone":"Green","IpGeneralInfo":{"ThreatScore":2,"Status":"Known"}}"#;
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = conn.write_all(head.as_bytes());
    let _ = conn.write_all(body);
}

fn addresses() -> Vec<String> {
    (0..BATCH)
        .map(|i| format!("45.{}.{}.7", i / 250, i % 250))
        .collect()
}

/// The same core natively: a transport that answers at once from memory.
mod native {
    use tip_enrich::HttpRequest;
    use tip_enrich::{HttpResponse, Limits, SendError, Ticket, Transport};

    pub struct Instant {
        pub body: Vec<u8>,
        done: Vec<(Ticket, Result<HttpResponse, SendError>)>,
        next: Ticket,
    }

    impl Instant {
        pub fn new(body: Vec<u8>) -> Instant {
            Instant {
                body,
                done: Vec::new(),
                next: 0,
            }
        }
    }

    impl Transport for Instant {
        fn start(&mut self, _: &HttpRequest, _: &Limits) -> Ticket {
            self.next += 1;
            let response = HttpResponse {
                status: 200,
                headers: Vec::new(),
                body: self.body.clone(),
            };
            self.done.push((self.next, Ok(response)));
            self.next
        }
        fn wait(&mut self, _: Option<u64>) -> Vec<(Ticket, Result<HttpResponse, SendError>)> {
            std::mem::take(&mut self.done)
        }
        fn now_ms(&mut self) -> u64 {
            0
        }
        fn now_unix_secs(&mut self) -> Option<u64> {
            Some(0)
        }
        fn random_u64(&mut self) -> u64 {
            0
        }
    }
}

/// Spawns `cmd` with `input` on stdin and waits for it.
fn run_with_stdin(cmd: &mut Command, input: &str, what: &str) -> Result<std::process::Output> {
    let mut child = cmd
        .stdin(Stdio::piped())
        .spawn()
        .with_context(|| format!("running {what}"))?;
    child
        .stdin
        .take()
        .ok_or_else(|| anyhow!("no stdin"))?
        .write_all(input.as_bytes())?;
    Ok(child.wait_with_output()?)
}

fn python_sequential(server: &str, ips: &[String]) -> Result<Duration> {
    let script = r#"
import sys, time, urllib.request
base = sys.argv[1]
ips = sys.stdin.read().split()
t = time.perf_counter()
for ip in ips:
    req = urllib.request.Request(f"{base}/api/ip/{ip}?sections=LicenseInfo,Zone,IpGeneralInfo",
                                 headers={"x-api-key": "bench", "accept": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        r.read()
print(time.perf_counter() - t)
"#;
    let out = run_with_stdin(
        Command::new("python3")
            .args(["-c", script, &format!("http://{server}")])
            .stdout(Stdio::piped()),
        &ips.join("\n"),
        "python3",
    )?;
    let secs: f64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .context("python's timing")?;
    Ok(Duration::from_secs_f64(secs))
}

fn cli_path() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe.parent().ok_or_else(|| anyhow!("no exe dir"))?;
    let cli = dir.join("tip-enrich");
    if !cli.exists() {
        anyhow::bail!(
            "{} not built; run `cargo build --release -p host-harness` first",
            cli.display()
        );
    }
    Ok(cli)
}

/// Runs the CLI on the batch under /usr/bin/time; returns (wall, peak RSS KiB).
fn cli_batch(
    cli: &Path,
    server: &str,
    ips: &[String],
    cache_dir: &Path,
) -> Result<(Duration, Option<u64>)> {
    let t = Instant::now();
    let out = run_with_stdin(
        Command::new("/usr/bin/time")
            .args(["-f", "%M"])
            .arg(cli)
            .args([
                "-q",
                "--concurrency",
                "32",
                "--base-url",
                &format!("http://{server}"),
            ])
            .env("TIP_API_KEY", "bench")
            .env("TIP_ENRICH_CACHE_DIR", cache_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::piped()),
        &ips.join("\n"),
        "/usr/bin/time tip-enrich",
    )?;
    let wall = t.elapsed();
    let rss = String::from_utf8_lossy(&out.stderr)
        .lines()
        .last()
        .and_then(|l| l.trim().parse().ok());
    Ok((wall, rss))
}

fn main() -> Result<()> {
    if std::env::args().nth(1).as_deref() == Some("store") {
        return store_bench::run();
    }
    if std::env::args().nth(1).as_deref() == Some("events") {
        return events_bench::run(std::env::args().skip(2));
    }
    if std::env::args().nth(1).as_deref() == Some("gate") {
        return gate_bench::run(std::env::args().skip(2));
    }
    if std::env::args().nth(1).as_deref() == Some("gate-origin") {
        return gate_bench::origin(std::env::args().skip(2));
    }
    if std::env::args().nth(1).as_deref() == Some("serve-vs-wasmtime") {
        return serve_vs_wasmtime::run(std::env::args().skip(2));
    }
    let mut table = Table;
    println!("{:<58} {:>14}  note", "measure", "value");
    println!("{}", "-".repeat(100));

    // Size.
    table.row(
        "component size (profile `component`)",
        format!("{} B", COMPONENT.len()),
        "target ≤ 200 KB",
    );
    table.row(
        "service component size (profile `component`)",
        format!("{} B", host_harness::serve::SERVICE_COMPONENT.len()),
        "",
    );

    // Load: compile vs deserialize.
    let engine = Runtime::engine().map_err(|e| anyhow!("{e:?}"))?;
    let compile = time(3, || Component::new(&engine, COMPONENT).map(|_| ()));
    let precompiled = engine
        .precompile_component(COMPONENT)
        .map_err(|e| anyhow!("{e:?}"))?;
    // SAFETY: produced just above by the same engine.
    let deserialize = time(20, || {
        unsafe { Component::deserialize(&engine, &precompiled) }.map(|_| ())
    });
    table.row("load: compile the .wasm with Cranelift", ms(compile), "");
    table.row(
        "load: deserialize the precompiled artefact",
        ms(deserialize),
        format!(
            "{:.0}x faster; the CLI caches it",
            compile.as_secs_f64() / deserialize.as_secs_f64()
        ),
    );

    // Instantiation.
    let runtime = Runtime::bundled().map_err(|e| anyhow!("{e:?}"))?;
    let set = Arc::new(RecordingSet::load(Path::new(BUNDLED_RECORDINGS))?);
    let mut options = InstanceOptions::new(Egress::Replay(set));
    options.env = vec![("TIP_API_KEY".into(), "bench".into())];
    let inst = time(200, || runtime.instantiate(&options).map(|_| ()));
    table.row(
        "instantiate (InstancePre, on-demand allocator)",
        us(inst),
        "",
    );
    let pooled = {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        config.allocation_strategy(wasmtime::InstanceAllocationStrategy::pooling());
        let engine = wasmtime::Engine::new(&config).map_err(|e| anyhow!("{e:?}"))?;
        let component = Component::new(&engine, COMPONENT).map_err(|e| anyhow!("{e:?}"))?;
        let runtime = Runtime::from_component(engine, &component).map_err(|e| anyhow!("{e:?}"))?;
        time(200, || runtime.instantiate(&options).map(|_| ()))
    };
    table.row(
        "instantiate (InstancePre, pooling allocator)",
        us(pooled),
        format!(
            "{:.2}x of on-demand",
            pooled.as_secs_f64() / inst.as_secs_f64()
        ),
    );

    // Guest CPU per call vs native.
    let mut settings = empty_settings();
    settings.cache_ttl_secs = Some(0);
    let mut instance = runtime
        .instantiate(&options)
        .map_err(|e| anyhow!("{e:?}"))?;
    let budget = Duration::from_secs(60);
    let typical =
        std::fs::read(Path::new(BUNDLED_RECORDINGS).join("bodies/tip-red-apt-45.9.148.108.json"))?;
    let large = std::fs::read(
        Path::new(BUNDLED_RECORDINGS).join("bodies/tip-large-full-45.9.148.108.json"),
    )?;
    let native_env = |name: &str| (name == "TIP_API_KEY").then(|| "bench".to_owned());
    let native_settings = {
        let mut s = tip_enrich::settings::empty();
        s.cache_ttl_secs = Some(0);
        s
    };
    let cases: [(&str, &str, bool, Vec<u8>, usize); 4] = [
        (
            "reserved address (answered locally)",
            "10.0.0.1",
            false,
            Vec::new(),
            2000,
        ),
        (
            "tiny answer: the HTTP path alone (7.7.7.7, 404)",
            "7.7.7.7",
            false,
            b"{}".to_vec(),
            500,
        ),
        (
            "typical verdict answer (45.9.148.108)",
            "45.9.148.108",
            false,
            typical,
            500,
        ),
        (
            "1000-record full answer (lookup)",
            "45.9.148.108",
            true,
            large,
            20,
        ),
    ];
    for (name, ip, full, body, runs) in cases {
        let wasm = if full {
            time(runs, || {
                instance.lookup(ip, &settings, budget).map(|r| r.is_ok())
            })
        } else {
            time(runs, || {
                instance.enrich(ip, &settings, budget).map(|r| r.is_ok())
            })
        };
        let mut transport = native::Instant::new(body);
        let native = if full {
            time(runs, || {
                tip_enrich::Client::new(&mut transport, &native_env)
                    .lookup(ip, &native_settings)
                    .is_ok()
            })
        } else {
            time(runs, || {
                tip_enrich::Client::new(&mut transport, &native_env)
                    .enrich(ip, &native_settings)
                    .is_ok()
            })
        };
        table.row(&format!("per call, wasm: {name}"), us(wasm), "");
        table.row(
            &format!("per call, native core: {name}"),
            us(native),
            format!(
                "wasm/native = {:.2} (target ≤ 1.5)",
                wasm.as_secs_f64() / native.as_secs_f64()
            ),
        );
    }

    // Batch against a slow loopback server.
    let server = SlowServer::start()?;
    let ips = addresses();
    let mut batch_settings = empty_settings();
    batch_settings.base_url = Some(format!("http://{}", server.addr));
    batch_settings.cache_ttl_secs = Some(0);
    let mut live = InstanceOptions::new(Egress::Live {
        allowed: server.addr.clone(),
    });
    live.env = vec![("TIP_API_KEY".into(), "bench".into())];
    let mut peak_memory = 0;
    let mut sequential = Duration::ZERO;
    for concurrency in [1u32, 8, 32] {
        let mut instance = runtime.instantiate(&live).map_err(|e| anyhow!("{e:?}"))?;
        batch_settings.concurrency = Some(concurrency);
        let t = Instant::now();
        let results = instance
            .enrich_batch(&ips, &batch_settings, Duration::from_secs(600))
            .map_err(|e| anyhow!("{e:?}"))?;
        let wall = t.elapsed();
        let failed = results.iter().filter(|r| r.is_err()).count();
        peak_memory = peak_memory.max(instance.peak_memory());
        let ideal = LATENCY * BATCH.div_ceil(concurrency as usize) as u32;
        if concurrency == 1 {
            sequential = wall;
        }
        table.row(
            &format!("batch of {BATCH} at 50 ms, concurrency {concurrency}"),
            ms(wall),
            format!(
                "ideal {} → {:.1}% over{}",
                ms(ideal),
                (wall.as_secs_f64() / ideal.as_secs_f64() - 1.0) * 100.0,
                if failed > 0 {
                    format!(", {failed} failed")
                } else {
                    String::new()
                }
            ),
        );
    }
    match python_sequential(&server.addr, &ips) {
        Ok(py) => table.row(
            &format!("batch of {BATCH}, sequential Python urllib client"),
            ms(py),
            format!(
                "python / component at concurrency 1 = {:.2}",
                py.as_secs_f64() / sequential.as_secs_f64()
            ),
        ),
        Err(e) => table.row(
            "batch, sequential Python client",
            "n/a".into(),
            format!("{e:#}"),
        ),
    }
    table.row(
        "peak guest linear memory (batches above)",
        format!("{} KiB", peak_memory / 1024),
        "",
    );

    // The CLI: warm-cache startup and peak RSS on the batch.
    match cli_path() {
        Ok(cli) => {
            let cache =
                std::env::temp_dir().join(format!("tip-bench-cache-{}", std::process::id()));
            let run = |args: &[&str]| {
                Command::new(&cli)
                    .args(args)
                    .env("TIP_ENRICH_CACHE_DIR", &cache)
                    .env_remove("TIP_API_KEY")
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status()
            };
            let cold = time(1, || run(&["-q", "10.0.0.1"]));
            let warm = time(10, || run(&["-q", "10.0.0.1"]));
            table.row("CLI run, first (compiles, fills the cache)", ms(cold), "");
            table.row(
                "CLI run, warm precompiled cache",
                ms(warm),
                "target well under 50 ms",
            );
            let (wall, rss) = cli_batch(&cli, &server.addr, &ips, &cache)?;
            table.row(
                &format!("CLI: batch of {BATCH} at concurrency 32, wall"),
                ms(wall),
                "process start to exit",
            );
            table.row(
                "CLI: peak RSS for that batch",
                rss.map_or_else(|| "n/a".into(), |kib| format!("{} MiB", kib / 1024)),
                "/usr/bin/time -f %M",
            );
            let _ = std::fs::remove_dir_all(&cache);
        }
        Err(e) => table.row("CLI rows", "n/a".into(), format!("{e:#}")),
    }
    Ok(())
}

/// `tip-bench store`: the answer store on a Zipf-distributed stream of
/// 20 000 lookups over 2 000 addresses, split across 20 CLI runs on one
/// SQLite file, then the same stream through 3 `tip-enrich serve` replicas on
/// one Redis (a real `redis-server` on a free loopback port). Reports the API
/// requests spent against the distinct addresses (the least possible) and
/// against one per lookup (what an integration without a store spends), and
/// the latency of a cached lookup through the CLI and through serve.
mod store_bench {
    use std::io::{BufRead, BufReader, Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::process::{Child, Command, Stdio};
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use anyhow::{Context, Result, anyhow, bail};

    const LOOKUPS: usize = 20_000;
    const ADDRESSES: usize = 2_000;
    const CLI_RUNS: usize = 20;
    const REPLICAS: usize = 3;
    const CLIENTS: usize = 8;
    /// The loopback API's latency per answer.
    const API_LATENCY: Duration = Duration::from_millis(20);

    fn address(rank: usize) -> String {
        format!("45.9.{}.{}", rank / 250, rank % 250 + 1)
    }

    /// Zipf (s = 1) ranks from a fixed seed: the same stream every run.
    fn zipf_stream() -> Vec<usize> {
        let weights: Vec<f64> = (1..=ADDRESSES).map(|k| 1.0 / k as f64).collect();
        let total: f64 = weights.iter().sum();
        let mut cdf = Vec::with_capacity(ADDRESSES);
        let mut acc = 0.0;
        for w in &weights {
            acc += w / total;
            cdf.push(acc);
        }
        let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
        (0..LOOKUPS)
            .map(|_| {
                // xorshift64*
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                let x =
                    (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64;
                cdf.partition_point(|&c| c < x).min(ADDRESSES - 1)
            })
            .collect()
    }

    /// A loopback TIP API: every answer green after [`API_LATENCY`],
    /// keep-alive, counting requests.
    struct Api {
        url: String,
        requests: Arc<AtomicUsize>,
    }

    fn start_api() -> Result<Api> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let url = format!("http://{}", listener.local_addr()?);
        let requests = Arc::new(AtomicUsize::new(0));
        let counted = requests.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let counted = counted.clone();
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(match conn.try_clone() {
                        Ok(c) => c,
                        Err(_) => return,
                    });
                    let mut conn = conn;
                    loop {
                        let mut head = String::new();
                        loop {
                            let mut line = String::new();
                            match reader.read_line(&mut line) {
                                Ok(0) | Err(_) => return,
                                Ok(_) => {}
                            }
                            if line == "\r\n" {
                                break;
                            }
                            head.push_str(&line);
                        }
                        counted.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(API_LATENCY);
                        let body = r#"{"LicenseInfo":{"DayRequests":1,"DayQuota":100000},"Zone":"Green","IpGeneralInfo":{"ThreatScore":0,"Status":"Known"}}"#;
                        let answer = format!(
                            "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
                            body.len()
                        );
                        if conn.write_all(answer.as_bytes()).is_err() {
                            return;
                        }
                    }
                });
            }
        });
        Ok(Api { url, requests })
    }

    fn percentile(xs: &mut [Duration], p: f64) -> Duration {
        xs.sort();
        let i = ((xs.len() as f64 - 1.0) * p).round() as usize;
        xs.get(i).copied().unwrap_or_default()
    }

    fn ms(d: Duration) -> String {
        format!("{:.2} ms", d.as_secs_f64() * 1000.0)
    }

    fn cli() -> Result<std::path::PathBuf> {
        let exe = std::env::current_exe()?;
        let dir = exe.parent().ok_or_else(|| anyhow!("no directory"))?;
        let cli = dir.join("tip-enrich");
        if !cli.exists() {
            bail!("build the CLI first: cargo build --release -p host-harness");
        }
        Ok(cli)
    }

    fn free_port() -> Result<u16> {
        Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
    }

    /// One GET on a kept-alive connection; the body.
    fn get(conn: &mut BufReader<TcpStream>, path: &str) -> Result<String> {
        // One write: `write!` on a socket would send each piece on its own.
        conn.get_mut()
            .write_all(format!("GET {path} HTTP/1.1\r\nhost: bench\r\n\r\n").as_bytes())?;
        let mut length = 0usize;
        let mut chunked = false;
        let mut status = String::new();
        conn.read_line(&mut status)?;
        loop {
            let mut line = String::new();
            conn.read_line(&mut line)?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            let lower = line.to_ascii_lowercase();
            if let Some(v) = lower.strip_prefix("content-length:") {
                length = v.trim().parse()?;
            }
            if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
                chunked = true;
            }
        }
        let mut body = Vec::new();
        if chunked {
            loop {
                let mut size = String::new();
                conn.read_line(&mut size)?;
                let n = usize::from_str_radix(size.trim(), 16)?;
                let mut chunk = vec![0; n + 2];
                conn.read_exact(&mut chunk)?;
                chunk.truncate(n);
                body.extend(chunk);
                if n == 0 {
                    break;
                }
            }
        } else {
            body.resize(length, 0);
            conn.read_exact(&mut body)?;
        }
        if !status.contains(" 200 ") {
            bail!("{path}: {status}");
        }
        Ok(String::from_utf8_lossy(&body).into_owned())
    }

    struct Killed(Child);
    impl Drop for Killed {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn wait_listening(port: u16) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(120);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if Instant::now() > deadline {
                bail!("nothing listens on {port}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    pub fn run() -> Result<()> {
        let cli = cli()?;
        let stream = zipf_stream();
        let mut distinct = stream.clone();
        distinct.sort_unstable();
        distinct.dedup();
        let work = tempfile_dir()?;
        let store = work.join("answers.sqlite");
        println!(
            "stream: {LOOKUPS} lookups over {ADDRESSES} addresses (Zipf s=1), {} distinct; API latency {} ms",
            distinct.len(),
            API_LATENCY.as_millis()
        );

        // 1. 20 CLI runs on one SQLite file.
        let api = start_api()?;
        let mut runs = Vec::new();
        let started = Instant::now();
        for part in stream.chunks(LOOKUPS / CLI_RUNS) {
            let input: String = part.iter().map(|&r| address(r) + "\n").collect();
            let t = Instant::now();
            let mut child = Command::new(&cli)
                .env("TIP_API_KEY", "bench-key-0123456789")
                .env("TIP_ENRICH_CACHE_DIR", work.join("cache-dir"))
                .args(["--quiet", "--base-url", &api.url, "--cache"])
                .arg(&store)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()?;
            child
                .stdin
                .take()
                .context("stdin")?
                .write_all(input.as_bytes())?;
            let out = child.wait_with_output()?;
            let lines = String::from_utf8_lossy(&out.stdout).lines().count();
            if lines != part.len() {
                bail!("a CLI run gave {lines} lines for {} inputs", part.len());
            }
            runs.push(t.elapsed());
        }
        let cli_wall = started.elapsed();
        let spent = api.requests.load(Ordering::SeqCst);
        println!(
            "CLI, {CLI_RUNS} runs of {}: {spent} API requests (distinct addresses {}, one per lookup {LOOKUPS}): {:.3} of the least, {:.1} % of one per lookup; {:.1} s in all, first run {}, last {}",
            LOOKUPS / CLI_RUNS,
            distinct.len(),
            spent as f64 / distinct.len() as f64,
            100.0 * spent as f64 / LOOKUPS as f64,
            cli_wall.as_secs_f64(),
            ms(runs.first().copied().unwrap_or_default()),
            ms(runs.last().copied().unwrap_or_default()),
        );
        // A cached lookup through the CLI: one process per lookup, as a playbook step.
        let mut cached = Vec::new();
        for _ in 0..40 {
            let t = Instant::now();
            let out = Command::new(&cli)
                .env("TIP_API_KEY", "bench-key-0123456789")
                .env("TIP_ENRICH_CACHE_DIR", work.join("cache-dir"))
                .args(["--quiet", "--base-url", &api.url, "--cache"])
                .arg(&store)
                .arg(address(0))
                .output()?;
            cached.push(t.elapsed());
            if !String::from_utf8_lossy(&out.stdout).contains("\"source\":\"cache\"") {
                bail!("the CLI's hot address was not served from the store");
            }
        }
        println!(
            "CLI, a cached lookup (a whole process: start, store, answer): p50 {}, p99 {}",
            ms(percentile(&mut cached, 0.5)),
            ms(percentile(&mut cached, 0.99))
        );

        // 2. 3 serve replicas on one Redis.
        let api = start_api()?;
        let redis_port = free_port()?;
        let _redis = Killed(
            Command::new("redis-server")
                .args(["--save", "", "--appendonly", "no", "--bind", "127.0.0.1"])
                .args(["--port", &redis_port.to_string()])
                .stdout(Stdio::null())
                .spawn()
                .context("starting redis-server (Debian package redis-server)")?,
        );
        wait_listening(redis_port)?;
        let mut replicas = Vec::new();
        let mut ports = Vec::new();
        for _ in 0..REPLICAS {
            let port = free_port()?;
            replicas.push(Killed(
                Command::new(&cli)
                    .env("TIP_API_KEY", "bench-key-0123456789")
                    .args(["--quiet", "--base-url", &api.url])
                    .args(["--cache", &format!("redis://127.0.0.1:{redis_port}/0")])
                    .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()?,
            ));
            ports.push(port);
        }
        for &port in &ports {
            wait_listening(port)?;
        }
        let next = Arc::new(AtomicUsize::new(0));
        let stream = Arc::new(stream);
        let started = Instant::now();
        let clients: Vec<_> = (0..CLIENTS)
            .map(|c| {
                let (next, stream) = (next.clone(), stream.clone());
                let port = ports[c % REPLICAS];
                std::thread::spawn(move || -> Result<()> {
                    let socket = TcpStream::connect(("127.0.0.1", port))?;
                    socket.set_nodelay(true)?;
                    let mut conn = BufReader::new(socket);
                    loop {
                        let i = next.fetch_add(1, Ordering::SeqCst);
                        let Some(&rank) = stream.get(i) else {
                            return Ok(());
                        };
                        get(&mut conn, &format!("/v1/ip/{}", address(rank)))?;
                    }
                })
            })
            .collect();
        for c in clients {
            c.join().map_err(|_| anyhow!("a client panicked"))??;
        }
        let wall = started.elapsed();
        let spent = api.requests.load(Ordering::SeqCst);
        println!(
            "serve, {REPLICAS} replicas on one Redis, {CLIENTS} clients: {spent} API requests (distinct {}, one per lookup {LOOKUPS}): {:.3} of the least, {:.1} % of one per lookup; {:.0} lookups/s",
            distinct.len(),
            spent as f64 / distinct.len() as f64,
            100.0 * spent as f64 / LOOKUPS as f64,
            LOOKUPS as f64 / wall.as_secs_f64()
        );
        let stream = TcpStream::connect(("127.0.0.1", ports[1]))?;
        stream.set_nodelay(true)?;
        let mut conn = BufReader::new(stream);
        let mut cached = Vec::new();
        for _ in 0..2_000 {
            let t = Instant::now();
            let body = get(&mut conn, &format!("/v1/ip/{}", address(0)))?;
            cached.push(t.elapsed());
            if !body.contains("\"source\":\"cache\"") {
                bail!("serve's hot address was not served from the store");
            }
        }
        println!(
            "serve, a cached lookup (keep-alive GET, one replica, Redis on loopback): p50 {}, p99 {}",
            ms(percentile(&mut cached, 0.5)),
            ms(percentile(&mut cached, 0.99))
        );
        let _ = std::fs::remove_dir_all(&work);
        Ok(())
    }

    fn tempfile_dir() -> Result<std::path::PathBuf> {
        let dir = std::env::temp_dir().join(format!("tip-bench-store-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }
}

/// `tip-bench serve-vs-wasmtime`: throughput of `tip-enrich serve` against
/// the stock `wasmtime serve` on the same service component, side by side
/// and interleaved (the machine is noisy): each round runs every server in
/// turn, the order alternating between rounds, and the table gives the
/// median of the rounds. Loopback only, requests that cost no network (a
/// reserved address and `/healthz`), keep-alive connections from one
/// single-threaded load generator. `--baseline PATH` adds a third server,
/// another build of `tip-enrich` (before/after a change).
///
/// ```sh
/// bash hosts/setup.sh   # the pinned wasmtime CLI
/// cargo build --release -p host-harness
/// cargo run --release -p host-harness --bin tip-bench -- serve-vs-wasmtime --rounds 7 --secs 3
/// ```
mod serve_vs_wasmtime {
    use std::net::{SocketAddr, TcpListener, TcpStream};
    use std::path::{Path, PathBuf};
    use std::process::{Child, Command, Stdio};
    use std::time::{Duration, Instant};

    use anyhow::{Context, Result, anyhow, bail};
    use bytes::Bytes;
    use clap::Parser;
    use http_body_util::{BodyExt, Empty};
    use wasmtime_wasi_http::io::TokioIo;

    /// How long and how hard to load each server.
    #[derive(Debug, clap::Args)]
    pub(super) struct Rounds {
        /// Rounds per (path, concurrency); each round runs every server once.
        #[arg(long, default_value_t = 5)]
        pub(super) rounds: usize,
        /// Seconds of load per server per round.
        #[arg(long, default_value_t = 3.0)]
        pub(super) secs: f64,
        /// Keep-alive connections, each with one request at a time.
        #[arg(long, value_delimiter = ',', default_values_t = [8usize, 32])]
        pub(super) concurrency: Vec<usize>,
    }

    /// Throughput of `tip-enrich serve` against `wasmtime serve`.
    #[derive(Debug, Parser)]
    #[command(name = "tip-bench serve-vs-wasmtime")]
    struct Args {
        #[command(flatten)]
        load: Rounds,
        /// Paths to GET (none costs a request to the network).
        #[arg(long, value_delimiter = ',', default_values_t = ["/v1/ip/10.0.0.1".to_owned(), "/healthz".to_owned()])]
        paths: Vec<String>,
        /// The stock wasmtime CLI [default: $TIP_HOSTS_DIR/bin/wasmtime, else
        /// ~/.cache/tip-enrich/hosts/bin/wasmtime, as hosts/setup.sh installs it].
        #[arg(long)]
        wasmtime: Option<PathBuf>,
        /// `tip-enrich` to measure [default: beside this binary].
        #[arg(long)]
        tip_enrich: Option<PathBuf>,
        /// Another `tip-enrich` build to measure in the same rounds.
        #[arg(long)]
        baseline: Option<PathBuf>,
        /// The service component both run [default: the one this build embeds].
        #[arg(long)]
        component: Option<PathBuf>,
    }

    /// A server under test, killed on drop.
    pub(super) struct Server {
        name: String,
        pub(super) addr: SocketAddr,
        command: String,
        child: Child,
        log: PathBuf,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Server {
        /// Its process id (for `/proc/<pid>/status`).
        pub(super) fn pid(&self) -> u32 {
            self.child.id()
        }
    }

    pub(super) fn free_addr() -> Result<SocketAddr> {
        Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
    }

    /// Starts `program args` and waits until it accepts connections.
    pub(super) fn start(
        name: &str,
        program: &Path,
        args: &[String],
        log_dir: &Path,
    ) -> Result<Server> {
        let addr: SocketAddr = args
            .iter()
            .find_map(|a| a.parse().ok())
            .ok_or_else(|| anyhow!("no address in the arguments"))?;
        let log = log_dir.join(format!(
            "{}.log",
            name.replace(|c: char| !c.is_alphanumeric(), "-")
        ));
        let child = Command::new(program)
            .args(args)
            // The key the service wants to call itself configured; no request
            // here reaches the network (the base URL is a closed port).
            .env("TIP_API_KEY", "bench")
            .env("TIP_ENRICH_CACHE_DIR", log_dir.join("cache"))
            // As deployed: an error made on a request's path would otherwise
            // capture a backtrace (both hosts do, on some paths).
            .env_remove("RUST_BACKTRACE")
            .env_remove("RUST_LIB_BACKTRACE")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log)?)
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        let mut server = Server {
            name: name.to_owned(),
            addr,
            command: format!("{} {}", program.display(), args.join(" ")),
            child,
            log,
        };
        let deadline = Instant::now() + Duration::from_secs(120);
        while TcpStream::connect(addr).is_err() {
            if let Some(status) = server.child.try_wait()? {
                bail!(
                    "{name} exited ({status}): {}",
                    std::fs::read_to_string(&server.log).unwrap_or_default()
                );
            }
            if Instant::now() > deadline {
                bail!("{name} did not listen on {addr}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(server)
    }

    /// What one load run did.
    pub(super) struct Load {
        ok: u64,
        failed: u64,
        elapsed: Duration,
        latencies: Vec<Duration>,
    }

    impl Load {
        fn rps(&self) -> f64 {
            self.ok as f64 / self.elapsed.as_secs_f64()
        }
    }

    /// One keep-alive connection sending `GET path` back to back until `until`.
    async fn connection(
        addr: SocketAddr,
        path: String,
        headers: Vec<(String, String)>,
        until: tokio::time::Instant,
    ) -> Result<(u64, u64, Vec<Duration>)> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| anyhow!("handshake: {e}"))?;
        tokio::task::spawn_local(async move {
            let _ = conn.await;
        });
        let (mut ok, mut failed, mut latencies) = (0, 0, Vec::new());
        while tokio::time::Instant::now() < until {
            let mut request =
                hyper::Request::get(path.as_str()).header(hyper::header::HOST, "127.0.0.1");
            for (name, value) in &headers {
                request = request.header(name, value);
            }
            let request = request.body(Empty::<Bytes>::new())?;
            let started = Instant::now();
            sender
                .ready()
                .await
                .map_err(|e| anyhow!("connection: {e}"))?;
            let response = sender
                .send_request(request)
                .await
                .map_err(|e| anyhow!("request: {e}"))?;
            let status = response.status();
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| anyhow!("body: {e}"))?
                .to_bytes();
            latencies.push(started.elapsed());
            if status == hyper::StatusCode::OK && !body.is_empty() {
                ok += 1;
            } else {
                failed += 1;
            }
        }
        Ok((ok, failed, latencies))
    }

    /// `concurrency` connections on `GET path` (with `headers`) for `secs`,
    /// on one thread.
    pub(super) fn load(
        addr: SocketAddr,
        path: &str,
        headers: &[(String, String)],
        concurrency: usize,
        secs: f64,
    ) -> Result<Load> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let local = tokio::task::LocalSet::new();
        local.block_on(&runtime, async {
            let started = Instant::now();
            let until = tokio::time::Instant::now() + Duration::from_secs_f64(secs);
            let tasks: Vec<_> = (0..concurrency)
                .map(|_| {
                    tokio::task::spawn_local(connection(
                        addr,
                        path.to_owned(),
                        headers.to_vec(),
                        until,
                    ))
                })
                .collect();
            let mut total = Load {
                ok: 0,
                failed: 0,
                elapsed: Duration::ZERO,
                latencies: Vec::new(),
            };
            for task in tasks {
                let (ok, failed, latencies) = task.await??;
                total.ok += ok;
                total.failed += failed;
                total.latencies.extend(latencies);
            }
            total.elapsed = started.elapsed();
            Ok(total)
        })
    }

    /// `GET path` on every server, `rounds` times `secs` each, the order
    /// alternating from round to round; one line per server: the median
    /// req/s, p50 and p99 over all rounds, the ratio to the first server.
    pub(super) fn compare(
        servers: &[Server],
        path: &str,
        headers: &[(String, String)],
        concurrency: usize,
        rounds: usize,
        secs: f64,
    ) -> Result<()> {
        let mut rps = vec![Vec::new(); servers.len()];
        let mut lat = vec![Vec::new(); servers.len()];
        for round in 0..rounds {
            let mut order: Vec<usize> = (0..servers.len()).collect();
            if round % 2 == 1 {
                order.reverse();
            }
            for i in order {
                let Some(s) = servers.get(i) else { continue };
                let l = load(s.addr, path, headers, concurrency, secs)?;
                if l.failed > 0 {
                    bail!(
                        "{}: {} of {} requests failed",
                        s.name,
                        l.failed,
                        l.failed + l.ok
                    );
                }
                if let Some(r) = rps.get_mut(i) {
                    r.push(l.rps());
                }
                if let Some(v) = lat.get_mut(i) {
                    v.extend(l.latencies);
                }
            }
        }
        let reference = rps.first().cloned().map(median).unwrap_or(f64::NAN);
        for (i, s) in servers.iter().enumerate() {
            let r = rps.get(i).cloned().unwrap_or_default();
            let mut l = lat.get(i).cloned().unwrap_or_default();
            l.sort();
            let pct = |p: f64| {
                l.get(((l.len() as f64 * p) as usize).min(l.len().saturating_sub(1)))
                    .map_or_else(
                        || "n/a".into(),
                        |d| format!("{:.2} ms", d.as_secs_f64() * 1e3),
                    )
            };
            let m = median(r.clone());
            println!(
                "{:<18} {:>4}  {:<30} {:>10.0} {:>9} {:>9}  {:>6.2}x  {}",
                path,
                concurrency,
                s.name,
                m,
                pct(0.5),
                pct(0.99),
                m / reference,
                r.iter()
                    .map(|x| format!("{x:.0}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            );
        }
        Ok(())
    }

    pub(super) fn median(mut xs: Vec<f64>) -> f64 {
        xs.sort_by(f64::total_cmp);
        xs.get(xs.len() / 2).copied().unwrap_or(f64::NAN)
    }

    pub(super) fn loadavg() -> String {
        std::fs::read_to_string("/proc/loadavg")
            .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
            .unwrap_or_else(|_| "n/a".into())
    }

    fn default_wasmtime() -> Option<PathBuf> {
        let dir = match std::env::var_os("TIP_HOSTS_DIR").filter(|d| !d.is_empty()) {
            Some(d) => PathBuf::from(d),
            None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/tip-enrich/hosts"),
        };
        Some(dir.join("bin/wasmtime"))
    }

    pub fn run(argv: impl Iterator<Item = String>) -> Result<()> {
        let args = Args::parse_from(std::iter::once("serve-vs-wasmtime".to_owned()).chain(argv));
        let wasmtime = args
            .wasmtime
            .clone()
            .or_else(default_wasmtime)
            .filter(|p| p.exists())
            .ok_or_else(|| {
                anyhow!("no wasmtime CLI: run `bash hosts/setup.sh` or pass --wasmtime")
            })?;
        let tip_enrich = match &args.tip_enrich {
            Some(p) => p.clone(),
            None => super::cli_path()?,
        };
        let component = args
            .component
            .clone()
            .unwrap_or_else(|| PathBuf::from(host_harness::runtime::SERVICE_COMPONENT_PATH));
        let wasm = component.display().to_string();
        let dir = std::env::temp_dir().join(format!("tip-bench-serve-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let version = Command::new(&wasmtime).arg("--version").output()?;
        let base_url = "http://127.0.0.1:9";

        let mut servers = Vec::new();
        let addr = free_addr()?.to_string();
        servers.push(start(
            "wasmtime serve",
            &wasmtime,
            &[
                "serve",
                "-S",
                "cli",
                "-S",
                "http",
                "-S",
                "config",
                "-S",
                "keyvalue",
                "-S",
                "config-var=tip_api_key=bench",
                "-S",
                &format!("config-var=tip_base_url={base_url}"),
                "--addr",
                &addr,
                &wasm,
            ]
            .map(str::to_owned),
            &dir,
        )?);
        let ours = |name: &str, program: &Path| -> Result<Server> {
            let addr = free_addr()?.to_string();
            start(
                name,
                program,
                &[
                    "serve",
                    "-q",
                    "--base-url",
                    base_url,
                    "--listen",
                    &addr,
                    "--service-component",
                    &wasm,
                ]
                .map(str::to_owned),
                &dir,
            )
        };
        servers.push(ours("tip-enrich serve", &tip_enrich)?);
        if let Some(baseline) = &args.baseline {
            servers.push(ours("tip-enrich serve (baseline)", baseline)?);
        }

        println!(
            "serve throughput: {} rounds x {} s per server, interleaved",
            args.load.rounds, args.load.secs
        );
        println!(
            "wasmtime: {}",
            String::from_utf8_lossy(&version.stdout).trim()
        );
        for s in &servers {
            println!("{:<30} {}", s.name, s.command);
        }
        println!("load average before: {}", loadavg());
        // Warm-up: compile caches, pools, the kernel's socket state.
        for s in &servers {
            for path in &args.paths {
                load(s.addr, path, &[], 8, 0.5)?;
            }
        }
        println!(
            "\n{:<18} {:>4}  {:<30} {:>10} {:>9} {:>9}  {:>7}  rounds (req/s)",
            "path", "conc", "server", "req/s", "p50", "p99", "ratio"
        );
        for path in &args.paths {
            for &concurrency in &args.load.concurrency {
                compare(
                    &servers,
                    path,
                    &[],
                    concurrency,
                    args.load.rounds,
                    args.load.secs,
                )?;
            }
        }
        println!("\nload average after: {}", loadavg());
        drop(servers);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}

/// `tip-bench gate`: requests/s and p50/p99 of `GET /` through `tip-enrich
/// gate` at a cached decision (a client at 8.8.8.8 behind a trusted proxy,
/// its verdict in the memory store after the warm-up), through the same host
/// running the pass-through component (the same forwarding, no decision),
/// and straight to the origin; then the gate's peak RSS (`VmHWM`) across one
/// download of `--big-mib` MiB. The origin is this binary (`tip-bench
/// gate-origin ADDR BYTES`), a hyper server in its own process; the API is
/// replayed from the bundled recordings.
///
/// ```sh
/// cargo build --release -p host-harness
/// cargo run --release -p host-harness --bin tip-bench -- gate --rounds 5 --secs 3
/// ```
mod gate_bench {
    use std::convert::Infallible;
    use std::net::SocketAddr;
    use std::path::PathBuf;
    use std::pin::Pin;
    use std::task::{Context as TaskContext, Poll};
    use std::time::{Duration, Instant};

    use anyhow::{Context, Result, anyhow, bail};
    use bytes::Bytes;
    use clap::Parser;
    use http_body_util::{BodyExt, Empty, Full};
    use hyper::body::{Body, Frame, SizeHint};
    use wasmtime_wasi_http::io::TokioIo;

    use super::serve_vs_wasmtime::{Rounds, Server, compare, free_addr, load, loadavg, start};

    #[derive(Debug, Parser)]
    #[command(name = "tip-bench gate")]
    struct Args {
        #[command(flatten)]
        load: Rounds,
        /// Size of the download the gate's RSS is read across, in MiB.
        #[arg(long, default_value_t = 200)]
        big_mib: u64,
        /// `tip-enrich` to measure [default: beside this binary].
        #[arg(long)]
        tip_enrich: Option<PathBuf>,
    }

    /// A body of `left` bytes of one 64 KiB block, made as it is sent.
    struct Big {
        block: Bytes,
        left: u64,
    }

    impl Body for Big {
        type Data = Bytes;
        type Error = Infallible;

        fn poll_frame(
            mut self: Pin<&mut Self>,
            _cx: &mut TaskContext<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            if self.left == 0 {
                return Poll::Ready(None);
            }
            let n = self.left.min(self.block.len() as u64);
            self.left -= n;
            let data = self.block.slice(..usize::try_from(n).unwrap_or(usize::MAX));
            Poll::Ready(Some(Ok(Frame::data(data))))
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.left)
        }
    }

    type OriginBody = http_body_util::combinators::UnsyncBoxBody<Bytes, Infallible>;

    /// `tip-bench gate-origin ADDR BYTES`: `GET /big` answers BYTES bytes,
    /// anything else a short text.
    pub fn origin(mut argv: impl Iterator<Item = String>) -> Result<()> {
        let addr: SocketAddr = argv.next().context("gate-origin ADDR BYTES")?.parse()?;
        let big: u64 = argv.next().context("gate-origin ADDR BYTES")?.parse()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()?;
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind(addr).await?;
            let block = Bytes::from((0..1u32 << 16).map(|i| i as u8).collect::<Vec<u8>>());
            loop {
                let (stream, _) = listener.accept().await?;
                let _ = stream.set_nodelay(true);
                let block = block.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |r: hyper::Request<_>| {
                        let body: OriginBody = if r.uri().path() == "/big" {
                            Big {
                                block: block.clone(),
                                left: big,
                            }
                            .boxed_unsync()
                        } else {
                            Full::new(Bytes::from_static(b"hello from the origin\n")).boxed_unsync()
                        };
                        async move { Ok::<_, Infallible>(hyper::Response::new(body)) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        })
    }

    /// Peak RSS of `pid`, in KiB.
    fn peak_rss_kib(pid: u32) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmHWM:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .ok_or_else(|| anyhow!("no VmHWM for {pid}"))
    }

    /// `GET /big` through `addr`: the bytes received and the time taken.
    fn download(addr: SocketAddr, headers: &[(String, String)]) -> Result<(u64, Duration)> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        runtime.block_on(async {
            let stream = tokio::net::TcpStream::connect(addr).await?;
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .map_err(|e| anyhow!("handshake: {e}"))?;
            tokio::spawn(conn);
            let mut request = hyper::Request::get("/big").header(hyper::header::HOST, "127.0.0.1");
            for (name, value) in headers {
                request = request.header(name, value);
            }
            let started = Instant::now();
            let response = sender
                .send_request(request.body(Empty::<Bytes>::new())?)
                .await
                .map_err(|e| anyhow!("request: {e}"))?;
            if response.status() != hyper::StatusCode::OK {
                bail!("/big answered {}", response.status());
            }
            let mut body = response.into_body();
            let mut bytes = 0u64;
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| anyhow!("body: {e}"))?;
                if let Some(data) = frame.data_ref() {
                    bytes += data.len() as u64;
                }
            }
            Ok((bytes, started.elapsed()))
        })
    }

    pub fn run(argv: impl Iterator<Item = String>) -> Result<()> {
        let args = Args::parse_from(std::iter::once("gate".to_owned()).chain(argv));
        let tip_enrich = match &args.tip_enrich {
            Some(p) => p.clone(),
            None => super::cli_path()?,
        };
        let dir = std::env::temp_dir().join(format!("tip-bench-gate-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let big = args.big_mib << 20;
        let origin_addr = free_addr()?;
        let origin = start(
            "origin",
            &std::env::current_exe()?,
            &[
                "gate-origin".to_owned(),
                origin_addr.to_string(),
                big.to_string(),
            ],
            &dir,
        )?;
        let origin_url = format!("http://{origin_addr}");
        let gate = |name: &str, component: &str| -> Result<Server> {
            let addr = free_addr()?.to_string();
            start(
                name,
                &tip_enrich,
                &[
                    "gate",
                    "-q",
                    "--listen",
                    &addr,
                    "--origin",
                    &origin_url,
                    "--trusted-proxies",
                    "127.0.0.1/32",
                    "--replay",
                    host_harness::BUNDLED_RECORDINGS,
                    "--cache",
                    "memory",
                    "--gate-component",
                    component,
                ]
                .map(str::to_owned),
                &dir,
            )
        };
        let gated = gate(
            "tip-enrich gate",
            host_harness::runtime::GATE_COMPONENT_PATH,
        )?;
        let passthrough = gate(
            "tip-enrich gate (pass-through)",
            host_harness::runtime::PASSTHROUGH_COMPONENT_PATH,
        )?;
        // A green client behind the trusted proxy: looked up once (the
        // warm-up), then decided from the answer store.
        let headers = [("x-forwarded-for".to_owned(), "8.8.8.8".to_owned())];
        println!(
            "gate throughput: {} rounds x {} s per target, interleaved; GET / with x-forwarded-for: 8.8.8.8",
            args.load.rounds, args.load.secs
        );
        println!("load average before: {}", loadavg());
        let targets = [gated, passthrough, origin];
        for t in &targets {
            load(t.addr, "/", &headers, 8, 0.5)?;
        }
        println!(
            "\n{:<18} {:>4}  {:<30} {:>10} {:>9} {:>9}  {:>7}  rounds (req/s)",
            "path", "conc", "target", "req/s", "p50", "p99", "ratio"
        );
        for &concurrency in &args.load.concurrency {
            compare(
                &targets,
                "/",
                &headers,
                concurrency,
                args.load.rounds,
                args.load.secs,
            )?;
        }
        let [gated, passthrough, origin] = targets;
        drop(passthrough);
        let before = peak_rss_kib(gated.pid())?;
        let (bytes, took) = download(gated.addr, &headers)?;
        if bytes != big {
            bail!("the download through the gate gave {bytes} of {big} bytes");
        }
        let after = peak_rss_kib(gated.pid())?;
        println!(
            "\n{} MiB through the gate in {:.2} s ({:.0} MiB/s); gate peak RSS {} KiB before, {} KiB after",
            args.big_mib,
            took.as_secs_f64(),
            args.big_mib as f64 / took.as_secs_f64(),
            before,
            after
        );
        println!("load average after: {}", loadavg());
        drop((gated, origin));
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}

/// `tip-bench events`: `tip-enrich events` on an NDJSON file of ECS events
/// (each with `source.ip` and `destination.ip`; 1 % of the address
/// occurrences distinct) against the plain address mode (`tip-enrich` with
/// the same addresses, one per line, in the same order), both on replayed
/// recordings written for every distinct address, each with a fresh SQLite
/// answer store, then again on the filled store. Wall time and peak RSS come
/// from `/usr/bin/time`.
///
/// ```sh
/// cargo build --release -p host-harness
/// cargo run --release -p host-harness --bin tip-bench -- events --lines 1000000
/// ```
mod events_bench {
    use std::fmt::Write as _;
    use std::io::{BufWriter, Write};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Stdio};
    use std::time::{Duration, Instant};

    use anyhow::{Context, Result, bail};
    use clap::Parser;

    /// `tip-enrich events` against the plain address mode.
    #[derive(Debug, Parser)]
    #[command(name = "tip-bench events")]
    struct Args {
        /// Events in the file (two addresses each).
        #[arg(long, default_value_t = 1_000_000)]
        lines: usize,
        /// Distinct addresses, as a share of the address occurrences.
        #[arg(long, default_value_t = 0.01)]
        distinct: f64,
        /// `tip-enrich` to measure [default: beside this binary].
        #[arg(long)]
        tip_enrich: Option<PathBuf>,
    }

    const BODIES: [(&str, &str); 5] = [
        (
            "red",
            r#"{"LicenseInfo":{"AccessType":"Commercial","DayRequests":12,"DayQuota":100000},"Zone":"Red","IpGeneralInfo":{"HitsCount":10000,"FirstSeen":"2020-11-05T08:13:42Z","ThreatScore":92,"Status":"Known","CountryCode":"NL","Categories":["CATEGORY_MALWARE","CATEGORY_BOTNET_CNC"],"HasApt":true,"RelatedAptReports":[{"Id":"7aQ1bKX1S0KHGtJ2aJ9S3w","Title":"An APT report"}]}}"#,
        ),
        (
            "orange",
            r#"{"Zone":"Orange","IpGeneralInfo":{"ThreatScore":75,"Status":"Known","CountryCode":"DE","Categories":["CATEGORY_TOR"]}}"#,
        ),
        (
            "yellow",
            r#"{"Zone":"Yellow","IpGeneralInfo":{"ThreatScore":50,"Status":"Known","CountryCode":"US"}}"#,
        ),
        (
            "green",
            r#"{"Zone":"Green","IpGeneralInfo":{"ThreatScore":0,"Status":"Known","CountryCode":"US","HitsCount":100000}}"#,
        ),
        (
            "grey",
            r#"{"Zone":"Grey","IpGeneralInfo":{"Status":"NoInfo"}}"#,
        ),
    ];

    /// The `i`-th distinct address: public, never reserved.
    fn address(i: usize) -> String {
        format!("45.{}.{}.{}", 10 + i / 65_536 % 200, i / 256 % 256, i % 256)
    }

    /// A fixed-seed generator (xorshift): the same file every run.
    struct Rng(u64);
    impl Rng {
        fn below(&mut self, n: usize) -> usize {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            (self.0 % n as u64) as usize
        }
    }

    /// Recordings for every distinct address; their zones cycle.
    fn write_recordings(dir: &Path, distinct: usize) -> Result<()> {
        std::fs::create_dir_all(dir.join("bodies"))?;
        for (name, body) in BODIES {
            std::fs::write(dir.join(format!("bodies/{name}.json")), body)?;
        }
        for i in 0..distinct {
            let ip = address(i);
            let (name, _) = BODIES[i % BODIES.len()];
            std::fs::write(
                dir.join(format!("{ip}.toml")),
                format!(
                    "[request]\nmethod = \"GET\"\nurl = \"https://tip.kaspersky.com/api/ip/{ip}?sections=LicenseInfo,Zone,IpGeneralInfo\"\n\n[response]\nstatus = 200\nheaders = {{ \"content-type\" = \"application/json\" }}\nbody_file = \"bodies/{name}.json\"\n"
                ),
            )?;
        }
        Ok(())
    }

    /// The events file and the same addresses, one per line.
    fn write_inputs(events: &Path, plain: &Path, lines: usize, distinct: usize) -> Result<u64> {
        let mut ev = BufWriter::new(std::fs::File::create(events)?);
        let mut ips = BufWriter::new(std::fs::File::create(plain)?);
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut line = String::new();
        for n in 0..lines {
            let (src, dst) = (address(rng.below(distinct)), address(rng.below(distinct)));
            line.clear();
            write!(
                line,
                r#"{{"@timestamp":"2026-12-01T10:{:02}:{:02}.{:03}Z","event":{{"kind":"event","category":["network"],"type":["connection"],"dataset":"zeek.conn","id":"C{n:09}"}},"source":{{"ip":"{src}","port":{},"bytes":{}}},"destination":{{"ip":"{dst}","port":443}},"network":{{"transport":"tcp","protocol":"tls","bytes":{}}},"observer":{{"name":"sensor-1","type":"ids"}},"message":"conn {src} -> {dst}"}}"#,
                n / 60_000 % 60,
                n / 1000 % 60,
                n % 1000,
                1024 + n % 60_000,
                n % 9973,
                n % 99_991,
            )?;
            writeln!(ev, "{line}")?;
            writeln!(ips, "{src}\n{dst}")?;
        }
        ev.flush()?;
        ips.flush()?;
        Ok(std::fs::metadata(events)?.len())
    }

    /// One run: (wall, peak RSS in KiB, stdout lines).
    fn run_cli(
        cli: &Path,
        args: &[&str],
        input: &Path,
        store: &Path,
    ) -> Result<(Duration, u64, u64)> {
        let out_path = store.with_extension("out");
        let t = Instant::now();
        let output = Command::new("/usr/bin/time")
            .args(["-f", "%M"])
            .arg(cli)
            .args(args)
            .arg("--cache")
            .arg(store)
            .env_remove("TIP_API_KEY")
            .stdin(std::fs::File::open(input)?)
            .stdout(std::fs::File::create(&out_path)?)
            .stderr(Stdio::piped())
            .output()
            .context("running /usr/bin/time tip-enrich")?;
        let wall = t.elapsed();
        let stderr = String::from_utf8_lossy(&output.stderr);
        let rss = stderr
            .lines()
            .last()
            .and_then(|l| l.trim().parse().ok())
            .with_context(|| format!("no peak RSS from /usr/bin/time: {stderr}"))?;
        let text = std::fs::read(&out_path)?;
        let lines = text.iter().filter(|b| **b == b'\n').count() as u64;
        std::fs::remove_file(&out_path)?;
        Ok((wall, rss, lines))
    }

    pub fn run(argv: impl Iterator<Item = String>) -> Result<()> {
        let args = Args::parse_from(std::iter::once("tip-bench events".to_owned()).chain(argv));
        let cli = match &args.tip_enrich {
            Some(p) => p.clone(),
            None => super::cli_path()?,
        };
        let occurrences = args.lines * 2;
        let distinct = ((occurrences as f64 * args.distinct).round() as usize).max(1);
        let work = std::env::temp_dir().join(format!("tip-bench-events-{}", std::process::id()));
        std::fs::create_dir_all(&work)?;
        let recordings = work.join("recordings");
        write_recordings(&recordings, distinct)?;
        let (events, plain) = (work.join("events.ndjson"), work.join("addresses.txt"));
        let bytes = write_inputs(&events, &plain, args.lines, distinct)?;
        println!(
            "{} events ({:.0} MB), {} address occurrences, {} distinct ({:.1} %), replayed; loadavg {}",
            args.lines,
            bytes as f64 / 1e6,
            occurrences,
            distinct,
            100.0 * distinct as f64 / occurrences as f64,
            std::fs::read_to_string("/proc/loadavg")
                .unwrap_or_default()
                .trim()
        );
        let replay = recordings.to_string_lossy().into_owned();
        let events_args = ["events", "--quiet", "--replay", replay.as_str()];
        let plain_args = ["--quiet", "--replay", replay.as_str()];
        println!(
            "{:<44} {:>10} {:>14} {:>16} {:>14}",
            "run", "wall", "events/s", "addresses/s", "peak RSS"
        );
        let mut rows = Vec::new();
        for (name, cli_args, input, expect) in [
            (
                "events, fresh SQLite store",
                &events_args[..],
                &events,
                args.lines as u64,
            ),
            (
                "plain addresses, fresh SQLite store",
                &plain_args[..],
                &plain,
                occurrences as u64,
            ),
        ] {
            let store = work.join(format!("{}.sqlite", rows.len()));
            for pass in ["fresh", "filled"] {
                let (wall, rss, lines) = run_cli(&cli, cli_args, input, &store)?;
                if lines != expect {
                    bail!("{name}: {lines} lines out, {expect} expected");
                }
                let label = name.replace("fresh", pass);
                let secs = wall.as_secs_f64();
                println!(
                    "{:<44} {:>8.1} s {:>14.0} {:>16.0} {:>11.1} MiB",
                    label,
                    secs,
                    args.lines as f64 / secs,
                    occurrences as f64 / secs,
                    rss as f64 / 1024.0
                );
                rows.push((label, secs, rss));
            }
        }
        // Memory against the length of the stream: a fifth of the events over
        // the same distinct addresses, on the filled store.
        let fifth = work.join("events-fifth.ndjson");
        let text = std::fs::read(&events)?;
        let cut = text
            .iter()
            .enumerate()
            .filter(|(_, b)| **b == b'\n')
            .nth(args.lines / 5 - 1)
            .map_or(text.len(), |(i, _)| i + 1);
        std::fs::write(&fifth, &text[..cut])?;
        drop(text);
        let (wall, rss, lines) = run_cli(&cli, &events_args, &fifth, &work.join("0.sqlite"))?;
        if lines != (args.lines / 5) as u64 {
            bail!("a fifth of the events: {lines} lines out");
        }
        println!(
            "{:<44} {:>8.1} s {:>14.0} {:>16.0} {:>11.1} MiB",
            format!("events, filled store, {} lines", args.lines / 5),
            wall.as_secs_f64(),
            (args.lines / 5) as f64 / wall.as_secs_f64(),
            (occurrences / 5) as f64 / wall.as_secs_f64(),
            rss as f64 / 1024.0
        );
        if let [(_, e1, _), (_, e2, _), (_, p1, _), (_, p2, _)] = rows.as_slice() {
            println!(
                "events mode against plain mode on the same addresses: {:.2}x (fresh store), {:.2}x (filled store) the address throughput",
                p1 / e1,
                p2 / e2
            );
        }
        let _ = std::fs::remove_dir_all(&work);
        Ok(())
    }
}
