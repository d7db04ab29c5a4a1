//! Helpers of `bad_input.rs`: the listening sockets of a process (from
//! `/proc`), plausible datagrams to corrupt, and the "still serving" checks
//! run after the barrage.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use codersdk::coordination::{Coordinator, PeerKind, PeerUpdate};
use codersdk::LoginWithPasswordRequest;
use rand::{RngCore, SeedableRng};
use url::Url;
use uuid::Uuid;

const DEADLINE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

#[derive(Debug)]
pub struct Socket {
    pub proto: Proto,
    pub addr: SocketAddr,
}

/// The inodes of the sockets `pid` has open.
fn socket_inodes(pid: u32) -> anyhow::Result<BTreeSet<u64>> {
    let mut inodes = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd"))?.flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else { continue };
        let target = target.to_string_lossy().into_owned();
        if let Some(inode) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
            inodes.insert(inode.parse()?);
        }
    }
    Ok(inodes)
}

/// `0100007F:1F90` (as `/proc/net/tcp` writes addresses) to a socket address.
fn proc_addr(text: &str, v6: bool) -> anyhow::Result<SocketAddr> {
    let (ip, port) = text.split_once(':').context("no port")?;
    let port = u16::from_str_radix(port, 16)?;
    let ip = if v6 {
        let mut octets = [0u8; 16];
        for (i, word) in octets.chunks_mut(4).enumerate() {
            let w = u32::from_str_radix(ip.get(i * 8..i * 8 + 8).context("short v6")?, 16)?;
            word.copy_from_slice(&w.to_ne_bytes());
        }
        IpAddr::V6(Ipv6Addr::from(octets))
    } else {
        IpAddr::V4(Ipv4Addr::from(u32::from_str_radix(ip, 16)?.to_ne_bytes()))
    };
    Ok(SocketAddr::new(ip, port))
}

/// Sockets of `pid` that accept connections (TCP in LISTEN) or datagrams
/// from anyone (unconnected UDP).
pub fn listening_sockets(pid: u32) -> anyhow::Result<Vec<Socket>> {
    let inodes = socket_inodes(pid)?;
    let mut found = Vec::new();
    for (file, proto, v6, wanted_state) in [
        ("tcp", Proto::Tcp, false, "0A"),
        ("tcp6", Proto::Tcp, true, "0A"),
        ("udp", Proto::Udp, false, "07"),
        ("udp6", Proto::Udp, true, "07"),
    ] {
        let Ok(table) = std::fs::read_to_string(format!("/proc/{pid}/net/{file}")) else {
            continue;
        };
        for line in table.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(remote), Some(state), Some(inode)) =
                (cols.get(1), cols.get(2), cols.get(3), cols.get(9))
            else {
                continue;
            };
            let unconnected = proc_addr(remote, v6)?.port() == 0;
            if *state == wanted_state && unconnected && inodes.contains(&inode.parse()?) {
                found.push(Socket { proto, addr: proc_addr(local, v6)? });
            }
        }
    }
    Ok(found)
}

/// Valid STUN datagrams, to be cut and corrupted.
pub fn stun_packets() -> Vec<Vec<u8>> {
    let txid = derp::stun::TransactionId([3; 12]);
    vec![
        derp::stun::binding_request(txid),
        derp::stun::binding_response(txid, SocketAddr::from(([192, 0, 2, 1], 9))),
    ]
}

/// Datagrams that look like the mesh socket's three protocols.
pub fn mesh_packets(rng: &mut impl RngCore) -> Vec<Vec<u8>> {
    use mesh::disco::{Message, Ping, TxId};
    let mut seed = [0u8; 32];
    rng.fill_bytes(&mut seed);
    let stranger = mesh::DiscoSecret::from_bytes(seed);
    rng.fill_bytes(&mut seed);
    let someone = mesh::DiscoSecret::from_bytes(seed).public();
    let ping = Message::Ping(Ping {
        tx_id: TxId([1; 12]),
        node_key: mesh::NodeSecret::from_bytes(seed).public(),
    });
    let mut quic = vec![0xc3, 0, 0, 0, 1, 8];
    quic.extend_from_slice(&[0x5a; 1200]);
    let mut wireguard = vec![1, 0, 0, 0];
    wireguard.extend_from_slice(&[0xa5; 144]);
    vec![mesh::wire::seal(&stranger, someone, [0; 24], &ping), quic, wireguard]
}

