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
GET /api/v2/replicas User
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
DELETE /api/v2/users/{user} User
PUT /api/v2/users/{user}/status/suspend User
PUT /api/v2/users/{user}/status/activate User
PUT /api/v2/users/{user}/roles User
PUT /api/v2/users/{user}/password User
GET /api/v2/audit User
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
PATCH /api/v2/templates/{template} User
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
GET /api/v2/workspaceagents/{id}/listening-ports User
GET /api/v2/applications/auth-redirect Dashboard
GET /api/v2/workspaces User
GET /api/v2/workspaces/{id} User
GET /api/v2/workspaces/watch User
GET /api/v2/workspaces/{id}/watch User
GET /api/v2/workspaces/{id}/builds User
POST /api/v2/workspaces/{id}/builds User
GET /api/v2/workspaces/{id}/port-share User
POST /api/v2/workspaces/{id}/port-share User
DELETE /api/v2/workspaces/{id}/port-share User
PUT /api/v2/workspaces/{id}/ttl User
PUT /api/v2/workspaces/{id}/autostart User
PUT /api/v2/workspaces/{id}/extend User
GET /api/v2/workspacebuilds/{id} User
GET /api/v2/workspacebuilds/{id}/logs User
GET /api/v2/workspacebuilds/{id}/resources User
GET /api/v2/workspacebuilds/{id}/parameters User
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
GET /templates/{template} Dashboard
GET /templates/{template}/workspace Dashboard
GET /cli-auth Dashboard
GET /users Dashboard
GET /audit Dashboard
GET /assets/dashboard.js Public
GET /assets/dashboard.css Public
GET /assets/xterm/{file} Public
GET /icon/{file} Public
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

/// Who may call each user route on another user's things (a member's,
/// "victim"): `o` owner, `t` template-admin, `u` user-admin, `a` auditor,
/// `m` another member; `any` for routes every user may call (on their own
/// things, or read-only catalogues); `self` for routes that act on the
/// caller's own session (logout). Every `User` route must be listed.
const ROLE_TABLE: &str = "
POST /api/v2/users/logout self
GET /api/v2/users o,t,u,a
POST /api/v2/users o,u
GET /api/v2/users/{user} o,t,u,a
DELETE /api/v2/users/{user} o,u
PUT /api/v2/users/{user}/status/suspend o,u
PUT /api/v2/users/{user}/status/activate o,u
PUT /api/v2/users/{user}/roles o,u
PUT /api/v2/users/{user}/password o,u
GET /api/v2/audit o,a
GET /api/v2/users/{user}/keys/tokens o,a
POST /api/v2/users/{user}/keys/tokens -
DELETE /api/v2/users/{user}/keys/{key} o
POST /api/v2/users/{user}/workspaces o
GET /api/v2/users/{user}/workspace/{name} o,t,a
GET /api/v2/files/{id} o,t,a
POST /api/v2/files any
POST /api/v2/templateversions o,t
GET /api/v2/templateversions/{id} any
GET /api/v2/templateversions/{id}/logs any
PATCH /api/v2/templateversions/{id}/cancel o,t
GET /api/v2/templateversions/{id}/resources any
GET /api/v2/templateversions/{id}/parameters any
GET /api/v2/templates any
POST /api/v2/templates o,t
GET /api/v2/templates/{template} any
GET /api/v2/templates/{template}/versions any
PATCH /api/v2/templates/{template}/versions o,t
PATCH /api/v2/templates/{template} o,t
GET /api/v2/workspaceagents/{id}/logs o,t,a
GET /api/v2/workspaceagents/{id}/log-sources o,t,a
GET /api/v2/workspaceagents/{id}/metadata o,t,a
GET /api/v2/workspaceagents/{id}/pty o
GET /api/v2/workspaceagents/{id}/listening-ports o
GET /api/v2/workspaces o,t,a
GET /api/v2/workspaces/{id} o,t,a
GET /api/v2/workspaces/watch o,t,a
GET /api/v2/workspaces/{id}/watch o,t,a
GET /api/v2/workspaces/{id}/builds o,t,a
POST /api/v2/workspaces/{id}/builds o,t
GET /api/v2/workspaces/{id}/port-share o,t,a
POST /api/v2/workspaces/{id}/port-share o
DELETE /api/v2/workspaces/{id}/port-share o
PUT /api/v2/workspaces/{id}/ttl o,t
PUT /api/v2/workspaces/{id}/autostart o,t
PUT /api/v2/workspaces/{id}/extend o,t
GET /api/v2/workspacebuilds/{id} o,t,a
GET /api/v2/workspacebuilds/{id}/logs o,t,a
GET /api/v2/workspacebuilds/{id}/resources o,t,a
GET /api/v2/workspacebuilds/{id}/parameters o,t,a
PATCH /api/v2/workspacebuilds/{id}/cancel o,t
GET /api/v2/workspaceagents/{id}/coordinate o
GET /api/v2/tailnet any
GET /api/v2/debug/coordinator o,a
GET /api/v2/replicas o
";

