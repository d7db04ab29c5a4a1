//! Faults with traffic flowing: two `coderd` replicas on one database, a
//! load balancer in front of replica B. The workspace's agent coordinates
//! through A; a user's SSH session coordinates through the balancer (B) and
//! streams data over a direct mesh path. B is killed with `kill -9`.
//!
//! Asserts: the session keeps carrying data (SHA-256 equal at the end); A
//! marks the client's peer *lost* (not deleted) once B's heartbeat is stale;
//! when the balancer sends new connections to A, the client resumes there
//! with the same peer id (status ok, owned by A), and new SSH sessions through
//! the balancer work.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use codersdk::{Client, LoginWithPasswordRequest};
use coordinator::coordination::DebugSnapshot;
use tests::{
    embedded_postgres, local_workspace, require_programs, run_ok, stop_embedded_postgres, tempdir,
    Balancer, Coderd, HashedSession,
};

/// The coordination state as replica A's debug endpoint shows it.
fn debug(rt: &tokio::runtime::Runtime, srv: &Coderd, token: &str) -> DebugSnapshot {
    rt.block_on(async {
        reqwest::Client::new()
            .get(srv.url.join("/api/v2/debug/coordinator").unwrap())
            .header("Coder-Session-Token", token)
            .send()
            .await
            .unwrap()
            .error_for_status()
            .unwrap()
            .json()
            .await
            .unwrap()
    })
}

/// Polls A's debug view (up to `limit`) until `want` holds; returns that view.
fn wait_debug(
    rt: &tokio::runtime::Runtime,
    srv: &Coderd,
    token: &str,
    limit: Duration,
    what: &str,
    want: impl Fn(&DebugSnapshot) -> bool,
) -> DebugSnapshot {
    let deadline = Instant::now() + limit;
    loop {
        let d = debug(rt, srv, token);
        if want(&d) {
            return d;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}: {d:#?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn clients_resume_on_the_other_replica_when_one_is_killed() {
    if !require_programs(&["terraform", "ssh"]) {
        return;
    }
    let tmp = tempdir().unwrap();
    let (data_a, data_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let (cfg_a, cfg_b) = (tmp.path().join("cfg-a"), tmp.path().join("cfg-b"));
    let a = Coderd::spawn(&data_a, &[]).unwrap();
    local_workspace(&a, &cfg_a, tmp.path(), "ws").unwrap();

    // Replica B on A's database, behind the balancer (its access URL).
    let pg_url = embedded_postgres(&data_a).unwrap().url(coordinator::postgres::DATABASE);
    let b_addr = Coderd::free_addr().unwrap();
    let lb = Balancer::start(b_addr.parse().unwrap()).unwrap();
    let lb_url = lb.url();
    let b = Coderd::spawn_on(
        &data_b,
        &b_addr,
        &["--postgres-url", &pg_url, "--provisioner-daemons", "0", "--access-url", lb_url.as_str()],
    )
    .unwrap();
    let mut login = a.coder(&cfg_b).unwrap();
    login.args(["login", lb_url.as_str(), "--username", "dev", "--password", "dev-password"]);
    run_ok(&mut login).unwrap();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let owner = rt
        .block_on(Client::new(a.url.clone()).login_with_password(&LoginWithPasswordRequest {
            username: "dev".into(),
            password: "dev-password".into(),
            ..Default::default()
        }))
        .unwrap()
        .session_token;

    // The session, coordinated through B, on a direct path.
    let session = HashedSession::start(a.coder(&cfg_b).unwrap(), &["-v", "ws"]).unwrap();
    let path = session.stderr_line(Duration::from_secs(30)).unwrap_or_default();
    assert!(path.contains("direct"), "{path}");
    session.wait_progress("before the kill").unwrap();
    let before = wait_debug(&rt, &a, &owner, Duration::from_secs(30), "two replicas", |d| {
        d.replicas.len() == 2 && d.peers.iter().any(|p| p.kind == "client")
    });
    let client = before.peers.iter().find(|p| p.kind == "client").unwrap().clone();
    let agent = before.peers.iter().find(|p| p.kind == "agent").unwrap().clone();
    assert_ne!(client.coordinator_id, agent.coordinator_id, "{before:#?}");

    // B dies; A marks the client lost, and the session carries on.
    b.kill9().unwrap();
    session.wait_progress("after B was killed").unwrap();
    let lost = wait_debug(&rt, &a, &owner, Duration::from_secs(30), "the client lost", |d| {
        d.peers.iter().any(|p| p.id == client.id && p.status == "lost")
    });
    assert_eq!(lost.replicas.len(), 1, "{lost:#?}");
    session.wait_progress("while the client was lost").unwrap();

    // The balancer sends new connections to A: the client resumes there.
    lb.switch(a.url.socket_addrs(|| None).unwrap()[0]);
    let resumed = wait_debug(&rt, &a, &owner, Duration::from_secs(60), "the client back", |d| {
        d.peers.iter().any(|p| {
            p.id == client.id && p.status == "ok" && p.coordinator_id == agent.coordinator_id
        })
    });
    assert!(resumed.peers.iter().all(|p| p.status == "ok"), "{resumed:#?}");

    // New sessions through the balancer work; the old one lost nothing.
    let mut again = a.coder(&cfg_b).unwrap();
    again.args(["ssh", "ws", "--", "echo", "again"]);
    assert_eq!(run_ok(&mut again).unwrap(), "again\n");
    session.wait_progress("after resuming").unwrap();
    let bytes = session.finish().unwrap();
    eprintln!("{bytes} bytes through the session, SHA-256 equal");

    let mut del = a.coder(&cfg_a).unwrap();
    del.args(["delete", "ws", "--yes"]);
    run_ok(&mut del).unwrap();
    a.terminate().unwrap();
    stop_embedded_postgres(&data_a);
}
