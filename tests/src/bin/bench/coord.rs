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

mod cross;

/// How many connections are opened at once.
const CONNECT_CONCURRENCY: usize = 32;

/// Bursts per deployment; the figures are the medians of their p50s and p99s.
const BURSTS: usize = 5;

/// Peers of the cross-replica measurement (half agents on one replica, half
/// clients on the other).
const CROSS_PEERS: usize = 1_000;

pub async fn run(ctx: &Ctx) -> anyhow::Result<Section> {
    // `BENCH_COORD_PEERS=10000` (a comma list) measures only those sizes,
    // with only the `MIMALLOC_PURGE_DELAY=0` deployment and no cross-replica
    // figures: a quicker loop while working on the coordinator.
    let only: Option<Vec<usize>> = std::env::var("BENCH_COORD_PEERS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect());
    let sizes: Vec<usize> = match &only {
        _ if ctx.quick => vec![20],
        Some(sizes) => sizes.clone(),
        None => vec![1_000, 10_000],
    };
    let samples = if ctx.quick { 5 } else { 200 };
    let mut section = Section::new(
        "Coordinator fan-out (`bench coord`)",
        &format!(
            "A `coderd server` (embedded Postgres, this build's profile) and N coordination \
             WebSockets opened from the bench process through the real client library \
             (`codersdk::coordination`): N/2 agents (tokens of agents seeded in the database) \
             and N/2 clients of one user, client *i* holding a tunnel to agent *i*; every \
             peer publishes a node. The agents' connections live on a tokio runtime of their \
             own (two threads), the clients' on the bench's. *One at a time*: {samples} \
             agents, one after the other, publish a changed node; latency is from \
             `update_node` until the paired client's update stream yields it (two WebSocket \
             hops with the coordinator's core and fan-out in between). *All at once*: every \
             agent publishes a changed node in the same instant: the nodes are built (keys \
             generated) first, then the clock starts and the bench hands each agent's client \
             library its node (a watch update that wakes the agent's connection task, which \
             encodes the node and writes it to its socket); latency per client from that \
             instant, and from the moment its agent's client library wrote the node to the \
             socket. The first figure includes the agents' own encoding and writing of N/2 \
             frames and the clients' reading of N/2, on the same two cores as `coderd` and \
             Postgres; the second leaves out each agent's wait for its turn to write. \
             {BURSTS} bursts, each figure the median of their p50s or p99s. *Memory*: \
             `coderd`'s VmRSS once all N peers are connected and told each other's nodes, \
             minus its VmRSS with one pair connected, ÷ (N − 2), twice: with \
             `MIMALLOC_PURGE_DELAY=0` (freed memory leaves VmRSS at once, so the figure \
             counts live memory; the latency figures come from this run) and with \
             mimalloc's default purge delay, as `coderd` runs in production (freed pages \
             stay resident a while, so what startup and connecting freed still counts). \
             Each N and each setting gets a fresh `coderd`, one replica. *Across replicas*: \
             two `coderd` replicas on one Postgres (the first one's embedded cluster), \
             {CROSS_PEERS} peers, every agent on the first and every client on the second; \
             {samples} agents one after the other publish a changed node, latency as above \
             (the update crosses Postgres: row write and `NOTIFY` on one replica, a re-read \
             on the other)."
        ),
    );
    for &n in &sizes {
        let default = if only.is_none() || ctx.quick {
            let r = measure(n, samples, PurgeDelay::Default)
                .await
                .with_context(|| format!("{n} peers, mimalloc's default purge delay"))?;
            Some(r)
        } else {
            None
        };
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
            lat.burst.p50,
            "ms",
            Better::Lower,
        ));
        let p99 = Row::new(
            format!("update → peer, all {} agents at once (p99)", n / 2),
            lat.burst.p99,
            "ms",
            Better::Lower,
        );
        section.rows.push(if n >= 10_000 { p99.goal(Goal::AtMost(100.0)) } else { p99 });
        for (q, value) in [("p50", lat.burst_own.p50), ("p99", lat.burst_own.p99)] {
            section.rows.push(Row::new(
                format!(
                    "update → peer, all {} agents at once, from each agent's send ({q})",
                    n / 2
                ),
                value,
                "ms",
                Better::Lower,
            ));
        }
        let mut memory = vec![(&r, "`MIMALLOC_PURGE_DELAY=0`")];
        if let Some(default) = &default {
            memory.push((default, "mimalloc's default purge delay"));
        }
        for &(figures, setting) in &memory {
            let row = Row::new(
                format!("coderd RSS per connected peer, {n} peers, {setting}"),
                figures.rss_per_peer_kib,
                "KiB",
                Better::Lower,
            );
            section.rows.push(if n >= 10_000 { row.goal(Goal::AtMost(16.0)) } else { row });
        }
        for &(figures, setting) in &memory {
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
            "{n} peers, CPU while measuring one at a time: {}; during the bursts: {}.",
            lat.one_cpu, lat.burst_cpu
        ));
        section.notes.push(format!(
            "{n} peers, the {BURSTS} bursts from the instant: {}; from each agent's send: {}; \
             the last agent's write returned {} ms after the instant.",
            lat.burst.each(),
            lat.burst_own.each(),
            lat.burst_writes.iter().map(|w| format!("{w:.1}")).collect::<Vec<_>>().join(", ")
        ));
    }
    if only.is_none() {
        let peers = if ctx.quick { 20 } else { CROSS_PEERS };
        cross::measure(&mut section, peers, samples).await.context("cross-replica fan-out")?;
    }
    section.notes.push(
        "Bench side: the N client sockets live in the bench process, on the same two cores \
         as `coderd` and Postgres, so latencies under load include the bench's own work."
            .into(),
    );
    section.notes.push(
        "Burst history (5,000 agents at once, p99 from the instant): 532 ms while the bench \
         generated each agent's node (three keys: x25519 twice, ed25519 once) inside the \
         timed loop, one agent after the other on one thread, so the last agents wrote \
         ~0.5 s after the instant (from each agent's own write the p99 was 85.5 ms then); \
         the nodes are now built before the clock starts, and the agents' connections run \
         on threads of their own."
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
    burst: BurstFigures,
    /// The same bursts, each client from its agent's own send.
    burst_own: BurstFigures,
    /// When the last agent's write of each burst returned, in ms after its instant.
    burst_writes: Vec<f64>,
    /// Where the CPU went while measuring one at a time, and the bursts.
    one_cpu: CpuShare,
    burst_cpu: CpuShare,
}

