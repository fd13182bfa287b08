//! An API answer (status, `Retry-After`, body) from arbitrary bytes through
//! the core's parse, verdict derivation, and the enrich and lookup flows.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/response_verdict.rs"]
#[allow(dead_code)]
mod check;

fuzz_target!(|data: &[u8]| check::check(data));