/// The victim's things the role table's requests name.
struct Victim {
    username: String,
    token_name: String,
    workspace: Uuid,
    workspace_name: String,
    build: Uuid,
    agent: Uuid,
    template: Uuid,
    version: Uuid,
    file: Uuid,
}

impl Victim {
    /// `path` with its parameters filled in with the victim's things.
    fn path(&self, path: &str) -> String {
        let id = if path.contains("/workspaces/{id}") {
            self.workspace
        } else if path.contains("/workspacebuilds/") {
            self.build
        } else if path.contains("/workspaceagents/") {
            self.agent
        } else if path.contains("/templateversions/") {
            self.version
        } else {
            self.file
        };
        path.replace("{user}", &self.username)
            .replace("{key}", &self.token_name)
            .replace("{name}", &self.workspace_name)
            .replace("{template}", &self.template.to_string())
            .replace("{id}", &id.to_string())
    }

    /// A valid body for the route, so that the role is what decides.
    fn body(&self, method: &Method, path: &str, n: usize) -> serde_json::Value {
        use serde_json::json;
        match (method.as_str(), path) {
            ("POST", "/api/v2/users") => json!({
                "email": format!("new{n}@example.com"), "username": format!("new{n}"),
                "password": "a-long-password", "roles": []}),
            ("PUT", p) if p.ends_with("/roles") => json!({"roles": ["auditor"]}),
            ("PUT", p) if p.ends_with("/password") => json!({"password": "another-password"}),
            ("POST", p) if p.ends_with("/keys/tokens") => json!({"token_name": format!("t{n}")}),
            ("POST", p) if p.ends_with("/workspaces") => {
                json!({"name": format!("ws{n}"), "template_id": self.template})
            }
            ("POST", "/api/v2/templateversions") => json!({"file_id": self.file}),
            ("POST", "/api/v2/templates") => {
                json!({"name": format!("tpl{n}"), "template_version_id": self.version})
            }
            ("PATCH", "/api/v2/templates/{template}/versions") => json!({"id": self.version}),
            ("POST", "/api/v2/workspaces/{id}/builds") => json!({"transition": "stop"}),
            ("PUT", "/api/v2/workspaces/{id}/ttl") => json!({"ttl_ms": 3_600_000}),
            ("POST", "/api/v2/workspaces/{id}/port-share") => {
                json!({"agent_name": "main", "port": 8080, "share_level": "authenticated"})
            }
            ("DELETE", "/api/v2/workspaces/{id}/port-share") => {
                json!({"agent_name": "main", "port": 8080})
            }
            ("PUT", "/api/v2/workspaces/{id}/autostart") => json!({"schedule": "9:30 Mon-Fri UTC"}),
            ("PUT", "/api/v2/workspaces/{id}/extend") => {
                json!({"deadline": chrono::Utc::now() + chrono::Duration::hours(1)})
            }
            ("PATCH", "/api/v2/templates/{template}") => json!({"max_ttl_ms": 86_400_000}),
            _ => json!({}),
        }
    }
}

async fn role_request(
    srv: &TestServer,
    v: &Victim,
    method: &Method,
    path: &str,
    token: &str,
    n: usize,
) -> StatusCode {
    let http =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let mut url = srv.url.join(&v.path(path)).unwrap();
    let version = codersdk::coordination::PROTOCOL_VERSION.to_string();
    url.query_pairs_mut()
        .append_pair("version", &version)
        .append_pair("owner", "all")
        .append_pair("reconnect", &Uuid::new_v4().to_string());
    let mut req = http.request(method.clone(), url).header(codersdk::SESSION_TOKEN_HEADER, token);
    if method == Method::GET {
        req = req
            .header("Connection", "Upgrade")
            .header("Upgrade", "websocket")
            .header("Sec-WebSocket-Version", "13")
            .header("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ==");
    } else if path == "/api/v2/files" {
        req = req.header("Content-Type", "application/x-tar").body(vec![0u8; 1024]);
    } else {
        req = req.json(&v.body(method, path, n));
    }
    req.send().await.unwrap().status()
}