/// The p50 and p99 of each burst, in ms.
struct Bursts(Vec<(f64, f64)>);

impl Bursts {
    fn median(&self, pick: impl Fn(&(f64, f64)) -> f64) -> f64 {
        let values: Vec<f64> = self.0.iter().map(pick).collect();
        percentile(&values, 50.0)
    }

    fn each(&self) -> String {
        let each: Vec<String> =
            self.0.iter().map(|(p50, p99)| format!("p50 {p50:.1} ms, p99 {p99:.1} ms")).collect();
        each.join("; ")
    }
}

struct BurstFigures {
    /// Medians over the bursts.
    p50: f64,
    p99: f64,
    all: Bursts,
}

impl BurstFigures {
    fn each(&self) -> String {
        self.all.each()
    }
}

impl From<Bursts> for BurstFigures {
    fn from(all: Bursts) -> Self {
        BurstFigures { p50: all.median(|b| b.0), p99: all.median(|b| b.1), all }
    }
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
    // The first pair is the baseline of the memory figure.
    let mut rss_before = 0.0;
    let mut connect_started = Instant::now();
    let mut first = || -> anyhow::Result<()> {
        rss_before = vm_rss_kib(pid)?;
        connect_started = Instant::now();
        Ok(())
    };
    let mut fleet = Fleet::connect(&url, &url, &session_token, &agents, &mut first).await?;
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
        fleet.close().await;
        return Ok(figures);
    };

    eprintln!("bench: coord: {} peers connected; measuring", 2 * pairs);
    let cpu = Cpu::now(pid, data)?;
    let one = fleet.one_at_a_time(samples).await?;
    let one_cpu = Cpu::now(pid, data)?.since(&cpu);

    let cpu = Cpu::now(pid, data)?;
    let (mut bursts, mut own) = (Vec::with_capacity(BURSTS), Vec::with_capacity(BURSTS));
    let mut burst_writes = Vec::with_capacity(BURSTS);
    for b in 0..BURSTS {
        let port = 60_000 + u16::try_from(b)?;
        let (burst, from_own_send, last_write) = fleet.burst(port).await?;
        burst_writes.push(last_write);
        bursts.push((percentile(&burst, 50.0), percentile(&burst, 99.0)));
        own.push((percentile(&from_own_send, 50.0), percentile(&from_own_send, 99.0)));
    }
    let burst_cpu = Cpu::now(pid, data)?.since(&cpu);
    fleet.close().await;

    figures.latency = Some(Latency {
        one: (percentile(&one, 50.0), percentile(&one, 99.0)),
        burst: Bursts(bursts).into(),
        burst_own: Bursts(own).into(),
        burst_writes,
        one_cpu,
        burst_cpu,
    });
    Ok(figures)
}

