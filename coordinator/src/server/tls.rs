//! HTTPS for `coderd server` (`--tls-address`): the same router as plain
//! HTTP, served through rustls, with `Strict-Transport-Security` on its
//! responses; and the redirect that sends plain-HTTP requests to HTTPS.
//!
//! The listener completes TLS handshakes concurrently (a client that never
//! finishes one holds only its own task, for at most [`HANDSHAKE_TIMEOUT`])
//! and hands finished connections to `axum::serve`, so API, dashboard,
//! WebSockets and the embedded relay's `Upgrade` are served exactly as over
//! plain HTTP.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;
use tokio_util::task::AbortOnDropHandle;
use url::Url;

/// How `coderd server` serves HTTPS. Start from [`TlsConfig::new`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct TlsConfig {
    pub address: SocketAddr,
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key (PKCS#8, PKCS#1 or SEC1).
    pub key_file: PathBuf,
    /// `Strict-Transport-Security: max-age=N` on HTTPS responses; 0 sends none.
    pub strict_transport_security: u64,
    /// Directives after `max-age`: `includeSubDomains`, `preload`.
    pub strict_transport_security_options: Vec<String>,
    /// Redirect plain-HTTP requests from other hosts to the access URL over HTTPS.
    pub redirect_http: bool,
}

impl TlsConfig {
    pub fn new(address: SocketAddr, cert_file: PathBuf, key_file: PathBuf) -> Self {
        TlsConfig {
            address,
            cert_file,
            key_file,
            strict_transport_security: 0,
            strict_transport_security_options: Vec::new(),
            redirect_http: true,
        }
    }

    /// The `Strict-Transport-Security` value, `None` when turned off.
    pub(crate) fn hsts(&self) -> Result<Option<HeaderValue>, String> {
        if self.strict_transport_security == 0 {
            if let Some(o) = self.strict_transport_security_options.first() {
                return Err(format!(
                    "--strict-transport-security-options {o:?} needs --strict-transport-security > 0"
                ));
            }
            return Ok(None);
        }
        let mut value = format!("max-age={}", self.strict_transport_security);
        for option in &self.strict_transport_security_options {
            let known = ["includeSubDomains", "preload"]
                .into_iter()
                .find(|k| k.eq_ignore_ascii_case(option.trim()))
                .ok_or_else(|| {
                    format!(
                        "--strict-transport-security-options {option:?}: expected includeSubDomains or preload"
                    )
                })?;
            value.push_str("; ");
            value.push_str(known);
        }
        HeaderValue::from_str(&value).map(Some).map_err(|e| e.to_string())
    }
}

/// A handshake that has not finished in this long is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; more connections wait in the kernel's
/// accept queue.
const MAX_HANDSHAKES: usize = 1024;

/// A connection that finished its TLS handshake.
pub(crate) type Conn = TlsStream<TcpStream>;

/// TCP connections that finished their TLS handshake, as `axum::serve` takes them.
pub(crate) struct TlsListener {
    local: SocketAddr,
    ready: mpsc::Receiver<(Conn, SocketAddr)>,
    _accept: AbortOnDropHandle<()>,
}

impl TlsListener {
    pub(crate) fn new(listener: TcpListener, acceptor: TlsAcceptor) -> std::io::Result<Self> {
        let local = listener.local_addr()?;
        let (tx, ready) = mpsc::channel(64);
        let task = tokio::spawn(accept_loop(listener, acceptor, tx));
        Ok(TlsListener { local, ready, _accept: AbortOnDropHandle::new(task) })
    }
}

