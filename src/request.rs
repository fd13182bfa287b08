//! Building the HTTP request for one address (both flavours, every auth scheme).

use std::net::IpAddr;

use crate::bindings::{ApiFlavour, AuthScheme};
use crate::config::Config;
use crate::error::Error;

/// User-Agent sent with every request.
pub const USER_AGENT: &str = concat!("tip-enrich/", env!("CARGO_PKG_VERSION"));

/// A GET request, split the way wasi-http wants it.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    /// `https` when true, else `http`.
    pub https: bool,
    /// `host[:port]`.
    pub authority: String,
    /// Path and query, starting with `/`.
    pub path_with_query: String,
    /// Header names (lower-case) and values. The auth value is secret.
    pub headers: Vec<(String, String)>,
}

impl HttpRequest {
    /// The full URL (no credentials are ever part of it).
    pub fn url(&self) -> String {
        format!(
            "{}://{}{}",
            if self.https { "https" } else { "http" },
            self.authority,
            self.path_with_query
        )
    }
}

impl std::fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let headers: Vec<(&str, &str)> = self
            .headers
            .iter()
            .map(|(k, v)| {
                let shown = if is_auth_header(k) {
                    "[redacted]"
                } else {
                    v.as_str()
                };
                (k.as_str(), shown)
            })
            .collect();
        f.debug_struct("HttpRequest")
            .field("url", &self.url())
            .field("headers", &headers)
            .finish()
    }
}

/// Whether a header carries credentials.
pub fn is_auth_header(name: &str) -> bool {
    [
        "authorization",
        "x-api-key",
        "proxy-authorization",
        "cookie",
    ]
    .iter()
    .any(|h| name.eq_ignore_ascii_case(h))
}

/// Builds the lookup request for `ip`. Needs a key.
pub fn build_request(config: &Config, ip: IpAddr) -> Result<HttpRequest, Error> {
    let key = config.require_key()?;
    let prefix = &config.base_url.path_prefix;
    let path_with_query = match config.api {
        ApiFlavour::Tip => {
            let mut query = Vec::new();
            if !config.sections.is_empty() {
                query.push(format!("sections={}", config.sections.join(",")));
            }
            if let Some(count) = config.count {
                query.push(format!("count={count}"));
            }
            let mut path = format!("{prefix}/api/ip/{ip}");
            if !query.is_empty() {
                path.push('?');
                path.push_str(&query.join("&"));
            }
            path
        }
        ApiFlavour::Opentip => format!("{prefix}/api/v1/search/ip?request={ip}"),
    };
    let auth = match config.auth {
        AuthScheme::XApiKey => ("x-api-key".to_owned(), key.to_owned()),
        AuthScheme::Bearer => ("authorization".to_owned(), format!("Bearer {key}")),
        AuthScheme::Basic => (
            "authorization".to_owned(),
            format!("Basic {}", crate::secrets::basic_token(key)),
        ),
    };
    Ok(HttpRequest {
        https: config.base_url.https,
        authority: config.base_url.authority.clone(),
        path_with_query,
        headers: vec![
            auth,
            ("accept".to_owned(), "application/json".to_owned()),
            ("user-agent".to_owned(), USER_AGENT.to_owned()),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Purpose;
    use crate::settings::empty as empty_settings;

    fn config(vars: &[(&str, &str)], purpose: Purpose) -> Config {
        let vars: Vec<(String, String)> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::resolve(
            &empty_settings(),
            &|k| vars.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()),
            purpose,
        )
        .unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        crate::ip::parse_ip(s).unwrap()
    }

    #[test]
    fn tip_request_with_default_sections_and_x_api_key() {
        let r = build_request(
            &config(&[("TIP_API_KEY", "k3y")], Purpose::Verdict),
            ip("45.9.148.108"),
        )
        .unwrap();
        assert_eq!(
            r.url(),
            "https://tip.kaspersky.com/api/ip/45.9.148.108?sections=LicenseInfo,Zone,IpGeneralInfo"
        );
        assert_eq!(r.headers[0], ("x-api-key".into(), "k3y".into()));
        assert!(
            r.headers
                .contains(&("accept".into(), "application/json".into()))
        );
    }

    #[test]
    fn tip_report_request_asks_for_everything_with_count() {
        let r = build_request(
            &config(&[("TIP_API_KEY", "k"), ("TIP_COUNT", "5")], Purpose::Report),
            ip("2001:db8::1"),
        )
        .unwrap();
        assert_eq!(
            r.url(),
            "https://tip.kaspersky.com/api/ip/2001:db8::1?count=5"
        );
    }

    #[test]
    fn opentip_request_and_base_url_prefix() {
        let r = build_request(
            &config(
                &[
                    ("TIP_API", "opentip"),
                    ("TIP_API_KEY", "k"),
                    ("TIP_BASE_URL", "http://127.0.0.1:9/proxy/"),
                ],
                Purpose::Verdict,
            ),
            ip("8.8.8.8"),
        )
        .unwrap();
        assert_eq!(
            r.url(),
            "http://127.0.0.1:9/proxy/api/v1/search/ip?request=8.8.8.8"
        );
        assert!(!r.https);
    }

    #[test]
    fn bearer_and_basic_auth() {
        let r = build_request(
            &config(
                &[("TIP_API_KEY", "tok"), ("TIP_AUTH", "bearer")],
                Purpose::Verdict,
            ),
            ip("1.1.1.1"),
        )
        .unwrap();
        assert_eq!(r.headers[0], ("authorization".into(), "Bearer tok".into()));
        let r = build_request(
            &config(
                &[
                    ("TIP_API_KEY", "Aladdin:open sesame"),
                    ("TIP_AUTH", "basic"),
                ],
                Purpose::Verdict,
            ),
            ip("1.1.1.1"),
        )
        .unwrap();
        assert_eq!(
            r.headers[0],
            (
                "authorization".into(),
                "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==".into()
            )
        );
    }

    #[test]
    fn no_key_no_request() {
        assert!(matches!(
            build_request(&config(&[], Purpose::Verdict), ip("1.1.1.1")),
            Err(Error::Config(_))
        ));
    }

    #[test]
    fn debug_redacts_auth() {
        let r = build_request(
            &config(&[("TIP_API_KEY", "super-secret")], Purpose::Verdict),
            ip("1.1.1.1"),
        )
        .unwrap();
        assert!(!format!("{r:?}").contains("super-secret"));
    }
}
