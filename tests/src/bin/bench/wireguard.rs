//! Group `wireguard`: single-TCP-stream throughput through the data plane of
//! `coder tunnel --ip` beside two `boringtun-cli` devices and beside the
//! mesh's QUIC, all between the same two network namespaces (hosts on one
//! bridge of a [`Topology`]), one after the other, in this run.
//!
//! - *ours*: node A in namespace `a` with a TUN device (the client's code:
//!   `client::iptunnel::tun`), node B in namespace `b` with the agent's
//!   userspace stack, which forwards the connection to a sink on
//!   `127.0.0.1`; kernel TCP in `a` sends to B's mesh address.
//! - *boringtun-cli* and *wireguard-go*: one device per namespace of each
//!   (configured over its UAPI socket, the protocol `wg` speaks), kernel TCP
//!   on both ends.
//! - *QUIC*: one mesh QUIC stream between the same two nodes.
//!
//! Root only; the baselines need `boringtun-cli` (`BORINGTUN_CLI`, or the
//! one the bench installs with cargo under `target/bench-tools`) and Debian's
//! `wireguard-go` (`WIREGUARD_GO`, or on `PATH`), each skipped without it.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mesh::netstack::{LoopbackUdp, Netstack};
use mesh::MeshEndpoint;
use tests::topology::{Host, Nat, Topology};

use crate::net;
use crate::report::{Better, Goal, Row, Section};
use crate::stats::median;
use crate::Ctx;

const TITLE: &str = "WireGuard (`bench wireguard`)";

/// How long each sender runs, and how many rounds.
fn sizes(ctx: &Ctx) -> (Duration, usize) {
    if ctx.quick {
        (Duration::from_millis(300), 1)
    } else {
        (Duration::from_secs(3), 5)
    }
}

/// Where [`install_boringtun_cli`] puts the baseline: beside the target
/// directory's other bench tools.
fn tools_root() -> anyhow::Result<PathBuf> {
    Ok(crate::bins_dir()?.parent().context("no target dir")?.join("bench-tools"))
}

/// `BORINGTUN_CLI`, else the one [`install_boringtun_cli`] installed.
fn boringtun_cli() -> Option<PathBuf> {
    let path = match std::env::var_os("BORINGTUN_CLI") {
        Some(path) => PathBuf::from(path),
        None => tools_root().ok()?.join("bin/boringtun-cli"),
    };
    path.is_file().then_some(path)
}

/// `WIREGUARD_GO`, else `wireguard-go` on `PATH` (Debian's package).
fn wireguard_go() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("WIREGUARD_GO") {
        return Some(PathBuf::from(path)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join("wireguard-go")).find(|p| p.is_file())
}

