//! `coder ping`: round trips to a workspace agent over the mesh, and which
//! path (direct UDP or relay) each one took.
//!
//! Each ping is an application echo on one QUIC stream (`speedtest` service,
//! first byte `p`): we write an 8-byte sequence number, the agent writes the
//! same bytes back. That measures what a user's traffic sees (QUIC, the
//! magic socket, the relay or the direct path, the agent's scheduler), not
//! just the disco probes. Path changes come from the endpoint's
//! [`mesh::PathEvent`]s as they happen; the time to the first direct path is
//! [`mesh::MeshEndpoint::time_to_direct`].

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mesh::{MeshConnection, NodeKey, PathEvent, PeerPath, Service};
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::broadcast;

use super::output::{outln, OutputFormat};
use super::speedtest::parse_duration;
use super::ssh::find_agent;
use super::Context_;
use codersdk::coordination::PeerKind;
use codersdk::meshnet::{MeshSession, SessionConfig};
use codersdk::RelayMap;

#[derive(clap::Args, Debug)]
pub struct PingArgs {
    /// `WORKSPACE` or `WORKSPACE.AGENT`.
    pub workspace: String,
    /// How many pings. Without it: up to 10, stopping early once the path is direct.
    #[arg(short = 'n', long = "num", env = "CODER_PING_NUM")]
    pub num: Option<u32>,
    /// Time between pings (e.g. `1s`, `200ms`).
    #[arg(short = 'i', long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// How long to wait for each pong.
    #[arg(short = 't', long, default_value = "5s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Use only the relay.
    #[arg(long, env = "CODER_SSH_RELAY_ONLY")]
    pub relay_only: bool,
    #[command(flatten)]
    pub out: super::output::OutputArgs,
}

/// How data to a peer travels right now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum PathInfo {
    /// Straight over UDP to this address.
    Direct { addr: SocketAddr },
    /// Through the relay region the peer is homed in (ours when it
    /// announced none we know), as the mesh reports it.
    Relay { region_id: Option<u16>, region: Option<String> },
}

impl PathInfo {
    pub fn is_direct(&self) -> bool {
        matches!(self, PathInfo::Direct { .. })
    }
}

impl std::fmt::Display for PathInfo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PathInfo::Direct { addr } => write!(f, "direct {addr}"),
            PathInfo::Relay { region: Some(r), .. } => write!(f, "relay (region {r})"),
            PathInfo::Relay { region_id: Some(id), .. } => write!(f, "relay (region {id})"),
            PathInfo::Relay { .. } => f.write_str("relay"),
        }
    }
}

/// One mesh connection to one workspace agent, with what is needed to
/// describe its path.
pub struct AgentLink {
    pub workspace: String,
    pub agent: uuid::Uuid,
    pub session: MeshSession,
    pub conn: MeshConnection,
    pub relay_map: RelayMap,
    /// Subscribed before dialing, so no path change is missed.
    pub events: broadcast::Receiver<PathEvent>,
}

impl AgentLink {
    /// Finds the workspace's agent, joins the mesh and dials it.
    pub async fn connect(
        ctx: &Context_,
        workspace: &str,
        relay_only: bool,
    ) -> anyhow::Result<Self> {
        let client = ctx.client()?;
        let agent = find_agent(&client, workspace, false, super::ssh::Wait::Auto).await?;
        let token = ctx.token.clone().context("You are not logged in. Run `coder login <url>`.")?;
        let relay_map = client.relay_map().await.context("fetch the relay map")?;
        let sc = SessionConfig::default().with_relay_only(relay_only);
        let session = MeshSession::join(
            client.url(),
            &token,
            PeerKind::SingleAgent(agent.id),
            &relay_map,
            sc,
        )
        .await
        .context("join the mesh")?;
        let events = session.endpoint().path_events();
        let conn = session.dial_agent(agent.id, Duration::from_secs(30)).await?;
        Ok(AgentLink {
            workspace: workspace.to_owned(),
            agent: agent.id,
            session,
            conn,
            relay_map,
            events,
        })
    }

