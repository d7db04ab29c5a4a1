//! Users, sessions and tokens against a real Postgres, through the HTTP API.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use codersdk::{
    CreateFirstUserRequest, CreateTokenRequest, CreateUserRequest, LoginWithPasswordRequest, Role,
};
use coordinator::testutil::TestServer;
use reqwest::StatusCode;

fn first() -> CreateFirstUserRequest {
    CreateFirstUserRequest {
        email: "first@example.com".into(),
        username: "first".into(),
        password: "correct-horse".into(),
    }
}

#[tokio::test]
async fn first_user_only_once_even_when_racing() {
    let srv = TestServer::start().await.unwrap();
    let c = srv.client();
    assert!(!c.has_first_user().await.unwrap());
    let attempts = (0..8).map(|i| {
        let c = c.clone();
        async move {
            c.create_first_user(&CreateFirstUserRequest {
                email: format!("u{i}@example.com"),
                username: format!("u{i}"),
                password: "password-123".into(),
            })
            .await
        }
    });
    let results = futures::future::join_all(attempts).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1, "{results:?}");
    for r in results.iter().filter_map(|r| r.as_ref().err()) {
        assert_eq!(r.status(), Some(StatusCode::CONFLICT));
    }
    assert!(c.has_first_user().await.unwrap());
    let n: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users").fetch_one(&srv.db.pool).await.unwrap();
    assert_eq!(n, 1);
}

