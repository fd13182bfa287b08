#!/usr/bin/env python3
"""Check the deployment examples in deploy/ without Spin or wasmCloud.

What it checks (each line of output says which):
  spin.toml     parses as TOML; fits deploy/schemas/spin-manifest-v2.subset.schema.json
                (our own strict schema of Spin manifest v2); its component variables are
                the service's settings (TIP_X -> tip_x, each a name src/settings.rs declares),
                each refers to a declared application variable, the key is secret and
                required; allowed_outbound_hosts covers the default base URLs of
                src/config.rs and nothing else; the source path is the build command's
                artifact; with --build, each engine's build (cargo feature spin /
                wasmcloud) is made and its top-level imports and exports are read from
                the binary (incoming-handler exported; outgoing-handler and exactly the
                wasi:config/store version that engine serves imported; nothing else
                unusual; wasi:keyvalue, once the component imports it, at exactly the
                version that engine serves, and only interfaces the engine serves and
                the wadm link carries). The answer store: key_value_stores grants the
                label the component opens (tip_store_bucket, else `default`).
  spin-gate/spin.toml
                the IP gate (gate/) on Spin: TOML, the same schema, one component on
                route /...; its variables are names src/settings.rs declares (TIP_* and
                TIP_GATE_*), each refers to a declared application variable, the key is
                secret and required, the client address comes from spin-client-addr;
                allowed_outbound_hosts is the default base URLs and the origin
                (tip_gate_origin's default), nothing else; the store it opens is granted;
                the source path is the build command's artifact; with --build, the gate
                built with feature spin imports Spin's wasi:config and wasi:keyvalue.
  runtime-config.toml
                Spin runtime config (spin up --runtime-config-file): parses; fits
                deploy/schemas/spin-runtime-config.subset.schema.json; every label of
                key_value_stores is a Redis store, so every process shares it.
  spinapp.yaml  SpinApp + HorizontalPodAutoscaler: the variables are spin.toml's, the
                required ones are set, the key comes from a Secret, the autoscaler targets
                the SpinApp's Deployment, the image is the one deploy/README.md pushes;
                runtimeConfig.keyValueStores (the SpinApp CRD's fields) maps the same labels
                to the same store types and options as runtime-config.toml, the Redis URL
                from a Secret; every Secret key referenced is one deploy/README.md creates.
  wadm.yaml     wadm's own validation (the wadm-types crate, via deploy/wadm-check) when
                --wadm-check BIN is given, and the JSON schema wadm-types derives (--wadm-schema
                FILE); then: config keys are the service's settings, the key is in no file,
                the http links are there, the image is the one deploy/README.md pushes; the
                wasi:keyvalue link carries store and atomics to the keyvalue-redis provider
                (pinned version) with the Redis URL in its target config (inline, or a named
                config deploy/README.md creates with wash config put).

Exit status 0 when everything checked passed, 1 otherwise, 2 for usage errors.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import yaml

DEPLOY = Path(__file__).resolve().parent
ROOT = DEPLOY.parent
SPIN_TOML = DEPLOY / "spin" / "spin.toml"
SPINAPP = DEPLOY / "spin" / "spinapp.yaml"
WADM = DEPLOY / "wasmcloud" / "wadm.yaml"
NOTES = DEPLOY / "README.md"
SPIN_SCHEMA = DEPLOY / "schemas" / "spin-manifest-v2.subset.schema.json"
SPIN_RUNTIME_CONFIG = DEPLOY / "spin" / "runtime-config.toml"
SPIN_RUNTIME_SCHEMA = DEPLOY / "schemas" / "spin-runtime-config.subset.schema.json"
SPIN_GATE_TOML = DEPLOY / "spin-gate" / "spin.toml"

SERVICE_PACKAGE = "tip-enrich-service"
ARTIFACT = Path("target/wasm32-wasip2/component/tip_enrich_service.wasm")
BUILD_ARGS = ["--profile", "component", "--target", "wasm32-wasip2", "-p", SERVICE_PACKAGE]
# Each engine's build of the service: the cargo feature that picks the
# wasi:config/store version it serves (service/Cargo.toml, wit/enrich.wit).
ENGINE_FEATURE = {"Spin 3": "spin", "wasmCloud 1": "wasmcloud"}
SPIN_BUILD_ARGS = [*BUILD_ARGS, "--features", ENGINE_FEATURE["Spin 3"]]
# The IP gate (gate/, world ip-gate-spin): built for Spin only.
GATE_PACKAGE = "tip-enrich-gate"
GATE_ARTIFACT = Path("target/wasm32-wasip2/component/tip_enrich_gate.wasm")
GATE_BUILD_ARGS = ["--profile", "component", "--target", "wasm32-wasip2", "-p", GATE_PACKAGE,
                   "--features", "spin"]
GATE_ORIGIN = "tip_gate_origin"
GATE_CLIENT_HEADER = ("tip_gate_client_ip_header", "spin-client-addr")
# The settings the deployment examples set; the component reads each from
# wasi:config/store key tip_x, then from environment variable TIP_X.
SETTINGS = ["tip_api_key", "tip_api", "tip_base_url", "tip_auth", "tip_timeout_ms"]
KEY = "tip_api_key"

# The answer store (wasi:keyvalue). The component opens the bucket its setting
# tip_store_bucket names, else `default`, else the empty name; it uses
# store (get/set/delete) and atomics (increment).
STORE_SETTING = "tip_store_bucket"
DEFAULT_BUCKET = "default"
KEYVALUE_USED = {"store", "atomics"}
# The wasi:keyvalue version and interfaces each engine serves, as their sources
# say (not run here): Spin 3.0 to 3.6.3 link store, atomics and batch of
# 0.2.0-draft2 (spin@3.6.3 crates/factor-key-value/src/lib.rs, wit/world.wit);
# the wasmCloud 1.x host serves 0.2.0-draft's store, atomics and batch and
# forwards them over the link to a provider (wasmCloud v1.9.2
# crates/runtime/wit/host.wit, crates/runtime/src/component/keyvalue.rs).
KEYVALUE_SERVED = {
    "Spin 3": ("0.2.0-draft2", {"store", "atomics", "batch"}),
    "wasmCloud 1": ("0.2.0-draft", {"store", "atomics", "batch"}),
}
# wasmCloud's Redis keyvalue provider: 0.30.0 is the newest release (tag
# provider-keyvalue-redis-v0.30.0), the one wasmCloud v1.9.2's own examples run;
# it takes the URL from the link's target config key `url` (any case).
KEYVALUE_REDIS_IMAGE = "ghcr.io/wasmcloud/keyvalue-redis"
KEYVALUE_REDIS_VERSION = "0.30.0"
REDIS_URL = re.compile(r"^rediss?://[^/]")


class Report:
    def __init__(self) -> None:
        self.passed = self.failures = self.skipped = self.warnings = 0

    def ok(self, what: str) -> None:
        self.passed += 1
        print(f"ok    {what}")

    def fail(self, what: str) -> None:
        self.failures += 1
        print(f"FAIL  {what}")

    def warn(self, what: str) -> None:
        self.warnings += 1
        print(f"WARN  {what}")

    def skip(self, what: str) -> None:
        self.skipped += 1
        print(f"skip  {what}")

    def check(self, cond: bool, what: str) -> bool:
        (self.ok if cond else self.fail)(what)
        return cond


def rel(p: Path) -> str:
    try:
        return str(p.relative_to(ROOT))
    except ValueError:
        return str(p)


def config_rs_env_names() -> set[str]:
    # The settings table (src/settings.rs) declares every variable the core reads.
    text = (ROOT / "src" / "settings.rs").read_text()
    return set(re.findall(r'"(TIP_[A-Z0-9_]+)"', text))


def default_base_urls() -> list[str]:
    text = (ROOT / "src" / "config.rs").read_text()
    m = re.search(r"fn default_base_url\b.*?\n}\n", text, re.S)
    return re.findall(r'"(https?://[^"]+)"', m.group(0)) if m else []


def origin(url: str) -> str:
    """scheme://host[:port] of a URL, with the scheme's default port left out."""
    m = re.match(r"^([a-z]+)://([^/:]+)(?::(\d+))?", url)
    if not m:
        return url
    scheme, host, port = m.groups()
    if port and (scheme, port) in {("https", "443"), ("http", "80")}:
        port = None
    return f"{scheme}://{host}" + (f":{port}" if port else "")


