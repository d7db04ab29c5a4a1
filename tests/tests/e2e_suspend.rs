//! Suspending a user ends what they have open: a member's `coder ssh`,
//! carrying a SHA-256-checked stream into their workspace, is cut within
//! 5 s of `coder users suspend` (cut, never corrupted: the workspace never
//! reports a digest for a stream it did not receive whole), their token is
//! refused with a message that says why, and `coder audit --output json`
//! finds the suspension and the member's logins by user and action.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::time::{Duration, Instant};

use tests::{login_first_user, require_programs, run_ok, tempdir, Coderd, HashedSession};

fn coder(srv: &Coderd, cfg: &Path, args: &[&str]) -> String {
    let mut c = srv.coder(cfg).unwrap();
    c.args(args);
    run_ok(&mut c).unwrap()
}

/// A deployment with template `local`, its first user `dev` (config in
/// `dev`) and a member `alice` (config in `alice`) who has workspace `aws`.
fn deployment(tmp: &Path) -> Coderd {
    let srv = Coderd::spawn(&tmp.join("data"), &[]).unwrap();
    let (dev, alice) = (tmp.join("dev"), tmp.join("alice"));
    login_first_user(&srv, &dev).unwrap();
    let tpl = tmp.join("tpl-local");
    let tpl_s = tpl.to_str().unwrap();
    coder(&srv, &dev, &["templates", "init", tpl_s, "--id", "local"]);
    coder(&srv, &dev, &["templates", "push", "local", "-d", tpl_s, "--yes"]);
    let pw = "alice-password";
    let email = "alice@example.com";
    let url = srv.url.as_str();
    coder(
        &srv,
        &dev,
        &["users", "create", "--username", "alice", "--email", email, "--password", pw],
    );
    coder(&srv, &alice, &["login", url, "--username", "alice", "--password", pw]);
    coder(&srv, &alice, &["create", "aws", "-t", "local", "--yes"]);
    srv
}

/// The coordination sweep withdraws alice's tunnel; the agent's endpoint
/// then closes her QUIC connection at once with the withdrawn close code
/// (`mesh::close::WITHDRAWN`), so `coder ssh` ends and says why, instead of
/// lingering until the mesh idle timeout (~30 s).
#[test]
fn suspension_cuts_an_open_ssh_session_within_five_seconds() {
    if !require_programs(&["terraform", "sha256sum"]) {
        return;
    }
    let tmp = tempdir().unwrap();
    let srv = deployment(tmp.path());
    let (dev, alice) = (tmp.path().join("dev"), tmp.path().join("alice"));

    let session = HashedSession::start(srv.coder(&alice).unwrap(), &["aws"]).unwrap();
    session.wait_progress("before the suspension").unwrap();
    let suspended_at = Instant::now();
    coder(&srv, &dev, &["users", "suspend", "alice"]);
    // The stream stops: progress fails (the feeder's write broke) well
    // before wait_progress's own 30-s limit.
    let cut = loop {
        match session.wait_progress("after the suspension") {
            Ok(()) if suspended_at.elapsed() < Duration::from_secs(10) => continue,
            Ok(()) => panic!("the session still streams 10 s after the suspension"),
            Err(_) => break suspended_at.elapsed(),
        }
    };
    assert!(cut < Duration::from_secs(5), "the session was cut only after {cut:?}");
    // The proxy (`coder ssh --stdio`) says why, on ssh's stderr.
    let why = std::iter::from_fn(|| session.stderr_line(Duration::from_secs(5)))
        .find(|l| l.contains("withdrew the tunnel"));
    assert!(why.is_some(), "coder ssh did not print the withdrawal reason");
    let e = session.finish().expect_err("a cut session never reports a digest");
    let msg = format!("{e:#}");
    assert!(!msg.contains("the workspace read"), "the stream was corrupted, not cut: {msg}");
}

/// The lifecycle and the audit log through the CLI: a suspended member's
/// token is refused with the reason, `coder audit --output json` filters by
/// user and action, `coder users list` shows status and login type, and
/// `coder users delete` refuses while the member has a workspace, unless
/// `--force`.
#[test]
fn suspend_audit_and_delete_through_the_cli() {
    if !require_programs(&["terraform"]) {
        return;
    }
    let tmp = tempdir().unwrap();
    let srv = deployment(tmp.path());
    let (dev, alice) = (tmp.path().join("dev"), tmp.path().join("alice"));
    coder(&srv, &dev, &["users", "suspend", "alice"]);
    // The token is refused, with the reason.
    let mut whoami = srv.coder(&alice).unwrap();
    let out = whoami.arg("whoami").output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("suspended"), "{stderr}");

    // The audit log, filtered by user and action.
    let json =
        coder(&srv, &dev, &["audit", "--user", "alice", "--action", "login", "--output", "json"]);
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert!(!rows.is_empty(), "alice's login is audited");
    assert!(rows.iter().all(|r| r["username"] == "alice" && r["action"] == "login"), "{json}");
    let json = coder(
        &srv,
        &dev,
        &["audit", "--resource-type", "user", "--action", "write", "--output", "json"],
    );
    let rows: Vec<serde_json::Value> = serde_json::from_str(&json).unwrap();
    assert!(
        rows.iter().any(|r| r["resource_name"] == "alice"
            && r["username"] == "dev"
            && r["diff"]["status"]["new"] == "suspended"),
        "{json}"
    );
    let listed = coder(&srv, &dev, &["users", "list", "--output", "json"]);
    let users: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    let a = users.iter().find(|u| u["username"] == "alice").unwrap();
    assert_eq!(a["status"], "suspended");
    assert_eq!(a["login_type"], "password");

    // Deleting her needs her workspace gone first; --force does it.
    let mut del = srv.coder(&dev).unwrap();
    let out = del.args(["users", "delete", "alice", "--yes"]).output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("aws"));
    coder(&srv, &dev, &["users", "delete", "alice", "--force", "--yes"]);
    let listed = coder(&srv, &dev, &["users", "list", "--output", "json"]);
    assert!(!listed.contains("\"alice\""), "{listed}");
}
