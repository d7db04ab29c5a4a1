//! Forwards one HTTP request to an app over a mesh stream: HTTP/1.1 on a
//! `tcp:<port>` stream to the agent, which splices it to the app's port.
//!
//! The proxy is a gateway, not a browser: it never follows redirects (a
//! `Location` goes back to the browser untouched, so it cannot be steered
//! to another agent), never forwards the user's coderd session (header or
//! cookie), and drops any attempt by the app to set coderd's session cookie.

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response, Uri};
use codersdk::{SECURE_SESSION_TOKEN_COOKIE, SESSION_TOKEN_COOKIE, SESSION_TOKEN_HEADER};
use hyper_util::rt::TokioIo;

use super::resolve::App;

/// Forwarding failed before a response arrived.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ForwardError {
    #[error("bad upstream request: {0}")]
    Request(#[from] axum::http::Error),
    #[error("the app did not answer HTTP: {0}")]
    Http(#[from] hyper::Error),
}

/// Hop-by-hop headers (RFC 9110 §7.6.1) never cross a proxy.
const HOP_BY_HOP: [HeaderName; 6] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// The `Upgrade` protocol a request asks for (`Connection: upgrade`), if any.
fn upgrade_of(headers: &HeaderMap) -> Option<HeaderValue> {
    let asks = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    asks.then(|| headers.get(header::UPGRADE).cloned()).flatten()
}

/// Drops hop-by-hop headers but keeps an upgrade (WebSocket) handshake.
fn strip_hop_by_hop_keeping_upgrade(headers: &mut HeaderMap) {
    let upgrade = upgrade_of(headers);
    strip_hop_by_hop(headers);
    if let Some(u) = upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(header::UPGRADE, u);
    }
}

fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Headers the Connection header names are hop-by-hop too.
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::try_from(n.trim()).ok())
        .collect();
    for h in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(h);
    }
    headers.remove(header::UPGRADE);
}

/// Removes cookie `name` from the Cookie header(s).
pub fn strip_cookie(headers: &mut HeaderMap, name: &str) {
    let kept = without_cookie(headers, name);
    headers.remove(header::COOKIE);
    if let Some(c) = kept {
        headers.insert(header::COOKIE, c);
    }
}

/// The Cookie header without cookie `name`; `None` if nothing is left.
fn without_cookie(headers: &HeaderMap, name: &str) -> Option<HeaderValue> {
    let kept: Vec<&str> = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .filter(|c| c.split_once('=').map_or(*c, |(k, _)| k) != name)
        .collect();
    if kept.is_empty() {
        return None;
    }
    HeaderValue::from_str(&kept.join("; ")).ok()
}

/// The request to send upstream: path rewritten below the app's base path,
/// `Host` the app's, credentials of coderd removed, `X-Forwarded-*` added.
pub fn upstream_request(
    req: Request<Body>,
    app: &App,
    rest: &str,
    forwarded_host: &str,
    forwarded_proto: &str,
) -> Result<Request<Body>, ForwardError> {
    let (mut parts, body) = req.into_parts();
    let path = app.upstream_path(rest, parts.uri.query());
    parts.uri = Uri::builder().path_and_query(path).build()?;
    parts.version = axum::http::Version::HTTP_11;
    let h = &mut parts.headers;
    strip_hop_by_hop_keeping_upgrade(h);
    strip_cookie(h, SESSION_TOKEN_COOKIE);
    strip_cookie(h, SECURE_SESSION_TOKEN_COOKIE);
    h.remove(SESSION_TOKEN_HEADER);
    h.remove(super::super::web::CSRF_HEADER);
    if let Ok(v) = HeaderValue::from_str(&app.host) {
        h.insert(header::HOST, v);
    }
    if let Ok(v) = HeaderValue::from_str(forwarded_host) {
        h.insert(HeaderName::from_static("x-forwarded-host"), v);
    }
    if let Ok(v) = HeaderValue::from_str(forwarded_proto) {
        h.insert(HeaderName::from_static("x-forwarded-proto"), v);
    }
    Ok(Request::from_parts(parts, body))
}

/// Cookies an app may never set: coderd's session and the app origin's key.
const RESERVED_COOKIES: [&str; 3] =
    [SESSION_TOKEN_COOKIE, SECURE_SESSION_TOKEN_COOKIE, super::subdomain::APP_COOKIE];

