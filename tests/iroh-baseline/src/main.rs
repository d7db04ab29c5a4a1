//! `iroh-baseline BYTES REPS [NETNS_A ADDR_A NETNS_B ADDR_B]`: two iroh
//! endpoints in this process on 127.0.0.1, or each bound to its address inside
//! its network namespace (relay mode disabled, no address lookup), one connection dialed
//! to the listener's direct address, then REPS transfers of BYTES on a fresh
//! unidirectional stream each (after one 8 MiB warm-up), timed from opening the
//! stream until the receiver has read the last byte. Prints one line of JSON:
//! `{"chunk":262144,"mib_per_s":[…]}`. The same shape as `bench quic`'s other
//! transfers, written in the same 256 KiB chunks (`chunk` says which, so the
//! bench can refuse a build that differs).
//! Built with mimalloc, as our binaries are.

use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::time::Instant;

use anyhow::Context;
use iroh::endpoint::{presets, Connection};
use iroh::{Endpoint, EndpointAddr, RelayMode};

/// The allocator our binaries use, so that the comparison is of the QUIC
/// stacks, not of allocators (with glibc's malloc iroh measured the same).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const ALPN: &[u8] = b"bench/iroh-baseline/1";
/// The sender's write size: the bench's own (`tests/src/bin/bench/net.rs`).
const CHUNK: usize = 256 * 1024;

async fn endpoint(addr: SocketAddr) -> anyhow::Result<Endpoint> {
    Ok(Endpoint::builder(presets::Minimal)
        .relay_mode(RelayMode::Disabled)
        .alpns(vec![ALPN.to_vec()])
        .bind_addr(addr)?
        .bind()
        .await?)
}

/// An endpoint bound to `addr`; with `netns`, its sockets are made on a thread
/// that entered that namespace (a socket stays in the namespace it was made in).
fn endpoint_in(netns: Option<&str>, addr: SocketAddr) -> anyhow::Result<Endpoint> {
    let runtime = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        std::thread::scope(|s| {
            s.spawn(|| {
                if let Some(netns) = netns {
                    let path = format!("/run/netns/{netns}");
                    let file = std::fs::File::open(&path).with_context(|| format!("open {path}"))?;
                    // SAFETY: setns on this thread only, with a valid descriptor.
                    let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                    anyhow::ensure!(rc == 0, "setns {netns}: {}", std::io::Error::last_os_error());
                }
                runtime.block_on(endpoint(addr))
            })
            .join()
            .map_err(|_| anyhow::anyhow!("bind thread panicked"))?
        })
    })
}

async fn transfer(a: &Connection, b: &Connection, len: u64) -> anyhow::Result<f64> {
    let start = Instant::now();
    let send = async {
        let mut s = a.open_uni().await?;
        let chunk = vec![0x5au8; CHUNK];
        let mut left = len;
        while left > 0 {
            let n = usize::try_from(left).unwrap_or(CHUNK).min(CHUNK);
            s.write_all(&chunk[..n]).await?;
            left -= n as u64;
        }
        s.finish()?;
        s.stopped().await?;
        anyhow::Ok(())
    };
    let recv = async {
        let mut r = b.accept_uni().await?;
        let mut got = 0u64;
        while let Some(chunk) = r.read_chunk(usize::MAX).await? {
            got += chunk.len() as u64;
        }
        anyhow::ensure!(got == len, "received {got} of {len} bytes");
        anyhow::Ok(start.elapsed())
    };
    let ((), elapsed) = tokio::try_join!(send, recv)?;
    Ok(len as f64 / (1024.0 * 1024.0) / elapsed.as_secs_f64())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let bytes: u64 = args.next().context("usage: iroh-baseline BYTES REPS")?.parse()?;
    let reps: usize = args.next().context("usage: iroh-baseline BYTES REPS")?.parse()?;
    let rest: Vec<String> = args.collect();
    let (a, b) = match rest.as_slice() {
        [] => {
            let local = SocketAddr::from(([127, 0, 0, 1], 0));
            (endpoint_in(None, local)?, endpoint_in(None, local)?)
        }
        [ns_a, addr_a, ns_b, addr_b] => (
            endpoint_in(Some(ns_a), SocketAddr::new(addr_a.parse()?, 0))?,
            endpoint_in(Some(ns_b), SocketAddr::new(addr_b.parse()?, 0))?,
        ),
        _ => anyhow::bail!("usage: iroh-baseline BYTES REPS [NETNS_A ADDR_A NETNS_B ADDR_B]"),
    };
    let addr = b.bound_sockets().into_iter().fold(EndpointAddr::new(b.id()), |addr, socket| {
        addr.with_ip_addr(socket)
    });
    let (ca, cb) = tokio::try_join!(
        async { Ok::<_, anyhow::Error>(a.connect(addr, ALPN).await?) },
        async { Ok::<_, anyhow::Error>(b.accept().await.context("no incoming")?.await?) },
    )?;
    transfer(&ca, &cb, bytes.min(8 << 20)).await.context("warm-up")?;
    let mut out = Vec::with_capacity(reps);
    for _ in 0..reps {
        out.push(transfer(&ca, &cb, bytes).await?);
    }
    println!(
        "{{\"chunk\":{CHUNK},\"mib_per_s\":[{}]}}",
        out.iter().map(|v| format!("{v:.3}")).collect::<Vec<_>>().join(",")
    );
    ca.close(0u32.into(), b"done");
    a.close().await;
    b.close().await;
    Ok(())
}