def notes_text() -> str:
    return NOTES.read_text() if NOTES.exists() else ""


def check_settings_names(r: Report, names: list[str], where: str) -> None:
    env = config_rs_env_names()
    unknown = [n for n in names if n.upper() not in env]
    r.check(not unknown, f"{where}: every setting is a TIP_* name src/settings.rs declares (unknown: {unknown or 'none'})")
    r.check(set(names) <= set(SETTINGS) | {STORE_SETTING}, f"{where}: settings are among {SETTINGS} (and {STORE_SETTING})")


# ---------------------------------------------------------------- Spin


def load_spin(r: Report, path: Path, label: str) -> dict | None:
    """A Spin manifest: TOML that fits our schema subset."""
    with path.open("rb") as f:
        try:
            m = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            r.fail(f"{label}: not TOML: {e}")
            return None
    r.ok(f"{label}: TOML")
    schema = json.loads(SPIN_SCHEMA.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(m), key=lambda e: list(e.path))
    for e in errors:
        r.fail(f"{label}: schema: {'/'.join(map(str, e.path)) or '(top)'}: {e.message}")
    if not errors:
        r.ok(f"{label}: fits {rel(SPIN_SCHEMA)}")
    return m


def check_spin(r: Report) -> dict:
    m = load_spin(r, SPIN_TOML, "spin.toml")
    if m is None:
        return {}

    app_vars = m.get("variables", {})
    comps = m.get("component", {})
    triggers = m.get("trigger", {}).get("http", [])
    r.check(len(comps) == 1, "spin.toml: one component")
    for t in triggers:
        r.check(t.get("component") in comps, f"spin.toml: trigger {t.get('route')} names a declared component")
    r.check(any(t.get("route") == "/..." for t in triggers), "spin.toml: route /... reaches every service route")
    for cid, c in comps.items():
        where = f"spin.toml: component {cid}"
        cvars = c.get("variables", {})
        check_settings_names(r, list(cvars), where)
        r.check(set(cvars) - {STORE_SETTING} == set(SETTINGS), f"{where}: sets all of {SETTINGS}")
        for name, value in cvars.items():
            refs = re.findall(r"\{\{\s*([a-z][a-z0-9_]*)\s*\}\}", value)
            r.check(bool(refs) and all(x in app_vars for x in refs),
                    f"{where}: variable {name} = {value!r} refers to declared application variables")
        key_src = re.findall(r"\{\{\s*([a-z][a-z0-9_]*)\s*\}\}", cvars.get(KEY, ""))
        kv = app_vars.get(key_src[0], {}) if key_src else {}
        r.check(kv.get("secret") is True and kv.get("required") is True and "default" not in kv,
                f"{where}: {KEY} comes from a secret, required application variable with no default")

        hosts = c.get("allowed_outbound_hosts", [])
        defaults = default_base_urls()
        r.check(len(defaults) == 2, f"src/config.rs: default_base_url has the two defaults ({defaults})")
        missing = [d for d in defaults if origin(d) not in hosts]
        r.check(not missing, f"{where}: allowed_outbound_hosts covers the default base URLs (missing: {missing or 'none'})")
        extra = [h for h in hosts if h not in {origin(d) for d in defaults}]
        r.check(not extra, f"{where}: allowed_outbound_hosts allows nothing else (extra: {extra or 'none'})")

        src = c.get("source")
        build_cfg = c.get("build", {})
        workdir = (SPIN_TOML.parent / build_cfg.get("workdir", ".")).resolve()
        r.check(workdir == ROOT, f"{where}: build workdir is the repository root")
        cmd = build_cfg.get("command", "")
        r.check(isinstance(cmd, str) and cmd.split() == ["cargo", "build", *SPIN_BUILD_ARGS],
                f"{where}: build command is `cargo build {' '.join(SPIN_BUILD_ARGS)}`")
        if isinstance(src, str):
            resolved = (SPIN_TOML.parent / src).resolve()
            r.check(resolved == ROOT / ARTIFACT,
                    f"{where}: source {src} is the build's artifact {ARTIFACT} (relative to spin.toml)")

        # The answer store: Spin lets a component open only the labels its
        # key_value_stores lists (anything else: access-denied).
        stores = c.get("key_value_stores", [])
        label = opened_bucket(r, cvars, app_vars, where)
        if label is not None:
            r.check(label in stores, f"{where}: key_value_stores {stores} grants the store the component opens "
                                     f"({label!r})")
    return m


