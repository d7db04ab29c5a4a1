//! HTTP entry points: [`Server::handle_request`] upgrades one request to a
//! relay connection (`Upgrade: DERP`, or a WebSocket for proxies that only
//! pass those), and [`Server::serve`] is the whole relay HTTP service that
//! `derper` runs: `/derp`, `/derp/latency-check`, `/healthz`, `/metrics`.

use std::convert::Infallible;
use std::io;

use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use tokio_tungstenite::WebSocketStream;
use tracing::{debug, warn};

use super::client_conn::serve_conn;
use super::Server;
use crate::conn::{self, BoxedIo, WS_PROTOCOL};

/// The `Upgrade` token of the native relay protocol.
pub(crate) const UPGRADE_DERP: &str = "DERP";

enum UpgradeKind {
    Derp,
    WebSocket { accept: String, protocol: bool },
}

fn upgrade_kind(headers: &HeaderMap) -> Option<UpgradeKind> {
    let upgrade = headers.get(header::UPGRADE)?.to_str().ok()?;
    if upgrade.eq_ignore_ascii_case(UPGRADE_DERP) {
        return Some(UpgradeKind::Derp);
    }
    if upgrade.eq_ignore_ascii_case("websocket") {
        let key = headers.get(header::SEC_WEBSOCKET_KEY)?;
        let protocol = headers
            .get_all(header::SEC_WEBSOCKET_PROTOCOL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim() == WS_PROTOCOL);
        return Some(UpgradeKind::WebSocket {
            accept: derive_accept_key(key.as_bytes()),
            protocol,
        });
    }
    None
}

fn text(status: StatusCode, body: &'static str) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    *resp.status_mut() = status;
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    resp
}

impl Server {
    /// Serves one relay request from any HTTP stack that supports hyper
    /// upgrades (hyper, axum). Answers `101 Switching Protocols` and runs the
    /// connection in a task owned by this relay, or answers `426` with a
    /// hint when the request is not an upgrade.
    pub async fn handle_request<B>(&self, mut req: Request<B>) -> Response<Full<Bytes>> {
        if self.is_shutting_down() {
            return text(
                StatusCode::SERVICE_UNAVAILABLE,
                "relay is shutting down, retry shortly\n",
            );
        }
        let Some(kind) = upgrade_kind(req.headers()) else {
            let mut resp = text(
                StatusCode::UPGRADE_REQUIRED,
                "this is a relay endpoint: connect with a relay client (Upgrade: DERP or websocket)\n",
            );
            resp.headers_mut().insert(header::UPGRADE, HeaderValue::from_static(UPGRADE_DERP));
            return resp;
        };
        let on_upgrade = hyper::upgrade::on(&mut req);
        let mut resp = text(StatusCode::SWITCHING_PROTOCOLS, "");
        let headers = resp.headers_mut();
        headers.remove(header::CONTENT_TYPE);
        headers.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
        let websocket = match kind {
            UpgradeKind::Derp => {
                headers.insert(header::UPGRADE, HeaderValue::from_static(UPGRADE_DERP));
                false
            }
            UpgradeKind::WebSocket { accept, protocol } => {
                headers.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
                if let Ok(accept) = HeaderValue::from_str(&accept) {
                    headers.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
                }
                if protocol {
                    headers.insert(
                        header::SEC_WEBSOCKET_PROTOCOL,
                        HeaderValue::from_static(WS_PROTOCOL),
                    );
                }
                true
            }
        };
        let shared = self.shared().clone();
        self.spawn_task(async move {
            let upgraded = match on_upgrade.await {
                Ok(upgraded) => upgraded,
                Err(err) => return debug!(%err, "relay upgrade failed"),
            };
            let io: BoxedIo = Box::new(TokioIo::new(upgraded));
            let (reader, writer) = if websocket {
                let ws =
                    WebSocketStream::from_raw_socket(io, Role::Server, Some(conn::ws_config()))
                        .await;
                conn::split_ws(ws)
            } else {
                conn::split_raw(io)
            };
            serve_conn(shared, reader, writer).await;
        });
        resp
    }

    /// The standalone relay HTTP service: routes `/derp` to
    /// [`Server::handle_request`] and answers the probe, health and metrics
    /// paths. Used by `derper`.
    pub async fn route<B>(&self, req: Request<B>) -> Response<Full<Bytes>> {
        match req.uri().path() {
            "/derp" => self.handle_request(req).await,
            "/derp/probe" | "/derp/latency-check" => text(StatusCode::OK, ""),
            "/generate_204" => text(StatusCode::NO_CONTENT, ""),
            "/healthz" => text(StatusCode::OK, "ok\n"),
            "/metrics" => {
                let body = self.stats().to_prometheus();
                let mut resp = Response::new(Full::new(Bytes::from(body)));
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/plain; version=0.0.4"),
                );
                resp
            }
            "/" => text(StatusCode::OK, "relay server: connect relay clients to /derp\n"),
            _ => text(StatusCode::NOT_FOUND, "not found\n"),
        }
    }

    /// Serves plain HTTP on `listener` until [`Server::shutdown`] begins.
    pub async fn serve(&self, listener: TcpListener) -> io::Result<()> {
        self.serve_inner(listener, None).await
    }

    /// Serves HTTPS on `listener` until [`Server::shutdown`] begins.
    pub async fn serve_tls(&self, listener: TcpListener, tls: TlsAcceptor) -> io::Result<()> {
        self.serve_inner(listener, Some(tls)).await
    }

    async fn serve_inner(&self, listener: TcpListener, tls: Option<TlsAcceptor>) -> io::Result<()> {
        // HTTP connections until their upgrade; dropped (aborted) with this future.
        let mut http_conns = JoinSet::new();
        let shutdown = self.shared().shutdown.clone();
        loop {
            let (stream, remote) = tokio::select! {
                () = shutdown.cancelled() => return Ok(()),
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(err) => {
                        // Out of file descriptors and the like: keep serving.
                        warn!(%err, "accept failed");
                        continue;
                    }
                },
                Some(_) = http_conns.join_next(), if !http_conns.is_empty() => continue,
            };
            let _ = stream.set_nodelay(true);
            let server = self.clone();
            let tls = tls.clone();
            http_conns.spawn(async move {
                let io: BoxedIo = match tls {
                    None => Box::new(stream),
                    Some(tls) => match tls.accept(stream).await {
                        Ok(stream) => Box::new(stream),
                        Err(err) => return debug!(%err, %remote, "TLS handshake failed"),
                    },
                };
                let service = service_fn(move |req| {
                    let server = server.clone();
                    async move { Ok::<_, Infallible>(server.route(req).await) }
                });
                let conn = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(io), service)
                    .with_upgrades();
                if let Err(err) = conn.await {
                    debug!(%err, %remote, "http connection ended");
                }
            });
        }
    }
}
