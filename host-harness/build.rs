//! Builds the tip-enrich component (wasm32-wasip2, profile `component`) so the harness and
//! its tests always run the component of the same checkout, with no manual
//! step. Modelled on wasmtime's `crates/test-programs/artifacts/build.rs`.
//!
//! The guest gets its own target directory beside the host's (`<target>/guest`)
//! so the nested cargo never waits on the outer build's lock and the build is
//! shared by debug, release and clippy builds of the host.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let root = manifest_dir
        .parent()
        .expect("host-harness lives in the workspace root")
        .to_path_buf();
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("OUT_DIR"));
    // OUT_DIR is <target>/<profile>/build/<pkg>-<hash>/out
    let target_dir = out_dir
        .ancestors()
        .nth(4)
        .map(|t| t.join("guest"))
        .unwrap_or_else(|| out_dir.join("guest"));

    // Relative paths resolve against the package root of the build at hand.
    // Absolute ones would be stored as such, and cargo's fingerprints are
    // path-independent: a second checkout sharing the target directory would
    // then watch the first checkout's files.
    for path in [
        "../src",
        "../wit",
        "../Cargo.toml",
        "../Cargo.lock",
        "build.rs",
    ] {
        println!("cargo:rerun-if-changed={path}");
    }
    // Profile overrides reach the nested build; changing one must rebuild it
    // (BENCHMARKS.md tunes the profile this way).
    for knob in ["OPT_LEVEL", "LTO", "CODEGEN_UNITS", "STRIP", "PANIC"] {
        println!("cargo:rerun-if-env-changed=CARGO_PROFILE_COMPONENT_{knob}");
    }

    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args([
            "build",
            "--profile",
            "component",
            "--locked",
            "--target",
            "wasm32-wasip2",
            "-p",
            "tip-enrich",
            "--target-dir",
        ])
        .arg(&target_dir);
    // Flags meant for the host build (coverage, clippy, sanitizers) must not leak into the guest.
    for var in [
        "CARGO_ENCODED_RUSTFLAGS",
        "RUSTFLAGS",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_MAKEFLAGS",
        "MAKEFLAGS",
        "MFLAGS",
    ] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo to build the component");
    if !status.success() {
        panic!(
            "building the tip-enrich component failed ({status}); is the target installed? \
             run: rustup target add wasm32-wasip2"
        );
    }
    let wasm = target_dir.join("wasm32-wasip2/component/tip_enrich.wasm");
    assert!(wasm.exists(), "component not found at {}", wasm.display());
    println!(
        "cargo:rustc-env=TIP_ENRICH_COMPONENT_PATH={}",
        wasm.display()
    );
}