/// Accepts and spawns handshakes; the handshakes die with this task.
async fn accept_loop(
    listener: TcpListener,
    acceptor: TlsAcceptor,
    ready: mpsc::Sender<(Conn, SocketAddr)>,
) {
    let mut handshakes = JoinSet::new();
    loop {
        while handshakes.len() >= MAX_HANDSHAKES {
            handshakes.join_next().await;
        }
        let accepted = tokio::select! {
            biased;
            () = ready.closed() => return,
            Some(_) = handshakes.join_next() => continue,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off as axum does.
                tracing::warn!(error = %e, "TLS listener: accept failed");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let acceptor = acceptor.clone();
        let ready = ready.clone();
        handshakes.spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = ready.send((tls, peer)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
            }
        });
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = Conn;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(conn) => conn,
            // The accept task only stops when this listener is dropped.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> std::io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// Adds `Strict-Transport-Security` to every response (HTTPS listener only:
/// browsers ignore it over plain HTTP).
pub(crate) async fn add_hsts(
    State(value): State<HeaderValue>,
    req: Request,
    next: Next,
) -> Response {
    let mut resp = next.run(req).await;
    resp.headers_mut().insert(header::STRICT_TRANSPORT_SECURITY, value);
    resp
}

/// Where plain-HTTP requests are sent.
#[derive(Debug, Clone)]
pub(crate) struct HttpsRedirect {
    /// The access URL (scheme `https`).
    pub(crate) access_url: Url,
    pub(crate) wildcard: Option<crate::Wildcard>,
}

impl HttpsRedirect {
    /// The HTTPS URL for a request to `host` (no port) at `path_and_query`:
    /// the access URL's origin, or the app host itself for a subdomain app.
    fn target(&self, host: Option<&str>, path_and_query: &str) -> Url {
        let mut to = self.access_url.clone();
        let app_host =
            host.filter(|h| self.wildcard.as_ref().is_some_and(|w| w.label(h).is_some()));
        if let Some(h) = app_host {
            let mut with_host = to.clone();
            if with_host.set_host(Some(h)).is_ok() {
                to = with_host;
            }
        }
        let (path, query) = match path_and_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_and_query, None),
        };
        to.set_path(path);
        to.set_query(query);
        to.set_fragment(None);
        to
    }
}

/// Plain HTTP: every request gets a 308 to the same path over HTTPS (a
/// 308 keeps the method and body). Nothing on the public listener stays
/// plain: coderd's own mesh peer has a loopback listener of its own.
pub(crate) async fn redirect_to_https(
    State(redirect): State<Arc<HttpsRedirect>>,
    req: Request,
) -> Response {
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().host())
        .map(|h| match h.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => h,
        })
        .map(str::to_ascii_lowercase);
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let to = redirect.target(host.as_deref(), path);
    match HeaderValue::from_str(to.as_str()) {
        Ok(location) => {
            (StatusCode::PERMANENT_REDIRECT, [(header::LOCATION, location)]).into_response()
        }
        Err(_) => StatusCode::BAD_REQUEST.into_response(),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn hsts_value() {
        let mut c = TlsConfig::new(([127, 0, 0, 1], 0).into(), "c".into(), "k".into());
        assert_eq!(c.hsts().unwrap(), None);
        c.strict_transport_security_options = vec!["preload".into()];
        assert!(c.hsts().is_err(), "options without max-age");
        c.strict_transport_security = 31536000;
        c.strict_transport_security_options = vec!["includesubdomains".into(), "preload".into()];
        assert_eq!(c.hsts().unwrap().unwrap(), "max-age=31536000; includeSubDomains; preload");
        c.strict_transport_security_options = vec!["max-age=1\r\nX: y".into()];
        assert!(c.hsts().is_err());
    }

    #[test]
    fn redirect_target_keeps_path_and_app_hosts_only() {
        let r = HttpsRedirect {
            access_url: Url::parse("https://coder.example.com:8443/").unwrap(),
            wildcard: crate::Wildcard::parse("*.apps.example.com"),
        };
        assert_eq!(
            r.target(Some("coder.example.com"), "/login?redirect=%2Fx").as_str(),
            "https://coder.example.com:8443/login?redirect=%2Fx"
        );
        // Any other Host header: the access URL's host, never an open redirect.
        assert_eq!(
            r.target(Some("evil.example.net"), "/").as_str(),
            "https://coder.example.com:8443/"
        );
        assert_eq!(
            r.target(Some("8080--main--ws--alice.apps.example.com"), "/a?b=1").as_str(),
            "https://8080--main--ws--alice.apps.example.com:8443/a?b=1"
        );
        assert_eq!(r.target(None, "/").as_str(), "https://coder.example.com:8443/");
    }
}
