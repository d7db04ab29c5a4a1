//! Two in-process nodes talking QUIC over the magic socket: direct UDP on
//! loopback, relay only, and a peer presenting a key other than the announced one.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use anyhow::Context;
use mesh::{
    Destination, DiscoSecret, MeshConfig, MeshEndpoint, NodeId, NodeSecret, PathEvent, QuicSecret,
    Service,
};
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

async fn relay() -> anyhow::Result<(derp::Server, derp::RelayUrl)> {
    let server = derp::Server::spawn(derp::ServerConfig::default())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/derp", listener.local_addr()?).parse()?;
    let serving = server.clone();
    tokio::spawn(async move { serving.serve(listener).await });
    Ok((server, url))
}

fn config(id: u64, relay: Option<&derp::RelayUrl>, relay_only: bool) -> MeshConfig {
    let mut rng = rand::rngs::StdRng::seed_from_u64(id);
    let mut config = MeshConfig::new(
        NodeId(id),
        NodeSecret::generate(&mut rng),
        DiscoSecret::generate(&mut rng),
        QuicSecret::generate(&mut rng),
    );
    config.bind = "127.0.0.1:0".parse().unwrap();
    config.relay_url = relay.cloned();
    config.relay_only = relay_only;
    config
}

async fn pair(
    relay: Option<&derp::RelayUrl>,
    relay_only: bool,
) -> anyhow::Result<(MeshEndpoint, MeshEndpoint)> {
    let a = MeshEndpoint::bind(config(1, relay, relay_only)).await?;
    let b = MeshEndpoint::bind(config(2, relay, relay_only)).await?;
    a.upsert_peer(&b.node())?;
    b.upsert_peer(&a.node())?;
    Ok((a, b))
}

/// Sends `len` seeded-random bytes from `a` to `b` on a speedtest stream and
/// checks both ends hash them the same.
async fn transfer(a: &MeshEndpoint, b: &MeshEndpoint, len: usize) -> anyhow::Result<()> {
    let receiver = async {
        let conn = b.accept().await.context("accept")?;
        let (service, _send, mut recv) = conn.accept().await.context("accept stream")?;
        assert_eq!(service, Service::Speedtest);
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 * 1024];
        let mut total = 0;
        loop {
            let Some(n) = recv.read(&mut buf).await? else {
                break;
            };
            hasher.update(&buf[..n]);
            total += n;
        }
        anyhow::Ok((total, hasher.finalize()))
    };
    let sender = async {
        let conn = a.dial(&b.node().key).await.context("dial")?;
        assert_eq!(conn.peer().key, b.node().key);
        let (mut send, _recv) = conn.open(Service::Speedtest).await?;
        // One random block, stamped with a counter per chunk: random RNG output
        // for all 64 MiB is too slow in debug builds.
        let mut chunk = vec![0u8; 256 * 1024];
        rand::rngs::StdRng::seed_from_u64(7).fill_bytes(&mut chunk);
        let mut hasher = Sha256::new();
        let mut left = len;
        let mut counter = 0u64;
        while left > 0 {
            let n = left.min(chunk.len());
            counter += 1;
            chunk[..8].copy_from_slice(&counter.to_be_bytes());
            hasher.update(&chunk[..n]);
            send.write_all(&chunk[..n]).await?;
            left -= n;
        }
        send.finish()?;
        send.stopped().await?;
        anyhow::Ok((conn, hasher.finalize()))
    };
    let (received, sent) = tokio::try_join!(receiver, sender)?;
    assert_eq!(received.0, len);
    assert_eq!(received.1, sent.1, "SHA-256 of received bytes differs");
    Ok(())
}

#[tokio::test]
async fn direct_udp_carries_64_mib() -> anyhow::Result<()> {
    let (_server, url) = relay().await?;
    let (a, b) = pair(Some(&url), false).await?;
    let mut events = a.path_events();
    tokio::time::timeout(Duration::from_secs(20), transfer(&a, &b, 64 << 20)).await??;
    let direct_to = b.local_addr()?;
    assert_eq!(a.destination(&b.node().key), Some(Destination::Direct(direct_to)));
    let went_direct = loop {
        match events.try_recv() {
            Ok(PathEvent::RelayToDirect { addr, .. }) => break Some(addr),
            Ok(_) => continue,
            Err(_) => break None,
        }
    };
    assert_eq!(went_direct, Some(direct_to));
    Ok(())
}

#[tokio::test]
async fn relay_only_carries_a_stream() -> anyhow::Result<()> {
    let (_server, url) = relay().await?;
    let (a, b) = pair(Some(&url), true).await?;
    tokio::time::timeout(Duration::from_secs(20), transfer(&a, &b, 64 << 20)).await??;
    let key = b.node().key;
    assert_eq!(a.destination(&key), Some(Destination::Relay(key)));
    Ok(())
}

#[tokio::test]
async fn peer_with_unannounced_key_is_refused() -> anyhow::Result<()> {
    let a = MeshEndpoint::bind(config(1, None, false)).await?;
    let b = MeshEndpoint::bind(config(2, None, false)).await?;
    // The coordinator announced b with another QUIC key than b holds.
    let mut announced_b = b.node();
    announced_b.quic_key = QuicSecret::from_bytes([42; 32]).public();
    a.upsert_peer(&announced_b)?;
    b.upsert_peer(&a.node())?;

    // a dialing b: b's certificate carries the wrong key.
    let accepting = async { b.accept().await };
    let dialing = tokio::time::timeout(Duration::from_secs(10), a.dial(&announced_b.key));
    let (dialed, _) =
        tokio::join!(dialing, tokio::time::timeout(Duration::from_secs(10), accepting));
    assert!(dialed?.is_err(), "a accepted b's unannounced key");

    // b dialing a: a knows no client with b's real key.
    let a_key = a.node().key;
    let accepting = tokio::time::timeout(Duration::from_secs(10), a.accept());
    let dialing = tokio::time::timeout(Duration::from_secs(10), b.dial(&a_key));
    let (accepted, dialed) = tokio::join!(accepting, dialing);
    assert!(accepted?.is_err(), "a accepted a client with an unannounced key");
    // In TLS 1.3 the client finishes before the server checks its certificate,
    // so the dial may succeed and the connection is closed right after.
    if let Ok(conn) = dialed? {
        let closed = tokio::time::timeout(Duration::from_secs(10), conn.quic().closed()).await?;
        assert!(matches!(closed, quinn::ConnectionError::ConnectionClosed(_)), "{closed:?}");
    }
    Ok(())
}

#[tokio::test]
async fn stun_answer_becomes_an_endpoint() -> anyhow::Result<()> {
    let stun = derp::stun::StunServer::spawn("127.0.0.1:0".parse()?).await?;
    let mut config = config(3, None, false);
    config.bind = "0.0.0.0:0".parse()?;
    config.stun_servers = vec![stun.local_addr()];
    let node = MeshEndpoint::bind(config).await?;
    let port = node.local_addr()?.port();
    assert_eq!(node.node().endpoints, vec![std::net::SocketAddr::from(([127, 0, 0, 1], port))]);
    Ok(())
}
