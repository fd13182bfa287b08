//! Builds the guest components (wasm32-wasip2, profile `component`) so the harness and
//! its tests always run the components of the same checkout, with no manual
//! step. Modelled on wasmtime's `crates/test-programs/artifacts/build.rs`.
//!
//! The guest gets its own target directory beside the host's (`<target>/guest`)
//! so the nested cargo never waits on the outer build's lock and the build is
//! shared by debug, release and clippy builds of the host.

use std::env;
use std::path::{Path, PathBuf};
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
        "../component",
        "../service",
        "../wit",
        "../Cargo.toml",
        "../Cargo.lock",
        "build.rs",
        "tests/misbehaving-guest",
    ] {
        println!("cargo:rerun-if-changed={path}");
    }
    // Profile overrides reach the nested build; changing one must rebuild it
    // (BENCHMARKS.md tunes the profile this way).
    for knob in ["OPT_LEVEL", "LTO", "CODEGEN_UNITS", "STRIP", "PANIC"] {
        println!("cargo:rerun-if-env-changed=CARGO_PROFILE_COMPONENT_{knob}");
    }

    // One nested cargo per guest, so each artifact is exactly what
    // `cargo build -p <package>` makes (one invocation would unify the
    // features of shared dependencies across the guests).
    for guest in GUESTS {
        let wasm = build_guest(&root, &target_dir, guest.package);
        println!("cargo:rustc-env={}={}", guest.env, wasm.display());
    }
}

/// A guest component the harness embeds.
struct Guest {
    /// Its cargo package (the artifact is its name with `_` for `-`).
    package: &'static str,
    /// The environment variable (at compile time) that holds its path.
    env: &'static str,
}

const GUESTS: &[Guest] = &[
    Guest {
        package: "tip-enrich-component",
        env: "TIP_ENRICH_COMPONENT_PATH",
    },
    Guest {
        package: "tip-enrich-service",
        env: "TIP_ENRICH_SERVICE_COMPONENT_PATH",
    },
    // Tests only (host limits, egress); read from its path, never embedded.
    Guest {
        package: "misbehaving-guest",
        env: "TIP_ENRICH_MISBEHAVING_COMPONENT_PATH",
    },
];

fn build_guest(root: &Path, target_dir: &Path, package: &str) -> PathBuf {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--profile",
            "component",
            "--locked",
            "--target",
            "wasm32-wasip2",
            "-p",
            package,
            "--target-dir",
        ])
        .arg(target_dir);
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
    let status = cmd
        .status()
        .expect("running cargo to build a guest component");
    if !status.success() {
        panic!(
            "building the {package} component failed ({status}); is the target installed? \
             run: rustup target add wasm32-wasip2"
        );
    }
    let wasm = target_dir
        .join("wasm32-wasip2/component")
        .join(format!("{}.wasm", package.replace('-', "_")));
    assert!(wasm.exists(), "component not found at {}", wasm.display());
    wasm
}
