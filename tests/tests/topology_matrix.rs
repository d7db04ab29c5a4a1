//! The NAT matrix: `coder ssh` from a client behind each kind of NAT to an
//! agent behind each kind of NAT, on one [`Topology`] with one `coderd`.
//!
//! For every (client, agent) pair it asserts
//! - the path `coder ssh -v` reports: `direct` where hole punching can work,
//!   `relay` where it cannot (see [`expected_path`]);
//! - a checksummed transfer: 4 MiB piped through `coder ssh WS -- sha256sum`.
//!
//! A direct path forms a few round trips after the session starts, and `-v`
//! reports the path when the QUIC connection is up, so a pair expected to go
//! direct is retried until it says so (deadline [`DIRECT_DEADLINE`]); a pair
//! expected on the relay must say so every time ([`RELAY_RUNS`] runs).
//!
//! The agents are `coder-agent` processes this test starts in the agent
//! namespaces, with tokens that the template's `local-exec` writes to files.
//! `TOPOLOGY_NATS=none,hard` limits the kinds. Root only; `topology` group.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tests::topology::{
    push_token_template, spawn_coderd, Host, Miniupnpd, Nat, PortMapping, Topology,
};
use tests::{binary, run_ok, tempdir, FIRST_USER};

const DIRECT_DEADLINE: Duration = Duration::from_secs(30);
/// Pings (1 s apart) that must all stay on the relay: more than one probe
/// interval (5 s), so every hole-punching attempt has had its chance.
const RELAY_PINGS: u32 = 7;
const PAYLOAD_BYTES: usize = 4 << 20;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PathKind {
    Direct,
    Relay,
}

/// What the mesh can do between two NATs, given how Linux routers behave
/// (`Nat` documents each kind's mapping and filtering):
/// - UDP blocked on either side: nothing but the relay.
/// - Both endpoint-dependent: neither side can predict the other's port.
/// - Endpoint-dependent against `Easy` or `EasyAnswering`: plain punching
///   fails (the hard side's probes come from a port the easy router never
///   sent to; the easy side's go to a port the hard router mapped for
///   someone else), but birthday probing finds a path: the hard side opens
///   256 sockets toward the easy side, which probes random ports of the
///   hard side (`mesh/src/path/birthday.rs`).
/// - Everything else: at least one side accepts the other's first probe.
fn expected_path(client: Nat, agent: Nat) -> PathKind {
    match (client, agent) {
        (Nat::UdpBlocked | Nat::HttpProxyOnly, _) | (_, Nat::UdpBlocked | Nat::HttpProxyOnly) => {
            PathKind::Relay
        }
        (Nat::Hard, Nat::Hard) => PathKind::Relay,
        // Not yet: a fresh hard client against a long-lived agent behind an
        // answering router stays on the relay (the other three hard × easy
        // pairs go direct by birthday); docs/reliability.md, finding 2.
        // It does go direct in some runs, so that cell accepts either
        // ([`direct_also_passes`]) until the cause is known.
        (Nat::Hard, Nat::EasyAnswering) => PathKind::Relay,
        // An answering router in either role goes direct: opening probes
        // tell each side whether the peer's router answers, and a side
        // holds its pings to one that does until the peer's host has sent
        // (finding 1). Two answering routers still clash: each host would
        // have to send before the other's probe arrives.
        (Nat::EasyAnswering, Nat::EasyAnswering) => PathKind::Relay,
        _ => PathKind::Direct,
    }
}

/// Pairs expected on the relay that sometimes go direct: either path passes,
/// as long as the transfer is intact (docs/reliability.md, finding 2).
fn direct_also_passes(client: Nat, agent: Nat) -> bool {
    matches!((client, agent), (Nat::Hard, Nat::EasyAnswering))
}

/// Kills the agent when the test ends, however it ends.
struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

struct Outcome {
    client: Nat,
    agent: Nat,
    expected: PathKind,
    /// The final path of each `coder ping` run.
    pings: Vec<PathKind>,
    /// The first time to direct `coder ping` reported, and how it was found.
    to_direct: Option<(f64, String)>,
    /// What `coder ssh -v` reported for the transfer.
    ssh_path: Option<PathKind>,
    transfer_ok: bool,
    elapsed: Duration,
    error: Option<String>,
}

