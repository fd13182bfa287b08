//! `tip-enrich gate` end to end, loopback only: the gate component in the
//! host, an origin in this test (hyper: echo, a 200 MiB download, an upload
//! hashed, a slow answer), the Kaspersky API replayed from the bundled
//! recordings or played by a loopback server.
//!
//! Clients that are "behind a trusted proxy" connect from 127.0.0.2 to a
//! gate started with `--trusted-proxies 127.0.0.2/32`; every other client
//! connects from 127.0.0.1, which is trusted by nobody. Times here are hang
//! guards, never speed assertions.

mod common;

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use common::serving::Serving;
use common::{Action, Server};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::{Request, Response};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use wasmtime_wasi_http::io::TokioIo;

/// The gate component of this checkout.
const GATE: &str = host_harness::runtime::GATE_COMPONENT_PATH;
/// A client behind the trusted proxy (the peer the gate sees).
const PROXY: &str = "127.0.0.2";
/// Red in the bundled recordings (malicious).
const RED: &str = "45.9.148.108";
/// Green in the bundled recordings (benign).
const GREEN: &str = "8.8.8.8";
/// The size of `/big`: 200 MiB.
const BIG: u64 = 200 << 20;
/// The size of an upload: 20 MiB.
const UPLOAD: usize = 20 << 20;
/// A bound on the gate's peak RSS across the big transfers (a memory bound,
/// not a timing threshold).
const MAX_HWM_KIB: u64 = 150 * 1024;
/// A key for the loopback API; must never appear in the gate's output.
const KEY: &str = "gate-test-key-0f9e8d";

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

// ---------------------------------------------------------------- origin

type OriginBody = UnsyncBoxBody<Bytes, Infallible>;

/// One period of the `/big` bytes: 64 KiB of a fixed pattern.
fn block() -> &'static Bytes {
    static BLOCK: OnceLock<Bytes> = OnceLock::new();
    BLOCK.get_or_init(|| {
        (0..1u32 << 16)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect::<Vec<u8>>()
            .into()
    })
}

/// `BIG` bytes of [`block`] repeated, made as they are sent.
struct BigBody {
    left: u64,
}

impl Body for BigBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(block().len() as u64);
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(block().slice(..n as usize)))))
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

/// One data frame, then a trailer `x-checksum: sum-42`.
struct TrailerBody {
    step: u8,
}

impl Body for TrailerBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.step += 1;
        Poll::Ready(match self.step {
            1 => Some(Ok(Frame::data(Bytes::from_static(
                b"body before the trailer",
            )))),
            2 => {
                let mut trailers = hyper::HeaderMap::new();
                trailers.insert(
                    "x-checksum",
                    hyper::header::HeaderValue::from_static("sum-42"),
                );
                Some(Ok(Frame::trailers(trailers)))
            }
            _ => None,
        })
    }
}

fn full(bytes: impl Into<Bytes>) -> OriginBody {
    Full::new(bytes.into()).boxed_unsync()
}

/// A loopback origin; `hits` counts the requests it got.
struct Origin {
    url: String,
    hits: &'static AtomicUsize,
}

