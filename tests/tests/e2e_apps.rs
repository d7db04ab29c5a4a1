//! Workspace apps, dev URLs, the web terminal and the dashboard on real
//! parts: `coderd` (embedded Postgres, relay, provisioners running
//! terraform) creates a workspace from `examples/templates/local`; the
//! real `coder-agent` joins the mesh; `coderd` joins it too and proxies
//! `/@dev/ws1/apps/…` and the terminal WebSocket to the agent over QUIC.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use reqwest::header;
use reqwest::redirect::Policy;
use serde_json::{json, Value};
use tests::{login_first_user, require_programs, run_ok, tempdir, Coderd};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

/// A tiny HTTP server on the workspace host (the `local` template's agent
/// runs here): `/redirect` answers 302 to `target`; `/up` upgrades to a raw
/// echo; anything else echoes
/// the request head and sets two cookies. Counts requests.
fn test_app(target: String) -> (u16, Arc<AtomicUsize>, Arc<Mutex<String>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let last = Arc::new(Mutex::new(String::new()));
    let (h, lst) = (hits.clone(), last.clone());
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            h.fetch_add(1, Ordering::SeqCst);
            let mut buf = vec![0u8; 16384];
            let mut got = Vec::new();
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => got.extend_from_slice(&buf[..n]),
                }
            }
            let head = String::from_utf8_lossy(&got).into_owned();
            *lst.lock().unwrap() = head.clone();
            if head.starts_with("GET /up ") {
                // An upgrade: agree, then echo raw bytes until the peer closes.
                let _ = s.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n");
                let mut b = [0u8; 1024];
                while let Ok(n) = s.read(&mut b) {
                    if n == 0 || s.write_all(&b[..n]).is_err() {
                        break;
                    }
                }
                continue;
            }
            let resp = if head.starts_with("GET /redirect") {
                format!("HTTP/1.1 302 Found\r\nLocation: {target}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            } else {
                format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nSet-Cookie: coder_session_token=evil; Path=/\r\nSet-Cookie: app=1; Path=/\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{}",
                    head.len(),
                    head
                )
            };
            let _ = s.write_all(resp.as_bytes());
        }
    });
    (port, hits, last)
}

/// A health endpoint that answers 200 while `up` is set and afterwards
/// closes every connection without an answer.
fn health_server() -> (u16, Arc<std::sync::atomic::AtomicBool>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let up = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let u = up.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { continue };
            if !u.load(Ordering::SeqCst) {
                continue; // dropped: no answer
            }
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf);
            let _ =
                s.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
        }
    });
    (port, up)
}

