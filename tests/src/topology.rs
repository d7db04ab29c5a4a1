//! Network-namespace topologies for NAT-traversal tests and benchmarks.
//!
//! A [`Topology`] is a little internet on one machine, built from `ip netns`,
//! veth pairs and `iptables`, all inside namespaces it owns (the root namespace
//! is never touched, so topologies of parallel test processes cannot collide):
//!
//! ```text
//!             ┌──────────────── internet (bridge 10.99.0.1/24) ─────────────────┐
//!             │  coderd: HTTP, relay, STUN on 10.99.0.1                          │
//!             └──┬──────────────────┬──────────────────────┬────────────────────┘
//!        10.99.0.10           10.99.0.11 (wan)        10.99.0.12 (wan)
//!        host "a"             router "b": NAT          router "c": NAT
//!        (Nat::None)          10.99.101.1 (lan)        10.99.102.1 (lan)
//!                                  │                        │
//!                             host "b" 10.99.101.2     host "c" 10.99.102.2
//! ```
//!
//! Each host gets its own router namespace doing one kind of [`Nat`]; a
//! [`Host`] is a namespace name plus addresses, and [`Host::command`] runs a
//! program inside it (`ip netns exec`). [`Host::in_netns`] and
//! [`Host::bind_udp`] open sockets in the namespace from this process, for
//! probing the NAT itself.
//!
//! Namespaces are named `ctopo-<name>-<pid>-<role>`. [`Topology::new`] first
//! removes namespaces of the same `<name>` whose process is gone (a crashed
//! run), killing whatever still runs in them; dropping the `Topology` kills
//! every process left in its namespaces and deletes them, which takes the
//! veths and iptables rules with them. [`mesh`] puts in-process relays, STUN
//! servers and mesh nodes into a topology's namespaces;
//! [`Topology::host_v6`] adds hosts with IPv6 as well.

use std::fmt;
use std::io::{BufRead, BufReader, Write};
use std::net::{
    Ipv4Addr, Shutdown, SocketAddr, SocketAddrV4, TcpListener, TcpStream, ToSocketAddrs, UdpSocket,
};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::Coderd;

mod ipv6;
pub mod mesh;
mod miniupnpd;
mod procs;

pub use ipv6::INTERNET_ADDR6;
pub use miniupnpd::{Miniupnpd, PortMapping};
pub use procs::{coder, start_agent, AgentProcess};

/// Where every topology's namespaces start; used to find stale ones.
const PREFIX: &str = "ctopo-";
/// The internet's own address: the bridge in the internet namespace.
pub const INTERNET_ADDR: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);
/// The internet bridge's MAC, fixed (locally administered, from its address).
const BRIDGE_MAC: &str = "02:00:0a:63:00:01";
/// Hosts (or their routers) get public addresses from this `/24` upward.
const FIRST_PUBLIC_HOST: u8 = 10;
/// Where an [`Nat::HttpProxyOnly`] router's proxy listens, on its LAN address.
const HTTP_PROXY_PORT: u16 = 3128;

/// How a host reaches the internet: the behaviour of its router.
///
/// Terms from RFC 4787: *mapping* says which public port a flow gets,
/// *filtering* which inbound packets reach the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Nat {
    /// No router: the host's own address is public, nothing is filtered.
    None,
    /// `MASQUERADE`: endpoint-independent mapping (Linux keeps the source
    /// port when it is free), but address-and-port-dependent filtering
    /// (conntrack admits only replies from the exact address:port the host
    /// sent to). What most Linux-based home routers do.
    Easy,
    /// [`Nat::Easy`] on a router that does not firewall itself: its INPUT
    /// chain accepts what arrives on `wan` (the default of a Linux box doing
    /// NAT: a Docker or VM host, a small cloud gateway). A peer's probe that
    /// arrives before the host has sent to that peer is answered with
    /// port-unreachable, and the conntrack entry it leaves clashes with the
    /// host's own punch (see [`Nat::rules`] and `docs/reliability.md`).
    EasyAnswering,
    /// Endpoint-independent mapping *and* filtering ("full cone"):
    /// `MASQUERADE` plus a `DNAT` of all inbound UDP to the one host, as a
    /// router with a port forward (or UPnP/NAT-PMP) would behave.
    FullCone,
    /// Endpoint-dependent mapping: `MASQUERADE --random-fully`, a fresh random
    /// public port for every new destination (carrier-grade and some
    /// corporate NATs).
    Hard,
    /// `MASQUERADE` and every forwarded UDP packet dropped: only TCP leaves.
    UdpBlocked,
    /// Nothing is forwarded at all; the only way out is an HTTP proxy on the
    /// router (`CONNECT`, and absolute-form requests for `http://`), whose URL
    /// is [`Host::http_proxy`]. A locked-down corporate network.
    HttpProxyOnly,
}

