//! Port mapping: asking the gateway to forward a public UDP port to the
//! node's socket, so peers behind any NAT can reach it directly.
//!
//! Three protocols, as home routers speak them (and Tailscale's portmapper
//! uses): PCP (RFC 6887), its predecessor NAT-PMP (RFC 6886), both on the
//! gateway's UDP port 5351, and UPnP IGD (SSDP discovery, SOAP over HTTP).
//! Each has a sans-IO codec ([`natpmp`], [`pcp`], [`upnp`]) that builds
//! requests and parses the router's bytes into types; `client.rs` does
//! the exchanges ([`map`], [`unmap`], [`probe`]); `service.rs` is what a
//! [`MeshEndpoint`](crate::MeshEndpoint) runs in the background when
//! [`PortMapConfig::protocols`] is not empty: find the default gateway, try
//! the protocols in order until one maps the socket's port, announce the
//! public address as an endpoint (as a STUN answer is), renew the mapping
//! at half its lifetime, and delete it when the endpoint closes or drops.
//! Nothing waits for it: the node is published and connects before any
//! answer comes.

mod client;
pub mod natpmp;
pub mod pcp;
mod service;
pub mod upnp;

use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::Duration;

pub use client::{gateway, map, probe, renew, unmap, Gateway};
pub use service::PortMapStatus;
pub(crate) use service::PortMapper;

/// A port-mapping protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[non_exhaustive]
pub enum Protocol {
    /// Port Control Protocol (RFC 6887).
    Pcp,
    /// NAT Port Mapping Protocol (RFC 6886).
    NatPmp,
    /// UPnP Internet Gateway Device.
    Upnp,
}

impl Protocol {
    /// Every protocol, in the order they are tried.
    pub const ALL: [Protocol; 3] = [Protocol::Pcp, Protocol::NatPmp, Protocol::Upnp];
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Pcp => "PCP",
            Protocol::NatPmp => "NAT-PMP",
            Protocol::Upnp => "UPnP",
        })
    }
}

/// A mapping the gateway granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// How it was asked for.
    pub protocol: Protocol,
    /// The public address peers reach the socket at.
    pub external: SocketAddrV4,
    /// The socket's port.
    pub internal_port: u16,
    /// How long it lasts unless renewed.
    pub lifetime: Duration,
    kind: MappingKind,
}

/// What renewing or deleting a mapping needs to name it.
#[derive(Debug, Clone, PartialEq, Eq)]
enum MappingKind {
    NatPmp,
    Pcp { nonce: [u8; 12] },
    Upnp { service: upnp::Service },
}

/// How a [`MeshEndpoint`](crate::MeshEndpoint) maps its port.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PortMapConfig {
    /// The protocols to try, in order; empty (the default) maps nothing.
    pub protocols: Vec<Protocol>,
    /// The lifetime asked for; the mapping is renewed at half of what the
    /// gateway grants.
    pub lifetime: Duration,
    /// How long each protocol may take to answer.
    pub timeout: Duration,
    /// How long to wait before trying again after every protocol failed.
    pub retry: Duration,
}

impl Default for PortMapConfig {
    fn default() -> Self {
        Self {
            protocols: Vec::new(),
            lifetime: Duration::from_secs(2 * 60 * 60),
            timeout: Duration::from_secs(2),
            retry: Duration::from_secs(5 * 60),
        }
    }
}

impl PortMapConfig {
    /// Every protocol, with the default timers.
    pub fn all() -> Self {
        Self { protocols: Protocol::ALL.to_vec(), ..Self::default() }
    }

    /// The protocols `CODER_PORT_MAPPING` names: `1`/`true`/`all` for every
    /// one, or a comma-separated list of `pcp`, `nat-pmp`, `upnp`; unset,
    /// empty, `0` or `false` for none. Off unless asked: the agent and CLI
    /// also run in tests and CI, where the machine's own router must not be
    /// asked to open ports.
    pub fn from_env() -> Self {
        let value = std::env::var("CODER_PORT_MAPPING").unwrap_or_default();
        Self { protocols: parse_protocols(&value), ..Self::default() }
    }
}

fn parse_protocols(value: &str) -> Vec<Protocol> {
    match value.trim().to_ascii_lowercase().as_str() {
        "" | "0" | "false" | "off" => Vec::new(),
        "1" | "true" | "on" | "all" => Protocol::ALL.to_vec(),
        list => list
            .split(',')
            .filter_map(|p| match p.trim() {
                "pcp" => Some(Protocol::Pcp),
                "nat-pmp" | "natpmp" | "pmp" => Some(Protocol::NatPmp),
                "upnp" => Some(Protocol::Upnp),
                other => {
                    tracing::warn!(protocol = other, "CODER_PORT_MAPPING: unknown protocol");
                    None
                }
            })
            .collect(),
    }
}

/// Which port-mapping protocols the gateway speaks (`coder netcheck`).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
#[non_exhaustive]
pub struct Probe {
    /// The default gateway asked, if there is one.
    pub gateway: Option<Ipv4Addr>,
    /// It answered a PCP ANNOUNCE.
    pub pcp: bool,
    /// It answered a NAT-PMP external-address request.
    pub nat_pmp: bool,
    /// It answered SSDP and described a WAN connection service.
    pub upnp: bool,
}

/// Why a mapping failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PortMapError {
    /// Sockets.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// No answer before the deadline.
    #[error("the gateway did not answer in time")]
    Timeout,
    /// The gateway speaks another version (a NAT-PMP-only one asked in PCP).
    #[error("the gateway does not speak {0}")]
    Unsupported(Protocol),
    /// The gateway answered with an error code.
    #[error("the gateway refused the {protocol} mapping (result code {code})")]
    Refused {
        /// Which protocol.
        protocol: Protocol,
        /// Its result code.
        code: u16,
    },
    /// The answer grants nothing usable (no address, port or lifetime).
    #[error("the gateway's {0} answer maps nothing usable")]
    Unusable(Protocol),
    /// A UPnP answer was not understood, or was a UPnP error.
    #[error(transparent)]
    Upnp(upnp::ParseError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_from_the_environment_value() {
        assert_eq!(parse_protocols(""), Vec::new());
        assert_eq!(parse_protocols("0"), Vec::new());
        assert_eq!(parse_protocols("true"), Protocol::ALL.to_vec());
        assert_eq!(parse_protocols("upnp, PCP"), vec![Protocol::Upnp, Protocol::Pcp]);
        assert_eq!(parse_protocols("nat-pmp,bogus"), vec![Protocol::NatPmp]);
    }
}