/// N/2 agents and their N/2 clients, connected from this process, each
/// client holding a tunnel to its agent.
struct Fleet {
    /// Agent, client, the agent's node id.
    handles: Vec<(Coordinator, Coordinator, mesh::NodeId)>,
    received: mpsc::UnboundedReceiver<Received>,
    tasks: JoinSet<()>,
    /// Declared last: dropped after the agents' handles.
    _agents: AgentRuntime,
}

/// The runtime the agents' connections (their client library's tasks and
/// sockets) live on: threads of their own, so that in a burst the agents'
/// writes compete with the clients' reads (and `coderd`) as separate
/// machines' would, through the kernel's scheduler, rather than queue behind
/// thousands of client tasks on the same workers.
struct AgentRuntime(Option<tokio::runtime::Runtime>);

/// The agents' threads' name ([`agents_cpu_seconds`] counts them).
const AGENT_THREADS: &str = "coord-agents";

impl AgentRuntime {
    fn new() -> anyhow::Result<Self> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name(AGENT_THREADS)
            .enable_all()
            .build()?;
        Ok(AgentRuntime(Some(rt)))
    }

    fn handle(&self) -> anyhow::Result<tokio::runtime::Handle> {
        Ok(self.0.as_ref().context("the agents' runtime is gone")?.handle().clone())
    }
}

impl Drop for AgentRuntime {
    fn drop(&mut self) {
        // Dropped from async code: a plain drop would block (and panic).
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

impl Fleet {
    /// Connects an agent (to `agent_url`) and a client (to `client_url`) for
    /// each of `agents`, `CONNECT_CONCURRENCY` pairs at a time; calls `first`
    /// once the first client heard its agent, and returns once every client
    /// did.
    async fn connect(
        agent_url: &Url,
        client_url: &Url,
        session_token: &str,
        agents: &[coordinator::testutil::SeededAgent],
        first: &mut dyn FnMut() -> anyhow::Result<()>,
    ) -> anyhow::Result<Fleet> {
        let pairs = agents.len();
        let runtime = AgentRuntime::new()?;
        let on = runtime.handle()?;
        let (tx, mut rx) = mpsc::unbounded_channel::<Received>();
        let mut tasks = JoinSet::new();
        let mut handles = Vec::with_capacity(pairs);
        let mut connected = 0;
        let mut batch = futures::stream::iter(agents.iter().enumerate())
            .map(|(i, agent)| {
                let (agent_url, client_url) = (agent_url.clone(), client_url.clone());
                let token = session_token.to_owned();
                let on = on.clone();
                async move { pair(&on, &agent_url, &client_url, &token, i, agent).await }
            })
            .buffered(CONNECT_CONCURRENCY);
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
                first()?;
            }
        }
        drop(batch);
        // Every client hears its agent's first node (port 1).
        wait_for(&mut rx, pairs - connected, 1, Duration::from_secs(600)).await?;
        Ok(Fleet { handles, received: rx, tasks, _agents: runtime })
    }

    /// `samples` agents spread over the fleet, one after the other, publish
    /// a changed node: the latency of each until its client heard it, in ms.
    async fn one_at_a_time(&mut self, samples: usize) -> anyhow::Result<Vec<f64>> {
        let pairs = self.handles.len();
        let mut one = Vec::with_capacity(samples);
        let step = (pairs / samples).max(1);
        for s in 0..samples.min(pairs) {
            let i = s * step;
            let port = 10_000 + u16::try_from(s)?;
            let (agent, _, id) = &self.handles[i];
            // Built (keys generated) before the clock starts.
            let update = node(*id, port);
            let sent = Instant::now();
            agent.update_node(update);
            let got = wait_for(&mut self.received, 1, port, Duration::from_secs(30)).await?;
            one.push(got[0].at.duration_since(sent).as_secs_f64() * 1e3);
        }
        Ok(one)
    }

