//! Autostop with activity, end to end on real parts: `coderd` (scheduler
//! ticking every 500 ms), the `local` template, a real agent reporting its
//! stats every 10 s. A workspace with a 20 s TTL and an open `coder ssh`
//! session keeps running past 40 s; once the session ends, the scheduler
//! stops it within 30 s, as an `autostop` build. Then an autostart schedule
//! for the next minute starts it again at that minute, once.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::DurationRound;
use codersdk::Workspace;
use tests::{local_workspace, require_programs, run_ok, stop_embedded_postgres, tempdir, Coderd};

#[test]
fn an_open_ssh_session_holds_off_autostop_until_it_ends() {
    if !require_programs(&["terraform"]) {
        return;
    }
    let tmp = tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("config");
    let srv = Coderd::spawn(&data, &["--autobuild-poll-interval-ms", "500"]).unwrap();
    let coder = |args: &[&str]| {
        let mut c = srv.coder(&cfg).unwrap();
        c.args(args);
        c
    };
    local_workspace(&srv, &cfg, tmp.path(), "ws1").unwrap();
    let workspace = || -> Workspace {
        let out = run_ok(&mut coder(&["list", "--output", "json"])).unwrap();
        let list: Vec<Workspace> = serde_json::from_str(&out).unwrap();
        list.into_iter().find(|w| w.name == "ws1").expect("ws1 is listed")
    };

    // A session that stays open until its stdin closes.
    let mut session = coder(&["ssh", "ws1", "--", "echo open; read line; echo closed"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut stdout = std::io::BufReader::new(session.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "open\n");

    let out = run_ok(&mut coder(&["schedule", "stop", "ws1", "20s"])).unwrap();
    assert!(out.contains("20s"), "{out}");
    let ttl_set = Instant::now();
    let listed = run_ok(&mut coder(&["list"])).unwrap();
    assert!(listed.contains("STOPS AT") && listed.contains("(in "), "{listed}");

    // Past 40 s the workspace still runs: each stats report pushed the deadline.
    while ttl_set.elapsed() < Duration::from_secs(42) {
        let w = workspace();
        assert_eq!(w.latest_build.reason, "initiator", "stopped under an open session");
        assert_eq!(w.latest_build.status, codersdk::WorkspaceStatus::Running);
        assert!(w.latest_build.deadline.is_some());
        std::thread::sleep(Duration::from_secs(1));
    }

    // End the session; within 30 s the scheduler starts the stop.
    drop(session.stdin.take());
    line.clear();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    assert_eq!(line, "closed\n");
    assert!(session.wait().unwrap().success());
    let ended = Instant::now();
    let w = loop {
        let w = workspace();
        if w.latest_build.transition == codersdk::Transition::Stop {
            break w;
        }
        assert!(ended.elapsed() < Duration::from_secs(30), "not stopped 30 s after the session");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(w.latest_build.reason, "autostop");
    let waited = ended.elapsed();
    assert!(waited >= Duration::from_secs(1), "stopped before the session's last bump ran out");

    // The build runs like a manual one and the audit log says why.
    let mut follow = coder(&["logs", "ws1", "--follow"]);
    run_ok(&mut follow).unwrap();
    assert_eq!(workspace().latest_build.status, codersdk::WorkspaceStatus::Stopped);
    let audit = run_ok(&mut coder(&["audit", "--output", "json"])).unwrap();
    assert!(audit.contains("autostop"), "{audit}");
    let show = run_ok(&mut coder(&["schedule", "show", "ws1"])).unwrap();
    assert!(show.contains("20s") && show.contains("manual"), "{show}");
    eprintln!("autostop fired {waited:?} after the session ended");

    // Autostart: a schedule for the next whole minute (UTC) starts the
    // stopped workspace at that minute, once, as an `autostart` build.
    let now = chrono::Utc::now();
    let mut at =
        now.duration_trunc(chrono::TimeDelta::minutes(1)).unwrap() + chrono::TimeDelta::minutes(1);
    if at - now < chrono::TimeDelta::seconds(5) {
        at += chrono::TimeDelta::minutes(1);
    }
    let schedule = format!("{} UTC", at.format("%-H:%M"));
    // No autostop racing the checks below.
    run_ok(&mut coder(&["schedule", "stop", "ws1", "manual"])).unwrap();
    run_ok(&mut coder(&["schedule", "start", "ws1", &schedule])).unwrap();
    assert_eq!(workspace().next_start_at, Some(at), "next start of {schedule:?}");
    let started = loop {
        let w = workspace();
        if w.latest_build.transition == codersdk::Transition::Start {
            break w;
        }
        let late = chrono::Utc::now() - at;
        assert!(late < chrono::TimeDelta::seconds(30), "no autostart 30 s after {at}");
        std::thread::sleep(Duration::from_millis(500));
    };
    assert_eq!(started.latest_build.reason, "autostart");
    let fired = started.latest_build.created_at;
    assert!(fired >= at, "autostart fired at {fired}, before its minute {at}");
    eprintln!("autostart fired {:?} after its minute", (fired - at).to_std().unwrap());
    run_ok(&mut coder(&["logs", "ws1", "--follow"])).unwrap();
    let w = workspace();
    assert_eq!(w.latest_build.status, codersdk::WorkspaceStatus::Running);
    assert_eq!(w.latest_build.build_number, started.latest_build.build_number, "fired twice");
    assert!(w.next_start_at.is_some_and(|n| n > at), "the next start moved on: {w:?}");

    run_ok(&mut coder(&["delete", "ws1", "--yes"])).unwrap();
    let status = srv.terminate().unwrap();
    assert!(status.success());
    stop_embedded_postgres(&data);
}
