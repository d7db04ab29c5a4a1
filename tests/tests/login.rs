//! `coderd server` on its embedded Postgres, driven by the real `coder` CLI:
//! first-user login, whoami, tokens; data survives a clean restart and a
//! `kill -9`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use tests::{run_ok, stop_embedded_postgres, tempdir, Coderd};

#[test]
fn login_whoami_tokens_and_restarts_keep_users() {
    let tmp = tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("config");
    let srv = Coderd::spawn(&data, &[]).unwrap();
    let url = srv.url.to_string();

    let out = run_ok(srv.coder(&cfg).unwrap().args([
        "login",
        &url,
        "--first-user-username",
        "alice",
        "--first-user-email",
        "alice@example.com",
        "--first-user-password",
        "alice-password",
    ]))
    .unwrap();
    assert!(out.contains("Welcome, alice"), "{out}");
    let session = std::fs::read_to_string(cfg.join("session")).unwrap();
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(cfg.join("session")).unwrap().permissions().mode();
        assert_eq!(mode & 0o077, 0, "session file readable by others: {mode:o}");
    }

    let who: serde_json::Value = serde_json::from_str(
        &run_ok(srv.coder(&cfg).unwrap().args(["whoami", "--output", "json"])).unwrap(),
    )
    .unwrap();
    assert_eq!(who["username"], "alice");
    assert_eq!(who["roles"][0], "owner");

    let tok: serde_json::Value = serde_json::from_str(
        &run_ok(
            srv.coder(&cfg).unwrap().args(["tokens", "create", "--name", "ci", "--output", "json"]),
        )
        .unwrap(),
    )
    .unwrap();
    let key = tok["key"].as_str().unwrap().to_owned();
    assert_ne!(key, session.trim());

    // The token works through CODER_SESSION_TOKEN without any stored login.
    let empty_cfg = tmp.path().join("empty");
    let out = run_ok(
        srv.coder(&empty_cfg)
            .unwrap()
            .env("CODER_URL", &url)
            .env("CODER_SESSION_TOKEN", &key)
            .args(["whoami"]),
    )
    .unwrap();
    assert!(out.contains("alice"), "{out}");

    // Clean restart: same data dir, users kept, existing token still valid.
    let status = srv.terminate().unwrap();
    assert!(status.success(), "coderd exited with {status}");
    let srv = Coderd::spawn(&data, &[]).unwrap();
    let url2 = srv.url.to_string();
    let out = run_ok(
        srv.coder(&empty_cfg)
            .unwrap()
            .env("CODER_URL", &url2)
            .env("CODER_SESSION_TOKEN", &key)
            .args(["whoami"]),
    )
    .unwrap();
    assert!(out.contains("alice"), "{out}");

    // kill -9: the next start recovers (reusing or restarting the cluster).
    srv.kill9().unwrap();
    let srv = Coderd::spawn(&data, &[]).unwrap();
    let cfg2 = tmp.path().join("config2");
    let out = run_ok(srv.coder(&cfg2).unwrap().args([
        "login",
        srv.url.as_str(),
        "--username",
        "alice",
        "--password",
        "alice-password",
    ]))
    .unwrap();
    assert!(out.contains("Welcome, alice"), "{out}");
    let list =
        run_ok(srv.coder(&cfg2).unwrap().args(["tokens", "list", "--output", "json"])).unwrap();
    let list: serde_json::Value = serde_json::from_str(&list).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list}");
    assert_eq!(list[0]["token_name"], "ci");

    // Wrong password: one-line error, non-zero exit.
    let out = srv
        .coder(&tmp.path().join("config3"))
        .unwrap()
        .args(["login", srv.url.as_str(), "--username", "alice", "--password", "nope-nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("Incorrect login or password"));

    let status = srv.terminate().unwrap();
    assert!(status.success());
    stop_embedded_postgres(&data);
}

#[test]
fn not_logged_in_says_what_to_do() {
    let tmp = tempdir().unwrap();
    let out = std::process::Command::new(tests::binary("coder").unwrap())
        .env("CODER_CONFIG_DIR", tmp.path())
        .env_remove("CODER_URL")
        .env_remove("CODER_SESSION_TOKEN")
        .arg("whoami")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("coder login"), "{err}");
}
