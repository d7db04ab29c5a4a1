//! Every route declares who may call it (`coordinator::route_table`), and
//! the declaration holds: (a) the table is the one written below, so a new
//! route fails here until its access is declared and reviewed; (b) every
//! route that is not public refuses a request without credentials, with a
//! wrong or expired token, and with the other kind of token (an agent's on a
//! user route, a user's on an agent route), with 401, 403 or 404 (a
//! dashboard page redirects to the login page): never 2xx, never 5xx.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::{seed_agent, users};
use coordinator::testutil::TestServer;
use coordinator::{route_table, Access};
use reqwest::{Method, StatusCode};
use uuid::Uuid;

/// `METHOD PATH ACCESS`, one per route.
const EXPECTED: &str = "
GET /healthz Public
ANY /derp RelayNode
GET /bin/{name} Public
GET /api/v2/buildinfo Public
GET /api/v2/derp-map Public
GET /api/v2/users/first Public
POST /api/v2/users/first Public
POST /api/v2/users/login Public
GET /api/v2/users/authmethods Public
GET /api/v2/users/oidc/start Public
GET /api/v2/users/oidc/callback Public
POST /api/v2/users/logout User
GET /api/v2/users User
POST /api/v2/users User
GET /api/v2/users/{user} User
GET /api/v2/users/{user}/keys/tokens User
POST /api/v2/users/{user}/keys/tokens User
DELETE /api/v2/users/{user}/keys/{key} User
POST /api/v2/users/{user}/workspaces User
GET /api/v2/users/{user}/workspace/{name} User
GET /api/v2/files/{id} User
POST /api/v2/files User
POST /api/v2/templateversions User
GET /api/v2/templateversions/{id} User
GET /api/v2/templateversions/{id}/logs User
PATCH /api/v2/templateversions/{id}/cancel User
GET /api/v2/templateversions/{id}/resources User
GET /api/v2/templateversions/{id}/parameters User
GET /api/v2/templates User
POST /api/v2/templates User
GET /api/v2/templates/{template} User
GET /api/v2/templates/{template}/versions User
PATCH /api/v2/templates/{template}/versions User
GET /api/v2/workspaceagents/me/manifest Agent
POST /api/v2/workspaceagents/me/lifecycle Agent
PATCH /api/v2/workspaceagents/me/logs Agent
POST /api/v2/workspaceagents/me/stats Agent
POST /api/v2/workspaceagents/me/metadata Agent
PATCH /api/v2/workspaceagents/me/app-health Agent
GET /api/v2/workspaceagents/me/graceful-shutdown Agent
GET /api/v2/workspaceagents/{id}/logs User
GET /api/v2/workspaceagents/{id}/log-sources User
GET /api/v2/workspaceagents/{id}/metadata User
GET /api/v2/workspaceagents/{id}/pty User
GET /api/v2/applications/auth-redirect Dashboard
GET /api/v2/workspaces User
GET /api/v2/workspaces/{id} User
GET /api/v2/workspaces/{id}/builds User
POST /api/v2/workspaces/{id}/builds User
GET /api/v2/workspacebuilds/{id} User
GET /api/v2/workspacebuilds/{id}/logs User
GET /api/v2/workspacebuilds/{id}/resources User
PATCH /api/v2/workspacebuilds/{id}/cancel User
GET /api/v2/workspaceagents/me/coordinate Agent
GET /api/v2/workspaceagents/{id}/coordinate User
GET /api/v2/tailnet User
GET /api/v2/coderd/coordinate Coderd
GET /api/v2/debug/coordinator User
GET /api/v2/provisionerdaemons/check Provisioner
POST /api/v2/provisionerdaemons/acquire Provisioner
POST /api/v2/provisionerdaemons/jobs/{id}/heartbeat Provisioner
POST /api/v2/provisionerdaemons/jobs/{id}/agent-shutdown Provisioner
POST /api/v2/provisionerdaemons/jobs/{id}/logs Provisioner
POST /api/v2/provisionerdaemons/jobs/{id}/complete Provisioner
POST /api/v2/provisionerdaemons/jobs/{id}/fail Provisioner
POST /api/v2/derp/verify-client RelayPsk
GET / Public
GET /login Public
GET /workspaces Dashboard
GET /templates Dashboard
GET /cli-auth Dashboard
GET /assets/dashboard.js Public
GET /assets/dashboard.css Public
";

fn table() -> Vec<(Method, String, Access)> {
    route_table()
}

#[test]
fn every_route_declares_its_access() {
    let actual: Vec<String> = table().iter().map(|(m, p, a)| format!("{m} {p} {a:?}")).collect();
    let unique: BTreeSet<&String> = actual.iter().collect();
    assert_eq!(unique.len(), actual.len(), "a route is declared twice: {actual:#?}");
    let expected: BTreeSet<String> =
        EXPECTED.lines().map(str::trim).filter(|l| !l.is_empty()).map(str::to_owned).collect();
    let actual: BTreeSet<String> = actual.into_iter().collect();
    let added: Vec<_> = actual.difference(&expected).collect();
    let removed: Vec<_> = expected.difference(&actual).collect();
    assert!(
        added.is_empty() && removed.is_empty(),
        "routes differ from the declared table in tests/routes.rs:\n\
         new or changed (declare them there): {added:#?}\n\
         gone: {removed:#?}"
    );
}