/// Installs the baseline with cargo (crates.io) unless it is there already.
pub fn install_boringtun_cli() -> anyhow::Result<()> {
    if boringtun_cli().is_some() {
        return Ok(());
    }
    let root = tools_root()?;
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("bench: installing boringtun-cli into {}", root.display());
    let status = std::process::Command::new(cargo)
        .args(["install", "boringtun-cli", "--version", "0.7.1", "--root"])
        .arg(&root)
        .status()
        .context("run cargo install boringtun-cli")?;
    anyhow::ensure!(status.success(), "installing boringtun-cli failed ({status})");
    Ok(())
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Section> {
    let (secs, rounds) = sizes(ctx);
    let mut section = Section::new(
        TITLE,
        &format!(
            "One TCP stream from namespace `a` to namespace `b` (two hosts on one bridge), \
             the sender writing for {:.1} s; throughput at the receiver, median of {rounds} \
             rounds, the five taking turns. *coder tunnel --ip*: a TUN device in `a` \
             (the CLI's code) → WireGuard over the magic socket (direct UDP) → the agent's \
             userspace stack in `b` → a sink on loopback. *boringtun-cli*: two \
             `boringtun-cli` 0.7.1 devices, kernel TCP at both ends. *wireguard-go*: two \
             devices of Debian's `wireguard-go` ({wg_go_version}), the same way. Both \
             baselines are configured over their UAPI sockets (the protocol `wg` \
             speaks), MTU 1420. *mesh QUIC*: one QUIC \
             stream between the same two nodes. *plain TCP*: the same sender straight to \
             a sink in `b` over the bridge, no tunnel at all.",
            secs.as_secs_f64(),
            wg_go_version = wireguard_go_version().unwrap_or_else(|| "not installed".into()),
        ),
    );
    if let Some(reason) = Topology::unavailable() {
        section.notes.push(format!("Skipped: {reason}."));
        return Ok(section);
    }
    let bt = boringtun_cli();
    if bt.is_none() {
        section.notes.push(
            "Baseline skipped: boringtun-cli not found (set BORINGTUN_CLI or `cargo install boringtun-cli --root /tmp/boringtun-cli`)."
                .into(),
        );
    }
    let wg_go = wireguard_go();
    if wg_go.is_none() {
        section.notes.push(
            "Baseline skipped: wireguard-go not found (`apt-get install wireguard-go`, or set \
             WIREGUARD_GO)."
                .into(),
        );
    }

    let mut topo = Topology::new("wgbench")?;
    let (a, b) = (topo.host("a", Nat::None)?, topo.host("b", Nat::None)?);
    let handle = tokio::runtime::Handle::current();

    // Ours: nodes bound inside their namespaces.
    let bind = |host: &Host, id: u64| {
        let mut cfg = net::config(id, None, false);
        cfg.bind = SocketAddr::new(IpAddr::V4(host.addr), 0);
        let handle = handle.clone();
        host.in_netns(move || {
            let _rt = handle.enter();
            Ok(futures::executor::block_on(MeshEndpoint::bind(cfg))?)
        })
    };
    let (na, nb) = (bind(&a, 1)?, bind(&b, 2)?);
    na.upsert_peer(&nb.node())?;
    nb.upsert_peer(&na.node())?;
    // QUIC first: it proves the direct path WireGuard then uses.
    let (ca, cb) = net::connect(&na, &nb).await.context("mesh QUIC connect")?;
    net::mesh_transfer(&ca, &cb, 4 << 20).await.context("QUIC warm-up")?;

    let sink_local = Sink::start(None)?;
    let (tx, rx) = nb.wireguard()?;
    let udp = Box::new(LoopbackUdp::new(tx.clone()));
    let (_stack, mut incoming) = Netstack::spawn_accepting(nb.node().addresses, udp, tx, rx);
    let _serve = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(async move {
        while let Some(conn) = incoming.accept().await {
            tokio::spawn(async move {
                let target = SocketAddr::from((Ipv4Addr::LOCALHOST, conn.local.port()));
                if let Ok(mut tcp) = tokio::net::TcpStream::connect(target).await {
                    let mut stream = conn.stream;
                    let _ = tokio::io::copy_bidirectional(&mut stream, &mut tcp).await;
                }
            });
        }
    }));
    let (tx, rx) = na.wireguard()?;
    let addrs = na.node().addresses;
    let dev = {
        let handle = handle.clone();
        a.in_netns(move || {
            let _rt = handle.enter();
            Ok(client::iptunnel::tun::create("cwg0", addrs)?)
        })?
    };
    let (_names_tx, names) = tokio::sync::watch::channel(client::iptunnel::names::Names::default());
    let _tun = tokio_util::task::AbortOnDropHandle::new(tokio::spawn(client::iptunnel::tun::run(
        dev, tx, rx, names,
    )));
    let ours_dst = SocketAddr::new(nb.node().addresses.ipv6.into(), sink_local.port);

    // boringtun-cli: a device per namespace over the same bridge.
    let sink_b = Sink::start(Some(&b))?;
    let _bt =
        bt.as_deref().map(|bin| UserspacePair::start(Impl::Boringtun, bin, &a, &b)).transpose()?;
    let bt_dst = SocketAddr::from((Impl::Boringtun.addrs()[1], sink_b.port));
    let _wg_go = wg_go
        .as_deref()
        .map(|bin| UserspacePair::start(Impl::WireguardGo, bin, &a, &b))
        .transpose()?;
    let wg_go_dst = SocketAddr::from((Impl::WireguardGo.addrs()[1], sink_b.port));
    let plain_dst = SocketAddr::from((b.addr, sink_b.port));

    let (mut ours, mut theirs, mut go, mut quic, mut plain) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    // Warm-up: handshakes, ARP, window growth.
    stream(&a, ours_dst, &sink_local, Duration::from_millis(300)).context("tunnel warm-up")?;
    if bt.is_some() {
        stream(&a, bt_dst, &sink_b, Duration::from_millis(300)).context("boringtun-cli warm-up")?;
    }
    if wg_go.is_some() {
        stream(&a, wg_go_dst, &sink_b, Duration::from_millis(300))
            .context("wireguard-go warm-up")?;
    }
    for _ in 0..rounds {
        ours.push(stream(&a, ours_dst, &sink_local, secs).context("coder tunnel --ip")?);
        if bt.is_some() {
            theirs.push(stream(&a, bt_dst, &sink_b, secs).context("boringtun-cli")?);
        }
        if wg_go.is_some() {
            go.push(stream(&a, wg_go_dst, &sink_b, secs).context("wireguard-go")?);
        }
        plain.push(stream(&a, plain_dst, &sink_b, secs).context("plain TCP")?);
        let len = 256u64 << 20;
        let took = net::mesh_transfer(&ca, &cb, if ctx.quick { 8 << 20 } else { len }).await?;
        let bytes = if ctx.quick { 8u64 << 20 } else { len };
        quic.push(bytes as f64 * 8.0 / 1e6 / took.as_secs_f64());
    }
    let (ours, theirs, go, quic, plain) =
        (median(&ours), median(&theirs), median(&go), median(&quic), median(&plain));
    let row = || Row::new("single TCP stream, `coder tunnel --ip`", ours, "Mbit/s", Better::Higher);
    let with_bt = row().goal(Goal::RatioAtLeast(2.0));
    section.rows.push(match bt {
        Some(_) => with_bt.baseline("two boringtun-cli devices", theirs),
        None => with_bt.note("boringtun-cli not installed"),
    });
    section.rows.push(match wg_go {
        Some(_) => row().baseline("two wireguard-go devices", go),
        None => row().note("wireguard-go not installed"),
    });
    section.rows.push(
        Row::new("single TCP stream, `coder tunnel --ip`", ours, "Mbit/s", Better::Higher)
            .baseline("mesh QUIC stream, same nodes", quic),
    );
    section.rows.push(
        Row::new("single TCP stream, `coder tunnel --ip`", ours, "Mbit/s", Better::Higher)
            .baseline("plain TCP over the bridge, no tunnel", plain)
            .note("what encryption and user space cost"),
    );
    na.close().await;
    nb.close().await;
    Ok(section)
}

