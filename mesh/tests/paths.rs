//! One QUIC connection survives its path changing under it: direct UDP through
//! a NAT, the NAT going dark (fallback to the relay), and the NAT coming back.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{config, connect, relay, transfer_on};
use mesh::{Destination, MeshEndpoint, PathEvent};
use tokio::net::UdpSocket;
use tokio::sync::broadcast;
use tokio::task::JoinSet;
use tokio_util::task::AbortOnDropHandle;

/// A full-cone NAT on loopback in front of `inner`: a datagram to `public` from
/// X reaches `inner` from a socket kept for X, and `inner`'s replies to that
/// socket leave `public` toward X. While `blocked`, it drops everything.
struct Nat {
    public: SocketAddr,
    blocked: Arc<AtomicBool>,
    _task: AbortOnDropHandle<()>,
}

impl Nat {
    async fn new(inner: SocketAddr) -> anyhow::Result<Self> {
        let public = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let blocked = Arc::new(AtomicBool::new(false));
        let addr = public.local_addr()?;
        let task = tokio::spawn(run_nat(public, inner, blocked.clone()));
        Ok(Self { public: addr, blocked, _task: AbortOnDropHandle::new(task) })
    }

    fn block(&self, blocked: bool) {
        self.blocked.store(blocked, Ordering::Relaxed);
    }
}

async fn run_nat(public: Arc<UdpSocket>, inner: SocketAddr, blocked: Arc<AtomicBool>) {
    let mut flows: HashMap<SocketAddr, Arc<UdpSocket>> = HashMap::new();
    let mut replies = JoinSet::new();
    let mut buf = vec![0u8; 65536];
    while let Ok((n, from)) = public.recv_from(&mut buf).await {
        if blocked.load(Ordering::Relaxed) {
            continue;
        }
        let flow = match flows.get(&from) {
            Some(flow) => flow.clone(),
            None => {
                let Ok(flow) = UdpSocket::bind("127.0.0.1:0").await else { continue };
                let flow = Arc::new(flow);
                flows.insert(from, flow.clone());
                replies.spawn(reply_flow(flow.clone(), public.clone(), from, blocked.clone()));
                flow
            }
        };
        let _ = flow.send_to(&buf[..n], inner).await;
    }
}

/// Carries `inner`'s replies on `flow` back out of `public` to `to`.
async fn reply_flow(
    flow: Arc<UdpSocket>,
    public: Arc<UdpSocket>,
    to: SocketAddr,
    blocked: Arc<AtomicBool>,
) {
    let mut buf = vec![0u8; 65536];
    while let Ok((n, _)) = flow.recv_from(&mut buf).await {
        if !blocked.load(Ordering::Relaxed) {
            let _ = public.send_to(&buf[..n], to).await;
        }
    }
}

/// Waits for the first event matching `pred`.
async fn wait_for(
    events: &mut broadcast::Receiver<PathEvent>,
    pred: impl Fn(&PathEvent) -> bool,
) -> PathEvent {
    loop {
        match events.recv().await {
            Ok(event) if pred(&event) => return event,
            Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => panic!("path events closed"),
        }
    }
}

#[tokio::test]
async fn connection_survives_direct_to_relay_and_back() -> anyhow::Result<()> {
    let (_server, url) = relay().await?;
    let fast = |id| {
        let mut c = config(id, Some(&url), false);
        // Announce nothing ourselves: b is reachable only through its NAT.
        c.bind = "0.0.0.0:0".parse().unwrap();
        c.announce_local = false;
        c.path.heartbeat_interval = Duration::from_millis(100);
        c.path.probe_interval = Duration::from_millis(300);
        c.path.trust_timeout = Duration::from_millis(500);
        c.path.ping_timeout = Duration::from_millis(300);
        c
    };
    let a = MeshEndpoint::bind(fast(1)).await?;
    let b = MeshEndpoint::bind(fast(2)).await?;
    let b_inner = SocketAddr::from(([127, 0, 0, 1], b.local_addr()?.port()));
    let nat = Nat::new(b_inner).await?;
    let mut b_node = b.node();
    b_node.endpoints = vec![nat.public];
    a.upsert_peer(&b_node)?;
    b.upsert_peer(&a.node())?;
    let mut events = a.path_events();
    let is_direct = |e: &PathEvent| matches!(e, PathEvent::RelayToDirect { .. });

    let steps = async {
        let (ca, cb) = connect(&a, &b).await?;
        transfer_on(&ca, &cb, 1 << 20).await?;
        wait_for(&mut events, is_direct).await;
        assert_eq!(a.destination(&b_node.key), Some(Destination::Direct(nat.public)));

        nat.block(true);
        wait_for(&mut events, |e| matches!(e, PathEvent::DirectToRelay { .. })).await;
        transfer_on(&ca, &cb, 1 << 20).await?;
        assert_eq!(a.destination(&b_node.key), Some(Destination::Relay(b_node.key)));

        nat.block(false);
        wait_for(&mut events, is_direct).await;
        transfer_on(&ca, &cb, 1 << 20).await?;
        anyhow::Ok(())
    };
    tokio::time::timeout(Duration::from_secs(25), steps).await??;
    Ok(())
}
