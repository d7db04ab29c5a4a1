//! A real `miniupnpd` (Debian's `miniupnpd-nftables`) on a host's router:
//! the gateway side of port mapping, with NAT-PMP/PCP and UPnP IGD each
//! switched on or off ([`PortMapping`]).
//!
//! miniupnpd listens on the router's `lan` side (NAT-PMP and PCP on UDP
//! 5351, SSDP on 1900, its HTTP server on [`HTTP_PORT`]) and adds each
//! mapping as a `dnat` rule and a forward `accept` in nftables chains of
//! its own (table `inet filter`, created here as its `nft_init.sh` would),
//! beside the router's `iptables` NAT. Two things make it work in the
//! topology's private address plan:
//! - miniupnpd refuses to map on a private `wan` address unless a STUN
//!   check (`ext_perform_stun`) shows the router is not itself behind a
//!   filtering NAT; so it gets a STUN server on the internet, and
//! - its STUN check needs the router's own packets to keep their source
//!   ports, which `MASQUERADE --random-fully` ([`Nat::Hard`](super::Nat::Hard))
//!   would change: the router's own traffic is exempted from it, as a real
//!   router's is.
//!
//! The process is killed when the handle drops (and with the topology).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use super::{ip, Host};

/// Where miniupnpd's HTTP server (UPnP description and control) listens.
pub const HTTP_PORT: u16 = 5000;
const BINARY: &str = "/usr/sbin/miniupnpd";

/// Which port-mapping protocols the router's miniupnpd answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortMapping {
    /// NAT-PMP and PCP (one switch in miniupnpd: `enable_natpmp`).
    pub nat_pmp_pcp: bool,
    /// UPnP IGD (`enable_upnp`).
    pub upnp: bool,
}

impl PortMapping {
    /// NAT-PMP and PCP only.
    pub const NAT_PMP_PCP: PortMapping = PortMapping { nat_pmp_pcp: true, upnp: false };
    /// UPnP IGD only.
    pub const UPNP: PortMapping = PortMapping { nat_pmp_pcp: false, upnp: true };
    /// All three.
    pub const ALL: PortMapping = PortMapping { nat_pmp_pcp: true, upnp: true };
}

/// A running miniupnpd; killed on drop.
pub struct Miniupnpd {
    child: Child,
    dir: tempfile::TempDir,
    router: String,
}

/// miniupnpd's chains, as its `nft_init.sh` lays them out.
const NFT_CHAINS: &str = "table inet filter {
  chain forward { type filter hook forward priority 0; policy accept; jump miniupnpd; }
  chain miniupnpd { }
  chain prerouting { type nat hook prerouting priority -100; policy accept; jump prerouting_miniupnpd; }
  chain postrouting { type nat hook postrouting priority 100; policy accept; jump postrouting_miniupnpd; }
  chain prerouting_miniupnpd { }
  chain postrouting_miniupnpd { }
}
";

impl Miniupnpd {
    /// Why miniupnpd cannot run here, or `None` if it can.
    pub fn unavailable() -> Option<String> {
        if !std::path::Path::new(BINARY).exists() {
            return Some(format!("{BINARY} is not installed (Debian: miniupnpd-nftables)"));
        }
        if !Command::new("nft").arg("--version").output().is_ok_and(|o| o.status.success()) {
            return Some("nft is not installed (Debian: nftables)".into());
        }
        None
    }

    /// Starts miniupnpd on `host`'s router with `protocols`, checking its
    /// public address against the STUN server `stun`; returns once it
    /// serves (its STUN check takes a few seconds).
    pub fn start(host: &Host, protocols: PortMapping, stun: SocketAddr) -> anyhow::Result<Self> {
        let Some(router) = host.router_netns.clone() else {
            bail!("host {} has no router to run miniupnpd on", host.netns);
        };
        let mut nft = Command::new("ip")
            .args(["netns", "exec", &router, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .context("nft")?;
        if let Some(mut stdin) = nft.stdin.take() {
            std::io::Write::write_all(&mut stdin, NFT_CHAINS.as_bytes())?;
        }
        if !nft.wait()?.success() {
            bail!("nft refused miniupnpd's chains");
        }
        // The router's own packets keep their ports (see the module docs).
        let public = host.public_addr.to_string();
        ip(&[
            "netns",
            "exec",
            &router,
            "iptables",
            "-t",
            "nat",
            "-I",
            "POSTROUTING",
            "1",
            "-o",
            "wan",
            "-s",
            &public,
            "-j",
            "ACCEPT",
        ])?;
        let dir = tempfile::tempdir()?;
        let lan = host.addr.octets();
        let yes_no = |on: bool| if on { "yes" } else { "no" };
        let mut conf = String::new();
        writeln!(conf, "ext_ifname=wan\nlistening_ip=lan\nhttp_port={HTTP_PORT}")?;
        writeln!(conf, "enable_natpmp={}", yes_no(protocols.nat_pmp_pcp))?;
        writeln!(conf, "enable_upnp={}", yes_no(protocols.upnp))?;
        writeln!(conf, "ext_perform_stun=yes\next_stun_host={}", stun.ip())?;
        writeln!(conf, "ext_stun_port={}", stun.port())?;
        // Short lifetimes are allowed, so tests can watch a renewal.
        writeln!(conf, "min_lifetime=2\nsecure_mode=yes\nsystem_uptime=yes")?;
        writeln!(conf, "uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b")?;
        writeln!(conf, "allow 1024-65535 {}.{}.{}.0/24 1024-65535", lan[0], lan[1], lan[2])?;
        writeln!(conf, "deny 0-65535 0.0.0.0/0 0-65535")?;
        let conf_path = dir.path().join("miniupnpd.conf");
        std::fs::write(&conf_path, conf)?;
        let log_path = dir.path().join("miniupnpd.log");
        let log = std::fs::File::create(&log_path)?;
        let child = Command::new("ip")
            .args(["netns", "exec", &router, BINARY, "-d", "-f"])
            .arg(&conf_path)
            .arg("-P")
            .arg(dir.path().join("miniupnpd.pid"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting miniupnpd")?;
        let mut daemon = Miniupnpd { child, dir, router };
        daemon.wait_serving(protocols)?;
        Ok(daemon)
    }

    /// Waits for the log lines that say port forwarding is enabled and the
    /// protocols listen.
    fn wait_serving(&mut self, protocols: PortMapping) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut wanted = vec!["Port forwarding is now enabled"];
        if protocols.nat_pmp_pcp {
            wanted.push("Listening for NAT-PMP/PCP traffic");
        }
        if protocols.upnp {
            wanted.push("HTTP listening on port");
        }
        loop {
            let log = self.log();
            if wanted.iter().all(|w| log.contains(w)) {
                return Ok(());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("miniupnpd exited ({status}):\n{log}");
            }
            if Instant::now() > deadline {
                bail!("miniupnpd did not start serving in 15 s:\n{log}");
            }
            // Polling its log: miniupnpd announces readiness nowhere else.
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Its log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("miniupnpd.log")
    }

    /// The router's `dnat` rules that miniupnpd added (one line per mapping).
    pub fn redirects(&self) -> anyhow::Result<Vec<String>> {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.router, "nft", "list", "chain", "inet", "filter"])
            .arg("prerouting_miniupnpd")
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        Ok(text.lines().filter(|l| l.contains("dnat")).map(|l| l.trim().to_owned()).collect())
    }
}

impl Drop for Miniupnpd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
