//! `tip-enrich gate`: runs an IP-reputation gate component (a `wasi:http`
//! proxy) in front of an origin, one fresh instance per request, on the
//! engine, linker and stores of [`crate::serve`].
//!
//! What differs from `serve`:
//!
//! - **The client address is the host's to write.** Before the guest sees a
//!   request, [`write_client_address`] puts the connection's peer into the
//!   configured header ([`ClientIpHeader`]) and drops every copy the client
//!   sent, unless the peer is a trusted proxy ([`Cidr`] list), whose copy is
//!   kept with the peer appended where the format allows. A client can
//!   never choose the address it is judged by.
//! - **Bodies stream.** The request body goes to the guest as it arrives
//!   (nothing is collected), through [`Bounded`] with only an idle gap
//!   ([`GateOptions::body_idle_timeout`]): no total deadline and no size
//!   cap, so an upload of any size passes while it keeps moving. A request
//!   takes its slot once its head is in.
//! - **Egress**: the lookup's policy for the API, and the origin's authority
//!   live and streamed ([`crate::egress::Hooks::also_live`]).
//!
//! The request budget (epoch deadline and wall clock, from instantiation to
//! the last byte of the answer) is not refreshed while a body streams: the
//! gate's default is an hour, so a long download is never cut, while a
//! guest that spins still ends.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::BodyExt;
use tokio::net::TcpListener;
use wasmtime_wasi_http::Error as HttpError;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;

use crate::bounded::{BodyError, Bounded, Limits};
use crate::serve::{ServeOptions, Service, accept};

/// The gate component built from this checkout by `build.rs` (world `ip-gate`).
pub const GATE_COMPONENT: &[u8] = include_bytes!(env!("TIP_ENRICH_GATE_COMPONENT_PATH"));

/// The header the client address travels in, between the host and the gate
/// component (`tip_gate_client_ip_header`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientIpHeader {
    /// `x-forwarded-for: client, proxy1, proxy2`.
    XForwardedFor,
    /// RFC 7239 `forwarded: for=client, for=proxy1`.
    Forwarded,
    /// Spin's `spin-client-addr: ip:port`.
    SpinClientAddr,
    /// `x-real-ip: ip`.
    XRealIp,
    /// `true-client-ip: ip`.
    TrueClientIp,
}

impl ClientIpHeader {
    /// Every header, by its name.
    pub const ALL: [ClientIpHeader; 5] = [
        ClientIpHeader::XForwardedFor,
        ClientIpHeader::Forwarded,
        ClientIpHeader::SpinClientAddr,
        ClientIpHeader::XRealIp,
        ClientIpHeader::TrueClientIp,
    ];

    /// The header's name, lower-case.
    pub fn name(self) -> &'static str {
        match self {
            ClientIpHeader::XForwardedFor => "x-forwarded-for",
            ClientIpHeader::Forwarded => "forwarded",
            ClientIpHeader::SpinClientAddr => "spin-client-addr",
            ClientIpHeader::XRealIp => "x-real-ip",
            ClientIpHeader::TrueClientIp => "true-client-ip",
        }
    }

    /// The header named `name` (any case).
    pub fn parse(name: &str) -> Result<ClientIpHeader, String> {
        let name = name.trim();
        Self::ALL
            .into_iter()
            .find(|h| h.name().eq_ignore_ascii_case(name))
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|h| h.name()).collect();
                format!("{name:?}: use one of {}", names.join(", "))
            })
    }
}

/// An address block, `ADDR/PREFIX` (a bare address is the one address).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// `192.0.2.0/24`, `2001:db8::/32`, `127.0.0.2`.
    pub fn parse(text: &str) -> Result<Cidr, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?}: not an address or ADDR/PREFIX block"))?;
        let max = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("{text:?}: the prefix must be 0 to {max}"))?,
        };
        Ok(Cidr { network, prefix })
    }

    /// A comma-separated list (empty: none).
    pub fn parse_list(text: &str) -> Result<Vec<Cidr>, String> {
        text.split(',')
            .filter(|s| !s.trim().is_empty())
            .map(Cidr::parse)
            .collect()
    }

    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as
    /// its IPv4 address).
    pub fn contains(&self, ip: IpAddr) -> bool {
        let bits = |ip: IpAddr| -> (u128, u32) {
            match ip.to_canonical() {
                IpAddr::V4(v4) => (u128::from(u32::from(v4)) << 96, 32),
                IpAddr::V6(v6) => (u128::from(v6), 128),
            }
        };
        let (net, net_len) = bits(self.network);
        let (addr, addr_len) = bits(ip);
        if net_len != addr_len {
            return false;
        }
        let mask = match self.prefix {
            0 => 0,
            p => u128::MAX << (128 - u32::from(p)),
        };
        net & mask == addr & mask
    }
}