impl Nat {
    /// Every kind through which traffic flows without a proxy, in the order
    /// the matrix test walks them.
    pub const ALL: [Nat; 6] =
        [Nat::None, Nat::Easy, Nat::EasyAnswering, Nat::FullCone, Nat::Hard, Nat::UdpBlocked];

    /// A short name for test output and namespace names.
    pub fn name(self) -> &'static str {
        match self {
            Nat::None => "none",
            Nat::Easy => "easy",
            Nat::EasyAnswering => "answering",
            Nat::FullCone => "fullcone",
            Nat::Hard => "hard",
            Nat::UdpBlocked => "udpblocked",
            Nat::HttpProxyOnly => "httpproxy",
        }
    }

    /// The router's `iptables` rules, one command line each.
    ///
    /// Every router but [`Nat::EasyAnswering`]'s also firewalls itself, as
    /// home routers do: on `wan`, only
    /// replies reach its own stack. That matters for hole punching: without
    /// it, a peer's probe that arrives before the host has sent anything to
    /// that peer is accepted by the router's INPUT chain (then answered
    /// with port-unreachable), which *confirms* a conntrack entry for that
    /// address pair; the host's own packet to the peer then clashes with it,
    /// and `MASQUERADE` picks another source port, so an `Easy` NAT behaves
    /// like a `Hard` one toward exactly the peers it punches to. Dropping the
    /// probe in INPUT leaves the entry unconfirmed, so nothing clashes.
    fn rules(self, host: Ipv4Addr) -> Vec<String> {
        let masquerade = match self {
            Nat::Hard => "-t nat -A POSTROUTING -o wan -j MASQUERADE --random-fully",
            _ => "-t nat -A POSTROUTING -o wan -j MASQUERADE",
        };
        let mut rules = vec![masquerade.to_owned()];
        if self != Nat::EasyAnswering {
            rules.push(
                "-A INPUT -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT".to_owned(),
            );
            rules.push("-A INPUT -i wan -j DROP".to_owned());
        }
        match self {
            Nat::FullCone => rules.push(format!(
                "-t nat -A PREROUTING -i wan -p udp -j DNAT --to-destination {host}"
            )),
            Nat::UdpBlocked => rules.push("-A FORWARD -p udp -j DROP".to_owned()),
            Nat::HttpProxyOnly => rules.push("-P FORWARD DROP".to_owned()),
            Nat::None | Nat::Easy | Nat::EasyAnswering | Nat::Hard => {}
        }
        rules
    }
}

impl fmt::Display for Nat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A network namespace on the topology that programs can run in.
#[derive(Clone, Debug)]
pub struct Host {
    /// The `ip netns` name.
    pub netns: String,
    /// The address of the host's own interface.
    pub addr: Ipv4Addr,
    /// The address the internet sees (the router's, behind a NAT).
    pub public_addr: Ipv4Addr,
    /// Its routable IPv6 address, for hosts made by [`Topology::host_v6`].
    pub addr6: Option<std::net::Ipv6Addr>,
    /// The router in front of it.
    pub nat: Nat,
    /// The router's namespace, if it has one.
    pub router_netns: Option<String>,
    /// `http://ROUTER:3128` for [`Nat::HttpProxyOnly`]: pass it as
    /// `HTTP_PROXY`/`HTTPS_PROXY`.
    pub http_proxy: Option<String>,
}

impl Host {
    /// `program` run inside this host's namespace (`ip netns exec NETNS program`);
    /// `ip` execs in place, so the child's pid is the program's.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns]).arg(program);
        cmd
    }

    /// Runs `f` on a short-lived thread inside this host's namespace. Sockets
    /// stay in the namespace they were created in, so what `f` opens (and
    /// returns) works from any thread of this process afterwards.
    pub fn in_netns<T: Send>(
        &self,
        f: impl FnOnce() -> anyhow::Result<T> + Send,
    ) -> anyhow::Result<T> {
        in_netns(&self.netns, f)
    }

    /// A UDP socket bound inside the namespace on `port` (0: any).
    pub fn bind_udp(&self, port: u16) -> anyhow::Result<UdpSocket> {
        let addr = SocketAddr::V4(SocketAddrV4::new(self.addr, port));
        self.in_netns(|| UdpSocket::bind(addr).with_context(|| format!("bind {addr}")))
    }
}

