//! A stand-in for coderd's binary download endpoint: serves a fake `coder-agent` (a
//! shell script that records its environment and idles) at `/bin/coder-agent-*`, so a
//! template's init script can be followed all the way to the agent's `exec`.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Result;

/// The fake agent: writes what it was started with to `$HOME/fake-agent.out`.
pub const FAKE_AGENT: &str = r#"#!/bin/sh
{
  echo "url=$CODER_AGENT_URL"
  echo "token=$CODER_AGENT_TOKEN"
  echo "auth=$CODER_AGENT_AUTH"
  echo "pwd=$(pwd)"
} > "$HOME/fake-agent.out.tmp"
mv "$HOME/fake-agent.out.tmp" "$HOME/fake-agent.out"
exec sleep 300
"#;

/// Serves [`FAKE_AGENT`] until dropped.
pub struct FakeCoderd {
    pub addr: SocketAddr,
    pub requests: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeCoderd {
    /// Listens on `bind` (e.g. `127.0.0.1:0`).
    pub fn start(bind: &str) -> Result<Self> {
        let listener = TcpListener::bind(bind)?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let thread = {
            let (stop, requests) = (stop.clone(), requests.clone());
            std::thread::spawn(move || serve(listener, &stop, &requests))
        };
        Ok(Self { addr, requests, stop, thread: Some(thread) })
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

impl Drop for FakeCoderd {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn serve(listener: TcpListener, stop: &AtomicBool, requests: &Mutex<Vec<String>>) {
    while !stop.load(Ordering::Relaxed) {
        let Ok((stream, _)) = listener.accept() else {
            std::thread::sleep(Duration::from_millis(20));
            continue;
        };
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
        let mut reader = BufReader::new(&stream);
        let mut request_line = String::new();
        if reader.read_line(&mut request_line).is_err() {
            continue;
        }
        // Skip the headers.
        let mut line = String::new();
        while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
            line.clear();
        }
        let path = request_line.split_whitespace().nth(1).unwrap_or("").to_owned();
        requests.lock().unwrap().push(path.clone());
        let response = if path.starts_with("/bin/coder-agent-") {
            format!(
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n{FAKE_AGENT}",
                FAKE_AGENT.len()
            )
        } else {
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n".to_owned()
        };
        let _ = (&stream).write_all(response.as_bytes());
    }
}