impl Outcome {
    fn passed(&self) -> bool {
        let either = direct_also_passes(self.client, self.agent);
        self.error.is_none()
            && self.transfer_ok
            && (self.pings.last() == Some(&self.expected)
                || (either && self.pings.last() == Some(&PathKind::Direct)))
            && (self.expected == PathKind::Direct
                || either
                || self.ssh_path == Some(PathKind::Relay))
    }
}

fn has(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

fn kinds() -> Vec<Nat> {
    match std::env::var("TOPOLOGY_NATS") {
        Ok(list) => list
            .split(',')
            .map(|n| {
                *Nat::ALL
                    .iter()
                    .chain(&[Nat::HttpProxyOnly])
                    .find(|k| k.name() == n.trim())
                    .unwrap_or_else(|| panic!("TOPOLOGY_NATS: unknown kind {n:?}"))
            })
            .collect(),
        Err(_) => Nat::ALL.to_vec(),
    }
}

/// `coder` in the client's namespace with the test's login.
fn coder(client: &Host, cfg: &Path) -> Command {
    let mut c = client.command(binary("coder").unwrap());
    c.env("CODER_CONFIG_DIR", cfg).env_remove("CODER_URL").env_remove("CODER_SESSION_TOKEN");
    proxy_env(&mut c, client);
    c
}

/// [`coder`] asking its gateway for a port mapping in `protocols`
/// (`CODER_PORT_MAPPING`), if any.
fn coder_mapping(client: &Host, cfg: &Path, protocols: Option<&str>) -> Command {
    let mut c = coder(client, cfg);
    c.envs(protocols.map(|p| ("CODER_PORT_MAPPING", p)));
    c
}

/// Points a command at the host's HTTP proxy, if it has one, and clears any
/// proxy settings inherited from the test's environment.
fn proxy_env(cmd: &mut Command, host: &Host) {
    for var in ["HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY"] {
        cmd.env_remove(var).env_remove(var.to_lowercase());
    }
    if let Some(proxy) = &host.http_proxy {
        cmd.env("HTTP_PROXY", proxy).env("HTTPS_PROXY", proxy);
    }
}

/// One `coder ping WS -o json`: the path after the last ping, and the time
/// to direct (ms) and mechanism it reported. `num: None` pings until the
/// path is direct (at most 10 times, 1 s apart).
fn ping_path(
    client: &Host,
    cfg: &Path,
    ws: &str,
    num: Option<u32>,
    mapping: Option<&str>,
) -> anyhow::Result<(PathKind, Option<(f64, String)>)> {
    let mut cmd = coder_mapping(client, cfg, mapping);
    cmd.args(["ping", ws, "-o", "json"]);
    if let Some(n) = num {
        cmd.args(["-n", &n.to_string()]);
    }
    let report: serde_json::Value = serde_json::from_str(&run_ok(&mut cmd)?)?;
    let path = if report["direct"] == serde_json::Value::Bool(true) {
        PathKind::Direct
    } else {
        PathKind::Relay
    };
    let via = report["direct_via"].as_str().unwrap_or("?").to_owned();
    Ok((path, report["time_to_direct_ms"].as_f64().map(|ms| (ms, via))))
}

/// One `coder ssh -v WS -- sha256sum` with `payload` on stdin: the path it
/// reported and whether the checksum came back right.
fn ssh_transfer(
    client: &Host,
    cfg: &Path,
    ws: &str,
    payload: &[u8],
    want: &str,
    mapping: Option<&str>,
) -> anyhow::Result<(Option<PathKind>, bool)> {
    let mut child = coder_mapping(client, cfg, mapping)
        .args(["ssh", "-v", ws, "--", "sha256sum"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    let mut stdin = child.stdin.take().expect("stdin");
    let out = std::thread::scope(|s| {
        s.spawn(move || {
            let _ = stdin.write_all(payload);
        });
        child.wait_with_output()
    })?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let path = if stderr.contains("connected via direct (") {
        Some(PathKind::Direct)
    } else if stderr.contains("connected via relay") {
        Some(PathKind::Relay)
    } else {
        None
    };
    if !out.status.success() {
        anyhow::bail!("coder ssh {ws} failed ({}): {stderr}", out.status);
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    Ok((path, stdout.split_whitespace().next() == Some(want)))
}

/// Pings until the expected path shows (direct: until [`DIRECT_DEADLINE`];
/// relay: one run of [`RELAY_PINGS`], longer than a probe interval), then
/// transfers the payload.
fn run_pair(d: &Deployment, client: &Host, agent: &Host, ws: &str) -> Outcome {
    let (cfg, payload, want) = (d.cfg.as_path(), d.payload.as_slice(), d.want.as_str());
    let mapping = d.port_mapping(client);
    let expected = match (mapping, d.port_mapping(agent)) {
        // Either side's gateway forwards a port: the other side's probes
        // reach it, whatever its NAT (docs/reliability.md, port mapping).
        (Some(_), _) | (_, Some(_)) => PathKind::Direct,
        (None, None) => expected_path(client.nat, agent.nat),
    };
    let start = Instant::now();
    let mut outcome = Outcome {
        client: client.nat,
        agent: agent.nat,
        expected,
        pings: Vec::new(),
        to_direct: None,
        ssh_path: None,
        transfer_ok: false,
        elapsed: Duration::ZERO,
        error: None,
    };
    let result = (|| -> anyhow::Result<()> {
        loop {
            let num = (expected == PathKind::Relay).then_some(RELAY_PINGS);
            let (path, to_direct) = ping_path(client, cfg, ws, num, mapping)?;
            outcome.pings.push(path);
            if outcome.to_direct.is_none() {
                outcome.to_direct = to_direct;
            }
            if path == PathKind::Direct
                || expected == PathKind::Relay
                || start.elapsed() > DIRECT_DEADLINE
            {
                break;
            }
        }
        let (path, ok) = ssh_transfer(client, cfg, ws, payload, want, mapping)?;
        outcome.ssh_path = path;
        outcome.transfer_ok = ok;
        Ok(())
    })();
    outcome.error = result.err().map(|e| format!("{e:#}"));
    outcome.elapsed = start.elapsed();
    outcome
}

/// What every column of the matrix shares.
struct Deployment {
    url: String,
    cfg: PathBuf,
    /// Per-test scratch directory.
    dir: PathBuf,
    /// Where the template writes agent tokens.
    tokens: PathBuf,
    payload: Vec<u8>,
    /// Its SHA-256, hex.
    want: String,
    /// Workspace builds go one at a time: concurrent `terraform init`s share
    /// the provisioner's plugin cache, which terraform does not make safe for
    /// concurrent use ("Failed to install provider", docs/reliability.md).
    create_lock: std::sync::Mutex<()>,
    /// `CODER_PORT_MAPPING` of the processes in a namespace, by its name.
    port_mapping: Vec<(String, &'static str)>,
}

impl Deployment {
    fn port_mapping(&self, host: &Host) -> Option<&'static str> {
        self.port_mapping.iter().find(|(netns, _)| *netns == host.netns).map(|(_, p)| *p)
    }
}

/// One column: creates the workspace `ws-<agent host>`, starts its agent in
/// `agent`'s namespace, and connects from every client in turn.
fn run_column(d: &Deployment, agent: &Host, clients: &[Host]) -> Vec<Outcome> {
    let ws = format!("ws-{}", agent.netns.rsplit('-').next().unwrap_or("agent"));
    {
        let _one_build = d.create_lock.lock().unwrap();
        run_ok(coder(agent, &d.cfg).args(["create", &ws, "-t", "topo", "--yes"])).unwrap();
    }
    let token = std::fs::read_to_string(d.tokens.join(format!("{ws}.token"))).unwrap();
    let home = d.dir.join(&ws);
    std::fs::create_dir_all(&home).unwrap();
    let log = std::fs::File::create(d.dir.join(format!("agent-{ws}.log"))).unwrap();
    let mut cmd = agent.command(binary("coder-agent").unwrap());
    proxy_env(&mut cmd, agent);
    cmd.envs(d.port_mapping(agent).map(|p| ("CODER_PORT_MAPPING", p)));
    let child = cmd
        .env("CODER_AGENT_URL", &d.url)
        .env("CODER_AGENT_TOKEN", token.trim())
        .env("HOME", &home)
        .current_dir(&home)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .unwrap();
    let _agent = AgentProcess(child);
    let mut outcomes = Vec::new();
    for client in clients {
        let o = run_pair(d, client, agent, &ws);
        eprintln!(
            "client {:>10} → agent {:>10}: expected {:?}, pings {:?}, to direct {:?}, ssh -v {:?}, transfer ok {}, {:.1?}{}",
            o.client,
            o.agent,
            o.expected,
            o.pings,
            o.to_direct,
            o.ssh_path,
            o.transfer_ok,
            o.elapsed,
            o.error.as_deref().map(|e| format!(", error: {e}")).unwrap_or_default()
        );
        outcomes.push(o);
    }
    outcomes
}

#[test]
fn topology_nat_matrix_ssh_path_and_transfer() {
    let kinds = kinds();
    run_matrix("matrix", &kinds, &kinds);
}

/// A client whose network only lets HTTP(S) out through a proxy must still
/// reach a workspace, over the relay.
#[test]
fn topology_http_proxy_only_client_reaches_agent() {
    run_matrix("proxy", &[Nat::HttpProxyOnly], &[Nat::None, Nat::Easy]);
}

/// Hard × hard goes direct when either side's router runs miniupnpd, with
/// any of the three protocols: the agent's gateway speaks NAT-PMP/PCP and
/// the agent asks in PCP (column 1) or NAT-PMP (column 2); the client's
/// gateway speaks UPnP only (column 3). Only these pairs run: hard × hard
/// without port mapping is the main matrix's. `coder ping` must say the
/// port mapping found the path.
#[test]
fn topology_port_mapping_hard_pairs_go_direct() {
    if let Some(reason) = Miniupnpd::unavailable() {
        coordinator::testutil::skip(&reason);
        return;
    }
    let Some(mut topo) = topology("portmap") else { return };
    let plain = topo.host("c0", Nat::Hard).unwrap();
    let mapped = topo.host("c1", Nat::Hard).unwrap();
    let pcp = topo.host("a0", Nat::Hard).unwrap();
    let pmp = topo.host("a1", Nat::Hard).unwrap();
    let hard = topo.host("a2", Nat::Hard).unwrap();
    let port_mapping = vec![
        (mapped.netns.clone(), "upnp"),
        (pcp.netns.clone(), "pcp"),
        (pmp.netns.clone(), "nat-pmp"),
    ];
    let columns = vec![
        (pcp.clone(), vec![plain.clone()]),
        (pmp.clone(), vec![plain]),
        (hard.clone(), vec![mapped.clone()]),
    ];
    let mut daemons = Vec::new();
    let outcomes = run_columns(&topo, &columns, port_mapping, |stun| {
        for (host, protocols) in [
            (&mapped, PortMapping::UPNP),
            (&pcp, PortMapping::NAT_PMP_PCP),
            (&pmp, PortMapping::NAT_PMP_PCP),
        ] {
            daemons.push(Miniupnpd::start(host, protocols, stun).unwrap());
        }
    });
    let protocols = ["PCP (agent)", "NAT-PMP (agent)", "UPnP (client)"];
    for (o, protocol) in outcomes.iter().zip(protocols) {
        println!(
            "| {} × {}, {protocol} | {:?} {} ({:.1?}, direct {:?}) |",
            o.client,
            o.agent,
            o.expected,
            mark(o),
            o.elapsed,
            o.to_direct
        );
    }
    drop(daemons);
    // `coder ping` names the mechanism: the agent's mapping, which the
    // client pinged (its record marks it), and the client's own, at which
    // the agent's pong saw it.
    for o in &outcomes {
        let via = o.to_direct.as_ref().map(|(_, via)| via.as_str());
        assert_eq!(via, Some("port mapping"), "{} → {}: {:?}", o.client, o.agent, o.to_direct);
    }
}

/// A topology named `name`, or `None` (the test skips) without root or tools.
fn topology(name: &str) -> Option<Topology> {
    if let Some(reason) = Topology::unavailable() {
        coordinator::testutil::skip(&reason);
        return None;
    }
    for tool in ["terraform", "ssh"] {
        if !has(tool) {
            coordinator::testutil::skip(&format!("{tool} is not installed"));
            return None;
        }
    }
    Some(Topology::new(name).unwrap())
}

fn mark(o: &Outcome) -> &'static str {
    if o.passed() {
        "ok"
    } else {
        "FAIL"
    }
}

/// Builds a topology with a client host per `client_kinds` and an agent
/// host per `agent_kinds`, one coderd, and checks every pair.
fn run_matrix(name: &str, client_kinds: &[Nat], agent_kinds: &[Nat]) {
    let test_start = Instant::now();
    let Some(mut topo) = topology(name) else { return };
    let clients: Vec<Host> = client_kinds
        .iter()
        .enumerate()
        .map(|(i, k)| topo.host(&format!("c{i}"), *k).unwrap())
        .collect();
    let columns: Vec<(Host, Vec<Host>)> = agent_kinds
        .iter()
        .enumerate()
        .map(|(i, k)| (topo.host(&format!("a{i}"), *k).unwrap(), clients.clone()))
        .collect();
    let outcomes = run_columns(&topo, &columns, Vec::new(), |_| {});

    // The table docs/reliability.md quotes.
    println!(
        "| client \\ agent | {} |",
        agent_kinds.iter().map(|k| k.name()).collect::<Vec<_>>().join(" | ")
    );
    println!("|---|{}", "---|".repeat(agent_kinds.len()));
    for client in client_kinds {
        let cells: Vec<String> = agent_kinds
            .iter()
            .map(|agent| {
                let o = outcomes.iter().find(|o| o.client == *client && o.agent == *agent).unwrap();
                let direct = match &o.to_direct {
                    Some((ms, via)) => format!(", direct in {ms:.0} ms via {via}"),
                    None => String::new(),
                };
                format!("{:?} {} ({:.1?}{direct})", o.expected, mark(o), o.elapsed)
            })
            .collect();
        println!("| {client} | {} |", cells.join(" | "));
    }
    println!("matrix took {:?}", test_start.elapsed());
}

/// Starts coderd on `topo`'s internet, calls `ready` with its STUN address,
/// and checks each column (an agent and its clients) on a thread of its
/// own; panics with every failed pair after all ran.
fn run_columns(
    topo: &Topology,
    columns: &[(Host, Vec<Host>)],
    port_mapping: Vec<(String, &'static str)>,
    ready: impl FnOnce(std::net::SocketAddr),
) -> Vec<Outcome> {
    let test_start = Instant::now();
    let tmp = tempdir().unwrap();
    let srv = spawn_coderd(topo.internet(), &tmp.path().join("data"), 3000, &[]).unwrap();
    eprintln!("coderd up at {} after {:?}", srv.url, test_start.elapsed());
    ready(std::net::SocketAddr::from((topo.internet().addr, 3478)));

    // Setup talks to coderd from the first agent's namespace, so a client
    // that cannot reach coderd fails its own pairs only.
    let cfg = tmp.path().join("config");
    let coder = |args: &[&str]| {
        let mut c = coder(&columns[0].0, &cfg);
        c.args(args);
        c
    };
    run_ok(coder(&["login", srv.url.as_str()]).args(FIRST_USER)).unwrap();
    let tokens = push_token_template(coder(&[]), tmp.path(), "topo").unwrap();

    let payload: Vec<u8> =
        (0..PAYLOAD_BYTES as u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect();
    let want = hex::encode(Sha256::digest(&payload));
    let deployment = Deployment {
        url: srv.url.to_string(),
        cfg: cfg.clone(),
        dir: tmp.path().to_owned(),
        tokens,
        payload,
        want,
        create_lock: std::sync::Mutex::new(()),
        port_mapping,
    };
    // One thread per agent: namespaces are separate, so the columns of the
    // matrix do not disturb each other, and most of the time is waiting.
    let outcomes: Vec<Outcome> = std::thread::scope(|s| {
        let columns: Vec<_> = columns
            .iter()
            .map(|(agent, clients)| {
                let deployment = &deployment;
                s.spawn(move || run_column(deployment, agent, clients))
            })
            .collect();
        columns.into_iter().flat_map(|c| c.join().unwrap()).collect()
    });

    let failed: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.passed())
        .map(|o| {
            format!(
                "client {} → agent {}: expected {:?}, pings {:?}, ssh -v {:?}, transfer ok {}, error {:?}",
                o.client, o.agent, o.expected, o.pings, o.ssh_path, o.transfer_ok, o.error
            )
        })
        .collect();
    if !failed.is_empty() {
        let log = std::fs::read_to_string(&srv.log).unwrap_or_default();
        let tail: String = log
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        panic!(
            "{} of {} pairs failed:\n{}\ncoderd log tail:\n{tail}",
            failed.len(),
            outcomes.len(),
            failed.join("\n")
        );
    }
    drop(srv);
    outcomes
}
