//! `mesh::splice` between real TCP sockets and a mesh stream: bytes both ways
//! with matching SHA-256, half-close passed on each way, and a failure on one
//! side seen by the other as an error, not as a clean end.
#![allow(clippy::unwrap_used)]

mod common;

use common::{config, connect};
use mesh::{MeshConnection, MeshEndpoint, Service, Spliced};
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

async fn pair() -> anyhow::Result<(MeshEndpoint, MeshEndpoint, MeshConnection, MeshConnection)> {
    let a = MeshEndpoint::bind(config(11, None, false)).await?;
    let b = MeshEndpoint::bind(config(12, None, false)).await?;
    a.upsert_peer(&b.node())?;
    b.upsert_peer(&a.node())?;
    let (ca, cb) = connect(&a, &b).await?;
    Ok((a, b, ca, cb))
}

/// A connected pair of TCP sockets on loopback.
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (dialed, accepted) = tokio::join!(TcpStream::connect(addr), listener.accept());
    (dialed.unwrap(), accepted.unwrap().0)
}

fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut data = vec![0u8; len];
    rand::rngs::StdRng::seed_from_u64(seed).fill_bytes(&mut data);
    data
}

/// Writes `data` then shuts the write half; reads everything back; the SHA-256 read.
async fn exchange(mut tcp: TcpStream, data: Vec<u8>) -> (usize, Vec<u8>) {
    let (mut r, mut w) = tcp.split();
    let write = async {
        w.write_all(&data).await.unwrap();
        w.shutdown().await.unwrap();
    };
    let read = async {
        let mut got = Vec::new();
        r.read_to_end(&mut got).await.unwrap();
        (got.len(), Sha256::digest(&got).to_vec())
    };
    tokio::join!(write, read).1
}

#[tokio::test]
async fn splices_both_ways_with_half_close() -> anyhow::Result<()> {
    let (_a, _b, ca, cb) = pair().await?;
    // Client side: app ⇄ tcp_a ⇄ splice ⇄ mesh ⇄ splice ⇄ tcp_b ⇄ server.
    let (app, mut near) = tcp_pair().await;
    let (mut far, server) = tcp_pair().await;
    let up = payload(1, 9 << 20);
    let down = payload(2, 5 << 20 | 123);
    let (up_sum, down_sum) = (Sha256::digest(&up).to_vec(), Sha256::digest(&down).to_vec());

    let client = async {
        let (send, recv) = ca.open(Service::Tcp(1)).await.unwrap();
        let (mut r, mut w) = near.split();
        mesh::splice(&mut r, &mut w, send, recv).await.unwrap()
    };
    let agent = async {
        let (service, send, recv) = cb.accept().await.unwrap();
        assert_eq!(service, Service::Tcp(1));
        let (mut r, mut w) = far.split();
        mesh::splice(&mut r, &mut w, send, recv).await.unwrap()
    };
    let (at_client, at_agent, app_got, server_got) =
        tokio::join!(client, agent, exchange(app, up.clone()), exchange(server, down.clone()));
    assert_eq!(app_got, (down.len(), down_sum));
    assert_eq!(server_got, (up.len(), up_sum));
    assert_eq!(at_client, Spliced { sent: up.len() as u64, received: down.len() as u64 });
    assert_eq!(at_agent, Spliced { sent: down.len() as u64, received: up.len() as u64 });
    Ok(())
}

#[tokio::test]
async fn a_failed_side_resets_the_stream() -> anyhow::Result<()> {
    let (_a, _b, ca, cb) = pair().await?;
    let (app, mut near) = tcp_pair().await;
    let (send, recv) = ca.open(Service::Tcp(1)).await?;
    let (_service, _peer_send, mut peer_recv) = cb.accept().await?;
    // The local socket is reset under the splice: abort, not a clean end.
    socket2::SockRef::from(&app).set_linger(Some(std::time::Duration::ZERO))?;
    let mut app = app;
    app.write_all(b"partial").await?;
    drop(app);
    let (mut r, mut w) = near.split();
    let spliced = mesh::splice(&mut r, &mut w, send, recv).await;
    assert!(spliced.is_err(), "a reset socket must fail the splice: {spliced:?}");
    let read = peer_recv.read_to_end(1 << 20).await;
    assert!(
        matches!(read, Err(quinn::ReadToEndError::Read(quinn::ReadError::Reset(_)))),
        "the peer must see a reset, not an end: {read:?}"
    );
    Ok(())
}
