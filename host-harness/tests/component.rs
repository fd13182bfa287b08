//! The wasm component in wasmtime: every recording through replay, the egress
//! modes against a loopback server, limits, and trap recovery.

mod common;
#[path = "../../tests/support/expect.rs"]
mod expect;

use std::sync::Arc;
use std::time::Duration;

use common::{Action, Server, runtime};
use expect::{Failure, Observed};
use host_harness::BUNDLED_RECORDINGS;
use host_harness::egress::Egress;
use host_harness::output::{Shape, error_kind, error_message, report_line, verdict_line};
use host_harness::recordings::RecordingSet;
use host_harness::runtime::{
    ApiFlavour, AuthScheme, EnrichError, Instance, InstanceOptions, Runner, Settings,
    empty_settings,
};

const BUDGET: Duration = Duration::from_secs(30);
const KEY: &str = "harness-key-0123456789";

fn bundled() -> Arc<RecordingSet> {
    Arc::new(RecordingSet::load(std::path::Path::new(BUNDLED_RECORDINGS)).unwrap())
}

fn replay_instance() -> Instance {
    runtime()
        .instantiate(&InstanceOptions::new(Egress::Replay(bundled())).with_key(KEY))
        .unwrap()
}

/// Settings for a call; the key is in the instance's environment.
fn keyed() -> Settings {
    empty_settings()
}

fn live(server: &Server) -> (Instance, Settings) {
    let allowed = server.addr.clone();
    let instance = runtime()
        .instantiate(&InstanceOptions::new(Egress::Live { allowed }).with_key(KEY))
        .unwrap();
    let mut s = keyed();
    s.base_url = Some(server.url());
    (instance, s)
}

fn observe(v: &serde_json::Value) -> Observed {
    let s = |k: &str| v[k].as_str().map(str::to_owned);
    let strs = |k: &str| -> Vec<String> {
        v[k].as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    };
    let mut o = Observed {
        ip: s("ip").unwrap(),
        zone: s("zone").unwrap(),
        threat_score: v["threat_score"].as_u64().map(|n| n as u8),
        verdict: s("verdict").unwrap(),
        has_apt: v["has_apt"].as_bool().unwrap(),
        report_ids: strs("related_report_ids"),
        suspicious: v["suspicious"].as_bool().unwrap(),
        found: v["found"].as_bool().unwrap(),
        status: s("status"),
        country_code: s("country_code"),
        as_number: v["as_number"].as_u64().map(|n| u32::try_from(n).unwrap()),
        as_organization: s("as_organization"),
        network_name: s("network_name"),
        categories: strs("categories"),
        first_seen: s("first_seen"),
        day_requests: v["day_requests"].as_u64(),
        day_quota: v["day_quota"].as_u64(),
        has_quota: !v["day_requests"].is_null() || !v["day_quota"].is_null(),
        source: s("source").unwrap(),
        ..Observed::default()
    };
    if v.get("sections").is_some() {
        expect::observe_sections(&mut o, &v["sections"]);
    }
    o
}

fn failure(e: &EnrichError) -> Failure {
    Failure {
        kind: error_kind(e).to_owned(),
        message: error_message(e).to_owned(),
        retry_after_secs: match e {
            EnrichError::RateLimited(r) => r.retry_after_secs,
            _ => None,
        },
        status: match e {
            EnrichError::Upstream(u) => Some(u.status),
            _ => None,
        },
    }
}

#[test]
fn every_recording_meets_its_expectation_through_the_component() {
    for e in expect::load() {
        // A fresh instance each: the recordings are separate worlds (one
        // answers 403, and an instance keeps the quota cool-down).
        let mut instance = replay_instance();
        let mut s = keyed();
        if e.api() == "opentip" {
            s.api = Some(ApiFlavour::Opentip);
        }
        s.query_reserved = Some(e.query_reserved());
        s.sections = e.sections();
        let outcome = match e.call() {
            "lookup" => instance
                .lookup(e.ip(), &s, BUDGET)
                .unwrap()
                .map(|r| observe(&serde_json::from_str(&report_line(&r)).unwrap())),
            _ => instance
                .enrich(e.ip(), &s, BUDGET)
                .unwrap()
                .map(|v| observe(&serde_json::from_str(&verdict_line(&v, Shape::Native)).unwrap())),
        };
        expect::check(&e, outcome.map_err(|err| failure(&err)));
    }
}

