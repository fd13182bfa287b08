//! Resolving WIT `settings` (each field optional) against the environment and
//! the defaults into a complete, validated [`Config`].

use crate::bindings::{ApiFlavour, AuthScheme, Settings, SoarVerdict, Zone, ZoneVerdict};
use crate::error::Error;
use crate::lenient::parse_zone;
use crate::schedule::Policy;
use crate::secrets::Secrets;
use crate::settings::Setting;
use crate::transport::Limits;

/// Sections a verdict needs (`HasApt` and `RelatedAptReports` live in `IpGeneralInfo`).
pub const VERDICT_SECTIONS: [&str; 3] = ["LicenseInfo", "Zone", "IpGeneralInfo"];

/// What a call is for: the default sections differ.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// `enrich*`: the three verdict sections.
    Verdict,
    /// `lookup*`: every section.
    Report,
}

/// A validated base URL, split for wasi-http.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseUrl {
    /// True for `https`.
    pub https: bool,
    /// `host[:port]` (IPv6 hosts in brackets).
    pub authority: String,
    /// Path prefix without a trailing slash (often empty).
    pub path_prefix: String,
}

impl BaseUrl {
    /// Parses an `http://` or `https://` URL with no credentials, query or fragment.
    pub fn parse(url: &str) -> Result<BaseUrl, Error> {
        BaseUrl::parse_as(url, "the base URL")
    }

    /// [`BaseUrl::parse`], naming the URL `what` in its errors (the gate's
    /// origin is parsed by the same rules).
    pub fn parse_as(url: &str, what: &str) -> Result<BaseUrl, Error> {
        // The URL is not echoed: it may carry credentials or a token in its path.
        let bad = |why: &str| Error::Config(format!("{what} is not usable: {why}"));
        let url = url.trim();
        let (https, rest) = if let Some(rest) = strip_prefix_ci(url, "https://") {
            (true, rest)
        } else if let Some(rest) = strip_prefix_ci(url, "http://") {
            (false, rest)
        } else {
            return Err(bad("it must start with http:// or https://"));
        };
        if rest.contains(['?', '#']) {
            return Err(bad("no query or fragment allowed"));
        }
        let (authority, path) = match rest.find('/') {
            Some(i) => (
                rest.get(..i).unwrap_or_default(),
                rest.get(i..).unwrap_or_default(),
            ),
            None => (rest, ""),
        };
        if authority.is_empty() {
            return Err(bad("no host"));
        }
        if authority.contains('@') {
            return Err(bad(
                "credentials in the URL are not accepted; use the API key settings",
            ));
        }
        let url_safe = |c: char| {
            c.is_ascii_graphic()
                && !matches!(c, '"' | '<' | '>' | '\\' | '^' | '`' | '{' | '|' | '}')
        };
        if !authority.chars().all(url_safe) || !path.chars().all(url_safe) {
            return Err(bad("it contains characters that are not allowed in a URL"));
        }
        if let Some((host, port)) = split_port(authority) {
            if host.is_empty() {
                return Err(bad("no host"));
            }
            if !port.is_empty() && port.parse::<u16>().is_err() {
                return Err(bad("the port is not a number from 0 to 65535"));
            }
        }
        Ok(BaseUrl {
            https,
            authority: authority.to_ascii_lowercase(),
            path_prefix: path.trim_end_matches('/').to_owned(),
        })
    }

