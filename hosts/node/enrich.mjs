// Enrich IP addresses with the tip-enrich component from Node.js, through jco.
//
//   npm ci
//   npx jco transpile ../../target/wasm32-wasip2/component/tip_enrich_component.wasm --name tip_enrich -o component
//   TIP_API_KEY=... node enrich.mjs 45.9.148.108 10.0.0.1
//
// Settings come from the TIP_* environment variables (preview2-shim hands
// process.env to the component); the call passes an empty settings record.
// Prints one JSON line per address, byte for byte what the tip-enrich CLI
// prints for it (host-harness/tests/hosts.rs checks); exits 1 when any line
// is an error.
import { pathToFileURL } from 'node:url';
import { enrichIp } from './component/tip_enrich.js';

// u64 fields arrive as BigInt, options as undefined.
const num = (v) => (v === undefined ? null : Number(v));
const opt = (v) => (v === undefined ? null : v);

// An error line echoes at most this many characters of its input, then `…`
// (the CLI's MAX_ECHO_CHARS).
const MAX_ECHO_CHARS = 128;
const echo = (input) => {
  const chars = Array.from(input);
  return chars.length > MAX_ECHO_CHARS ? chars.slice(0, MAX_ECHO_CHARS).join('') + '…' : input;
};

export function enrich(ip) {
  let v;
  try {
    v = enrichIp.enrich(ip, {});
  } catch (e) {
    // An `enrich-error` is thrown as a ComponentError whose payload is the WIT
    // variant; anything else (a trap) is not ours to translate.
    if (e?.payload?.tag === undefined) throw e;
    const { tag, val } = e.payload;
    const error = { kind: tag, message: typeof val === 'string' ? val : val.message };
    if (tag === 'rate-limited') error.retry_after_secs = opt(val.retryAfterSecs);
    if (tag === 'upstream') error.status = val.status;
    return { ip: echo(ip), error };
  }
  const line = {
    ip: v.ip,
    zone: v.zone,
    threat_score: opt(v.threatScore),
    has_apt: v.hasApt,
    related_report_ids: v.relatedReports.map((r) => r.id),
    suspicious: v.suspicious,
    verdict: v.verdict,
    found: v.found,
    source: v.source,
    fetched_at: opt(v.fetchedAt),
    status: opt(v.status),
    country_code: opt(v.countryCode),
    as_number: opt(v.asNumber),
    as_organization: opt(v.asOrganization),
    network_name: opt(v.networkName),
    categories: v.categories,
    hits_count: num(v.hitsCount),
    first_seen: opt(v.firstSeen),
    related_reports: v.relatedReports.map((r) => ({ id: r.id, title: opt(r.title) })),
    day_requests: num(v.quota?.dayRequests),
    day_quota: num(v.quota?.dayQuota),
  };
  if (v.reservedBlock !== undefined) line.reserved_block = v.reservedBlock;
  return line;
}

if (import.meta.url === pathToFileURL(process.argv[1]).href) {
  let failed = false;
  for (const ip of process.argv.slice(2)) {
    const line = enrich(ip);
    failed ||= 'error' in line;
    console.log(JSON.stringify(line));
  }
  process.exitCode = failed ? 1 : 0;
}
