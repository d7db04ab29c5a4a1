//! Two `coderd` replicas on one external Postgres behind a TCP load
//! balancer that sends each new connection to the next replica; client and
//! agent behind `UdpBlocked` routers, so every byte goes through a relay.
//!
//! The replicas register (`GET /api/v2/replicas` lists two), their embedded
//! relays mesh with the deployment's one mesh key, and each hands out a
//! relay map with one node per replica, its own first. The client's
//! connections are steered to the replica the agent is *not* on (the
//! balancer's pin), so `coder ping` and a SHA-256-checked `coder ssh`
//! transfer cross the mesh. Then the agent's replica is killed with
//! `kill -9` while the client stays on the other: the session must move
//! within 10 s and finish intact, `coder ping` still reports the relay
//! path, and `GET /api/v2/replicas` shows one. The killed replica is started
//! again and meshes; a second session's client is steered to it (across the
//! mesh from the agent), and the client's replica is killed: that session
//! moves within 10 s too and ends SHA-256 equal. Root only; `topology` group.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use coordinator::postgres::{Cluster, ClusterConfig, DATABASE};
use tests::topology::{push_token_template, spawn_coderd, start_agent, Host, Nat, Topology};
use tests::{has_program, run_ok, tempdir, Balancer, Coderd, HashedSession, FIRST_USER};

/// The deployment's Postgres (a Unix socket, reachable from any namespace);
/// stopped on drop.
struct Postgres(Cluster);

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = self.0.stop();
    }
}

/// One replica and where to reach it inside the internet namespace.
struct Replica {
    coderd: Option<Coderd>,
    http: SocketAddr,
    metrics: SocketAddr,
}

impl Replica {
    fn spawn(inet: &Host, dir: &Path, port: u16, pg_url: &str, lb: &str) -> anyhow::Result<Self> {
        let http = SocketAddr::from((inet.addr, port));
        let metrics = SocketAddr::from((inet.addr, port + 200));
        let relay_url = format!("http://{http}");
        let (stun, prom) = (format!("{}:{}", inet.addr, port + 478), metrics.to_string());
        let args = [
            "--postgres-url",
            pg_url,
            "--access-url",
            lb,
            "--derp-server-relay-url",
            &relay_url,
            "--stun-address",
            &stun,
            "--prometheus-enable",
            "--prometheus-address",
            &prom,
        ];
        let coderd = spawn_coderd(inet, dir, port, &args)?;
        Ok(Replica { coderd: Some(coderd), http, metrics })
    }

    /// Relay connections (clients and mesh links are apart) on this replica.
    fn relay_clients(&self, inet: &Host) -> anyhow::Result<u64> {
        let text = http_get(inet, self.metrics, "/metrics", None)?;
        let line = text.lines().find_map(|l| l.strip_prefix("derp_clients_connected "));
        Ok(line.context("no derp_clients_connected")?.trim().parse()?)
    }
}

