//! OpenID Connect login end to end against a real provider: the
//! `oidc-provider` npm package run from `tests/oidc-provider/server.mjs`, the
//! real `coderd` with its `--oidc-*` flags, an HTTP client that walks the
//! provider's login form with its cookies like a browser, and the real
//! `coder login` with the token `/cli-auth` shows.
//!
//! Also refused, with no session set: a user outside `--oidc-email-domain`,
//! an unverified email, a callback whose state is not this browser's, a
//! replayed callback, and a replayed code under a fresh state. Password login
//! is disabled (`--disable-password-auth`) except for the owner.
//! (Forged, tampered, wrong-nonce and wrong-audience ID tokens are refused in
//! `coordinator/src/oidc/id_token.rs`'s tests, which can sign their own.)
//!
//! Skips without node or without `npm ci` in `tests/oidc-provider` (run
//! `scripts/install-deps`); fails under CI.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use reqwest::{header, StatusCode};
use tests::{has_program, run_ok, tempdir, Coderd, FIRST_USER};
use url::Url;

const CALLBACK: &str = "/api/v2/users/oidc/callback";

/// The provider process; killed on drop.
struct Idp {
    child: Child,
    issuer: Url,
}

impl Drop for Idp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn provider_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("oidc-provider")
}

/// Starts the provider for a coderd at `coderd_addr`; `None` (skipped) when
/// node or the package is missing.
async fn start_idp(coderd_addr: &str) -> Option<Idp> {
    if !has_program("node") {
        coordinator::testutil::skip("node is not installed (scripts/install-deps)");
        return None;
    }
    if !provider_dir().join("node_modules/oidc-provider").is_dir() {
        coordinator::testutil::skip(
            "oidc-provider is not installed: run scripts/install-deps (npm ci in tests/oidc-provider)",
        );
        return None;
    }
    let mut child = Command::new("node")
        .arg("server.mjs")
        .current_dir(provider_dir())
        .env("REDIRECT_URI", format!("http://{coderd_addr}{CALLBACK}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn node server.mjs");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(issuer) = line.strip_prefix("oidc-provider listening on ") {
                let _ = tx.send(issuer.to_owned());
            }
        }
    });
    let issuer = rx.recv_timeout(Duration::from_secs(60)).expect("oidc-provider did not start");
    let idp = Idp { child, issuer: Url::parse(&issuer).unwrap() };
    // It serves: its discovery document must be there now.
    let doc: serde_json::Value = reqwest::get(format!("{issuer}/.well-known/openid-configuration"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["issuer"], issuer.as_str());
    Some(idp)
}

/// A browser: follows nothing on its own, keeps cookies per host (ports
/// share them, as in browsers) and path.
struct Browser {
    http: reqwest::Client,
    /// host → (path, name) → value.
    jar: BTreeMap<String, BTreeMap<(String, String), String>>,
}

impl Browser {
    fn new() -> Self {
        let http =
            reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
        Browser { http, jar: BTreeMap::new() }
    }

