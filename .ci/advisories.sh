#!/usr/bin/env bash
# Supply chain, advisories (issue #14; DEPENDENCIES.md, "Advisories"): every
# Rust lockfile in the tree checked with `cargo deny check advisories` against
# the RustSec advisory database, without network. The database is the dated
# snapshot in ../shared/advisory-db beside the clone (../shared/SNAPSHOTS.md
# says which commit and when); nothing is fetched.
#
#   1. the snapshot is copied into a fresh git repository where deny.toml's
#      [advisories] db-path tells cargo-deny to look (cargo-deny wants a git
#      work tree there);
#   2. self-check: the same command must FAIL on .ci/advisory-selfcheck's
#      lockfile, which pins versions with known advisories;
#   3. the workspace's Cargo.lock, fuzz/Cargo.lock and
#      deploy/wadm-check/Cargo.lock must pass.
#
# Run by .ci/run once cargo-deny is installed; by hand: bash .ci/advisories.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# Never let a caller's git environment point the commands below elsewhere.
unset GIT_DIR GIT_WORK_TREE GIT_INDEX_FILE

DENY="${CARGO_DENY:-$HOME/.cache/tip-enrich/tools/bin/cargo-deny}"
SHARED="../shared"
SNAPSHOT="$SHARED/advisory-db"
# deny.toml: db-path = "~/.cache/tip-enrich/advisory-dbs", and db-urls names
# https://github.com/rustsec/advisory-db, which cargo-deny 0.20.2 opens as
# <db-path>/advisory-db-3157b0e258782691 (the URL's last segment and a hash of
# the URL). If a newer cargo-deny names it otherwise, the checks below fail
# with the path it looked for.
DB_ROOT="$HOME/.cache/tip-enrich/advisory-dbs"
DB_DIR="$DB_ROOT/advisory-db-3157b0e258782691"
FIXTURE=.ci/advisory-selfcheck/Cargo.toml
# unmaintained advisories are warnings, not failures (deny.toml, DEPENDENCIES.md).
CHECK=(--locked --offline --config deny.toml check -W unmaintained advisories)

[[ -x "$DENY" ]] || { echo "advisories: $DENY is missing (.ci/run installs it)" >&2; exit 1; }
if [[ ! -d "$SNAPSHOT/crates" ]]; then
    echo "advisories: no RustSec snapshot at $SNAPSHOT (it lives in shared/, beside the clone)" >&2
    exit 1
fi

# Which snapshot, from ../shared/SNAPSHOTS.md's advisory-db row.
row="$(grep -m1 '^| `advisory-db/`' "$SHARED/SNAPSHOTS.md" 2>/dev/null || true)"
commit="$(grep -oE '[0-9a-f]{40}' <<<"$row" | head -n1 || true)"
as_of="$(grep -oE '[0-9]{4}-[0-9]{2}-[0-9]{2}' <<<"$row" | tail -n1 || true)"
if [[ -n "$as_of" ]] && as_of_s="$(date -u -d "$as_of" +%s 2>/dev/null)"; then
    age=$((($(date -u +%s) - as_of_s) / 86400))
    note="as of $as_of ($age days old)"
    # cargo-deny's own staleness limit cannot see the snapshot's age (the copy
    # below is new on every run), so the age is told here; 90 days is that
    # limit's default.
    ((age <= 90)) || note="$note; older than 90 days, a newer snapshot is due in shared/"
else
    as_of=""
    note="of unknown date (no advisory-db row in $SHARED/SNAPSHOTS.md)"
fi
echo "advisories: RustSec advisory-db ${commit:-(commit unknown)} $note; a pass means no known advisory as of then"

# One run at a time rebuilds and reads the copy (CI and developers share $HOME).
mkdir -p "$(dirname "$DB_ROOT")"
exec 9>"$DB_ROOT.lock"
flock -w 300 9

# Nothing but this run's copy under db-path: no database left from before.
rm -rf "$DB_ROOT"
mkdir -p "$DB_ROOT"
cp -R "$SNAPSHOT" "$DB_DIR"
chmod -R u+w "$DB_DIR"
dated=()
[[ -z "$as_of" ]] || dated=(env GIT_AUTHOR_DATE="${as_of}T00:00:00Z" GIT_COMMITTER_DATE="${as_of}T00:00:00Z")
git -C "$DB_DIR" init -q -b main
git -C "$DB_DIR" add -A
"${dated[@]}" git -C "$DB_DIR" -c user.name=tip-enrich-ci -c user.email=ci@tip-enrich.invalid \
    -c commit.gpgsign=false -c core.hooksPath=/dev/null \
    commit -q -m "RustSec advisory-db snapshot ${commit:-(commit unknown)} ${as_of:+as of $as_of} (copied from shared/)"

# Self-check: the fixture's lockfile must fail with exactly these findings.
expected=(
    "error[vulnerability] RUSTSEC-2021-0003"  # smallvec 1.6.0
    "error[unsound] RUSTSEC-2022-0078"        # bumpalo 3.11.0
    "warning[unmaintained] RUSTSEC-2024-0436" # paste 1.0.15
)
cargo fetch --locked -q --manifest-path "$FIXTURE"
rc=0
out="$("$DENY" --color never --manifest-path "$FIXTURE" "${CHECK[@]}" 2>&1)" || rc=$?
found="$(awk '/^(error|warning|note)\[/ { h = $0; sub(/:.*/, "", h) } /├ ID: / { print h, $3 }' <<<"$out")"
missing=()
for e in "${expected[@]}"; do
    grep -qxF "$e" <<<"$found" || missing+=("$e")
done
if ((rc == 0 || ${#missing[@]} > 0)); then
    echo "$out"
    echo "advisories: self-check FAILED: cargo deny exited $rc on ${FIXTURE%.toml}.lock; expected non-zero with: ${expected[*]}; missing: ${missing[*]:-none}" >&2
    exit 1
fi
echo "advisories: self-check ok: cargo deny fails on ${FIXTURE%.toml}.lock (smallvec 1.6.0 RUSTSEC-2021-0003 vulnerability, bumpalo 3.11.0 RUSTSEC-2022-0078 unsound: errors; paste 1.0.15 RUSTSEC-2024-0436 unmaintained: warning)"

# The real lockfiles; each is checked even when an earlier one fails.
status=0
for lock in Cargo.lock fuzz/Cargo.lock deploy/wadm-check/Cargo.lock; do
    manifest="${lock%.lock}.toml"
    ws=()
    [[ "$lock" != Cargo.lock ]] || ws=(--workspace)
    echo "advisories: $lock"
    # cargo metadata (inside cargo deny) needs every locked crate's sources;
    # crates.io is reachable, and --offline below keeps cargo deny from
    # fetching anything itself.
    cargo fetch --locked -q --manifest-path "$manifest"
    "$DENY" --manifest-path "$manifest" "${ws[@]}" "${CHECK[@]}" || status=1
done

echo "advisories: NOT checked, no advisory source reachable from these machines (npm audit's endpoint answers 405, PyPI's JSON API 404):" \
    "hosts/node/package-lock.json (npm); hosts/python/requirements.txt, hosts/cli-requirements.txt, deploy/requirements.txt, tests/stix/requirements.txt (PyPI);" \
    "the pins and why: DEPENDENCIES.md"
exit "$status"
