"""Checks tip-enrich's STIX 2.1 bundles with the OASIS reference library.

Reads JSON lines on stdin, each {"api": "tip"|"opentip", "verdict": <the
native line of an address>, "bundle": <the STIX line of the same answer>},
and checks every bundle:

- strictly with stix2 (`stix2.parse(..., allow_custom=False)`: no custom
  objects or properties), and each pattern with stix2-patterns;
- as raw JSON, since stix2 silently drops what STIX forbids: no null, no
  empty list, no empty object anywhere;
- against its verdict (README, "STIX"): the address object and its
  deterministic id as stix2 computes it, an indicator (and its based-on
  relationship) exactly for malicious and suspicious verdicts, otherwise a
  note, confidence = threat score, labels = categories, references to the
  portal page and each related report, created/modified at millisecond
  precision, valid_from = fetched_at for a stored answer.

Then it proves it can fail: broken copies of the first bundle with an
indicator and of the first with a note (an empty list, a null, a custom
property, a bad pattern, a wrong id, ...) must each be rejected.

Prints one summary line; on any failure, says which and exits 1.
"""

import copy
import json
import re
import sys

import stix2
from stix2patterns.validator import run_validator

TIP_PAGE = "https://tip.kaspersky.com/search?searchString={}"
OPENTIP_PAGE = "https://opentip.kaspersky.com/{}/"
REPORT_PAGE = "https://tip.kaspersky.com/reporting?id={}"
MILLIS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
TIMESTAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")
INDICATOR_TYPES = {"malicious": "malicious-activity", "suspicious": "anomalous-activity"}


class Bad(Exception):
    pass


def need(condition, message):
    if not condition:
        raise Bad(message)


def walk(value, at):
    """No null, empty list or empty object anywhere."""
    need(value is not None, f"null at {at}")
    if isinstance(value, list):
        need(value, f"empty list at {at}")
        for i, item in enumerate(value):
            walk(item, f"{at}[{i}]")
    elif isinstance(value, dict):
        need(value, f"empty object at {at}")
        for key, item in value.items():
            walk(item, f"{at}.{key}")


def one(by_type, kind):
    found = by_type.get(kind, [])
    need(len(found) == 1, f"want one {kind}, got {len(found)}")
    return found[0]


def page(api, ip):
    return (OPENTIP_PAGE if api == "opentip" else TIP_PAGE).format(ip)


def check_refs(obj, verdict, api):
    refs = obj.get("external_references", [])
    need(refs, f"{obj['type']}: no external_references")
    need(refs[0].get("url") == page(api, verdict["ip"]),
         f"{obj['type']}: first reference {refs[0]} is not the {api} page of {verdict['ip']}")
    reports = refs[1:]
    want = verdict.get("related_reports") or []
    need([r.get("external_id") for r in reports] == [r["id"] for r in want],
         f"{obj['type']}: report references {reports} are not {want}")
    for ref, report in zip(reports, want):
        need(ref.get("url") == REPORT_PAGE.format(report["id"]), f"report url {ref}")
        if report.get("title"):
            need(ref.get("description") == report["title"], f"report title {ref}")
        else:
            need("description" not in ref, f"report without a title has a description {ref}")


def check_labels(obj, verdict):
    categories = [c for c in verdict.get("categories") or [] if c]
    if categories:
        need(obj.get("labels") == categories,
             f"{obj['type']}: labels {obj.get('labels')} are not the categories {categories}")
    else:
        need("labels" not in obj, f"{obj['type']}: labels without categories")