/// One TCP stream from `from` to `dst` for `secs`; Mbit/s at the receiver.
fn stream(from: &Host, dst: SocketAddr, sink: &Sink, secs: Duration) -> anyhow::Result<f64> {
    let mut conn = from.in_netns(|| {
        TcpStream::connect_timeout(&dst, Duration::from_secs(10))
            .with_context(|| format!("connect {dst}"))
    })?;
    let chunk = vec![0x5au8; 256 * 1024];
    let start = Instant::now();
    while start.elapsed() < secs {
        conn.write_all(&chunk)?;
    }
    conn.shutdown(std::net::Shutdown::Write)?;
    let (bytes, took) =
        sink.results.recv_timeout(Duration::from_secs(60)).context("sink result")?;
    Ok(bytes as f64 * 8.0 / 1e6 / took.as_secs_f64().max(1e-9))
}

/// A TCP sink: for each connection, the bytes read to EOF and how long from
/// accept to EOF.
struct Sink {
    port: u16,
    results: mpsc::Receiver<(u64, Duration)>,
}

impl Sink {
    /// On `[::]` inside `host`, or on 127.0.0.1 of this namespace.
    fn start(host: Option<&Host>) -> anyhow::Result<Sink> {
        let listener = match host {
            Some(h) => h.in_netns(|| Ok(TcpListener::bind("[::]:0")?))?,
            None => TcpListener::bind("127.0.0.1:0")?,
        };
        let port = listener.local_addr()?.port();
        let (tx, results) = mpsc::channel();
        std::thread::spawn(move || {
            for mut conn in listener.incoming().flatten() {
                let start = Instant::now();
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                while let Ok(n) = conn.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    total += n as u64;
                }
                if tx.send((total, start.elapsed())).is_err() {
                    return;
                }
            }
        });
        Ok(Sink { port, results })
    }
}

/// `wireguard-go --version`'s version, e.g. `v0.0.20220316`.
fn wireguard_go_version() -> Option<String> {
    let out = std::process::Command::new(wireguard_go()?).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let first = text.lines().next()?;
    first.split_whitespace().nth(1).map(str::to_owned)
}

