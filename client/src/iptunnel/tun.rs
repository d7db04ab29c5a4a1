//! The TUN device of `coder tunnel --ip`: the client's mesh address with the
//! whole mesh prefix on-link, packets to and from WireGuard, and the DNS
//! responder answered in place (its address is inside the prefix, so
//! queries come out of the device like any other packet).

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use bytes::Bytes;
use mesh::netstack::packet::{self, Transport};
use mesh::wg::{WgReceiver, WgSender, MTU};
use mesh::MeshAddresses;
use tokio::sync::watch;
use tun_rs::{AsyncDevice, DeviceBuilder};

use super::dns::{self, DNS_ADDR};
use super::names::Names;

/// Creates the device: our IPv6 mesh address as a /48 (a route for the whole
/// mesh prefix), our IPv4 one as a /10 if we have one, the tunnel's MTU.
pub fn create(name: &str, addresses: MeshAddresses) -> io::Result<AsyncDevice> {
    let mtu = u16::try_from(MTU).unwrap_or(1280);
    let mut builder = DeviceBuilder::new().name(name).mtu(mtu).ipv6(addresses.ipv6, 48u8);
    if let Some(v4) = addresses.ipv4 {
        builder = builder.ipv4(v4, 10u8, None);
    }
    builder.build_async()
}

/// Whether creating a TUN device failed for lack of privileges.
pub fn is_permission_error(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(1)
}

/// Moves packets between the device and WireGuard until either fails.
pub async fn run(
    dev: AsyncDevice,
    tx: WgSender,
    mut rx: WgReceiver,
    names: watch::Receiver<Names>,
) -> io::Result<()> {
    let dev = Arc::new(dev);
    let outbound = {
        let dev = dev.clone();
        async move {
            let mut buf = vec![0u8; usize::from(u16::MAX)];
            loop {
                let n = dev.recv(&mut buf).await?;
                let Some(packet) = buf.get(..n) else { continue };
                if let Some(answer) = dns_reply(packet, &names) {
                    dev.send(&answer).await?;
                    continue;
                }
                // No route (a kernel's router solicitation, a stale address): drop.
                if let Err(e) = tx.send(packet) {
                    tracing::trace!(%e, "packet from the TUN device not sent");
                }
            }
        }
    };
    let inbound = async move {
        let mut batch: Vec<Bytes> = Vec::with_capacity(64);
        while rx.recv_many(&mut batch, 64).await > 0 {
            for packet in batch.drain(..) {
                dev.send(&packet).await?;
            }
        }
        Ok::<(), io::Error>(())
    };
    tokio::select! {
        r = outbound => r,
        r = inbound => r,
    }
}

/// The answer to a DNS query addressed to [`DNS_ADDR`], as an IP packet.
fn dns_reply(packet: &[u8], names: &watch::Receiver<Names>) -> Option<Vec<u8>> {
    let Some(Transport::Udp { src, dst, payload: (at, len) }) = packet::transport(packet) else {
        return None;
    };
    if dst != SocketAddr::new(IpAddr::V6(DNS_ADDR), 53) {
        return None;
    }
    let answer = dns::answer(packet.get(at..at + len)?, &names.borrow())?;
    packet::udp(dst, src, &answer)
}
