//! `tip-enrich serve` hardening (HARDENING.md, Egress and Secrets): the
//! service reaches only the base URL's host, does not follow a redirect to
//! another, and no answer or log line carries the key, even when the API
//! echoes it back (plain, in a header, as basic auth's base64).
//! Routes and statuses are serve.rs's.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::serving::{Serving, request};
use common::{Action, Seen, Server};
use host_harness::egress::Egress;
use host_harness::serve::{SERVICE_COMPONENT, ServeOptions, Service};

const KEY: &str = "serve-hardening-key-3e2d1c0b";
/// base64("alice:" + KEY), as basic auth sends it.
const BASIC_TOKEN: &str = "YWxpY2U6c2VydmUtaGFyZGVuaW5nLWtleS0zZTJkMWMwYg==";

/// One GET on its own connection: (status, whole response text).
fn get(addr: &str, path: &str) -> (u16, String) {
    let a = request(addr, "GET", path, "");
    (a.status, a.raw)
}

/// The service in this process, its egress allowed to `allowed` while its
/// configuration points the component at `base_url`.
fn in_process(allowed: &str, base_url: &str) -> (String, tokio::runtime::Runtime) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let options = ServeOptions {
        egress: Egress::Live {
            allowed: allowed.to_owned(),
        },
        also_live: None,
        config: vec![
            ("tip_api_key".into(), KEY.into()),
            ("tip_base_url".into(), base_url.into()),
            ("tip_retries".into(), "0".into()),
        ],
        max_memory_bytes: 64 * 1024 * 1024,
        request_budget: Duration::from_secs(60),
        header_timeout: Duration::from_secs(10),
        body_timeout: Duration::from_secs(30),
        max_in_flight: 4,
        log_requests: false,
        log: Default::default(),
        store: Default::default(),
    };
    let addr = runtime.block_on(async {
        let service = Arc::new(Service::new(SERVICE_COMPONENT, options).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(host_harness::serve::serve(
            listener,
            service,
            std::future::pending(),
        ));
        addr
    });
    (addr, runtime)
}

#[test]
fn serve_denies_a_host_other_than_the_allowed_one() {
    let allowed = Server::start(|_| Action::json(200, r#"{"Zone":"Green"}"#));
    let other = Server::start(|_| Action::json(200, r#"{"Zone":"Green"}"#));
    // The component is told to use another host than the one egress allows.
    let (addr, _runtime) = in_process(&allowed.addr, &other.url());
    let (status, text) = get(&addr, "/v1/ip/8.8.8.8");
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("\"transport\""), "{text}");
    assert!(text.contains("denied"), "{text}");
    assert_eq!(other.connections(), 0, "serve reached another host");
    assert!(!text.contains(KEY));

    // Pointed at the allowed host, the same service answers.
    let (addr, _runtime2) = in_process(&allowed.addr, &allowed.url());
    let (status, text) = get(&addr, "/v1/ip/8.8.8.8");
    assert_eq!(status, 200, "{text}");
    assert_eq!(allowed.seen().len(), 1);
}

/// `tip-enrich serve` with `key`, no retries, no compile cache, and
/// `RUST_BACKTRACE` set (so a backtrace would show if it reached a message).
fn serve_with(args: &[&str], key: &str) -> Serving {
    let mut all = vec!["--retries", "0"];
    all.extend_from_slice(args);
    Serving::start(
        &all,
        &[
            ("TIP_API_KEY", key),
            ("TIP_ENRICH_CACHE_DIR", ""),
            ("RUST_BACKTRACE", "1"),
        ],
    )
}

#[test]
fn serve_does_not_follow_a_redirect_to_another_host() {
    let other = Server::start(|_| Action::json(200, r#"{"Zone":"Green"}"#));
    let location = format!("{}/api/ip/8.8.8.8", other.url());
    let allowed = Server::start(move |_| Action::redirect(302, &location));
    let serving = serve_with(&["--base-url", &allowed.url()], KEY);
    let (status, text) = get(&serving.addr, "/v1/ip/8.8.8.8");
    assert_eq!(status, 502, "{text}");
    assert!(text.contains("\"upstream\""), "{text}");
    assert!(text.contains("302"), "{text}");
    assert_eq!(other.connections(), 0, "serve followed a redirect");
    assert_eq!(allowed.seen().len(), 1);
}

/// Echoes the credential it receives in a header, the body and an HTML title.
fn echoing(seen: &Seen) -> Action {
    let credential = seen
        .header("authorization")
        .or_else(|| seen.header("x-api-key"))
        .unwrap_or("none")
        .to_owned();
    let bare = credential.trim_start_matches("Basic ").to_owned();
    let escaped: String = bare
        .chars()
        .map(|c| format!("\\u{:04x}", c as u32))
        .collect();
    let t = seen.target.as_str();
    let (status, body) = if t.contains("1.1.1.1") {
        (
            401,
            format!("<html><title>denied {credential}</title></html>"),
        )
    } else if t.contains("3.3.3.3") {
        (503, format!("overloaded for {bare}"))
    } else {
        (
            200,
            format!(
                r#"{{"Zone":"Red","IpGeneralInfo":{{"Categories":["{bare}","{escaped}"],"CountryCode":"{bare}"}},"LicenseInfo":{{"AccessType":"{credential}"}}}}"#
            ),
        )
    };
    Action::Respond {
        status,
        headers: vec![("x-echo".into(), credential.clone())],
        body: body.into_bytes(),
    }
}

#[test]
fn serve_answers_and_logs_never_carry_the_key() {
    for (auth, key) in [
        ("x-api-key", KEY.to_owned()),
        ("basic", format!("alice:{KEY}")),
    ] {
        let api = Server::start(echoing);
        let serving = serve_with(&["--base-url", &api.url(), "--auth", auth], &key);
        let mut everything = String::new();
        for path in [
            "/healthz",
            "/v1/ip/1.1.1.1",
            "/v1/ip/3.3.3.3",
            "/v1/ip/45.9.148.108",
            "/v1/ip/45.9.148.108?format=ecs",
            "/v1/ip/not-an-ip",
            "/nowhere",
        ] {
            let (_, text) = get(&serving.addr, path);
            everything.push_str(&text);
        }
        assert!(
            everything.contains("[redacted]"),
            "{auth}: the echo was scrubbed, not lost: {everything}"
        );
        everything.push_str(&serving.stderr());
        for secret in [KEY, BASIC_TOKEN] {
            assert!(
                !everything.contains(secret),
                "{auth}: {secret} leaked:\n{everything}"
            );
        }
        assert!(api.seen().len() >= 3, "{auth}: the API was asked");
    }
}
