//! Group `coord`: coordinator fan-out at scale. A real `coderd` (release
//! build, embedded Postgres) and N real coordination WebSockets from this
//! process: N/2 agents and N/2 clients, client *i* holding a tunnel to agent
//! *i* (the shape of a fleet where each workspace has one user connected).
//! Agents are seeded straight into the database, so no terraform runs.
//!
//! Measured: the latency from an agent publishing a new node until its
//! client's coordination stream yields it, one update at a time and with
//! every agent updating at once; and the growth of `coderd`'s resident
//! memory per connected peer.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use codersdk::coordination::{Coordinator, PeerKind, PeerUpdate};
use codersdk::{Client, CreateFirstUserRequest, LoginWithPasswordRequest};
use coordinator::postgres::{Cluster, ClusterConfig, DATABASE};
use coordinator::testutil::{node, seed_agents};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use url::Url;

use crate::report::{Better, Goal, Row, Section};
use crate::stats::percentile;
use crate::Ctx;

/// How many connections are opened at once.
const CONNECT_CONCURRENCY: usize = 32;

pub async fn run(ctx: &Ctx) -> anyhow::Result<Section> {
    let sizes: &[usize] = if ctx.quick { &[20] } else { &[1_000, 10_000] };
    let samples = if ctx.quick { 5 } else { 200 };
    let mut section = Section::new(
        "Coordinator fan-out (`bench coord`)",
        &format!(
            "A `coderd server` (embedded Postgres, this build's profile) and N coordination \
             WebSockets opened from the bench process through the real client library \
             (`codersdk::coordination`): N/2 agents (tokens of agents seeded in the database) \
             and N/2 clients of one user, client *i* holding a tunnel to agent *i*; every \
             peer publishes a node. *One at a time*: {samples} agents, one after the other, \
             publish a changed node; latency is from `update_node` until the paired client's \
             update stream yields it (two WebSocket hops with the coordinator's core and \
             fan-out in between). *All at once*: every agent publishes a changed \
             node in the same instant; latency per client from that instant. *Memory*: \
             `coderd`'s VmRSS once all N peers are connected and told each other's nodes, \
             minus its VmRSS with one pair connected, ÷ (N − 2), twice: with \
             `MIMALLOC_PURGE_DELAY=0` (freed memory leaves VmRSS at once, so the figure \
             counts live memory; the latency figures come from this run) and with \
             mimalloc's default purge delay, as `coderd` runs in production (freed pages \
             stay resident a while, so what startup and connecting freed still counts). \
             Each N and each setting gets a fresh `coderd`. One replica; cross-replica fan-out adds a Postgres NOTIFY round trip."
        ),
    );
    for &n in sizes {
        let default = measure(n, samples, PurgeDelay::Default)
            .await
            .with_context(|| format!("{n} peers, mimalloc's default purge delay"))?;
        let r = measure(n, samples, PurgeDelay::Zero)
            .await
            .with_context(|| format!("{n} peers, MIMALLOC_PURGE_DELAY=0"))?;
        let Some(lat) = &r.latency else { bail!("{n} peers: no latency figures") };
        section.rows.push(Row::new(
            format!("update → peer, one at a time, {n} peers (p50)"),
            lat.one.0,
            "ms",
            Better::Lower,
        ));
        let p99 = Row::new(
            format!("update → peer, one at a time, {n} peers (p99)"),
            lat.one.1,
            "ms",
            Better::Lower,
        );
        section.rows.push(if n >= 10_000 { p99.goal(Goal::AtMost(50.0)) } else { p99 });
        section.rows.push(Row::new(
            format!("update → peer, all {} agents at once (p50)", n / 2),
            lat.burst.0,
            "ms",
            Better::Lower,
        ));
        section.rows.push(Row::new(
            format!("update → peer, all {} agents at once (p99)", n / 2),
            lat.burst.1,
            "ms",
            Better::Lower,
        ));
        for (figures, setting) in
            [(&r, "`MIMALLOC_PURGE_DELAY=0`"), (&default, "mimalloc's default purge delay")]
        {
            let row = Row::new(
                format!("coderd RSS per connected peer, {n} peers, {setting}"),
                figures.rss_per_peer_kib,
                "KiB",
                Better::Lower,
            );
            section.rows.push(if n >= 10_000 { row.goal(Goal::AtMost(16.0)) } else { row });
        }
        for (figures, setting) in
            [(&r, "`MIMALLOC_PURGE_DELAY=0`"), (&default, "mimalloc's default purge delay")]
        {
            section.notes.push(format!(
                "{n} peers, {setting}: connecting them all took {:.1} s ({:.0} connections/s, \
                 {CONNECT_CONCURRENCY} at a time); coderd's VmRSS went from {:.1} MiB to {:.1} MiB.",
                figures.connect.as_secs_f64(),
                (n as f64) / figures.connect.as_secs_f64().max(1e-9),
                figures.rss_before_kib / 1024.0,
                figures.rss_after_kib / 1024.0,
            ));
        }
        section.notes.push(format!(
            "{n} peers, CPU while measuring one at a time: {}; during the burst: {}.",
            lat.one_cpu, lat.burst_cpu
        ));
    }
    section.notes.push(
        "Bench side: the N client sockets live in the bench process, on the same two cores \
         as `coderd` and Postgres, so latencies under load include the bench's own work."
            .into(),
    );
    section.notes.push(
        "Memory history (10,000 peers on this machine): 149 KiB per peer with tungstenite's \
         default 128 KiB read chunk per socket (allocated zeroed, so resident); 23.7 KiB with \
         a 4 KiB chunk (`api/coordinate.rs`); 19.7 KiB with the queued messages boxed; then \
         the core's per-peer record of what it told (a `BTreeMap` node of 11 nodes, ~2.7 KiB, \
         for one neighbour) became a vector sized to fit, each connection stopped keeping its \
         `hello`'s relay map (a JSON tree) after sending it, and its outbound queue's slots \
         shrank to 16 bytes (`coordination/core.rs`, `conn.rs`, `replica.rs`)."
            .into(),
    );
    section.notes.push(
        "Latency history (10,000 peers, one at a time, p99): 210 ms while every connection \
         re-authorized itself against Postgres every 3 s (about 5,000 queries/s, on the two \
         cores the fan-out needs); now a replica re-authorizes all its connections in one \
         sweep of two queries, every 3 s and when a database trigger announces a revocation \
         (`coordination/reauth.rs`, `docs/protocols/coordination.md`)."
            .into(),
    );
    Ok(section)
}

