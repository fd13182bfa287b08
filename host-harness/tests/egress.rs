//! Egress: in live and record modes only the base URL's authority is
//! reachable. A guest that asks for any other host (`tests/misbehaving-guest`
//! in `fetch:<url>` mode) is refused by the host before any connection, and
//! the real component does not follow a redirect (hostile.rs,
//! `redirect_to_another_host_is_not_followed`).

mod common;

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use common::{Action, Server};
use host_harness::egress::{Egress, RequestLog};
use host_harness::output::{error_kind, error_message};
use host_harness::runtime::{
    EnrichError, Instance, InstanceOptions, Runtime, Verdict, empty_settings,
};

const MISBEHAVING: &str = env!("TIP_ENRICH_MISBEHAVING_COMPONENT_PATH");
const BUDGET: Duration = Duration::from_secs(30);

fn misbehaving() -> Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            let wasm = std::fs::read(MISBEHAVING).expect("the misbehaving guest");
            Runtime::cached_at(Runtime::engine().unwrap(), &wasm, None).unwrap()
        })
        .clone()
}

fn instance(egress: Egress) -> (Instance, RequestLog) {
    let options = InstanceOptions::new(egress);
    let log = options.log.clone();
    (misbehaving().instantiate(&options).unwrap(), log)
}

fn fetch(instance: &mut Instance, url: &str) -> Result<Verdict, EnrichError> {
    instance
        .enrich(&format!("fetch:{url}"), &empty_settings(), BUDGET)
        .expect("no trap")
}

fn assert_denied(result: Result<Verdict, EnrichError>) {
    match result {
        Err(e) => {
            assert_eq!(error_kind(&e), "transport", "{}", error_message(&e));
            assert!(
                error_message(&e).contains("HttpRequestDenied"),
                "{}",
                error_message(&e)
            );
        }
        Ok(v) => panic!("reached: {v:?}"),
    }
}

fn assert_reached(result: Result<Verdict, EnrichError>) {
    match result {
        Err(EnrichError::Upstream(u)) => assert_eq!(u.status, 200, "{}", u.message),
        other => panic!("expected the allowed host's 200, got {other:?}"),
    }
}

/// Other hosts, from the allowed `127.0.0.1:PORT`'s point of view.
fn elsewhere(allowed: &Server, other: &Server) -> Vec<String> {
    let port = allowed.addr.rsplit_once(':').unwrap().1;
    vec![
        // another port on the same machine, with a live server on it
        format!("{}/api/ip/8.8.8.8", other.url()),
        // the same port under other names and addresses
        format!("http://localhost:{port}/"),
        format!("http://127.0.0.2:{port}/"),
        format!("http://[::1]:{port}/"),
        // the scheme's default port, and no port at all
        "http://127.0.0.1/".to_owned(),
        "http://127.0.0.1:80/".to_owned(),
    ]
}

#[test]
fn live_mode_reaches_the_allowed_host_and_nothing_else() {
    let allowed = Server::start(|_| Action::json(200, "{}"));
    let other = Server::start(|_| Action::json(200, "{}"));
    let (mut i, log) = instance(Egress::Live {
        allowed: allowed.addr.clone(),
    });
    assert_reached(fetch(&mut i, &format!("{}/api/ip/8.8.8.8", allowed.url())));
    for url in elsewhere(&allowed, &other) {
        assert_denied(fetch(&mut i, &url));
    }
    assert_eq!(other.connections(), 0, "another host was reached");
    assert_eq!(allowed.seen().len(), 1, "only the allowed request arrived");
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 1 + elsewhere(&allowed, &other).len());
    assert!(log[0].allowed);
    assert!(log[1..].iter().all(|s| !s.allowed), "{log:?}");
}

#[test]
fn record_mode_reaches_the_allowed_host_and_nothing_else() {
    let allowed = Server::start(|_| Action::json(200, "{}"));
    let other = Server::start(|_| Action::json(200, "{}"));
    let dir = tempfile::tempdir().unwrap();
    let (mut i, _) = instance(Egress::Record {
        allowed: allowed.addr.clone(),
        dir: dir.path().to_owned(),
        secrets: tip_enrich::Secrets::default(),
    });
    assert_reached(fetch(&mut i, &format!("{}/x", allowed.url())));
    for url in elsewhere(&allowed, &other) {
        assert_denied(fetch(&mut i, &url));
    }
    assert_eq!(other.connections(), 0, "another host was reached");
    // One recording (TOML + body) for the one allowed exchange.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 2);
}

#[test]
fn a_guest_following_a_redirect_by_hand_is_denied_the_other_host() {
    // The allowed host redirects; the guest asks for the Location itself.
    let other = Server::start(|_| Action::json(200, "{}"));
    let location = format!("{}/stolen", other.url());
    let allowed = {
        let location = location.clone();
        Server::start(move |_| Action::redirect(302, &location))
    };
    let (mut i, _) = instance(Egress::Live {
        allowed: allowed.addr.clone(),
    });
    match fetch(&mut i, &format!("{}/start", allowed.url())) {
        Err(EnrichError::Upstream(u)) => assert_eq!(u.status, 302),
        other => panic!("{other:?}"),
    }
    assert_denied(fetch(&mut i, &location));
    assert_eq!(other.connections(), 0);
}

#[test]
fn replay_mode_reaches_nothing() {
    let server = Server::start(|_| Action::json(200, "{}"));
    let set = host_harness::recordings::RecordingSet::load(std::path::Path::new(
        host_harness::BUNDLED_RECORDINGS,
    ))
    .unwrap();
    let (mut i, _) = instance(Egress::Replay(std::sync::Arc::new(set)));
    assert_denied(fetch(&mut i, &format!("{}/api/ip/8.8.8.8", server.url())));
    assert_eq!(server.connections(), 0);
}

#[test]
fn the_cli_in_live_mode_allows_only_the_base_url_host() {
    let allowed = Server::start(|_| Action::json(200, "{}"));
    let other = Server::start(|_| Action::json(200, "{}"));
    let out = Command::new(env!("CARGO_BIN_EXE_tip-enrich"))
        .env("TIP_ENRICH_CACHE", "off")
        .env("TIP_API_KEY", "egress-test-key-0123")
        .env("TIP_ENRICH_CACHE_DIR", "")
        .args(["--component", MISBEHAVING, "--quiet", "--base-url"])
        .arg(allowed.url())
        .arg(format!("fetch:{}/api/ip/8.8.8.8", other.url()))
        .arg(format!("fetch:{}/api/ip/8.8.8.8", allowed.url()))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert_eq!(lines[0]["error"]["kind"], "transport");
    assert!(
        lines[0]["error"]["message"]
            .as_str()
            .unwrap()
            .contains("HttpRequestDenied"),
        "{stdout}"
    );
    assert_eq!(lines[1]["error"]["kind"], "upstream", "{stdout}");
    assert_eq!(lines[1]["error"]["status"], 200);
    assert_eq!(other.connections(), 0, "the CLI reached another host");
    assert_eq!(allowed.seen().len(), 1);
}
