"""Enrich an IP address with the tip-enrich WebAssembly component, from Python.

Paste `enrich_ip` (with its imports and the helpers below it) into a Python
SOAR playbook: a Cortex XSOAR automation, a Splunk SOAR custom function. It
needs only `pip install wasmtime==50.0.1` and the file `tip_enrich_component.wasm`.

    result = enrich_ip("45.9.148.108", api_key=demisto.params()["api_key"])
    if "error" in result:          # {"ip", "error": {"kind", "message", ...}}
        ...                        # kind: unauthorized, rate-limited, invalid-ip, ...
    elif result["verdict"] == "malicious":
        ...

The result has the fields of a `tip-enrich` CLI line (see the README), in the
same order. Run as a script, it prints one JSON line per address, byte for
byte what the CLI prints for it, with TIP_API_KEY and the other TIP_*
settings taken from the environment:

    TIP_API_KEY=... python enrich_playbook.py 45.9.148.108
"""

import functools
import json
import os
import sys

from wasmtime import Engine, Store, WasiConfig
from wasmtime.component import Component, Linker, Variant

WASM = os.environ.get("TIP_ENRICH_WASM", "tip_enrich_component.wasm")
INTERFACE = "tip:enrich/enrich-ip@0.7.0"
# An error line echoes at most this many characters of its input (the CLI's).
MAX_ECHO_CHARS = 128
# The fields of a verdict line, in the CLI's order.
FIELDS = (
    "ip", "zone", "threat_score", "has_apt", "related_report_ids", "suspicious",
    "verdict", "found", "source", "fetched_at", "status", "country_code", "as_number",
    "as_organization", "network_name", "categories", "hits_count", "first_seen",
    "related_reports", "day_requests", "day_quota",
)


class _Unset:
    """The `settings` record with every field unset (WAVE `{:}`): every field
    is optional, and the component reads the TIP_* environment instead."""

    def __getattr__(self, name):
        return None


@functools.lru_cache(maxsize=None)
def _load(wasm_path):
    # Compiling takes a few hundred ms: do it once per process.
    engine = Engine()
    linker = Linker(engine)
    linker.add_wasip2()
    linker.add_wasi_http()  # outgoing HTTP(S) straight from the component
    return engine, linker, Component.from_file(engine, wasm_path)


def enrich_ip(ip, api_key, base_url=None, api="tip", timeout_ms=None, wasm_path=WASM):
    """Verdict on one IP address as a dict, or {"ip", "error": {...}}."""
    engine, linker, component = _load(wasm_path)
    env = {"TIP_API_KEY": api_key, "TIP_API": api}
    if base_url:
        env["TIP_BASE_URL"] = base_url
    if timeout_ms:
        env["TIP_TIMEOUT_MS"] = str(timeout_ms)
    wasi = WasiConfig()
    wasi.env = list(env.items())  # the component's only view of the settings
    store = Store(engine)
    store.set_wasi(wasi)
    store.set_wasi_http()
    instance = linker.instantiate(store, component)
    iface = instance.get_export_index(store, INTERFACE)
    enrich = instance.get_func(store, instance.get_export_index(store, "enrich", iface))
    result = enrich(store, ip, _Unset())  # result<verdict, enrich-error>
    enrich.post_return(store)
    # wasmtime-py returns the ok value (a Record) as is, and the err value as
    # it is: the enrich-error Variant. A trap raises WasmtimeError instead.
    if isinstance(result, Variant):
        return {"ip": _echo(ip), "error": _error(result)}
    return _verdict(result)


def _echo(text):
    return text if len(text) <= MAX_ECHO_CHARS else text[:MAX_ECHO_CHARS] + "\u2026"


def to_line(result):
    """A result as the CLI writes it: compact, UTF-8, keys in its order."""
    return json.dumps(result, separators=(",", ":"), ensure_ascii=False)


def _error(e):
    if isinstance(e.payload, str):
        return {"kind": e.tag, "message": e.payload}
    error = {"kind": e.tag, "message": e.payload.message}  # rate-limited, upstream
    if e.tag == "rate-limited":
        error["retry_after_secs"] = getattr(e.payload, "retry-after-secs")
    if e.tag == "upstream":
        error["status"] = e.payload.status
    return error


def _verdict(v):
    f = {k.replace("-", "_"): val for k, val in vars(v).items()}  # WIT names are kebab-case
    reports = [{"id": r.id, "title": r.title} for r in f.pop("related_reports")]
    quota = f.pop("quota")
    f.update(
        related_report_ids=[r["id"] for r in reports],
        related_reports=reports,
        day_requests=getattr(quota, "day-requests", None),
        day_quota=getattr(quota, "day-quota", None),
    )
    line = {k: f[k] for k in FIELDS}
    if f["reserved_block"] is not None:
        line["reserved_block"] = f["reserved_block"]
    return line


if __name__ == "__main__":
    sys.stdout.reconfigure(encoding="utf-8")
    failed = False
    for arg in sys.argv[1:]:
        line = enrich_ip(
            arg,
            api_key=os.environ.get("TIP_API_KEY", ""),
            base_url=os.environ.get("TIP_BASE_URL"),
            api=os.environ.get("TIP_API", "tip"),
            timeout_ms=os.environ.get("TIP_TIMEOUT_MS"),
        )
        failed = failed or "error" in line
        print(to_line(line))
    sys.exit(1 if failed else 0)