/// How `coderd`'s mimalloc returns freed memory to the system.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PurgeDelay {
    /// `MIMALLOC_PURGE_DELAY=0`: at once, so VmRSS counts live memory only.
    Zero,
    /// Unset, as in production; only the memory figure is measured.
    Default,
}

struct Latency {
    /// p50, p99 in ms.
    one: (f64, f64),
    burst: (f64, f64),
    /// Where the CPU went while measuring one at a time, and the burst.
    one_cpu: CpuShare,
    burst_cpu: CpuShare,
}

struct Figures {
    /// Measured with [`PurgeDelay::Zero`] only.
    latency: Option<Latency>,
    rss_per_peer_kib: f64,
    rss_before_kib: f64,
    rss_after_kib: f64,
    connect: Duration,
}

/// A client received its agent's node; the endpoint port tells which one.
struct Received {
    client: usize,
    port: u16,
    at: Instant,
}

async fn measure(n: usize, samples: usize, purge: PurgeDelay) -> anyhow::Result<Figures> {
    let pairs = n / 2;
    let tmp = tests::tempdir()?;
    let data = tmp.path().join("data");
    // mimalloc keeps freed pages for a second before it returns them; without
    // that delay, VmRSS counts live memory only, and startup's freed buffers
    // cannot make the one-pair baseline larger than the whole.
    let env: &[(&str, &str)] = match purge {
        PurgeDelay::Zero => &[("MIMALLOC_PURGE_DELAY", "0")],
        PurgeDelay::Default => &[],
    };
    let srv = tests::Coderd::spawn_env(&data, "127.0.0.1:0", &[], env)?;
    let samples = (purge == PurgeDelay::Zero).then_some(samples);
    let result = measure_on(&srv, &data, pairs, samples).await;
    drop(srv);
    tests::stop_embedded_postgres(&data);
    result
}

/// Creates the first user of a fresh `coderd` and logs in as it: its
/// session token and id.
pub async fn first_owner(url: &Url) -> anyhow::Result<(String, uuid::Uuid)> {
    let api = Client::new(url.clone());
    api.create_first_user(&CreateFirstUserRequest {
        email: "bench@example.com".into(),
        username: "bench".into(),
        password: "bench-password".into(),
    })
    .await?;
    let login = api
        .login_with_password(&LoginWithPasswordRequest {
            email: "bench@example.com".into(),
            password: "bench-password".into(),
            ..Default::default()
        })
        .await?;
    let owner = api.with_token(login.session_token.clone()).me().await?.id;
    Ok((login.session_token, owner))
}

/// A connection pool to the embedded Postgres of the `coderd` whose data
/// directory is `data` (the cluster handle keeps it reachable).
pub async fn embedded_db(data: &std::path::Path) -> anyhow::Result<(Cluster, sqlx::PgPool)> {
    let config = ClusterConfig { dir: data.join("postgres"), unsafe_no_fsync: false };
    let cluster = tokio::task::spawn_blocking(move || Cluster::start(&config)).await??;
    let db = coordinator::connect_db(cluster.connect_options(DATABASE), 2).await?;
    Ok((cluster, db))
}