/// The app's response as the browser gets it.
pub fn downstream_response<B>(resp: Response<B>) -> Response<B> {
    let (mut parts, body) = resp.into_parts();
    if parts.status == axum::http::StatusCode::SWITCHING_PROTOCOLS {
        strip_hop_by_hop_keeping_upgrade(&mut parts.headers);
    } else {
        strip_hop_by_hop(&mut parts.headers);
    }
    let cookies: Vec<HeaderValue> = parts
        .headers
        .get_all(header::SET_COOKIE)
        .iter()
        .filter(|v| {
            let s = v.to_str().unwrap_or_default();
            !RESERVED_COOKIES.contains(&s.split_once('=').map_or(s, |(k, _)| k).trim())
        })
        .cloned()
        .collect();
    parts.headers.remove(header::SET_COOKIE);
    for c in cookies {
        parts.headers.append(header::SET_COOKIE, c);
    }
    Response::from_parts(parts, body)
}

/// Sends `req` over `(send, recv)` and returns the response; the HTTP
/// connection task lives until the response body is consumed or dropped.
pub async fn forward(
    send: quinn::SendStream,
    recv: quinn::RecvStream,
    mut req: Request<Body>,
) -> Result<Response<Body>, ForwardError> {
    // A WebSocket (or other upgrade) continues as raw bytes both ways.
    let downstream = upgrade_of(req.headers()).map(|_| hyper::upgrade::on(&mut req));
    let io = TokioIo::new(tokio::io::join(recv, send));
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await?;
    // Owned by the exchange: it ends when the response body has been read
    // (or the browser went away and hyper dropped it), or the upgraded
    // connection closes.
    tokio::spawn(async move {
        if let Err(e) = conn.with_upgrades().await {
            tracing::debug!(error = %e, "app connection ended");
        }
    });
    let mut resp = sender.send_request(req).await?;
    if let (Some(downstream), axum::http::StatusCode::SWITCHING_PROTOCOLS) =
        (downstream, resp.status())
    {
        let upstream = hyper::upgrade::on(&mut resp);
        tokio::spawn(async move {
            match tokio::try_join!(downstream, upstream) {
                Ok((d, u)) => {
                    let (mut d, mut u) = (TokioIo::new(d), TokioIo::new(u));
                    let _ = tokio::io::copy_bidirectional(&mut d, &mut u).await;
                }
                Err(e) => tracing::debug!(error = %e, "app upgrade failed"),
            }
        });
    }
    Ok(downstream_response(resp.map(Body::new)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn session_cookie_is_never_forwarded() {
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("a=1; coder_session_token=secret"));
        h.append(header::COOKIE, HeaderValue::from_static("b=2"));
        strip_cookie(&mut h, SESSION_TOKEN_COOKIE);
        assert_eq!(h[header::COOKIE], "a=1; b=2");
        let mut h = HeaderMap::new();
        h.append(header::COOKIE, HeaderValue::from_static("coder_session_token=secret"));
        strip_cookie(&mut h, SESSION_TOKEN_COOKIE);
        assert!(h.get(header::COOKIE).is_none());
    }

    #[test]
    fn upstream_request_is_rewritten() {
        let app = App::from_url("http://localhost:8000/base", "owner").unwrap();
        let req = Request::builder()
            .uri("/@a/w/apps/x/p?q=1")
            .header(
                header::COOKIE,
                "coder_session_token=secret; theme=dark; __Host-coder_session_token=secret",
            )
            .header(SESSION_TOKEN_HEADER, "secret")
            .header(header::CONNECTION, "x-private")
            .header("x-private", "1")
            .body(Body::empty())
            .unwrap();
        let up = upstream_request(req, &app, "/p", "coder.example", "https").unwrap();
        assert_eq!(up.uri(), "/base/p?q=1");
        assert_eq!(up.headers()[header::HOST], "localhost:8000");
        assert_eq!(up.headers()[header::COOKIE], "theme=dark");
        assert!(up.headers().get(SESSION_TOKEN_HEADER).is_none());
        assert!(up.headers().get("x-private").is_none());
        assert_eq!(up.headers()["x-forwarded-proto"], "https");
    }

    #[test]
    fn app_cannot_set_the_session_cookie() {
        let resp = Response::builder()
            .status(302)
            .header(header::LOCATION, "http://other/")
            .header(header::SET_COOKIE, "coder_session_token=evil; Path=/")
            .header(header::SET_COOKIE, "__Host-coder_session_token=evil; Path=/; Secure")
            .header(header::SET_COOKIE, "app=1")
            .body(())
            .unwrap();
        let out = downstream_response(resp);
        assert_eq!(out.status(), 302);
        assert_eq!(out.headers()[header::LOCATION], "http://other/");
        let cookies: Vec<_> = out.headers().get_all(header::SET_COOKIE).iter().collect();
        assert_eq!(cookies, vec!["app=1"]);
    }
}
