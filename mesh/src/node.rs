//! The node record a peer publishes through the coordinator, and mesh addressing.
//!
//! A [`Node`] says who a peer is (its keys), where it can be reached (relay home,
//! UDP endpoint candidates) and which mesh addresses it owns. Mesh addresses are
//! derived from the node id alone ([`mesh_addresses`]), so the coordinator can
//! check that a peer claims only its own ([`Node::check_addresses`]):
//!
//! - IPv6: `fd5c:9a3e:71b2::/48` (a ULA prefix with a random global id, RFC 4193),
//!   the node id in the low 64 bits, as a /128;
//! - IPv4 (optional): `100.64.0.0/10` (shared address space, RFC 6598) plus the
//!   node id, for node ids `1..=4_194_302` only, so addresses never collide.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::key::{DiscoKey, NodeKey, QuicKey};

/// The version of the node record and disco protocol this crate speaks.
pub const PROTOCOL_VERSION: u16 = 1;

/// The mesh's IPv6 ULA /48 prefix (`fd5c:9a3e:71b2::/48`).
pub const MESH_IPV6_PREFIX: Ipv6Addr = Ipv6Addr::new(0xfd5c, 0x9a3e, 0x71b2, 0, 0, 0, 0, 0);

/// The mesh's IPv4 network (`100.64.0.0/10`).
pub const MESH_IPV4_NETWORK: Ipv4Addr = Ipv4Addr::new(100, 64, 0, 0);

/// Host bits of the IPv4 network: 22.
const IPV4_HOST_BITS: u32 = 22;

/// A relay region's id, as listed in the coordinator's relay map.
pub type RegionId = u16;

/// A node's id, assigned by the coordinator.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct NodeId(pub u64);

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// The addresses a node owns inside the mesh.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MeshAddresses {
    /// The node's /128 in [`MESH_IPV6_PREFIX`].
    pub ipv6: Ipv6Addr,
    /// The node's /32 in [`MESH_IPV4_NETWORK`], for small node ids.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ipv4: Option<Ipv4Addr>,
}

/// The mesh addresses of node `id`.
pub fn mesh_addresses(id: NodeId) -> MeshAddresses {
    let prefix = u128::from(MESH_IPV6_PREFIX);
    let ipv6 = Ipv6Addr::from(prefix | u128::from(id.0));
    let host_max = (1u64 << IPV4_HOST_BITS) - 1;
    // Host part 0 and all-ones are the network and broadcast addresses.
    let ipv4 = (id.0 >= 1 && id.0 < host_max).then(|| {
        let network = u32::from(MESH_IPV4_NETWORK);
        // The range check above makes the id fit in 22 bits.
        let host = u32::try_from(id.0).unwrap_or(0);
        Ipv4Addr::from(network | host)
    });
    MeshAddresses { ipv6, ipv4 }
}

/// A peer as the coordinator announces it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Node {
    /// Coordinator-assigned id; mesh addresses derive from it.
    pub id: NodeId,
    /// WireGuard static key and relay address.
    pub key: NodeKey,
    /// Key that seals path probes.
    pub disco_key: DiscoKey,
    /// The ed25519 key the peer's QUIC certificate must carry.
    pub quic_key: QuicKey,
    /// The relay region the node is connected to ("home"), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_relay: Option<RegionId>,
    /// Measured latency to each relay region, in milliseconds. In JSON an
    /// object keyed by the region id as a string.
    #[serde(default, with = "region_keys")]
    pub relay_latency_ms: BTreeMap<RegionId, f64>,
    /// UDP endpoint candidates: local interfaces and STUN-observed addresses.
    #[serde(default)]
    pub endpoints: Vec<SocketAddr>,
    /// Those of [`Self::endpoints`] that are port mappings its gateway
    /// granted (PCP, NAT-PMP, UPnP), so a peer that goes direct through one
    /// can say so (`coder ping`: "via port mapping"). Left out when empty;
    /// a record without it (an older node) maps nothing as far as peers know.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mapped: Vec<SocketAddr>,
    /// The mesh addresses the node claims.
    pub addresses: MeshAddresses,
    /// [`PROTOCOL_VERSION`] of the node's software.
    pub version: u16,
}

/// Why a node's claimed mesh addresses were refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AddressError {
    /// The claimed addresses are not the ones derived from the node id.
    #[error("node {id} claims {claimed:?}, but owns {owned:?}")]
    NotOwned {
        /// The node.
        id: NodeId,
        /// What it claimed.
        claimed: MeshAddresses,
        /// What [`mesh_addresses`] gives for its id.
        owned: MeshAddresses,
    },
}

impl Node {
    /// Checks that the node claims exactly the addresses its id owns.
    pub fn check_addresses(&self) -> Result<(), AddressError> {
        let owned = mesh_addresses(self.id);
        if self.addresses == owned {
            Ok(())
        } else {
            Err(AddressError::NotOwned { id: self.id, claimed: self.addresses, owned })
        }
    }
}

