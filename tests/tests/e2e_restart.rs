//! Faults with traffic flowing: `kill -9` of coderd during an SSH session
//! over a direct path. The session survives (no byte lost), and after coderd
//! restarts on the same data directory new connections work again.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use tests::{has_program, local_workspace, run_ok, stop_embedded_postgres, tempdir, Coderd};

#[test]
fn ssh_session_survives_kill_9_of_coderd() {
    for tool in ["terraform", "ssh", "curl"] {
        if !has_program(tool) {
            coordinator::testutil::skip(&format!("{tool} is not installed"));
            return;
        }
    }
    let tmp = tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("config");
    let addr = Coderd::free_addr().unwrap();
    let srv = Coderd::spawn_on(&data, &addr, &[]).unwrap();
    local_workspace(&srv, &cfg, tmp.path(), "ws").unwrap();

    // A long-lived session that echoes each line back with a prefix.
    let mut session = srv
        .coder(&cfg)
        .unwrap()
        .args(["ssh", "-v", "ws", "--", "while read l; do echo \"got $l\"; done"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = session.stdin.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let stdout = session.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let (etx, erx) = mpsc::channel();
    let stderr = session.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = etx.send(line);
        }
    });
    writeln!(stdin, "one").unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(60)).unwrap(), "got one");
    // The path must be direct for the session to outlive the relay in coderd.
    let path = erx.recv_timeout(Duration::from_secs(30)).unwrap();
    assert!(path.contains("direct"), "{path}");

    srv.kill9().unwrap();
    for i in 0..50 {
        writeln!(stdin, "line {i}").unwrap();
        assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), format!("got line {i}"));
    }

    // coderd comes back on the same data; the agent reconnects; new sessions work.
    let srv = Coderd::spawn_on(&data, &addr, &[]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let out =
            srv.coder(&cfg).unwrap().args(["ssh", "ws", "--", "echo", "again"]).output().unwrap();
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout), "again\n");
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(500));
    }
    // The old session is still alive too.
    writeln!(stdin, "last").unwrap();
    assert_eq!(rx.recv_timeout(Duration::from_secs(30)).unwrap(), "got last");
    drop(stdin);
    let status = session.wait().unwrap();
    assert!(status.success(), "{status}");

    let mut del = srv.coder(&cfg).unwrap();
    del.args(["delete", "ws", "--yes"]);
    run_ok(&mut del).unwrap();
    srv.terminate().unwrap();
    stop_embedded_postgres(&data);
}