#[test]
fn batch_through_the_component_keeps_order() {
    let mut instance = replay_instance();
    let ips: Vec<String> = [
        "8.8.8.8",
        "bogus",
        "192.168.7.7",
        "6.6.6.6",
        "2a0e:1c80:1::1",
    ]
    .map(String::from)
    .to_vec();
    let results = instance.enrich_batch(&ips, &keyed(), BUDGET).unwrap();
    let kinds: Vec<String> = results
        .iter()
        .map(|r| match r {
            Ok(v) => serde_json::from_str::<serde_json::Value>(&verdict_line(v, Shape::Native))
                .unwrap()["source"]
                .as_str()
                .unwrap()
                .to_owned(),
            Err(e) => error_kind(e).to_owned(),
        })
        .collect();
    assert_eq!(
        kinds,
        ["api", "invalid-ip", "local", "quota-exceeded", "api"]
    );
}

#[test]
fn unrecorded_request_is_denied_and_never_reaches_the_network() {
    let server = Server::start(|_| Action::json(200, r#"{"Zone":"Red"}"#));
    let options = InstanceOptions::new(Egress::Replay(bundled())).with_key(KEY);
    let log = options.log.clone();
    let mut instance = runtime().instantiate(&options).unwrap();
    let mut s = keyed();
    s.base_url = Some(server.url());
    let err = instance.enrich("8.8.8.8", &s, BUDGET).unwrap().unwrap_err();
    assert_eq!(error_kind(&err), "transport");
    assert!(
        error_message(&err).contains("denied"),
        "{}",
        error_message(&err)
    );
    assert!(server.seen().is_empty(), "a replay reached the network");
    let log = log.lock().unwrap();
    assert_eq!(log.len(), 1);
    assert!(!log[0].allowed);
    assert!(log[0].url.starts_with(&server.url()));
}

#[test]
fn live_mode_sends_the_request_and_reaches_only_the_base_url_host() {
    let server = Server::start(|_| {
        Action::json(
            200,
            r#"{"Zone":"Orange","IpGeneralInfo":{"ThreatScore":66,"Status":"Known","CountryCode":"SE"}}"#,
        )
    });
    let other = Server::start(|_| Action::json(200, "{}"));
    let (mut instance, s) = live(&server);
    let v = instance
        .enrich("  185.220.101.2 ", &s, BUDGET)
        .unwrap()
        .unwrap();
    assert_eq!(
        (v.threat_score, v.suspicious, v.country_code.as_deref()),
        (Some(66), true, Some("SE"))
    );
    let seen = server.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].method, "GET");
    assert_eq!(
        seen[0].target,
        "/api/ip/185.220.101.2?sections=LicenseInfo,Zone,IpGeneralInfo"
    );
    assert_eq!(seen[0].header("x-api-key"), Some(KEY));
    assert_eq!(seen[0].header("accept"), Some("application/json"));

    let mut elsewhere = s.clone();
    elsewhere.base_url = Some(other.url());
    let err = instance
        .enrich("185.220.101.2", &elsewhere, BUDGET)
        .unwrap()
        .unwrap_err();
    assert!(error_message(&err).contains("denied"));
    assert!(
        other.seen().is_empty(),
        "live mode reached a host other than the base URL's"
    );
}

