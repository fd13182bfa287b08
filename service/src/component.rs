//! The incoming side over WASI: read the request, answer with [`crate::http`].
//!
//! Nothing here unwraps: a client that goes away mid-answer only ends the
//! write early.

use ::wasi::clocks::monotonic_clock;
use ::wasi::http::types::{IncomingRequest, Method, ResponseOutparam};
use ::wasi::io::poll::poll;
use ::wasi::io::streams::StreamError;
use tip_enrich::events::LookupError;
use tip_enrich::settings::{self, empty as empty_settings};
use tip_enrich::{Config, Purpose, Secrets, environment, lookup_in, respond, with_client};
use tip_enrich_keyvalue::with_bucket;

use crate::http::{
    Answer, BODY_DEADLINE, MAX_BODY_BYTES, Route, StixAt, batch_answer, body_timed_out,
    body_too_large, events_answer, health_answer, merge_settings, parse_batch, route,
    verdict_answer,
};

#[cfg(all(feature = "spin", feature = "wasmcloud"))]
compile_error!("features `spin` and `wasmcloud` pick different wasi:config versions: choose one");

/// The bindings of one `enrich-service` world; the three differ only in the
/// versions of `wasi:config/store` and `wasi:keyvalue` they import. The
/// keyvalue bindings are `tip-enrich-keyvalue`'s own.
macro_rules! service_bindings {
    ($world:literal, $config:literal, $module:ident, $kv_store:literal, $kv_atomics:literal) => {
        wit_bindgen::generate!({
            world: $world,
            path: "../wit",
            with: {
                "wasi:http/types@0.2.12": ::wasi::http::types,
                "wasi:io/streams@0.2.12": ::wasi::io::streams,
                "wasi:io/error@0.2.12": ::wasi::io::error,
                "wasi:io/poll@0.2.12": ::wasi::io::poll,
                "wasi:clocks/monotonic-clock@0.2.12": ::wasi::clocks::monotonic_clock,
                $config: generate,
                $kv_store: tip_enrich_keyvalue::bindings::store,
                $kv_atomics: tip_enrich_keyvalue::bindings::atomics,
            },
        });
        use self::wasi::$module::store as config_store;
    };
}

#[cfg(not(any(feature = "spin", feature = "wasmcloud")))]
service_bindings!(
    "enrich-service",
    "wasi:config/store@0.2.0-rc.1",
    config0_2_0_rc_1,
    "wasi:keyvalue/store@0.2.0-draft",
    "wasi:keyvalue/atomics@0.2.0-draft"
);
#[cfg(feature = "spin")]
service_bindings!(
    "enrich-service-spin",
    "wasi:config/store@0.2.0-draft-2024-09-27",
    config0_2_0_draft_2024_09_27,
    "wasi:keyvalue/store@0.2.0-draft2",
    "wasi:keyvalue/atomics@0.2.0-draft2"
);
#[cfg(all(feature = "wasmcloud", not(feature = "spin")))]
service_bindings!(
    "enrich-service-wasmcloud",
    "wasi:config/store@0.2.0-draft",
    config0_2_0_draft,
    "wasi:keyvalue/store@0.2.0-draft",
    "wasi:keyvalue/atomics@0.2.0-draft"
);

/// The settings of this request: `wasi:config/store` over the environment.
/// A store that fails counts as empty, so the environment still applies.
fn settings() -> Vec<(String, String)> {
    let config = config_store::get_all().unwrap_or_default();
    merge_settings(config, environment())
}

/// A STIX answer's portal (the settings' API flavour; the default when they
/// do not resolve, and then every lookup is a `config` error anyway) and the
/// wall clock.
fn stix_at(env: tip_enrich::EnvLookup<'_>) -> StixAt {
    let now = ::wasi::clocks::wall_clock::now();
    let millis = now
        .seconds
        .saturating_mul(1000)
        .saturating_add(u64::from(now.nanoseconds / 1_000_000));
    StixAt {
        api: Config::resolve(&empty_settings(), env, Purpose::Verdict)
            .map_or(StixAt::default().api, |c| c.api),
        now_unix_ms: millis,
    }
}