/// `ip` as an RFC 7239 node with its port: `"192.0.2.1:4711"`, `"[2001:db8::1]:4711"`
/// (quoted: a colon is not a token character).
fn forwarded_node(peer: SocketAddr) -> String {
    match peer.ip().to_canonical() {
        IpAddr::V4(v4) => format!("for=\"{v4}:{}\"", peer.port()),
        IpAddr::V6(v6) => format!("for=\"[{v6}]:{}\"", peer.port()),
    }
}

/// The values of every copy of `name`, joined with `, ` (a list header's
/// copies are one list), or `None` when there is none or one is not text.
fn joined(headers: &HeaderMap, name: &HeaderName) -> Option<String> {
    let values: Vec<&str> = headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().ok())
        .collect::<Option<_>>()?;
    let values: Vec<&str> = values
        .into_iter()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .collect();
    (!values.is_empty()).then(|| values.join(", "))
}

/// Writes the client address into `headers` for the gate component: the
/// one function that decides what address a request is judged by.
///
/// From a peer that is not `trusted`, every copy of `header` the client
/// sent is dropped and the peer written instead (`ip`; `ip:port` for
/// `spin-client-addr`; a `for=` node for `forwarded`). From a `trusted`
/// proxy, the proxy's copy is kept: list formats (`x-forwarded-for`,
/// `forwarded`) get the peer appended as the last hop, single-address ones
/// keep the proxy's value (the last copy if it sent several); without a
/// copy (or one that is not text), the peer is written as for an untrusted one.
pub fn write_client_address(
    headers: &mut HeaderMap,
    header: ClientIpHeader,
    peer: SocketAddr,
    trusted: bool,
) {
    let name = HeaderName::from_static(header.name());
    let ip = peer.ip().to_canonical();
    let from_proxy = if trusted {
        match header {
            ClientIpHeader::XForwardedFor | ClientIpHeader::Forwarded => joined(headers, &name),
            _ => headers
                .get_all(&name)
                .iter()
                .next_back()
                .and_then(|v| v.to_str().ok())
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty()),
        }
    } else {
        None
    };
    let own = match header {
        ClientIpHeader::XForwardedFor | ClientIpHeader::XRealIp | ClientIpHeader::TrueClientIp => {
            ip.to_string()
        }
        ClientIpHeader::SpinClientAddr => SocketAddr::new(ip, peer.port()).to_string(),
        ClientIpHeader::Forwarded => forwarded_node(peer),
    };
    let value = match (header, from_proxy) {
        (ClientIpHeader::XForwardedFor | ClientIpHeader::Forwarded, Some(list)) => {
            format!("{list}, {own}")
        }
        (_, Some(kept)) => kept,
        (_, None) => own,
    };
    headers.remove(&name);
    // Every part is a header value already, or an address; never invalid.
    if let Ok(value) = HeaderValue::from_str(&value) {
        headers.insert(name, value);
    }
}

/// Removes the headers a `connection` header names (RFC 9110 7.6.1): they
/// were for the hop that ends here. wasi-http hides `connection` itself from
/// a guest, so the guest cannot do this; the host does it, for the request
/// before the guest sees it and for the origin's answer
/// ([`crate::egress::Hooks::also_live`]).
pub fn drop_connection_listed(headers: &mut HeaderMap) {
    let listed: Vec<HeaderName> = headers
        .get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in listed {
        headers.remove(&name);
    }
}

/// What the gate adds to [`ServeOptions`].
#[derive(Debug, Clone)]
pub struct GateOptions {
    /// The header the host writes the client address into.
    pub client_ip_header: ClientIpHeader,
    /// Peers whose copy of that header is kept.
    pub trusted_proxies: Vec<Cidr>,
    /// Longest gap in a request body before the request is ended.
    pub body_idle_timeout: Duration,
}

