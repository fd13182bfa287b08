//! Address parsing, normalisation and the special-purpose lookup.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../checks/ip_parse.rs"]
mod check;

fuzz_target!(|data: &[u8]| check::check(data));
