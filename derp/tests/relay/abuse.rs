//! Misbehaving peers: forged keys, mesh frames without the mesh key,
//! oversized frames, receivers that stop reading.

use bytes::Bytes;
use derp::client::{ConnectError, Transport};
use derp::proto::{ClientInfo, Frame, HandshakeError, MAX_FRAME_LEN};
use derp::{Client, ClientConfig, MeshKey, SecretKey, ServerConfig};
use tokio_util::task::AbortOnDropHandle;

use crate::harness::{within, RawConn, Relay};

#[tokio::test]
async fn client_claiming_a_key_it_does_not_hold_is_refused() {
    let relay = Relay::start(ServerConfig::default()).await;
    let victim = relay.client().await;
    let mallory = SecretKey::generate();
    let mut conn = RawConn::upgrade(relay.addr).await;
    let (server_key, challenge) = conn.server_key().await;
    let Frame::ClientInfo { sealed, .. } =
        ClientInfo::new(challenge, None).seal(&mallory, &server_key).unwrap()
    else {
        unreachable!()
    };
    conn.send(&Frame::ClientInfo { key: victim.public_key(), sealed }).await;
    let frames = conn.until_closed().await;
    assert!(
        matches!(frames.as_slice(), [Frame::Health { problem }] if problem.contains("does not hold")),
        "{frames:?}"
    );
    let stats = relay.server.stats();
    assert_eq!((stats.handshake_failures, stats.duplicate_connections), (1, 0));
    // The real holder is untouched.
    victim.ping(crate::harness::WAIT).await.unwrap();
}

#[tokio::test]
async fn mesh_frame_without_the_mesh_key_is_refused() {
    let mut config = ServerConfig::default();
    config.mesh_key = Some(MeshKey::generate());
    let relay = Relay::start(config).await;
    let b = relay.client().await;
    let mut conn = RawConn::connect(relay.addr, &SecretKey::generate()).await;
    let forged_src = SecretKey::generate().public();
    conn.send(&Frame::ForwardPacket {
        src: forged_src,
        dst: b.public_key(),
        data: Bytes::from_static(b"x"),
    })
    .await;
    let frames = conn.until_closed().await;
    assert!(
        frames
            .iter()
            .any(|f| matches!(f, Frame::Health { problem } if problem.contains("mesh key"))),
        "{frames:?}"
    );
    let stats = relay.server.stats();
    assert_eq!((stats.frames_refused, stats.packets_forwarded), (1, 0));

    // Presenting a wrong mesh key fails the handshake outright.
    let mut config = ClientConfig::new(relay.url(), SecretKey::generate());
    config.mesh_key = Some(MeshKey::generate());
    config.transport = Transport::Upgrade;
    let err = Client::connect(config).await.unwrap_err();
    assert!(
        matches!(&err, ConnectError::Handshake(HandshakeError::Refused(p)) if p.contains("mesh key")),
        "{err}"
    );
}

#[tokio::test]
async fn oversized_frame_closes_only_that_connection() {
    let relay = Relay::start(ServerConfig::default()).await;
    let a = relay.client().await;
    let b = relay.client().await;
    let mut bad = RawConn::connect(relay.addr, &SecretKey::generate()).await;
    let mut header = vec![0x04];
    header.extend_from_slice(&(MAX_FRAME_LEN as u32 + 1).to_be_bytes());
    bad.send_raw(&header).await;
    bad.until_closed().await;
    assert_eq!(relay.server.stats().frames_refused, 1);
    a.send(b.public_key(), Bytes::from_static(b"still here")).await.unwrap();
    assert_eq!(
        within("b to receive", b.recv()).await.unwrap().data,
        Bytes::from_static(b"still here")
    );
}

