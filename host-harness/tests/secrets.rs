//! No key in any output: `Debug` of the core's resolved config, requests and
//! errors and of the host's options; every stream of the CLI in replay, live
//! and record modes (stdout, stderr, files written) against a server that
//! echoes the key back in every way it can. Complements cli.rs
//! (`the_key_never_appears_in_output_or_recordings`) and component.rs
//! (`record_mode_writes_redacted_recordings_that_replay`).

mod common;

use std::net::IpAddr;
use std::process::{Command, Output};

use common::{Action, Seen, Server};
use host_harness::egress::Egress;
use host_harness::runtime::InstanceOptions;
use tip_enrich::bindings::{ApiFlavour, AuthScheme};
use tip_enrich::build_request;
use tip_enrich::parse_ip;
use tip_enrich::settings::empty as empty_settings;
use tip_enrich::{Config, Purpose};
use tip_enrich::{Error, error_kind as kind, status_error};

const KEY: &str = "secret-key-7c1e55aa90";
const USER: &str = "alice";

/// The key and the forms it travels in: plain, and base64 of `user:key`
/// (basic auth) and of the key alone.
fn forms() -> Vec<String> {
    vec![
        KEY.to_owned(),
        "YWxpY2U6c2VjcmV0LWtleS03YzFlNTVhYTkw".to_owned(),
        "c2VjcmV0LWtleS03YzFlNTVhYTkw".to_owned(),
    ]
}

fn assert_clean(what: &str, text: &str) {
    for form in forms() {
        assert!(
            !text.contains(&form),
            "{what} shows the key ({form}):\n{text}"
        );
    }
}

// ---- Debug in the core and the host ----

#[test]
fn debug_of_resolved_config_and_requests_hides_the_key() {
    for auth in [AuthScheme::XApiKey, AuthScheme::Bearer, AuthScheme::Basic] {
        for api in [ApiFlavour::Tip, ApiFlavour::Opentip] {
            for from_env in [false, true] {
                let mut s = empty_settings();
                s.api = Some(api);
                s.auth = Some(auth);
                let key = match auth {
                    AuthScheme::Basic => format!("{USER}:{KEY}"),
                    _ => KEY.to_owned(),
                };
                let env = |name: &str| {
                    if from_env {
                        (name == "TIP_API_KEY").then(|| key.clone())
                    } else {
                        None
                    }
                };
                if !from_env {
                    // The key is never a call setting: only the environment.
                    continue;
                }
                let config = Config::resolve(&s, &env, Purpose::Verdict).unwrap();
                assert_eq!(config.api_key.as_deref(), Some(key.as_str()));
                assert_clean("Config's Debug", &format!("{config:?} {config:#?}"));
                let ip: IpAddr = "45.9.148.108".parse().unwrap();
                let request = build_request(&config, ip).unwrap();
                assert_clean("HttpRequest's Debug", &format!("{request:?} {request:#?}"));
                assert_clean("a request URL", &request.url());
            }
        }
    }
}

#[test]
fn every_error_crossing_the_boundary_hides_the_key() {
    let mut s = empty_settings();
    s.auth = Some(AuthScheme::Basic);
    let basic = format!("{USER}:{KEY}");
    let env = |name: &str| (name == "TIP_API_KEY").then(|| basic.clone());
    let config = Config::resolve(&s, &env, Purpose::Verdict).unwrap();
    let secrets = config.secrets();
    let echo = format!("echo {KEY} and {USER}:{KEY}");
    let mut errors = vec![
        Error::InvalidIp(parse_ip(KEY).unwrap_err()),
        Error::BadRequest {
            status: 400,
            excerpt: echo.clone(),
        },
        Error::Unauthorized {
            excerpt: echo.clone(),
        },
        Error::QuotaExceeded {
            excerpt: echo.clone(),
        },
        Error::RateLimited {
            retry_after_secs: Some(1),
            excerpt: echo.clone(),
        },
        Error::Upstream {
            status: 500,
            excerpt: echo.clone(),
        },
        Error::Timeout(echo.clone()),
        Error::Transport(echo.clone()),
        Error::BodyTooLarge { limit: 1 },
        Error::Malformed(echo.clone()),
        Error::Config(echo.clone()),
    ];
    for status in [302, 400, 401, 403, 404, 414, 429, 500, 503] {
        let body = format!("<html><title>{echo}</title><body>{KEY}</body></html>");
        errors.push(status_error(status, body.as_bytes(), None));
        errors.push(status_error(status, echo.as_bytes(), None));
    }
    for e in errors {
        let wit = e.clone().into_wit(secrets);
        let shown = format!("{wit:?} {wit:#?} {}", kind(&wit));
        assert_clean("an enrich-error", &shown);
    }
}

#[test]
fn debug_of_host_options_hides_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let mut options = InstanceOptions::new(Egress::Record {
        allowed: "127.0.0.1:1".into(),
        dir: dir.path().to_owned(),
        secrets: tip_enrich::Secrets::of_key(Some(&format!("{USER}:{KEY}"))),
    });
    options.env = vec![("TIP_API_KEY".into(), KEY.into())];
    let shown = format!("{options:?} {options:#?} {:?}", options.egress);
    assert_clean("InstanceOptions' Debug", &shown);
    assert!(shown.contains("TIP_API_KEY"), "the names stay: {shown}");
}

// ---- every output stream of a CLI run ----

