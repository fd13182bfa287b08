//! `tip-bench`: measures the component and prints one table, every figure
//! from this run on this machine (the machine is shared and noisy, so the
//! figures that matter are ratios taken side by side).
//!
//! ```sh
//! cargo run --release -p host-harness --bin tip-bench
//! ```
//!
//! Rows: component size; load by compiling vs deserialising a precompiled
//! artefact; instantiation (on-demand and pooling allocators); guest CPU per
//! call on three answers against the same core natively; a batch of 256
//! distinct addresses against a loopback server with 50 ms latency at
//! concurrency 1, 8 and 32 against the ideal; a sequential Python client on
//! the same batch; CLI startup with a warm precompiled cache; peak RSS of the
//! CLI and peak guest linear memory for the batch.

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
