//! A TCP load balancer on loopback with one switchable backend, standing in
//! for the one in front of several `coderd` replicas: connections keep the
//! backend they were made to; new ones go to the current backend.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// The balancer; stops accepting when dropped.
pub struct Balancer {
    pub addr: SocketAddr,
    backend: Arc<Mutex<SocketAddr>>,
    stop: Arc<AtomicBool>,
}

impl Balancer {
    /// Listens on `127.0.0.1:0` and forwards to `backend`.
    pub fn start(backend: SocketAddr) -> std::io::Result<Balancer> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let addr = listener.local_addr()?;
        let backend = Arc::new(Mutex::new(backend));
        let stop = Arc::new(AtomicBool::new(false));
        let (to, stopped) = (backend.clone(), stop.clone());
        std::thread::spawn(move || {
            for inbound in listener.incoming() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let Ok(inbound) = inbound else { continue };
                let target = *to.lock().unwrap_or_else(|p| p.into_inner());
                std::thread::spawn(move || splice(inbound, target));
            }
        });
        Ok(Balancer { addr, backend, stop })
    }

    /// The balancer's URL.
    pub fn url(&self) -> url::Url {
        url::Url::parse(&format!("http://{}", self.addr)).unwrap_or_else(|_| unreachable!())
    }

    /// New connections go to `backend` from now on.
    pub fn switch(&self, backend: SocketAddr) {
        *self.backend.lock().unwrap_or_else(|p| p.into_inner()) = backend;
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

fn splice(inbound: TcpStream, target: SocketAddr) {
    let Ok(outbound) = TcpStream::connect(target) else { return };
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
