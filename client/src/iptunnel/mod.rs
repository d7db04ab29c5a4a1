//! `coder tunnel --ip`: every workspace agent the user may reach, at its
//! mesh address, over WireGuard.
//!
//! One mesh session with user-scoped coordination (`/api/v2/tailnet`): a
//! tunnel is opened to every agent of every running workspace the user owns,
//! and closed when the workspace goes (the list is re-read every
//! [`IpTunnelConfig::refresh`]). Packets reach WireGuard either
//!
//! - through a TUN device ([`tun`]), when we may create one (root or
//!   `CAP_NET_ADMIN`): the kernel's own TCP/IP, so every program works, and
//!   names resolve through a DNS responder at [`dns::DNS_ADDR`]; or
//! - through a userspace TCP/IP stack ([`mesh::netstack`]) behind a SOCKS5
//!   proxy ([`socks`]) that resolves the names itself.
//!
//! Either way the name table is printed in `/etc/hosts` format whenever it
//! changes.

pub mod dns;
pub mod names;
pub mod socks;
pub mod tun;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use mesh::netstack::Netstack;
use tokio::sync::watch;
use uuid::Uuid;

use codersdk::coordination::PeerKind;
use codersdk::meshnet::{MeshSession, SessionConfig};
use codersdk::Client;

use crate::cli::{out, outln};

use self::names::{AgentEntry, Names};

/// How packets reach the mesh.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// A TUN device of this name; SOCKS5 on `fallback` if it cannot be created.
    Tun { name: String, fallback: SocketAddr },
    /// Only the SOCKS5 proxy, on this address.
    Socks5(SocketAddr),
}

/// How to run the tunnel.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct IpTunnelConfig {
    pub mode: Mode,
    pub relay_only: bool,
    /// How often the workspace list is re-read.
    pub refresh: Duration,
}

/// Runs the tunnel until `shutdown` resolves.
pub async fn run(
    client: Client,
    token: &str,
    config: IpTunnelConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let me = client.me().await.context("who am I")?;
    let relay_map = client.relay_map().await.context("fetch the relay map")?;
    let sc = SessionConfig::default().with_relay_only(config.relay_only);
    let session = MeshSession::join(client.url(), token, PeerKind::Client, &relay_map, sc)
        .await
        .context("join the mesh")?;
    let ours = session.endpoint().node().addresses;
    let (tx, rx) = session.endpoint().wireguard().context("start WireGuard")?;
    // The receiver goes to the TUN device or to the userspace stack.
    let mut rx = Some(rx);
    let (names_tx, names_rx) = watch::channel(Names::default());

    let mut _tun_task = None;
    let socks_addr = match &config.mode {
        Mode::Socks5(addr) => Some(*addr),
        Mode::Tun { name, fallback } if !tun::may_create() => {
            eprintln!(
                "Cannot create a TUN device without root (CAP_NET_ADMIN). Serving a SOCKS5 proxy on {fallback} instead."
            );
            Some(*fallback)
        }
        Mode::Tun { name, fallback } => match tun::create(name, ours) {
            Ok(dev) => {
                let dev_name = dev.name().unwrap_or_else(|_| name.clone());
                outln!("TUN device {dev_name}: this machine is {} on the mesh", ours.ipv6)?;
                outln!(
                    "Names resolve at {} (e.g. `resolvectl dns {dev_name} {} && resolvectl domain {dev_name} ~{}`)",
                    dns::DNS_ADDR,
                    dns::DNS_ADDR,
                    names::TLD
                )?;
                let names = names_rx.clone();
                let (tx, rx) = (tx.clone(), rx.take().context("WireGuard receiver taken")?);
                _tun_task =
                    Some(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
                        if let Err(e) = tun::run(dev, tx, rx, names).await {
                            eprintln!("The TUN device failed: {e}");
                        }
                    })));
                None
            }
            Err(e) if tun::is_permission_error(&e) => {
                eprintln!(
                    "Cannot create a TUN device without root (CAP_NET_ADMIN): {e}. Serving a SOCKS5 proxy on {fallback} instead."
                );
                Some(*fallback)
            }
            Err(e) if tun::is_busy(&e) => bail!(
                "the TUN device {name} is in use (another `coder tunnel --ip`?); stop it or pass --tun-name"
            ),
            Err(e) => return Err(e).context("create the TUN device"),
        },
    };
    // The stack lives as long as this function; the proxy task with it.
    let mut _stack = None;
    let mut _proxy = None;
    if let Some(addr) = socks_addr {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| {
            format!("cannot listen on {addr} for SOCKS5; pick another with --socks5")
        })?;
        let rx = rx.take().context("WireGuard receiver taken")?;
        let udp = socks::SocksUdp::default();
        let stack = Arc::new(Netstack::spawn(ours, Some(Box::new(udp.clone())), tx.clone(), rx));
        let proxy = socks::Proxy {
            stack: stack.clone(),
            names: names_rx.clone(),
            mesh_ip: ours.ipv6.into(),
            tx: tx.clone(),
            udp,
        };
        _proxy = Some(tokio_util::task::AbortOnDropHandle::new(tokio::spawn(socks::serve(
            listener, proxy,
        ))));
        _stack = Some(stack);
        outln!("SOCKS5 proxy on {addr} (hostnames resolved by the proxy); this machine is {} on the mesh", ours.ipv6)?;
    }
    outln!("Ready; press Ctrl-C to stop.")?;

    let watch = watch_workspaces(&client, &session, &me.username, &names_tx, config.refresh);
    tokio::select! {
        r = watch => r?,
        () = shutdown => {}
    }
    let _ = tokio::time::timeout(Duration::from_secs(1), session.endpoint().close()).await;
    Ok(())
}