/// Waits (deadline 60 s) until the API shows app `slug` with health `want`;
/// polls the build's resources, as the dashboard does.
async fn wait_health(http: &reqwest::Client, base: &url::Url, dev: &str, slug: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let get = |path: String| {
        http.get(base.join(&path).unwrap()).header("Coder-Session-Token", dev).send()
    };
    let mut seen = String::new();
    while Instant::now() < deadline {
        let ws: Value =
            get("api/v2/users/dev/workspace/ws1".into()).await.unwrap().json().await.unwrap();
        let build = ws["latest_build"]["id"].as_str().unwrap().to_owned();
        let res: Value = get(format!("api/v2/workspacebuilds/{build}/resources"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let app = res
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["agents"].as_array().cloned().unwrap_or_default())
            .flat_map(|a| a["apps"].as_array().cloned().unwrap_or_default())
            .find(|a| a["slug"] == slug)
            .unwrap_or_else(|| panic!("no app {slug}: {res}"));
        seen = app["health"].as_str().unwrap().to_owned();
        if seen == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("app {slug} never became {want}; last seen {seen}");
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

async fn login(http: &reqwest::Client, base: &url::Url, login: &str, password: &str) -> String {
    let r: Value = http
        .post(base.join("api/v2/users/login").unwrap())
        .json(&json!({"username": login, "password": password}))
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap()
        .json()
        .await
        .unwrap();
    r["session_token"].as_str().unwrap().to_owned()
}

/// Walks the subdomain auth flow for `host` as the user of dashboard
/// session `session`; returns the app origin's key and the Set-Cookie line.
async fn app_key(
    http: &reqwest::Client,
    base: &url::Url,
    host: &str,
    session: &str,
) -> (String, String) {
    let port = base.port().unwrap();
    let r = http.get(format!("http://{host}:{port}/sub?x=1")).send().await.unwrap();
    assert_eq!(r.status(), 303);
    let to = r.headers()[header::LOCATION].to_str().unwrap().to_owned();
    let want = format!("{base}api/v2/applications/auth-redirect?redirect_uri=http%3A%2F%2F{host}%3A{port}%2Fsub%3Fx%3D1");
    assert_eq!(to, want);
    let r = http
        .get(&to)
        .header(header::COOKIE, format!("coder_session_token={session}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let back = r.headers()[header::LOCATION].to_str().unwrap().to_owned();
    let prefix = format!("http://{host}:{port}/sub?x=1&coder_app_token=");
    assert!(back.starts_with(&prefix), "{back}");
    let key = back[prefix.len()..].to_owned();
    let r = http.get(&back).send().await.unwrap();
    assert_eq!(r.status(), 303);
    assert_eq!(r.headers()[header::LOCATION], "/sub?x=1");
    let set = r.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    (key, set)
}

/// Subdomain apps: an app-scoped cookie per app origin, never the dashboard's.
async fn subdomain_apps(
    base: &url::Url,
    dev: &str,
    bob: &str,
    app_port: u16,
    app_seen: &Mutex<String>,
) {
    let addr = std::net::SocketAddr::new([127, 0, 0, 1].into(), base.port().unwrap());
    let files = "files--main--ws1--dev.apps.test";
    let shared = "shared--main--ws1--dev.apps.test";
    let echo = format!("{app_port}--main--ws1--dev.apps.test");
    let http = reqwest::Client::builder()
        .redirect(Policy::none())
        .resolve(files, addr)
        .resolve(shared, addr)
        .resolve(&echo, addr)
        .build()
        .unwrap();
    let port = addr.port();
    let (key, set) = app_key(&http, base, files, dev).await;
    assert_eq!(set, format!("coder_app_session={key}; Path=/; HttpOnly; SameSite=Lax"));
    let with_key = |host: &str, key: &str, path: &str| {
        http.get(format!("http://{host}:{port}{path}"))
            .header(header::COOKIE, format!("coder_app_session={key}"))
            .send()
    };
    let r = with_key(files, &key, "/").await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("Directory listing"));
    // The key is scoped to its origin: not another app's, not the API's.
    assert_eq!(with_key(shared, &key, "/").await.unwrap().status(), 303);
    let r = http
        .get(base.join("api/v2/users/me").unwrap())
        .header("Coder-Session-Token", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = http
        .get(base.join("@dev/ws1/apps/files/").unwrap())
        .header(header::COOKIE, format!("coder_session_token={key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    // Another user gets a key for the host, but not the owner's private app.
    let (bobs, _) = app_key(&http, base, files, bob).await;
    assert_eq!(with_key(files, &bobs, "/").await.unwrap().status(), 404);
    let (bobs_shared, _) = app_key(&http, base, shared, bob).await;
    assert_eq!(with_key(shared, &bobs_shared, "/").await.unwrap().status(), 200);
    // A dev URL on its own origin: the app never sees its origin's key.
    let (k, _) = app_key(&http, base, &echo, dev).await;
    let r = http
        .get(format!("http://{echo}:{port}/echo"))
        .header(header::COOKIE, format!("coder_app_session={k}; theme=dark"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let head = r.text().await.unwrap();
    assert!(head.to_ascii_lowercase().contains("cookie: theme=dark\r\n"), "{head}");
    assert!(!head.contains(&k), "{head}");
    assert_eq!(*app_seen.lock().unwrap(), head);
    // The auth redirect only ever sends keys to this deployment's app hosts.
    for bad in
        ["http://evil.example/", "http://apps.test/", "https://files--main--ws1--dev.apps.test/"]
    {
        let mut u = base.join("api/v2/applications/auth-redirect").unwrap();
        u.query_pairs_mut().append_pair("redirect_uri", bad);
        let r = http
            .get(u)
            .header(header::COOKIE, format!("coder_session_token={dev}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{bad}");
    }
}

/// Opens the web terminal WebSocket and returns it.
async fn terminal(
    base: &url::Url,
    token: &str,
    agent: &str,
    id: &str,
) -> Result<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::tungstenite::Error,
> {
    let mut u = base.join(&format!("api/v2/workspaceagents/{agent}/pty?reconnect={id}")).unwrap();
    u.set_scheme("ws").unwrap();
    let mut req = u.as_str().into_client_request().unwrap();
    req.headers_mut().insert("Coder-Session-Token", token.parse().unwrap());
    tokio_tungstenite::connect_async(req).await.map(|(ws, _)| ws)
}

/// Reads terminal output until `want` appears (deadline 30 s); returns all of it.
async fn read_until<S>(ws: &mut S, want: &str) -> String
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    let mut seen = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while !seen.contains(want) {
        let msg = tokio::time::timeout_at(deadline, ws.next())
            .await
            .unwrap_or_else(|_| panic!("no {want:?} in terminal output: {seen:?}"))
            .expect("terminal closed")
            .unwrap();
        if let Message::Binary(b) = msg {
            seen.push_str(&String::from_utf8_lossy(&b));
        }
    }
    seen
}

#[test]
fn apps_dev_urls_terminal_and_dashboard_through_the_mesh() {
    if !require_programs(&["terraform", "python3"]) {
        return;
    }
    let tmp = tempdir().unwrap();
    let cfg = tmp.path().join("config");
    let srv =
        Coderd::spawn(&tmp.path().join("data"), &["--wildcard-access-url", "*.apps.test"]).unwrap();
    let coder = |args: &[&str]| {
        let mut c = srv.coder(&cfg).unwrap();
        c.args(args);
        run_ok(&mut c).unwrap()
    };
    login_first_user(&srv, &cfg).unwrap();
    // The local template plus an app every logged-in user may open, and a
    // health-checked app whose endpoint starts healthy.
    let (health_port, health_up) = health_server();
    let tpl = tmp.path().join("tpl");
    coder(&["templates", "init", tpl.to_str().unwrap(), "--id", "local"]);
    let mut main_tf = std::fs::read_to_string(tpl.join("main.tf")).unwrap();
    main_tf.push_str(
        &r#"
resource "coder_app" "shared" {
  agent_id = coder_agent.main.id
  slug     = "shared"
  url      = "http://localhost:${local.http_port}"
  share    = "authenticated"
}

resource "coder_app" "checked" {
  agent_id = coder_agent.main.id
  slug     = "checked"
  url      = "http://127.0.0.1:HEALTH_PORT"
  healthcheck {
    url       = "http://127.0.0.1:HEALTH_PORT/healthz"
    interval  = 1
    threshold = 2
  }
}
"#
        .replace("HEALTH_PORT", &health_port.to_string()),
    );
    std::fs::write(tpl.join("main.tf"), main_tf).unwrap();
    coder(&["templates", "push", "local", "-d", tpl.to_str().unwrap(), "--yes"]);
    let files_port = free_port();
    let out = coder(&[
        "create",
        "ws1",
        "-t",
        "local",
        "--parameter",
        &format!("http_port={files_port}"),
        "--yes",
    ]);
    assert!(out.contains("is running"), "{out}");

    let (other_port, other_hits, _) = test_app("unused".into());
    let (app_port, _, app_seen) = test_app(format!("http://127.0.0.1:{other_port}/stolen"));

    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let base = srv.url.clone();
        let http = reqwest::Client::builder().redirect(Policy::none()).build().unwrap();
        let dev = login(&http, &base, "dev", "dev-password").await;
        http.post(base.join("api/v2/users").unwrap())
            .header("Coder-Session-Token", &dev)
            .json(
                &json!({"email": "bob@example.com", "username": "bob", "password": "bob-password"}),
            )
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap();
        let bob = login(&http, &base, "bob", "bob-password").await;
        let get = |path: &str, token: Option<&str>| {
            let mut r = http.get(base.join(path).unwrap());
            if let Some(t) = token {
                r = r.header("Coder-Session-Token", t);
            }
            r.send()
        };
        // A dashboard page as dev's browser asks for it (the session cookie).
        let page_as_dev = |path: &str| {
            http.get(base.join(path).unwrap())
                .header(header::COOKIE, format!("coder_session_token={dev}"))
                .send()
        };

        // The startup script starts the file server a moment after the agent
        // is ready; wait for the app to answer through the proxy.
        let deadline = Instant::now() + Duration::from_secs(90);
        let listing = loop {
            let r = get("@dev/ws1/apps/files/", Some(&dev)).await.unwrap();
            let status = r.status();
            let body = r.text().await.unwrap();
            if status == 200 {
                break body;
            }
            assert!(Instant::now() < deadline, "files app never answered: {status} {body}");
            tokio::time::sleep(Duration::from_millis(300)).await;
        };
        assert!(listing.contains("Directory listing"), "{listing}");

        // Health checks: healthy while the endpoint answers (the dashboard
        // shows the badge), unhealthy two failed checks after it stops.
        wait_health(&http, &base, &dev, "checked", "healthy").await;
        let page = page_as_dev("@dev/ws1")
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(page.contains(r#"<span class="badge ok" data-health="healthy">healthy</span>"#), "{page}");
        health_up.store(false, Ordering::SeqCst);
        wait_health(&http, &base, &dev, "checked", "unhealthy").await;
        let shown = coder(&["show", "ws1"]);
        assert!(shown.contains("checked (unhealthy)") && shown.contains("checked (unhealthy),files ("), "{shown}");

        // Without the trailing slash: a redirect to the app's root.
        let r = get("@dev/ws1.main/apps/files", Some(&dev)).await.unwrap();
        assert_eq!(r.status(), 308);
        assert_eq!(r.headers()[header::LOCATION], "/@dev/ws1.main/apps/files/");

        // Share levels: another user is refused the owner's private app and
        // dev URLs (404, like a missing app); the shared one opens for them
        // only on its own origin (below), never on the dashboard's (403;
        // tests/tests/path_apps.rs).
        let r = get("@dev/ws1/apps/files/", Some(&bob)).await.unwrap();
        assert_eq!(r.status(), 404);
        let r = get(&format!("@dev/ws1/apps/{app_port}/"), Some(&bob)).await.unwrap();
        assert_eq!(r.status(), 404);
        let r = get("@dev/ws1/apps/shared/", Some(&bob)).await.unwrap();
        assert_eq!(r.status(), 403);
        let r = get("@dev/ws1/apps/nope/", Some(&dev)).await.unwrap();
        assert_eq!(r.status(), 404);

        // No session: browsers go to the login page, API clients get 401.
        let r = get("@dev/ws1/apps/files/", None).await.unwrap();
        assert_eq!(r.status(), 401);
        let r = http
            .get(base.join("@dev/ws1/apps/files/x?y=1").unwrap())
            .header(header::ACCEPT, "text/html")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303);
        assert_eq!(
            r.headers()[header::LOCATION],
            "/login?redirect=%2F%40dev%2Fws1%2Fapps%2Ffiles%2Fx%3Fy%3D1"
        );

        // A dev URL (any port) with the session as a cookie: the app sees
        // neither the session cookie nor the header, and cannot set it.
        let r = http
            .get(base.join(&format!("@dev/ws1/apps/{app_port}/echo?q=1")).unwrap())
            .header(header::COOKIE, format!("coder_session_token={dev}; theme=dark"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let cookies: Vec<_> = r
            .headers()
            .get_all(header::SET_COOKIE)
            .iter()
            .map(|v| v.to_str().unwrap().to_owned())
            .collect();
        assert_eq!(cookies, vec!["app=1; Path=/"]);
        let head = r.text().await.unwrap();
        assert!(head.starts_with("GET /echo?q=1 HTTP/1.1"), "{head}");
        assert!(head.to_ascii_lowercase().contains("cookie: theme=dark\r\n"), "{head}");
        assert!(!head.contains(&dev), "the session reached the app: {head}");
        assert!(!head.to_ascii_lowercase().contains("coder-session-token"), "{head}");
        assert_eq!(*app_seen.lock().unwrap(), head);

        // An upgrade (as WebSockets do) goes through: raw bytes both ways.
        {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            let mut c = tokio::net::TcpStream::connect(("127.0.0.1", base.port().unwrap())).await.unwrap();
            let req = format!("GET /@dev/ws1/apps/{app_port}/up HTTP/1.1\r\nHost: {}\r\nCoder-Session-Token: {dev}\r\nConnection: Upgrade\r\nUpgrade: echo\r\n\r\n", base.host_str().unwrap());
            c.write_all(req.as_bytes()).await.unwrap();
            let mut got = Vec::new();
            let mut b = [0u8; 1024];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = tokio::time::timeout(Duration::from_secs(30), c.read(&mut b)).await.unwrap().unwrap();
                assert!(n > 0, "closed during the upgrade: {}", String::from_utf8_lossy(&got));
                got.extend_from_slice(&b[..n]);
            }
            let head = String::from_utf8_lossy(&got).to_ascii_lowercase();
            assert!(head.starts_with("http/1.1 101"), "{head}");
            assert!(head.contains("upgrade: echo"), "{head}");
            c.write_all(b"ping through the mesh").await.unwrap();
            let mut echoed = vec![0u8; 21];
            tokio::time::timeout(Duration::from_secs(30), c.read_exact(&mut echoed)).await.unwrap().unwrap();
            assert_eq!(&echoed, b"ping through the mesh");
        }

        // The proxy never follows a redirect: the browser gets it as is.
        let r = get(&format!("@dev/ws1/apps/{app_port}/redirect"), Some(&dev)).await.unwrap();
        assert_eq!(r.status(), 302);
        assert_eq!(
            r.headers()[header::LOCATION],
            format!("http://127.0.0.1:{other_port}/stolen").as_str()
        );
        assert_eq!(other_hits.load(Ordering::SeqCst), 0, "the proxy followed the redirect");

        // CSRF: a cookie-authenticated state change needs the page's token.
        let page = page_as_dev("@dev/ws1")
            .await
            .unwrap();
        assert_eq!(page.status(), 200);
        assert!(page.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("script-src 'self'"));
        let html = page.text().await.unwrap();
        assert!(html.contains(r#"href="/@dev/ws1.main/apps/files/""#), "{html}");
        assert!(html.contains("data-lifecycle=\"ready\""), "{html}");
        let csrf = html
            .split(r#"<meta name="csrf-token" content=""#)
            .nth(1)
            .and_then(|s| s.split('"').next())
            .unwrap()
            .to_owned();
        let post = |csrf: Option<&str>| {
            let mut r = http
                .post(base.join("api/v2/users/me/keys/tokens").unwrap())
                .header(header::COOKIE, format!("coder_session_token={dev}"))
                .json(&json!({"token_name": format!("t{}", csrf.is_some())}));
            if let Some(c) = csrf {
                r = r.header("X-CSRF-Token", c);
            }
            r.send()
        };
        assert_eq!(post(None).await.unwrap().status(), 403);
        assert_eq!(post(Some("0000")).await.unwrap().status(), 403);
        assert_eq!(post(Some(&csrf)).await.unwrap().status(), 201);
        let list = page_as_dev("workspaces")
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(list.contains(r#"href="/@dev/ws1""#) && list.contains("running"), "{list}");
        let r = get("workspaces", None).await.unwrap();
        assert_eq!(r.status(), 303);
        let templates = page_as_dev("templates")
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(templates.contains(r#"data-template="local""#), "{templates}");
        assert!(templates.contains(r#"href="/templates/local""#), "{templates}");
        assert!(templates.contains(r#"<span class="badge ok">succeeded</span>"#), "{templates}");
        let template = page_as_dev("templates/local").await.unwrap().text().await.unwrap();
        assert!(template.contains(r#"data-active="true""#), "{template}");
        assert!(template.contains(r#"<span class="badge ok">active</span>"#), "{template}");

        subdomain_apps(&base, &dev, &bob, app_port, &app_seen).await;

        // The web terminal: a shell that survives its WebSocket.
        let ws: Value =
            get("api/v2/users/dev/workspace/ws1", Some(&dev)).await.unwrap().json().await.unwrap();
        let build = ws["latest_build"]["id"].as_str().unwrap();
        let res: Value = get(&format!("api/v2/workspacebuilds/{build}/resources"), Some(&dev))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let agent = res
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["agents"].as_array().cloned().unwrap_or_default())
            .next()
            .unwrap()["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let id = uuid::Uuid::new_v4().to_string();
        let mut t = terminal(&base, &dev, &agent, &id).await.unwrap();
        let send = |data: &str| Message::Text(json!({"data": data}).to_string().into());
        t.send(send("export MARK=kept-$((6*7)); echo first-$((40+2))\r")).await.unwrap();
        read_until(&mut t, "first-42").await;
        drop(t);
        // Re-attach by id: the earlier output is replayed, the variable kept.
        let mut t = terminal(&base, &dev, &agent, &id).await.unwrap();
        read_until(&mut t, "first-42").await;
        t.send(send("echo again-$MARK\r")).await.unwrap();
        read_until(&mut t, "again-kept-42").await;
        // A different id is a different shell.
        let mut other =
            terminal(&base, &dev, &agent, &uuid::Uuid::new_v4().to_string()).await.unwrap();
        other.send(send("echo fresh-[$MARK]\r")).await.unwrap();
        read_until(&mut other, "fresh-[]").await;
        // Another user may not open a terminal on dev's workspace.
        let err = terminal(&base, &bob, &agent, &id).await.unwrap_err();
        assert!(err.to_string().contains("404"), "{err}");
    });
}