async fn origin_answer(
    request: Request<Incoming>,
    hits: &'static AtomicUsize,
) -> Result<Response<OriginBody>, Infallible> {
    hits.fetch_add(1, Ordering::SeqCst);
    let (parts, mut body) = request.into_parts();
    let json_answer = |v: Value| {
        Response::builder()
            .header("content-type", "application/json")
            .header("x-origin", "yes")
            .body(full(v.to_string()))
            .unwrap()
    };
    match parts.uri.path() {
        "/big" => Ok(Response::builder()
            .header("content-length", BIG.to_string())
            .body(BigBody { left: BIG }.boxed_unsync())
            .unwrap()),
        "/upload" => {
            let mut hash = Sha256::new();
            let mut bytes = 0u64;
            while let Some(Ok(frame)) = body.frame().await {
                if let Some(data) = frame.data_ref() {
                    hash.update(data);
                    bytes += data.len() as u64;
                }
            }
            Ok(json_answer(
                json!({ "sha256": hex(&hash.finalize()), "bytes": bytes }),
            ))
        }
        "/trailers" => Ok(Response::builder()
            .header("trailer", "x-checksum")
            .body(TrailerBody { step: 0 }.boxed_unsync())
            .unwrap()),
        path if path.starts_with("/status/") => {
            let status: u16 = path["/status/".len()..].parse().unwrap_or(500);
            Ok(Response::builder()
                .status(status)
                .header("x-origin", "yes")
                .body(full(format!("status {status} from the origin")))
                .unwrap())
        }
        path => {
            if path == "/slow" {
                tokio::time::sleep(Duration::from_secs(10)).await;
            }
            let mut headers = serde_json::Map::new();
            for (name, value) in &parts.headers {
                let values = headers
                    .entry(name.as_str())
                    .or_insert_with(|| Value::Array(Vec::new()));
                if let Value::Array(values) = values {
                    values.push(String::from_utf8_lossy(value.as_bytes()).into());
                }
            }
            Ok(json_answer(json!({
                "method": parts.method.as_str(),
                "path": path,
                "query": parts.uri.query(),
                "headers": headers,
            })))
        }
    }
}

impl Origin {
    fn start() -> Origin {
        let hits: &'static AtomicUsize = Box::leak(Box::new(AtomicUsize::new(0)));
        let listener = rt()
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        rt().spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |r| origin_answer(r, hits));
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Origin { url, hits }
    }

    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// A URL where nothing listens: a port bound and then closed.
fn closed_port_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

// ---------------------------------------------------------------- client

/// A request to the gate from `from`, on a connection of its own.
async fn send_from<B>(gate: &str, from: &str, request: Request<B>) -> Response<Incoming>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    let from: IpAddr = from.parse().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    let stream = socket.connect(gate.parse().unwrap()).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender.send_request(request).await.unwrap()
}

/// A GET from `from` with `headers`; (status, headers, body as text).
fn get(
    gate: &Serving,
    from: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, hyper::HeaderMap, String) {
    rt().block_on(async {
        let mut request = Request::get(path).header("host", "gate.test");
        for (k, v) in headers {
            request = request.header(*k, *v);
        }
        let request = request.body(Empty::<Bytes>::new()).unwrap();
        let response = tokio::time::timeout(
            Duration::from_secs(60),
            send_from(&gate.addr, from, request),
        )
        .await
        .expect("the gate answered");
        let status = response.status().as_u16();
        let (parts, body) = response.into_parts();
        let body = body.collect().await.unwrap().to_bytes();
        (
            status,
            parts.headers,
            String::from_utf8_lossy(&body).into_owned(),
        )
    })
}

/// The origin's echo of a request forwarded by the gate.
fn echoed(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not the origin's echo ({e}): {body}"))
}

/// The values of `name` the origin saw.
fn seen(echo: &Value, name: &str) -> Vec<String> {
    echo["headers"][name]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

// ---------------------------------------------------------------- gates

/// The gate in front of `origin`, replaying the bundled recordings (no key).
fn start(origin: &str, args: &[&str]) -> Serving {
    gate_with(origin, args, &[])
}

fn gate_with(origin: &str, args: &[&str], env: &[(&str, &str)]) -> Serving {
    let mut all = vec!["--gate-component", GATE, "--origin", origin];
    all.extend_from_slice(args);
    Serving::start_gate(&all, env)
}

/// The gate asking a loopback `api` with [`KEY`], no retries.
fn gate_on_api(origin: &str, api: &Server, args: &[&str]) -> Serving {
    let url = api.url();
    let mut all = vec!["--base-url", url.as_str(), "--retries", "0"];
    all.extend_from_slice(args);
    gate_with(origin, &all, &[("TIP_API_KEY", KEY)])
}

/// Whether a forwarded request was marked `x-tip-gate: fail-open` (to the
/// origin, or on the answer).
fn failed_open(headers: &hyper::HeaderMap, body: &str) -> bool {
    headers.get("x-tip-gate").is_some_and(|v| v == "fail-open")
        || seen(&echoed(body), "x-tip-gate") == ["fail-open"]
}

/// Peak RSS of a process, in KiB (`VmHWM`).
fn peak_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmHWM in {status}"))
}