def check_spin_gate(r: Report) -> None:
    """deploy/spin-gate/spin.toml: the IP gate on Spin."""
    label = "spin-gate/spin.toml"
    if not r.check(SPIN_GATE_TOML.is_file(), f"{rel(SPIN_GATE_TOML)} exists"):
        return
    m = load_spin(r, SPIN_GATE_TOML, label)
    if m is None:
        return
    app_vars = m.get("variables", {})
    comps = m.get("component", {})
    triggers = m.get("trigger", {}).get("http", [])
    r.check(len(comps) == 1, f"{label}: one component")
    for t in triggers:
        r.check(t.get("component") in comps, f"{label}: trigger {t.get('route')} names a declared component")
    r.check(any(t.get("route") == "/..." for t in triggers), f"{label}: route /... gates every path")
    env = config_rs_env_names()
    for cid, c in comps.items():
        where = f"{label}: component {cid}"
        cvars = c.get("variables", {})
        unknown = [n for n in cvars if n.upper() not in env]
        r.check(not unknown, f"{where}: every setting is a TIP_* name src/settings.rs declares "
                             f"(unknown: {unknown or 'none'})")
        refs_of = {n: re.findall(r"\{\{\s*([a-z][a-z0-9_]*)\s*\}\}", v) for n, v in cvars.items()}
        for name, value in cvars.items():
            if (name, value) == GATE_CLIENT_HEADER:
                continue
            r.check(bool(refs_of[name]) and all(x in app_vars for x in refs_of[name]),
                    f"{where}: variable {name} = {value!r} refers to declared application variables")
        r.check(cvars.get(GATE_CLIENT_HEADER[0]) == GATE_CLIENT_HEADER[1],
                f"{where}: {GATE_CLIENT_HEADER[0]} is {GATE_CLIENT_HEADER[1]!r} (Spin sets that header itself)")
        key_src = refs_of.get(KEY, [])
        kv = app_vars.get(key_src[0], {}) if key_src else {}
        r.check(kv.get("secret") is True and kv.get("required") is True and "default" not in kv,
                f"{where}: {KEY} comes from a secret, required application variable with no default")
        origin_src = refs_of.get(GATE_ORIGIN, [])
        origin_default = app_vars.get(origin_src[0], {}).get("default", "") if origin_src else ""
        if not r.check(bool(re.match(r"^https?://[^/]", origin_default)),
                       f"{where}: {GATE_ORIGIN} comes from a variable whose default is an http(s) URL"):
            continue
        hosts = c.get("allowed_outbound_hosts", [])
        wanted = {origin(d) for d in default_base_urls()} | {origin(origin_default)}
        r.check(set(hosts) == wanted, f"{where}: allowed_outbound_hosts is the default base URLs and the origin "
                                      f"{origin(origin_default)} (want {sorted(wanted)}, have {sorted(hosts)})")
        stores = c.get("key_value_stores", [])
        bucket = opened_bucket(r, cvars, app_vars, where)
        if bucket is not None:
            r.check(bucket in stores, f"{where}: key_value_stores {stores} grants the store the gate opens ({bucket!r})")
        build_cfg = c.get("build", {})
        workdir = (SPIN_GATE_TOML.parent / build_cfg.get("workdir", ".")).resolve()
        r.check(workdir == ROOT, f"{where}: build workdir is the repository root")
        cmd = build_cfg.get("command", "")
        r.check(isinstance(cmd, str) and cmd.split() == ["cargo", "build", *GATE_BUILD_ARGS],
                f"{where}: build command is `cargo build {' '.join(GATE_BUILD_ARGS)}`")
        src = c.get("source")
        r.check(isinstance(src, str) and (SPIN_GATE_TOML.parent / src).resolve() == ROOT / GATE_ARTIFACT,
                f"{where}: source {src} is the build's artifact {GATE_ARTIFACT} (relative to spin-gate/spin.toml)")


