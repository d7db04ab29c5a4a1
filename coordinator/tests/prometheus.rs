//! Prometheus metrics live on a listener of their own (`--prometheus-enable`,
//! `--prometheus-address`), never on the public API: `coderd server` run in
//! process against a test database.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use coordinator::testutil;

/// A loopback address nothing listens on right now.
fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Waits (up to 30 s) until `url` answers at all.
async fn wait_up(http: &reqwest::Client, url: &url::Url) {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if http.get(url.clone()).send().await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("coderd never answered");
}

#[tokio::test]
async fn metrics_are_served_only_on_the_prometheus_listener() {
    let db = testutil::database().await.unwrap();
    let o = &db.options;
    let postgres_url = format!(
        "postgres://{}@localhost:{}/{}?host={}",
        o.get_username(),
        o.get_port(),
        o.get_database().unwrap(),
        o.get_socket().unwrap().display()
    );
    let data = tempfile::tempdir().unwrap();
    let (http_address, prometheus) = (free_addr(), free_addr());
    let mut config = coordinator::ServerConfig::default();
    config.http_address = http_address;
    config.postgres_url = Some(postgres_url);
    config.data_dir = data.path().to_owned();
    config.provisioner_daemons = 0;
    config.stun_address = None;
    config.prometheus_address = Some(prometheus);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(coordinator::run(config, async move {
        let _ = stopped.await;
    }));

    let http = reqwest::Client::new();
    let api = url::Url::parse(&format!("http://{http_address}")).unwrap();
    wait_up(&http, &api.join("/healthz").unwrap()).await;
    let info = http.get(api.join("/api/v2/buildinfo").unwrap()).send().await.unwrap();
    assert_eq!(info.status(), 200);

    // Not on the API, whoever asks.
    let on_api = http.get(api.join("/metrics").unwrap()).send().await.unwrap();
    assert_eq!(on_api.status(), 404);

    let scraped = http.get(format!("http://{prometheus}/metrics")).send().await.unwrap();
    assert_eq!(scraped.status(), 200);
    let text = scraped.text().await.unwrap();
    assert!(
        text.contains(
            "coderd_api_requests_total{method=\"GET\",route=\"/api/v2/buildinfo\",code=\"200\"} 1"
        ),
        "{text}"
    );
    // The embedded relay's counters come along.
    assert!(text.contains("derp_clients_connected 0"), "{text}");

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(30), server).await.unwrap().unwrap().unwrap();
}
