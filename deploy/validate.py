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
                unusual).
  spinapp.yaml  SpinApp + HorizontalPodAutoscaler: the variables are spin.toml's, the
                required ones are set, the key comes from a Secret, the autoscaler targets
                the SpinApp's Deployment, the image is the one deploy/README.md pushes.
  wadm.yaml     wadm's own validation (the wadm-types crate, via deploy/wadm-check) when
                --wadm-check BIN is given, and the JSON schema wadm-types derives (--wadm-schema
                FILE); then: config keys are the service's settings, the key is in no file,
                the http links are there, the image is the one deploy/README.md pushes.

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

SERVICE_PACKAGE = "tip-enrich-service"
ARTIFACT = Path("target/wasm32-wasip2/component/tip_enrich_service.wasm")
BUILD_ARGS = ["--profile", "component", "--target", "wasm32-wasip2", "-p", SERVICE_PACKAGE]
# Each engine's build of the service: the cargo feature that picks the
# wasi:config/store version it serves (service/Cargo.toml, wit/enrich.wit).
ENGINE_FEATURE = {"Spin 3": "spin", "wasmCloud 1": "wasmcloud"}
SPIN_BUILD_ARGS = [*BUILD_ARGS, "--features", ENGINE_FEATURE["Spin 3"]]
# The settings the deployment examples set; the component reads each from
# wasi:config/store key tip_x, then from environment variable TIP_X.
SETTINGS = ["tip_api_key", "tip_api", "tip_base_url", "tip_auth", "tip_timeout_ms"]
KEY = "tip_api_key"


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
    r.check(set(names) <= set(SETTINGS), f"{where}: settings are among {SETTINGS}")


# ---------------------------------------------------------------- Spin


def check_spin(r: Report, build: bool) -> dict:
    with SPIN_TOML.open("rb") as f:
        try:
            m = tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            r.fail(f"spin.toml: not TOML: {e}")
            return {}
    r.ok("spin.toml: TOML")
    schema = json.loads(SPIN_SCHEMA.read_text())
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(m), key=lambda e: list(e.path))
    for e in errors:
        r.fail(f"spin.toml: schema: {'/'.join(map(str, e.path)) or '(top)'}: {e.message}")
    if not errors:
        r.ok(f"spin.toml: fits {rel(SPIN_SCHEMA)}")

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
        r.check(sorted(cvars) == sorted(SETTINGS), f"{where}: sets all of {SETTINGS}")
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
            for engine in CONFIG_STORE_SERVED:
                check_artifact(r, build, engine)
    return m


def workspace_has_service() -> bool | None:
    try:
        out = subprocess.run(
            ["cargo", "metadata", "--no-deps", "--format-version", "1", "--offline"],
            cwd=ROOT, capture_output=True, text=True, check=True,
        ).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        print(f"note  cargo metadata failed: {e}", file=sys.stderr)
        return None
    return any(p["name"] == SERVICE_PACKAGE for p in json.loads(out)["packages"])


def check_artifact(r: Report, build: bool, engine: str) -> None:
    """With --build: build the service component for `engine` as deploy/README.md
    says and look inside it."""
    args = [*BUILD_ARGS, "--features", ENGINE_FEATURE[engine]]
    if not build:
        r.skip(f"artifact {ARTIFACT} for {engine}: not built (run with --build)")
        return
    has = workspace_has_service()
    if not has:
        r.skip(f"artifact: package {SERVICE_PACKAGE} is not in the workspace yet, nothing to build")
        return
    r.check(f"cargo build {' '.join(args)}" in notes_text(),
            f"artifact: deploy/README.md gives the {engine} build command")
    res = subprocess.run(["cargo", "build", "--locked", "-q", *args], cwd=ROOT)
    if not r.check(res.returncode == 0, f"artifact: cargo build {' '.join(args)}"):
        return
    # spin build writes to <repo>/target; cargo honours CARGO_TARGET_DIR when set.
    target = Path(os.environ.get("CARGO_TARGET_DIR", ROOT / "target"))
    path = target / ARTIFACT.relative_to("target")
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
    odd = [i for i in imports if not i.startswith(HOST_PROVIDED)]
    r.check(not odd, f"artifact: imports nothing beyond wasi:io, clocks, cli, random, http, config/store "
                     f"({len(imports)} imports; others: {odd or 'none'})")


# Interfaces both engines' hosts provide to an HTTP component.
HOST_PROVIDED = ("wasi:io/", "wasi:clocks/", "wasi:cli/", "wasi:random/", "wasi:http/",
                 "wasi:config/store@")
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


def check_spinapp(r: Report, spin: dict) -> None:
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


def check_wadm(r: Report, wadm_check: str | None, wadm_schema: str | None) -> None:
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
        return
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
    r.check(set(keys) | {KEY} == set(SETTINGS), f"wadm.yaml: every setting of {SETTINGS} has its place")

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


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--build", action="store_true", help="build the service component and inspect it")
    ap.add_argument("--wadm-check", metavar="BIN", help="the deploy/wadm-check binary")
    ap.add_argument("--wadm-schema", metavar="FILE", help="output of `wadm-check schema`")
    args = ap.parse_args()
    r = Report()
    spin = check_spin(r, args.build)
    check_spinapp(r, spin)
    check_wadm(r, args.wadm_check, args.wadm_schema)
    if r.warnings:
        print(f"deploy: {r.warnings} warnings (WARN lines above)")
    print(f"deploy: {r.passed} passed, {r.failures} failed, {r.skipped} skipped")
    return 1 if r.failures else 0


if __name__ == "__main__":
    sys.exit(main())
