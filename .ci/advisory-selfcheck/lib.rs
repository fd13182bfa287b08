//! Empty: only the lockfile matters (see Cargo.toml).