def opened_bucket(r: Report, settings: dict, app_vars: dict, where: str) -> str | None:
    """The bucket the component opens first: the value of its tip_store_bucket
    setting (a spin.toml component variable, resolved through the application
    variable it refers to), `default` when that is unset or empty."""
    value = settings.get(STORE_SETTING)
    if value is None:
        return DEFAULT_BUCKET
    refs = re.findall(r"\{\{\s*([a-z][a-z0-9_]*)\s*\}\}", value)
    if refs:
        var = app_vars.get(refs[0], {})
        if "default" not in var:
            r.warn(f"{where}: {STORE_SETTING} comes from a variable without a default; "
                   f"its store label is not checked")
            return None
        value = re.sub(r"\{\{[^}]*\}\}", lambda _: var["default"], value)
    return value or DEFAULT_BUCKET


def spin_store_labels(spin: dict) -> list[str]:
    return sorted({label for c in spin.get("component", {}).values() for label in c.get("key_value_stores", [])})


def check_spin_runtime_config(r: Report, spin: dict) -> dict:
    """deploy/spin/runtime-config.toml: every store label spin.toml grants is a
    Redis store, so that every Spin process (and replica) shares it."""
    if not r.check(SPIN_RUNTIME_CONFIG.is_file(), f"{rel(SPIN_RUNTIME_CONFIG)} exists"):
        return {}
    with SPIN_RUNTIME_CONFIG.open("rb") as f:
        try:
            rc = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            r.fail(f"runtime-config.toml: not TOML: {e}")
            return {}
    r.ok("runtime-config.toml: TOML")
    schema = json.loads(SPIN_RUNTIME_SCHEMA.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(rc), key=lambda e: list(e.path))
    for e in errors:
        r.fail(f"runtime-config.toml: schema: {'/'.join(map(str, e.path)) or '(top)'}: {e.message}")
    if not errors:
        r.ok(f"runtime-config.toml: fits {rel(SPIN_RUNTIME_SCHEMA)}")
    stores = rc.get("key_value_store", {})
    labels = spin_store_labels(spin)
    r.check(bool(labels), f"spin.toml: a component has key_value_stores (the answer store; labels {labels})")
    for label in labels:
        r.check(stores.get(label, {}).get("type") == "redis",
                f"runtime-config.toml: store {label!r} of spin.toml is a Redis store (shared by every process)")
    unused = sorted(set(stores) - set(labels))
    r.check(not unused, f"runtime-config.toml: configures only stores spin.toml grants (others: {unused or 'none'})")
    r.check(f"--runtime-config-file {SPIN_RUNTIME_CONFIG.name}" in notes_text(),
            f"runtime-config.toml: deploy/README.md runs spin up --runtime-config-file {SPIN_RUNTIME_CONFIG.name}")
    return rc


def workspace_has(package: str) -> bool | None:
    try:
        out = subprocess.run(
            ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"note  cargo metadata failed: {e}", file=sys.stderr)
        return None
    return any(p["name"] == package for p in json.loads(out)["packages"])


