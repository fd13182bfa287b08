//! The one table of settings.
//!
//! Each setting is declared once, in [`SETTINGS`]: its name (the WIT
//! `settings` field and the CLI flag `--{name}`), its environment variable
//! (`TIP_*`), its `wasi:config` key (`tip_*`), its default and a one-line
//! doc. [`crate::config::Config::resolve`] reads every setting through this
//! table (explicit field, else environment or `wasi:config`, else the
//! default written here); the host derives its flags, `--help`, and what it
//! passes to a component (environment or `wasi:config`) from it; tests check
//! the WIT record, the README's table and the resolver against it.

use crate::bindings::{ApiFlavour, AuthScheme, Settings, SoarVerdict, Zone};

/// One setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    /// Kebab-case name: the WIT field and the CLI flag `--{name}`.
    pub name: &'static str,
    /// Environment variable: `TIP_` and the name in upper snake case.
    pub env: &'static str,
    /// `wasi:config` key: the environment variable in lower case.
    pub key: &'static str,
    /// Whether the WIT `settings` record has this field (the key has none:
    /// it only comes from the environment or `wasi:config`).
    pub in_wit: bool,
    /// The default as text, read by the same parser as any value; `None`
    /// where it depends on other settings (the doc says how).
    pub default: Option<&'static str>,
    /// The value's placeholder in `--help` (`MS`, `URL`, ...).
    pub value: &'static str,
    /// One line for `--help` and the README.
    pub doc: &'static str,
}

