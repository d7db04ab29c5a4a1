//! In-process network pieces the throughput groups share: a relay on
//! loopback, mesh node configs, connected mesh pairs, and bulk transfers over
//! QUIC streams (the same code for the mesh and for plain quinn).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use mesh::{DiscoSecret, MeshConfig, MeshConnection, MeshEndpoint, NodeId, NodeSecret, QuicSecret};
use mesh::{Node, Service};
use rand::SeedableRng;
use tests::topology::Host;

/// Sender chunk size: large writes keep the sender's per-call overhead out of the figure.
pub const CHUNK: usize = 256 * 1024;

/// A relay on 127.0.0.1 and its URL; dropping the server stops it.
pub async fn relay() -> anyhow::Result<(derp::Server, derp::RelayUrl)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    relay_on(listener, derp::ServerConfig::default())
}

/// A relay with `config` serving on `listener`, and its URL.
pub fn relay_on(
    listener: tokio::net::TcpListener,
    config: derp::ServerConfig,
) -> anyhow::Result<(derp::Server, derp::RelayUrl)> {
    let server = derp::Server::spawn(config)?;
    let url = format!("http://{}/derp", listener.local_addr()?).parse()?;
    let serving = server.clone();
    tokio::spawn(async move { serving.serve(listener).await });
    Ok((server, url))
}

/// Node `id`, keys seeded from the id, bound to 127.0.0.1.
pub fn config(id: u64, relay: Option<&derp::RelayUrl>, relay_only: bool) -> MeshConfig {
    let mut rng = rand::rngs::StdRng::seed_from_u64(id);
    let mut config = MeshConfig::new(
        NodeId(id),
        NodeSecret::generate(&mut rng),
        DiscoSecret::generate(&mut rng),
        QuicSecret::generate(&mut rng),
    );
    config.bind = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    config.relays =
        relay.map(|url| vec![mesh::RelayRegion::new(1, url.clone())]).unwrap_or_default();
    config.relay_only = relay_only;
    config
}

/// A node bound with `config` inside `host`'s network namespace (its socket
/// stays there, whichever thread uses it), or in this one without a host.
pub fn bind_in(host: Option<&Host>, config: MeshConfig) -> anyhow::Result<MeshEndpoint> {
    let runtime = tokio::runtime::Handle::current();
    let bind = || Ok(runtime.block_on(MeshEndpoint::bind(config))?);
    tokio::task::block_in_place(|| match host {
        Some(host) => host.in_netns(bind),
        None => bind(),
    })
}

/// Two bound nodes that know each other's record.
pub async fn pair(a: MeshConfig, b: MeshConfig) -> anyhow::Result<(MeshEndpoint, MeshEndpoint)> {
    let a = MeshEndpoint::bind(a).await.context("bind node a")?;
    let b = MeshEndpoint::bind(b).await.context("bind node b")?;
    a.upsert_peer(&b.node())?;
    b.upsert_peer(&a.node())?;
    Ok((a, b))
}

/// Tells each node the other's record, as the coordinator would.
pub fn introduce(
    a: &MeshEndpoint,
    b: &MeshEndpoint,
    a_node: &Node,
    b_node: &Node,
) -> anyhow::Result<()> {
    a.upsert_peer(b_node)?;
    b.upsert_peer(a_node)?;
    Ok(())
}

/// Dials `b` from `a`; both ends of the connection.
pub async fn connect(
    a: &MeshEndpoint,
    b: &MeshEndpoint,
) -> anyhow::Result<(MeshConnection, MeshConnection)> {
    let b_key = b.node().key;
    let dial = async { a.dial(&b_key).await.context("dial") };
    let accept = async { b.accept().await.context("accept") };
    Ok(tokio::try_join!(dial, accept)?)
}

/// Writes `len` bytes (or forever with `None`) to a QUIC stream, then finishes it.
pub async fn send_bulk(mut send: quinn::SendStream, len: Option<u64>) -> anyhow::Result<()> {
    let chunk = vec![0x5au8; CHUNK];
    let mut left = len.unwrap_or(u64::MAX);
    while left > 0 {
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(CHUNK);
        send.write_all(&chunk[..n]).await?;
        left -= n as u64;
    }
    send.finish()?;
    send.stopped().await?;
    Ok(())
}

/// Reads a QUIC stream to its end, adding every byte to `counter`; the total.
pub async fn recv_bulk(
    mut recv: quinn::RecvStream,
    counter: Arc<AtomicU64>,
) -> anyhow::Result<u64> {
    let mut total = 0u64;
    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await? {
        total += chunk.bytes.len() as u64;
        counter.fetch_add(chunk.bytes.len() as u64, Ordering::Relaxed);
    }
    Ok(total)
}

/// Sends `len` bytes from `a` to `b` on a new speedtest stream; the time until
/// `b` has read them all.
pub async fn mesh_transfer(
    a: &MeshConnection,
    b: &MeshConnection,
    len: u64,
) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let sending = async {
        let (send, _recv) = a.open(Service::Speedtest).await?;
        send_bulk(send, Some(len)).await
    };
    let receiving = async {
        let (_service, _send, recv) = b.accept().await?;
        let got = recv_bulk(recv, Arc::default()).await?;
        anyhow::ensure!(got == len, "received {got} of {len} bytes");
        Ok(start.elapsed())
    };
    let (_, elapsed) = tokio::try_join!(sending, receiving)?;
    Ok(elapsed)
}

/// MiB/s of `reps` transfers of `len` bytes between `a` and `b`, after one
/// warm-up transfer (connection set up, path settled, windows grown).
pub async fn mesh_throughputs(
    a: &MeshConnection,
    b: &MeshConnection,
    len: u64,
    reps: usize,
) -> anyhow::Result<Vec<f64>> {
    mesh_transfer(a, b, len.min(8 << 20)).await.context("warm-up transfer")?;
    let mut out = Vec::with_capacity(reps);
    for _ in 0..reps {
        let elapsed = mesh_transfer(a, b, len).await?;
        out.push(crate::stats::mib_per_s(len, elapsed));
    }
    Ok(out)
}
