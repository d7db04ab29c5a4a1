//! The CLI commands that work over the mesh, on real processes: `coderd
//! server`, a workspace from `examples/templates/local` (its agent runs on
//! this host), then `coder tunnel` (TCP and UDP echo, a refused target),
//! `coder ping` (direct, and relay with `--relay-only`), `coder speedtest`,
//! `coder netcheck`, and `coder delete` refusing without `--yes` or a
//! terminal. One deployment and one workspace for all of them.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::Value;
use tests::{login_first_user, run_ok, stop_embedded_postgres, tempdir, Coderd};

fn has(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A TCP echo server on 127.0.0.1 (the local template's agent shares this host).
fn tcp_echo() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for mut s in l.incoming().flatten() {
            std::thread::spawn(move || {
                let mut r = s.try_clone().unwrap();
                let _ = std::io::copy(&mut r, &mut s);
            });
        }
    });
    port
}

fn udp_echo() -> u16 {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    let port = s.local_addr().unwrap().port();
    std::thread::spawn(move || {
        let mut buf = [0u8; 65535];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let _ = s.send_to(&buf[..n], from);
        }
    });
    port
}

/// A port nothing listens on (bound, then released).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Starts `coder tunnel` and waits for its "Ready" line.
fn start_tunnel(mut cmd: Command) -> Child {
    let mut child = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("Ready") {
                let _ = tx.send(line);
            }
        }
    });
    match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(line) => eprintln!("tunnel: {line}"),
        Err(_) => {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!("coder tunnel did not get ready: {}", String::from_utf8_lossy(&out.stderr));
        }
    }
    child
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

