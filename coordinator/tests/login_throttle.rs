//! Password guessing against the real router and Postgres: each client binds
//! its own loopback address (127.0.0.0/8 is all local on Linux), so the
//! coordinator sees distinct source addresses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::IpAddr;

use codersdk::{ApiErrorBody, CreateUserRequest, LoginWithPasswordRequest};
use coordinator::testutil::TestServer;
use reqwest::StatusCode;

/// A client whose connections come from `ip`.
fn from(ip: &str) -> reqwest::Client {
    reqwest::Client::builder().local_address(ip.parse::<IpAddr>().unwrap()).build().unwrap()
}

async fn login(
    srv: &TestServer,
    client: &reqwest::Client,
    who: &str,
    password: &str,
) -> reqwest::Response {
    let mut req = LoginWithPasswordRequest { password: password.into(), ..Default::default() };
    if who.contains('@') {
        req.email = who.into();
    } else {
        req.username = who.into();
    }
    client.post(srv.url.join("/api/v2/users/login").unwrap()).json(&req).send().await.unwrap()
}

/// Asserts a 429 with a `Retry-After` in `1..=max_secs` and a JSON message.
async fn assert_throttled(resp: reqwest::Response, max_secs: u64) {
    assert_eq!(resp.status(), StatusCode::TOO_MANY_REQUESTS);
    let retry: u64 = resp
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .expect("Retry-After")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=max_secs).contains(&retry), "Retry-After {retry}");
    let body: ApiErrorBody = resp.json().await.unwrap();
    assert!(body.message.contains("Too many failed login attempts"), "{body:?}");
    assert!(body.detail.contains("Try again in"), "{body:?}");
}

async fn server_with_users() -> TestServer {
    let srv = TestServer::start().await.unwrap();
    let owner = srv.owner().await.unwrap();
    for name in ["victim", "bystander"] {
        owner
            .create_user(&CreateUserRequest {
                email: format!("{name}@example.com"),
                username: name.into(),
                password: format!("{name}-password"),
                roles: vec![],
            })
            .await
            .unwrap();
    }
    srv
}

#[tokio::test]
async fn thirty_wrong_passwords_end_in_429_and_the_right_one_is_refused_too() {
    let srv = server_with_users().await;
    let attacker = from("127.0.0.2");
    let mut statuses = Vec::new();
    for i in 0..30 {
        let resp = login(&srv, &attacker, "victim@example.com", &format!("guess-{i}")).await;
        statuses.push(resp.status());
        if i == 29 {
            assert_throttled(resp, 60).await;
        }
    }
    assert!(statuses[..5].iter().all(|s| *s == StatusCode::UNAUTHORIZED), "{statuses:?}");
    assert!(statuses[5..].iter().all(|s| *s == StatusCode::TOO_MANY_REQUESTS), "{statuses:?}");

    // While the account is locked the right password is refused as well, by
    // its username as by its email and from any address: guessing gains nothing.
    assert_throttled(login(&srv, &attacker, "victim@example.com", "victim-password").await, 60)
        .await;
    assert_throttled(
        login(&srv, &from("127.0.0.3"), "VICTIM@example.com", "victim-password").await,
        60,
    )
    .await;

    // Other accounts are usable, from another address and from the attacker's
    // (five failures are far below an address's budget).
    for ip in ["127.0.0.3", "127.0.0.2"] {
        let resp = login(&srv, &from(ip), "bystander", "bystander-password").await;
        assert_eq!(resp.status(), StatusCode::CREATED, "from {ip}");
    }
}

#[tokio::test]
async fn parallel_guesses_get_no_more_tries_than_sequential_ones() {
    let srv = server_with_users().await;
    let attacker = from("127.0.0.4");
    let guesses = (0..20).map(|i| {
        let (srv, attacker) = (&srv, &attacker);
        async move { login(srv, attacker, "victim", &format!("guess-{i}")).await.status() }
    });
    let statuses = futures::future::join_all(guesses).await;
    let checked = statuses.iter().filter(|s| **s == StatusCode::UNAUTHORIZED).count();
    let refused = statuses.iter().filter(|s| **s == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!(checked + refused, statuses.len(), "{statuses:?}");
    assert!(checked <= 5, "{checked} passwords were checked: {statuses:?}");
    assert_throttled(login(&srv, &attacker, "victim", "victim-password").await, 60).await;
}

#[tokio::test]
async fn an_address_spraying_many_accounts_is_throttled() {
    let srv = server_with_users().await;
    let sprayer = from("127.0.0.5");
    for i in 0..30 {
        let resp = login(&srv, &sprayer, &format!("nobody{i}"), "Summer2026!").await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "attempt {i}");
    }
    // The address is locked, even for an account it never tried, and even
    // with the right password.
    assert_throttled(login(&srv, &sprayer, "bystander", "bystander-password").await, 60).await;
    // A successful login doesn't reset an address's budget.
    let resp = login(&srv, &from("127.0.0.6"), "bystander", "bystander-password").await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    assert_throttled(login(&srv, &sprayer, "nobody-else", "x").await, 60).await;
}

#[tokio::test]
async fn a_successful_login_resets_the_accounts_count() {
    let srv = server_with_users().await;
    let c = from("127.0.0.7");
    for round in 0..3 {
        for i in 0..4 {
            let resp = login(&srv, &c, "victim", &format!("typo-{round}-{i}")).await;
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "round {round} attempt {i}");
        }
        let resp = login(&srv, &c, "victim", "victim-password").await;
        assert_eq!(resp.status(), StatusCode::CREATED, "round {round}");
    }
}
