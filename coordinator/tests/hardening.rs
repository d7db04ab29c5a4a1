//! Tenant isolation on the in-process router with a real Postgres: a
//! cookie-authenticated WebSocket from another origin is refused (cross-site
//! WebSocket hijacking), an uploaded file is the uploader's (and site
//! owners'), and the login page redirects only to paths on this origin.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use codersdk::{CreateUserRequest, LoginWithPasswordRequest, Role};
use common::{addr, seed_agent, users};
use coordinator::testutil::TestServer;
use reqwest::{header, StatusCode};
use tokio::net::TcpStream;
use url::Url;
use uuid::Uuid;

/// How a WebSocket handshake presents its session.
enum Credential<'a> {
    Cookie(&'a str),
    Header(&'a str),
}

/// The HTTP status of a WebSocket handshake to `path`: 101 when it upgrades.
async fn handshake(url: &Url, path: &str, cred: Credential<'_>, origin: Option<&str>) -> u16 {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::Error;
    let mut ws_url = url.join(path).unwrap();
    ws_url.set_scheme("ws").unwrap();
    let mut req = ws_url.as_str().into_client_request().unwrap();
    let h = req.headers_mut();
    match cred {
        Credential::Cookie(t) => {
            h.insert("Cookie", format!("coder_session_token={t}").parse().unwrap())
        }
        Credential::Header(t) => h.insert("Coder-Session-Token", t.parse().unwrap()),
    };
    if let Some(o) = origin {
        h.insert("Origin", o.parse().unwrap());
    }
    let tcp = TcpStream::connect(addr(url)).await.unwrap();
    match tokio_tungstenite::client_async(req, tcp).await {
        Ok((_ws, resp)) => resp.status().as_u16(),
        Err(Error::Http(resp)) => resp.status().as_u16(),
        Err(e) => panic!("{path}: {e}"),
    }
}

#[tokio::test]
async fn cookie_websockets_from_another_origin_are_refused() {
    let srv = TestServer::start().await.unwrap();
    let (_, (member, member_id)) = users(&srv).await;
    let agent = seed_agent(&srv.db.pool, member_id).await;
    let ours = srv.url.origin().ascii_serialization();
    let evil = Some("https://evil.example");
    let coordination = [
        "/api/v2/tailnet?version=1".to_owned(),
        format!("/api/v2/workspaceagents/{}/coordinate?version=1", agent.id),
    ];
    for path in &coordination {
        let cookie = || Credential::Cookie(&member);
        assert_eq!(
            handshake(&srv.url, path, cookie(), evil).await,
            403,
            "{path}: cookie, evil origin"
        );
        assert_eq!(
            handshake(&srv.url, path, cookie(), Some("null")).await,
            403,
            "{path}: opaque origin"
        );
        assert_eq!(
            handshake(&srv.url, path, cookie(), Some(&ours)).await,
            101,
            "{path}: our origin"
        );
        assert_eq!(handshake(&srv.url, path, cookie(), None).await, 101, "{path}: no browser");
        let header = Credential::Header(&member);
        assert_eq!(handshake(&srv.url, path, header, evil).await, 101, "{path}: header token");
    }
    // The terminal's check is the same one.
    let pty = format!("/api/v2/workspaceagents/{}/pty?reconnect={}", agent.id, Uuid::new_v4());
    assert_eq!(handshake(&srv.url, &pty, Credential::Cookie(&member), evil).await, 403);
    // The refusal says what to do, in the API's error shape.
    let r = reqwest::Client::new()
        .get(srv.url.join(&coordination[0]).unwrap())
        .header(header::COOKIE, format!("coder_session_token={member}"))
        .header(header::ORIGIN, "https://evil.example")
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = r.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("Coder-Session-Token"), "{body}");
}

/// Creates member `name` and returns a session token of it.
async fn member(srv: &TestServer, owner: &codersdk::Client, name: &str) -> String {
    let email = format!("{name}@example.com");
    owner
        .create_user(&CreateUserRequest {
            email: email.clone(),
            username: name.into(),
            password: "member-password".into(),
            roles: vec![Role::Member],
        })
        .await
        .unwrap();
    srv.client()
        .login_with_password(&LoginWithPasswordRequest {
            email,
            password: "member-password".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .session_token
}

#[tokio::test]
async fn uploaded_files_are_readable_by_their_uploader_and_owners_only() {
    let srv = TestServer::start().await.unwrap();
    let owner = srv.owner().await.unwrap();
    let alice = member(&srv, &owner, "alice").await;
    let bob = member(&srv, &owner, "bob").await;
    let source = b"template source with a secret".to_vec();
    let id = srv
        .client()
        .with_token(alice.clone())
        .upload("application/x-tar", source.clone())
        .await
        .unwrap();
    let http = reqwest::Client::new();
    let get = |id: Uuid, token: &str| {
        http.get(srv.url.join(&format!("/api/v2/files/{id}")).unwrap())
            .header("Coder-Session-Token", token)
            .send()
    };
    for (who, token) in [("the uploader", alice.as_str()), ("a site owner", owner.token().unwrap())]
    {
        let r = get(id, token).await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{who}");
        assert_eq!(r.bytes().await.unwrap().as_ref(), source.as_slice(), "{who}");
    }
    // Another member learns nothing, not even that the file exists.
    let refused = get(id, &bob).await.unwrap();
    assert_eq!(refused.status(), StatusCode::NOT_FOUND);
    let refused: serde_json::Value = refused.json().await.unwrap();
    let missing: serde_json::Value = get(Uuid::new_v4(), &bob).await.unwrap().json().await.unwrap();
    assert_eq!(refused, missing);
}

#[tokio::test]
async fn login_redirects_only_to_paths_on_this_origin() {
    let srv = TestServer::start().await.unwrap();
    let owner = srv.owner().await.unwrap();
    let session = owner.token().unwrap().to_owned();
    let http =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    for (to, want) in [
        ("/\t/evil.example", "/"),
        ("//evil.example", "/"),
        ("/\\evil.example", "/"),
        ("https://evil.example/", "/"),
        ("/@owner/ws?x=1", "/@owner/ws?x=1"),
    ] {
        let mut url = srv.url.join("/login").unwrap();
        url.query_pairs_mut().append_pair("redirect", to);
        // Logged in: straight there.
        let r = http
            .get(url.clone())
            .header(header::COOKIE, format!("coder_session_token={session}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::SEE_OTHER, "{to:?}");
        assert_eq!(r.headers()[header::LOCATION].as_bytes(), want.as_bytes(), "{to:?}");
        // Logged out: the form sends the browser there after logging in.
        let page = http.get(url).send().await.unwrap().text().await.unwrap();
        let attr = format!(r#"data-redirect="{}""#, want.replace('&', "&amp;"));
        assert!(page.contains(&attr), "{to:?}: {page}");
    }
}