/// Runs `f` on a thread that has entered `netns`; whatever sockets it opens
/// live in that namespace.
fn in_netns<T: Send>(
    netns: &str,
    f: impl FnOnce() -> anyhow::Result<T> + Send,
) -> anyhow::Result<T> {
    std::thread::scope(|s| {
        s.spawn(|| {
            enter_netns(netns)?;
            f()
        })
        .join()
        .map_err(|_| anyhow::anyhow!("thread in {netns} panicked"))?
    })
}

/// Moves the calling thread into `netns`; threads it spawns start there too.
fn enter_netns(netns: &str) -> anyhow::Result<()> {
    let path = Path::new("/run/netns").join(netns);
    let file = std::fs::File::open(&path).with_context(|| format!("open {}", path.display()))?;
    nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET)
        .with_context(|| format!("enter network namespace {netns}"))
}

/// One internet with hosts behind routers; torn down on drop.
pub struct Topology {
    /// `ctopo-<name>-<pid>-`.
    prefix: String,
    internet: Host,
    /// Every namespace created, internet first.
    namespaces: Vec<String>,
    hosts: u8,
    /// Proxies of `HttpProxyOnly` routers; stopped before the namespaces go.
    proxies: Vec<HttpProxy>,
}

impl Topology {
    /// Why topologies cannot be built here (not root, no `ip netns`, no
    /// `iptables`), or `None` if they can. Tests print it and skip.
    pub fn unavailable() -> Option<String> {
        if !nix::unistd::geteuid().is_root() {
            return Some("network-namespace tests need root".into());
        }
        for (tool, version) in [("ip", "-V"), ("iptables", "--version")] {
            if !Command::new(tool).arg(version).output().is_ok_and(|o| o.status.success()) {
                return Some(format!("{tool} is not installed"));
            }
        }
        let _ = remove_stale(&format!("{PREFIX}probe-"));
        let probe = format!("{PREFIX}probe-{}", std::process::id());
        if let Err(e) = ip(&["netns", "add", &probe]) {
            return Some(format!("`ip netns add` does not work here: {e:#}"));
        }
        let nat = ip(&["netns", "exec", &probe, "iptables", "-t", "nat", "-L", "-n"]);
        let _ = ip(&["netns", "del", &probe]);
        if let Err(e) = nat {
            return Some(format!("iptables nat does not work in a namespace: {e:#}"));
        }
        None
    }

