//! The relay embedded in `coderd` (served at `/derp`), its STUN listener,
//! and the relay map the coordinator hands to peers: the embedded region
//! plus any regions of self-hosted `derper`s from `--derp-config-path`.

use std::net::SocketAddr;
use std::path::Path;

use client::sdk::{RelayMap, RelayNode, RelayRegion};
use url::Url;

/// The embedded relay's region.
pub const EMBEDDED_REGION_ID: u16 = 999;

#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RelayError {
    #[error("start the embedded relay: {0}")]
    Server(#[from] derp::server::ServerError),
    #[error("listen for STUN on {addr}: {source}")]
    Stun {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("read --derp-config-path {path}: {source}")]
    ConfigRead {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("--derp-config-path {path} is not a relay map: {source}")]
    ConfigParse {
        path: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("--derp-config-path {path}: region {region} is also the embedded relay's region")]
    RegionClash { path: String, region: u16 },
}

/// The embedded relay and STUN server; both stop when this is dropped.
pub struct EmbeddedRelay {
    pub server: derp::Server,
    pub stun: Option<derp::stun::StunServer>,
}

impl EmbeddedRelay {
    pub async fn spawn(stun_address: Option<SocketAddr>) -> Result<EmbeddedRelay, RelayError> {
        let server = derp::Server::spawn(derp::ServerConfig::default())?;
        let stun = match stun_address {
            Some(addr) => Some(
                derp::stun::StunServer::spawn(addr)
                    .await
                    .map_err(|source| RelayError::Stun { addr, source })?,
            ),
            None => None,
        };
        Ok(EmbeddedRelay { server, stun })
    }

    pub fn stun_addr(&self) -> Option<SocketAddr> {
        self.stun.as_ref().map(|s| s.local_addr())
    }
}

/// Builds the relay map: the embedded region (if any) reached through the
/// access URL, plus extra regions from a JSON file in the same format as
/// `GET /api/v2/derp-map`.
pub fn relay_map(
    access_url: &Url,
    embedded: Option<&EmbeddedRelay>,
    extra: Option<&Path>,
) -> Result<RelayMap, RelayError> {
    let mut map = RelayMap::default();
    if let Some(relay) = embedded {
        let mut url = access_url.clone();
        url.set_path("/derp");
        let stun = relay.stun_addr().map(|addr| {
            let host = access_url.host_str().unwrap_or("127.0.0.1");
            if host.contains(':') {
                format!("[{host}]:{}", addr.port())
            } else {
                format!("{host}:{}", addr.port())
            }
        });
        map.regions.insert(
            EMBEDDED_REGION_ID,
            RelayRegion {
                region_id: EMBEDDED_REGION_ID,
                region_code: "coder".into(),
                region_name: "Embedded relay".into(),
                nodes: vec![RelayNode { name: "embedded".into(), url: url.to_string(), stun }],
            },
        );
    }
    if let Some(path) = extra {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|source| RelayError::ConfigRead { path: p.clone(), source })?;
        let more: RelayMap = serde_json::from_str(&text)
            .map_err(|source| RelayError::ConfigParse { path: p.clone(), source })?;
        for (id, mut region) in more.regions {
            if embedded.is_some() && id == EMBEDDED_REGION_ID {
                return Err(RelayError::RegionClash { path: p, region: id });
            }
            region.region_id = id;
            map.regions.insert(id, region);
        }
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn extra_regions_join_the_map() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("derp.json");
        std::fs::write(
            &path,
            r#"{"regions":{"7":{"region_id":7,"region_code":"fra","region_name":"Frankfurt",
                "nodes":[{"name":"fra1","url":"https://fra1.example.com/derp","stun":"fra1.example.com:3478"}]}}}"#,
        )
        .unwrap();
        let url = Url::parse("https://coder.example.com").unwrap();
        let map = relay_map(&url, None, Some(&path)).unwrap();
        assert_eq!(map.regions[&7].nodes[0].name, "fra1");
        std::fs::write(&path, "{not json").unwrap();
        assert!(matches!(relay_map(&url, None, Some(&path)), Err(RelayError::ConfigParse { .. })));
    }
}