    pub fn peer(&self) -> NodeKey {
        self.conn.peer().key
    }

    /// The path data to the agent takes now.
    pub fn path(&self) -> PathInfo {
        let endpoint = self.session.endpoint();
        let region_id = match endpoint.path(&self.peer()) {
            Some(PeerPath::Direct(addr)) => return PathInfo::Direct { addr },
            Some(PeerPath::Relay(region)) => region,
            // Not (or no longer) a peer, or a path this CLI does not know.
            _ => endpoint.home_relay(),
        };
        let region = region_id.map(|id| match self.relay_map.regions.get(&id) {
            Some(r) if !r.region_code.is_empty() => r.region_code.clone(),
            _ => id.to_string(),
        });
        PathInfo::Relay { region_id, region }
    }

    /// Closes the connection so the agent learns at once, not at its idle timeout.
    pub async fn close(self) {
        self.conn.quic().close(0u32.into(), b"done");
        let _ = tokio::time::timeout(Duration::from_secs(1), self.session.endpoint().close()).await;
    }

    /// How the first direct path was found, if one was.
    pub fn direct_mechanism(&self) -> Option<mesh::DirectMechanism> {
        self.session.endpoint().direct_mechanism(&self.peer())
    }

    /// How long the first direct path took to find, if one was found.
    pub fn time_to_direct(&self) -> Option<Duration> {
        self.session.endpoint().time_to_direct(&self.peer())
    }

    /// Path changes for this agent since the last call, as one-line messages.
    pub fn drain_path_changes(&mut self) -> Vec<String> {
        let peer = self.peer();
        let mut out = Vec::new();
        loop {
            match self.events.try_recv() {
                Ok(PathEvent::RelayToDirect { peer: p, addr, rtt }) if p == peer => {
                    let after = self
                        .time_to_direct()
                        .map(|d| format!(" after {}", ms(d)))
                        .unwrap_or_default();
                    out.push(format!(
                        "path switched to direct {addr}{after} (probe round trip {})",
                        ms(rtt)
                    ));
                }
                Ok(PathEvent::DirectChanged { peer: p, from, to, .. }) if p == peer => {
                    out.push(format!("direct path moved from {from} to {to}"));
                }
                Ok(PathEvent::DirectToRelay { peer: p }) if p == peer => {
                    out.push("direct path stopped answering; back on the relay".to_owned());
                }
                Ok(_) | Err(broadcast::error::TryRecvError::Lagged(_)) => {}
                Err(_) => return out,
            }
        }
    }
}

/// A duration in milliseconds, to the microsecond, for JSON.
pub fn millis(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

/// A duration as milliseconds with two decimals.
pub fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

/// The hint shown when a connection stays on the relay.
pub fn relay_hint(relay_only: bool) -> &'static str {
    if relay_only {
        "the relay was asked for (--relay-only / CODER_SSH_RELAY_ONLY)"
    } else {
        "UDP may be blocked between you and the workspace, or both sides are \
         behind NATs that map each destination differently (hard NAT); run `coder netcheck` to check"
    }
}

#[derive(Debug, Serialize)]
struct PingRecord {
    seq: u32,
    latency_ms: Option<f64>,
    path: PathInfo,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct PingReport {
    workspace: String,
    pings: Vec<PingRecord>,
    /// The path after the last ping.
    path: PathInfo,
    direct: bool,
    time_to_direct_ms: Option<f64>,
    /// How the direct path was found: `STUN`, `peer-reflexive`, `LAN`,
    /// `birthday` or `port mapping`.
    direct_via: Option<String>,
    /// Path changes seen while pinging, in order.
    path_changes: Vec<String>,
}

/// One echo on an open ping stream: write `seq`, read until its echo comes
/// back (a late echo of an earlier, timed-out ping is skipped).
async fn echo<S, R>(send: &mut S, recv: &mut R, seq: u64) -> std::io::Result<()>
where
    S: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    send.write_all(&seq.to_be_bytes()).await?;
    send.flush().await?;
    loop {
        let mut buf = [0u8; 8];
        recv.read_exact(&mut buf).await?;
        if u64::from_be_bytes(buf) == seq {
            return Ok(());
        }
    }
}