// ---------------------------------------------------------------- tests

#[test]
fn a_blocked_client_behind_a_trusted_proxy_gets_403_as_json_or_html() {
    let origin = Origin::start();
    let gate = start(&origin.url, &["--trusted-proxies", "127.0.0.2/32"]);

    for accept in ["application/json", "text/html"] {
        let (status, headers, body) = get(
            &gate,
            PROXY,
            "/page",
            &[("x-forwarded-for", RED), ("accept", accept)],
        );
        assert_eq!(status, 403, "{body}");
        let content_type = headers["content-type"].to_str().unwrap();
        assert!(content_type.starts_with(accept), "{accept}: {content_type}");
        if accept == "application/json" {
            let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
            assert!(v.is_object(), "{body}");
        }
        // Names the verdict and the zone.
        assert!(body.contains("malicious") && body.contains("red"), "{body}");
    }
    assert_eq!(
        origin.hits(),
        0,
        "a blocked request never reaches the origin"
    );
}

#[test]
fn an_allowed_client_is_forwarded_with_forwarding_headers_and_no_hop_by_hop_ones() {
    let origin = Origin::start();
    let gate = start(
        &origin.url,
        &["--trusted-proxies", "127.0.0.2/32", "--verdict-header"],
    );
    let (status, headers, body) = get(
        &gate,
        PROXY,
        "/a/b?x=1&y=two",
        &[
            ("x-forwarded-for", GREEN),
            ("connection", "keep-alive, x-hop"),
            ("keep-alive", "timeout=5"),
            ("x-hop", "1"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("x-kept", "yes"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-origin"], "yes", "the origin's headers come back");
    let echo = echoed(&body);
    assert_eq!(echo["method"], "GET");
    assert_eq!(echo["path"], "/a/b");
    assert_eq!(echo["query"], "x=1&y=two");
    let xff = seen(&echo, "x-forwarded-for").join(", ");
    // The client, then the trusted proxy the host appended; the client is
    // not appended a second time (regression, issue 12).
    assert_eq!(xff, format!("{GREEN}, {PROXY}"));
    assert_eq!(seen(&echo, "x-forwarded-proto"), ["http"]);
    assert_eq!(seen(&echo, "x-forwarded-host"), ["gate.test"]);
    let origin_authority = origin.url.trim_start_matches("http://");
    assert_eq!(seen(&echo, "host"), [origin_authority]);
    for hop in ["keep-alive", "x-hop", "proxy-authorization"] {
        assert!(seen(&echo, hop).is_empty(), "{hop} was forwarded: {echo}");
    }
    assert!(
        !seen(&echo, "connection")
            .iter()
            .any(|c| c.contains("x-hop")),
        "{echo}"
    );
    assert_eq!(seen(&echo, "x-kept"), ["yes"]);
    let verdict = seen(&echo, "x-tip-verdict");
    assert!(
        matches!(&verdict[..], [v] if v.starts_with("benign")),
        "{verdict:?}"
    );
}

#[test]
fn a_spoofed_client_address_from_an_untrusted_peer_is_ignored() {
    let origin = Origin::start();
    // No trusted proxies: the peer, 127.0.0.1, is the client whatever it says.
    let gate = start(&origin.url, &["--verdict-header"]);
    let (status, _, body) = get(
        &gate,
        "127.0.0.1",
        "/spoof",
        &[("x-forwarded-for", RED), ("accept", "application/json")],
    );
    assert_eq!(
        status, 200,
        "judged by the peer (reserved), not by {RED}: {body}"
    );
    let echo = echoed(&body);
    let xff = seen(&echo, "x-forwarded-for").join(", ");
    assert!(xff.ends_with("127.0.0.1"), "{xff}");
    assert!(!xff.contains(RED), "the client's copy was dropped: {xff}");

    // Likewise in a single-address header, and from 127.0.0.2 when only
    // another block is trusted.
    let gate = start(
        &origin.url,
        &[
            "--client-ip-header",
            "x-real-ip",
            "--trusted-proxies",
            "10.0.0.0/8",
        ],
    );
    let (status, _, body) = get(&gate, PROXY, "/spoof", &[("x-real-ip", RED)]);
    assert_eq!(status, 200, "{body}");
    let echo = echoed(&body);
    assert!(
        !echo.to_string().contains(RED),
        "the spoofed address reached the origin: {echo}"
    );
}

#[test]
fn an_api_failure_fails_open_or_closed() {
    let origin = Origin::start();
    let broken = Server::start(|_| Action::json(500, r#"{"error":"boom"}"#));
    let gate = gate_on_api(&origin.url, &broken, &[]);
    let (status, headers, body) = get(&gate, "127.0.0.1", "/", &[("x-forwarded-for", GREEN)]);
    // From 127.0.0.1 untrusted the address is reserved: no lookup at all.
    assert_eq!(status, 200, "{body}");
    assert!(
        broken.seen().is_empty(),
        "a reserved client is never looked up"
    );
    drop((headers, gate));

    let gate = gate_on_api(&origin.url, &broken, &["--trusted-proxies", "127.0.0.2/32"]);
    let (status, headers, body) = get(&gate, PROXY, "/open", &[("x-forwarded-for", GREEN)]);
    assert_eq!(status, 200, "{body}");
    assert!(failed_open(&headers, &body), "{headers:?} {body}");
    assert!(!broken.seen().is_empty());

    let gate = gate_on_api(
        &origin.url,
        &broken,
        &["--trusted-proxies", "127.0.0.2/32", "--fail", "closed"],
    );
    let before = origin.hits();
    let (status, _, body) = get(&gate, PROXY, "/closed", &[("x-forwarded-for", GREEN)]);
    assert_eq!(status, 503, "{body}");
    assert_eq!(origin.hits(), before, "a closed gate forwards nothing");
    assert!(!gate.stderr().contains(KEY), "{}", gate.stderr());
}

#[test]
fn an_api_slower_than_the_decision_timeout_fails_open() {
    let origin = Origin::start();
    let slow = Server::start(|_| Action::Stall(Duration::from_secs(30)));
    let gate = gate_on_api(
        &origin.url,
        &slow,
        &[
            "--trusted-proxies",
            "127.0.0.2/32",
            "--decision-timeout-ms",
            "500",
        ],
    );
    let (status, headers, body) = get(&gate, PROXY, "/late", &[("x-forwarded-for", GREEN)]);
    assert_eq!(status, 200, "{body}");
    assert!(failed_open(&headers, &body), "{headers:?} {body}");
    assert!(!gate.stderr().contains(KEY), "{}", gate.stderr());
}

#[test]
fn an_origin_that_is_down_is_502_and_a_slow_one_is_cut_at_its_timeout() {
    let down = closed_port_url();
    let gate = start(&down, &[]);
    let (status, _, body) = get(&gate, "127.0.0.1", "/", &[]);
    assert_eq!(status, 502, "{body}");

    let origin = Origin::start();
    let gate = start(&origin.url, &["--origin-timeout-ms", "500"]);
    let (status, _, body) = get(&gate, "127.0.0.1", "/slow", &[]);
    assert!(matches!(status, 502 | 504), "{status}: {body}");
}

#[test]
fn two_requests_from_a_blocked_client_cost_one_api_request() {
    let origin = Origin::start();
    let red = std::fs::read_to_string(
        std::path::Path::new(host_harness::BUNDLED_RECORDINGS)
            .join("bodies/tip-red-apt-45.9.148.108.json"),
    )
    .unwrap();
    let api = Server::start(move |_| Action::json(200, &red));
    let gate = gate_on_api(
        &origin.url,
        &api,
        &["--trusted-proxies", "127.0.0.2/32", "--cache", "memory"],
    );
    for _ in 0..2 {
        let (status, _, body) = get(&gate, PROXY, "/", &[("x-forwarded-for", RED)]);
        assert_eq!(status, 403, "{body}");
    }
    assert_eq!(api.seen().len(), 1, "{:?}", api.seen());
    assert_eq!(origin.hits(), 0);
}

#[test]
fn a_200_mib_download_and_a_20_mib_upload_cross_intact_in_flat_memory() {
    let origin = Origin::start();
    let gate = start(&origin.url, &[]);
    let baseline = peak_rss_kib(gate.pid());

    // Download: every byte compared with the pattern as it comes.
    let received = rt().block_on(async {
        let request = Request::get("/big")
            .header("host", "gate.test")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = send_from(&gate.addr, "127.0.0.1", request).await;
        assert_eq!(response.status(), 200);
        let mut body = response.into_body();
        let pattern = block();
        let mut at = 0usize;
        while let Some(frame) = tokio::time::timeout(Duration::from_secs(60), body.frame())
            .await
            .expect("the download stalled")
        {
            let frame = frame.unwrap();
            let Some(data) = frame.data_ref() else {
                continue;
            };
            let mut data = &data[..];
            while !data.is_empty() {
                let offset = at % pattern.len();
                let n = data.len().min(pattern.len() - offset);
                assert!(
                    data[..n] == pattern[offset..offset + n],
                    "byte {at} differs"
                );
                data = &data[n..];
                at += n;
            }
        }
        at as u64
    });
    assert_eq!(received, BIG);

    // Upload: the origin's SHA-256 of what it got against ours.
    let upload: Vec<u8> = (0..UPLOAD).map(|i| (i % 251) as u8).collect();
    let expected = hex(&Sha256::digest(&upload));
    let answer = rt().block_on(async {
        let request = Request::post("/upload")
            .header("host", "gate.test")
            .header("content-type", "application/octet-stream")
            .body(Full::new(Bytes::from(upload)))
            .unwrap();
        let response = tokio::time::timeout(
            Duration::from_secs(120),
            send_from(&gate.addr, "127.0.0.1", request),
        )
        .await
        .expect("the upload was answered");
        assert_eq!(response.status(), 200);
        response.into_body().collect().await.unwrap().to_bytes()
    });
    let v: Value = serde_json::from_slice(&answer).unwrap();
    assert_eq!(v["bytes"], UPLOAD as u64, "{v}");
    assert_eq!(v["sha256"], expected, "{v}");

    let peak = peak_rss_kib(gate.pid());
    eprintln!("gate peak RSS: {baseline} KiB before, {peak} KiB after 200 MiB down, 20 MiB up");
    assert!(
        peak < MAX_HWM_KIB,
        "the gate's peak RSS reached {peak} KiB (bound {MAX_HWM_KIB} KiB): bodies were buffered"
    );
}

#[test]
fn every_client_header_format_is_written_by_the_host() {
    let origin = Origin::start();
    // (header, what a trusted proxy sends for the red client, a spoof of it)
    let formats = [
        ("forwarded", format!("for={RED}"), format!("for={RED}")),
        (
            "spin-client-addr",
            format!("{RED}:4711"),
            format!("{RED}:4711"),
        ),
        ("true-client-ip", RED.to_owned(), RED.to_owned()),
    ];
    for (header, from_proxy, spoof) in &formats {
        let gate = start(
            &origin.url,
            &[
                "--client-ip-header",
                header,
                "--trusted-proxies",
                "127.0.0.2/32",
            ],
        );
        // Through the trusted proxy: its copy is what the gate judges.
        let (status, _, body) = get(&gate, PROXY, "/", &[(header, from_proxy)]);
        assert_eq!(status, 403, "{header} from the proxy: {body}");
        // From anyone else: the copy is replaced by the peer (reserved: passes).
        let (status, _, body) = get(&gate, "127.0.0.1", "/", &[(header, spoof)]);
        assert_eq!(status, 200, "{header} spoofed: {body}");
        assert!(
            !body.contains(RED),
            "{header}: the spoof reached the origin: {body}"
        );
    }
}

#[test]
fn a_request_body_that_stalls_is_ended_at_the_idle_gap() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let origin = Origin::start();
    let gate = start(&origin.url, &["--body-idle-timeout-secs", "1"]);
    let ended = rt().block_on(async {
        let mut conn = tokio::net::TcpStream::connect(&gate.addr).await.unwrap();
        conn.write_all(
            b"POST /upload HTTP/1.1\r\nhost: gate.test\r\ncontent-length: 1000\r\n\r\nonly a part",
        )
        .await
        .unwrap();
        // The gate ends the request (an answer, a close or a reset) well
        // before this guard; the body is never finished.
        let since = std::time::Instant::now();
        let mut answer = Vec::new();
        let ended = tokio::time::timeout(Duration::from_secs(20), conn.read_to_end(&mut answer))
            .await
            .is_ok();
        // For information, never asserted.
        eprintln!(
            "ended after {:?}: {:?}",
            since.elapsed(),
            String::from_utf8_lossy(&answer).lines().next()
        );
        ended
    });
    assert!(ended, "the stalled upload was still open after 20 s");
    // And the gate goes on.
    let (status, _, body) = get(&gate, "127.0.0.1", "/after", &[]);
    assert_eq!(status, 200, "{body}");
}

#[test]
fn only_the_origin_goes_live_and_the_api_follows_the_replay() {
    let origin = Origin::start();
    // Replaying, with the base URL at a live loopback server: the component's
    // lookup is not in the recordings, so it is denied (fail open), and the
    // server never sees a connection; the origin is reached.
    let api = Server::start(|_| Action::json(500, "{}"));
    let url = api.url();
    let gate = start(
        &origin.url,
        &[
            "--replay",
            host_harness::BUNDLED_RECORDINGS,
            "--base-url",
            &url,
            "--trusted-proxies",
            "127.0.0.2/32",
        ],
    );
    let (status, headers, body) = get(&gate, PROXY, "/", &[("x-forwarded-for", GREEN)]);
    assert_eq!(status, 200, "{body}");
    assert!(failed_open(&headers, &body), "{headers:?} {body}");
    assert_eq!(api.connections(), 0, "the API was reached despite --replay");
    assert_eq!(origin.hits(), 1);
}

#[test]
fn an_origin_on_the_apis_host_is_refused_at_the_start() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tip-enrich"))
        .env_remove("TIP_API_KEY")
        .env("TIP_ENRICH_CACHE", "off")
        .args([
            "gate",
            "--listen",
            "127.0.0.1:0",
            "--origin",
            "https://tip.kaspersky.com/",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("must not be the API's host"), "{stderr}");
}

#[test]
fn the_origins_status_and_headers_come_back_as_they_are() {
    let origin = Origin::start();
    let gate = start(&origin.url, &[]);
    for status in [201, 404, 418, 503] {
        let (got, headers, body) = get(&gate, "127.0.0.1", &format!("/status/{status}"), &[]);
        assert_eq!(got, status, "{body}");
        assert_eq!(headers["x-origin"], "yes");
        assert_eq!(body, format!("status {status} from the origin"));
    }
}

#[test]
fn the_origins_trailers_come_back_to_a_client_that_takes_them() {
    let origin = Origin::start();
    let gate = start(&origin.url, &[]);
    // The origin is told the client takes trailers.
    let (_, _, echo) = get(&gate, "127.0.0.1", "/echo", &[("te", "trailers")]);
    assert_eq!(seen(&echoed(&echo), "te"), ["trailers"]);
    rt().block_on(async {
        let request = Request::get("/trailers")
            .header("host", "gate.test")
            .header("te", "trailers")
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = tokio::time::timeout(
            Duration::from_secs(60),
            send_from(&gate.addr, "127.0.0.1", request),
        )
        .await
        .expect("the gate answered");
        assert_eq!(response.status(), 200);
        let collected = response.into_body().collect().await.unwrap();
        let trailers = collected.trailers().cloned().expect("trailers came back");
        assert_eq!(trailers["x-checksum"], "sum-42");
        assert_eq!(collected.to_bytes(), "body before the trailer");
    });
}
