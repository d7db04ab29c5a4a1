//! Packets through one relay, over both transports; reconnect and shutdown.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use derp::client::{Event, Transport};
use derp::{Client, ClientConfig, ReceivedPacket, SecretKey, ServerConfig};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::task::AbortOnDropHandle;

use crate::harness::{within, Relay, WAIT};

async fn exchange(a: &Client, b: &Client) {
    a.send(b.public_key(), Bytes::from_static(b"hello b")).await.unwrap();
    let got = within("b to receive", b.recv()).await.unwrap();
    assert_eq!(got, ReceivedPacket { src: a.public_key(), data: Bytes::from_static(b"hello b") });
    b.send(a.public_key(), Bytes::from_static(b"hello a")).await.unwrap();
    let got = within("a to receive", a.recv()).await.unwrap();
    assert_eq!(got, ReceivedPacket { src: b.public_key(), data: Bytes::from_static(b"hello a") });
}

#[tokio::test]
async fn two_clients_exchange_packets() {
    let relay = Relay::start(ServerConfig::default()).await;
    let a = relay.client().await;
    let b = relay.client().await;
    assert_eq!(a.server_key(), Some(relay.server.public_key()));
    exchange(&a, &b).await;

    // Preferred is processed before the ping that follows it.
    a.note_preferred(true).await.unwrap();
    let rtt = a.ping(WAIT).await.unwrap();
    assert!(rtt < WAIT);
    let stats = relay.server.stats();
    assert_eq!((stats.clients_connected, stats.clients_home), (2, 1));
    assert_eq!(stats.packets_forwarded, 2);
    assert_eq!(stats.bytes_forwarded, 14);
}

#[tokio::test]
async fn sending_to_an_unknown_peer_reports_not_here() {
    let relay = Relay::start(ServerConfig::default()).await;
    let a = relay.client().await;
    let ghost = SecretKey::generate().public();
    a.send(ghost, Bytes::from_static(b"?")).await.unwrap();
    match within("peer gone", a.recv_event()).await.unwrap() {
        Event::PeerGone { key, reason } => {
            assert_eq!(key, ghost);
            assert_eq!(reason, derp::proto::PeerGoneReason::NotHere);
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn peer_gone_when_receiver_disconnects() {
    let relay = Relay::start(ServerConfig::default()).await;
    let a = relay.client().await;
    let b = relay.client().await;
    exchange(&a, &b).await;
    let b_key = b.public_key();
    b.close().await;
    match within("peer gone", a.recv_event()).await.unwrap() {
        Event::PeerGone { key, .. } => assert_eq!(key, b_key),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn websocket_only_path() {
    let relay = Relay::start(ServerConfig::default()).await;
    let mut config = ClientConfig::new(relay.url(), SecretKey::generate());
    config.transport = Transport::WebSocket;
    let a = Client::connect(config).await.unwrap();
    let b = relay.client().await;
    assert!(a.is_websocket() && !b.is_websocket());
    exchange(&a, &b).await;
}

/// A proxy that refuses `Upgrade: DERP` but passes WebSockets: the client
/// falls back by itself. Also shows embedding via `handle_request`.
#[tokio::test]
async fn falls_back_to_websocket_when_upgrade_refused() {
    let relay = Relay::start(ServerConfig::default()).await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let proxy_addr = listener.local_addr().unwrap();
    let server = relay.server.clone();
    let _proxy = AbortOnDropHandle::new(tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let server = server.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let server = server.clone();
                    async move {
                        let derp = req
                            .headers()
                            .get(http::header::UPGRADE)
                            .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"derp"));
                        if derp {
                            let mut resp =
                                http::Response::new(http_body_util::Full::new(Bytes::new()));
                            *resp.status_mut() = http::StatusCode::BAD_REQUEST;
                            return Ok::<_, Infallible>(resp);
                        }
                        Ok(server.handle_request(req).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await;
            });
        }
    }));
    let url = format!("http://{proxy_addr}/derp").parse().unwrap();
    let a = Client::connect(ClientConfig::new(url, SecretKey::generate())).await.unwrap();
    assert!(a.is_websocket());
    let b = relay.client().await;
    exchange(&a, &b).await;
}

#[tokio::test]
async fn duplicate_key_newest_wins() {
    let relay = Relay::start(ServerConfig::default()).await;
    let key = SecretKey::generate();
    let old = relay.client_with(key.clone()).await;
    let new = relay.client_with(key).await;
    // The older connection is told, closed, and does not come back.
    assert_eq!(
        within("old client to stop", old.recv_event()).await,
        Err(derp::client::RecvError::Closed)
    );
    let sender = relay.client().await;
    sender.send(new.public_key(), Bytes::from_static(b"to newest")).await.unwrap();
    let got = within("newest to receive", new.recv()).await.unwrap();
    assert_eq!(got.data, Bytes::from_static(b"to newest"));
    assert_eq!(relay.server.stats().duplicate_connections, 1);
    assert_eq!(relay.server.stats().clients_connected, 2);
}