def check_artifact(r: Report, build: bool, engine: str, linked: set[str] | None,
                   package: str = SERVICE_PACKAGE, artifact: Path = ARTIFACT) -> None:
    """With --build: build `package` (the service, or the gate) for `engine` as
    deploy/README.md says and look inside it. `linked`: for wasmCloud, the
    wasi:keyvalue interfaces the wadm link carries."""
    args = ["--profile", "component", "--target", "wasm32-wasip2", "-p", package,
            "--features", ENGINE_FEATURE[engine]]
    if not build:
        r.skip(f"artifact {artifact} for {engine}: not built (run with --build)")
        return
    has = workspace_has(package)
    if not has:
        r.skip(f"artifact: package {package} is not in the workspace yet, nothing to build")
        return
    r.check(f"cargo build {' '.join(args)}" in notes_text(),
            f"artifact: deploy/README.md gives the {engine} build command")
    res = subprocess.run(["cargo", "build", "--locked", "-q", *args], cwd=ROOT)
    if not r.check(res.returncode == 0, f"artifact: cargo build {' '.join(args)}"):
        return
    # spin build writes to <repo>/target; cargo honours CARGO_TARGET_DIR when set.
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    path = target / artifact.relative_to("target")
    if not r.check(path.is_file(), f"artifact: {path} exists after the build"):
        return
    try:
        imports, exports = component_imports_exports(path.read_bytes())
    except (ValueError, IndexError) as e:
        r.fail(f"artifact: not a WebAssembly component, or one this reader does not parse: {e}")
        return
    r.ok(f"artifact: a WebAssembly component; exports {exports}")
    r.check(any(e.startswith("wasi:http/incoming-handler@0.2.") for e in exports),
            "artifact: exports wasi:http/incoming-handler@0.2.x")
    for want in ("wasi:http/outgoing-handler@0.2.", "wasi:config/store@"):
        r.check(any(i.startswith(want) for i in imports), f"artifact: imports {want}")
    # Pre-release interface versions only link to exactly the same version
    # (wasmtime matches 0.2.x patch versions, never -draft/-rc ones).
    served = CONFIG_STORE_SERVED[engine]
    config = [i for i in imports if i.startswith("wasi:config/store@")]
    r.check(config == [served], f"artifact: the {engine} build imports {served}, which {engine} serves "
                                f"(imports {config})")
    check_keyvalue_imports(r, engine, imports, linked)
    odd = [i for i in imports if not i.startswith(HOST_PROVIDED)]
    r.check(not odd, f"artifact: imports nothing beyond wasi:io, clocks, cli, random, http, config/store, keyvalue "
                     f"({len(imports)} imports; others: {odd or 'none'})")


def check_keyvalue_imports(r: Report, engine: str, imports: list[str], linked: set[str] | None) -> None:
    """The wasi:keyvalue imports of the `engine` build: exactly the version that
    engine serves (pre-releases link only at the exact version), interfaces it
    serves, and on wasmCloud only interfaces the wadm link carries (the host
    accepts any bucket name and fails the call at the first use of an interface
    without a link)."""
    kv = [i for i in imports if i.startswith("wasi:keyvalue/")]
    if not r.check(bool(kv), f"artifact: the {engine} build imports wasi:keyvalue (the answer store)"):
        return
    version, served = KEYVALUE_SERVED[engine]
    names = {i.split("/", 1)[1].split("@", 1)[0] for i in kv}
    versions = sorted({i.split("@", 1)[1] if "@" in i else "" for i in kv})
    r.check(versions == [version], f"artifact: the {engine} build imports wasi:keyvalue@{version}, which {engine} "
                                   f"serves (imports {sorted(kv)})")
    r.check(names <= served, f"artifact: the {engine} build imports only wasi:keyvalue interfaces {engine} serves "
                             f"({sorted(served)}; imports {sorted(names)})")
    r.check(KEYVALUE_USED <= names, f"artifact: the {engine} build imports wasi:keyvalue {sorted(KEYVALUE_USED)}")
    if linked is not None:
        r.check(names <= linked, f"artifact: wadm.yaml's wasi:keyvalue link carries every interface the {engine} "
                                 f"build imports ({sorted(names)}; link: {sorted(linked)})")


# Interfaces both engines' hosts provide to an HTTP component.
HOST_PROVIDED = ("wasi:io/", "wasi:clocks/", "wasi:cli/", "wasi:random/", "wasi:http/",
                 "wasi:config/store@", "wasi:keyvalue/")
# The wasi:config/store version each engine serves, as their sources say (not
# run here): the world WIT of Spin 3.5 (spin@3.5.0), and wasmCloud 1.x's host
# since its WASI 0.2.2 update. (wasmtime-wasi-config 48, behind host-harness's
# `serve`, serves 0.2.0-rc.1.)
CONFIG_STORE_SERVED = {
    "Spin 3": "wasi:config/store@0.2.0-draft-2024-09-27",
    "wasmCloud 1": "wasi:config/store@0.2.0-draft",
}


def component_imports_exports(data: bytes) -> tuple[list[str], list[str]]:
    """The top-level import and export names of a WebAssembly component binary
    (component model binary format: import section 10, export section 11)."""
    if data[:8] != b"\0asm\x0d\x00\x01\x00":
        raise ValueError("no component header (a core module, or not wasm)")

    def u32(i: int) -> tuple[int, int]:
        value = shift = 0
        while True:
            byte = data[i]
            i += 1
            value |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                return value, i

    def name(i: int) -> tuple[str, int]:
        tag = data[i]
        n, i = u32(i + 1)
        text = data[i:i + n].decode()
        i += n
        if tag == 0x01:  # a version suffix follows
            n, i = u32(i)
            i += n
        elif tag != 0x00:
            raise ValueError(f"name tag {tag:#x}")
        return text, i

    def externdesc(i: int) -> int:
        kind = data[i]
        i += 1
        if kind == 0x00:  # core module: 0x11 typeidx
            return u32(i + 1)[1]
        if kind in (0x01, 0x04, 0x05):  # func, component, instance: typeidx
            return u32(i)[1]
        if kind == 0x02:  # value bound: tag, index or type
            return u32(i + 1)[1]
        if kind == 0x03:  # type bound: eq typeidx, or sub resource
            return u32(i + 1)[1] if data[i] == 0x00 else i + 1
        raise ValueError(f"externdesc kind {kind:#x}")

    imports: list[str] = []
    exports: list[str] = []
    i = 8
    while i < len(data):
        section = data[i]
        size, i = u32(i + 1)
        end = i + size
        if section in (10, 11):
            count, j = u32(i)
            for _ in range(count):
                text, j = name(j)
                if section == 10:
                    j = externdesc(j)
                    imports.append(text)
                else:
                    j = u32(j + 2 if data[j] == 0x00 else j + 1)[1]  # sortidx
                    if data[j] == 0x01:
                        j = externdesc(j + 1)
                    else:
                        j += 1
                    exports.append(text)
        i = end
    return imports, exports