/// A gate: the component behind [`Service`]'s instance setup, with the
/// gate's handling of each request.
pub struct Gate {
    service: Arc<Service>,
    options: Arc<GateOptions>,
}

impl Gate {
    /// Loads `wasm` (a `wasi:http` proxy) with `serve`'s linker: WASI,
    /// wasi-http, `wasi:config` and `wasi:keyvalue`.
    pub fn new(wasm: &[u8], serve: ServeOptions, options: GateOptions) -> wasmtime::Result<Gate> {
        Ok(Gate {
            service: Arc::new(Service::new(wasm, serve)?),
            options: Arc::new(options),
        })
    }
}

/// A body error as the guest sees it when it reads the request body.
fn body_error(e: BodyError<hyper::Error>) -> HttpError {
    match e {
        BodyError::Deadline(_) | BodyError::Idle(_) => HttpError::ConnectionReadTimeout,
        BodyError::TooLarge(max) => HttpError::HttpRequestBodySize(Some(max)),
        BodyError::Read(e) => HttpError::Hyper(e),
    }
}

/// One request: the client address written, the body streamed, a fresh instance.
async fn handle(
    service: Arc<Service>,
    options: Arc<GateOptions>,
    request: hyper::Request<hyper::body::Incoming>,
    peer: SocketAddr,
) -> hyper::Response<HyperOutgoingBody> {
    let (mut parts, body) = request.into_parts();
    drop_connection_listed(&mut parts.headers);
    let trusted = options
        .trusted_proxies
        .iter()
        .any(|c| c.contains(peer.ip()));
    write_client_address(&mut parts.headers, options.client_ip_header, peer, trusted);
    // The idle gap counts from the slot: while the request waits for one,
    // nothing reads its body, and the client's pause is not its own.
    let slot = service.slot().await;
    let limits = Limits {
        total: None,
        idle: Some(options.body_idle_timeout),
        max_bytes: None,
    };
    let body = Bounded::new(body, limits).map_err(body_error);
    let answer = service
        .run(hyper::Request::from_parts(parts, body), slot)
        .await;
    service.answer(answer)
}