/// Keeps a tunnel open to every agent of the user's running workspaces and
/// the names table current, printing it when it changes.
async fn watch_workspaces(
    client: &Client,
    session: &MeshSession,
    me: &str,
    names: &watch::Sender<Names>,
    every: Duration,
) -> anyhow::Result<()> {
    let mut open: BTreeMap<Uuid, AgentEntry> = BTreeMap::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut printed = false;
    loop {
        tick.tick().await;
        let agents = match running_agents(client).await {
            Ok(a) => a,
            Err(e) => {
                // The deployment may be restarting: keep what we have.
                tracing::warn!(error = %e, "cannot list workspaces");
                continue;
            }
        };
        let now: BTreeMap<Uuid, AgentEntry> = agents.into_iter().map(|a| (a.id, a)).collect();
        for id in now.keys().filter(|id| !open.contains_key(id)) {
            session.coordinator().add_tunnel(*id);
        }
        for id in open.keys().filter(|id| !now.contains_key(id)) {
            session.coordinator().remove_tunnel(*id);
        }
        let table = Names::new(&now.values().cloned().collect::<Vec<_>>(), me);
        if !printed || table != *names.borrow() {
            outln!("# coder tunnel --ip: {} agent(s)", now.len())?;
            out!("{}", table.hosts())?;
            outln!("# end")?;
            printed = true;
        }
        names.send_replace(table);
        open = now;
    }
}

/// Every agent of the user's workspaces whose latest build is running.
async fn running_agents(client: &Client) -> anyhow::Result<Vec<AgentEntry>> {
    let mut out = Vec::new();
    for ws in client.workspaces(false).await? {
        if ws.latest_build.status != codersdk::WorkspaceStatus::Running {
            continue;
        }
        for resource in client.workspace_build_resources(ws.latest_build.id).await? {
            for agent in resource.agents {
                out.push(AgentEntry {
                    owner: ws.owner_name.clone(),
                    workspace: ws.name.clone(),
                    agent: agent.name,
                    id: agent.id,
                });
            }
        }
    }
    Ok(out)
}