    /// The URL back as text.
    pub fn to_url(&self) -> String {
        format!(
            "{}://{}{}",
            if self.https { "https" } else { "http" },
            self.authority,
            self.path_prefix
        )
    }
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

/// Splits `host:port` (`[v6]:port`); `None` when there is no port.
fn split_port(authority: &str) -> Option<(&str, &str)> {
    if let Some(rest) = authority.strip_prefix('[') {
        let close = rest.find(']')?;
        let after = rest.get(close + 1..)?;
        return after
            .strip_prefix(':')
            .map(|p| (rest.get(..close).unwrap_or_default(), p));
    }
    authority.rsplit_once(':')
}

/// A value quoted for a message: JSON-escaped and at most 80 characters.
fn quoted(s: &str) -> String {
    serde_json::to_string(&crate::text::bounded(s, 80)).unwrap_or_default()
}

/// The complete settings of one call.
#[derive(Clone, PartialEq)]
pub struct Config {
    /// API flavour.
    pub api: ApiFlavour,
    /// Where to send requests.
    pub base_url: BaseUrl,
    /// How the key is sent.
    pub auth: AuthScheme,
    /// The key (`user:password` for basic); `None` when not configured.
    pub api_key: Option<String>,
    /// Connect timeout, ms.
    pub connect_timeout_ms: u32,
    /// Time to response headers, ms.
    pub first_byte_timeout_ms: u32,
    /// Longest pause between body chunks, ms.
    pub between_bytes_timeout_ms: u32,
    /// End-to-end limit of each attempt, ms.
    pub timeout_ms: u32,
    /// Sections to request (TIP); empty means all.
    pub sections: Vec<String>,
    /// Records per list section (TIP).
    pub count: Option<u32>,
    /// Body cap in bytes.
    pub max_body_bytes: u32,
    /// Query the API for reserved addresses too.
    pub query_reserved: bool,
    /// Zone to verdict mapping.
    pub verdict_map: VerdictMap,
    /// Requests in flight at once.
    pub concurrency: u32,
    /// Retries after the first attempt.
    pub retries: u32,
    /// Limit of one lookup with its retries, ms.
    pub deadline_ms: u32,
    /// Longest Retry-After honoured, ms.
    pub retry_after_cap_ms: u32,
    /// How long a found answer is kept, s (0: none).
    pub cache_ttl_secs: u32,
    /// How long a 404 answer is kept, s (0: none).
    pub cache_not_found_ttl_secs: u32,
    /// Quota cool-down, s.
    pub quota_cooldown_secs: u32,
    /// Lease of a lookup on its address, ms (at least 1).
    pub cache_lease_ms: u32,
    /// The `wasi:keyvalue` bucket, when one is named.
    pub store_bucket: Option<String>,
    /// The secrets of `api_key`, made once when resolved.
    secrets: Secrets,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("api", &self.api)
            .field("base_url", &self.base_url.to_url())
            .field("auth", &self.auth)
            .field("api_key", &self.api_key.as_ref().map(|_| "[redacted]"))
            .field("timeout_ms", &self.timeout_ms)
            .field("sections", &self.sections)
            .field("count", &self.count)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("query_reserved", &self.query_reserved)
            .finish_non_exhaustive()
    }
}

impl Config {
    /// The secrets a message must never show.
    pub fn secrets(&self) -> &Secrets {
        &self.secrets
    }

    /// The key, or a config error saying how to set it.
    pub fn require_key(&self) -> Result<&str, Error> {
        self.api_key
            .as_deref()
            .filter(|k| !k.is_empty())
            .ok_or_else(|| {
                Error::Config("no API key: set TIP_API_KEY (tip_api_key in wasi:config)".into())
            })
    }
}

/// Zone to verdict mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VerdictMap {
    /// Indexed by [`zone_index`].
    pub by_zone: [SoarVerdict; 5],
}

/// Position of a zone in [`VerdictMap::by_zone`].
pub fn zone_index(zone: Zone) -> usize {
    match zone {
        Zone::Red => 0,
        Zone::Orange => 1,
        Zone::Yellow => 2,
        Zone::Grey => 3,
        Zone::Green => 4,
    }
}

impl Default for VerdictMap {
    /// red → malicious, orange → suspicious, yellow → suspicious, grey → unknown, green → benign.
    fn default() -> Self {
        VerdictMap {
            by_zone: [
                SoarVerdict::Malicious,
                SoarVerdict::Suspicious,
                SoarVerdict::Suspicious,
                SoarVerdict::Unknown,
                SoarVerdict::Benign,
            ],
        }
    }
}

impl VerdictMap {
    /// The verdict a zone reads as.
    pub fn get(&self, zone: Zone) -> SoarVerdict {
        self.by_zone
            .get(zone_index(zone))
            .copied()
            .unwrap_or(SoarVerdict::Unknown)
    }

    fn apply(&mut self, entries: &[ZoneVerdict]) {
        for entry in entries {
            if let Some(slot) = self.by_zone.get_mut(zone_index(entry.zone)) {
                *slot = entry.verdict;
            }
        }
    }
}