/// D handshakes and then never reads. C floods D until the relay is
/// dropping D's packets, and keeps flooding while A sends to B in windows
/// no larger than B's queue: every byte A sends must reach B.
#[tokio::test]
async fn stalled_receiver_does_not_slow_another_pair() {
    let mut config = ServerConfig::default();
    config.send_queue_len = 64;
    config.write_timeout = std::time::Duration::from_secs(60);
    let relay = Relay::start(config).await;
    let (a, b, c) = (relay.client().await, relay.client().await, relay.client().await);
    let stalled = SecretKey::generate();
    let _d = RawConn::connect(relay.addr, &stalled).await;
    let d_key = stalled.public();
    let payload = Bytes::from(vec![0xab; 1200]);

    let c = std::sync::Arc::new(c);
    let flood = AbortOnDropHandle::new(tokio::spawn({
        let (c, payload) = (c.clone(), payload.clone());
        async move {
            loop {
                c.send(d_key, payload.clone()).await.unwrap();
            }
        }
    }));
    within("D's queue to overflow", async {
        while relay.server.stats().packets_dropped_queue_full == 0 {
            // Progress comes from C's sends: let them run.
            tokio::task::yield_now().await;
        }
    })
    .await;

    const WINDOW: usize = 50;
    const WINDOWS: usize = 20;
    let mut delivered = 0usize;
    for _ in 0..WINDOWS {
        for _ in 0..WINDOW {
            a.send(b.public_key(), payload.clone()).await.unwrap();
        }
        for _ in 0..WINDOW {
            let packet = within("B to receive a window", b.recv()).await.unwrap();
            assert_eq!(packet.src, a.public_key());
            delivered += packet.data.len();
        }
    }
    assert_eq!(delivered, WINDOW * WINDOWS * payload.len());
    let drops_before = relay.server.stats().packets_dropped_queue_full;
    drop(flood);
    assert!(drops_before > 0);
    assert_eq!(b.dropped_packets(), 0);
}

#[tokio::test]
async fn silent_connection_is_closed_after_idle_timeout() {
    let mut config = ServerConfig::default();
    config.idle_timeout = std::time::Duration::from_millis(100);
    let relay = Relay::start(config).await;
    let mut silent = RawConn::connect(relay.addr, &SecretKey::generate()).await;
    silent.until_closed().await;
    let mut changes = relay.server.membership_changes();
    within("silent client to be removed", async {
        while relay.server.stats().clients_connected != 0 {
            changes.changed().await.unwrap();
        }
    })
    .await;
}

/// Key guessing: a client sending to random keys reaches no one (each packet
/// is dropped as addressed to no connected key) and the relay keeps serving.
/// Receiving for a key needs its secret (see
/// `client_claiming_a_key_it_does_not_hold_is_refused`).
#[tokio::test]
async fn packets_to_guessed_keys_reach_no_one() {
    let relay = Relay::start(ServerConfig::default()).await;
    let (a, b) = (relay.client().await, relay.client().await);
    let mallory = relay.client().await;
    const GUESSES: u64 = 500;
    for _ in 0..GUESSES {
        mallory.send(SecretKey::generate().public(), Bytes::from_static(b"guess")).await.unwrap();
    }
    // The relay handles one connection's frames in order: once B has this
    // one, every guess before it was handled, and none reached B.
    mallory.send(b.public_key(), Bytes::from_static(b"last")).await.unwrap();
    let first = within("B to receive", b.recv()).await.unwrap();
    assert_eq!((first.src, first.data), (mallory.public_key(), Bytes::from_static(b"last")));
    let stats = relay.server.stats();
    assert_eq!((stats.packets_dropped_unknown_dest, stats.packets_forwarded), (GUESSES, 1));
    a.send(b.public_key(), Bytes::from_static(b"still here")).await.unwrap();
    let next = within("B to receive", b.recv()).await.unwrap();
    assert_eq!((next.src, next.data), (a.public_key(), Bytes::from_static(b"still here")));
}

/// The relay client never follows a redirect: the coordinator's relays dial
/// their mesh peers with it, and a URL that answers 3xx must not send them
/// (or their key proof) anywhere else.
#[tokio::test]
async fn relay_client_never_follows_a_redirect() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let elsewhere = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    elsewhere.set_nonblocking(true).unwrap();
    let target = elsewhere.local_addr().unwrap();
    let redirector = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/derp", redirector.local_addr().unwrap());
    let _serve = AbortOnDropHandle::new(tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = redirector.accept().await else { return };
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut b = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && s.read(&mut b).await.unwrap_or(0) == 1 {
                    head.push(b[0]);
                }
                let answer = format!(
                    "HTTP/1.1 302 Found\r\nLocation: http://{target}/derp\r\n\
                     Content-Length: 0\r\nConnection: close\r\n\r\n"
                );
                let _ = s.write_all(answer.as_bytes()).await;
            });
        }
    }));
    for transport in [Transport::Auto, Transport::Upgrade, Transport::WebSocket] {
        let mut config = ClientConfig::new(url.parse().unwrap(), SecretKey::generate());
        config.transport = transport;
        let err = within("connect to fail", Client::connect(config)).await.unwrap_err();
        assert!(err.to_string().contains("302"), "{transport:?}: {err}");
        // Nothing ever knocked at the redirect's target.
        let knocked = elsewhere.accept();
        assert!(
            matches!(&knocked, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "{transport:?} followed the redirect: {knocked:?}"
        );
    }
}