#[test]
fn tunnel_ping_speedtest_netcheck_over_the_mesh() {
    if !has("terraform") {
        coordinator::testutil::skip("terraform is not installed");
        return;
    }
    let tmp = tempdir().unwrap();
    let data = tmp.path().join("data");
    let cfg = tmp.path().join("config");
    let srv = Coderd::spawn(&data, &[]).unwrap();
    let coder = |args: &[&str]| {
        let mut c = srv.coder(&cfg).unwrap();
        c.args(args);
        c
    };
    login_first_user(&srv, &cfg).unwrap();
    let tpl = tmp.path().join("tpl");
    run_ok(&mut coder(&["templates", "init", tpl.to_str().unwrap(), "--id", "local"])).unwrap();
    run_ok(&mut coder(&["templates", "push", "local", "-d", tpl.to_str().unwrap(), "--yes"]))
        .unwrap();
    let out = run_ok(&mut coder(&["create", "ws1", "-t", "local", "--yes"])).unwrap();
    assert!(out.contains("is running"), "{out}");

    // coder tunnel: TCP and UDP echo, and a refused target that must not
    // take the other forwards down.
    let (echo, uecho, refused) = (tcp_echo(), udp_echo(), free_port());
    let (l_echo, l_refused, l_udp) = (free_port(), free_port(), free_port());
    let mut tunnel = start_tunnel(coder(&[
        "tunnel",
        "ws1",
        "--tcp",
        &format!("{l_refused}:{refused}"),
        "--tcp",
        &format!("127.0.0.1:{l_echo}:{echo}"),
        "--udp",
        &format!("{l_udp}:{uecho}"),
    ]));
    let timeout = Some(Duration::from_secs(20));
    let mut r = TcpStream::connect(("127.0.0.1", l_refused)).unwrap();
    r.set_read_timeout(timeout).unwrap();
    let mut buf = Vec::new();
    // The forward closes the local connection when the workspace refuses.
    assert!(r.read_to_end(&mut buf).map(|n| n == 0).unwrap_or(true));
    let conns: Vec<_> = (0..3)
        .map(|i| {
            let mut s = TcpStream::connect(("127.0.0.1", l_echo)).unwrap();
            s.set_read_timeout(timeout).unwrap();
            let msg = format!("hello {i} ").repeat(10_000);
            s.write_all(msg.as_bytes()).unwrap();
            (s, msg)
        })
        .collect();
    for (mut s, msg) in conns {
        let mut back = vec![0u8; msg.len()];
        s.read_exact(&mut back).unwrap();
        assert_eq!(back, msg.as_bytes());
    }
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    u.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    // UDP may drop a datagram while the stream opens: resend until echoed.
    let mut echoed = false;
    for _ in 0..40 {
        u.send_to(b"datagram", ("127.0.0.1", l_udp)).unwrap();
        let mut b = [0u8; 64];
        if let Ok((n, _)) = u.recv_from(&mut b) {
            assert_eq!(&b[..n], b"datagram");
            echoed = true;
            break;
        }
    }
    assert!(echoed, "no UDP echo through the tunnel");
    let big = vec![0x42u8; 8000];
    u.send_to(&big, ("127.0.0.1", l_udp)).unwrap();
    let mut b = vec![0u8; 9000];
    let (n, _) = u.recv_from(&mut b).unwrap();
    assert_eq!(&b[..n], &big[..]);
    assert!(tunnel.try_wait().unwrap().is_none(), "the tunnel exited");
    tunnel.kill().unwrap();
    let out = tunnel.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("port {refused}")), "refused forward not reported: {err}");

    // coder ping: direct on loopback, and the time it took.
    let out =
        run_ok(&mut coder(&["ping", "ws1", "--interval", "200ms", "--output", "json"])).unwrap();
    let v = json(&out);
    assert_eq!(v["direct"], true, "{out}");
    assert_eq!(v["path"]["kind"], "direct", "{out}");
    assert!(v["time_to_direct_ms"].as_f64().is_some(), "{out}");
    assert!(
        v["pings"].as_array().unwrap().iter().any(|p| p["latency_ms"].as_f64().is_some()),
        "{out}"
    );
    let out = run_ok(&mut coder(&["ping", "ws1", "-n", "2"])).unwrap();
    assert!(out.contains("pong from ws1 via"), "{out}");
    // coder speedtest, both ways.
    for dir in ["down", "up"] {
        let out =
            run_ok(&mut coder(&["speedtest", "ws1", "-t", "1s", "--direction", dir, "-o", "json"]))
                .unwrap();
        let v = json(&out);
        assert!(v["total"]["bytes"].as_u64().unwrap() > 0, "{out}");
        assert!(v["total"]["mbits_per_sec"].as_f64().unwrap() > 0.0, "{out}");
        assert!(!v["intervals"].as_array().unwrap().is_empty(), "{out}");
    }
    let out = run_ok(&mut coder(&["speedtest", "ws1", "-t", "500ms", "--direct"])).unwrap();
    assert!(out.contains("via direct") && out.contains("Mbit/s"), "{out}");

    // coder netcheck: UDP works, the embedded STUN server maps us, the
    // embedded relay answers.
    let out = run_ok(&mut coder(&["netcheck", "--output", "json"])).unwrap();
    let v = json(&out);
    assert_eq!(v["udp"], true, "{out}");
    assert!(v["mapped_v4"].as_str().is_some_and(|m| m.starts_with("127.0.0.1:")), "{out}");
    assert_eq!(v["behind_nat"], false, "{out}");
    assert!(v["preferred_region"].as_u64().is_some(), "{out}");

    // coder ping on the relay when asked. This needs the mesh to honour
    // relay-only in path selection (no probing, no answering disco), not only
    // to announce no endpoints: otherwise the client probes the agent's
    // endpoints and goes direct anyway.
    let out = run_ok(&mut coder(&[
        "ping",
        "ws1",
        "--relay-only",
        "-n",
        "2",
        "--interval",
        "200ms",
        "-o",
        "json",
    ]))
    .unwrap();
    let v = json(&out);
    assert_eq!(v["path"]["kind"], "relay", "{out}");
    assert!(v["pings"].as_array().unwrap().iter().all(|p| p["path"]["kind"] == "relay"), "{out}");

    // One-line errors that say what to do.
    let out = coder(&["tunnel", "ws1", "--tcp", "8000-8005:9000"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.lines().count() == 1 && err.contains("differ in length"),
        "{err}"
    );
    let out = coder(&["ping", "nope"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("No workspace named \"nope\""), "{err}");

    // Without --yes and with no terminal to ask on, `coder delete` refuses
    // and deletes nothing.
    let out = coder(&["delete", "ws1"]).stdin(Stdio::null()).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("pass --yes"), "{err}");
    let shown = json(&run_ok(&mut coder(&["show", "ws1", "--output", "json"])).unwrap());
    let build = &shown["workspace"]["latest_build"];
    assert_eq!((&build["transition"], &build["status"]), (&"start".into(), &"running".into()));

    run_ok(&mut coder(&["delete", "ws1", "--yes"])).unwrap();
    let status = srv.terminate().unwrap();
    assert!(status.success());
    stop_embedded_postgres(&data);
}
