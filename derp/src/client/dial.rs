//! Dialing a relay: TCP (and TLS for `https`), then either the native
//! `Upgrade: DERP` or a WebSocket, then the key-proving handshake.
//!
//! The TCP connection goes through the HTTP proxy that `HTTP_PROXY` /
//! `HTTPS_PROXY` name for the relay's URL, unless `NO_PROXY` exempts it
//! ([`crate::proxy`]).
//!
//! With [`Transport::Auto`] a refused upgrade (a proxy that answers with
//! an error, or drops the connection, on an unknown `Upgrade` token) is
//! retried once over WebSocket on a fresh connection.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderValue, Request, StatusCode};
use http_body_util::Empty;
use hyper_util::rt::TokioIo;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_tungstenite::tungstenite;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use super::url::{InvalidRelayUrl, RelayUrl};
use crate::conn::{self, BoxedIo, ConnError, FrameReader, FrameWriter, WS_PROTOCOL};
use crate::key::{MeshKey, PublicKey, SecretKey};
use crate::proto::{ClientInfo, Frame, HandshakeError, ServerInfo};

/// How to reach the relay over HTTP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum Transport {
    /// `Upgrade: DERP`, falling back to WebSocket when that is refused.
    #[default]
    Auto,
    /// Only `Upgrade: DERP`.
    Upgrade,
    /// Only WebSocket (for proxies known to pass nothing else).
    WebSocket,
}

/// Connecting to a relay failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    #[error(transparent)]
    InvalidUrl(#[from] InvalidRelayUrl),
    #[error("cannot reach relay: {0}")]
    Io(#[from] io::Error),
    #[error("cannot reach relay: {0}")]
    Proxy(#[from] crate::proxy::ProxyError),
    #[error("relay host is not a valid TLS server name: {0}")]
    InvalidServerName(String),
    #[error("TLS setup failed: {0}")]
    Tls(#[from] rustls::Error),
    #[error(transparent)]
    TlsRoots(#[from] super::tls::TlsRootsError),
    #[error("HTTP error talking to relay: {0}")]
    Http(#[from] hyper::Error),
    #[error("could not build the upgrade request: {0}")]
    Request(#[from] http::Error),
    #[error("relay (or a proxy) refused the upgrade with HTTP {status}")]
    UpgradeRefused { status: StatusCode },
    #[error("websocket connection failed: {0}")]
    WebSocket(#[from] tungstenite::Error),
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    #[error(transparent)]
    Conn(#[from] ConnError),
    #[error("relay did not answer in time")]
    Timeout,
}

/// A connection that passed the handshake.
pub(crate) struct Dialed {
    pub(crate) reader: FrameReader,
    pub(crate) writer: FrameWriter,
    pub(crate) server_key: PublicKey,
    /// Whether this connection ended up on WebSocket.
    pub(crate) websocket: bool,
}

pub(crate) struct DialOptions<'a> {
    pub(crate) url: &'a RelayUrl,
    pub(crate) secret_key: &'a SecretKey,
    pub(crate) mesh_key: Option<&'a MeshKey>,
    pub(crate) transport: Transport,
    pub(crate) tls: Option<&'a Arc<rustls::ClientConfig>>,
    pub(crate) timeout: Duration,
}

pub(crate) async fn dial(opts: &DialOptions<'_>) -> Result<Dialed, ConnectError> {
    timeout(opts.timeout, dial_inner(opts)).await.map_err(|_| ConnectError::Timeout)?
}

async fn dial_inner(opts: &DialOptions<'_>) -> Result<Dialed, ConnectError> {
    let io = connect_io(opts).await?;
    let ((mut reader, mut writer), websocket) = match opts.transport {
        Transport::WebSocket => (conn::split_ws(upgrade_ws(opts.url, io).await?), true),
        Transport::Upgrade => (conn::split_raw(upgrade_derp(opts.url, io).await?), false),
        Transport::Auto => match upgrade_derp(opts.url, io).await {
            Ok(io) => (conn::split_raw(io), false),
            Err(ConnectError::UpgradeRefused { .. } | ConnectError::Http(_)) => {
                tracing::debug!(url = %opts.url, "relay upgrade refused, trying websocket");
                let io = connect_io(opts).await?;
                (conn::split_ws(upgrade_ws(opts.url, io).await?), true)
            }
            Err(err) => return Err(err),
        },
    };
    let Frame::ServerKey { key: server_key, challenge } = reader.recv().await? else {
        return Err(HandshakeError::Refused("relay did not open with its key".into()).into());
    };
    let info = ClientInfo::new(challenge, opts.mesh_key.cloned());
    writer.send(&info.seal(opts.secret_key, &server_key)?).await?;
    // Opening the box proves the relay holds the key it announced; the
    // rate limit it advertises needs no action from us (it throttles reads).
    ServerInfo::open(reader.recv().await?, opts.secret_key, &server_key)?;
    Ok(Dialed { reader, writer, server_key, websocket })
}

async fn connect_io(opts: &DialOptions<'_>) -> Result<BoxedIo, ConnectError> {
    let (host, port) = opts.url.dial_addr();
    let tcp = crate::proxy::connect_tcp(opts.url.tls, &host, port, opts.timeout).await?;
    if !opts.url.tls {
        return Ok(Box::new(tcp));
    }
    let config = match opts.tls {
        Some(config) => config.clone(),
        None => super::tls::client_config()?,
    };
    let name = rustls::pki_types::ServerName::try_from(opts.url.host.clone())
        .map_err(|_| ConnectError::InvalidServerName(opts.url.host.clone()))?;
    let tls = TlsConnector::from(config).connect(name, tcp).await?;
    Ok(Box::new(tls))
}

async fn upgrade_derp(url: &RelayUrl, io: BoxedIo) -> Result<BoxedIo, ConnectError> {
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    let req = Request::get(url.path.as_str())
        .header(header::HOST, url.authority.as_str())
        .header(header::UPGRADE, crate::server::UPGRADE_DERP)
        .header(header::CONNECTION, "Upgrade")
        .body(Empty::<Bytes>::new())?;
    let upgrade = async {
        let resp = sender.send_request(req).await?;
        if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
            return Err(ConnectError::UpgradeRefused { status: resp.status() });
        }
        Ok(hyper::upgrade::on(resp).await?)
    };
    let conn = conn.with_upgrades();
    tokio::pin!(upgrade, conn);
    // The connection must be polled for the response to arrive and for the
    // upgrade to be handed over; it finishes once it has been.
    let upgraded = tokio::select! {
        upgraded = &mut upgrade => upgraded?,
        done = &mut conn => {
            done?;
            upgrade.await?
        }
    };
    Ok(Box::new(TokioIo::new(upgraded)))
}

async fn upgrade_ws(url: &RelayUrl, io: BoxedIo) -> Result<conn::WsStream, ConnectError> {
    let mut req = url.ws_uri().into_client_request()?;
    req.headers_mut().insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(WS_PROTOCOL));
    let (ws, _) =
        tokio_tungstenite::client_async_with_config(req, io, Some(conn::ws_config())).await?;
    Ok(ws)
}
