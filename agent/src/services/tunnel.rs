//! The `tcp:<port>` and `udp:<port>` streams of `coder tunnel`: each is
//! forwarded to that port on `127.0.0.1` in the workspace. (SSH's own `-L`
//! and `-R` forwards are [`crate::ssh`]'s.) A target that cannot be reached
//! resets the stream with [`mesh::reset::REFUSED`].

use std::time::Duration;

/// TCP forward: the stream is spliced to a connection to `127.0.0.1:port`.
pub(crate) async fn tcp(port: u16, mut send: quinn::SendStream, recv: quinn::RecvStream) {
    match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
        Ok(mut tcp) => {
            let _ = tcp.set_nodelay(true);
            let (mut r, mut w) = tcp.split();
            if let Err(e) = mesh::splice(&mut r, &mut w, send, recv).await {
                tracing::debug!(port, error = %e, "forward ended with an error");
            }
        }
        Err(e) => {
            tracing::debug!(port, error = %e, "forward target refused");
            let _ = send.reset(mesh::reset::REFUSED);
        }
    }
}

/// How long a UDP forward stream may carry nothing either way before the
/// agent closes it (the client closes idle streams sooner).
const UDP_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

/// UDP forward: datagrams framed as `len:u16 BE` + payload go to
/// `127.0.0.1:port` from a socket of this stream's own, and its replies come
/// back framed the same way, until the client finishes the stream or it idles.
pub(crate) async fn udp(port: u16, mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let socket = match tokio::net::UdpSocket::bind(("127.0.0.1", 0)).await {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot bind a UDP socket for a forward");
            let _ = send.reset(mesh::reset::REFUSED);
            return;
        }
    };
    if let Err(e) = socket.connect(("127.0.0.1", port)).await {
        tracing::debug!(port, error = %e, "UDP forward target unusable");
        let _ = send.reset(mesh::reset::REFUSED);
        return;
    }
    // Reading a frame is not cancel-safe, so each direction runs as one
    // long-lived future; a shared clock of the last activity drives the timeout.
    let start = tokio::time::Instant::now();
    let last = std::sync::atomic::AtomicU64::new(0);
    let touch = || {
        let ms = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
        last.store(ms, std::sync::atomic::Ordering::Relaxed);
    };
    let to_target = async {
        while let Some(d) = read_datagram(&mut recv).await {
            touch();
            // A refused send (ICMP unreachable) is packet loss, as UDP goes.
            let _ = socket.send(&d).await;
        }
    };
    let from_target = async {
        let mut reply = vec![0u8; usize::from(u16::MAX)];
        loop {
            match socket.recv(&mut reply).await {
                Ok(n) => {
                    touch();
                    let Some(payload) = reply.get(..n) else { continue };
                    if write_datagram(&mut send, payload).await.is_err() {
                        return;
                    }
                }
                // ECONNREFUSED from an earlier send: nobody listens (yet); keep going.
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {}
                Err(e) => {
                    tracing::debug!(port, error = %e, "UDP forward receive failed");
                    return;
                }
            }
        }
    };
    let idle = async {
        loop {
            let since = Duration::from_millis(last.load(std::sync::atomic::Ordering::Relaxed));
            let quiet = start.elapsed().saturating_sub(since);
            if quiet >= UDP_IDLE_TIMEOUT {
                return;
            }
            tokio::time::sleep(UDP_IDLE_TIMEOUT - quiet).await;
        }
    };
    tokio::select! {
        () = to_target => {}
        () = from_target => {}
        () = idle => {}
    }
    let _ = send.finish();
}

/// One framed datagram, or `None` when the stream ends or breaks.
async fn read_datagram(recv: &mut quinn::RecvStream) -> Option<Vec<u8>> {
    let mut len = [0u8; 2];
    recv.read_exact(&mut len).await.ok()?;
    let mut payload = vec![0u8; usize::from(u16::from_be_bytes(len))];
    recv.read_exact(&mut payload).await.ok()?;
    Some(payload)
}

async fn write_datagram(
    send: &mut quinn::SendStream,
    payload: &[u8],
) -> Result<(), quinn::WriteError> {
    // Replies come from a u16::MAX buffer, so the length always fits.
    let len = u16::try_from(payload.len()).unwrap_or(u16::MAX);
    let mut frame = Vec::with_capacity(payload.len() + 2);
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(payload.get(..usize::from(len)).unwrap_or(payload));
    send.write_all(&frame).await
}

/// How many `tcp:`/`udp:` forwards are open now (`coder tunnel`, and apps
/// coderd proxies); the stats report it, and coderd counts it as activity
/// that keeps the workspace from its autostop. Clones share the count.
#[derive(Debug, Clone, Default)]
pub(crate) struct OpenForwards(std::sync::Arc<std::sync::atomic::AtomicU64>);

impl OpenForwards {
    pub(crate) fn count(&self) -> u64 {
        self.0.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Counts one forward as open until the guard drops.
    pub(crate) fn open(&self) -> OpenForward {
        self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OpenForward(self.clone())
    }
}

/// One open forward (see [`OpenForwards::open`]).
pub(crate) struct OpenForward(OpenForwards);

impl Drop for OpenForward {
    fn drop(&mut self) {
        (self.0).0.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}