/// Accepts connections on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    gate: Gate,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let options = gate.options;
    accept(
        listener,
        gate.service,
        shutdown,
        move |service, request, peer| handle(service, options.clone(), request, peer),
    )
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// The header's copies after [`write_client_address`].
    fn written(
        header: ClientIpHeader,
        sent: &[&str],
        peer_addr: &str,
        trusted: bool,
    ) -> Vec<String> {
        let mut headers = HeaderMap::new();
        let name = HeaderName::from_static(header.name());
        for v in sent {
            headers.append(&name, HeaderValue::from_str(v).unwrap());
        }
        headers.insert("accept", HeaderValue::from_static("text/html"));
        write_client_address(&mut headers, header, peer(peer_addr), trusted);
        assert_eq!(headers["accept"], "text/html", "other headers are kept");
        headers
            .get_all(&name)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn an_untrusted_peer_replaces_every_copy_the_client_sent() {
        use ClientIpHeader::*;
        let spoof = ["45.9.148.108", "8.8.8.8, 1.1.1.1"];
        let v4 = "203.0.113.7:4711";
        assert_eq!(written(XForwardedFor, &spoof, v4, false), ["203.0.113.7"]);
        assert_eq!(written(XRealIp, &spoof, v4, false), ["203.0.113.7"]);
        assert_eq!(written(TrueClientIp, &spoof, v4, false), ["203.0.113.7"]);
        assert_eq!(
            written(SpinClientAddr, &spoof, v4, false),
            ["203.0.113.7:4711"]
        );
        assert_eq!(
            written(Forwarded, &["for=45.9.148.108"], v4, false),
            ["for=\"203.0.113.7:4711\""]
        );
        // And with nothing sent.
        assert_eq!(written(XForwardedFor, &[], v4, false), ["203.0.113.7"]);
    }

    #[test]
    fn ipv6_peers_are_written_in_each_format() {
        use ClientIpHeader::*;
        let v6 = "[2001:db8::1]:443";
        assert_eq!(written(XForwardedFor, &[], v6, false), ["2001:db8::1"]);
        assert_eq!(
            written(SpinClientAddr, &[], v6, false),
            ["[2001:db8::1]:443"]
        );
        assert_eq!(
            written(Forwarded, &[], v6, false),
            ["for=\"[2001:db8::1]:443\""]
        );
        // An IPv4 client on a dual-stack socket is its IPv4 address.
        assert_eq!(
            written(XForwardedFor, &[], "[::ffff:192.0.2.9]:1", false),
            ["192.0.2.9"]
        );
    }

    #[test]
    fn a_trusted_proxy_keeps_its_copy_and_the_peer_is_appended_to_lists() {
        use ClientIpHeader::*;
        let proxy = "127.0.0.2:5000";
        assert_eq!(
            written(XForwardedFor, &["45.9.148.108"], proxy, true),
            ["45.9.148.108, 127.0.0.2"]
        );
        // Several copies are one list, in order.
        assert_eq!(
            written(XForwardedFor, &["1.2.3.4, 5.6.7.8", "9.9.9.9"], proxy, true),
            ["1.2.3.4, 5.6.7.8, 9.9.9.9, 127.0.0.2"]
        );
        assert_eq!(
            written(Forwarded, &["for=45.9.148.108;proto=https"], proxy, true),
            ["for=45.9.148.108;proto=https, for=\"127.0.0.2:5000\""]
        );
        assert_eq!(
            written(SpinClientAddr, &["45.9.148.108:999"], proxy, true),
            ["45.9.148.108:999"]
        );
        assert_eq!(
            written(XRealIp, &["8.8.8.8", "45.9.148.108"], proxy, true),
            ["45.9.148.108"]
        );
        assert_eq!(
            written(TrueClientIp, &["45.9.148.108"], proxy, true),
            ["45.9.148.108"]
        );
    }

    #[test]
    fn a_trusted_proxy_without_a_copy_is_the_client() {
        use ClientIpHeader::*;
        let proxy = "127.0.0.2:5000";
        assert_eq!(written(XForwardedFor, &[], proxy, true), ["127.0.0.2"]);
        assert_eq!(written(XForwardedFor, &[" "], proxy, true), ["127.0.0.2"]);
        assert_eq!(written(XRealIp, &[], proxy, true), ["127.0.0.2"]);
        assert_eq!(
            written(SpinClientAddr, &[], proxy, true),
            ["127.0.0.2:5000"]
        );
    }

    #[test]
    fn headers_named_by_connection_are_dropped() {
        let mut headers = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, X-Hop"),
            ("connection", " x-other ,, not a name"),
            ("x-hop", "1"),
            ("x-other", "2"),
            ("x-kept", "3"),
        ] {
            headers.append(k, HeaderValue::from_static(v));
        }
        drop_connection_listed(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(left, ["connection", "x-kept"]);
    }

    #[test]
    fn header_names_parse_in_any_case() {
        for h in ClientIpHeader::ALL {
            assert_eq!(ClientIpHeader::parse(&h.name().to_uppercase()), Ok(h));
        }
        assert!(ClientIpHeader::parse("x-client-ip").is_err());
    }

    #[test]
    fn blocks_contain_their_addresses_only() {
        let net = Cidr::parse("192.0.2.0/24").unwrap();
        assert!(net.contains("192.0.2.255".parse().unwrap()));
        assert!(net.contains("::ffff:192.0.2.1".parse().unwrap()));
        assert!(!net.contains("192.0.3.0".parse().unwrap()));
        assert!(!net.contains("::c000:201".parse().unwrap()));
        let one = Cidr::parse("127.0.0.2").unwrap();
        assert!(one.contains("127.0.0.2".parse().unwrap()));
        assert!(!one.contains("127.0.0.1".parse().unwrap()));
        let v6 = Cidr::parse("2001:db8::/32").unwrap();
        assert!(v6.contains("2001:db8:ffff::1".parse().unwrap()));
        assert!(!v6.contains("2001:db9::".parse().unwrap()));
        let all = Cidr::parse("0.0.0.0/0").unwrap();
        assert!(all.contains("8.8.8.8".parse().unwrap()));
        assert!(!all.contains("::1".parse().unwrap()));
        assert_eq!(Cidr::parse_list(" 10.0.0.0/8, ,::1 ").unwrap().len(), 2);
        for bad in ["10.0.0.0/33", "::/129", "example.com", "10.0.0.0/x", ""] {
            assert!(Cidr::parse(bad).is_err(), "{bad}");
        }
    }
}
