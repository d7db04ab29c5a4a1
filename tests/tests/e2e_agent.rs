//! The agent's lifecycle and services end to end, with a real coordinator,
//! relay, terraform and `coder-agent` process: a failing startup script ends in
//! `start_error` with its output stored as agent logs (and the workspace stays
//! usable); `-L` and `-R` forwards of the real OpenSSH client carry data both
//! ways over the mesh; `coder ports` lists what listens in the workspace.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tests::{login_first_user, require_programs, run_ok, stop_embedded_postgres, tempdir, Coderd};

/// Replaces the first line of the `local` template's startup script.
const FAILING_SCRIPT: &str =
    "echo \"preparing the workspace\"\n    echo \"boom: cannot fetch dotfiles\" >&2\n    exit 3";

/// A TCP echo server on 127.0.0.1; returns its port.
fn echo_server() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 16 * 1024];
                while let Ok(n @ 1..) = conn.read(&mut buf) {
                    if conn.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            });
        }
    });
    port
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Connects to `port` (retrying until the forward listens) and checks that
/// 1 MiB comes back unchanged.
fn echo_through(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = loop {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(c) => break c,
            Err(e) => {
                assert!(Instant::now() < deadline, "forward on {port} never listened: {e}");
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    };
    conn.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let sent: Vec<u8> =
        (0..1u32 << 20).map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8).collect();
    let mut writer = conn.try_clone().unwrap();
    let to_send = sent.clone();
    let write = std::thread::spawn(move || writer.write_all(&to_send));
    let mut got = vec![0u8; sent.len()];
    conn.read_exact(&mut got).unwrap();
    write.join().unwrap().unwrap();
    assert!(got == sent, "echo through port {port} changed the bytes");
}

/// Kills the child (an `ssh -N` forward) when dropped.
struct Forward(Child);

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn startup_failure_forwards_and_ports_end_to_end() {
    if !require_programs(&["terraform", "ssh", "curl"]) {
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

    // The local template with a startup script that fails.
    let tpl = tmp.path().join("tpl");
    run_ok(&mut coder(&["templates", "init", tpl.to_str().unwrap(), "--id", "local"])).unwrap();
    let main_tf = tpl.join("main.tf");
    let source = std::fs::read_to_string(&main_tf).unwrap();
    let failing = source.replacen("set -e", FAILING_SCRIPT, 1);
    assert_ne!(failing, source, "the template's startup script changed shape");
    std::fs::write(&main_tf, failing).unwrap();
    run_ok(&mut coder(&["templates", "push", "failing", "-d", tpl.to_str().unwrap(), "--yes"]))
        .unwrap();
    run_ok(&mut coder(&["create", "ws", "-t", "failing", "--yes"])).unwrap();

    // Lifecycle: start_error, with the script's output stored.
    let deadline = Instant::now() + Duration::from_secs(60);
    let agent = loop {
        let show: serde_json::Value =
            serde_json::from_str(&run_ok(&mut coder(&["show", "ws", "--output", "json"])).unwrap())
                .unwrap();
        let agent = show["resources"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["agents"].as_array().cloned().unwrap_or_default())
            .next()
            .expect("the workspace has an agent");
        if agent["lifecycle_state"] == "start_error" {
            break agent;
        }
        let state = &agent["lifecycle_state"];
        assert!(
            ["created", "starting"].contains(&state.as_str().unwrap_or_default()),
            "unexpected lifecycle {state}"
        );
        assert!(Instant::now() < deadline, "still {state} after 60 s");
        std::thread::sleep(Duration::from_millis(200));
    };
    let token = std::fs::read_to_string(cfg.join("session")).unwrap();
    let logs_url = srv
        .url
        .join(&format!("api/v2/workspaceagents/{}/logs", agent["id"].as_str().unwrap()))
        .unwrap();
    let logs = run_ok(
        Command::new("curl")
            .args(["-fsS", "-H", &format!("Coder-Session-Token: {}", token.trim())])
            .arg(logs_url.as_str()),
    )
    .unwrap();
    let logs: Vec<serde_json::Value> = serde_json::from_str(&logs).unwrap();
    let outputs: Vec<&str> = logs.iter().filter_map(|l| l["output"].as_str()).collect();
    assert!(outputs.contains(&"preparing the workspace"), "{outputs:?}");
    assert!(outputs.contains(&"boom: cannot fetch dotfiles"), "{outputs:?}");
    assert!(
        !outputs.iter().any(|o| o.contains("is up")),
        "the script went on after exit 3: {outputs:?}"
    );

    // The workspace stays reachable: OpenSSH forwards through config-ssh.
    let ssh_config = tmp.path().join("ssh_config");
    run_ok(&mut coder(&["config-ssh", "--ssh-config-file", ssh_config.to_str().unwrap(), "--yes"]))
        .unwrap();
    let echo = echo_server();
    let forward = |flag: &str, listen: u16| {
        let child = Command::new("ssh")
            .arg("-F")
            .arg(&ssh_config)
            .args(["-N", "-o", "ExitOnForwardFailure=yes", flag])
            .arg(format!("127.0.0.1:{listen}:127.0.0.1:{echo}"))
            .arg("coder.ws")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        Forward(child)
    };
    // -L: a listener here, the connection made by the agent.
    let local = free_port();
    let _l = forward("-L", local);
    echo_through(local);
    // -R: a listener in the workspace (the agent), the connection made here.
    let remote = free_port();
    let _r = forward("-R", remote);
    echo_through(remote);

    // `coder ports` sees the -R listener the agent holds, with its process.
    let ports: Vec<serde_json::Value> =
        serde_json::from_str(&run_ok(&mut coder(&["ports", "ws", "--output", "json"])).unwrap())
            .unwrap();
    let port = ports
        .iter()
        .find(|p| p["port"] == remote)
        .unwrap_or_else(|| panic!("port {remote} missing from {ports:?}"));
    assert_eq!(port["addresses"], serde_json::json!(["127.0.0.1"]));
    assert_eq!(port["process_name"], "coder-agent");

    drop((_l, _r));
    run_ok(&mut coder(&["delete", "ws", "--yes"])).unwrap();
    let status = srv.terminate().unwrap();
    assert!(status.success());
    stop_embedded_postgres(&data);
}