#[test]
fn auth_schemes_and_opentip_on_the_wire() {
    let server = Server::start(|_| Action::json(200, r#"{"Zone":"Green"}"#));
    let (mut instance, mut s) = live(&server);
    s.cache_ttl_secs = Some(0);
    s.auth = Some(AuthScheme::Bearer);
    instance.enrich("8.8.8.8", &s, BUDGET).unwrap().unwrap();
    s.auth = Some(AuthScheme::Basic);
    let allowed = server.addr.clone();
    runtime()
        .instantiate(&InstanceOptions::new(Egress::Live { allowed }).with_key("alice:pw-0123"))
        .unwrap()
        .enrich("8.8.8.8", &s, BUDGET)
        .unwrap()
        .unwrap();
    s.auth = None;
    s.api = Some(ApiFlavour::Opentip);
    instance.enrich("8.8.8.8", &s, BUDGET).unwrap().unwrap();
    let seen = server.seen();
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
    assert_eq!(seen[0].header("x-api-key"), None);
    assert_eq!(
        seen[1].header("authorization"),
        Some("Basic YWxpY2U6cHctMDEyMw==")
    );
    assert_eq!(seen[2].target, "/api/v1/search/ip?request=8.8.8.8");
    assert_eq!(seen[2].header("x-api-key"), Some(KEY));
}

#[test]
fn environment_configures_the_component() {
    let server = Server::start(|_| {
        Action::json(200, r#"{"Zone":"Red","IpGeneralInfo":{"ThreatScore":80}}"#)
    });
    let mut options = InstanceOptions::new(Egress::Live {
        allowed: server.addr.clone(),
    });
    options.env = vec![
        ("TIP_API_KEY".into(), KEY.into()),
        ("TIP_BASE_URL".into(), server.url()),
        ("TIP_AUTH".into(), "bearer".into()),
        ("TIP_SECTIONS".into(), "Zone,IpGeneralInfo".into()),
    ];
    let mut instance = runtime().instantiate(&options).unwrap();
    let v = instance
        .enrich_env("45.9.148.108", BUDGET)
        .unwrap()
        .unwrap();
    assert_eq!(v.threat_score, Some(80));
    let seen = server.seen();
    assert_eq!(
        seen[0].target,
        "/api/ip/45.9.148.108?sections=Zone,IpGeneralInfo"
    );
    assert_eq!(
        seen[0].header("authorization"),
        Some(format!("Bearer {KEY}").as_str())
    );
}

#[test]
fn record_mode_writes_redacted_recordings_that_replay() {
    let body =
        format!(r#"{{"Zone":"Red","IpGeneralInfo":{{"ThreatScore":90,"Note":"echo {KEY}"}}}}"#);
    let server = Server::start(move |_| Action::Respond {
        status: 200,
        headers: vec![
            ("content-type".into(), "application/json".into()),
            ("x-echo".into(), KEY.into()),
        ],
        body: body.clone().into_bytes(),
    });
    let dir = tempfile::tempdir().unwrap();
    let egress = Egress::Record {
        allowed: server.addr.clone(),
        dir: dir.path().to_owned(),
        secrets: tip_enrich::Secrets::of_key(Some(KEY)),
    };
    let mut instance = runtime()
        .instantiate(&InstanceOptions::new(egress).with_key(KEY))
        .unwrap();
    let mut s = keyed();
    s.base_url = Some(server.url());
    let live = instance
        .enrich("45.9.148.108", &s, BUDGET)
        .unwrap()
        .unwrap();
    assert_eq!(live.threat_score, Some(90));

    let mut files = 0;
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        assert!(!text.contains(KEY), "a recording contains the key:\n{text}");
        files += 1;
    }
    assert_eq!(files, 2, "one TOML and one body");

    let set = Arc::new(RecordingSet::load(dir.path()).unwrap());
    assert_eq!(set.len(), 1);
    let toml_text = std::fs::read_to_string(&set.iter().next().unwrap().path).unwrap();
    assert!(
        toml_text.contains("x-api-key = \"[redacted]\""),
        "{toml_text}"
    );
    let mut replay = runtime()
        .instantiate(&InstanceOptions::new(Egress::Replay(set)).with_key(KEY))
        .unwrap();
    let replayed = replay.enrich("45.9.148.108", &s, BUDGET).unwrap().unwrap();
    assert_eq!(
        verdict_line(&replayed, Shape::Native),
        verdict_line(&live, Shape::Native)
    );
}

#[test]
fn a_server_that_never_answers_times_out() {
    let server = Server::start(|_| Action::Stall(Duration::from_secs(5)));
    let (mut instance, mut s) = live(&server);
    s.timeout_ms = Some(300);
    let err = instance.enrich("8.8.8.8", &s, BUDGET).unwrap().unwrap_err();
    assert_eq!(error_kind(&err), "timeout", "{}", error_message(&err));
}

#[test]
fn a_dripping_body_hits_the_end_to_end_limit() {
    let server = Server::start(|_| Action::Drip {
        body: br#"{"Zone":"Red","IpGeneralInfo":{"ThreatScore":90}}"#.to_vec(),
        interval: Duration::from_millis(100),
    });
    let (mut instance, mut s) = live(&server);
    // Each byte arrives well within the between-bytes timeout; only the total limit can fire.
    s.between_bytes_timeout_ms = Some(2_000);
    s.timeout_ms = Some(600);
    let err = instance.enrich("8.8.8.8", &s, BUDGET).unwrap().unwrap_err();
    assert_eq!(error_kind(&err), "timeout", "{}", error_message(&err));
}

#[test]
fn body_over_the_cap_is_a_typed_error() {
    let mut instance = replay_instance();
    let mut s = keyed();
    s.max_body_bytes = Some(10_000);
    let err = instance
        .lookup("45.9.148.108", &s, BUDGET)
        .unwrap()
        .unwrap_err();
    assert_eq!(error_kind(&err), "malformed-response");
    assert!(error_message(&err).contains("10000"));
}

#[test]
fn a_trap_is_reported_and_the_next_call_works() {
    // The 1000-record report cannot fit in 2 MiB of linear memory: the guest's
    // allocation fails and it traps. The runner drops that instance.
    let mut options = InstanceOptions::new(Egress::Replay(bundled())).with_key(KEY);
    options.max_memory_bytes = 2 * 1024 * 1024;
    let mut runner = Runner::new(runtime(), options);
    let trapped = runner.call(|i| i.lookup("45.9.148.108", &keyed(), BUDGET));
    assert!(
        trapped.is_err(),
        "expected a trap, got {:?}",
        trapped.map(|r| r.is_ok())
    );
    assert_eq!(runner.traps(), 1);
    let v = runner
        .call(|i| i.enrich("45.9.148.108", &keyed(), BUDGET))
        .unwrap()
        .unwrap();
    assert_eq!(v.threat_score, Some(92));
    assert_eq!(runner.traps(), 1);
}

#[test]
fn the_epoch_deadline_interrupts_a_call_that_runs_too_long() {
    // The guest waits on a stalled server; when control returns to wasm after
    // the call's budget has passed, the epoch deadline traps it.
    let server = Server::start(|_| Action::Stall(Duration::from_secs(5)));
    let mut runner = Runner::new(
        runtime(),
        InstanceOptions::new(Egress::Live {
            allowed: server.addr.clone(),
        })
        .with_key(KEY),
    );
    let mut s = keyed();
    s.base_url = Some(server.url());
    s.timeout_ms = Some(500);
    let trapped = runner.call(|i| i.enrich("8.8.8.8", &s, Duration::ZERO));
    let Err(trap) = trapped else {
        panic!("the call should be interrupted");
    };
    assert_eq!(
        trap.downcast_ref::<wasmtime::Trap>(),
        Some(&wasmtime::Trap::Interrupt),
        "{trap:?}"
    );
    // The next call runs on a fresh instance with a sane budget.
    let v = runner
        .call(|i| i.enrich("10.0.0.1", &s, BUDGET))
        .unwrap()
        .unwrap();
    assert_eq!(
        v.reserved_block.as_deref(),
        Some("10.0.0.0/8 (private use, RFC 1918)")
    );
}

#[test]
fn the_precompiled_cache_is_written_reused_and_survives_corruption() {
    use host_harness::runtime::{COMPONENT, Runtime};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("component.cwasm");
    let check = |runtime: Runtime| {
        let mut i = runtime
            .instantiate(&InstanceOptions::new(Egress::Replay(bundled())).with_key(KEY))
            .unwrap();
        assert_eq!(
            i.enrich("45.9.148.108", &keyed(), BUDGET)
                .unwrap()
                .unwrap()
                .threat_score,
            Some(92)
        );
    };
    check(Runtime::cached_at(Runtime::engine().unwrap(), COMPONENT, Some(&path)).unwrap());
    let written = std::fs::read(&path).unwrap();
    assert!(
        written.len() > COMPONENT.len() / 2,
        "a precompiled artefact was stored"
    );
    check(Runtime::cached_at(Runtime::engine().unwrap(), COMPONENT, Some(&path)).unwrap());
    // A damaged file is not trusted: the component is compiled again and the file replaced.
    std::fs::write(&path, b"not a precompiled component").unwrap();
    check(Runtime::cached_at(Runtime::engine().unwrap(), COMPONENT, Some(&path)).unwrap());
    assert_eq!(std::fs::read(&path).unwrap(), written);
}
