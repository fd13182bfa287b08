//! The host's limits against a guest that misbehaves on purpose
//! (`tests/misbehaving-guest`): the memory cap, the epoch deadline and fuel.
//! In each case the host reports the trap, survives, and the next call on a
//! fresh instance works. Also the `tip-enrich` CLI given that guest.

mod common;

use std::process::Command;
use std::sync::OnceLock;
use std::time::Duration;

use host_harness::egress::Egress;
use host_harness::runtime::{
    EnrichError, InstanceOptions, Runner, Runtime, Verdict, empty_settings,
};
use wasmtime::Trap;

/// Built by build.rs from `tests/misbehaving-guest`; read from disk, never embedded.
const MISBEHAVING: &str = env!("TIP_ENRICH_MISBEHAVING_COMPONENT_PATH");
/// The epoch budget of calls that must not meet it.
const BUDGET: Duration = Duration::from_secs(60);

fn wasm() -> &'static [u8] {
    static WASM: OnceLock<Vec<u8>> = OnceLock::new();
    WASM.get_or_init(|| std::fs::read(MISBEHAVING).expect("the misbehaving guest"))
}

fn misbehaving() -> Runtime {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| Runtime::cached_at(Runtime::engine().unwrap(), wasm(), None).unwrap())
        .clone()
}

fn options() -> InstanceOptions {
    // Nothing may leave: these guests make no request unless asked to.
    InstanceOptions::new(Egress::Live {
        allowed: "127.0.0.1:9".into(),
    })
}

/// One `enrich` through the runner; also the instance's peak memory.
fn enrich(
    runner: &mut Runner,
    input: &str,
    budget: Duration,
) -> (wasmtime::Result<Result<Verdict, EnrichError>>, usize) {
    let mut peak = 0;
    let result = runner.call(|i| {
        let r = i.enrich(input, &empty_settings(), budget);
        peak = i.peak_memory();
        r
    });
    (result, peak)
}

fn trap_of(result: wasmtime::Result<Result<Verdict, EnrichError>>) -> (Trap, String) {
    match result {
        Err(e) => {
            let text = format!("{e:?}");
            let trap = *e
                .downcast_ref::<Trap>()
                .unwrap_or_else(|| panic!("an error, but not a trap: {text}"));
            (trap, text)
        }
        Ok(r) => panic!("expected a trap, got {r:?}"),
    }
}

/// The next call on the same runner runs on a fresh instance and works.
fn next_call_works(runner: &mut Runner, traps_so_far: usize) {
    let (result, _) = enrich(runner, "192.0.2.7", BUDGET);
    let v = result
        .expect("no trap on the fresh instance")
        .expect("a verdict");
    assert_eq!(v.ip, "192.0.2.7");
    assert_eq!(runner.traps(), traps_so_far, "no further trap");
}

#[test]
fn a_well_behaved_call_on_the_misbehaving_guest_works() {
    let mut runner = Runner::new(misbehaving(), options());
    next_call_works(&mut runner, 0);
}

#[test]
fn the_memory_cap_traps_a_guest_that_grows_without_end() {
    const CAP: usize = 16 * 1024 * 1024;
    let mut options = options();
    options.max_memory_bytes = CAP;
    let mut runner = Runner::new(misbehaving(), options);
    let (result, peak) = enrich(&mut runner, "grow", BUDGET);
    // The limiter refuses memory.grow; the guest's allocator fails and aborts.
    let (trap, text) = trap_of(result);
    assert_eq!(trap, Trap::UnreachableCodeReached, "{text}");
    assert_eq!(runner.traps(), 1);
    assert!(peak <= CAP, "peak {peak} over the cap {CAP}");
    assert!(peak > CAP / 2, "it did grow toward the cap: {peak}");
    next_call_works(&mut runner, 1);
}

#[test]
fn the_epoch_deadline_traps_a_guest_that_spins() {
    let mut runner = Runner::new(misbehaving(), options());
    let (result, _) = enrich(&mut runner, "spin", Duration::from_millis(200));
    let (trap, text) = trap_of(result);
    assert_eq!(trap, Trap::Interrupt, "{text}");
    assert_eq!(runner.traps(), 1);
    next_call_works(&mut runner, 1);
}

#[test]
fn fuel_traps_a_guest_that_spins() {
    let engine = Runtime::fuel_engine().unwrap();
    let runtime = Runtime::cached_at(engine, wasm(), None).unwrap();
    let mut options = options();
    options.fuel = Some(50_000_000);
    let mut runner = Runner::new(runtime, options);
    // The epoch budget is far away: only fuel can stop it.
    let (result, _) = enrich(&mut runner, "spin", BUDGET);
    let (trap, text) = trap_of(result);
    assert_eq!(trap, Trap::OutOfFuel, "{text}");
    assert_eq!(runner.traps(), 1);
    // The fresh instance gets its own fuel.
    next_call_works(&mut runner, 1);
    next_call_works(&mut runner, 1);
}

#[test]
fn a_guest_panic_is_a_trap_and_the_host_carries_on() {
    let mut runner = Runner::new(misbehaving(), options());
    let (result, _) = enrich(&mut runner, "trap", BUDGET);
    let (trap, text) = trap_of(result);
    assert_eq!(trap, Trap::UnreachableCodeReached, "{text}");
    next_call_works(&mut runner, 1);
    // Each trap costs its own instance; the runner keeps going.
    let (result, _) = enrich(&mut runner, "trap", BUDGET);
    trap_of(result);
    next_call_works(&mut runner, 2);
}

#[test]
fn the_cli_reports_traps_as_lines_and_carries_on() {
    let out = Command::new(env!("CARGO_BIN_EXE_tip-enrich"))
        .env("TIP_ENRICH_CACHE", "off")
        .env_remove("TIP_API_KEY")
        .env("TIP_ENRICH_CACHE_DIR", "")
        .args([
            "--component",
            MISBEHAVING,
            "--max-memory-mb",
            "16",
            "--quiet",
        ])
        .args(["grow", "192.0.2.1", "trap", "192.0.2.2"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<serde_json::Value> = stdout
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert_eq!(lines.len(), 4, "{stdout}");
    assert_eq!(lines[0]["ip"], "grow");
    assert_eq!(lines[0]["error"]["kind"], "trap");
    assert_eq!(lines[1]["ip"], "192.0.2.1");
    assert_eq!(lines[1]["verdict"], "unknown");
    assert_eq!(lines[2]["error"]["kind"], "trap");
    assert_eq!(lines[3]["ip"], "192.0.2.2");
    assert_eq!(lines[3]["verdict"], "unknown");
}