def check(pair):
    api, verdict, bundle = pair["api"], pair["verdict"], pair["bundle"]
    need("error" not in verdict, "an error line has no bundle")
    walk(bundle, "bundle")
    text = json.dumps(bundle)
    try:
        parsed = stix2.parse(text, allow_custom=False)
    except Exception as e:  # stix2 raises many exception types
        raise Bad(f"stix2 rejects the bundle: {type(e).__name__}: {e}")
    need(parsed.type == "bundle", f"not a bundle: {parsed.type}")
    objects = bundle["objects"]
    ids = [o["id"] for o in objects]
    need(len(ids) == len(set(ids)), f"duplicate ids {ids}")
    by_type = {}
    for o in objects:
        need(re.match(r"^[a-z0-9-]+--[0-9a-f]{8}-[0-9a-f]{4}-5[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$", o["id"]),
             f"id {o['id']} is not a UUIDv5 id")
        need(o["id"].startswith(o["type"] + "--"), f"id {o['id']} of a {o['type']}")
        by_type.setdefault(o["type"], []).append(o)
        for key in ("created", "modified"):
            if key in o:
                need(MILLIS.match(o[key]), f"{o['type']}.{key} {o[key]!r} is not at millisecond precision")

    ip = verdict["ip"]
    family = "ipv6-addr" if ":" in ip else "ipv4-addr"
    identity = one(by_type, "identity")
    need(identity["identity_class"] == "organization", "the identity is not an organization")
    need(identity["name"] == "Kaspersky Threat Intelligence Portal", f"identity {identity}")
    address = one(by_type, family)
    need(address["value"] == ip, f"address {address['value']} for {ip}")
    sco = stix2.IPv6Address(value=ip) if family == "ipv6-addr" else stix2.IPv4Address(value=ip)
    need(address["id"] == sco.id, f"{family} id {address['id']}, stix2 derives {sco.id}")
    for o in objects:
        if o["type"] not in ("identity", family, "autonomous-system"):
            need(o.get("created_by_ref") == identity["id"], f"{o['type']} not created by the identity")

    relationships = {}
    for r in by_type.get("relationship", []):
        need(r["relationship_type"] not in relationships, f"two {r['relationship_type']} relationships")
        relationships[r["relationship_type"]] = r
    asn = verdict.get("as_number")
    system = set()
    if asn is not None:
        system = {"autonomous-system"}
        auto = one(by_type, "autonomous-system")
        need(auto["number"] == asn, f"autonomous-system number {auto['number']}, the verdict says {asn}")
        need(auto["id"] == stix2.AutonomousSystem(number=asn).id,
             f"autonomous-system id {auto['id']}, stix2 derives {stix2.AutonomousSystem(number=asn).id}")
        need(auto.get("name") == verdict.get("as_organization"),
             f"autonomous-system name {auto.get('name')!r}, the verdict says {verdict.get('as_organization')!r}")
        belongs = relationships.pop("belongs-to", None)
        need(belongs is not None, "no belongs-to relationship to the autonomous system")
        need((belongs["source_ref"], belongs["target_ref"]) == (address["id"], auto["id"]),
             f"belongs-to {belongs}")
    else:
        need("autonomous-system" not in by_type, "an autonomous system the verdict does not name")
        need("belongs-to" not in relationships, "a belongs-to without an autonomous system")
    if verdict.get("network_name"):
        described = [o for o in objects if o["type"] in ("indicator", "note")]
        need(all(f"Network: {verdict['network_name']}." in (o.get("description", "") + o.get("content", ""))
                 for o in described), "the network name is not in the indicator's or note's text")

    kind = INDICATOR_TYPES.get(verdict["verdict"])
    if kind:
        need(set(by_type) == {"identity", family, "indicator", "relationship"} | system,
             f"{verdict['verdict']}: objects {sorted(by_type)}")
        indicator = one(by_type, "indicator")
        relationship = relationships.pop("based-on", None)
        need(relationship is not None and not relationships, f"relationships {sorted(relationships)}")
        need(indicator["indicator_types"] == [kind], f"indicator_types {indicator['indicator_types']}")
        want = f"[{family}:value = '{ip}']"
        need(indicator["pattern"] == want, f"pattern {indicator['pattern']!r}, want {want!r}")
        need(indicator["pattern_type"] == "stix", "pattern_type")
        errors = run_validator(indicator["pattern"], stix_version="2.1")
        need(not errors, f"stix2-patterns rejects {indicator['pattern']!r}: {errors}")
        score = verdict.get("threat_score")
        if score is None:
            need("confidence" not in indicator, "confidence without a threat score")
        else:
            need(indicator.get("confidence") == score, f"confidence {indicator.get('confidence')} for score {score}")
        check_labels(indicator, verdict)
        check_refs(indicator, verdict, api)
        need(TIMESTAMP.match(indicator["valid_from"]), f"valid_from {indicator['valid_from']!r}")
        if verdict["source"] == "cache":
            need(indicator["valid_from"] == verdict["fetched_at"],
                 f"valid_from {indicator['valid_from']} of a stored answer fetched at {verdict['fetched_at']}")
        else:
            need(indicator["valid_from"] == indicator["created"], "valid_from of a fresh answer is not its created")
        need((relationship["relationship_type"], relationship["source_ref"], relationship["target_ref"])
             == ("based-on", indicator["id"], address["id"]), f"relationship {relationship}")
        return "indicator"
    need(not relationships, f"relationships {sorted(relationships)} on a {verdict['verdict']} answer")
    need(set(by_type) - {"relationship"} == {"identity", family, "note"} | system,
         f"{verdict['verdict']}: objects {sorted(by_type)} (an indicator only for malicious or suspicious)")
    note = one(by_type, "note")
    need(note["object_refs"] == [address["id"]], f"note refs {note['object_refs']}")
    need(note["abstract"] == f"Kaspersky TIP: {verdict['verdict']} (zone {verdict['zone']})", f"abstract {note['abstract']!r}")
    need(f"zone {verdict['zone']}, verdict {verdict['verdict']}" in note["content"], f"content {note['content']!r}")
    check_labels(note, verdict)
    check_refs(note, verdict, api)
    return "note"