/// A map keyed by region id, as JSON object keys (strings) that parse back
/// even when the record is buffered first, as internally tagged messages are
/// (serde's buffered map keys do not turn strings into integers).
mod region_keys {
    use std::collections::BTreeMap;

    use serde::de::Error;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    use super::RegionId;

    pub(super) fn serialize<S: Serializer>(
        map: &BTreeMap<RegionId, f64>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        let keyed: BTreeMap<String, f64> = map.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        keyed.serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<BTreeMap<RegionId, f64>, D::Error> {
        BTreeMap::<String, f64>::deserialize(d)?
            .into_iter()
            .map(|(k, v)| {
                let region = k
                    .parse::<RegionId>()
                    .map_err(|_| D::Error::custom(format!("relay region {k:?} is not a number")))?;
                Ok((region, v))
            })
            .collect()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::key::{DiscoSecret, NodeSecret, QuicSecret};
    use proptest::prelude::*;
    use rand::SeedableRng;

    fn node(id: u64) -> Node {
        let mut rng = rand::rngs::StdRng::seed_from_u64(id);
        Node {
            id: NodeId(id),
            key: NodeSecret::generate(&mut rng).public(),
            disco_key: DiscoSecret::generate(&mut rng).public(),
            quic_key: QuicSecret::generate(&mut rng).public(),
            preferred_relay: Some(1),
            relay_latency_ms: BTreeMap::from([(1, 12.5), (2, 80.0)]),
            port_mapped: Vec::new(),
            endpoints: vec!["192.0.2.1:41641".parse().unwrap()],
            addresses: mesh_addresses(NodeId(id)),
            version: PROTOCOL_VERSION,
        }
    }

    #[test]
    fn addresses_of_small_and_large_ids() {
        let a = mesh_addresses(NodeId(1));
        assert_eq!(a.ipv6, "fd5c:9a3e:71b2::1".parse::<Ipv6Addr>().unwrap());
        assert_eq!(a.ipv4, Some(Ipv4Addr::new(100, 64, 0, 1)));
        let a = mesh_addresses(NodeId(0x0102_0304_0506_0708));
        assert_eq!(a.ipv6, "fd5c:9a3e:71b2:0:102:304:506:708".parse::<Ipv6Addr>().unwrap());
        assert_eq!(a.ipv4, None);
        assert_eq!(mesh_addresses(NodeId(0)).ipv4, None);
        let last = mesh_addresses(NodeId((1 << 22) - 2)).ipv4;
        assert_eq!(last, Some(Ipv4Addr::new(100, 127, 255, 254)));
        assert_eq!(mesh_addresses(NodeId((1 << 22) - 1)).ipv4, None);
    }

    #[test]
    fn node_json_shape() {
        let n = node(7);
        let json = serde_json::to_value(&n).unwrap();
        assert_eq!(json["id"], 7);
        assert!(json["key"].as_str().unwrap().starts_with("nodekey:"));
        assert!(json["disco_key"].as_str().unwrap().starts_with("discokey:"));
        assert_eq!(json["addresses"]["ipv6"], "fd5c:9a3e:71b2::7");
        assert_eq!(json["addresses"]["ipv4"], "100.64.0.7");
        assert_eq!(json["relay_latency_ms"]["2"], 80.0);
        let back: Node = serde_json::from_value(json).unwrap();
        assert_eq!(back, n);
    }

    /// Coordination messages are internally tagged, so serde buffers the
    /// node before decoding it: region keys must still parse.
    #[test]
    fn relay_latencies_survive_an_internally_tagged_message() {
        #[derive(Debug, Serialize, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum Message {
            Node { node: Node },
        }
        let n = node(7);
        let json = serde_json::to_string(&Message::Node { node: n.clone() }).unwrap();
        assert!(json.contains(r#""relay_latency_ms":{"1":12.5,"2":80.0}"#), "{json}");
        let Message::Node { node: back } = serde_json::from_str(&json).unwrap();
        assert_eq!(back, n);
        let bad = json.replace(r#""2":80.0"#, r#""two":80.0"#);
        let err = serde_json::from_str::<Message>(&bad).unwrap_err().to_string();
        assert!(err.contains("relay region \"two\" is not a number"), "{err}");
    }

    #[test]
    fn foreign_addresses_are_refused() {
        let mut n = node(7);
        assert!(n.check_addresses().is_ok());
        n.addresses = mesh_addresses(NodeId(8));
        assert!(matches!(n.check_addresses(), Err(AddressError::NotOwned { .. })));
    }

    proptest! {
        #[test]
        fn addresses_stay_in_their_networks(id in any::<u64>()) {
            let a = mesh_addresses(NodeId(id));
            prop_assert_eq!(u128::from(a.ipv6) >> 80, u128::from(MESH_IPV6_PREFIX) >> 80);
            prop_assert_eq!(u128::from(a.ipv6) as u64, id);
            if let Some(v4) = a.ipv4 {
                prop_assert_eq!(u32::from(v4) >> 22, u32::from(MESH_IPV4_NETWORK) >> 22);
                prop_assert_eq!(u64::from(u32::from(v4) & 0x3f_ffff), id);
            }
        }
    }
}