/// A userspace WireGuard implementation the tunnel is compared with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Impl {
    Boringtun,
    WireguardGo,
}

impl Impl {
    /// The devices' names in `a` and `b` (their UAPI sockets are named after them).
    fn names(self) -> [&'static str; 2] {
        match self {
            Impl::Boringtun => ["bta", "btb"],
            Impl::WireguardGo => ["wgga", "wggb"],
        }
    }

    /// The devices' addresses in `a` and `b`, a /24 of each pair's own.
    fn addrs(self) -> [Ipv4Addr; 2] {
        match self {
            Impl::Boringtun => [Ipv4Addr::new(10, 200, 0, 1), Ipv4Addr::new(10, 200, 0, 2)],
            Impl::WireguardGo => [Ipv4Addr::new(10, 201, 0, 1), Ipv4Addr::new(10, 201, 0, 2)],
        }
    }

    fn port(self) -> u16 {
        match self {
            Impl::Boringtun => 51820,
            Impl::WireguardGo => 51821,
        }
    }

    /// Arguments that run device `name` in the foreground.
    fn args(self, name: &str) -> Vec<String> {
        match self {
            Impl::Boringtun => {
                vec![name.into(), "--foreground".into(), "--disable-drop-privileges".into()]
            }
            Impl::WireguardGo => vec!["-f".into(), name.into()],
        }
    }
}

/// Two devices of one implementation, one in `a` and one in `b`, peers of
/// each other; killed on drop.
struct UserspacePair {
    kind: Impl,
    children: Vec<Child>,
}

impl UserspacePair {
    fn start(kind: Impl, bin: &std::path::Path, a: &Host, b: &Host) -> anyhow::Result<Self> {
        let keys: Vec<[u8; 32]> = (0..2).map(|_| rand::random()).collect();
        let public = |k: &[u8; 32]| {
            boringtun::x25519::PublicKey::from(&boringtun::x25519::StaticSecret::from(*k))
                .to_bytes()
        };
        let mut pair = UserspacePair { kind, children: Vec::new() };
        let [name_a, name_b] = kind.names();
        let [addr_a, addr_b] = kind.addrs();
        let sides =
            [(a, name_a, 0, 1, addr_a, addr_b, b.addr), (b, name_b, 1, 0, addr_b, addr_a, a.addr)];
        for (host, name, me, peer, addr, peer_addr, peer_host) in sides {
            let sock = PathBuf::from(format!("/var/run/wireguard/{name}.sock"));
            // A socket left by an earlier run would refuse connections.
            let _ = std::fs::remove_file(&sock);
            let child = host
                .command(bin)
                .args(kind.args(name))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .with_context(|| format!("start {}", bin.display()))?;
            pair.children.push(child);
            let deadline = Instant::now() + Duration::from_secs(10);
            let mut uapi = loop {
                match std::os::unix::net::UnixStream::connect(&sock) {
                    Ok(s) => break s,
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) => bail!("{kind:?}'s {}: {e}", sock.display()),
                }
            };
            let config = format!(
                "set=1\nprivate_key={}\nlisten_port={}\nreplace_peers=true\npublic_key={}\nendpoint={}:{}\nallowed_ip={}/32\n\n",
                hex::encode(keys[me]),
                kind.port(),
                hex::encode(public(&keys[peer])),
                peer_host,
                kind.port(),
                peer_addr,
            );
            uapi.write_all(config.as_bytes())?;
            let mut answer = [0u8; 64];
            let n = uapi.read(&mut answer)?;
            if !String::from_utf8_lossy(&answer[..n]).contains("errno=0") {
                bail!("{kind:?} refused its config: {}", String::from_utf8_lossy(&answer[..n]));
            }
            let ns = host.netns.as_str();
            for args in [
                vec!["-n", ns, "addr", "add", &format!("{addr}/24"), "dev", name],
                vec!["-n", ns, "link", "set", name, "mtu", "1420", "up"],
            ] {
                let out = std::process::Command::new("ip").args(&args).output()?;
                if !out.status.success() {
                    bail!("ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
                }
            }
        }
        Ok(pair)
    }
}

impl Drop for UserspacePair {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        // Killed, they leave their UAPI sockets behind.
        for name in self.kind.names() {
            let _ = std::fs::remove_file(format!("/var/run/wireguard/{name}.sock"));
        }
    }
}
