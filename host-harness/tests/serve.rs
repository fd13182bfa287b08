//! `tip-enrich serve`: the service world over HTTP under our own host, every
//! route, the status of each error kind, the same fields as a CLI line, and
//! no key in any answer or log.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::serving::Serving;
use common::{Action, Server};
use serde_json::{Value, json};

const KEY: &str = "serve-secret-key-0a1b2c3d4e5f";

/// The CLI's line for `ip` from the bundled recordings.
fn cli_line(ip: &str) -> Value {
    serde_json::from_str(&cli_raw(&[ip])).unwrap()
}

/// The CLI's raw line (its bytes) for `args`, from the bundled recordings.
fn cli_raw(args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_tip-enrich"))
        .env("TIP_ENRICH_CACHE", "off")
        .env_remove("TIP_API_KEY")
        .arg("--quiet")
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(text.lines().count(), 1, "{text}");
    text.trim_end().to_owned()
}

#[test]
fn serve_writes_the_clis_bytes_for_errors_and_ecs_too() {
    let serving = Serving::start(&["--replay", host_harness::BUNDLED_RECORDINGS], &[]);
    // Rate-limited (429), refused (400 from the API: 502 here), invalid input,
    // an upstream 500: each error body is the CLI's error line.
    for ip in ["9.9.9.9", "4.4.4.4", "not-an-ip", "11.11.11.11"] {
        let a = serving.request("GET", &format!("/v1/ip/{ip}"), "");
        assert_ne!(a.status, 200, "{ip}: {}", a.body);
        assert_eq!(a.body, cli_raw(&[ip]), "GET /v1/ip/{ip}");
    }
    // ECS, a verdict and an error.
    for ip in ["45.9.148.108", "10.0.0.1", "4.4.4.4", "9.9.9.9"] {
        let a = serving.request("GET", &format!("/v1/ip/{ip}?format=ecs"), "");
        assert_eq!(
            a.body,
            cli_raw(&["--format", "ecs", ip]),
            "GET /v1/ip/{ip}?format=ecs"
        );
    }
    // A batch holds the same bytes, element by element.
    let a = serving.request("POST", "/v1/ip", r#"["4.4.4.4","45.9.148.108"]"#);
    assert_eq!(
        a.body,
        format!("[{},{}]", cli_raw(&["4.4.4.4"]), cli_raw(&["45.9.148.108"]))
    );
}

#[test]
fn serve_answers_every_route_like_the_cli() {
    let serving = Serving::start(&["--replay", host_harness::BUNDLED_RECORDINGS], &[]);

    let (status, health) = serving.get_json("/healthz");
    assert_eq!(status, 200);
    assert_eq!(health["status"], "ok");
    assert_eq!(health["configured"], true);

    // The same fields, in the same order, as the CLI's line.
    for ip in ["45.9.148.108", "10.0.0.1", "2a0e:1c80:1::1"] {
        let a = serving.request("GET", &format!("/v1/ip/{ip}"), "");
        assert_eq!(a.status, 200, "{}", a.body);
        let expected = serde_json::to_string(&cli_line(ip)).unwrap();
        assert_eq!(a.body, expected, "GET /v1/ip/{ip}");
    }
    // Percent-encoded colons.
    let (status, v) = serving.get_json("/v1/ip/2a0e%3A1c80%3A1%3A%3A1");
    assert_eq!((status, &v["ip"]), (200, &json!("2a0e:1c80:1::1")));

    // A batch answers in input order, errors in place.
    let a = serving.request(
        "POST",
        "/v1/ip",
        r#"["10.0.0.1", "not-an-ip", "45.9.148.108", "10.0.0.1"]"#,
    );
    assert_eq!(a.status, 200, "{}", a.body);
    let items: Vec<Value> = serde_json::from_str(&a.body).unwrap();
    assert_eq!(items.len(), 4);
    assert_eq!(items[0], cli_line("10.0.0.1"));
    assert_eq!(items[1]["error"]["kind"], "invalid-ip");
    assert_eq!(items[1]["ip"], "not-an-ip");
    assert_eq!(items[2], cli_line("45.9.148.108"));
    assert_eq!(items[3], items[0]);

    // ECS.
    let (status, ecs) = serving.get_json("/v1/ip/45.9.148.108?format=ecs");
    assert_eq!(status, 200);
    let enrichment = &ecs["threat"]["enrichments"][0];
    assert_eq!(enrichment["indicator"]["ip"], "45.9.148.108");
    assert_eq!(enrichment["matched"]["atomic"], "45.9.148.108");
    assert_eq!(ecs["kaspersky"]["tip"]["zone"], "red");

    // Client errors.
    let (status, v) = serving.get_json("/v1/ip/not-an-ip");
    assert_eq!((status, &v["error"]["kind"]), (400, &json!("invalid-ip")));
    let a = serving.request("POST", "/v1/ip", r#"{"ips": []}"#);
    assert_eq!(a.status, 400, "{}", a.body);
    let a = serving.request("DELETE", "/v1/ip/1.2.3.4", "");
    assert_eq!(a.status, 405);
    assert_eq!(a.header("allow"), Some("GET"));
    assert_eq!(serving.get_json("/nope").0, 404);
    assert_eq!(serving.get_json("/v1/ip/1.2.3.4?format=xml").0, 400);

    // One log line per request.
    assert!(serving.stderr().contains("GET /v1/ip/45.9.148.108 -> 200"));
}

#[test]
fn serve_maps_api_failures_to_statuses_without_the_key() {
    let api = Server::start(|seen| {
        let ip = seen
            .target
            .split('/')
            .nth(3)
            .unwrap_or("")
            .split('?')
            .next()
            .unwrap_or("");
        match ip {
            // A server that echoes the key it was sent.
            "1.1.1.1" => Action::json(401, &format!(r#"{{"error":"bad key {KEY}"}}"#)),
            "2.2.2.2" => Action::Respond {
                status: 429,
                headers: vec![("retry-after".into(), "7".into())],
                body: b"slow down".to_vec(),
            },
            "3.3.3.3" => Action::Stall(Duration::from_secs(30)),
            "4.4.4.4" => Action::json(403, "quota"),
            _ => Action::json(500, "boom"),
        }
    });
    let serving = Serving::start(
        &[
            "--base-url",
            &api.url(),
            "--retries",
            "0",
            "--timeout-ms",
            "1500",
        ],
        &[("TIP_API_KEY", KEY)],
    );

    let cases = [
        ("1.1.1.1", 502, "unauthorized"),
        ("2.2.2.2", 429, "rate-limited"),
        ("3.3.3.3", 504, "timeout"),
        ("4.4.4.4", 502, "quota-exceeded"),
        ("5.5.5.5", 502, "upstream"),
    ];
    let mut everything = String::new();
    for (ip, status, kind) in cases {
        let started = Instant::now();
        let a = serving.request("GET", &format!("/v1/ip/{ip}"), "");
        let v: Value = serde_json::from_str(&a.body).unwrap();
        assert_eq!(
            (a.status, v["error"]["kind"].as_str()),
            (status, Some(kind)),
            "{ip}: {}",
            a.body
        );
        if ip == "2.2.2.2" {
            assert_eq!(a.header("retry-after"), Some("7"), "{:?}", a.headers);
            assert_eq!(v["error"]["retry_after_secs"], 7);
        }
        if ip == "3.3.3.3" {
            // A hang guard, not a speed assertion: the 1.5 s limit held.
            assert!(started.elapsed() < Duration::from_secs(25));
        }
        everything.push_str(&a.raw);
    }
    // The key went to the API, and nowhere else.
    let seen = api.seen();
    assert!(seen.iter().all(|s| s.header("x-api-key") == Some(KEY)));
    let (_, health) = serving.get_json("/healthz");
    everything.push_str(&health.to_string());
    everything.push_str(&serving.stderr());
    assert!(!everything.contains(KEY), "the key leaked: {everything}");
    assert!(!everything.contains(&KEY[..12]), "part of the key leaked");
}

#[test]
fn serve_misconfigured_says_so_on_healthz_and_answers_500() {
    let api = Server::start(|_| Action::json(200, "{}"));
    // Basic auth needs `user:password`: this key is not one.
    let serving = Serving::start(
        &["--base-url", &api.url(), "--auth", "basic"],
        &[("TIP_API_KEY", KEY)],
    );
    let (status, health) = serving.get_json("/healthz");
    assert_eq!(status, 200, "liveness holds while misconfigured");
    assert_eq!(health["configured"], false);
    assert_eq!(health["problem"]["kind"], "config");
    let (status, v) = serving.get_json("/v1/ip/1.2.3.4");
    assert_eq!((status, &v["error"]["kind"]), (500, &json!("config")));
    assert!(api.seen().is_empty(), "nothing was sent");
    let all = format!("{health}{v}{}", serving.stderr());
    assert!(!all.contains(KEY), "{all}");
}
