//! WireGuard between two mesh endpoints on loopback, with the userspace
//! stack on both ends: the agent's accepts TCP on any port and forwards UDP
//! to loopback; the client's dials. Also over the relay only, and a plain
//! boringtun peer the coordinator never announced gets no answer.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{SocketAddr, UdpSocket as StdUdp};
use std::time::Duration;

use mesh::netstack::{LoopbackUdp, Netstack};
use mesh::MeshEndpoint;
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn pair(relay: Option<&derp::RelayUrl>, relay_only: bool) -> (MeshEndpoint, MeshEndpoint) {
    let a = MeshEndpoint::bind(common::config(1, relay, relay_only)).await.unwrap();
    let b = MeshEndpoint::bind(common::config(2, relay, relay_only)).await.unwrap();
    a.upsert_peer(&b.node()).unwrap();
    b.upsert_peer(&a.node()).unwrap();
    (a, b)
}

/// Agent side: a TCP server on loopback that answers with the SHA-256 of
/// everything it read, then accepted mesh connections forwarded to it.
async fn serve_agent(agent: &MeshEndpoint) -> (Netstack, tokio::task::JoinHandle<()>) {
    let (tx, rx) = agent.wireguard().unwrap();
    let udp = Box::new(LoopbackUdp::new(tx.clone()));
    let (stack, mut incoming) = Netstack::spawn_accepting(agent.node().addresses, udp, tx, rx);
    let task = tokio::spawn(async move {
        while let Some(conn) = incoming.accept().await {
            tokio::spawn(async move {
                let target = SocketAddr::from(([127, 0, 0, 1], conn.local.port()));
                let Ok(mut tcp) = tokio::net::TcpStream::connect(target).await else { return };
                let mut stream = conn.stream;
                let _ = tokio::io::copy_bidirectional(&mut stream, &mut tcp).await;
            });
        }
    });
    (stack, task)
}

/// A loopback server: reads to EOF, answers with the SHA-256 of what it read.
async fn sha_server() -> u16 {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut h = Sha256::new();
                let mut buf = vec![0u8; 64 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => h.update(&buf[..n]),
                    }
                }
                let _ = s.write_all(&h.finalize()).await;
            });
        }
    });
    port
}

async fn transfer(client: &Netstack, agent: &MeshEndpoint, port: u16, len: usize) {
    let dst = SocketAddr::new(agent.node().addresses.ipv6.into(), port);
    let stream = tokio::time::timeout(Duration::from_secs(20), client.connect(dst))
        .await
        .expect("connect timed out")
        .unwrap();
    let (mut r, mut w) = tokio::io::split(stream);
    let mut block = vec![0u8; 256 * 1024];
    rand::rngs::StdRng::seed_from_u64(3).fill_bytes(&mut block);
    let mut want = Sha256::new();
    let send = async {
        let mut left = len;
        let mut n = 0u64;
        while left > 0 {
            let k = left.min(block.len());
            n += 1;
            block[..8].copy_from_slice(&n.to_be_bytes());
            want.update(&block[..k]);
            w.write_all(&block[..k]).await.unwrap();
            left -= k;
        }
        w.shutdown().await.unwrap();
    };
    let mut got = Vec::new();
    let recv = async { r.read_to_end(&mut got).await.unwrap() };
    tokio::time::timeout(Duration::from_secs(120), async { tokio::join!(send, recv) })
        .await
        .expect("transfer timed out");
    assert_eq!(got, want.finalize().to_vec(), "SHA-256 differs");
}

fn udp_echo() -> u16 {
    let s = StdUdp::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_and_udp_through_wireguard_direct() {
    let (client, agent) = pair(None, false).await;
    let (_agent_stack, _serving) = serve_agent(&agent).await;
    let (ctx, mut crx) = client.wireguard().unwrap();
    let port = sha_server().await;

    // UDP first, straight on the tunnel: a datagram to the echo port comes back.
    let echo = udp_echo();
    let src = SocketAddr::new(client.node().addresses.ipv6.into(), 40000);
    let dst = SocketAddr::new(agent.node().addresses.ipv6.into(), echo);
    let datagram = mesh::netstack::packet::udp(src, dst, b"ping over wireguard").unwrap();
    let reply = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            ctx.send(&datagram).unwrap();
            if let Ok(Some(p)) = tokio::time::timeout(Duration::from_millis(500), crx.recv()).await
            {
                return p;
            }
        }
    })
    .await
    .expect("no UDP echo");
    let Some(mesh::netstack::packet::Transport::Udp { src: from, dst: to, payload: (at, len) }) =
        mesh::netstack::packet::transport(&reply)
    else {
        panic!("not UDP: {reply:?}")
    };
    assert_eq!((from, to), (dst, src));
    assert_eq!(&reply[at..at + len], b"ping over wireguard");

    // TCP: a client-side stack on the same tunnel.
    let stack = Netstack::spawn(client.node().addresses, None, ctx, crx);
    transfer(&stack, &agent, port, 16 << 20).await;
    // A closed port: refused (the agent stack accepts, the forward fails, the
    // connection closes with nothing).
    assert!(matches!(agent.destination(&client.node().key), Some(mesh::Destination::Direct(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tcp_through_wireguard_on_the_relay() {
    let (_relay, url) = common::relay().await.unwrap();
    let (client, agent) = pair(Some(&url), true).await;
    let (_agent_stack, _serving) = serve_agent(&agent).await;
    let (ctx, crx) = client.wireguard().unwrap();
    let stack = Netstack::spawn(client.node().addresses, None, ctx, crx);
    let port = sha_server().await;
    transfer(&stack, &agent, port, 4 << 20).await;
    assert!(matches!(agent.destination(&client.node().key), Some(mesh::Destination::Relay(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unannounced_boringtun_peer_gets_no_answer() {
    use boringtun::noise::{Tunn, TunnResult};
    use boringtun::x25519::{PublicKey, StaticSecret};

    let (client, agent) = pair(None, false).await;
    let (_agent_stack, _serving) = serve_agent(&agent).await;
    let agent_addr = agent.local_addr().unwrap();
    let agent_key = PublicKey::from(*agent.node().key.as_bytes());
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();

    // A peer that knows the agent's key and address, but that the
    // coordinator never announced: its handshake is dropped unanswered.
    let mut stranger = Tunn::new(StaticSecret::from([42u8; 32]), agent_key, None, None, 7, None);
    let mut buf = vec![0u8; 2048];
    let TunnResult::WriteToNetwork(init) = stranger.format_handshake_initiation(&mut buf, false)
    else {
        panic!("no handshake initiation")
    };
    udp.send_to(init, agent_addr).await.unwrap();
    let mut answer = [0u8; 256];
    let silent = tokio::time::timeout(Duration::from_millis(500), udp.recv_from(&mut answer)).await;
    assert!(silent.is_err(), "the agent answered an unannounced peer");

    drop(client);
}