/// Reads an environment variable; the component passes wasi:cli/environment,
/// tests pass a map.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// A lookup over name/value pairs (an environment read once, or settings
/// merged from `wasi:config`): the first pair with the name.
pub fn lookup_in(pairs: &[(String, String)]) -> impl Fn(&str) -> Option<String> + '_ {
    |name: &str| {
        pairs
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

impl Config {
    /// Resolves settings through [`crate::settings::SETTINGS`]: the explicit
    /// field, else the environment variable (`wasi:config` keys arrive as
    /// their variable), else the table's default. The key comes only from the
    /// environment.
    pub fn resolve(
        settings: &Settings,
        env: EnvLookup<'_>,
        purpose: Purpose,
    ) -> Result<Config, Error> {
        use crate::settings as s;
        let fields = s::wit_fields(settings);
        // A field is taken as given (an empty `sections` list means every
        // section); an environment value is trimmed, and empty means unset.
        let given = |setting: &Setting| -> Option<String> {
            fields
                .iter()
                .find(|(f, _)| f.name == setting.name)
                .and_then(|(_, v)| v.clone())
                .or_else(|| {
                    env(setting.env)
                        .map(|v| v.trim().to_owned())
                        .filter(|v| !v.is_empty())
                })
        };
        let text =
            |setting: &Setting| given(setting).or_else(|| setting.default.map(str::to_owned));
        let number = |setting: &Setting| -> Result<Option<u32>, Error> {
            text(setting)
                .map(|v| {
                    v.parse::<u32>().map_err(|_| {
                        Error::Config(format!(
                            "{} ({}) must be a whole number from 0 to 4294967295",
                            setting.name, setting.env
                        ))
                    })
                })
                .transpose()
        };
        // Every setting but base-url, sections and count has a default in the table.
        let required = |setting: &Setting| -> Result<u32, Error> {
            number(setting)?.ok_or_else(|| {
                Error::Config(format!("{} has no value and no default", setting.env))
            })
        };

        let api = match text(&s::API) {
            Some(v) => parse_api(&v)?,
            None => ApiFlavour::Tip,
        };
        let base_url = match given(&s::BASE_URL) {
            Some(url) => BaseUrl::parse(&url)?,
            None => BaseUrl::parse(default_base_url(api))?,
        };
        let auth = match text(&s::AUTH) {
            Some(v) => parse_auth(&v)?,
            None => AuthScheme::XApiKey,
        };
        let api_key = env(s::API_KEY.env)
            .map(|k| k.trim().to_owned())
            .filter(|k| !k.is_empty());
        if let Some(key) = &api_key {
            if !key.bytes().all(|b| b == b'\t' || (0x20..0x7f).contains(&b)) {
                return Err(Error::Config(
                    "the API key has characters that cannot go in an HTTP header".into(),
                ));
            }
            if auth == AuthScheme::Basic && !key.contains(':') {
                return Err(Error::Config(
                    "basic auth needs the key as user:password".into(),
                ));
            }
        }

        let timeout_ms = required(&s::TIMEOUT_MS)?;
        let connect_timeout_ms = required(&s::CONNECT_TIMEOUT_MS)?;
        let first_byte_timeout_ms = required(&s::FIRST_BYTE_TIMEOUT_MS)?;
        let between_bytes_timeout_ms = required(&s::BETWEEN_BYTES_TIMEOUT_MS)?;
        for (setting, value) in [
            (&s::TIMEOUT_MS, timeout_ms),
            (&s::CONNECT_TIMEOUT_MS, connect_timeout_ms),
            (&s::FIRST_BYTE_TIMEOUT_MS, first_byte_timeout_ms),
            (&s::BETWEEN_BYTES_TIMEOUT_MS, between_bytes_timeout_ms),
        ] {
            if value == 0 {
                return Err(Error::Config(format!(
                    "{} ({}) must be at least 1 ms",
                    setting.name, setting.env
                )));
            }
        }

        let sections: Vec<String> = match given(&s::SECTIONS) {
            Some(v) => v
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            None => match purpose {
                Purpose::Verdict => VERDICT_SECTIONS.iter().map(|s| (*s).to_owned()).collect(),
                Purpose::Report => Vec::new(),
            },
        };
        for section in &sections {
            if !section
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
            {
                return Err(Error::Config(format!(
                    "section name {} is not valid (letters, digits and _ only)",
                    quoted(section)
                )));
            }
        }

        let count = number(&s::COUNT)?;
        let max_body_bytes = required(&s::MAX_BODY_BYTES)?;
        let query_reserved = match text(&s::QUERY_RESERVED) {
            Some(v) => parse_bool(&v, s::QUERY_RESERVED.env)?,
            None => false,
        };
        let mut verdict_map = VerdictMap::default();
        if let Some(v) = text(&s::VERDICT_MAP) {
            verdict_map.apply(&parse_verdict_map(&v)?);
        }

        let concurrency = required(&s::CONCURRENCY)?.clamp(1, 256);
        let retries = required(&s::RETRIES)?.min(10);
        let deadline_ms = required(&s::DEADLINE_MS)?.max(1);
        let retry_after_cap_ms = required(&s::RETRY_AFTER_CAP_MS)?;
        let cache_ttl_secs = required(&s::CACHE_TTL_SECS)?;
        let cache_not_found_ttl_secs = required(&s::CACHE_NOT_FOUND_TTL_SECS)?;
        let quota_cooldown_secs = required(&s::QUOTA_COOLDOWN_SECS)?;
        let cache_lease_ms = required(&s::CACHE_LEASE_MS)?.max(1);
        let store_bucket = text(&s::STORE_BUCKET);

        let secrets = Secrets::of_key(api_key.as_deref());
        Ok(Config {
            secrets,
            concurrency,
            retries,
            deadline_ms,
            retry_after_cap_ms,
            cache_ttl_secs,
            cache_not_found_ttl_secs,
            quota_cooldown_secs,
            cache_lease_ms,
            store_bucket,
            api,
            base_url,
            auth,
            api_key,
            connect_timeout_ms,
            first_byte_timeout_ms,
            between_bytes_timeout_ms,
            timeout_ms,
            sections,
            count,
            max_body_bytes,
            query_reserved,
            verdict_map,
        })
    }

    /// The limits of one attempt.
    pub fn limits(&self) -> Limits {
        Limits {
            connect_timeout_ms: self.connect_timeout_ms,
            first_byte_timeout_ms: self.first_byte_timeout_ms,
            between_bytes_timeout_ms: self.between_bytes_timeout_ms,
            total_timeout_ms: self.timeout_ms,
            max_body_bytes: self.max_body_bytes,
        }
        .capped(self.timeout_ms)
    }

    /// How a batch runs.
    pub fn policy(&self) -> Policy {
        Policy {
            concurrency: self.concurrency,
            retries: self.retries,
            deadline_ms: self.deadline_ms,
            backoff_base_ms: BACKOFF_BASE_MS,
            backoff_cap_ms: BACKOFF_CAP_MS,
            retry_after_cap_ms: self.retry_after_cap_ms,
        }
    }
}

/// First retry waits about this long (equal jitter); each further one doubles it.
const BACKOFF_BASE_MS: u32 = 250;
/// Longest backoff between retries.
const BACKOFF_CAP_MS: u32 = 8_000;

/// The default base URL of a flavour.
pub fn default_base_url(api: ApiFlavour) -> &'static str {
    match api {
        ApiFlavour::Tip => "https://tip.kaspersky.com",
        ApiFlavour::Opentip => "https://opentip.kaspersky.com",
    }
}