    /// Creates the internet namespace (a bridge at [`INTERNET_ADDR`]`/24`)
    /// after removing stale namespaces of an earlier run named `name`.
    /// `name`: a few ASCII letters, digits or dashes, unique per test.
    pub fn new(name: &str) -> anyhow::Result<Topology> {
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
            bail!("topology name {name:?}: use ASCII letters, digits and dashes");
        }
        remove_stale(&format!("{PREFIX}{name}-"))?;
        let prefix = format!("{PREFIX}{name}-{}-", std::process::id());
        let netns = format!("{prefix}inet");
        let mut topo = Topology {
            prefix,
            internet: Host {
                netns: netns.clone(),
                addr: INTERNET_ADDR,
                public_addr: INTERNET_ADDR,
                addr6: None,
                nat: Nat::None,
                router_netns: None,
                http_proxy: None,
            },
            namespaces: Vec::new(),
            hosts: 0,
            proxies: Vec::new(),
        };
        topo.add_netns(&netns)?;
        // A bridge without an address of its own takes the lowest MAC of its
        // ports, so it changes whenever a host joins; hosts that cached the
        // old one in ARP then send to a MAC nobody has, for as long as the
        // entry lives (a relay connection once timed out this way).
        ip(&["-n", &netns, "link", "add", "br0", "address", BRIDGE_MAC, "type", "bridge"])?;
        ip(&["-n", &netns, "addr", "add", &format!("{INTERNET_ADDR}/24"), "dev", "br0"])?;
        ip(&["-n", &netns, "link", "set", "br0", "up"])?;
        Ok(topo)
    }

    /// The internet namespace, where servers (coderd, relays, STUN) run.
    pub fn internet(&self) -> &Host {
        &self.internet
    }

    /// Adds a host named `name` (ASCII letters and digits, ≤ 8) reaching the
    /// internet through a router doing `nat` (no router for [`Nat::None`]).
    pub fn host(&mut self, name: &str, nat: Nat) -> anyhow::Result<Host> {
        if name.is_empty() || name.len() > 8 || !name.bytes().all(|b| b.is_ascii_alphanumeric()) {
            bail!("host name {name:?}: 1 to 8 ASCII letters or digits");
        }
        let index = self.hosts;
        if index >= 100 {
            bail!("a topology has at most 100 hosts");
        }
        self.hosts += 1;
        let public = Ipv4Addr::new(10, 99, 0, FIRST_PUBLIC_HOST + index);
        let inet = self.internet.netns.clone();
        let netns = format!("{}{name}", self.prefix);
        self.add_netns(&netns)?;
        // The internet's side of the link is a bridge port named after the index.
        let port = format!("p{index}");
        if nat == Nat::None {
            ip(&[
                "-n", &inet, "link", "add", &port, "type", "veth", "peer", "name", "eth0", "netns",
                &netns,
            ])?;
            attach(&inet, &port)?;
            link_up(&netns, "eth0", public, 24, INTERNET_ADDR)?;
            return Ok(Host {
                netns,
                addr: public,
                public_addr: public,
                addr6: None,
                nat,
                router_netns: None,
                http_proxy: None,
            });
        }
        let router = format!("{}{name}-rtr", self.prefix);
        self.add_netns(&router)?;
        ip(&[
            "-n", &inet, "link", "add", &port, "type", "veth", "peer", "name", "wan", "netns",
            &router,
        ])?;
        attach(&inet, &port)?;
        link_up(&router, "wan", public, 24, INTERNET_ADDR)?;
        let lan_gw = Ipv4Addr::new(10, 99, 100 + index, 1);
        let addr = Ipv4Addr::new(10, 99, 100 + index, 2);
        ip(&[
            "-n", &router, "link", "add", "lan", "type", "veth", "peer", "name", "eth0", "netns",
            &netns,
        ])?;
        ip(&["-n", &router, "addr", "add", &format!("{lan_gw}/24"), "dev", "lan"])?;
        ip(&["-n", &router, "link", "set", "lan", "up"])?;
        link_up(&netns, "eth0", addr, 24, lan_gw)?;
        ip(&["netns", "exec", &router, "sysctl", "-qw", "net.ipv4.ip_forward=1"])?;
        for rule in nat.rules(addr) {
            let mut args = vec!["netns", "exec", &router, "iptables"];
            args.extend(rule.split_whitespace());
            ip(&args)?;
        }
        let http_proxy = if nat == Nat::HttpProxyOnly {
            let proxy = HttpProxy::spawn(&router, SocketAddr::from((lan_gw, HTTP_PROXY_PORT)))?;
            self.proxies.push(proxy);
            Some(format!("http://{lan_gw}:{HTTP_PROXY_PORT}"))
        } else {
            None
        };
        Ok(Host {
            netns,
            addr,
            public_addr: public,
            addr6: None,
            nat,
            router_netns: Some(router),
            http_proxy,
        })
    }

    /// The UDP entries of a host's router's conntrack table (`conntrack -L
    /// -p udp`), for explaining a failure; says so if `conntrack` is missing.
    pub fn router_conntrack(&self, host: &Host) -> String {
        let Some(router) = &host.router_netns else { return String::from("(no router)") };
        match Command::new("ip")
            .args(["netns", "exec", router, "conntrack", "-L", "-p", "udp"])
            .output()
        {
            Ok(o) => String::from_utf8_lossy(&o.stdout).into_owned(),
            Err(e) => format!("(conntrack: {e})"),
        }
    }

    /// The `iptables` packet counters of a host's router (`-L -v -n -x` of
    /// all tables), for explaining a failure.
    pub fn router_counters(&self, host: &Host) -> String {
        let Some(router) = &host.router_netns else { return String::from("(no router)") };
        let mut out = String::new();
        for table in ["nat", "filter"] {
            let listing = Command::new("ip")
                .args(["netns", "exec", router, "iptables", "-t", table, "-L", "-v", "-n", "-x"])
                .output();
            if let Ok(o) = listing {
                out.push_str(&String::from_utf8_lossy(&o.stdout));
            }
        }
        out
    }

    fn add_netns(&mut self, netns: &str) -> anyhow::Result<()> {
        ip(&["netns", "add", netns])?;
        self.namespaces.push(netns.to_owned());
        ip(&["-n", netns, "link", "set", "lo", "up"])?;
        Ok(())
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        self.proxies.clear();
        for netns in self.namespaces.iter().rev() {
            kill_all_in(netns);
            let _ = ip(&["netns", "del", netns]);
        }
    }
}