macro_rules! settings {
    ($(#[$table_doc:meta])* $table:ident; $($id:ident: $name:literal, $env:literal, $key:literal, wit: $wit:literal, default: $default:expr, $value:literal, $doc:literal;)*) => {
        $(
            #[doc = concat!("`", $name, "`: ", $doc)]
            pub const $id: Setting = Setting {
                name: $name,
                env: $env,
                key: $key,
                in_wit: $wit,
                default: $default,
                value: $value,
                doc: $doc,
            };
        )*
        $(#[$table_doc])*
        pub const $table: &[Setting] = &[$($id),*];
    };
}

settings! {
    /// Every setting, in the order of the WIT record.
    SETTINGS;
    API: "api", "TIP_API", "tip_api", wit: true, default: Some("tip"), "tip|opentip",
        "API flavour: the commercial TIP or the free OpenTIP";
    BASE_URL: "base-url", "TIP_BASE_URL", "tip_base_url", wit: true, default: None, "URL",
        "http:// or https:// base URL (default: https://tip.kaspersky.com, or https://opentip.kaspersky.com for opentip)";
    AUTH: "auth", "TIP_AUTH", "tip_auth", wit: true, default: Some("x-api-key"), "x-api-key|bearer|basic",
        "How the key is sent";
    API_KEY: "api-key", "TIP_API_KEY", "tip_api_key", wit: false, default: None, "KEY",
        "The API key (user:password for basic); never a call argument or a flag";
    CONNECT_TIMEOUT_MS: "connect-timeout-ms", "TIP_CONNECT_TIMEOUT_MS", "tip_connect_timeout_ms", wit: true, default: Some("10000"), "MS",
        "Connect timeout of each attempt, in ms";
    FIRST_BYTE_TIMEOUT_MS: "first-byte-timeout-ms", "TIP_FIRST_BYTE_TIMEOUT_MS", "tip_first_byte_timeout_ms", wit: true, default: Some("30000"), "MS",
        "Time to the response headers of each attempt, in ms";
    BETWEEN_BYTES_TIMEOUT_MS: "between-bytes-timeout-ms", "TIP_BETWEEN_BYTES_TIMEOUT_MS", "tip_between_bytes_timeout_ms", wit: true, default: Some("30000"), "MS",
        "Longest pause between body chunks, in ms";
    TIMEOUT_MS: "timeout-ms", "TIP_TIMEOUT_MS", "tip_timeout_ms", wit: true, default: Some("30000"), "MS",
        "Limit of each attempt end to end (headers and whole body), in ms";
    SECTIONS: "sections", "TIP_SECTIONS", "tip_sections", wit: true, default: None, "A,B",
        "Sections to request from TIP, comma separated (default: LicenseInfo,Zone,IpGeneralInfo; every section for a report)";
    COUNT: "count", "TIP_COUNT", "tip_count", wit: true, default: None, "N",
        "Records per list section, TIP only (default: the API's)";
    MAX_BODY_BYTES: "max-body-bytes", "TIP_MAX_BODY_BYTES", "tip_max_body_bytes", wit: true, default: Some("8388608"), "BYTES",
        "Largest response body accepted";
    QUERY_RESERVED: "query-reserved", "TIP_QUERY_RESERVED", "tip_query_reserved", wit: true, default: Some("false"), "BOOL",
        "Query the API for reserved addresses too instead of answering them locally";
    VERDICT_MAP: "verdict-map", "TIP_VERDICT_MAP", "tip_verdict_map", wit: true, default: Some(""), "ZONE=VERDICT,...",
        "Replaces entries of the zone to verdict mapping, e.g. yellow=benign,orange=malicious";
    CONCURRENCY: "concurrency", "TIP_CONCURRENCY", "tip_concurrency", wit: true, default: Some("8"), "N",
        "Requests in flight at once in a batch (1 to 256)";
    RETRIES: "retries", "TIP_RETRIES", "tip_retries", wit: true, default: Some("2"), "N",
        "Retries of a 429, a 5xx, or a failure before any response byte (at most 10)";
    DEADLINE_MS: "deadline-ms", "TIP_DEADLINE_MS", "tip_deadline_ms", wit: true, default: Some("120000"), "MS",
        "Limit of one lookup with all its retries, in ms";
    RETRY_AFTER_CAP_MS: "retry-after-cap-ms", "TIP_RETRY_AFTER_CAP_MS", "tip_retry_after_cap_ms", wit: true, default: Some("30000"), "MS",
        "Longest Retry-After waited for, in ms; a longer one ends the lookup as rate-limited";
    CACHE_TTL_SECS: "cache-ttl-secs", "TIP_CACHE_TTL_SECS", "tip_cache_ttl_secs", wit: true, default: Some("86400"), "SECS",
        "How long a found answer is kept in the answer store, in seconds (0: none)";
    CACHE_NOT_FOUND_TTL_SECS: "cache-not-found-ttl-secs", "TIP_CACHE_NOT_FOUND_TTL_SECS", "tip_cache_not_found_ttl_secs", wit: true, default: Some("21600"), "SECS",
        "How long a 404 (not found) answer is kept, in seconds (0: none)";
    QUOTA_COOLDOWN_SECS: "quota-cooldown-secs", "TIP_QUOTA_COOLDOWN_SECS", "tip_quota_cooldown_secs", wit: true, default: Some("900"), "SECS",
        "After the quota ran out, how long every lookup with the same key sends nothing before one request probes, in seconds";
    CACHE_LEASE_MS: "cache-lease-ms", "TIP_CACHE_LEASE_MS", "tip_cache_lease_ms", wit: true, default: Some("10000"), "MS",
        "How long a lookup holds an address while it asks the API; equal lookups meanwhile wait for its answer, in ms";
    STORE_BUCKET: "store-bucket", "TIP_STORE_BUCKET", "tip_store_bucket", wit: false, default: None, "NAME",
        "The wasi:keyvalue bucket of the answer store (default: `default`, then the empty name; `off`: none, answers kept per instance)";
}

settings! {
    /// The IP gate's own settings (`gate/`, world `ip-gate`): `TIP_GATE_*`,
    /// `wasi:config` keys `tip_gate_*`. None is a WIT field; the lookups the
    /// gate makes read [`SETTINGS`] as the service does.
    GATE_SETTINGS;
    GATE_ORIGIN: "origin", "TIP_GATE_ORIGIN", "tip_gate_origin", wit: false, default: None, "URL",
        "Where allowed requests go: an http:// or https:// URL, optionally with a path prefix (required)";
    GATE_CLIENT_IP_HEADER: "client-ip-header", "TIP_GATE_CLIENT_IP_HEADER", "tip_gate_client_ip_header", wit: false, default: Some("x-forwarded-for"), "spin-client-addr|x-forwarded-for|forwarded|x-real-ip|true-client-ip",
        "The header that carries the client address (x-forwarded-for and forwarded: the rightmost entry not in trusted-proxies)";
    GATE_TRUSTED_PROXIES: "trusted-proxies", "TIP_GATE_TRUSTED_PROXIES", "tip_gate_trusted_proxies", wit: false, default: Some(""), "CIDR,...",
        "Proxies whose x-forwarded-for or forwarded entries are skipped when looking for the client";
    GATE_BLOCK: "block", "TIP_GATE_BLOCK", "tip_gate_block", wit: false, default: Some("malicious"), "VERDICT,...",
        "Verdicts answered with 403: malicious, suspicious, benign, unknown";
    GATE_ALLOW: "allow", "TIP_GATE_ALLOW", "tip_gate_allow", wit: false, default: Some(""), "CIDR,...",
        "Addresses forwarded without a lookup (after deny)";
    GATE_DENY: "deny", "TIP_GATE_DENY", "tip_gate_deny", wit: false, default: Some(""), "CIDR,...",
        "Addresses answered with 403 without a lookup (checked first)";
    GATE_FAIL: "fail", "TIP_GATE_FAIL", "tip_gate_fail", wit: false, default: Some("open"), "open|closed",
        "When no decision is made (no client address, API failure, timeout): forward (open) or answer 503 (closed)";
    GATE_DECISION_TIMEOUT_MS: "decision-timeout-ms", "TIP_GATE_DECISION_TIMEOUT_MS", "tip_gate_decision_timeout_ms", wit: false, default: Some("2000"), "MS",
        "Limit of the whole lookup of one client address, retries included, in ms";
    GATE_VERDICT_HEADER: "verdict-header", "TIP_GATE_VERDICT_HEADER", "tip_gate_verdict_header", wit: false, default: Some("false"), "BOOL",
        "Add x-tip-verdict (e.g. `benign; zone=green`) to forwarded requests that were looked up";
    GATE_ORIGIN_TIMEOUT_MS: "origin-timeout-ms", "TIP_GATE_ORIGIN_TIMEOUT_MS", "tip_gate_origin_timeout_ms", wit: false, default: Some("30000"), "MS",
        "Connect, first-byte and between-bytes timeouts towards the origin, in ms";
}

/// Merges runtime configuration (`wasi:config/store` pairs, keys `tip_*`)
/// over the environment: a config key `tip_api_key` stands for `TIP_API_KEY`
/// and wins over it. Keys without the `tip_` prefix are ignored.
pub fn merge_settings(
    config: Vec<(String, String)>,
    mut env: Vec<(String, String)>,
) -> Vec<(String, String)> {
    for (key, value) in config {
        if !key.to_ascii_lowercase().starts_with("tip_") {
            continue;
        }
        let name = key.to_ascii_uppercase();
        env.retain(|(k, _)| *k != name);
        env.push((name, value));
    }
    env
}

/// The fields of a WIT `settings` record as text, by setting. The
/// destructuring has no `..`: a field added to the WIT record does not
/// compile until it is listed here (and so in [`SETTINGS`]).
pub(crate) fn wit_fields(s: &Settings) -> [(&'static Setting, Option<String>); 20] {
    let Settings {
        api,
        base_url,
        auth,
        connect_timeout_ms,
        first_byte_timeout_ms,
        between_bytes_timeout_ms,
        timeout_ms,
        sections,
        count,
        max_body_bytes,
        query_reserved,
        verdict_map,
        concurrency,
        retries,
        deadline_ms,
        retry_after_cap_ms,
        cache_ttl_secs,
        cache_not_found_ttl_secs,
        quota_cooldown_secs,
        cache_lease_ms,
    } = s;
    let n = |v: &Option<u32>| v.map(|v| v.to_string());
    [
        (&API, api.map(|a| api_name(a).to_owned())),
        (&BASE_URL, base_url.clone()),
        (&AUTH, auth.map(|a| auth_name(a).to_owned())),
        (&CONNECT_TIMEOUT_MS, n(connect_timeout_ms)),
        (&FIRST_BYTE_TIMEOUT_MS, n(first_byte_timeout_ms)),
        (&BETWEEN_BYTES_TIMEOUT_MS, n(between_bytes_timeout_ms)),
        (&TIMEOUT_MS, n(timeout_ms)),
        // An empty list means every section, as the text `""` does.
        (&SECTIONS, sections.as_ref().map(|l| l.join(","))),
        (&COUNT, n(count)),
        (&MAX_BODY_BYTES, n(max_body_bytes)),
        (&QUERY_RESERVED, query_reserved.map(|b| b.to_string())),
        (
            &VERDICT_MAP,
            verdict_map.as_ref().map(|m| {
                m.iter()
                    .map(|e| format!("{}={}", zone_name(e.zone), verdict_name(e.verdict)))
                    .collect::<Vec<_>>()
                    .join(",")
            }),
        ),
        (&CONCURRENCY, n(concurrency)),
        (&RETRIES, n(retries)),
        (&DEADLINE_MS, n(deadline_ms)),
        (&RETRY_AFTER_CAP_MS, n(retry_after_cap_ms)),
        (&CACHE_TTL_SECS, n(cache_ttl_secs)),
        (&CACHE_NOT_FOUND_TTL_SECS, n(cache_not_found_ttl_secs)),
        (&QUOTA_COOLDOWN_SECS, n(quota_cooldown_secs)),
        (&CACHE_LEASE_MS, n(cache_lease_ms)),
    ]
}

/// Settings with every field unset (WAVE `{:}`).
pub fn empty() -> Settings {
    Settings {
        api: None,
        base_url: None,
        auth: None,
        connect_timeout_ms: None,
        first_byte_timeout_ms: None,
        between_bytes_timeout_ms: None,
        timeout_ms: None,
        sections: None,
        count: None,
        max_body_bytes: None,
        query_reserved: None,
        verdict_map: None,
        concurrency: None,
        retries: None,
        deadline_ms: None,
        retry_after_cap_ms: None,
        cache_ttl_secs: None,
        cache_not_found_ttl_secs: None,
        quota_cooldown_secs: None,
        cache_lease_ms: None,
    }
}

/// `tip` or `opentip`.
pub fn api_name(a: ApiFlavour) -> &'static str {
    match a {
        ApiFlavour::Tip => "tip",
        ApiFlavour::Opentip => "opentip",
    }
}

/// `x-api-key`, `bearer` or `basic`.
pub fn auth_name(a: AuthScheme) -> &'static str {
    match a {
        AuthScheme::XApiKey => "x-api-key",
        AuthScheme::Bearer => "bearer",
        AuthScheme::Basic => "basic",
    }
}

/// Lower-case zone name (`grey`, never `gray`).
pub fn zone_name(zone: Zone) -> &'static str {
    match zone {
        Zone::Red => "red",
        Zone::Orange => "orange",
        Zone::Yellow => "yellow",
        Zone::Grey => "grey",
        Zone::Green => "green",
    }
}