async fn measure_on(
    srv: &tests::Coderd,
    data: &std::path::Path,
    pairs: usize,
    samples: Option<usize>,
) -> anyhow::Result<Figures> {
    let url = srv.url.clone();
    let (session_token, owner) = first_owner(&url).await?;

    // Agents go straight into coderd's embedded database.
    let (_cluster, db) = embedded_db(data).await?;
    let agents = seed_agents(&db, owner, pairs).await?;
    db.close().await;

    let pid = srv.child.id();
    let (tx, mut rx) = mpsc::unbounded_channel::<Received>();
    let mut tasks = JoinSet::new();
    let mut handles = Vec::with_capacity(pairs);
    // The first pair is the baseline of the memory figure.
    let mut connected = 0;
    let mut rss_before = 0.0;
    let start = Instant::now();
    let mut batch = futures::stream::iter(agents.iter().enumerate())
        .map(|(i, agent)| {
            let (url, token) = (url.clone(), session_token.clone());
            async move { pair(&url, &token, i, agent).await }
        })
        .buffered(CONNECT_CONCURRENCY);
    let mut connect_started = start;
    while let Some(p) = batch.next().await {
        let (agent, mut agent_updates, client, mut client_updates, agent_node_id) = p?;
        let i = handles.len();
        tasks.spawn(async move { while agent_updates.recv().await.is_some() {} });
        let tx = tx.clone();
        tasks.spawn(async move {
            while let Some(u) = client_updates.recv().await {
                if let PeerUpdate::Node { node, .. } = u {
                    let port = node.endpoints.first().map_or(0, |e| e.port());
                    let _ = tx.send(Received { client: i, port, at: Instant::now() });
                }
            }
        });
        handles.push((agent, client, agent_node_id));
        if handles.len() == 1 {
            wait_for(&mut rx, 1, 1, Duration::from_secs(30)).await?;
            connected = 1;
            rss_before = vm_rss_kib(pid)?;
            connect_started = Instant::now();
        }
    }
    drop(batch);
    // Every client hears its agent's first node (port 1).
    wait_for(&mut rx, pairs - connected, 1, Duration::from_secs(600)).await?;
    let connect = connect_started.elapsed();
    let rss_after = vm_rss_kib(pid)?;
    let peers = (2 * pairs).saturating_sub(2).max(1);
    let mut figures = Figures {
        latency: None,
        rss_per_peer_kib: (rss_after - rss_before) / peers as f64,
        rss_before_kib: rss_before,
        rss_after_kib: rss_after,
        connect,
    };
    let Some(samples) = samples else {
        drop(handles);
        tasks.shutdown().await;
        return Ok(figures);
    };

    let mut one = Vec::with_capacity(samples);
    let step = (pairs / samples).max(1);
    let cpu = Cpu::now(pid, data)?;
    for s in 0..samples.min(pairs) {
        let i = s * step;
        let port = 10_000 + u16::try_from(s)?;
        let (agent, _, id) = &handles[i];
        let sent = Instant::now();
        agent.update_node(node(*id, port));
        let got = wait_for(&mut rx, 1, port, Duration::from_secs(30)).await?;
        one.push(got[0].at.duration_since(sent).as_secs_f64() * 1e3);
    }
    let one_cpu = Cpu::now(pid, data)?.since(&cpu);

    let port = 60_000;
    let cpu = Cpu::now(pid, data)?;
    let sent = Instant::now();
    for (agent, _, id) in &handles {
        agent.update_node(node(*id, port));
    }
    let got = wait_for(&mut rx, pairs, port, Duration::from_secs(600)).await?;
    let burst_cpu = Cpu::now(pid, data)?.since(&cpu);
    let burst: Vec<f64> =
        got.iter().map(|r| r.at.duration_since(sent).as_secs_f64() * 1e3).collect();
    let mut clients: Vec<usize> = got.iter().map(|r| r.client).collect();
    clients.sort_unstable();
    clients.dedup();
    if clients.len() != pairs {
        bail!("{} clients heard the burst, not {pairs}", clients.len());
    }
    drop(handles);
    tasks.shutdown().await;

    figures.latency = Some(Latency {
        one: (percentile(&one, 50.0), percentile(&one, 99.0)),
        burst: (percentile(&burst, 50.0), percentile(&burst, 99.0)),
        one_cpu,
        burst_cpu,
    });
    Ok(figures)
}

type Pair = (
    Coordinator,
    codersdk::coordination::PeerUpdates,
    Coordinator,
    codersdk::coordination::PeerUpdates,
    mesh::NodeId,
);

