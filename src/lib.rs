//! tip-enrich: IP enrichment from the Kaspersky Threat Intelligence Portal,
//! as a pure core that the WebAssembly components and the host link.
//!
//! This crate is the facade: what the components (`component/`, `service/`),
//! the host (`host-harness/`), fuzzing and the benchmark use is re-exported
//! here, documented; everything else is crate-private. Start reading at
//! [`Client`] (the flow over a [`Transport`]), [`settings`] (every setting,
//! once) and [`json`] (every JSON shape, once). ARCHITECTURE.md has the map.
//!
//! The core does no IO: requests go through a [`Transport`] (wasi-http in the
//! components, a simulated fake in tests), settings through an environment
//! lookup. One module, `wasi_http`, touches WASI; it is compiled for wasm32
//! only.

#![deny(missing_docs)]

mod answers;
pub mod bindings;
mod client;
mod config;
mod error;
pub mod events;
mod ip;
pub mod json;
mod lenient;
mod request;
mod response;
mod schedule;
mod secrets;
pub mod settings;
pub mod stix;
mod text;
mod transport;
mod verdict;
#[cfg(target_arch = "wasm32")]
mod wasi_http;

pub use answers::{
    ANSWER_PREFIX, DEFAULT_MAX_ENTRIES, KEY_PREFIX, KeyValue, LEASE_PREFIX, MemoryKv, PROBE_PREFIX,
    QUOTA_PREFIX, StoreError, entry_times, quota_entry, utc_timestamp,
};
pub use client::Client;
pub use config::{BaseUrl, Config, EnvLookup, Purpose, VerdictMap, lookup_in};
pub use error::{Error, excerpt, kind as error_kind, parse_retry_after, status_error};
pub use ip::{IANA_REGISTRY_AS_OF, IpError, SpecialBlock, parse_ip, special_block};
pub use request::{HttpRequest, build_request, is_auth_header};
pub use response::{
    CategoryWithZone, IpGeneralInfo, IpWhoIs, LicenseInfo, VerdictSections, parse_answer,
};
pub use secrets::Secrets;
pub use text::{bounded, prefix};
pub use transport::{HttpResponse, Limits, SendError, Ticket, Transport};
pub use verdict::{SUSPICIOUS_SCORES, from_sections, soar_verdict};
#[cfg(target_arch = "wasm32")]
pub use wasi_http::{WasiHttp, environment, respond, with_client};