def obj(pair, kind):
    return next(o for o in pair["bundle"]["objects"] if o["type"] == kind)


def mutations(pair, kind):
    """Broken copies of `pair`, each with what is wrong with it."""
    def broken(what, change):
        p = copy.deepcopy(pair)
        change(p)
        return what, p

    def family(p):
        return "ipv6-addr" if ":" in p["verdict"]["ip"] else "ipv4-addr"

    out = [
        broken("an empty labels list", lambda p: obj(p, kind).__setitem__("labels", [])),
        broken("a null property", lambda p: obj(p, kind).__setitem__("lang", None)),
        broken("a custom property", lambda p: obj(p, kind).__setitem__("x_tip_zone", "red")),
        broken("created at second precision", lambda p: obj(p, kind).__setitem__("created", "2026-01-01T00:00:00Z")),
        broken("a random address id", lambda p: obj(p, family(p)).__setitem__("id", family(p) + "--0b7d1b4e-6bd1-5b5e-8f1b-9a1c1a0b6f3e")),
        broken("another address", lambda p: obj(p, family(p)).__setitem__("value", "192.0.2.1")),
        broken("a missing portal reference", lambda p: obj(p, kind).__setitem__("external_references", obj(p, kind)["external_references"][1:] or [{"source_name": "x", "external_id": "y"}])),
        broken("a verdict of the other class", lambda p: p["verdict"].__setitem__("verdict", "benign" if kind == "indicator" else "malicious")),
        broken("the other portal", lambda p: p.__setitem__("api", "opentip" if p["api"] == "tip" else "tip")),
    ]
    if pair["verdict"].get("as_number") is not None:
        out += [
            broken("another AS number", lambda p: obj(p, "autonomous-system").__setitem__("number", p["verdict"]["as_number"] + 1)),
            broken("a dropped belongs-to", lambda p: p["bundle"].__setitem__("objects", [o for o in p["bundle"]["objects"] if o.get("relationship_type") != "belongs-to"])),
        ]
    if kind == "indicator":
        out += [
            broken("a pattern that does not parse", lambda p: obj(p, "indicator").__setitem__("pattern", "[ipv4-addr:value = '1.2.3.4'")),
            broken("a confidence that is not the score", lambda p: obj(p, "indicator").__setitem__("confidence", (p["verdict"].get("threat_score") or 0) + 1)),
            broken("a custom object", lambda p: p["bundle"]["objects"].append({"type": "x-tip-zone", "id": "x-tip-zone--0b7d1b4e-6bd1-5b5e-8f1b-9a1c1a0b6f3e", "spec_version": "2.1"})),
            broken("a dropped relationship", lambda p: p["bundle"].__setitem__("objects", [o for o in p["bundle"]["objects"] if o["type"] != "relationship"])),
        ]
    else:
        out += [
            broken("a note on nothing", lambda p: obj(p, "note").__setitem__("object_refs", ["ipv4-addr--0b7d1b4e-6bd1-5b5e-8f1b-9a1c1a0b6f3e"])),
        ]
    return out


def main():
    pairs = [json.loads(line) for line in sys.stdin if line.strip()]
    if not pairs:
        print("check.py: no bundles on stdin", file=sys.stderr)
        return 1
    kinds = {}
    failures = []
    first = {}
    for i, pair in enumerate(pairs):
        try:
            kind = check(pair)
            kinds[kind] = kinds.get(kind, 0) + 1
            first.setdefault(kind, pair)
        except Exception as e:  # a crash on a bundle is a failure too
            failures.append(f"bundle {i} ({pair.get('verdict', {}).get('ip')}): {e}")
    rejected = tried = 0
    for kind, pair in first.items():
        for what, p in mutations(pair, kind):
            tried += 1
            try:
                check(p)
            except Bad:
                rejected += 1
            except Exception as e:  # a broken copy must fail as a finding, not a crash
                failures.append(f"self-check: a {kind} bundle with {what} crashed the check: {e!r}")
            else:
                failures.append(f"self-check: a {kind} bundle with {what} passed the check")
    for f in failures:
        print(f"check.py: {f}", file=sys.stderr)
    print(f"checked {len(pairs)} bundles ({kinds.get('indicator', 0)} with an indicator, "
          f"{kinds.get('note', 0)} with a note); self-check: {rejected} of {tried} broken bundles rejected")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