#[tokio::test]
async fn shutdown_tells_clients_the_relay_is_restarting() {
    let relay = Relay::start(ServerConfig::default()).await;
    let a = relay.client().await;
    within("shutdown", relay.server.shutdown()).await;
    match within("restarting", a.recv_event()).await.unwrap() {
        Event::Restarting { try_for, .. } => assert_eq!(try_for, Duration::from_secs(60)),
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn client_reconnects_after_relay_restart() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let mut config = ServerConfig::default();
    config.restart_reconnect_in = Duration::from_millis(10);
    let relay = Relay::start_on(listener, config);
    let a = relay.client().await;
    let mut changes = a.connection_changes();
    relay.stop().await;
    within("disconnect", changes.wait_for(|up| !up)).await.unwrap();
    let relay = Relay::start_on(TcpListener::bind(addr).await.unwrap(), ServerConfig::default());
    within("reconnect", changes.wait_for(|up| *up)).await.unwrap();
    assert_eq!(a.server_key(), Some(relay.server.public_key()));
    let b = relay.client().await;
    exchange(&a, &b).await;
}

#[tokio::test]
async fn health_and_metrics_endpoints() {
    let relay = Relay::start(ServerConfig::default()).await;
    let _a = relay.client().await;
    for (path, expect) in [("/healthz", "ok"), ("/metrics", "derp_clients_connected 1")] {
        let mut stream = tokio::net::TcpStream::connect(relay.addr).await.unwrap();
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut body = String::new();
        within("http answer", stream.read_to_string(&mut body)).await.unwrap();
        assert!(body.starts_with("HTTP/1.1 200"), "{body}");
        assert!(body.contains(expect), "{body}");
    }
}

/// The relay advertises its rate limit in the sealed server info, and a
/// client within its burst loses nothing.
#[tokio::test]
async fn rate_limit_is_advertised_and_throttles_without_loss() {
    let mut config = ServerConfig::default();
    config.rate_limit =
        Some(derp::server::RateLimit { bytes_per_second: 1 << 20, burst: 16 << 10 });
    let relay = Relay::start(config).await;
    let key = SecretKey::generate();
    let mut raw = crate::harness::RawConn::upgrade(relay.addr).await;
    let (server_key, challenge) = raw.server_key().await;
    let hello = derp::proto::ClientInfo::new(challenge, None).seal(&key, &server_key).unwrap();
    raw.send(&hello).await;
    let info = derp::proto::ServerInfo::open(raw.recv().await.unwrap(), &key, &server_key).unwrap();
    assert_eq!(
        (info.token_bucket_bytes_per_second, info.token_bucket_bytes_burst),
        (1 << 20, 16 << 10)
    );

    let (a, b) = (relay.client().await, relay.client().await);
    // Twice the burst: the second half waits for tokens but still arrives.
    for _ in 0..32 {
        a.send(b.public_key(), Bytes::from(vec![7; 1024])).await.unwrap();
    }
    for _ in 0..32 {
        within("throttled packet", b.recv()).await.unwrap();
    }
}

/// A batch written with one flush, over WebSocket both ways: many packets
/// share messages, and full-size ones split them at the one-frame message
/// limit (which the server enforces on what it reads). Every packet
/// arrives, whole and in order.
#[tokio::test]
async fn batches_arrive_whole_and_in_order_over_websocket() {
    let relay = Relay::start(ServerConfig::default()).await;
    let ws = || {
        let mut config = ClientConfig::new(relay.url(), SecretKey::generate());
        config.transport = Transport::WebSocket;
        config.recv_queue_len = 4096;
        Client::connect(config)
    };
    let (a, b) = (ws().await.unwrap(), ws().await.unwrap());
    relay.wait_for_peer(b.public_key()).await;
    let packets: Vec<Bytes> = (0..200u32)
        .map(|i| {
            // Mostly small, every tenth the largest a client may send.
            let len = if i % 10 == 0 { derp::proto::MAX_PACKET_SIZE } else { 1200 };
            let mut p = vec![(i % 251) as u8; len];
            p[..4].copy_from_slice(&i.to_be_bytes());
            Bytes::from(p)
        })
        .collect();
    // The server queues 512 packets per client: 200 fit without a drop.
    a.send_many(packets.iter().map(|p| (b.public_key(), p.clone()))).await.unwrap();
    for (i, want) in packets.iter().enumerate() {
        let got = within("a batched packet", b.recv()).await.unwrap();
        assert_eq!(got.src, a.public_key());
        assert_eq!(got.data.len(), want.len(), "packet {i}");
        assert!(got.data == *want, "packet {i} differs");
    }
    assert_eq!(relay.server.stats().packets_dropped_queue_full, 0);
    // All or nothing: one oversized packet fails the batch before a write.
    let huge = Bytes::from(vec![0; derp::proto::MAX_PACKET_SIZE + 1]);
    let err = a
        .send_many([(b.public_key(), Bytes::from_static(b"ok")), (b.public_key(), huge)])
        .await
        .unwrap_err();
    assert!(matches!(err, derp::client::SendError::TooLarge { .. }), "{err}");
    assert_eq!(relay.server.stats().packets_forwarded, packets.len() as u64);
}
