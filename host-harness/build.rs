//! Builds the guest components (wasm32-wasip2, profile `component`) so the harness and
//! its tests always run the components of the same checkout, with no manual
//! step. Modelled on wasmtime's `crates/test-programs/artifacts/build.rs`.
//!
//! First, before anything slow, it makes sure the toolchain in use has the
//! wasm32-wasip2 standard library: when it is missing and rustup manages the
//! toolchain, it runs `rustup target add` once (rust-toolchain.toml's
//! `targets` would not do it on machines with `RUSTUP_AUTO_INSTALL=0`).
//!
//! The guest gets its own target directory beside the host's (`<target>/guest`)
//! so the nested cargo never waits on the outer build's lock and the build is
//! shared by debug, release and clippy builds of the host.
//!
//! Every failure is a short message on stderr and exit status 1, not a panic
//! with a backtrace.

use std::env;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;

const TARGET: &str = "wasm32-wasip2";

fn main() {
    let manifest_dir = PathBuf::from(env_var("CARGO_MANIFEST_DIR"));
    let Some(root) = manifest_dir.parent().map(Path::to_path_buf) else {
        fail("host-harness is expected inside the workspace root");
    };
    let out_dir = PathBuf::from(env_var("OUT_DIR"));
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
        "../component-cached",
        "../keyvalue",
        "../service",
        "../gate",
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

    ensure_target();

    // One nested cargo per guest, so each artifact is exactly what
    // `cargo build -p <package>` makes (one invocation would unify the
    // features of shared dependencies across the guests).
    for guest in GUESTS {
        let wasm = build_guest(&root, &target_dir, guest.package, guest.features);
        // A build with features gets a name of its own: the next build of the
        // same package would overwrite cargo's artifact.
        let wasm = match guest.artifact {
            Some(name) => {
                let copy = wasm.with_file_name(name);
                if let Err(e) = std::fs::copy(&wasm, &copy) {
                    fail(&format!(
                        "copying {} to {}: {e}",
                        wasm.display(),
                        copy.display()
                    ));
                }
                copy
            }
            None => wasm,
        };
        println!("cargo:rustc-env={}={}", guest.env, wasm.display());
    }
}

/// A guest component the harness embeds.
struct Guest {
    /// Its cargo package (the artifact is its name with `_` for `-`).
    package: &'static str,
    /// The environment variable (at compile time) that holds its path.
    env: &'static str,
    /// Cargo features of the build (none: the default ones).
    features: &'static str,
    /// The name the artifact is copied to, for a build with features.
    artifact: Option<&'static str>,
}

const GUESTS: &[Guest] = &[
    // What the CLI runs (world enricher-cached).
    Guest {
        package: "tip-enrich-component-cached",
        env: "TIP_ENRICH_COMPONENT_PATH",
        features: "",
        artifact: None,
    },
    // World enricher, for hosts without wasi:keyvalue (jco, wasmtime run).
    Guest {
        package: "tip-enrich-component",
        env: "TIP_ENRICH_PLAIN_COMPONENT_PATH",
        features: "",
        artifact: None,
    },
    Guest {
        package: "tip-enrich-service",
        env: "TIP_ENRICH_SERVICE_COMPONENT_PATH",
        features: "",
        artifact: None,
    },
    // The gate's forwarding with no decision: the benchmark's baseline. Before
    // the gate: each build of the package rewrites cargo's tip_enrich_gate.wasm,
    // so the gate's own build must come last (this one is copied away first).
    Guest {
        package: "tip-enrich-gate",
        env: "TIP_ENRICH_PASSTHROUGH_COMPONENT_PATH",
        features: "passthrough",
        artifact: Some("tip_enrich_gate_passthrough.wasm"),
    },
    // The IP gate (world ip-gate, `tip-enrich gate`).
    Guest {
        package: "tip-enrich-gate",
        env: "TIP_ENRICH_GATE_COMPONENT_PATH",
        features: "",
        artifact: None,
    },
    // Tests only (host limits, egress); read from its path, never embedded.
    Guest {
        package: "misbehaving-guest",
        env: "TIP_ENRICH_MISBEHAVING_COMPONENT_PATH",
        features: "",
        artifact: None,
    },
];

/// Prints `message` for the person running cargo and ends the build script
/// (cargo shows it under "failed to run custom build command"), no backtrace.
fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    std::process::exit(1);
}