def readme_secrets() -> dict[str, set[str]]:
    """The Secrets deploy/README.md creates: name -> the keys of its
    `kubectl create secret generic NAME --from-literal=KEY=...` command."""
    text = re.sub(r"\\\n\s*", " ", notes_text())
    out: dict[str, set[str]] = {}
    for m in re.finditer(r"kubectl create secret generic ([a-z0-9.-]+)([^\n]*)", text):
        out.setdefault(m.group(1), set()).update(re.findall(r"--from-literal=([A-Za-z0-9._-]+)=", m.group(2)))
    return out


def secret_refs(node) -> list[dict]:
    """Every secretKeyRef in a parsed YAML tree."""
    if isinstance(node, dict):
        found = [node["secretKeyRef"]] if isinstance(node.get("secretKeyRef"), dict) else []
        return found + [x for v in node.values() for x in secret_refs(v)]
    if isinstance(node, list):
        return [x for v in node for x in secret_refs(v)]
    return []


# SpinApp v1alpha1 runtimeConfig (spin-operator v0.6.1,
# api/v1alpha1/spinapp_types.go and config/crd/bases/core.spinkube.dev_spinapps.yaml):
# the operator renders each keyValueStores entry as [key_value_store.<name>]
# with `type` and one key per option (internal/runtimeconfig/types.go).
RUNTIME_CONFIG_FIELDS = {"loadFromSecret", "sqliteDatabases", "keyValueStores", "llmCompute"}
KV_STORE_FIELDS = {"name", "type", "options"}
OPTION_FIELDS = {"name", "value", "valueFrom"}


def check_spinapp_store(r: Report, spec: dict, spin: dict, rc: dict) -> None:
    """The SpinApp's runtimeConfig gives the pods the stores runtime-config.toml
    gives `spin up`: same labels, same types, same option names."""
    rcfg = spec.get("runtimeConfig")
    labels = spin_store_labels(spin)
    if not r.check(isinstance(rcfg, dict), "spinapp.yaml: runtimeConfig is set (the answer store)"):
        return
    r.check(set(rcfg) <= RUNTIME_CONFIG_FIELDS,
            f"spinapp.yaml: runtimeConfig keys are SpinApp fields (unknown: {sorted(set(rcfg) - RUNTIME_CONFIG_FIELDS) or 'none'})")
    r.check("loadFromSecret" not in rcfg,
            "spinapp.yaml: no runtimeConfig.loadFromSecret (with it the operator ignores keyValueStores)")
    entries = rcfg.get("keyValueStores") or []
    names = [e.get("name") for e in entries]
    r.check(sorted(names) == labels and len(set(names)) == len(names),
            f"spinapp.yaml: runtimeConfig.keyValueStores names each of spin.toml's store labels {labels} once ({names})")
    want = rc.get("key_value_store", {})
    for e in entries:
        name = e.get("name")
        where = f"spinapp.yaml: key-value store {name!r}"
        r.check(set(e) <= KV_STORE_FIELDS and "type" in e,
                f"{where}: has name, type and options only (keys: {sorted(e)})")
        r.check(e.get("type") == want.get(name, {}).get("type") == "redis",
                f"{where}: type redis, as in runtime-config.toml")
        opts = e.get("options") or []
        for o in opts:
            r.check(set(o) <= OPTION_FIELDS and "name" in o and (("value" in o) != ("valueFrom" in o)),
                    f"{where}: option {o.get('name')!r} has a name and exactly one of value/valueFrom")
        onames = sorted(o.get("name") for o in opts)
        wnames = sorted(set(want.get(name, {})) - {"type"})
        r.check(onames == wnames, f"{where}: options {onames} are runtime-config.toml's keys {wnames}")
        url = next((o for o in opts if o.get("name") == "url"), {})
        r.check("secretKeyRef" in url.get("valueFrom", {}),
                f"{where}: the Redis URL comes from a Secret (it may hold a password)")
        if "value" in url:
            r.check(bool(REDIS_URL.match(url["value"])), f"{where}: url is a redis:// or rediss:// URL")


