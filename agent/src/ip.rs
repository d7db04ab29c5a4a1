//! The workspace at its mesh address: WireGuard into a userspace TCP/IP
//! stack that accepts TCP on any port and forwards each connection to the
//! same port on `127.0.0.1`; UDP likewise, per peer flow; ICMP echo is
//! answered by the stack. What `coder tunnel --ip` reaches.

use std::net::{Ipv4Addr, SocketAddr};

use mesh::netstack::{LoopbackUdp, Netstack, TcpIncoming};
use mesh::MeshEndpoint;
use tokio::task::JoinSet;

/// Starts the stack on the endpoint's WireGuard; serve it with [`serve`].
pub fn start(endpoint: &MeshEndpoint) -> Result<(Netstack, TcpIncoming), mesh::WireGuardStarted> {
    let (tx, rx) = endpoint.wireguard()?;
    let udp = Box::new(LoopbackUdp::new(tx.clone()));
    Ok(Netstack::spawn_accepting(endpoint.node().addresses, udp, tx, rx))
}

/// Forwards every accepted connection to `127.0.0.1:<port>` until the stack stops.
pub async fn serve(mut incoming: TcpIncoming) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            c = incoming.accept() => {
                let Some(conn) = c else { return };
                conns.spawn(async move {
                    let target = SocketAddr::from((Ipv4Addr::LOCALHOST, conn.local.port()));
                    match tokio::net::TcpStream::connect(target).await {
                        Ok(mut tcp) => {
                            let _ = tcp.set_nodelay(true);
                            let mut stream = conn.stream;
                            let _ = tokio::io::copy_bidirectional(&mut stream, &mut tcp).await;
                        }
                        Err(e) => tracing::debug!(%target, remote = %conn.remote, %e, "IP forward target refused"),
                    }
                });
            }
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
        }
    }
}
