//! Faults with traffic flowing: coderd's (embedded) Postgres is stopped and
//! started again while an SSH session streams data to the workspace. The
//! session carries every byte (SHA-256 computed in the workspace equals the
//! sender's), the API fails while Postgres is down and answers again after,
//! and new SSH sessions work (the agent's coordination recovered).
//! `coordinator/tests/coordination_postgres_restart.rs` asserts the same at
//! the protocol level, with two replicas.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use tests::{
    embedded_postgres, local_workspace, require_programs, run_ok, stop_embedded_postgres, tempdir,
    Coderd, HashedSession,
};

/// Longer than coordination's heartbeat timeout (6 s).
const OUTAGE: Duration = Duration::from_secs(8);

#[test]
fn ssh_session_and_api_survive_a_postgres_restart() {
    if !require_programs(&["terraform", "ssh"]) {
        return;
    }
    let tmp = tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("config");
    let srv = Coderd::spawn(&data, &[]).unwrap();
    local_workspace(&srv, &cfg, tmp.path(), "ws").unwrap();
    let coder_ok = |args: &[&str]| {
        let mut c = srv.coder(&cfg).unwrap();
        c.args(args);
        run_ok(&mut c)
    };

    // A session that hashes everything it reads, fed at a steady pace.
    let session = HashedSession::start(srv.coder(&cfg).unwrap(), &["ws"]).unwrap();
    session.wait_progress("before the restart").unwrap();

    // Postgres goes away for a while.
    let pg = embedded_postgres(&data).unwrap();
    pg.stop().unwrap();
    let down = Instant::now();
    let during = srv.coder(&cfg).unwrap().args(["list"]).output().unwrap();
    assert!(!during.status.success(), "the API answered with Postgres down");
    session.wait_progress("while Postgres was down").unwrap();
    std::thread::sleep(OUTAGE.saturating_sub(down.elapsed()));
    session.wait_progress("at the end of the outage").unwrap();
    let pg = embedded_postgres(&data).unwrap();
    drop(pg);

    // The API answers again.
    let back = Instant::now();
    let deadline = back + Duration::from_secs(60);
    loop {
        let out = srv.coder(&cfg).unwrap().args(["list"]).output().unwrap();
        if out.status.success() {
            assert!(String::from_utf8_lossy(&out.stdout).contains("ws"));
            break;
        }
        assert!(Instant::now() < deadline, "{}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("the API answered {:?} after Postgres was back", back.elapsed());

    // New sessions work: the coordinator and agent recovered.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = srv.coder(&cfg).unwrap().args(["ssh", "ws", "--", "echo", "again"]).output();
        let out = out.unwrap();
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout), "again\n");
            break;
        }
        assert!(Instant::now() < deadline, "{}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(500));
    }

    // The stream carried every byte.
    session.wait_progress("after the restart").unwrap();
    let bytes = session.finish().unwrap();
    eprintln!("{bytes} bytes through the session, SHA-256 equal");

    coder_ok(&["delete", "ws", "--yes"]).unwrap();
    srv.terminate().unwrap();
    stop_embedded_postgres(&data);
}
