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
    // Offload: the kernel hands over TCP segments of up to 64 KiB (split here
    // into MTU-sized packets) and takes coalesced ones back, so a bulk
    // transfer costs one read or write per 64 KiB instead of per packet.
    let mut builder =
        DeviceBuilder::new().name(name).mtu(mtu).offload(true).ipv6(addresses.ipv6, 48u8);
    if let Some(v4) = addresses.ipv4 {
        builder = builder.ipv4(v4, 10u8, None);
    }
    builder.build_async()
}

/// Whether creating a TUN device failed for lack of privileges.
pub fn is_permission_error(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::PermissionDenied || e.raw_os_error() == Some(1)
}

/// Whether this process may configure network devices (`CAP_NET_ADMIN` in
/// its effective set). Asked first because the kernel answers an
/// unprivileged attempt on a name another tunnel holds with "busy", not
/// "permission denied".
pub fn may_create() -> bool {
    const CAP_NET_ADMIN: u32 = 12;
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else { return true };
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_none_or(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}

/// Whether creating the device failed because another process holds it.
pub fn is_busy(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::ResourceBusy || e.raw_os_error() == Some(16)
}

/// Packets per batch each way (tun-rs's recommended batch).
const BATCH: usize = tun_rs::IDEAL_BATCH_SIZE;

/// Room in front of each packet written to the device for the virtio header
/// offload puts there.
const HEADROOM: usize = tun_rs::VIRTIO_NET_HDR_LEN;

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
            let mut raw = vec![0u8; HEADROOM + usize::from(u16::MAX)];
            let mut bufs = vec![vec![0u8; MTU + HEADROOM]; BATCH];
            let mut sizes = vec![0usize; BATCH];
            let mut answers = Writer::default();
            loop {
                let n = match dev.recv_multiple(&mut raw, &mut bufs, &mut sizes, 0).await {
                    Ok(n) => n,
                    Err(e) if is_packet_error(&e) => {
                        tracing::debug!(%e, "packet from the TUN device dropped");
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                let packets = bufs.iter().zip(&sizes).take(n).filter_map(|(b, &len)| b.get(..len));
                let mut dns = Vec::new();
                let to_peers = packets.filter(|p| match dns_reply(p, &names) {
                    Some(answer) => {
                        dns.push(Bytes::from(answer));
                        false
                    }
                    None => true,
                });
                // No route (a kernel's router solicitation, a stale address): dropped.
                tx.send_batch(to_peers);
                if !dns.is_empty() {
                    answers.write(&dev, &dns).await?;
                }
            }
        }
    };
    let inbound = async move {
        let mut batch: Vec<Bytes> = Vec::with_capacity(BATCH);
        let mut writer = Writer::default();
        while rx.recv_many(&mut batch, BATCH).await > 0 {
            writer.write(&dev, &batch).await?;
            batch.clear();
        }
        Ok::<(), io::Error>(())
    };
    tokio::select! {
        r = outbound => r,
        r = inbound => r,
    }
}

/// Writes packets to the device, coalescing TCP segments of one flow (GRO)
/// when offload is on.
#[derive(Default)]
struct Writer {
    gro: tun_rs::GROTable,
    bufs: Vec<Vec<u8>>,
}

impl Writer {
    async fn write(&mut self, dev: &AsyncDevice, packets: &[Bytes]) -> io::Result<()> {
        if self.bufs.len() < packets.len() {
            self.bufs.resize_with(packets.len(), Vec::new);
        }
        for (buf, packet) in self.bufs.iter_mut().zip(packets) {
            buf.clear();
            buf.resize(HEADROOM, 0);
            buf.extend_from_slice(packet);
        }
        let bufs = self.bufs.get_mut(..packets.len()).unwrap_or_default();
        match dev.send_multiple(&mut self.gro, bufs, HEADROOM).await {
            Err(e) if is_packet_error(&e) => {
                tracing::debug!(%e, "packets to the TUN device dropped");
                Ok(())
            }
            r => r.map(drop),
        }
    }
}

/// An error about one batch's packets (tun-rs's offload checks: a bad
/// virtio header, a segment too large), as opposed to the device failing.
fn is_packet_error(e: &io::Error) -> bool {
    e.raw_os_error().is_none()
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