def check_spinapp(r: Report, spin: dict, rc: dict) -> None:
    docs = [d for d in yaml.safe_load_all(SPINAPP.read_text()) if d]
    by_kind = {d.get("kind"): d for d in docs}
    app, hpa = by_kind.get("SpinApp"), by_kind.get("HorizontalPodAutoscaler")
    if not r.check(app is not None and app.get("apiVersion") == "core.spinkube.dev/v1alpha1",
                   "spinapp.yaml: a core.spinkube.dev/v1alpha1 SpinApp"):
        return
    spec = app.get("spec", {})
    known = {"image", "executor", "replicas", "enableAutoscaling", "resources", "variables", "checks",
             "components", "deploymentAnnotations", "podAnnotations", "podLabels", "imagePullSecrets",
             "invocationLimits", "runtimeConfig", "serviceAnnotations", "volumes", "volumeMounts"}
    r.check(set(spec) <= known, f"spinapp.yaml: spec keys are SpinApp fields (unknown: {sorted(set(spec) - known) or 'none'})")
    auto = spec.get("enableAutoscaling") is True
    r.check(not (auto and "replicas" in spec), "spinapp.yaml: replicas is not set together with enableAutoscaling")
    r.check(auto or isinstance(spec.get("replicas"), int), "spinapp.yaml: replicas set, or autoscaling on")
    app_vars = spin.get("variables", {})
    vars_ = {v.get("name"): v for v in spec.get("variables", [])}
    unknown = [n for n in vars_ if n not in app_vars]
    r.check(not unknown, f"spinapp.yaml: variables are spin.toml's application variables (unknown: {unknown or 'none'})")
    required = [n for n, v in app_vars.items() if v.get("required")]
    r.check(all(n in vars_ for n in required), f"spinapp.yaml: sets every required variable {required}")
    for n, v in vars_.items():
        r.check(("value" in v) != ("valueFrom" in v), f"spinapp.yaml: variable {n} has exactly one of value/valueFrom")
    r.check("secretKeyRef" in vars_.get(KEY, {}).get("valueFrom", {}), f"spinapp.yaml: {KEY} comes from a Secret")
    for probe in ("readiness", "liveness"):
        path = spec.get("checks", {}).get(probe, {}).get("httpGet", {}).get("path")
        r.check(path == "/healthz", f"spinapp.yaml: {probe} probe is GET /healthz")
    check_spinapp_store(r, spec, spin, rc)
    made = readme_secrets()
    for ref in secret_refs(spec):
        r.check(ref.get("key") in made.get(ref.get("name"), set()),
                f"spinapp.yaml: Secret {ref.get('name')} key {ref.get('key')} is created by deploy/README.md's "
                f"kubectl create secret generic")
    image = spec.get("image", "")
    r.check(f"spin registry push {image}" in notes_text(),
            f"spinapp.yaml: image {image} is what deploy/README.md pushes with spin registry push")
    if auto:
        ok = (hpa is not None and hpa.get("apiVersion") == "autoscaling/v2"
              and hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                                    "name": app["metadata"]["name"]}
              and 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"])
        r.check(ok, "spinapp.yaml: an autoscaling/v2 HPA scales the SpinApp's Deployment")
        r.check("cpu" in spec.get("resources", {}).get("requests", {}),
                "spinapp.yaml: CPU requests set (the HPA's utilisation is relative to them)")


# ---------------------------------------------------------------- wasmCloud


def check_wadm(r: Report, wadm_check: str | None, wadm_schema: str | None) -> set[str] | None:
    """Returns the wasi:keyvalue interfaces the component's link carries."""
    if wadm_check:
        res = subprocess.run([wadm_check, "validate", str(WADM)], capture_output=True, text=True)
        for line in (res.stdout + res.stderr).strip().splitlines():
            print(f"      {line}")
        r.check(res.returncode == 0, "wadm.yaml: wadm's own validation (wadm-types) passes")
    else:
        r.skip("wadm.yaml: wadm's own validation (pass --wadm-check deploy/wadm-check binary)")
    m = yaml.safe_load(WADM.read_text())
    if wadm_schema:
        schema = json.loads(Path(wadm_schema).read_text())
        errors = list(jsonschema.Draft7Validator(schema).iter_errors(m))
        for e in errors:
            r.fail(f"wadm.yaml: schema: {'/'.join(map(str, e.path)) or '(top)'}: {e.message}")
        if not errors:
            r.ok("wadm.yaml: fits the JSON schema wadm-types derives for its manifest")
    else:
        r.skip("wadm.yaml: JSON schema (pass --wadm-schema FILE from `wadm-check schema`)")

    comps = {c["name"]: c for c in m["spec"]["components"]}
    mine = [c for c in comps.values() if c.get("type") == "component"]
    if not r.check(len(mine) == 1, "wadm.yaml: one wasm component"):
        return None
    c = mine[0]
    props = c["properties"]
    keys: list[str] = []
    external = []
    for cfg in props.get("config", []):
        if "properties" in cfg:
            keys += list(cfg["properties"])
        else:
            external.append(cfg["name"])
    check_settings_names(r, keys, "wadm.yaml: component config")
    r.check(KEY not in keys, f"wadm.yaml: {KEY} is not in the file")
    notes = notes_text()
    r.check(any(f"wash config put {n} {KEY}=" in notes for n in external),
            f"wadm.yaml: the key's config {external} is created out of band by deploy/README.md's wash config put")
    r.check(set(keys) - {STORE_SETTING} | {KEY} == set(SETTINGS), f"wadm.yaml: every setting of {SETTINGS} has its place")

    def links(comp: dict) -> list[dict]:
        return [t["properties"] for t in comp.get("traits") or [] if t["type"] == "link"]

    out = [l for l in links(c) if (l["namespace"], l["package"]) == ("wasi", "http")
           and "outgoing-handler" in l["interfaces"]]
    r.check(len(out) == 1 and comps.get(out[0]["target"]["name"], {}).get("type") == "capability",
            "wadm.yaml: the component links wasi:http/outgoing-handler to a capability provider")
    inc = [(n, l) for n, comp in comps.items() for l in links(comp)
           if "incoming-handler" in l["interfaces"] and l["target"]["name"] == c["name"]]
    r.check(len(inc) == 1, "wadm.yaml: a provider links wasi:http/incoming-handler to the component")
    for name, comp in comps.items():
        scalers = [t for t in comp.get("traits") or [] if t["type"] in ("spreadscaler", "daemonscaler")]
        r.check(len(scalers) == 1, f"wadm.yaml: {name} has one scaler ({[s['type'] for s in scalers]})")
    image = props.get("image", "")
    r.check(f"wash push {image} {ARTIFACT}" in notes,
            f"wadm.yaml: image {image} is what deploy/README.md pushes from {ARTIFACT}")
    return check_wadm_store(r, comps, links(c), notes)