/// Lower-case verdict name.
pub fn verdict_name(v: SoarVerdict) -> &'static str {
    match v {
        SoarVerdict::Malicious => "malicious",
        SoarVerdict::Suspicious => "suspicious",
        SoarVerdict::Benign => "benign",
        SoarVerdict::Unknown => "unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_one_rule() {
        for s in SETTINGS {
            let snake = s.name.replace('-', "_");
            assert_eq!(
                s.env,
                format!("TIP_{}", snake.to_ascii_uppercase()),
                "{s:?}"
            );
            assert_eq!(s.key, format!("tip_{snake}"), "{s:?}");
            assert!(!s.doc.is_empty() && !s.doc.contains('\n'), "{s:?}");
        }
        let mut names: Vec<_> = SETTINGS.iter().map(|s| s.name).collect();
        names.dedup();
        assert_eq!(names.len(), SETTINGS.len());
    }

    #[test]
    fn gate_names_follow_one_rule() {
        for s in GATE_SETTINGS {
            let snake = s.name.replace('-', "_");
            assert_eq!(
                s.env,
                format!("TIP_GATE_{}", snake.to_ascii_uppercase()),
                "{s:?}"
            );
            assert_eq!(s.key, format!("tip_gate_{snake}"), "{s:?}");
            assert!(
                !s.in_wit && !s.doc.is_empty() && !s.doc.contains('\n'),
                "{s:?}"
            );
            assert!(!SETTINGS.iter().any(|o| o.env == s.env), "{s:?}");
        }
    }

    /// gate/README.md's row of a gate setting.
    fn gate_readme_row(s: &Setting) -> String {
        let default = match s.default {
            Some(d) if !d.is_empty() => format!("`{d}`"),
            _ => "—".to_owned(),
        };
        format!(
            "| `{}` | `{}` | `{}` | {default} | {} |",
            s.env,
            s.key,
            s.value.replace('|', "\\|"),
            s.doc
        )
    }

    #[test]
    fn the_gate_readme_lists_every_gate_setting() {
        let readme = include_str!("../gate/README.md");
        let rows: Vec<String> = GATE_SETTINGS.iter().map(gate_readme_row).collect();
        assert!(
            rows.iter().all(|r| readme.contains(r.as_str())),
            "gate/README.md's settings table is out of date; its rows are:\n{}",
            rows.join("\n")
        );
    }

    #[test]
    fn config_keys_override_the_environment() {
        let merged = merge_settings(
            vec![
                ("tip_api_key".into(), "from-config".into()),
                ("tip_gate_origin".into(), "http://o".into()),
                ("other".into(), "ignored".into()),
            ],
            vec![
                ("TIP_API_KEY".into(), "from-env".into()),
                ("TIP_API".into(), "opentip".into()),
            ],
        );
        assert!(merged.contains(&("TIP_API_KEY".into(), "from-config".into())));
        assert!(merged.contains(&("TIP_API".into(), "opentip".into())));
        assert!(merged.contains(&("TIP_GATE_ORIGIN".into(), "http://o".into())));
        assert!(!merged.iter().any(|(k, _)| k == "OTHER"));
        assert_eq!(merged.len(), 3);
    }

    /// The README's row of a setting.
    fn readme_row(s: &Setting) -> String {
        let flag = if s.in_wit {
            format!("`--{} {}`", s.name, s.value.replace('|', "\\|"))
        } else {
            "—".to_owned()
        };
        let default = match s.default {
            Some(d) if !d.is_empty() => format!("`{d}`"),
            _ => "—".to_owned(),
        };
        format!(
            "| {flag} | `{}` | `{}` | {default} | {} |",
            s.env, s.key, s.doc
        )
    }

    #[test]
    fn the_readme_lists_every_setting_as_the_table_says() {
        let readme = include_str!("../README.md");
        let rows: Vec<String> = SETTINGS.iter().map(readme_row).collect();
        let missing: Vec<&String> = rows
            .iter()
            .filter(|r| !readme.contains(r.as_str()))
            .collect();
        assert!(
            missing.is_empty(),
            "README.md's settings table is out of date; its rows are:\n{}",
            rows.join("\n")
        );
    }

    #[test]
    fn the_wit_docs_name_each_variable_and_default() {
        let wit = include_str!("../wit/enrich.wit");
        let record = wit
            .split("record settings {")
            .nth(1)
            .unwrap()
            .split("\n    }")
            .next()
            .unwrap();
        for s in SETTINGS.iter().filter(|s| s.in_wit) {
            // The doc lines just above the field.
            let at = record.find(&format!(" {}: option<", s.name)).unwrap();
            let doc: String = record
                .get(..at)
                .unwrap()
                .lines()
                .rev()
                .skip(1)
                .take_while(|l| l.trim_start().starts_with("///"))
                .collect();
            assert!(
                doc.contains(s.env),
                "{}: the WIT doc does not name {}",
                s.name,
                s.env
            );
            if let Some(d) = s.default.filter(|d| !d.is_empty() && *d != "8388608") {
                assert!(
                    doc.contains(d),
                    "{}: the WIT doc does not give the default {d}",
                    s.name
                );
            }
        }
    }

    #[test]
    fn the_wit_record_has_exactly_the_wit_settings() {
        let wit = include_str!("../wit/enrich.wit");
        let record = wit
            .split("record settings {")
            .nth(1)
            .and_then(|r| r.split('}').next())
            .unwrap();
        let fields: Vec<&str> = record
            .lines()
            .map(str::trim)
            .filter(|l| !l.starts_with("//") && l.contains(':'))
            .map(|l| l.split(':').next().unwrap().trim())
            .collect();
        let table: Vec<&str> = SETTINGS
            .iter()
            .filter(|s| s.in_wit)
            .map(|s| s.name)
            .collect();
        assert_eq!(fields, table);
        let listed: Vec<&str> = wit_fields(&empty()).iter().map(|(s, _)| s.name).collect();
        assert_eq!(listed, table);
    }
}
