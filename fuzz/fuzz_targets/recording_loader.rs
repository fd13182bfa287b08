//! A recording's TOML through the loader's parse, the matcher and the writer.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../host-harness/src/recordings.rs"]
#[allow(dead_code)]
mod recordings;

#[path = "../checks/recording_loader.rs"]
mod check;

fuzz_target!(|data: &[u8]| check::check(data));