/// A template whose agent token is written to `TOKEN_DIR/<workspace>.token`
/// (replace `TOKEN_DIR`) and whose agent nothing starts: a topology test runs
/// `coder-agent` in the namespace it wants.
pub const TOKEN_FILE_TEMPLATE: &str = r#"
terraform {
  required_providers {
    coder = {
      source  = "coder/coder"
      version = ">= 2.0.0"
    }
  }
}

data "coder_workspace" "me" {}

resource "coder_agent" "main" {
  os   = "linux"
  arch = "amd64"
}

resource "terraform_data" "token" {
  count            = data.coder_workspace.me.start_count
  triggers_replace = [coder_agent.main.token]
  provisioner "local-exec" {
    command = "umask 077 && printf '%s' \"$TOKEN\" > \"$OUT.tmp\" && mv \"$OUT.tmp\" \"$OUT\""
    environment = {
      TOKEN = coder_agent.main.token
      OUT   = "TOKEN_DIR/${data.coder_workspace.me.name}.token"
    }
  }
}
"#;

/// Writes [`TOKEN_FILE_TEMPLATE`] to `scratch/tpl` with tokens going to
/// `scratch/tokens` and pushes it as template `name` with `coder` (a
/// logged-in `coder` command in some namespace). Returns the tokens directory.
pub fn push_token_template(
    mut coder: Command,
    scratch: &Path,
    name: &str,
) -> anyhow::Result<std::path::PathBuf> {
    let tokens = scratch.join("tokens");
    std::fs::create_dir_all(&tokens)?;
    let tpl = scratch.join("tpl");
    std::fs::create_dir_all(&tpl)?;
    let tokens_s = tokens.to_str().context("non-UTF-8 path")?;
    std::fs::write(tpl.join("main.tf"), TOKEN_FILE_TEMPLATE.replace("TOKEN_DIR", tokens_s))?;
    let tpl_s = tpl.to_str().context("non-UTF-8 path")?;
    crate::run_ok(coder.args(["templates", "push", name, "-d", tpl_s, "--yes"]))?;
    Ok(tokens)
}

/// Starts `coderd server` inside `host` (normally [`Topology::internet`]):
/// HTTP on `0.0.0.0:port`, access URL and STUN (port 3478) on the host's
/// public address (unless `extra` names `--access-url` or
/// `--stun-address`), embedded Postgres under `data_dir`. Waits up to 90 s
/// for it to listen. The returned [`Coderd`]'s `url` is the access URL.
pub fn spawn_coderd(
    host: &Host,
    data_dir: &Path,
    port: u16,
    extra: &[&str],
) -> anyhow::Result<Coderd> {
    let log = data_dir.join(format!("coderd-{}.log", std::process::id()));
    std::fs::create_dir_all(data_dir)?;
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(&log)?;
    let given = |flag: &str| extra.iter().position(|a| *a == flag).and_then(|i| extra.get(i + 1));
    let access_url = match given("--access-url") {
        Some(url) => url.to_string(),
        None => format!("http://{}:{port}", host.public_addr),
    };
    let mut defaults = vec!["--access-url".to_owned(), access_url.clone()];
    if given("--stun-address").is_none() {
        defaults.extend(["--stun-address".to_owned(), format!("{}:3478", host.public_addr)]);
    }
    if given("--access-url").is_some() {
        defaults.drain(..2);
    }
    let mut child = host
        .command(crate::binary("coderd")?)
        .arg("server")
        .args(["--http-address", &format!("0.0.0.0:{port}")])
        .args(&defaults)
        .arg("--data-dir")
        .arg(data_dir)
        .args(extra)
        .env_remove("CODER_PG_CONNECTION_URL")
        .env("HOME", data_dir.join("home"))
        .stdout(Stdio::piped())
        .stderr(log_file)
        .spawn()
        .context("spawn coderd")?;
    let stdout = child.stdout.take().context("coderd stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.starts_with("coderd is listening on ") {
                let _ = tx.send(());
            }
        }
    });
    // Build the guard first, so a failure below still kills the process.
    let srv = Coderd {
        child,
        url: url::Url::parse(&access_url)?,
        data_dir: data_dir.into(),
        log,
        keep_agents: false,
    };
    if rx.recv_timeout(Duration::from_secs(90)).is_err() {
        let logged = std::fs::read_to_string(&srv.log).unwrap_or_default();
        bail!("coderd did not start within 90 s in {}; its log:\n{logged}", host.netns);
    }
    Ok(srv)
}

