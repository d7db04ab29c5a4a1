//! The relay embedded in coderd: two peers exchange packets through `/derp`
//! (DERP upgrade and WebSocket), and the relay map lists it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use coordinator::testutil::TestServer;
use derp::{Client, ClientConfig, RelayUrl, SecretKey, Transport};

async fn connect(url: &str, transport: Transport) -> (Client, SecretKey) {
    let key = SecretKey::generate();
    let mut cfg = ClientConfig::new(url.parse::<RelayUrl>().unwrap(), key.clone());
    cfg.transport = transport;
    (Client::connect(cfg).await.unwrap(), key)
}

#[tokio::test]
async fn peers_meet_through_the_embedded_relay() {
    let srv = TestServer::start().await.unwrap();
    let map = srv
        .client()
        .request::<(), client::sdk::RelayMap>(reqwest::Method::GET, "/api/v2/derp-map", None)
        .await
        .unwrap();
    let region = &map.regions[&coordinator::relay::EMBEDDED_REGION_ID];
    let url = region.nodes[0].url.clone();
    assert_eq!(url, format!("{}derp", srv.url));

    for transport in [Transport::Upgrade, Transport::WebSocket] {
        let (a, _) = connect(&url, transport).await;
        let (b, bkey) = connect(&url, transport).await;
        // b is registered once its handshake is done; a's send then reaches it.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let got = loop {
            a.send(bkey.public(), b"hello through coderd".to_vec()).await.ok();
            match tokio::time::timeout(Duration::from_millis(200), b.recv()).await {
                Ok(Ok(p)) => break p,
                _ if tokio::time::Instant::now() < deadline => continue,
                other => panic!("no packet through the relay ({transport:?}): {other:?}"),
            }
        };
        assert_eq!(&got.data[..], b"hello through coderd");
        assert_eq!(b.is_websocket(), transport == Transport::WebSocket);
    }
    let metrics =
        reqwest::get(srv.url.join("/metrics").unwrap()).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("derp"), "{metrics}");
}