/// A credential a request presents.
#[derive(Debug, Clone, Copy)]
enum Credential<'a> {
    None,
    /// As the session header, the session cookie, the provisioner key and
    /// the relay-verification bearer.
    Everywhere(&'a str),
}

/// The path with each `{param}` replaced by a fresh id.
fn concrete(path: &str) -> String {
    path.split('/')
        .map(|seg| if seg.starts_with('{') { Uuid::new_v4().to_string() } else { seg.to_owned() })
        .collect::<Vec<_>>()
        .join("/")
}

async fn status(srv: &TestServer, method: &Method, path: &str, cred: Credential<'_>) -> StatusCode {
    let http =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let method = if method.as_str() == "ANY" { Method::GET } else { method.clone() };
    let mut url = srv.url.join(&concrete(path)).unwrap();
    // Well-formed queries, so that the credential is what is judged.
    let version = codersdk::coordination::PROTOCOL_VERSION.to_string();
    let app = "http://8080--main--ws--alice.apps.example/";
    url.query_pairs_mut().append_pair("version", &version).append_pair("redirect_uri", app);
    // WebSocket routes check the upgrade before the credential of some
    // kinds; ask like a WebSocket client so the credential is what decides.
    let mut req = http
        .request(method, url)
        .header("Connection", "Upgrade")
        .header("Upgrade", "websocket")
        .header("Sec-WebSocket-Version", "13")
        .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==")
        .header("Content-Type", "application/json")
        .body("{}");
    if let Credential::Everywhere(token) = cred {
        req = req
            .header(codersdk::SESSION_TOKEN_HEADER, token)
            .header("Cookie", format!("{}={token}", codersdk::SESSION_TOKEN_COOKIE))
            .header("Coder-Provisioner-Key", token)
            .header("Authorization", format!("Bearer {token}"));
    }
    req.send().await.unwrap().status()
}

/// What a refused request may answer for a route of `access`.
fn refused(access: Access, s: StatusCode) -> bool {
    let denied = matches!(s.as_u16(), 401 | 403 | 404);
    match access {
        Access::Dashboard => denied || s.is_redirection(),
        // Its handshake, not a header, is the credential (tests/relay.rs);
        // a plain request is no handshake.
        Access::RelayNode => !s.is_success() && !s.is_server_error(),
        _ => denied,
    }
}

#[tokio::test]
async fn routes_refuse_missing_wrong_and_foreign_credentials() {
    let psk = "the-provisioner-key-of-this-test";
    let srv = TestServer::start_with_provisioner_key(psk).await.unwrap();
    let ((owner_token, _), (member_token, member_id)) = users(&srv).await;
    let agent = seed_agent(&srv.db.pool, member_id).await;
    // An expired token of the owner: once valid, now refused.
    let expired = owner_token.clone();
    let me = format!("{}api/v2/users/me", srv.url);
    let http = reqwest::Client::new();
    let ok = http.get(&me).header(codersdk::SESSION_TOKEN_HEADER, &expired).send().await.unwrap();
    assert_eq!(ok.status(), StatusCode::OK, "the owner's token works before it expires");
    let key_id = expired.split_once('-').unwrap().0;
    sqlx::query("UPDATE api_keys SET expires_at = now() - interval '1 minute' WHERE id = $1")
        .bind(key_id)
        .execute(&srv.db.pool)
        .await
        .unwrap();
    let wrong = format!("{}-{}", "a".repeat(key_id.len()), "b".repeat(22));

    let mut checked = 0;
    for (method, path, access) in table() {
        let creds: Vec<(&str, Credential)> = match access {
            Access::Public => continue,
            Access::User | Access::Dashboard => vec![
                ("no credential", Credential::None),
                ("a wrong token", Credential::Everywhere(&wrong)),
                ("an expired token", Credential::Everywhere(&expired)),
                ("an agent token", Credential::Everywhere(&agent.token)),
            ],
            Access::Agent => vec![
                ("no credential", Credential::None),
                ("a wrong token", Credential::Everywhere(&wrong)),
                ("a user token", Credential::Everywhere(&member_token)),
            ],
            _ => vec![
                ("no credential", Credential::None),
                ("a wrong key", Credential::Everywhere(&wrong)),
                ("a user token", Credential::Everywhere(&member_token)),
                ("an agent token", Credential::Everywhere(&agent.token)),
            ],
        };
        for (what, cred) in creds {
            let s = status(&srv, &method, &path, cred).await;
            assert!(refused(access, s), "{method} {path} ({access:?}) with {what}: {s}");
            checked += 1;
        }
    }
    assert!(checked > 150, "only {checked} requests checked");
    // The credentials themselves are good where they belong.
    let s = status(&srv, &Method::GET, "/api/v2/users/me", Credential::Everywhere(&member_token));
    assert_eq!(s.await, StatusCode::OK);
    let s = status(
        &srv,
        &Method::GET,
        "/api/v2/workspaceagents/me/manifest",
        Credential::Everywhere(&agent.token),
    );
    assert_eq!(s.await, StatusCode::OK);
    let s =
        status(&srv, &Method::GET, "/api/v2/provisionerdaemons/check", Credential::Everywhere(psk));
    assert!(s.await.is_success());
}