/// A `derper` (a relay region of its own) running in a namespace; killed
/// with SIGKILL on drop.
pub struct Derper {
    child: std::process::Child,
    host: Host,
    /// Its HTTP port on the host's address.
    pub port: u16,
    /// `http://ADDR:PORT/derp`, for a relay map.
    pub url: String,
}

/// Starts `derper` in `host` on `port` (HTTP, no TLS, no STUN) and waits
/// (up to 30 s) until it logs that it listens.
pub fn spawn_derper(host: &Host, port: u16) -> anyhow::Result<Derper> {
    let mut child = host
        .command(crate::binary("derper")?)
        .args(["--http-address", &format!("{}:{port}", host.addr), "--no-stun"])
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("spawn derper")?;
    let stdout = child.stdout.take().context("derper stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("relay listening") {
                let _ = tx.send(());
            }
        }
    });
    let derper = Derper {
        child,
        host: host.clone(),
        port,
        url: format!("http://{}:{port}/derp", host.addr),
    };
    if rx.recv_timeout(Duration::from_secs(30)).is_err() {
        bail!("derper did not listen on {}:{port} within 30 s", host.addr);
    }
    Ok(derper)
}

impl Derper {
    /// A counter or gauge from its `/metrics` (`derp_<name>`).
    pub fn metric(&self, name: &str) -> anyhow::Result<u64> {
        let addr = SocketAddr::from((self.host.addr, self.port));
        let text = self.host.in_netns(|| {
            let mut tcp = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
            tcp.set_read_timeout(Some(Duration::from_secs(5)))?;
            tcp.write_all(b"GET /metrics HTTP/1.0\r\n\r\n")?;
            let mut text = String::new();
            std::io::Read::read_to_string(&mut tcp, &mut text)?;
            Ok(text)
        })?;
        let key = format!("derp_{name} ");
        let line = text.lines().find_map(|l| l.strip_prefix(&key));
        line.with_context(|| format!("no derp_{name} in {addr}/metrics"))?
            .trim()
            .parse()
            .with_context(|| format!("derp_{name} is not a number"))
    }

    /// SIGKILL, and wait for it to be gone (its connections close with it).
    pub fn kill9(&mut self) -> anyhow::Result<()> {
        self.child.kill()?;
        self.child.wait()?;
        Ok(())
    }
}

impl Drop for Derper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A minimal HTTP forward proxy running on threads of this process inside a
/// router's namespace, so its upstream connections leave from the router.
/// `CONNECT host:port` is tunnelled; an absolute-form request
/// (`GET http://host:port/path`) is forwarded as is to that host, with the
/// rest of the client connection. Stops on drop.
struct HttpProxy {
    netns: String,
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl HttpProxy {
    fn spawn(netns: &str, addr: SocketAddr) -> anyhow::Result<HttpProxy> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn({
            let (netns, stop) = (netns.to_owned(), stop.clone());
            move || {
                let listener = enter_netns(&netns)
                    .and_then(|()| TcpListener::bind(addr).with_context(|| format!("bind {addr}")));
                let listener = match listener {
                    Ok(l) => {
                        let _ = tx.send(Ok(()));
                        l
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e));
                        return;
                    }
                };
                for conn in listener.incoming() {
                    if stop.load(Ordering::SeqCst) {
                        return;
                    }
                    if let Ok(conn) = conn {
                        // Connection threads inherit the namespace.
                        std::thread::spawn(move || {
                            let _ = proxy_connection(conn);
                        });
                    }
                }
            }
        });
        rx.recv().context("proxy thread exited")??;
        Ok(HttpProxy { netns: netns.to_owned(), addr, stop, thread: Some(thread) })
    }
}

