//! IPv6 on a [`Topology`]: hosts that have a routable IPv6 address beside
//! their IPv4 one, for tests of direct paths over IPv6.
//!
//! ```text
//!   internet bridge  2001:db8:99::1/64       (N = 10 + host index, as 10.99.0.N)
//!   Nat::None host   2001:db8:99::N/64
//!   router wan       2001:db8:99::N/64, lan 2001:db8:99:1II::1/64 (II = host index)
//!   routed host      2001:db8:99:1II::2/64   (the internet routes 2001:db8:99:1II::/64 via the router)
//! ```
//!
//! The prefix is the documentation range, global unicast as far as the
//! mesh can tell (a ULA would count as a LAN address in the path selector).
//!
//! There is no NAT66: a routed host's own address is public, as with IPv6
//! at home. The router firewalls IPv6 the way home routers do (RFC 6092):
//! it forwards what its host sends and the replies to it, and drops
//! unsolicited inbound traffic, so two hosts still punch through each
//! other's firewall, but with no port to guess. The host's [`Nat`](super::Nat)
//! applies to IPv4 only: a `UdpBlocked` router blocks IPv4 UDP and lets
//! IPv6 through.

use std::net::Ipv6Addr;
use std::time::Duration;

use super::{ip, Host, Nat, Topology, FIRST_PUBLIC_HOST};

/// The internet's IPv6 address, on its bridge.
pub const INTERNET_ADDR6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0x99, 0, 0, 0, 0, 1);

impl Topology {
    /// [`Topology::host`] with IPv6 as well ([`Host::addr6`]; see
    /// [`ipv6`](self)). The internet gets [`INTERNET_ADDR6`] with the first
    /// such host: take [`Topology::internet`] after it to see it there.
    pub fn host_v6(&mut self, name: &str, nat: Nat) -> anyhow::Result<Host> {
        self.ipv6_internet()?;
        let index = self.hosts;
        let mut host = self.host(name, nat)?;
        let inet = self.internet.netns.clone();
        let public6 =
            Ipv6Addr::new(0x2001, 0xdb8, 0x99, 0, 0, 0, 0, u16::from(FIRST_PUBLIC_HOST + index));
        let Some(router) = host.router_netns.clone() else {
            link_up6(&host.netns, "eth0", public6, INTERNET_ADDR6)?;
            host.addr6 = Some(public6);
            reachable6(&host)?;
            return Ok(host);
        };
        if nat == Nat::HttpProxyOnly {
            anyhow::bail!("an HTTP-proxy-only network has no IPv6 either");
        }
        link_up6(&router, "wan", public6, INTERNET_ADDR6)?;
        let subnet = 0x100 + u16::from(index);
        let lan_gw = Ipv6Addr::new(0x2001, 0xdb8, 0x99, subnet, 0, 0, 0, 1);
        let addr6 = Ipv6Addr::new(0x2001, 0xdb8, 0x99, subnet, 0, 0, 0, 2);
        ip(&["-n", &router, "-6", "addr", "add", &format!("{lan_gw}/64"), "dev", "lan", "nodad"])?;
        link_up6(&host.netns, "eth0", addr6, lan_gw)?;
        ip(&["netns", "exec", &router, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
        let prefix = format!("2001:db8:99:{subnet:x}::/64");
        ip(&["-n", &inet, "-6", "route", "add", &prefix, "via", &public6.to_string()])?;
        for rule in [
            "-A FORWARD -i wan -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT",
            "-A FORWARD -i wan -p ipv6-icmp -j ACCEPT",
            "-A FORWARD -i wan -j DROP",
        ] {
            let mut args = vec!["netns", "exec", &router, "ip6tables"];
            args.extend(rule.split_whitespace());
            ip(&args)?;
        }
        host.addr6 = Some(addr6);
        reachable6(&host)?;
        Ok(host)
    }

    /// Gives the internet bridge [`INTERNET_ADDR6`] and makes it route
    /// between the hosts' prefixes, once.
    fn ipv6_internet(&mut self) -> anyhow::Result<()> {
        if self.internet.addr6.is_some() {
            return Ok(());
        }
        let inet = self.internet.netns.clone();
        // Neighbor discovery is multicast: with MLD snooping the bridge
        // forwards a solicitation only to ports it has heard join, which
        // takes a fresh port seconds.
        ip(&["-n", &inet, "link", "set", "br0", "type", "bridge", "mcast_snooping", "0"])?;
        ip(&[
            "-n",
            &inet,
            "-6",
            "addr",
            "add",
            &format!("{INTERNET_ADDR6}/64"),
            "dev",
            "br0",
            "nodad",
        ])?;
        ip(&["netns", "exec", &inet, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1"])?;
        self.internet.addr6 = Some(INTERNET_ADDR6);
        Ok(())
    }
}

/// Gives `dev` (already up) `addr/64`, without duplicate address detection
/// (the address is usable at once), and routes IPv6 via `gateway`.
fn link_up6(netns: &str, dev: &str, addr: Ipv6Addr, gateway: Ipv6Addr) -> anyhow::Result<()> {
    ip(&["-n", netns, "-6", "addr", "add", &format!("{addr}/64"), "dev", dev, "nodad"])?;
    ip(&["-n", netns, "-6", "route", "add", "default", "via", &gateway.to_string()])
}

/// Waits (up to 10 s) until `host` reaches the internet over IPv6 (a TCP
/// connection to a closed port of [`INTERNET_ADDR6`] is refused): fresh
/// links drop the first packets for a moment, which a test's first STUN
/// probe would take for a network without IPv6.
fn reachable6(host: &Host) -> anyhow::Result<()> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let closed = std::net::SocketAddr::from((INTERNET_ADDR6, 9));
    loop {
        let refused = host.in_netns(|| {
            let tried = std::net::TcpStream::connect_timeout(&closed, Duration::from_millis(500));
            Ok(matches!(tried, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused))
        })?;
        if refused {
            return Ok(());
        }
        if std::time::Instant::now() > deadline {
            anyhow::bail!("{} does not reach {INTERNET_ADDR6} over IPv6 within 10 s", host.netns);
        }
    }
}