/// `GET path` over HTTP/1.0 from inside `host`; the body.
fn http_get(
    host: &Host,
    addr: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<String> {
    let text = host.in_netns(|| {
        let mut tcp = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
        let auth = token.map(|t| format!("Coder-Session-Token: {t}\r\n")).unwrap_or_default();
        write!(tcp, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n")?;
        let mut text = String::new();
        std::io::Read::read_to_string(&mut tcp, &mut text)?;
        Ok(text)
    })?;
    let (head, body) = text.split_once("\r\n\r\n").context("no HTTP header end")?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        bail!("GET {path}: {head}");
    }
    Ok(body.to_owned())
}

/// Polls `GET /api/v2/replicas` (through `addr`) until `want` holds.
fn wait_replicas(
    inet: &Host,
    addr: SocketAddr,
    token: &str,
    what: &str,
    want: impl Fn(&[codersdk::Replica]) -> bool,
) -> anyhow::Result<Vec<codersdk::Replica>> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let body = http_get(inet, addr, "/api/v2/replicas", Some(token))?;
        let replicas: Vec<codersdk::Replica> = serde_json::from_str(&body)?;
        if want(&replicas) {
            return Ok(replicas);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {what}: {replicas:#?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn coder(host: &Host, cfg: &Path) -> Command {
    tests::topology::coder(host, cfg).unwrap()
}

#[test]
fn topology_replicas_relayed_session_crosses_the_mesh_and_survives_a_kill() {
    if let Some(reason) = Topology::unavailable() {
        coordinator::testutil::skip(&reason);
        return;
    }
    for tool in ["terraform", "ssh"] {
        if !has_program(tool) {
            coordinator::testutil::skip(&format!("{tool} is not installed"));
            return;
        }
    }
    run().unwrap();
}

fn run() -> anyhow::Result<()> {
    let start = Instant::now();
    let tmp = tempdir()?;
    let config = ClusterConfig { dir: tmp.path().join("pg"), unsafe_no_fsync: true };
    let pg = Postgres(Cluster::start(&config)?);
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    rt.block_on(coordinator::postgres::ensure_database(&pg.0, DATABASE))?;
    let pg_url = pg.0.url(DATABASE);

    let mut topo = Topology::new("replicas")?;
    let client = topo.host("c0", Nat::UdpBlocked)?;
    let agent_host = topo.host("a0", Nat::UdpBlocked)?;
    let inet = topo.internet().clone();
    let lb_addr = SocketAddr::from((inet.addr, 3100));
    let backends = vec![SocketAddr::from((inet.addr, 3000)), SocketAddr::from((inet.addr, 3001))];
    let lb = inet.in_netns(|| Ok(Balancer::round_robin(lb_addr, backends)?))?;
    let lb_url = format!("http://{lb_addr}");
    let mut replicas = [
        Replica::spawn(&inet, &tmp.path().join("a"), 3000, &pg_url, &lb_url)?,
        Replica::spawn(&inet, &tmp.path().join("b"), 3001, &pg_url, &lb_url)?,
    ];

    let cfg = tmp.path().join("config");
    run_ok(coder(&agent_host, &cfg).args(["login", &lb_url]).args(FIRST_USER))?;
    let token = std::fs::read_to_string(cfg.join("session"))?.trim().to_owned();
    let two = wait_replicas(&inet, lb_addr, &token, "two healthy replicas", |r| {
        r.len() == 2 && r.iter().all(|r| r.healthy)
    })?;
    eprintln!("replicas: {two:?}");
    let tokens = push_token_template(coder(&agent_host, &cfg), tmp.path(), "topo")?;
    run_ok(coder(&agent_host, &cfg).args(["create", "ws", "-t", "topo", "--yes"]))?;
    let _agent =
        start_agent(&agent_host, &lb_url, &tokens.join("ws.token"), &tmp.path().join("ws"))?;

    // The agent's relay connection is on one replica; the client goes to the other.
    let deadline = Instant::now() + Duration::from_secs(60);
    let agent_on = loop {
        let counts = [replicas[0].relay_clients(&inet)?, replicas[1].relay_clients(&inet)?];
        match counts {
            [1, 0] => break 0,
            [0, 1] => break 1,
            _ if Instant::now() > deadline => bail!("the agent never reached a relay: {counts:?}"),
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    let client_on = 1 - agent_on;
    lb.pin(Some(replicas[client_on].http));
    let out =
        run_ok(coder(&client, &cfg).args(["ping", "ws", "-n", "3", "-i", "200ms", "-o", "json"]))?;
    let report: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(report["path"]["kind"], "relay", "ping through the meshed relays: {out}");
    assert_eq!(report["direct"], false, "{out}");
    let session = HashedSession::start(coder(&client, &cfg), &["-v", "ws"])?;
    let path = session.stderr_line(Duration::from_secs(30)).unwrap_or_default();
    assert!(path.contains("relay"), "the UDP-blocked pair reported {path:?}");
    session.wait_progress("across the replicas' meshed relays")?;
    assert_eq!(replicas[client_on].relay_clients(&inet)?, 1, "the client is on the other replica");
    assert_eq!(replicas[agent_on].relay_clients(&inet)?, 1, "the agent stayed on its replica");
    eprintln!("set up and crossing the mesh after {:?}", start.elapsed());

    // The agent's replica dies while the client stays on the other: the
    // agent's relay link moves to the client's replica (the next node of
    // its map) and the session goes on there.
    lb.pin(None);
    let killed = Instant::now();
    replicas[agent_on].coderd.take().context("replica already gone")?.kill9()?;
    session.wait_progress("after the agent's replica was killed")?;
    let moved = killed.elapsed();
    eprintln!("the session moved on after {moved:?} (agent's replica killed)");
    assert!(moved < Duration::from_secs(10), "the session took {moved:?} to move");
    let survivor = replicas[client_on].http;
    let one = wait_replicas(&inet, survivor, &token, "one replica", |r| r.len() == 1)?;
    assert_eq!(one[0].relay_url, format!("http://{survivor}/derp"), "{one:?}");
    assert_eq!(replicas[client_on].relay_clients(&inet)?, 2, "the agent joined the client");
    let out =
        run_ok(coder(&client, &cfg).args(["ping", "ws", "-n", "3", "-i", "200ms", "-o", "json"]))?;
    let report: serde_json::Value = serde_json::from_str(&out)?;
    assert_eq!(report["path"]["kind"], "relay", "ping after the agent's replica died: {out}");
    session.wait_progress("on the surviving replica")?;
    let bytes = session.finish().context("the relayed stream (agent's replica killed)")?;
    eprintln!("SHA-256 equal over {bytes} bytes");

    // The killed replica comes back and meshes again; a second session's
    // client is steered to it, across the mesh from the agent; then the
    // client's replica dies while the agent stays on the other.
    let port = replicas[agent_on].http.port();
    let dir = tmp.path().join(["a", "b"][agent_on]);
    replicas[agent_on] = Replica::spawn(&inet, &dir, port, &pg_url, &lb_url)?;
    wait_replicas(&inet, survivor, &token, "the replica back and meshed", |r| {
        r.len() == 2 && r.iter().all(|r| r.healthy)
    })?;
    let (client_on, agent_on) = (agent_on, client_on);
    lb.pin(Some(replicas[client_on].http));
    let session = HashedSession::start(coder(&client, &cfg), &["-v", "ws"])?;
    let path = session.stderr_line(Duration::from_secs(30)).unwrap_or_default();
    assert!(path.contains("relay"), "the second session reported {path:?}");
    session.wait_progress("across the mesh to the restarted replica")?;
    assert_eq!(
        replicas[client_on].relay_clients(&inet)?,
        1,
        "the client is on the restarted replica"
    );
    assert_eq!(replicas[agent_on].relay_clients(&inet)?, 1, "the agent stayed where it moved");
    lb.pin(None);
    let killed = Instant::now();
    replicas[client_on].coderd.take().context("replica already gone")?.kill9()?;
    session.wait_progress("after the client's replica was killed")?;
    let moved = killed.elapsed();
    eprintln!("the session moved on after {moved:?} (client's replica killed)");
    assert!(moved < Duration::from_secs(10), "the session took {moved:?} to move");
    let survivor = replicas[agent_on].http;
    let one = wait_replicas(&inet, survivor, &token, "one replica", |r| r.len() == 1)?;
    assert_eq!(one[0].relay_url, format!("http://{survivor}/derp"), "{one:?}");
    session.wait_progress("on the surviving replica")?;
    let bytes = session.finish().context("the relayed stream (client's replica killed)")?;
    eprintln!("SHA-256 equal over {bytes} bytes; test took {:?}", start.elapsed());
    drop(replicas);
    drop(lb);
    Ok(())
}
