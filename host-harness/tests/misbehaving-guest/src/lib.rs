//! A component of the `enricher` world (`wit/enrich.wit`) that misbehaves on
//! purpose, so the host's limits and egress policy can be tested against a
//! guest that does what the real one never should. `enrich(ip)` acts on `ip`:
//!
//! - `spin`: loops forever (epoch deadline, fuel);
//! - `grow`: allocates and touches memory until allocation fails (memory cap);
//! - `trap`: panics (`panic = "abort"` in the component profile: a wasm trap);
//! - `fetch:<url>`: one outgoing wasi-http GET of `<url>` (egress policy); any
//!   response is `upstream` with its status, a failure is `transport` with
//!   the wasi-http error code;
//! - anything else: a valid verdict (grey, unknown, score 0) for that text.
//!
//! The crate is empty on other targets, so workspace builds stay native.

#![cfg(target_arch = "wasm32")]

mod bindings {
    wit_bindgen::generate!({
        world: "enricher",
        path: "../../../wit",
    });
}

use bindings::exports::tip::enrich::enrich_ip::{
    EnrichError, Guest, Report, Settings, SoarVerdict, UpstreamError, Verdict, VerdictSource, Zone,
};

struct Misbehaving;

fn valid(ip: &str) -> Verdict {
    Verdict {
        ip: ip.to_owned(),
        zone: Zone::Grey,
        threat_score: Some(0),
        has_apt: false,
        related_reports: Vec::new(),
        suspicious: false,
        verdict: SoarVerdict::Unknown,
        found: false,
        status: None,
        country_code: None,
        as_number: None,
        as_organization: None,
        network_name: None,
        categories: Vec::new(),
        hits_count: None,
        first_seen: None,
        quota: None,
        source: VerdictSource::Local,
        fetched_at: None,
        reserved_block: None,
    }
}

/// Allocates 1 MiB blocks, writing each page, and keeps them all.
fn grow() -> ! {
    let mut kept: Vec<Vec<u8>> = Vec::new();
    loop {
        let mut block = vec![0u8; 1 << 20];
        for i in (0..block.len()).step_by(4096) {
            block[i] = kept.len() as u8;
        }
        kept.push(std::hint::black_box(block));
    }
}

fn spin() -> ! {
    let mut n: u64 = 0;
    loop {
        n = std::hint::black_box(n.wrapping_add(1));
    }
}

fn fetch(url: &str) -> Result<Verdict, EnrichError> {
    use wasi::http::outgoing_handler;
    use wasi::http::types::{Fields, OutgoingRequest, Scheme};

    let (scheme, rest) = if let Some(rest) = url.strip_prefix("https://") {
        (Scheme::Https, rest)
    } else if let Some(rest) = url.strip_prefix("http://") {
        (Scheme::Http, rest)
    } else {
        return Err(EnrichError::Config(format!("not an http(s) URL: {url}")));
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_scheme(Some(&scheme));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(path));
    let future = outgoing_handler::handle(request, None)
        .map_err(|code| EnrichError::Transport(format!("handle: {code:?}")))?;
    future.subscribe().block();
    match future.get() {
        Some(Ok(Ok(response))) => Err(EnrichError::Upstream(UpstreamError {
            status: response.status(),
            message: format!("fetched {url}"),
        })),
        Some(Ok(Err(code))) => Err(EnrichError::Transport(format!("{code:?}"))),
        Some(Err(())) | None => Err(EnrichError::Transport("no response".to_owned())),
    }
}

/// What one input does.
fn misbehave(ip: String) -> Result<Verdict, EnrichError> {
    match ip.as_str() {
        "spin" => spin(),
        "grow" => grow(),
        "trap" => panic!("asked to trap"),
        _ => match ip.strip_prefix("fetch:") {
            Some(url) => fetch(url),
            None => Ok(valid(&ip)),
        },
    }
}

impl Guest for Misbehaving {
    fn enrich(ip: String, _settings: Settings) -> Result<Verdict, EnrichError> {
        misbehave(ip)
    }
    fn enrich_batch(ips: Vec<String>, _settings: Settings) -> Vec<Result<Verdict, EnrichError>> {
        ips.into_iter().map(misbehave).collect()
    }
    fn lookup(_ip: String, _settings: Settings) -> Result<Report, EnrichError> {
        Err(EnrichError::Config(
            "lookup is not implemented here".to_owned(),
        ))
    }
}

bindings::export!(Misbehaving with_types_in bindings);