def check_wadm_store(r: Report, comps: dict, component_links: list[dict], notes: str) -> set[str] | None:
    """The answer store on wasmCloud: a wasi:keyvalue link from the component
    to the keyvalue-redis provider, the Redis URL in the link's target config."""
    kv = [l for l in component_links if (l.get("namespace"), l.get("package")) == ("wasi", "keyvalue")]
    if not r.check(len(kv) == 1, "wadm.yaml: the component has one wasi:keyvalue link (the answer store)"):
        return None
    link = kv[0]
    interfaces = set(link.get("interfaces", []))
    served = KEYVALUE_SERVED["wasmCloud 1"][1]
    r.check(KEYVALUE_USED <= interfaces <= served,
            f"wadm.yaml: the keyvalue link carries {sorted(KEYVALUE_USED)} (and at most {sorted(served)}): "
            f"{sorted(interfaces)}")
    # The component cannot pick a link name: it uses the link named `default`.
    r.check(link.get("name", "default") == "default", "wadm.yaml: the keyvalue link is the default-named link")
    target = link.get("target", {})
    provider = comps.get(target.get("name"), {})
    image = provider.get("properties", {}).get("image", "")
    r.check(provider.get("type") == "capability" and image == f"{KEYVALUE_REDIS_IMAGE}:{KEYVALUE_REDIS_VERSION}",
            f"wadm.yaml: the keyvalue link targets the keyvalue-redis provider {KEYVALUE_REDIS_VERSION} ({image})")
    # keyvalue-redis 0.30.0 reads a link's URL from its target config, any
    # case of `url` (crates/provider-keyvalue-redis/src/lib.rs,
    # receive_link_config_as_target); a URL given only as a link secret is not
    # read, and the provider's default connection (127.0.0.1) is used instead.
    urls = []
    for cfg in target.get("config", []):
        if cfg.get("properties") is None:
            put = {k.lower() for k in re.findall(rf"wash config put {re.escape(cfg['name'])} (\w+)=", notes)}
            r.check(bool(put), f"wadm.yaml: keyvalue link config {cfg['name']} is created out of band by "
                               f"deploy/README.md's wash config put")
            urls += [(f"{cfg['name']} (out of band)", None) for k in put if k == "url"]
        else:
            urls += [(cfg["name"], v) for k, v in cfg["properties"].items() if k.lower() == "url"]
    r.check(len(urls) == 1, f"wadm.yaml: the keyvalue link's target config sets the Redis url once "
                            f"({[u[0] for u in urls]})")
    for name, value in urls:
        if value is not None:
            r.check(isinstance(value, str) and bool(REDIS_URL.match(value)),
                    f"wadm.yaml: config {name}: url is a redis:// or rediss:// URL")
    secret_urls = [s.get("name") for s in target.get("secrets", []) if s.get("name", "").lower() == "url"]
    r.check(not secret_urls, "wadm.yaml: the Redis URL is not a link secret (keyvalue-redis 0.30.0 does not read it)")
    return interfaces


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", action="store_true", help="build the service component and inspect it")
    ap.add_argument("--wadm-check", metavar="BIN", help="the deploy/wadm-check binary")
    ap.add_argument("--wadm-schema", metavar="FILE", help="output of `wadm-check schema`")
    args = ap.parse_args()
    r = Report()
    spin = check_spin(r)
    rc = check_spin_runtime_config(r, spin)
    check_spinapp(r, spin, rc)
    linked = check_wadm(r, args.wadm_check, args.wadm_schema)
    check_spin_gate(r)
    for engine in CONFIG_STORE_SERVED:
        check_artifact(r, args.build, engine, linked if engine == "wasmCloud 1" else None)
    check_artifact(r, args.build, "Spin 3", None, GATE_PACKAGE, GATE_ARTIFACT)
    if r.warnings:
        print(f"deploy: {r.warnings} warnings (WARN lines above)")
    print(f"deploy: {r.passed} passed, {r.failures} failed, {r.skipped} skipped")
    return 1 if r.failures else 0


if __name__ == "__main__":
    sys.exit(main())