/// A server that echoes the key it receives in a header, in a 200 body (raw,
/// JSON-escaped and in unknown fields), in error bodies and in an HTML title.
fn echoing_server() -> Server {
    Server::start(|seen: &Seen| {
        let key = seen
            .header("x-api-key")
            .or_else(|| seen.header("authorization"))
            .unwrap_or("none")
            .to_owned();
        let escaped: String = key
            .chars()
            .map(|c| format!("\\u{:04x}", c as u32))
            .collect();
        let t = seen.target.as_str();
        let status = if t.contains("1.1.1.1") {
            401
        } else if t.contains("2.2.2.2") {
            429
        } else if t.contains("3.3.3.3") {
            503
        } else {
            200
        };
        let body = if status == 200 {
            format!(
                r#"{{"Zone":"Red","Echo":"{key}","IpGeneralInfo":{{"ThreatScore":90,"Categories":["{key}","{escaped}"],"CountryCode":"{escaped}","Ip":"{key}"}},"LicenseInfo":{{"AccessType":"{key}"}}}}"#
            )
        } else {
            format!(
                "<html><head><title>denied for {key}</title></head><body>{escaped}</body></html>"
            )
        };
        Action::Respond {
            status,
            headers: vec![
                ("x-echo".into(), key.clone()),
                ("www-authenticate".into(), format!("Basic realm=\"{key}\"")),
                ("retry-after".into(), "0".into()),
            ],
            body: body.into_bytes(),
        }
    })
}

fn cli() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tip-enrich"));
    cmd.env_remove("TIP_API_KEY")
        .env("TIP_ENRICH_CACHE", "off")
        .env("TIP_ENRICH_CACHE_DIR", "")
        .env("RUST_BACKTRACE", "1");
    cmd
}

const IPS: [&str; 4] = ["1.1.1.1", "2.2.2.2", "3.3.3.3", "45.9.148.108"];

fn check_streams(what: &str, out: &Output) {
    assert_clean(
        &format!("{what}: stdout"),
        &String::from_utf8_lossy(&out.stdout),
    );
    assert_clean(
        &format!("{what}: stderr"),
        &String::from_utf8_lossy(&out.stderr),
    );
}

fn check_dir(what: &str, dir: &std::path::Path) -> usize {
    let mut files = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        assert_clean(what, &String::from_utf8_lossy(&bytes));
        files += 1;
    }
    files
}

#[test]
fn live_mode_streams_hide_the_key_for_every_auth_scheme() {
    for (auth, key) in [
        ("x-api-key", KEY.to_owned()),
        ("bearer", KEY.to_owned()),
        ("basic", format!("{USER}:{KEY}")),
    ] {
        let server = echoing_server();
        for full in [false, true] {
            let mut cmd = cli();
            cmd.env("TIP_API_KEY", &key)
                .args(["--retries", "0", "--auth", auth, "--base-url"])
                .arg(server.url())
                .args(IPS);
            if full {
                cmd.arg("--full");
            }
            let out = cmd.output().unwrap();
            assert_eq!(out.status.code(), Some(1), "error lines expected");
            check_streams(&format!("live, {auth}, full {full}"), &out);
            assert_eq!(String::from_utf8_lossy(&out.stdout).lines().count(), 4);
        }
        assert_eq!(
            server.seen().len(),
            8,
            "{auth}: every lookup reached the server"
        );
    }
}

#[test]
fn record_then_replay_streams_and_files_hide_the_key() {
    let server = echoing_server();
    let dir = tempfile::tempdir().unwrap();
    let key = format!("{USER}:{KEY}");
    let out = cli()
        .env("TIP_API_KEY", &key)
        .args(["--retries", "0", "--auth", "basic", "--full", "--base-url"])
        .arg(server.url())
        .arg("--record")
        .arg(dir.path())
        .args(IPS)
        .output()
        .unwrap();
    check_streams("record", &out);
    assert_eq!(check_dir("a recording", dir.path()), 2 * IPS.len());

    // Replay what was recorded, with the key set (as a user would).
    let out = cli()
        .env("TIP_API_KEY", &key)
        .args(["--auth", "basic", "--full", "--base-url"])
        .arg(server.url())
        .arg("--replay")
        .arg(dir.path())
        .args(IPS)
        .output()
        .unwrap();
    check_streams("replay", &out);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.lines().count(), IPS.len(), "{stdout}");
    assert!(stdout.contains("[redacted]"), "{stdout}");
    assert_eq!(server.seen().len(), IPS.len(), "the replay stayed offline");
}

#[test]
fn usage_and_config_errors_hide_the_key() {
    // A key in the base URL's userinfo or path, or a key file that cannot be
    // used: the messages say what is wrong without echoing it.
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let runs: Vec<Vec<String>> = vec![
        vec![
            "--base-url".into(),
            format!("http://{USER}:{KEY}@127.0.0.1:9/"),
            "8.8.8.8".into(),
        ],
        vec![
            "--base-url".into(),
            format!("ftp://127.0.0.1:9/{KEY}"),
            "8.8.8.8".into(),
        ],
        vec![
            "--api-key-file".into(),
            key_file.display().to_string(),
            "--base-url".into(),
            format!("http://127.0.0.1:9/{KEY}?q"),
            "8.8.8.8".into(),
        ],
        vec![
            "--api-key-file".into(),
            key_file.display().to_string(),
            "--record".into(),
            "/nonexistent/dir/for/recordings".into(),
            "--base-url".into(),
            "http://127.0.0.1:9".into(),
            "8.8.8.8".into(),
        ],
    ];
    for args in runs {
        let out = cli().env("TIP_API_KEY", KEY).args(&args).output().unwrap();
        assert_ne!(out.status.code(), Some(0), "{args:?}");
        check_streams(&format!("{args:?}"), &out);
    }
}
