//! A TCP load balancer standing in for the one in front of several
//! `coderd` replicas: connections keep the backend they were made to. With
//! one switchable backend ([`Balancer::start`]) new connections go to the
//! current one; in round-robin mode ([`Balancer::round_robin`]) each new
//! connection goes to the next backend, skipping one that refuses (a dead
//! replica), as a balancer with health checks does.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Where new connections go.
#[derive(Debug)]
struct Backends {
    all: Vec<SocketAddr>,
    next: usize,
    /// Overrides the rotation while set.
    pinned: Option<SocketAddr>,
}

impl Backends {
    /// The order to try backends in for the next connection.
    fn next_order(&mut self) -> Vec<SocketAddr> {
        if let Some(p) = self.pinned {
            return vec![p];
        }
        let n = self.all.len().max(1);
        let start = self.next % n;
        self.next = self.next.wrapping_add(1);
        self.all.iter().cycle().skip(start).take(self.all.len()).copied().collect()
    }
}

/// The balancer; stops accepting when dropped.
pub struct Balancer {
    pub addr: SocketAddr,
    backends: Arc<Mutex<Backends>>,
    stop: Arc<AtomicBool>,
}

impl Balancer {
    /// Listens on `127.0.0.1:0` and forwards to `backend`.
    pub fn start(backend: SocketAddr) -> std::io::Result<Balancer> {
        Self::serve(SocketAddr::from(([127, 0, 0, 1], 0)), vec![backend])
    }

    /// Listens on `bind` and sends each new connection to the next of
    /// `backends`. Call it inside a namespace (`Host::in_netns`) to balance
    /// there: its threads stay in the namespace they were started in.
    pub fn round_robin(bind: SocketAddr, backends: Vec<SocketAddr>) -> std::io::Result<Balancer> {
        Self::serve(bind, backends)
    }

    fn serve(bind: SocketAddr, all: Vec<SocketAddr>) -> std::io::Result<Balancer> {
        let listener = TcpListener::bind(bind)?;
        let addr = listener.local_addr()?;
        let backends = Arc::new(Mutex::new(Backends { all, next: 0, pinned: None }));
        let stop = Arc::new(AtomicBool::new(false));
        let (to, stopped) = (backends.clone(), stop.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(inbound) = inbound else { continue };
                let order = to.lock().unwrap_or_else(|p| p.into_inner()).next_order();
                std::thread::spawn(move || splice(inbound, &order));
            }
        });
        Ok(Balancer { addr, backends, stop })
    }

    /// The balancer's URL.
    pub fn url(&self) -> url::Url {
        url::Url::parse(&format!("http://{}", self.addr)).unwrap_or_else(|_| unreachable!())
    }

    /// New connections go to `backend` from now on.
    pub fn switch(&self, backend: SocketAddr) {
        self.backends.lock().unwrap_or_else(|p| p.into_inner()).all = vec![backend];
    }

    /// New connections go to `backend` until `pin(None)` resumes the rotation.
    pub fn pin(&self, backend: Option<SocketAddr>) {
        self.backends.lock().unwrap_or_else(|p| p.into_inner()).pinned = backend;
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn splice(inbound: TcpStream, order: &[SocketAddr]) {
    let connect = |a| TcpStream::connect_timeout(a, Duration::from_secs(2)).ok();
    let Some(outbound) = order.iter().find_map(connect) else { return };
    let (Ok(in2), Ok(out2)) = (inbound.try_clone(), outbound.try_clone()) else { return };
    let up = std::thread::spawn(move || pipe(inbound, outbound));
    pipe(out2, in2);
    let _ = up.join();
}

fn pipe(mut from: TcpStream, mut to: TcpStream) {
    let mut buf = [0u8; 16 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}
