//! `wadm-check validate FILE...`: parse each wadm manifest into wadm's own
//! model and run wadm's manifest validation (what `wash app validate` runs);
//! any failure, error or warning, exits 1.
//! `wadm-check schema`: print the JSON schema of that model (wadm derives its
//! published `oam.schema.json` the same way, with schemars).

use std::process::ExitCode;

use wadm_types::validation::{ValidationFailureLevel, validate_manifest_bytes};

/// Pinned with `=` in Cargo.toml; keep the two equal.
const WADM_TYPES: &str = "0.8.3";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("schema") if args.len() == 1 => {
            let schema = schemars::schema_for!(wadm_types::Manifest);
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).expect("schema is JSON")
            );
            ExitCode::SUCCESS
        }
        Some("validate") if args.len() > 1 => validate(&args[1..]),
        _ => {
            eprintln!("usage: wadm-check validate FILE... | wadm-check schema");
            ExitCode::from(2)
        }
    }
}

fn validate(paths: &[String]) -> ExitCode {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("tokio runtime");
    let mut ok = true;
    for path in paths {
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("{path}: cannot read: {e}");
                ok = false;
                continue;
            }
        };
        match rt.block_on(validate_manifest_bytes(&bytes)) {
            Err(e) => {
                eprintln!("{path}: not a wadm manifest: {e:#}");
                ok = false;
            }
            Ok((manifest, failures)) => {
                for f in &failures {
                    let level = match f.level {
                        ValidationFailureLevel::Error => "error",
                        ValidationFailureLevel::Warning => "warning",
                        _ => "failure",
                    };
                    eprintln!("{path}: {level}: {}", f.msg);
                }
                if failures.is_empty() {
                    let comps = manifest.spec.components.len();
                    let links = manifest.links().count();
                    println!(
                        "{path}: ok (wadm-types {}): application {} version {}, {comps} components, {links} links",
                        WADM_TYPES,
                        manifest.metadata.name,
                        manifest.version()
                    );
                } else {
                    ok = false;
                }
            }
        }
    }
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