/// Authenticated clients for the checks, and what they learned.
pub struct Checks<'a> {
    rt: &'a tokio::runtime::Runtime,
    url: Url,
    pub token: String,
    sdk: codersdk::Client,
}

impl<'a> Checks<'a> {
    /// Logs in as the user `local_workspace` created.
    pub fn new(rt: &'a tokio::runtime::Runtime, url: &Url) -> Self {
        let login = rt
            .block_on(codersdk::Client::new(url.clone()).login_with_password(
                &LoginWithPasswordRequest {
                    email: "dev@example.com".into(),
                    password: "dev-password".into(),
                    ..Default::default()
                },
            ))
            .expect("log in");
        let token = login.session_token;
        let sdk = codersdk::Client::new(url.clone()).with_token(token.clone());
        Checks { rt, url: url.clone(), token, sdk }
    }

    fn debug_coordinator(&self) -> anyhow::Result<serde_json::Value> {
        self.rt.block_on(async {
            let resp = reqwest::Client::new()
                .get(self.url.join("/api/v2/debug/coordinator")?)
                .header("Coder-Session-Token", &self.token)
                .send()
                .await?
                .error_for_status()?;
            Ok(resp.json().await?)
        })
    }

    /// The agent's id and the UDP endpoints its node announces (polls the
    /// coordinator's debug view until they are there).
    pub fn agent_node(&self) -> (Uuid, Vec<SocketAddr>) {
        let started = std::time::Instant::now();
        loop {
            let snapshot = self.debug_coordinator();
            if let Ok(v) = &snapshot {
                let agents = v["peers"].as_array().into_iter().flatten();
                for peer in agents.filter(|p| p["kind"] == "agent") {
                    let endpoints: Vec<SocketAddr> = peer["node"]["endpoints"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|e| e.as_str()?.parse().ok())
                        .collect();
                    if let (Some(id), false) = (peer["id"].as_str(), endpoints.is_empty()) {
                        return (id.parse().expect("peer id"), endpoints);
                    }
                }
            }
            assert!(started.elapsed() < DEADLINE, "no agent node with endpoints: {snapshot:?}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Dials the agent with a mesh identity the coordinator never announced to
    /// it, knowing the agent's node and endpoints: no connection may come of it.
    pub fn unannounced_dial(&self, agent: Uuid) -> anyhow::Result<()> {
        let snapshot = self.debug_coordinator()?;
        let node = snapshot["peers"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|p| p["id"].as_str() == Some(agent.to_string().as_str()))
            .map(|p| p["node"].clone())
            .context("the agent in the coordinator's debug view")?;
        let node: mesh::Node = serde_json::from_value(node).context("the agent's node")?;
        self.rt.block_on(Self::dial_refused(node))
    }

    async fn dial_refused(node: mesh::Node) -> anyhow::Result<()> {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let mut config = mesh::MeshConfig::new(
            mesh::NodeId(0x5eed),
            mesh::NodeSecret::generate(&mut rng),
            mesh::DiscoSecret::generate(&mut rng),
            mesh::QuicSecret::generate(&mut rng),
        );
        config.bind = SocketAddr::from(([127, 0, 0, 1], 0));
        let rogue = mesh::MeshEndpoint::bind(config).await?;
        rogue.upsert_peer(&node)?;
        // Without the coordinator's word the agent answers neither its path
        // probes nor its QUIC (held back, then dropped): the dial goes nowhere.
        match tokio::time::timeout(Duration::from_secs(3), rogue.dial(&node.key)).await {
            Err(_) | Ok(Err(_)) => {}
            // TLS 1.3: the client finishes before the server checks its
            // certificate, so the refusal may come as a close right after.
            Ok(Ok(conn)) => {
                let closed = tokio::time::timeout(DEADLINE, conn.quic().closed())
                    .await
                    .context("the agent kept a connection from an unannounced peer")?;
                if !matches!(closed, quinn::ConnectionError::ConnectionClosed(_)) {
                    bail!("the connection ended otherwise: {closed:?}");
                }
            }
        }
        rogue.close().await;
        Ok(())
    }

    /// The embedded STUN server, from the relay map.
    pub async fn stun_addr(&self) -> SocketAddr {
        let map = self.sdk.relay_map().await.expect("relay map");
        let stun = map.regions.values().flat_map(|r| &r.nodes).find_map(|n| n.stun.clone());
        stun.expect("a STUN server in the relay map").parse().expect("STUN address")
    }

    fn relay_url(&self) -> anyhow::Result<derp::RelayUrl> {
        Ok(self.url.join("/derp")?.as_str().parse()?)
    }

    /// A relay client whose key a coordination peer announced first (the
    /// relay admits no other); the peer must stay connected while it is used.
    async fn relay_client(&self, seed: u8) -> anyhow::Result<(derp::Client, Coordinator)> {
        let key = derp::SecretKey::from_bytes([seed; 32]);
        let (coordinator, mut updates) =
            Coordinator::connect(&self.url, &self.token, PeerKind::Client).await?;
        let node_id = match updates.recv().await {
            Some(PeerUpdate::Connected { node_id, .. }) => node_id,
            other => bail!("first update: {other:?}"),
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(u64::from(seed));
        coordinator.update_node(mesh::Node {
            id: node_id,
            key: mesh::NodeKey::from(key.public()),
            disco_key: mesh::DiscoSecret::generate(&mut rng).public(),
            quic_key: mesh::QuicSecret::generate(&mut rng).public(),
            preferred_relay: None,
            relay_latency_ms: Default::default(),
            port_mapped: Vec::new(),
            endpoints: Vec::new(),
            addresses: mesh::mesh_addresses(node_id),
            version: mesh::PROTOCOL_VERSION,
        });
        // The coordination client stops when no one reads its updates.
        tokio::spawn(async move { while updates.recv().await.is_some() {} });
        let config = derp::ClientConfig::new(self.relay_url()?, key);
        Ok((derp::Client::connect(config).await?, coordinator))
    }

    /// The API, coordination, the relay and STUN all still serve.
    pub async fn all_serving(&self, stun: SocketAddr) {
        let within = |what: &'static str| {
            move |r: Result<anyhow::Result<()>, _>| match r {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("{what}: {e:#}"),
                Err(_) => panic!("{what}: timed out"),
            }
        };
        within("API")(tokio::time::timeout(DEADLINE, self.api()).await);
        within("coordination")(tokio::time::timeout(DEADLINE, self.coordination()).await);
        within("relay")(tokio::time::timeout(DEADLINE, self.relay()).await);
        within("STUN")(tokio::time::timeout(DEADLINE, self.stun(stun)).await);
    }

    async fn api(&self) -> anyhow::Result<()> {
        let me = self.sdk.me().await?;
        if me.username != "dev" {
            bail!("logged in as {}", me.username);
        }
        Ok(())
    }

    async fn coordination(&self) -> anyhow::Result<()> {
        let (_c, mut updates) =
            Coordinator::connect(&self.url, &self.token, PeerKind::Client).await?;
        match updates.recv().await {
            Some(PeerUpdate::Connected { .. }) => Ok(()),
            other => bail!("first update: {other:?}"),
        }
    }

    async fn relay(&self) -> anyhow::Result<()> {
        let ((a, _a), (b, _b)) = (self.relay_client(0xa1).await?, self.relay_client(0xb2).await?);
        a.send(b.public_key(), Bytes::from_static(b"still relaying")).await?;
        let got = b.recv().await?;
        if got.src != a.public_key() || got.data != Bytes::from_static(b"still relaying") {
            bail!("b received {got:?}");
        }
        Ok(())
    }

    async fn stun(&self, stun: SocketAddr) -> anyhow::Result<()> {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await?;
        let mapped = derp::stun::probe(&socket, stun, Duration::from_secs(5)).await?;
        if mapped != socket.local_addr()? {
            bail!("STUN mapped us to {mapped}");
        }
        Ok(())
    }
}