/// Connects agent `i` and its client, publishes both nodes (endpoint port 1),
/// and opens the client's tunnel.
async fn pair(
    url: &Url,
    user_token: &str,
    i: usize,
    agent: &coordinator::testutil::SeededAgent,
) -> anyhow::Result<Pair> {
    let (a, mut a_updates) = Coordinator::connect(url, &agent.token, PeerKind::Agent)
        .await
        .with_context(|| format!("agent {i}"))?;
    let Some(PeerUpdate::Connected { node_id: agent_id, .. }) = a_updates.recv().await else {
        bail!("agent {i}: no hello");
    };
    a.update_node(node(agent_id, 1));
    let (c, mut c_updates) = Coordinator::connect(url, user_token, PeerKind::Client)
        .await
        .with_context(|| format!("client {i}"))?;
    let Some(PeerUpdate::Connected { node_id: client_id, .. }) = c_updates.recv().await else {
        bail!("client {i}: no hello");
    };
    c.update_node(node(client_id, 1));
    c.add_tunnel(agent.id);
    Ok((a, a_updates, c, c_updates, agent_id))
}

/// Waits for `count` receipts of a node with endpoint `port` (others are dropped).
async fn wait_for(
    rx: &mut mpsc::UnboundedReceiver<Received>,
    count: usize,
    port: u16,
    limit: Duration,
) -> anyhow::Result<Vec<Received>> {
    let mut got = Vec::with_capacity(count);
    let wait = async {
        while got.len() < count {
            match rx.recv().await {
                Some(r) if r.port == port => got.push(r),
                Some(_) => {}
                None => bail!("the update streams ended"),
            }
        }
        Ok(())
    };
    match tokio::time::timeout(limit, wait).await {
        Ok(r) => r?,
        Err(_) => bail!("only {} of {count} updates (port {port}) within {limit:?}", got.len()),
    }
    Ok(got)
}

/// CPU seconds used so far by `coderd`, its embedded Postgres (postmaster
/// and backends) and this bench process, at one instant.
struct Cpu {
    at: Instant,
    coderd: f64,
    postgres: f64,
    bench: f64,
}

/// Each process's CPU use over an interval, in percent of one core.
struct CpuShare {
    coderd: f64,
    postgres: f64,
    bench: f64,
}

impl std::fmt::Display for CpuShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "coderd {:.0} %, its Postgres {:.0} %, the bench {:.0} % of a core",
            self.coderd, self.postgres, self.bench
        )
    }
}

impl Cpu {
    fn now(coderd: u32, data: &std::path::Path) -> anyhow::Result<Cpu> {
        Ok(Cpu {
            at: Instant::now(),
            coderd: crate::agent::cpu_seconds(coderd)?,
            postgres: postgres_cpu_seconds(&data.join("postgres"))?,
            bench: crate::agent::cpu_seconds(std::process::id())?,
        })
    }

    fn since(&self, before: &Cpu) -> CpuShare {
        let secs = self.at.duration_since(before.at).as_secs_f64().max(1e-9);
        let pct = |a: f64, b: f64| (a - b).max(0.0) / secs * 100.0;
        CpuShare {
            coderd: pct(self.coderd, before.coderd),
            postgres: pct(self.postgres, before.postgres),
            bench: pct(self.bench, before.bench),
        }
    }
}

/// CPU seconds of the postmaster serving `dir` and its children (backends
/// that exited meanwhile are not counted; the pool keeps its own open).
fn postgres_cpu_seconds(dir: &std::path::Path) -> anyhow::Result<f64> {
    let mut procs = Vec::new();
    for entry in std::fs::read_dir("/proc")?.flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        let Some((_, rest)) = stat.rsplit_once(')') else { continue };
        let ppid = rest.split_whitespace().nth(1).and_then(|s| s.parse::<u32>().ok());
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        procs.push((pid, ppid, cmdline));
    }
    let dir = dir.to_string_lossy();
    let postmaster = procs.iter().find(|(_, _, cmd)| {
        let cmd = String::from_utf8_lossy(cmd);
        cmd.split('\0').next().is_some_and(|bin| bin.ends_with("postgres")) && cmd.contains(&*dir)
    });
    let Some(&(postmaster, _, _)) = postmaster else { bail!("no postmaster for {dir}") };
    Ok(procs
        .iter()
        .filter(|(pid, ppid, _)| *pid == postmaster || *ppid == Some(postmaster))
        .filter_map(|(pid, _, _)| crate::agent::cpu_seconds(*pid).ok())
        .sum())
}

fn vm_rss_kib(pid: u32) -> anyhow::Result<f64> {
    Ok(crate::agent::vm_rss_mib(pid)? * 1024.0)
}