    fn cookie_header(&self, url: &Url) -> String {
        let host = url.host_str().unwrap_or_default();
        let Some(cookies) = self.jar.get(host) else { return String::new() };
        cookies
            .iter()
            .filter(|((path, _), _)| url.path().starts_with(path.as_str()))
            .map(|((_, name), value)| format!("{name}={value}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// The value of the cookie `name` for `url`'s host.
    fn cookie(&self, url: &Url, name: &str) -> Option<String> {
        let cookies = self.jar.get(url.host_str()?)?;
        cookies.iter().find(|((_, n), _)| n == name).map(|(_, v)| v.clone())
    }

    fn store(&mut self, url: &Url, resp: &reqwest::Response) {
        let host = url.host_str().unwrap_or_default().to_owned();
        for set in resp.headers().get_all(header::SET_COOKIE) {
            let set = set.to_str().unwrap();
            let mut parts = set.split(';').map(str::trim);
            let Some((name, value)) = parts.next().and_then(|p| p.split_once('=')) else {
                continue;
            };
            let mut path = "/".to_owned();
            let mut delete = value.is_empty();
            for attr in parts {
                let lower = attr.to_ascii_lowercase();
                if let Some(p) = attr.strip_prefix("path=").or_else(|| attr.strip_prefix("Path=")) {
                    path = p.to_owned();
                }
                if lower == "max-age=0" || lower.starts_with("expires=thu, 01 jan 1970") {
                    delete = true;
                }
            }
            let jar = self.jar.entry(host.clone()).or_default();
            if delete {
                jar.remove(&(path, name.to_owned()));
            } else {
                jar.insert((path, name.to_owned()), value.to_owned());
            }
        }
    }

    async fn get(&mut self, url: &Url) -> reqwest::Response {
        let resp = self
            .http
            .get(url.clone())
            .header(header::COOKIE, self.cookie_header(url))
            .send()
            .await
            .unwrap();
        self.store(url, &resp);
        resp
    }

    async fn post_form(&mut self, url: &Url, form: &[(&str, &str)]) -> reqwest::Response {
        let resp = self
            .http
            .post(url.clone())
            .header(header::COOKIE, self.cookie_header(url))
            .form(form)
            .send()
            .await
            .unwrap();
        self.store(url, &resp);
        resp
    }

    /// Follows redirects from `url`, filling the provider's login form as
    /// `login`, and stops at coderd's callback: returns its URL unvisited.
    async fn login_at_provider(&mut self, start: &Url, login: &str) -> Url {
        let mut url = start.clone();
        for _ in 0..20 {
            if url.path() == CALLBACK {
                return url;
            }
            let resp = self.get(&url).await;
            if resp.status().is_redirection() {
                url = location(&url, &resp);
                continue;
            }
            assert_eq!(resp.status(), StatusCode::OK, "{url}");
            let html = resp.text().await.unwrap();
            let action = attr_after(&html, "<form", "action").expect("a login form");
            let action = url.join(&action.replace("&amp;", "&")).unwrap();
            let resp = self
                .post_form(&action, &[("prompt", "login"), ("login", login), ("password", "any")])
                .await;
            assert!(resp.status().is_redirection(), "login form answered {}", resp.status());
            url = location(&action, &resp);
        }
        panic!("no callback after 20 redirects")
    }
}

fn location(base: &Url, resp: &reqwest::Response) -> Url {
    let loc = resp.headers().get(header::LOCATION).expect("a Location").to_str().unwrap();
    base.join(loc).unwrap()
}

/// The value of `attr` in the first `tag` of `html`.
fn attr_after(html: &str, tag: &str, attr: &str) -> Option<String> {
    let rest = &html[html.find(tag)?..];
    let rest = &rest[rest.find(&format!("{attr}=\""))? + attr.len() + 2..];
    Some(rest[..rest.find('"')?].to_owned())
}

/// Error messages of refused callbacks.
async fn refused(resp: reqwest::Response) -> (StatusCode, String) {
    let status = resp.status();
    let sets_session = resp.headers().get_all(header::SET_COOKIE).iter().any(|c| {
        c.to_str().unwrap().starts_with("coder_session_token=")
            && !c.to_str().unwrap().contains("Max-Age=0")
    });
    assert!(!sets_session, "a refused login set a session");
    let body: serde_json::Value = resp.json().await.unwrap_or_default();
    (status, body["message"].as_str().unwrap_or_default().to_owned())
}

/// Logs `who` in from a fresh browser; returns it (with the session cookie)
/// and where coderd sent it.
async fn login(coderd: &Url, who: &str) -> (Browser, reqwest::Response) {
    let mut b = Browser::new();
    let start = coderd.join("/api/v2/users/oidc/start?redirect=/workspaces").unwrap();
    let callback = b.login_at_provider(&start, who).await;
    let resp = b.get(&callback).await;
    (b, resp)
}

#[tokio::test(flavor = "multi_thread")]
async fn oidc_login_end_to_end_and_refusals() {
    let addr = Coderd::free_addr().unwrap();
    let Some(idp) = start_idp(&addr).await else { return };
    let tmp = tempdir().unwrap();
    let issuer = idp.issuer.as_str().trim_end_matches('/').to_owned();
    let srv = Coderd::spawn_env(
        &tmp.path().join("data"),
        &addr,
        &[
            "--oidc-issuer-url",
            &issuer,
            "--oidc-client-id",
            "coder",
            "--oidc-email-domain",
            "example.com",
            "--oidc-scopes",
            "openid,email,profile,groups",
            "--oidc-group-field",
            "groups",
            "--oidc-user-role-mapping",
            r#"{"admins":["template-admin"]}"#,
            "--oidc-sign-in-text",
            "Acme SSO",
            "--disable-password-auth",
        ],
        &[("CODER_OIDC_CLIENT_SECRET", "coder-test-secret")],
    )
    .unwrap();
    let url = srv.url.clone();
    let cfg = tmp.path().join("owner");
    // First-user setup still works with password login disabled; the owner
    // may still use a password.
    let out =
        run_ok(srv.coder(&cfg).unwrap().args(["login", url.as_str()]).args(FIRST_USER)).unwrap();
    assert!(out.contains("Welcome, dev"), "{out}");
    let owner = std::fs::read_to_string(cfg.join("session")).unwrap().trim().to_owned();
    let api = reqwest::Client::new();

    let methods: serde_json::Value = api
        .get(url.join("/api/v2/users/authmethods").unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(methods["oidc"]["enabled"], true);
    assert_eq!(methods["oidc"]["signInText"], "Acme SSO");
    assert_eq!(methods["password"]["enabled"], false);
    let page = api.get(url.join("/login").unwrap()).send().await.unwrap().text().await.unwrap();
    assert!(page.contains("Log in with Acme SSO"), "{page}");

    // alice: signs up, lands on the dashboard, and her group maps to template-admin.
    let (mut alice, resp) = login(&url, "alice").await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    assert_eq!(resp.headers()[header::LOCATION], "/workspaces");
    assert!(alice.cookie(&url, "coder_session_token").is_some());
    assert!(alice.cookie(&url, "oidc_state").is_none(), "the state cookie outlived the login");
    let dash = alice.get(&url.join("/workspaces").unwrap()).await;
    assert_eq!(dash.status(), StatusCode::OK);
    assert!(dash.text().await.unwrap().contains("alice"));
    let me: serde_json::Value =
        alice.get(&url.join("/api/v2/users/me").unwrap()).await.json().await.unwrap();
    assert_eq!(me["username"], "alice");
    assert_eq!(me["email"], "alice@example.com");
    assert_eq!(me["roles"], serde_json::json!(["member", "template-admin"]));

    // The CLI: the token /cli-auth shows, pasted into `coder login`.
    let page = alice.get(&url.join("/cli-auth").unwrap()).await.text().await.unwrap();
    let token = page
        .split("<pre id=\"cli-token\">")
        .nth(1)
        .unwrap()
        .split("</pre>")
        .next()
        .unwrap()
        .to_owned();
    let alice_cfg = tmp.path().join("alice");
    let mut child = srv
        .coder(&alice_cfg)
        .unwrap()
        .args(["login", url.as_str()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    writeln!(child.stdin.take().unwrap(), "{token}").unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "coder login: {stdout} {}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("/cli-auth"), "{stdout}");
    assert!(stdout.contains("Welcome, alice"), "{stdout}");
    let who = run_ok(srv.coder(&alice_cfg).unwrap().args(["whoami", "--output", "json"])).unwrap();
    let who: serde_json::Value = serde_json::from_str(&who).unwrap();
    assert_eq!(who["roles"], serde_json::json!(["member", "template-admin"]));

    // A second login is the same account (linked by issuer and subject).
    let (_, resp) = login(&url, "alice").await;
    assert_eq!(resp.status(), StatusCode::SEE_OTHER);
    // bob: a sanitized username, no group role.
    let (mut bob, _) = login(&url, "bob").await;
    let me: serde_json::Value =
        bob.get(&url.join("/api/v2/users/me").unwrap()).await.json().await.unwrap();
    assert_eq!(me["username"], "bob-smith");
    assert_eq!(me["roles"], serde_json::json!(["member"]));

    // Outside the email domain, or unverified: refused, no account.
    let (_, resp) = login(&url, "eve").await;
    let (status, message) = refused(resp).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(message.contains("email domain is not allowed"), "{message}");
    let (_, resp) = login(&url, "mallory").await;
    let (status, message) = refused(resp).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert!(message.contains("Verify the email address"), "{message}");
    let users: serde_json::Value = api
        .get(url.join("/api/v2/users").unwrap())
        .header("Coder-Session-Token", &owner)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> =
        users.as_array().unwrap().iter().map(|u| u["username"].as_str().unwrap()).collect();
    assert_eq!(names, ["alice", "bob-smith", "dev"]);

    // A callback with another state than this browser's.
    let mut b = Browser::new();
    let start = url.join("/api/v2/users/oidc/start").unwrap();
    let mut callback = b.login_at_provider(&start, "bob").await;
    let pairs: Vec<(String, String)> = callback
        .query_pairs()
        .map(|(k, v)| {
            let v = if k == "state" { format!("{v}x") } else { v.into_owned() };
            (k.into_owned(), v)
        })
        .collect();
    callback.query_pairs_mut().clear().extend_pairs(pairs);
    let (status, message) = refused(b.get(&callback).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("state mismatch"), "{message}");
    // The right state from a browser that did not start the login.
    let mut b = Browser::new();
    let callback = b.login_at_provider(&start, "bob").await;
    let (status, message) = refused(Browser::new().get(&callback).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{message}");

    // A replayed callback, and its code under a fresh login's state.
    let mut b = Browser::new();
    let callback = b.login_at_provider(&start, "bob").await;
    let state_cookie = b.cookie(&url, "oidc_state").unwrap();
    assert_eq!(b.get(&callback).await.status(), StatusCode::SEE_OTHER);
    b.jar.get_mut("127.0.0.1").unwrap().insert(("/".into(), "oidc_state".into()), state_cookie);
    let (status, message) = refused(b.get(&callback).await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(message.contains("expired or was already used"), "{message}");
    let mut b2 = Browser::new();
    let fresh = b2.login_at_provider(&start, "bob").await;
    let code = callback.query_pairs().find(|(k, _)| k == "code").unwrap().1.into_owned();
    let state = fresh.query_pairs().find(|(k, _)| k == "state").unwrap().1.into_owned();
    let mut replay = url.join(CALLBACK).unwrap();
    replay.query_pairs_mut().append_pair("code", &code).append_pair("state", &state);
    let (status, message) = refused(b2.get(&replay).await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(message.contains("could not be verified"), "{message}");

    // Password login: refused for anyone but an owner.
    let created = api
        .post(url.join("/api/v2/users").unwrap())
        .header("Coder-Session-Token", &owner)
        .json(&serde_json::json!({"email": "pat@example.com", "username": "pat", "password": "pat-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), StatusCode::CREATED);
    let resp = api
        .post(url.join("/api/v2/users/login").unwrap())
        .json(&serde_json::json!({"username": "pat", "password": "pat-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = resp.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("Password authentication is disabled"),
        "{body}"
    );
    // An OIDC account has no password to guess.
    let resp = api
        .post(url.join("/api/v2/users/login").unwrap())
        .json(&serde_json::json!({"username": "alice", "password": ""}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    drop(srv);
    drop(idp);
}
