//! `coderd server` with TLS (`ServerConfig::tls`), in process on real
//! sockets with a throwaway CA: the SDK, the coordination client and the
//! relay client connect when they trust the CA and fail on the certificate
//! when they do not; plain HTTP redirects to HTTPS; the session cookie is
//! `__Host-`/`Secure` and HSTS rides on HTTPS responses only.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use codersdk::coordination::{Coordinator, PeerKind, PeerUpdate};
use codersdk::{Client, CreateFirstUserRequest, LoginWithPasswordRequest, RelayMap};
use coordinator::testutil;
use reqwest::header;
use url::Url;

const DEADLINE: Duration = Duration::from_secs(30);

/// A CA and a certificate it issued for `127.0.0.1` and `localhost`.
struct Pki {
    _dir: tempfile::TempDir,
    ca_der: rustls::pki_types::CertificateDer<'static>,
    cert_file: PathBuf,
    key_file: PathBuf,
}

fn pki() -> Pki {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "coderd test CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_file, key_file) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_file, leaf.pem()).unwrap();
    std::fs::write(&key_file, key.serialize_pem()).unwrap();
    Pki { _dir: dir, ca_der: ca.der().clone(), cert_file, key_file }
}

impl Pki {
    fn trusted(&self) -> Arc<rustls::ClientConfig> {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        derp::client::tls::client_config_with_roots(roots).unwrap()
    }
}

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

fn pg_url(db: &testutil::TestDb) -> String {
    let o = &db.options;
    let socket = o.get_socket().expect("test databases are on a unix socket");
    format!(
        "postgres://{}@localhost:{}/{}?host={}",
        o.get_username(),
        o.get_port(),
        o.get_database().unwrap(),
        socket.display()
    )
}