#[tokio::test]
async fn each_role_gets_exactly_its_permissions() {
    use codersdk::{CreateTokenRequest, CreateUserRequest, LoginWithPasswordRequest, Role};
    // No provisioner runs: builds and imports stay queued.
    let srv =
        TestServer::start_with_provisioner_key("a-provisioner-key-nobody-uses").await.unwrap();
    let owner = srv.owner().await.unwrap();
    let owner_token = owner.token().unwrap().to_owned();
    let login = |name: &'static str, roles: Vec<Role>| {
        let (owner, srv) = (&owner, &srv);
        async move {
            let password = "role-password-1".to_owned();
            owner
                .create_user(&CreateUserRequest {
                    email: format!("{name}@example.com"),
                    username: name.to_owned(),
                    password: password.clone(),
                    roles,
                })
                .await
                .unwrap();
            let req =
                LoginWithPasswordRequest { username: name.into(), password, ..Default::default() };
            srv.client().login_with_password(&req).await.unwrap().session_token
        }
    };
    let victim_token = login("victim", vec![Role::Member]).await;
    let victim_id = srv.client().with_token(&victim_token).me().await.unwrap().id;
    let token_name = "victims-token".to_owned();
    srv.client()
        .with_token(&victim_token)
        .create_token(&CreateTokenRequest { token_name: token_name.clone(), lifetime: 0 })
        .await
        .unwrap();
    let agent = seed_agent(&srv.db.pool, victim_id).await;
    let row: (Uuid, String, Uuid, Uuid) = sqlx::query_as(
        "SELECT b.id, w.name, t.id, t.active_version_id FROM workspace_builds b
         JOIN workspaces w ON w.id = b.workspace_id JOIN templates t ON t.id = w.template_id
         WHERE w.id = $1",
    )
    .bind(agent.workspace)
    .fetch_one(&srv.db.pool)
    .await
    .unwrap();
    let file: Uuid = sqlx::query_scalar("SELECT id FROM files WHERE created_by = $1")
        .bind(victim_id)
        .fetch_one(&srv.db.pool)
        .await
        .unwrap();
    let victim = Victim {
        username: "victim".into(),
        token_name,
        workspace: agent.workspace,
        workspace_name: row.1,
        build: row.0,
        agent: agent.id,
        template: row.2,
        version: row.3,
        file,
    };
    // The owner goes last: its deletes would take away what others are asked about.
    let roles = [
        ('m', login("member2", vec![Role::Member]).await),
        ('t', login("tadmin", vec![Role::TemplateAdmin]).await),
        ('u', login("uadmin", vec![Role::UserAdmin]).await),
        ('a', login("auditor", vec![Role::Auditor]).await),
        ('o', owner_token),
    ];

    let table: std::collections::BTreeMap<(String, String), String> = ROLE_TABLE
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            ((f[0].to_owned(), f[1].to_owned()), f[2].to_owned())
        })
        .collect();
    let user_routes: Vec<(Method, String)> = route_table()
        .into_iter()
        .filter(|(_, _, a)| *a == Access::User)
        .map(|(m, p, _)| (m, p))
        .collect();
    for (m, p) in &user_routes {
        assert!(
            table.contains_key(&(m.to_string(), p.clone())),
            "{m} {p} has no row in ROLE_TABLE: declare who may call it"
        );
    }
    assert_eq!(table.len(), user_routes.len(), "ROLE_TABLE lists routes that do not exist");

    let mut checked = 0;
    let mut n = 0;
    // Route by route, in the table's order (GET before PATCH, POST, PUT),
    // so that no role's change (a new build retires the seeded agent)
    // comes before another's read of what it changed.
    for ((method, path), allowed) in &table {
        for (role, token) in &roles {
            if allowed == "self" {
                continue;
            }
            n += 1;
            let method = Method::from_bytes(method.as_bytes()).unwrap();
            let may = allowed == "any" || allowed.split(',').any(|r| r.starts_with(*role));
            let s = role_request(&srv, &victim, &method, path, token, n).await;
            let refused = matches!(s.as_u16(), 401 | 403 | 404);
            // The terminal and the ports panel dial the (absent) agent once allowed: 502.
            let unreachable = s == StatusCode::BAD_GATEWAY
                && (path.ends_with("/pty") || path.ends_with("/listening-ports"));
            assert!(!s.is_server_error() || unreachable, "{role} {method} {path}: {s}");
            if may {
                assert!(!refused, "{role} may {method} {path}, but got {s}");
            } else {
                assert!(refused, "{role} may not {method} {path}, but got {s}");
            }
            checked += 1;
        }
    }
    assert!(checked > 150, "only {checked} requests checked");
}