    /// Every agent publishes a node with endpoint `port` in the same instant:
    /// each client's latency from that instant, and from the moment its
    /// agent's client library wrote the node to its socket, in ms.
    async fn burst(&mut self, port: u16) -> anyhow::Result<(Vec<f64>, Vec<f64>, f64)> {
        let pairs = self.handles.len();
        // Every node is built (three keys generated, ~0.1 ms each) before
        // the clock starts: agents publish nodes they already have.
        let nodes: Vec<mesh::Node> =
            self.handles.iter().map(|(_, _, id)| node(*id, port)).collect();
        let sent = Instant::now();
        for ((agent, _, _), update) in self.handles.iter().zip(nodes) {
            agent.update_node(update);
        }
        let got = wait_for(&mut self.received, pairs, port, Duration::from_secs(600)).await?;
        let mut clients: Vec<usize> = got.iter().map(|r| r.client).collect();
        clients.sort_unstable();
        clients.dedup();
        if clients.len() != pairs {
            bail!("{} clients heard the burst, not {pairs}", clients.len());
        }
        // An agent's library records its write once the write returned; on
        // the agents' threads that may come after its client already heard.
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.handles.iter().any(|(a, _, _)| a.node_sent_at().is_none_or(|at| at < sent)) {
            if Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        let mut from_instant = Vec::with_capacity(pairs);
        let mut from_own_send = Vec::with_capacity(pairs);
        let mut last_write = 0.0f64;
        for r in &got {
            from_instant.push(r.at.duration_since(sent).as_secs_f64() * 1e3);
            let own = self.handles.get(r.client).and_then(|(agent, _, _)| agent.node_sent_at());
            let Some(own) = own.filter(|at| *at >= sent) else {
                bail!("agent {} did not record sending its node", r.client);
            };
            from_own_send.push(r.at.saturating_duration_since(own).as_secs_f64() * 1e3);
            last_write = last_write.max(own.duration_since(sent).as_secs_f64() * 1e3);
        }
        Ok((from_instant, from_own_send, last_write))
    }

    async fn close(mut self) {
        self.handles.clear();
        self.tasks.shutdown().await;
    }
}

type Pair = (
    Coordinator,
    codersdk::coordination::PeerUpdates,
    Coordinator,
    codersdk::coordination::PeerUpdates,
    mesh::NodeId,
);

/// Connects agent `i` (on the agents' runtime `on`) and its client,
/// publishes both nodes (endpoint port 1), and opens the client's tunnel.
async fn pair(
    on: &tokio::runtime::Handle,
    agent_url: &Url,
    client_url: &Url,
    user_token: &str,
    i: usize,
    agent: &coordinator::testutil::SeededAgent,
) -> anyhow::Result<Pair> {
    let (url, token) = (agent_url.clone(), agent.token.clone());
    let (a, mut a_updates) = on
        .spawn(async move { Coordinator::connect(&url, &token, PeerKind::Agent).await })
        .await?
        .with_context(|| format!("agent {i}"))?;
    let Some(PeerUpdate::Connected { node_id: agent_id, .. }) = a_updates.recv().await else {
        bail!("agent {i}: no hello");
    };
    a.update_node(node(agent_id, 1));
    let (c, mut c_updates) = Coordinator::connect(client_url, user_token, PeerKind::Client)
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
    /// Of `bench`: the agents' threads ([`AgentRuntime`]).
    agents: f64,
}

/// Each process's CPU use over an interval, in percent of one core.
struct CpuShare {
    coderd: f64,
    postgres: f64,
    bench: f64,
    agents: f64,
}

impl std::fmt::Display for CpuShare {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "coderd {:.0} %, its Postgres {:.0} %, the bench {:.0} % (its agents' threads \
             {:.0} %) of a core",
            self.coderd, self.postgres, self.bench, self.agents
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
            agents: agents_cpu_seconds()?,
        })
    }

    fn since(&self, before: &Cpu) -> CpuShare {
        let secs = self.at.duration_since(before.at).as_secs_f64().max(1e-9);
        let pct = |a: f64, b: f64| (a - b).max(0.0) / secs * 100.0;
        CpuShare {
            coderd: pct(self.coderd, before.coderd),
            postgres: pct(self.postgres, before.postgres),
            bench: pct(self.bench, before.bench),
            agents: pct(self.agents, before.agents),
        }
    }
}

/// CPU seconds of this process's agents' threads (alive ones).
fn agents_cpu_seconds() -> anyhow::Result<f64> {
    let mut total = 0.0;
    for entry in std::fs::read_dir("/proc/self/task")?.flatten() {
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim_end() == AGENT_THREADS {
            let stat = entry.path().join("stat");
            total += crate::agent::stat_cpu_seconds(&stat.to_string_lossy()).unwrap_or(0.0);
        }
    }
    Ok(total)
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
