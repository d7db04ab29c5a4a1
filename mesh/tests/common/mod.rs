//! Helpers shared by the mesh integration tests: a relay, node configs, and a
//! seeded transfer whose SHA-256 both ends compare.
#![allow(dead_code, clippy::unwrap_used)]

use anyhow::Context;
use mesh::{
    DiscoSecret, MeshConfig, MeshConnection, MeshEndpoint, NodeId, NodeSecret, QuicSecret, Service,
};
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};

/// A relay on 127.0.0.1 and its URL; dropping the server stops it.
pub async fn relay() -> anyhow::Result<(derp::Server, derp::RelayUrl)> {
    let server = derp::Server::spawn(derp::ServerConfig::default())?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let url = format!("http://{}/derp", listener.local_addr()?).parse()?;
    let serving = server.clone();
    tokio::spawn(async move { serving.serve(listener).await });
    Ok((server, url))
}

/// Node `id` with keys seeded from its id, bound to 127.0.0.1.
pub fn config(id: u64, relay: Option<&derp::RelayUrl>, relay_only: bool) -> MeshConfig {
    let mut rng = rand::rngs::StdRng::seed_from_u64(id);
    let mut config = MeshConfig::new(
        NodeId(id),
        NodeSecret::generate(&mut rng),
        DiscoSecret::generate(&mut rng),
        QuicSecret::generate(&mut rng),
    );
    config.bind = "127.0.0.1:0".parse().unwrap();
    config.relays =
        relay.map(|url| vec![mesh::RelayRegion::new(1, url.clone())]).unwrap_or_default();
    config.relay_only = relay_only;
    config
}

/// Sends `len` bytes from `conn` on a new speedtest stream; returns their SHA-256.
pub async fn send(conn: &MeshConnection, len: usize) -> anyhow::Result<Vec<u8>> {
    let (mut send, _recv) = conn.open(Service::Speedtest).await?;
    // One random block, stamped with a counter per chunk: random RNG output
    // for 64 MiB is too slow in debug builds.
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
    Ok(hasher.finalize().to_vec())
}

/// Sends `total` bytes of a counter pattern on a new stream of `conn`
/// (64 KiB a write), fires `mark` once `mark_at` bytes are out, finishes
/// the stream and waits until the peer has all of it; returns the byte
/// count and SHA-256, as [`receive`] does on the other side.
pub async fn send_marked(
    conn: &MeshConnection,
    total: usize,
    mark_at: usize,
    mark: tokio::sync::oneshot::Sender<()>,
) -> anyhow::Result<(usize, Vec<u8>)> {
    let (mut send, _recv) = conn.open(Service::Speedtest).await?;
    let mut hasher = Sha256::new();
    let mut mark = Some(mark);
    let mut chunk = vec![0u8; 64 * 1024];
    let (mut sent, mut counter) = (0usize, 0u64);
    while sent < total {
        counter += 1;
        for (i, b) in chunk.iter_mut().enumerate() {
            *b = (counter as usize).wrapping_mul(31).wrapping_add(i) as u8;
        }
        hasher.update(&chunk);
        send.write_all(&chunk).await?;
        sent += chunk.len();
        if sent >= mark_at {
            if let Some(m) = mark.take() {
                let _ = m.send(());
            }
        }
    }
    send.finish()?;
    send.stopped().await?;
    Ok((sent, hasher.finalize().to_vec()))
}

/// Reads the next speedtest stream on `conn` to its end; returns length and SHA-256.
pub async fn receive(conn: &MeshConnection) -> anyhow::Result<(usize, Vec<u8>)> {
    let (service, _send, mut recv) = conn.accept().await.context("accept stream")?;
    assert_eq!(service, Service::Speedtest);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    while let Some(n) = recv.read(&mut buf).await? {
        hasher.update(&buf[..n]);
        total += n;
    }
    Ok((total, hasher.finalize().to_vec()))
}

/// Moves `len` bytes over `a → b` on an existing connection pair and checks them.
pub async fn transfer_on(a: &MeshConnection, b: &MeshConnection, len: usize) -> anyhow::Result<()> {
    let (received, sent) = tokio::try_join!(receive(b), send(a, len))?;
    assert_eq!(received.0, len);
    assert_eq!(received.1, sent, "SHA-256 of received bytes differs");
    Ok(())
}

/// Dials `b` from `a` and returns both ends of the connection.
pub async fn connect(
    a: &MeshEndpoint,
    b: &MeshEndpoint,
) -> anyhow::Result<(MeshConnection, MeshConnection)> {
    let b_key = b.node().key;
    let (dialed, accepted) =
        tokio::try_join!(async { a.dial(&b_key).await.context("dial") }, async {
            b.accept().await.context("accept")
        })?;
    Ok((dialed, accepted))
}