#[tokio::test]
async fn wrong_password_and_unknown_user_get_the_same_401() {
    let srv = TestServer::start().await.unwrap();
    let c = srv.client();
    c.create_first_user(&first()).await.unwrap();
    let wrong = c
        .login_with_password(&LoginWithPasswordRequest {
            email: "first@example.com".into(),
            password: "wrong-horse".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    let unknown = c
        .login_with_password(&LoginWithPasswordRequest {
            email: "nobody@example.com".into(),
            password: "wrong-horse".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(wrong.status(), Some(StatusCode::UNAUTHORIZED));
    assert_eq!(unknown.status(), Some(StatusCode::UNAUTHORIZED));
    assert_eq!(wrong.to_string(), unknown.to_string());
    // Username works as well as email.
    c.login_with_password(&LoginWithPasswordRequest {
        username: "FIRST".into(),
        password: "correct-horse".into(),
        ..Default::default()
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn expired_tampered_and_deleted_tokens_are_refused() {
    let srv = TestServer::start().await.unwrap();
    let owner = srv.owner().await.unwrap();
    let key = owner
        .create_token(&CreateTokenRequest { token_name: "ci".into(), lifetime: 3600 })
        .await
        .unwrap()
        .key;
    let as_token = srv.client().with_token(key.clone());
    assert_eq!(as_token.me().await.unwrap().username, "owner");

    // Tampered: same id, one character of the secret changed.
    let mut tampered = key.clone().into_bytes();
    let last = tampered.len() - 1;
    tampered[last] = if tampered[last] == b'a' { b'b' } else { b'a' };
    let tampered = String::from_utf8(tampered).unwrap();
    let err = srv.client().with_token(tampered).me().await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));
    for junk in ["", "nonsense", "a-b", "../../etc", &"x".repeat(5000)] {
        let err = srv.client().with_token(junk).me().await.unwrap_err();
        assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED), "{junk:?}");
    }

    // Expired.
    let id = key.split('-').next().unwrap();
    sqlx::query("UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = $1")
        .bind(id)
        .execute(&srv.db.pool)
        .await
        .unwrap();
    let err = as_token.me().await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::UNAUTHORIZED));

    // Deleted.
    let key2 = owner
        .create_token(&CreateTokenRequest { token_name: "two".into(), lifetime: 0 })
        .await
        .unwrap()
        .key;
    let c2 = srv.client().with_token(key2);
    c2.me().await.unwrap();
    assert_eq!(owner.tokens().await.unwrap().len(), 2);
    owner.delete_token("two").await.unwrap();
    assert_eq!(c2.me().await.unwrap_err().status(), Some(StatusCode::UNAUTHORIZED));
    assert_eq!(owner.delete_token("two").await.unwrap_err().status(), Some(StatusCode::NOT_FOUND));

    // Logging out revokes the session itself.
    owner.logout().await.unwrap();
    assert_eq!(owner.me().await.unwrap_err().status(), Some(StatusCode::UNAUTHORIZED));
}

#[tokio::test]
async fn members_cannot_manage_users_or_see_others() {
    let srv = TestServer::start().await.unwrap();
    let owner = srv.owner().await.unwrap();
    let member = owner
        .create_user(&CreateUserRequest {
            email: "m@example.com".into(),
            username: "member".into(),
            password: "member-password".into(),
            roles: vec![],
        })
        .await
        .unwrap();
    assert_eq!(member.roles, vec![Role::Member]);
    let token = srv
        .client()
        .login_with_password(&LoginWithPasswordRequest {
            email: "m@example.com".into(),
            password: "member-password".into(),
            ..Default::default()
        })
        .await
        .unwrap()
        .session_token;
    let m = srv.client().with_token(token);
    let err = m
        .create_user(&CreateUserRequest {
            email: "x@example.com".into(),
            username: "x".into(),
            password: "xxxxxxxxxx".into(),
            roles: vec![Role::Owner],
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::FORBIDDEN));
    assert_eq!(m.users().await.unwrap_err().status(), Some(StatusCode::FORBIDDEN));
    let other = m
        .request::<(), codersdk::User>(reqwest::Method::GET, "/api/v2/users/owner", None)
        .await
        .unwrap_err();
    assert_eq!(other.status(), Some(StatusCode::NOT_FOUND));
    // Duplicate usernames conflict.
    let dup = owner
        .create_user(&CreateUserRequest {
            email: "other@example.com".into(),
            username: "MEMBER".into(),
            password: "member-password".into(),
            roles: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(dup.status(), Some(StatusCode::CONFLICT));
    assert_eq!(owner.users().await.unwrap().len(), 2);
}

#[tokio::test]
async fn the_database_holds_no_plaintext_secret() {
    let srv = TestServer::start().await.unwrap();
    let owner = srv.owner().await.unwrap();
    let session = owner.token().unwrap().to_owned();
    let key = owner.create_token(&CreateTokenRequest::default()).await.unwrap().key;
    let dump: Vec<String> = sqlx::query_scalar(
        "SELECT row_to_json(u)::text FROM users u
         UNION ALL SELECT row_to_json(k)::text FROM api_keys k",
    )
    .fetch_all(&srv.db.pool)
    .await
    .unwrap();
    let all = dump.join("\n");
    assert!(all.contains("$argon2id$"), "{all}");
    assert!(!all.contains("owner-password"));
    for token in [&session, &key] {
        let secret = token.split_once('-').unwrap().1;
        assert!(!all.contains(secret), "secret of {token} stored in plaintext");
        // bytea renders as hex: check that form too.
        assert!(!all.contains(&hex::encode(secret)));
    }
}

#[tokio::test]
async fn bad_bodies_get_json_errors() {
    let srv = TestServer::start().await.unwrap();
    let http = reqwest::Client::new();
    let url = srv.url.join("/api/v2/users/first").unwrap();
    let cases: Vec<(Vec<u8>, &str, StatusCode)> = vec![
        (b"{not json".to_vec(), "application/json", StatusCode::BAD_REQUEST),
        (b"{\"email\": 5}".to_vec(), "application/json", StatusCode::UNPROCESSABLE_ENTITY),
        (b"{}".to_vec(), "text/plain", StatusCode::UNSUPPORTED_MEDIA_TYPE),
        (vec![b' '; 2 << 20], "application/json", StatusCode::PAYLOAD_TOO_LARGE),
        (vec![0xff, 0xfe, 0x00], "application/json", StatusCode::BAD_REQUEST),
    ];
    for (body, ct, want) in cases {
        let resp =
            http.post(url.clone()).header("content-type", ct).body(body).send().await.unwrap();
        assert_eq!(resp.status(), want);
        let json: serde_json::Value = resp.json().await.unwrap();
        assert!(json["message"].as_str().is_some_and(|m| !m.is_empty()), "{json}");
    }
    // Validation errors are 400 with a message.
    let err = srv
        .client()
        .create_first_user(&CreateFirstUserRequest {
            email: "bad".into(),
            username: "ok".into(),
            password: "long-enough".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::BAD_REQUEST));
    // Unknown API routes are JSON 404s.
    let resp = http.get(srv.url.join("/api/v2/nope").unwrap()).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
    let _: codersdk::ApiErrorBody = resp.json().await.unwrap();
}

#[tokio::test]
async fn sessions_slide_but_tokens_do_not() {
    let srv = TestServer::start().await.unwrap();
    let owner = srv.owner().await.unwrap();
    let session_id = owner.token().unwrap().split('-').next().unwrap().to_owned();
    let key = owner
        .create_token(&CreateTokenRequest { token_name: "t".into(), lifetime: 7200 })
        .await
        .unwrap()
        .key;
    let key_id = key.split('-').next().unwrap().to_owned();
    // Pretend both were last extended three hours ago.
    sqlx::query("UPDATE api_keys SET expires_at = expires_at - interval '3 hours', last_used = now() - interval '3 hours'")
        .execute(&srv.db.pool)
        .await
        .unwrap();
    let before = |id: String| {
        let pool = srv.db.pool.clone();
        async move {
            sqlx::query_scalar::<_, chrono::DateTime<chrono::Utc>>(
                "SELECT expires_at FROM api_keys WHERE id = $1",
            )
            .bind(id)
            .fetch_one(&pool)
            .await
            .unwrap()
        }
    };
    let s0 = before(session_id.clone()).await;
    let k0 = before(key_id.clone()).await;
    owner.me().await.unwrap();
    srv.client().with_token(key).me().await.unwrap_err(); // 2h lifetime minus 3h: expired
    let s1 = before(session_id).await;
    let k1 = before(key_id).await;
    assert!(s1 > s0 + chrono::Duration::hours(2), "session was not extended: {s0} -> {s1}");
    assert_eq!(k0, k1);
}

#[tokio::test]
async fn health_buildinfo_and_metrics() {
    let srv = TestServer::start().await.unwrap();
    let http = reqwest::Client::new();
    let health = http.get(srv.url.join("/healthz").unwrap()).send().await.unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let info = srv.client().build_info().await.unwrap();
    assert_eq!(info.external_url, srv.url.to_string());
    // Metrics are on the Prometheus listener only (tests/prometheus.rs).
    let metrics = http.get(srv.url.join("/metrics").unwrap()).send().await.unwrap();
    assert_eq!(metrics.status(), StatusCode::NOT_FOUND);
}