impl Drop for HttpProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let addr = self.addr;
        let _ = in_netns(&self.netns, || Ok(TcpStream::connect(addr)?));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Serves one client connection of [`HttpProxy`].
fn proxy_connection(client: TcpStream) -> anyhow::Result<()> {
    let mut reader = BufReader::new(client.try_clone()?);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            bail!("client closed before the end of the request head");
        }
        head.push_str(&line);
        if line == "\r\n" || line == "\n" {
            break;
        }
        if head.len() > 64 * 1024 {
            bail!("request head too long");
        }
    }
    let mut parts = head.split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    let connect = method.eq_ignore_ascii_case("CONNECT");
    let authority = if connect {
        target.to_owned()
    } else {
        let rest = target.strip_prefix("http://").context("neither CONNECT nor http://")?;
        let host = rest.split('/').next().unwrap_or(rest);
        if host.contains(':') {
            host.to_owned()
        } else {
            format!("{host}:80")
        }
    };
    let mut writer = client;
    let upstream = authority
        .to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .and_then(|a| TcpStream::connect_timeout(&a, Duration::from_secs(10)).ok());
    let Some(mut upstream) = upstream else {
        writer.write_all(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\n\r\n")?;
        bail!("cannot reach {authority}");
    };
    if connect {
        writer.write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")?;
    } else {
        upstream.write_all(head.as_bytes())?;
    }
    let mut upstream_reader = upstream.try_clone()?;
    let up = std::thread::spawn(move || {
        // `reader` still holds whatever the client sent after the head.
        let _ = std::io::copy(&mut reader, &mut upstream);
        let _ = upstream.shutdown(Shutdown::Write);
    });
    let _ = std::io::copy(&mut upstream_reader, &mut writer);
    let _ = writer.shutdown(Shutdown::Write);
    let _ = up.join();
    Ok(())
}

/// Adds a bridge port in the internet namespace and brings it up.
fn attach(inet: &str, port: &str) -> anyhow::Result<()> {
    ip(&["-n", inet, "link", "set", port, "master", "br0"])?;
    ip(&["-n", inet, "link", "set", port, "up"])
}

/// Addresses `dev` in `netns`, brings it up and routes everything via `gateway`.
fn link_up(
    netns: &str,
    dev: &str,
    addr: Ipv4Addr,
    prefix_len: u8,
    gateway: Ipv4Addr,
) -> anyhow::Result<()> {
    ip(&["-n", netns, "addr", "add", &format!("{addr}/{prefix_len}"), "dev", dev])?;
    ip(&["-n", netns, "link", "set", dev, "up"])?;
    ip(&["-n", netns, "route", "add", "default", "via", &gateway.to_string()])
}

/// Removes namespaces starting with `prefix` (`ctopo-<name>-`) whose creating
/// process (the pid after the prefix) no longer runs.
fn remove_stale(prefix: &str) -> anyhow::Result<()> {
    let out = Command::new("ip").args(["netns", "list"]).output().context("run ip netns list")?;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(netns) = line.split_whitespace().next() else { continue };
        let Some(rest) = netns.strip_prefix(prefix) else { continue };
        let Some(Ok(pid)) = rest.split('-').next().map(str::parse::<i32>) else { continue };
        let alive = pid > 0 && Path::new(&format!("/proc/{pid}")).exists();
        if !alive || pid == i32::try_from(std::process::id()).unwrap_or(0) {
            eprintln!("removing stale network namespace {netns}");
            kill_all_in(netns);
            let _ = ip(&["netns", "del", netns]);
        }
    }
    Ok(())
}

/// SIGKILLs every process left in `netns` (`ip netns pids`).
fn kill_all_in(netns: &str) {
    let Ok(out) = Command::new("ip").args(["netns", "pids", netns]).output() else { return };
    for pid in String::from_utf8_lossy(&out.stdout).split_whitespace() {
        if let Ok(pid) = pid.parse::<i32>() {
            if pid > 1 && u32::try_from(pid).ok() != Some(std::process::id()) {
                let pid = nix::unistd::Pid::from_raw(pid);
                let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
            }
        }
    }
}

/// Runs `ip ARGS`, failing with its stderr.
fn ip(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run ip {}", args.join(" ")))?;
    if !out.status.success() {
        bail!("ip {} failed: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(())
}