fn parse_bool(v: &str, var: &str) -> Result<bool, Error> {
    match v.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err(Error::Config(format!("{var} must be true or false"))),
    }
}

/// Parses `tip` or `opentip`.
pub fn parse_api(v: &str) -> Result<ApiFlavour, Error> {
    match v.trim().to_ascii_lowercase().as_str() {
        "tip" => Ok(ApiFlavour::Tip),
        "opentip" => Ok(ApiFlavour::Opentip),
        _ => Err(Error::Config("TIP_API must be tip or opentip".into())),
    }
}

/// Parses `x-api-key`, `bearer` or `basic`.
pub fn parse_auth(v: &str) -> Result<AuthScheme, Error> {
    match v.trim().to_ascii_lowercase().as_str() {
        "x-api-key" => Ok(AuthScheme::XApiKey),
        "bearer" => Ok(AuthScheme::Bearer),
        "basic" => Ok(AuthScheme::Basic),
        _ => Err(Error::Config(
            "TIP_AUTH must be x-api-key, bearer or basic".into(),
        )),
    }
}

/// Parses `zone=verdict,zone=verdict` (e.g. `yellow=benign,gray=unknown`).
pub fn parse_verdict_map(v: &str) -> Result<Vec<ZoneVerdict>, Error> {
    let bad =
        || Error::Config("TIP_VERDICT_MAP must look like yellow=benign,orange=malicious".into());
    v.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|pair| {
            let (zone, verdict) = pair.split_once('=').ok_or_else(bad)?;
            let zone = parse_zone(zone).ok_or_else(bad)?;
            let verdict = match verdict.trim().to_ascii_lowercase().as_str() {
                "malicious" => SoarVerdict::Malicious,
                "suspicious" => SoarVerdict::Suspicious,
                "benign" => SoarVerdict::Benign,
                "unknown" => SoarVerdict::Unknown,
                _ => return Err(bad()),
            };
            Ok(ZoneVerdict { zone, verdict })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::REDACTED;
    use crate::settings::empty as empty_settings;
    use std::collections::HashMap;

    fn resolve_env(
        vars: &[(&str, &str)],
        settings: Settings,
        purpose: Purpose,
    ) -> Result<Config, Error> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::resolve(&settings, &|k| map.get(k).cloned(), purpose)
    }

    #[test]
    fn defaults() {
        let c = resolve_env(&[], empty_settings(), Purpose::Verdict).unwrap();
        // Every default comes from the settings table.
        let d = |s: &Setting| s.default.unwrap().parse::<u32>().unwrap();
        use crate::settings as t;
        assert_eq!(c.timeout_ms, d(&t::TIMEOUT_MS));
        assert_eq!(c.connect_timeout_ms, d(&t::CONNECT_TIMEOUT_MS));
        assert_eq!(c.first_byte_timeout_ms, d(&t::FIRST_BYTE_TIMEOUT_MS));
        assert_eq!(c.between_bytes_timeout_ms, d(&t::BETWEEN_BYTES_TIMEOUT_MS));
        assert_eq!(c.max_body_bytes, d(&t::MAX_BODY_BYTES));
        assert_eq!(c.concurrency, d(&t::CONCURRENCY));
        assert_eq!(c.retries, d(&t::RETRIES));
        assert_eq!(c.deadline_ms, d(&t::DEADLINE_MS));
        assert_eq!(c.retry_after_cap_ms, d(&t::RETRY_AFTER_CAP_MS));
        assert_eq!(c.cache_ttl_secs, d(&t::CACHE_TTL_SECS));
        assert_eq!(c.count, None);
        assert_eq!(c.api, ApiFlavour::Tip);
        assert_eq!(c.base_url.to_url(), "https://tip.kaspersky.com");
        assert_eq!(c.auth, AuthScheme::XApiKey);
        assert_eq!(c.api_key, None);
        assert_eq!(c.sections, VERDICT_SECTIONS);
        assert!(!c.query_reserved);
        assert_eq!(c.verdict_map, VerdictMap::default());
        let r = resolve_env(&[], empty_settings(), Purpose::Report).unwrap();
        assert!(r.sections.is_empty());
        let o = resolve_env(
            &[("TIP_API", "OpenTIP")],
            empty_settings(),
            Purpose::Verdict,
        )
        .unwrap();
        assert_eq!(o.base_url.to_url(), "https://opentip.kaspersky.com");
    }

    #[test]
    fn settings_beat_environment() {
        let mut s = empty_settings();
        s.base_url = Some("http://127.0.0.1:8080/gw/".into());
        s.timeout_ms = Some(1234);
        let c = resolve_env(
            &[
                ("TIP_BASE_URL", "https://other.example"),
                ("TIP_TIMEOUT_MS", "999"),
                ("TIP_API_KEY", "from-env"),
                ("TIP_AUTH", "bearer"),
            ],
            s,
            Purpose::Verdict,
        )
        .unwrap();
        assert_eq!(c.base_url.authority, "127.0.0.1:8080");
        assert_eq!(c.base_url.path_prefix, "/gw");
        assert!(!c.base_url.https);
        assert_eq!(c.timeout_ms, 1234);
        assert_eq!(c.api_key.as_deref(), Some("from-env"));
        assert_eq!(c.auth, AuthScheme::Bearer);
    }

    #[test]
    fn environment_fills_every_field() {
        let c = resolve_env(
            &[
                ("TIP_API", "opentip"),
                ("TIP_BASE_URL", "https://[::1]:8443"),
                ("TIP_AUTH", "basic"),
                ("TIP_API_KEY", "user:pa ss"),
                ("TIP_TIMEOUT_MS", "1500"),
                ("TIP_CONNECT_TIMEOUT_MS", "100"),
                ("TIP_FIRST_BYTE_TIMEOUT_MS", "200"),
                ("TIP_BETWEEN_BYTES_TIMEOUT_MS", "300"),
                ("TIP_SECTIONS", "Zone, IpWhoIs"),
                ("TIP_COUNT", "10"),
                ("TIP_MAX_BODY_BYTES", "1024"),
                ("TIP_QUERY_RESERVED", "yes"),
                ("TIP_VERDICT_MAP", "yellow=benign, Gray=suspicious"),
            ],
            empty_settings(),
            Purpose::Verdict,
        )
        .unwrap();
        assert_eq!(c.api, ApiFlavour::Opentip);
        assert_eq!(c.base_url.authority, "[::1]:8443");
        assert_eq!(c.auth, AuthScheme::Basic);
        assert_eq!(
            (
                c.timeout_ms,
                c.connect_timeout_ms,
                c.first_byte_timeout_ms,
                c.between_bytes_timeout_ms
            ),
            (1500, 100, 200, 300)
        );
        assert_eq!(c.sections, ["Zone", "IpWhoIs"]);
        assert_eq!(c.count, Some(10));
        assert_eq!(c.max_body_bytes, 1024);
        assert!(c.query_reserved);
        assert_eq!(c.verdict_map.get(Zone::Yellow), SoarVerdict::Benign);
        assert_eq!(c.verdict_map.get(Zone::Grey), SoarVerdict::Suspicious);
        assert_eq!(c.verdict_map.get(Zone::Red), SoarVerdict::Malicious);
        assert_eq!(c.secrets(), &Secrets::of_key(Some("user:pa ss")));
    }

    #[test]
    fn bad_values_are_config_errors_without_the_key() {
        let cases: &[&[(&str, &str)]] = &[
            &[("TIP_API", "virustotal")],
            &[("TIP_AUTH", "cert")],
            &[("TIP_BASE_URL", "ftp://x")],
            &[("TIP_BASE_URL", "https://user:secret-key@host")],
            &[("TIP_BASE_URL", "https://host?x=1")],
            &[("TIP_BASE_URL", "https://host:99999")],
            &[("TIP_BASE_URL", "https://")],
            &[("TIP_TIMEOUT_MS", "soon")],
            &[("TIP_TIMEOUT_MS", "0")],
            &[("TIP_SECTIONS", "Zone&x=1")],
            &[("TIP_QUERY_RESERVED", "maybe")],
            &[("TIP_VERDICT_MAP", "purple=benign")],
            &[
                ("TIP_AUTH", "basic"),
                ("TIP_API_KEY", "secret-key-no-colon"),
            ],
            &[("TIP_API_KEY", "secret-key\r\nX-Evil: 1")],
        ];
        for vars in cases {
            match resolve_env(vars, empty_settings(), Purpose::Verdict) {
                Err(Error::Config(msg)) => assert!(!msg.contains("secret-key"), "{msg}"),
                other => panic!("{vars:?}: expected a config error, got {other:?}"),
            }
        }
    }

    #[test]
    fn missing_key_is_reported_only_when_needed() {
        let c = resolve_env(&[], empty_settings(), Purpose::Verdict).unwrap();
        assert!(matches!(c.require_key(), Err(Error::Config(m)) if m.contains("TIP_API_KEY")));
    }

    #[test]
    fn debug_hides_the_key() {
        let c = resolve_env(
            &[("TIP_API_KEY", "hunter2-key")],
            empty_settings(),
            Purpose::Verdict,
        )
        .unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn echoed_basic_credentials_are_scrubbed() {
        // A server that echoed the Authorization header put base64("user:password")
        // in error messages, verdict fields and --full output: only the plain
        // key and password were secrets. Found by host-harness/tests/secrets.rs.
        let c = resolve_env(
            &[("TIP_API_KEY", "alice:hunter2-pw"), ("TIP_AUTH", "basic")],
            empty_settings(),
            Purpose::Verdict,
        )
        .unwrap();
        let token = crate::secrets::basic_token("alice:hunter2-pw");
        assert_eq!(c.secrets().scrub(&token), REDACTED);
        let echoed = crate::error::Error::Unauthorized {
            excerpt: format!("you sent Basic {token}"),
        };
        let text = format!("{:?}", echoed.into_wit(c.secrets()));
        assert!(!text.contains(&token), "{text}");
        assert!(text.contains("[redacted]"), "{text}");
    }
}