/// Waits until `addr` accepts TCP connections (the server bound it).
async fn listening(addr: SocketAddr) {
    tokio::time::timeout(DEADLINE, async {
        while tokio::net::TcpStream::connect(addr).await.is_err() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("coderd did not start listening");
}

/// The whole chain of an error, where the certificate problem is told.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

fn is_certificate_error(message: &str) -> bool {
    message.contains("certificate") || message.contains("UnknownIssuer")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_is_verified_and_plain_http_redirects() {
    let pki = pki();
    let db = testutil::database().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let (http_addr, tls_addr) = (free_addr(), free_addr());
    let access = Url::parse(&format!("https://127.0.0.1:{}/", tls_addr.port())).unwrap();
    let mut config = coordinator::ServerConfig::default();
    config.http_address = http_addr;
    config.access_url = Some(access.clone());
    config.postgres_url = Some(pg_url(&db));
    config.data_dir = data.path().to_path_buf();
    config.provisioner_daemons = 0;
    config.stun_address = None;
    let mut tls =
        coordinator::TlsConfig::new(tls_addr, pki.cert_file.clone(), pki.key_file.clone());
    tls.strict_transport_security = 600;
    config.tls = Some(tls);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(coordinator::run(config, async {
        let _ = stopped.await;
    }));
    listening(tls_addr).await;
    listening(http_addr).await;

    // The SDK trusting the CA: first user and login over HTTPS.
    let trusted = pki.trusted();
    let sdk = Client::with_tls_config(access.clone(), &trusted);
    sdk.create_first_user(&CreateFirstUserRequest {
        email: "alice@example.com".into(),
        username: "alice".into(),
        password: "alice-password".into(),
    })
    .await
    .unwrap();
    let http = reqwest::Client::builder()
        .use_preconfigured_tls(rustls::ClientConfig::clone(&trusted))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let login = serde_json::json!({"email": "alice@example.com", "password": "alice-password"});
    let resp =
        http.post(access.join("/api/v2/users/login").unwrap()).json(&login).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()[header::STRICT_TRANSPORT_SECURITY], "max-age=600");
    let cookie = resp.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    let token = resp.json::<serde_json::Value>().await.unwrap()["session_token"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(cookie.starts_with(&format!("__Host-coder_session_token={token};")), "{cookie}");
    let attrs: Vec<&str> = cookie.split(';').skip(1).map(str::trim).collect();
    for want in ["Secure", "HttpOnly", "Path=/"] {
        assert!(attrs.contains(&want), "{want} missing: {cookie}");
    }
    assert!(!cookie.to_ascii_lowercase().contains("domain="), "{cookie}");

    // The cookie is read back under its __Host- name; the plain name is
    // not a session on an HTTPS deployment (a sibling host could set it).
    let me = access.join("/api/v2/users/me").unwrap();
    let with_cookie = |c: String| http.get(me.clone()).header(header::COOKIE, c).send();
    let ok = with_cookie(format!("__Host-coder_session_token={token}")).await.unwrap();
    assert_eq!(ok.status(), 200);
    let plain = with_cookie(format!("coder_session_token={token}")).await.unwrap();
    assert_eq!(plain.status(), 401);
    let alice = Client::with_tls_config(access.clone(), &trusted).with_token(token.clone());
    let user = alice.me().await.unwrap();
    assert_eq!(user.username, "alice");

    // Trusting only the system's roots, the SDK refuses the certificate.
    let err = Client::new(access.clone())
        .login_with_password(&LoginWithPasswordRequest {
            email: "alice@example.com".into(),
            password: "alice-password".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(is_certificate_error(&chain(&err)), "{}", chain(&err));

    // Plain HTTP: a 308 to the same path on the https access URL, without
    // HSTS (browsers ignore it there) and without a cookie.
    let plain_http =
        reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().unwrap();
    let r = plain_http.get(format!("http://{http_addr}/api/v2/users/me?x=1")).send().await.unwrap();
    assert_eq!(r.status(), 308);
    assert_eq!(
        r.headers()[header::LOCATION],
        format!("https://127.0.0.1:{}/api/v2/users/me?x=1", tls_addr.port())
    );
    assert!(r.headers().get(header::STRICT_TRANSPORT_SECURITY).is_none());
    let r = plain_http
        .post(format!("http://{http_addr}/api/v2/users/login"))
        .json(&login)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 308);
    assert!(r.headers().get(header::SET_COOKIE).is_none());

    // An agent coordinates over wss when it trusts the CA, and not otherwise.
    let agent = testutil::seed_agents(&db.pool, user.id, 1).await.unwrap().remove(0);
    let (agent_coordination, mut updates) = Coordinator::connect_with_tls(
        &access,
        &agent.token,
        PeerKind::Agent,
        Some(trusted.clone()),
    )
    .await
    .unwrap();
    let first = tokio::time::timeout(DEADLINE, updates.recv()).await.unwrap();
    let Some(PeerUpdate::Connected { node_id, .. }) = first else {
        panic!("first update is not Connected: {first:?}");
    };
    // The embedded relay admits only keys a connected peer announced: the
    // agent announces the key the relay clients below use.
    let relay_key = derp::SecretKey::generate();
    let mut node = testutil::node(node_id, 1);
    node.key = mesh::NodeKey::from(relay_key.public());
    agent_coordination.update_node(node);
    tokio::spawn(async move { while updates.recv().await.is_some() {} });
    let err = Coordinator::connect(&access, &agent.token, PeerKind::Agent).await.unwrap_err();
    assert!(is_certificate_error(&chain(&err)), "{}", chain(&err));

    // The embedded relay is reached over https at the access URL.
    let map: RelayMap =
        alice.request::<(), _>(reqwest::Method::GET, "/api/v2/derp-map", None).await.unwrap();
    let url = map.regions[&coordinator::relay::EMBEDDED_REGION_ID].nodes[0].url.clone();
    assert_eq!(url, format!("https://127.0.0.1:{}/derp", tls_addr.port()));
    let relay_url: derp::RelayUrl = url.parse().unwrap();
    for transport in [derp::Transport::Upgrade, derp::Transport::WebSocket] {
        let mut c = derp::ClientConfig::new(relay_url.clone(), relay_key.clone());
        c.transport = transport;
        c.tls = Some(trusted.clone());
        let relay = derp::Client::connect(c).await.unwrap();
        assert_eq!(relay.is_websocket(), transport == derp::Transport::WebSocket);
    }
    let err = derp::Client::connect(derp::ClientConfig::new(relay_url, relay_key.clone()))
        .await
        .unwrap_err();
    assert!(is_certificate_error(&chain(&err)), "{}", chain(&err));

    stop.send(()).unwrap();
    tokio::time::timeout(DEADLINE, server).await.unwrap().unwrap().unwrap();
}

/// Over plain HTTP nothing changes: the cookie keeps its name and has no
/// `Secure` (browsers would refuse a `__Host-` cookie), and no HSTS.
#[tokio::test]
async fn plain_http_cookie_has_no_prefix_and_no_hsts() {
    let srv = testutil::TestServer::start().await.unwrap();
    srv.owner().await.unwrap();
    let resp = reqwest::Client::new()
        .post(srv.url.join("/api/v2/users/login").unwrap())
        .json(&serde_json::json!({"email": "owner@example.com", "password": "owner-password"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert!(resp.headers().get(header::STRICT_TRANSPORT_SECURITY).is_none());
    let cookie = resp.headers()[header::SET_COOKIE].to_str().unwrap().to_owned();
    assert!(cookie.starts_with("coder_session_token="), "{cookie}");
    assert!(!cookie.contains("Secure"), "{cookie}");
}
