//! The real `coder-agent` stops within a bounded time when told to, whatever
//! the network does: here the coordinator becomes a black hole (connections
//! are accepted and kept, nothing is ever answered) after the agent is up,
//! and then the agent gets SIGTERM.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use coordinator::testutil::{seed_agents, TestServer};

/// A TCP proxy in front of the coordinator that can turn into a black hole:
/// from then on, bytes in either direction on every connection (old and new)
/// are read and dropped, and no connection is ever closed.
struct BlackHole {
    addr: SocketAddr,
    swallowing: Arc<AtomicBool>,
}

impl BlackHole {
    fn start(backend: SocketAddr) -> BlackHole {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let swallowing = Arc::new(AtomicBool::new(false));
        let flag = swallowing.clone();
        std::thread::spawn(move || {
            for inbound in listener.incoming().flatten() {
                let flag = flag.clone();
                std::thread::spawn(move || {
                    let Ok(outbound) = TcpStream::connect(backend) else { return };
                    let (in2, out2) = (inbound.try_clone().unwrap(), outbound.try_clone().unwrap());
                    let up_flag = flag.clone();
                    std::thread::spawn(move || pipe(inbound, outbound, &up_flag));
                    pipe(out2, in2, &flag);
                });
            }
        });
        BlackHole { addr, swallowing }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn swallow_everything(&self) {
        self.swallowing.store(true, Ordering::SeqCst);
    }
}

/// Copies `from` to `to` until EOF; drops what it reads while `swallowing`.
fn pipe(mut from: TcpStream, mut to: TcpStream, swallowing: &AtomicBool) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) if swallowing.load(Ordering::SeqCst) => {}
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

/// Waits for a line of the agent's log containing `needle`.
fn wait_for_line(lines: &mpsc::Receiver<String>, log: &mut Vec<String>, needle: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while !log.iter().any(|l| l.contains(needle)) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => log.push(line),
            Err(_) => panic!("no {needle:?} in the agent's log within 60 s:\n{}", log.join("\n")),
        }
    }
}

/// The rest of the log, once the agent has exited (its stderr ends).
fn drain(lines: &mpsc::Receiver<String>, log: &mut Vec<String>) {
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(5)) {
        log.push(line);
    }
}

#[test]
fn sigterm_while_the_coordinator_is_a_black_hole_exits_promptly() {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    let rt = rt.unwrap();
    let (srv, token) = rt.block_on(async {
        let srv = TestServer::start().await.unwrap();
        let owner = srv.owner().await.unwrap();
        let me = owner.me().await.unwrap().id;
        let agent = seed_agents(&srv.db.pool, me, 1).await.unwrap().remove(0);
        (srv, agent.token)
    });
    let backend: SocketAddr =
        format!("{}:{}", srv.url.host_str().unwrap(), srv.url.port().unwrap()).parse().unwrap();
    let proxy = BlackHole::start(backend);

    let mut child = Command::new(tests::binary("coder-agent").unwrap())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", std::env::temp_dir())
        .env("CODER_AGENT_URL", proxy.url())
        .env("CODER_AGENT_TOKEN", &token)
        .env("CODER_AGENT_LOG_FILTER", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (line_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if line_tx.send(line).is_err() {
                return;
            }
        }
    });
    let mut log = Vec::new();
    // Up: the (no) start scripts ran and `ready` was reported.
    wait_for_line(&lines, &mut log, "start scripts finished");

    proxy.swallow_everything();
    let pid = nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap());
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    let (exit_tx, exited) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        let _ = exit_tx.send(status);
        child
    });
    let status = match exited.recv_timeout(Duration::from_secs(20)) {
        Ok(status) => status.unwrap(),
        Err(_) => {
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            let _ = waiter.join();
            drain(&lines, &mut log);
            panic!(
                "the agent was still running 20 s after SIGTERM with the coordinator unreachable:\n{}",
                log.join("\n")
            );
        }
    };
    drain(&lines, &mut log);
    assert!(status.success(), "the agent exited with {status}:\n{}", log.join("\n"));
    assert!(log.iter().any(|l| l.contains("shutting down")), "{}", log.join("\n"));
    drop(srv);
}