pub async fn run(ctx: &Context_, args: PingArgs) -> anyhow::Result<()> {
    let json = args.out.output == OutputFormat::Json;
    let mut link = AgentLink::connect(ctx, &args.workspace, args.relay_only).await?;
    let ws = link.workspace.clone();
    let count = args.num.unwrap_or(10);
    let mut records = Vec::new();
    let mut path_changes = Vec::new();
    let mut stream = None;
    for seq in 1..=count {
        if seq > 1 {
            tokio::time::sleep(args.interval).await;
        }
        if stream.is_none() {
            let (mut send, recv) = link.conn.open(Service::Speedtest).await.with_context(|| {
                format!("the connection to {ws} closed; is the workspace still running? (`coder show {ws}`)")
            })?;
            let mut recv = recv;
            send.write_all(b"p").await.context("start the ping stream")?;
            // Warm up (the agent accepts the stream), so the first ping times
            // only a round trip; a late echo is skipped by its number.
            let _ = tokio::time::timeout(args.timeout, echo(&mut send, &mut recv, 0)).await;
            stream = Some((send, recv));
        }
        let Some((send, recv)) = stream.as_mut() else { continue };
        let start = Instant::now();
        let result = tokio::time::timeout(args.timeout, echo(send, recv, u64::from(seq))).await;
        let latency = start.elapsed();
        for change in link.drain_path_changes() {
            if !json {
                outln!("{change}")?;
            }
            path_changes.push(change);
        }
        let path = link.path();
        let record = match result {
            Ok(Ok(())) => {
                if !json {
                    outln!("pong from {ws} via {path} in {}", ms(latency))?;
                }
                PingRecord { seq, latency_ms: Some(millis(latency)), path, error: None }
            }
            Ok(Err(e)) => {
                // The stream broke (an agent restart?): open a new one next time.
                stream = None;
                let error = format!("ping stream failed: {e}");
                if !json {
                    outln!("{error}")?;
                }
                PingRecord { seq, latency_ms: None, path, error: Some(error) }
            }
            Err(_) => {
                let error = format!("no pong within {:?}", args.timeout);
                if !json {
                    outln!("{error}")?;
                }
                PingRecord { seq, latency_ms: None, path, error: Some(error) }
            }
        };
        let direct = record.path.is_direct() && record.error.is_none();
        records.push(record);
        if args.num.is_none() && direct {
            break;
        }
    }
    let path = link.path();
    let report = PingReport {
        workspace: ws.clone(),
        direct: path.is_direct(),
        time_to_direct_ms: link.time_to_direct().map(millis),
        direct_via: link.direct_mechanism().map(|m| m.to_string()),
        path: path.clone(),
        pings: records,
        path_changes,
    };
    let answered = report.pings.iter().filter(|r| r.error.is_none()).count();
    if json {
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
    } else {
        match (&path, link.time_to_direct()) {
            (PathInfo::Direct { addr }, Some(t)) => {
                let via = link.direct_mechanism().map(|m| format!(" via {m}")).unwrap_or_default();
                outln!(
                    "✔ direct connection to {ws} ({addr}), found{via} {} after connecting",
                    ms(t)
                )?
            }
            (PathInfo::Direct { addr }, None) => outln!("✔ direct connection to {ws} ({addr})")?,
            (PathInfo::Relay { .. }, _) => {
                let why = if args.relay_only { "" } else { "no direct path yet; " };
                outln!("{ws} is reached through the {path}: {why}{}", relay_hint(args.relay_only))?
            }
        }
    }
    link.close().await;
    if answered == 0 && count > 0 {
        bail!("No pong from {ws} in {count} tries; check the workspace with `coder show {ws}`.");
    }
    Ok(())
}