fn method_name(method: &Method) -> &str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(other) => other,
    }
}

/// The request body, or the answer to give when it is too large, unreadable
/// or not complete within [`BODY_DEADLINE`]. It waits only in `wasi:io/poll`,
/// on the body stream and a timer at the deadline together.
fn read_body(request: &IncomingRequest) -> Result<Vec<u8>, Answer> {
    let unreadable = || Answer::problem(400, "bad-body", "the request body could not be read");
    let body = request.consume().map_err(|_| unreadable())?;
    let stream = body.stream().map_err(|_| unreadable())?;
    let deadline = u64::try_from(BODY_DEADLINE.as_nanos()).unwrap_or(u64::MAX);
    let timer = monotonic_clock::subscribe_duration(deadline);
    let ready = stream.subscribe();
    let mut bytes = Vec::new();
    let outcome = loop {
        if timer.ready() {
            break Err(body_timed_out());
        }
        match stream.read(64 * 1024) {
            Ok(chunk) if chunk.is_empty() => {
                // Nothing yet: wait for data, the end, or the deadline.
                let _ = poll(&[&ready, &timer]);
            }
            Ok(chunk) => {
                bytes.extend_from_slice(&chunk);
                if bytes.len() > MAX_BODY_BYTES {
                    break Err(body_too_large());
                }
            }
            Err(StreamError::Closed) => break Ok(()),
            Err(StreamError::LastOperationFailed(_)) => break Err(unreadable()),
        }
    };
    // Children before parents: the pollables, then the stream, then the body.
    drop(ready);
    drop(timer);
    drop(stream);
    drop(body);
    outcome.map(|()| bytes)
}

fn answer(request: &IncomingRequest) -> Answer {
    let method = request.method();
    let path = request.path_with_query().unwrap_or_else(|| "/".into());
    match route(method_name(&method), &path) {
        Route::Health => health(),
        Route::Verdict { ip, format } => {
            let settings = settings();
            let env = lookup_in(&settings);
            let result = with_bucket(&env, |store| {
                with_client(&env, store, |c| c.enrich(&ip, &empty_settings()))
            });
            verdict_answer(&ip, &result, format.stamped(|| stix_at(&env)))
        }
        Route::Batch { format } => {
            let ips = match read_body(request).and_then(|b| parse_batch(&b)) {
                Ok(ips) => ips,
                Err(answer) => return answer,
            };
            let settings = settings();
            let env = lookup_in(&settings);
            let results = with_bucket(&env, |store| {
                with_client(&env, store, |c| c.enrich_batch(&ips, &empty_settings()))
            });
            batch_answer(&ips, &results, format.stamped(|| stix_at(&env)))
        }
        Route::Events { options } => {
            let body = match read_body(request) {
                Ok(body) => body,
                Err(answer) => return answer,
            };
            let settings = settings();
            let env = lookup_in(&settings);
            events_answer(&body, &options, |ips| {
                with_bucket(&env, |store| {
                    with_client(&env, store, |c| c.enrich_batch(ips, &empty_settings()))
                })
                .into_iter()
                .map(|r| r.map_err(|e| LookupError::from(&e)))
                .collect()
            })
        }
        Route::Refused(refusal) => refusal.answer(),
    }
}

/// Health: do the settings resolve, with a key? No request is made.
fn health() -> Answer {
    let settings = settings();
    let env = lookup_in(&settings);
    let secrets = Secrets::of_key(env(settings::API_KEY.env).as_deref());
    let checked = Config::resolve(&empty_settings(), &env, Purpose::Verdict)
        .and_then(|c| c.require_key().map(|_| ()))
        .map_err(|e| e.into_wit(&secrets));
    health_answer(checked)
}

fn send(out: ResponseOutparam, answer: Answer) {
    let mut headers = vec![("content-type".to_string(), answer.content_type.to_string())];
    headers.extend(answer.headers);
    respond(out, answer.status, &headers, &answer.body);
}

struct Service;

impl exports::wasi::http::incoming_handler::Guest for Service {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let answer = answer(&request);
        send(response_out, answer);
    }
}

export!(Service);
