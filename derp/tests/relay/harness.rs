//! Test harness: relays on 127.0.0.1:0 and a raw relay connection that can
//! misbehave in ways the real client never does.
#![allow(clippy::unwrap_used, clippy::expect_used, dead_code)]

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use derp::proto::{self, ClientInfo, Frame, ServerInfo};
use derp::{Client, ClientConfig, PublicKey, RelayUrl, SecretKey, Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::AbortOnDropHandle;

/// Generous: only hit when something is broken.
pub const WAIT: Duration = Duration::from_secs(10);

pub async fn within<T>(what: &str, fut: impl Future<Output = T>) -> T {
    tokio::time::timeout(WAIT, fut).await.unwrap_or_else(|_| panic!("timed out waiting for {what}"))
}

/// A relay serving HTTP on a loopback port; stops when dropped.
pub struct Relay {
    pub server: Server,
    pub addr: SocketAddr,
    _serve: AbortOnDropHandle<std::io::Result<()>>,
}

impl Relay {
    pub async fn start(config: ServerConfig) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::start_on(listener, config)
    }

    pub fn start_on(listener: TcpListener, config: ServerConfig) -> Self {
        let addr = listener.local_addr().unwrap();
        let server = Server::spawn(config).unwrap();
        let serve = tokio::spawn({
            let server = server.clone();
            async move { server.serve(listener).await }
        });
        Self { server, addr, _serve: AbortOnDropHandle::new(serve) }
    }

    /// Shuts the relay down and waits until its port is free again.
    pub async fn stop(self) {
        within("relay shutdown", self.server.shutdown()).await;
        within("serve loop to end", self._serve).await.unwrap().unwrap();
    }

    pub fn url(&self) -> RelayUrl {
        format!("http://{}/derp", self.addr).parse().unwrap()
    }

    pub async fn client(&self) -> Client {
        self.client_with(SecretKey::generate()).await
    }

    pub async fn client_with(&self, key: SecretKey) -> Client {
        Client::connect(ClientConfig::new(self.url(), key)).await.unwrap()
    }

    /// Waits until the relay can reach `key` (locally or through the mesh).
    pub async fn wait_for_peer(&self, key: PublicKey) {
        let mut changes = self.server.membership_changes();
        within("peer to be known", async {
            while self.server.peer_location(&key).is_none() {
                changes.changed().await.unwrap();
            }
        })
        .await
    }
}

/// A hand-driven relay connection over `Upgrade: DERP`.
pub struct RawConn {
    pub stream: TcpStream,
    buf: BytesMut,
}

impl RawConn {
    pub async fn upgrade(addr: SocketAddr) -> Self {
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let req = format!(
            "GET /derp HTTP/1.1\r\nHost: {addr}\r\nUpgrade: DERP\r\nConnection: Upgrade\r\n\r\n"
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let mut buf = BytesMut::new();
        let end = loop {
            assert!(stream.read_buf(&mut buf).await.unwrap() > 0, "closed during upgrade");
            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break end + 4;
            }
        };
        let head = buf.split_to(end);
        assert!(head.starts_with(b"HTTP/1.1 101"), "{}", String::from_utf8_lossy(&head));
        Self { stream, buf }
    }

    /// Upgrades and completes the handshake honestly as `key`.
    pub async fn connect(addr: SocketAddr, key: &SecretKey) -> Self {
        let mut conn = Self::upgrade(addr).await;
        let (server_key, challenge) = conn.server_key().await;
        conn.send(&ClientInfo::new(challenge, None).seal(key, &server_key).unwrap()).await;
        let answer = conn.recv().await.expect("server info");
        ServerInfo::open(answer, key, &server_key).unwrap();
        conn
    }

    pub async fn server_key(&mut self) -> (PublicKey, [u8; proto::CHALLENGE_LEN]) {
        match self.recv().await {
            Some(Frame::ServerKey { key, challenge }) => (key, challenge),
            other => panic!("expected server key, got {other:?}"),
        }
    }

    pub async fn send(&mut self, frame: &Frame) {
        self.send_raw(&frame.to_bytes().unwrap()).await;
    }

    pub async fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// The next frame, or `None` once the relay closed the connection.
    pub async fn recv(&mut self) -> Option<Frame> {
        within("a frame", async {
            loop {
                if let Some(frame) = proto::decode(&mut self.buf).unwrap() {
                    return Some(frame);
                }
                match self.stream.read_buf(&mut self.buf).await {
                    Ok(0) | Err(_) => return None,
                    Ok(_) => {}
                }
            }
        })
        .await
    }

    /// Reads until the relay closes; returns every frame seen before.
    pub async fn until_closed(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = self.recv().await {
            frames.push(frame);
        }
        frames
    }
}