fn env_var(name: &str) -> OsString {
    env::var_os(name).unwrap_or_else(|| fail(&format!("cargo did not set {name}")))
}

/// The rustc cargo uses (it sets `RUSTC` for build scripts).
fn rustc() -> OsString {
    env::var_os("RUSTC").unwrap_or_else(|| "rustc".into())
}

/// The sysroot of that rustc.
fn sysroot() -> PathBuf {
    let rustc = rustc();
    let out = Command::new(&rustc)
        .args(["--print", "sysroot"])
        .output()
        .unwrap_or_else(|e| fail(&format!("running {} --print sysroot: {e}", rustc.display())));
    if !out.status.success() {
        fail(&format!(
            "{} --print sysroot failed ({}): {}",
            rustc.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Where the wasm32-wasip2 standard library lives when it is installed.
fn target_libdir(sysroot: &Path) -> PathBuf {
    sysroot.join("lib/rustlib").join(TARGET).join("lib")
}

/// Installs the wasm32-wasip2 standard library for the toolchain in use when
/// it is missing and rustup manages that toolchain; otherwise says what to do.
fn ensure_target() {
    let sysroot = sysroot();
    if target_libdir(&sysroot).is_dir() {
        return;
    }
    // rustup's proxies name the toolchain they run in RUSTUP_TOOLCHAIN; a
    // cargo started without them still runs from <rustup home>/toolchains/<name>.
    let toolchain = env::var("RUSTUP_TOOLCHAIN")
        .ok()
        .filter(|t| !t.is_empty())
        .or_else(|| {
            let in_rustup =
                sysroot.parent().and_then(Path::file_name) == Some("toolchains".as_ref());
            in_rustup
                .then(|| {
                    sysroot
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                })
                .flatten()
        });
    let manual = format!(
        "the {TARGET} standard library is not installed for the Rust toolchain in {} \
         (the components are built for {TARGET})",
        sysroot.display()
    );
    let Some(toolchain) = toolchain else {
        fail(&format!(
            "{manual}, and rustup does not manage that toolchain: install its {TARGET} \
             standard library (rust-std) and build again"
        ));
    };
    // rustup's progress goes to stderr, which cargo shows only if this fails.
    let status = Command::new("rustup")
        .args(["target", "add", TARGET, "--toolchain", &toolchain])
        .status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => fail(&format!(
            "{manual}, and `rustup target add {TARGET} --toolchain {toolchain}` failed \
             ({status}); run it yourself (it needs the network once) and build again"
        )),
        Err(e) => fail(&format!(
            "{manual}, and rustup could not be run ({e}): install rustup, or the toolchain's \
             {TARGET} standard library, and build again"
        )),
    }
    if !target_libdir(&sysroot).is_dir() {
        fail(&format!(
            "{manual}: `rustup target add {TARGET} --toolchain {toolchain}` succeeded but \
             {} is still missing; is RUSTUP_TOOLCHAIN naming another toolchain than cargo's?",
            target_libdir(&sysroot).display()
        ));
    }
    println!(
        "cargo:warning=installed the {TARGET} standard library for toolchain {toolchain} \
         (rustup target add {TARGET} --toolchain {toolchain}), which the components are built for"
    );
}

fn build_guest(root: &Path, target_dir: &Path, package: &str, features: &str) -> PathBuf {
    let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(root)
        .args([
            "build",
            "--profile",
            "component",
            "--locked",
            "--target",
            TARGET,
            "-p",
            package,
            "--target-dir",
        ])
        .arg(target_dir);
    if !features.is_empty() {
        cmd.args(["--features", features]);
    }
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
    let status = cmd.status().unwrap_or_else(|e| {
        fail(&format!(
            "running {} to build the {package} component: {e}",
            cargo.display()
        ))
    });
    if !status.success() {
        fail(&format!(
            "building the {package} component for {TARGET} failed ({status}); cargo's \
             errors are above"
        ));
    }
    let wasm = target_dir
        .join(TARGET)
        .join("component")
        .join(format!("{}.wasm", package.replace('-', "_")));
    if !wasm.is_file() {
        fail(&format!(
            "the {package} component is not at {} after its build",
            wasm.display()
        ));
    }
    wasm
}
