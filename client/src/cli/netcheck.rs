//! `coder netcheck`: what this machine's network allows for the mesh.
//!
//! - UDP and the mapped address: one UDP socket asks every STUN server in
//!   the deployment's relay map which address it sees; any answer proves
//!   outbound UDP works.
//! - IPv6: a second socket asks the STUN servers whose names resolve to
//!   IPv6 addresses; an answer gives the mapped IPv6 address and the
//!   latency over IPv6. No IPv6 socket or route means no; no STUN server
//!   with an IPv6 address in the map means unknown.
//! - NAT: the mapped address equal to the socket's own (source IP toward
//!   the server, bound port) means no NAT. The mapping *varies by
//!   destination* (a "hard" NAT that defeats direct paths) when two STUN
//!   servers see different mapped addresses for the same socket; with fewer
//!   than two answering servers that is reported as unknown.
//! - Relays: a fresh relay client per region, the best of a few pings; the
//!   preferred region is the one the mesh would make its home from these
//!   latencies ([`mesh::HomeSelector::first_home`]: the fastest, the lowest
//!   id among those about as fast). Its key is announced through the
//!   coordinator first, as relays admit no other.
//! - Port mapping: which of PCP, NAT-PMP and UPnP IGD the default gateway
//!   answers ([`mesh::portmap::probe`]), asked only with `--port-mapping`
//!   or `CODER_PORT_MAPPING` set (the mesh maps ports only then too).

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::Serialize;
use tokio::net::UdpSocket;

use super::output::{self, out, outln, OutputFormat};
use super::ping::millis;
use super::speedtest::parse_duration;
use super::Context_;
use codersdk::RelayMap;

#[derive(clap::Args, Debug)]
pub struct NetcheckArgs {
    /// How long to wait for each STUN answer and relay ping.
    #[arg(long, default_value = "3s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Ask the default gateway which port-mapping protocols it speaks
    /// (also on when `CODER_PORT_MAPPING` names any).
    #[arg(long)]
    pub port_mapping: bool,
    #[command(flatten)]
    pub out: output::OutputArgs,
}

#[derive(Debug, Clone, Serialize)]
struct StunResult {
    region_id: u16,
    /// As the relay map names it (`host:port`).
    server: String,
    addr: Option<SocketAddr>,
    mapped: Option<SocketAddr>,
    latency_ms: Option<f64>,
    error: Option<String>,
}

#[derive(Debug, Serialize)]
struct RegionResult {
    region_id: u16,
    code: String,
    name: String,
    latency_ms: Option<f64>,
    error: Option<String>,
    /// The best round trip, unrounded, for choosing the preferred region.
    #[serde(skip)]
    rtt: Option<Duration>,
}

#[derive(Debug, Serialize)]
struct Report {
    /// Whether outbound UDP works; `null` when the relay map lists no STUN server.
    udp: Option<bool>,
    /// The port the probing socket was bound to.
    local_port: u16,
    /// The first mapped IPv4 address a STUN server reported.
    mapped_v4: Option<SocketAddr>,
    /// Whether UDP over IPv6 works; `null` when it cannot be told (the
    /// machine has IPv6 but the relay map lists no STUN server with an
    /// IPv6 address).
    ipv6: Option<bool>,
    /// Why `ipv6` is what it is.
    ipv6_note: String,
    /// The first mapped IPv6 address a STUN server reported.
    mapped_v6: Option<SocketAddr>,
    /// The best STUN round trip over IPv6.
    ipv6_latency_ms: Option<f64>,
    /// `null` when it cannot be told (no answer from STUN).
    behind_nat: Option<bool>,
    /// `null` when fewer than two STUN servers answered.
    mapping_varies_by_dest: Option<bool>,
    /// How the mapping verdict was reached, or why it is unknown.
    mapping_note: String,
    stun: Vec<StunResult>,
    regions: Vec<RegionResult>,
    preferred_region: Option<u16>,
    /// `null` when not asked (see `--port-mapping`).
    port_mapping: Option<mesh::portmap::Probe>,
}

/// Every STUN server in the map, in region order, without duplicates.
fn stun_servers(map: &RelayMap) -> Vec<(u16, String)> {
    let mut out: Vec<(u16, String)> = Vec::new();
    for region in map.regions.values() {
        for node in &region.nodes {
            if let Some(s) = &node.stun {
                if !out.iter().any(|(_, known)| known == s) {
                    out.push((region.region_id, s.clone()));
                }
            }
        }
    }
    out
}

/// The addresses `server` (`host:port`) resolves to.
async fn resolve(server: &str) -> Result<Vec<SocketAddr>, String> {
    match tokio::net::lookup_host(server).await {
        Ok(addrs) => Ok(addrs.collect()),
        Err(e) => Err(format!("cannot resolve: {e}")),
    }
}

/// Asks `server` at `addr` (of `socket`'s family) which address it sees.
async fn probe_stun(
    socket: &UdpSocket,
    region_id: u16,
    server: String,
    addr: SocketAddr,
    timeout: Duration,
) -> StunResult {
    let mut result = StunResult {
        region_id,
        server,
        addr: Some(addr),
        mapped: None,
        latency_ms: None,
        error: None,
    };
    let start = Instant::now();
    match derp::stun::probe(socket, addr, timeout).await {
        Ok(mapped) => {
            result.mapped = Some(mapped);
            result.latency_ms = Some(millis(start.elapsed()));
        }
        Err(e) => result.error = Some(e.to_string()),
    }
    result
}

/// A result for `server` that was never asked, saying why.
fn not_asked(region_id: u16, server: String, error: String) -> StunResult {
    StunResult { region_id, server, addr: None, mapped: None, latency_ms: None, error: Some(error) }
}

/// Probes every server in `servers`: over IPv4 with `v4`, and over IPv6 with
/// `v6` where the name has an IPv6 address (and the machine an IPv6 socket).
/// One socket, one server at a time: `probe` owns the socket while it waits.
async fn probe_all(
    v4: &UdpSocket,
    v6: Option<&UdpSocket>,
    servers: Vec<(u16, String)>,
    timeout: Duration,
) -> Vec<StunResult> {
    let mut out = Vec::new();
    for (region_id, server) in servers {
        let addrs = match resolve(&server).await {
            Ok(addrs) => addrs,
            Err(e) => {
                out.push(not_asked(region_id, server, e));
                continue;
            }
        };
        let (ipv4, ipv6) = (addrs.iter().find(|a| a.is_ipv4()), addrs.iter().find(|a| a.is_ipv6()));
        if let Some(&addr) = ipv4 {
            out.push(probe_stun(v4, region_id, server.clone(), addr, timeout).await);
        }
        match (ipv6, v6) {
            (Some(&addr), Some(v6)) => {
                out.push(probe_stun(v6, region_id, server, addr, timeout).await)
            }
            (Some(_), None) => {
                out.push(not_asked(region_id, server, "no IPv6 on this machine".to_owned()))
            }
            (None, _) if ipv4.is_none() => {
                out.push(not_asked(region_id, server, "no address".to_owned()))
            }
            (None, _) => {}
        }
    }
    out
}

/// Whether UDP over IPv6 works, and why: `socket` says whether an IPv6
/// socket could be bound and routed, `stun` are all the STUN results.
fn ipv6_verdict(socket: Result<(), &str>, stun: &[StunResult]) -> (Option<bool>, String) {
    if let Err(why) = socket {
        return (Some(false), why.to_owned());
    }
    let asked: Vec<&StunResult> =
        stun.iter().filter(|s| s.addr.is_some_and(|a| a.is_ipv6())).collect();
    let answered = asked.iter().find_map(|s| Some((s.addr?, s.mapped?)));
    match (asked.is_empty(), answered) {
        (true, _) => (None, "the relay map lists no STUN server with an IPv6 address".to_owned()),
        (false, Some((server, _))) => (Some(true), format!("{server} answered over IPv6")),
        (false, None) => (Some(false), "no STUN server answered over IPv6".to_owned()),
    }
}

/// A UDP socket for IPv6, if this machine has IPv6 and a route for it.
async fn ipv6_socket() -> Result<UdpSocket, String> {
    let socket = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))
        .await
        .map_err(|e| format!("no IPv6 socket: {e}"))?;
    // Connecting looks the route up and sends nothing; a fresh socket, as
    // a connected one would only hear that one address.
    let probe = UdpSocket::bind((Ipv6Addr::UNSPECIFIED, 0))
        .await
        .map_err(|e| format!("no IPv6 socket: {e}"))?;
    let documentation = SocketAddr::from((Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1), 9));
    probe.connect(documentation).await.map_err(|e| format!("no IPv6 route: {e}"))?;
    Ok(socket)
}

/// Whether the mapping differs between servers, with a note saying why.
fn mapping_verdict(stun: &[StunResult]) -> (Option<bool>, String) {
    // IPv6 has no NAT to tell apart, and a server's IPv4 and IPv6 answers
    // always differ: only IPv4 counts.
    let answers: Vec<(SocketAddr, SocketAddr)> = stun
        .iter()
        .filter_map(|s| Some((s.addr?, s.mapped?)))
        .filter(|(server, _)| server.is_ipv4())
        .collect();
    match answers.as_slice() {
        [] => (None, "no STUN server answered".to_owned()),
        [_] => (None, "only one STUN server answered; telling needs two".to_owned()),
        [(_, first), rest @ ..] => {
            let varies = rest.iter().any(|(_, m)| m != first);
            let n = answers.len();
            let note = if varies {
                format!("{n} STUN servers saw different addresses: a hard NAT, direct paths are unlikely")
            } else {
                format!("{n} STUN servers saw the same address")
            };
            (Some(varies), note)
        }
    }
}

/// Our own address toward `server`: the route's source IP and our bound port.
async fn own_address(server: SocketAddr, port: u16) -> Option<SocketAddr> {
    let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.ok()?;
    s.connect(server).await.ok()?;
    Some(SocketAddr::new(s.local_addr().ok()?.ip(), port))
}

async fn relay_latency(
    region_id: u16,
    code: String,
    name: String,
    url: Option<String>,
    key: derp::SecretKey,
    timeout: Duration,
) -> RegionResult {
    let mut result =
        RegionResult { region_id, code, name, latency_ms: None, error: None, rtt: None };
    let Some(url) = url else {
        result.error = Some("the region lists no relay".to_owned());
        return result;
    };
    let url: derp::RelayUrl = match url.parse() {
        Ok(u) => u,
        Err(e) => {
            result.error = Some(format!("bad relay URL {url:?}: {e}"));
            return result;
        }
    };
    let mut config = derp::ClientConfig::new(url, key);
    config.connect_timeout = timeout;
    let client = match derp::Client::connect(config).await {
        Ok(c) => c,
        Err(e) => {
            result.error = Some(format!("cannot connect: {e}"));
            return result;
        }
    };
    let mut best: Option<Duration> = None;
    for _ in 0..3 {
        match client.ping(timeout).await {
            Ok(rtt) => best = Some(best.map_or(rtt, |b| b.min(rtt))),
            Err(e) => result.error = Some(format!("ping: {e}")),
        }
    }
    if best.is_some() {
        result.error = None;
    }
    result.latency_ms = best.map(millis);
    result.rtt = best;
    client.close().await;
    result
}

pub async fn run(ctx: &Context_, args: NetcheckArgs) -> anyhow::Result<()> {
    let client = ctx.client()?;
    let map = client.relay_map().await.context("fetch the relay map")?;

    let socket = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0)).await.context("bind a UDP socket")?;
    let local_port = socket.local_addr().context("UDP socket address")?.port();
    let socket6 = ipv6_socket().await;
    let servers = stun_servers(&map);
    let stun = probe_all(&socket, socket6.as_ref().ok(), servers, args.timeout).await;
    let first = stun.iter().filter_map(|s| Some((s.addr?, s.mapped?))).find(|(a, _)| a.is_ipv4());
    let answered = stun.iter().any(|s| s.mapped.is_some());
    let udp = (!stun.is_empty()).then_some(answered);
    let (ipv6, ipv6_note) =
        ipv6_verdict(socket6.as_ref().map(|_| ()).map_err(String::as_str), &stun);
    let over_v6 = || stun.iter().filter(|s| s.addr.is_some_and(|a| a.is_ipv6()));
    let mapped_v6 = over_v6().find_map(|s| s.mapped);
    let ipv6_latency_ms = over_v6().filter_map(|s| s.latency_ms).reduce(f64::min);
    let behind_nat = match first {
        Some((server, mapped)) => own_address(server, local_port).await.map(|own| own != mapped),
        None => None,
    };
    let (mapping_varies_by_dest, mapping_note) = mapping_verdict(&stun);

    // Relays admit only node keys a connected peer announced: announce one
    // for the probes (logged out, an unannounced key still reaches relays
    // that do not verify clients).
    let probe_key = match &ctx.token {
        Some(token) => codersdk::meshnet::ProbeKey::announce(client.url(), token).await.ok(),
        None => None,
    };
    let key = probe_key.as_ref().map_or_else(derp::SecretKey::generate, |p| p.secret.clone());
    let regions = futures::future::join_all(map.regions.values().map(|r| {
        let url = r.nodes.first().map(|n| n.url.clone());
        let (code, name) = (r.region_code.clone(), r.region_name.clone());
        relay_latency(r.region_id, code, name, url, key.clone(), args.timeout)
    }))
    .await;
    drop(probe_key);
    let preferred_region = mesh::HomeSelector::first_home(
        mesh::HomeConfig::default(),
        regions.iter().map(|r| (r.region_id, r.rtt)),
    );

    let asked = args.port_mapping || !mesh::PortMapConfig::from_env().protocols.is_empty();
    let port_mapping = match asked {
        true => Some(match mesh::portmap::gateway().await {
            Some(gw) => {
                let deadline = tokio::time::Instant::now() + args.timeout;
                mesh::portmap::probe(&gw, deadline).await
            }
            None => mesh::portmap::Probe::default(),
        }),
        false => None,
    };

    let report = Report {
        udp,
        local_port,
        mapped_v4: first.map(|(_, m)| m),
        ipv6,
        ipv6_note,
        mapped_v6,
        ipv6_latency_ms,
        behind_nat,
        mapping_varies_by_dest,
        mapping_note,
        stun,
        regions,
        preferred_region,
        port_mapping,
    };
    match args.out.output {
        OutputFormat::Json => outln!("{}", serde_json::to_string_pretty(&report)?)?,
        OutputFormat::Table => out!("{}", render(&report))?,
    }
    Ok(())
}

fn yes_no(v: Option<bool>) -> &'static str {
    match v {
        Some(true) => "yes",
        Some(false) => "no",
        None => "unknown",
    }
}

fn render(r: &Report) -> String {
    let mut s = String::new();
    let udp = match r.udp {
        Some(true) => "yes".to_owned(),
        Some(false) => {
            "no: no STUN server answered (outbound UDP blocked?); traffic will use the relay"
                .to_owned()
        }
        None => "unknown: the relay map lists no STUN server".to_owned(),
    };
    s += &format!("UDP:                           {udp}\n");
    if let Some(m) = r.mapped_v4 {
        s += &format!("Mapped IPv4 address:           {m}\n");
    }
    s += &format!("Behind NAT:                    {}\n", yes_no(r.behind_nat));
    s += &format!("IPv6:                          {}\n", ipv6_line(r));
    s += &format!(
        "Mapping varies by destination: {} ({})\n",
        yes_no(r.mapping_varies_by_dest),
        r.mapping_note
    );
    let preferred = r
        .preferred_region
        .and_then(|id| r.regions.iter().find(|g| g.region_id == id))
        .map(|g| format!("{} ({})", g.region_id, g.code))
        .unwrap_or_else(|| "none: no relay answered".to_owned());
    s += &format!("Preferred relay region:        {preferred}\n");
    s += &format!(
        "Port mapping:                  {}\n\n",
        port_mapping_line(r.port_mapping.as_ref())
    );
    let ms = |v: Option<f64>| v.map(|v| format!("{v:.2} ms")).unwrap_or_else(|| "-".to_owned());
    let rows: Vec<Vec<String>> = r
        .stun
        .iter()
        .map(|x| {
            let mapped = x.mapped.map(|m| m.to_string()).unwrap_or_else(|| "-".to_owned());
            // A name asked over both families shows which address answered.
            let server = match x.addr {
                Some(addr) if addr.to_string() != x.server => format!("{} ({addr})", x.server),
                _ => x.server.clone(),
            };
            vec![
                server,
                x.region_id.to_string(),
                mapped,
                ms(x.latency_ms),
                x.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    if !rows.is_empty() {
        s += &output::table(&["stun server", "region", "mapped", "latency", "error"], &rows);
        s.push('\n');
    }
    let rows: Vec<Vec<String>> = r
        .regions
        .iter()
        .map(|g| {
            vec![
                g.region_id.to_string(),
                g.code.clone(),
                g.name.clone(),
                ms(g.latency_ms),
                g.error.clone().unwrap_or_default(),
            ]
        })
        .collect();
    s += &output::table(&["region", "code", "name", "relay latency", "error"], &rows);
    s
}

/// `yes ([2001:db8::5]:41641, 1.20 ms)`, or `no`/`unknown` and why.
fn ipv6_line(r: &Report) -> String {
    match (r.ipv6, r.mapped_v6) {
        (Some(true), Some(mapped)) => match r.ipv6_latency_ms {
            Some(ms) => format!("yes ({mapped}, {ms:.2} ms)"),
            None => format!("yes ({mapped})"),
        },
        (v, _) => format!("{}: {}", yes_no(v), r.ipv6_note),
    }
}

/// The gateway's protocols, e.g. `PCP, NAT-PMP (gateway 10.0.0.1)`.
fn port_mapping_line(probe: Option<&mesh::portmap::Probe>) -> String {
    let Some(probe) = probe else {
        return "not checked (--port-mapping)".to_owned();
    };
    let Some(gateway) = probe.gateway else {
        return "no default IPv4 gateway".to_owned();
    };
    let spoken: Vec<&str> = [(probe.pcp, "PCP"), (probe.nat_pmp, "NAT-PMP"), (probe.upnp, "UPnP")]
        .into_iter()
        .filter_map(|(on, name)| on.then_some(name))
        .collect();
    match spoken.as_slice() {
        [] => format!("none (gateway {gateway} answers no PCP, NAT-PMP or UPnP)"),
        names => format!("{} (gateway {gateway})", names.join(", ")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn answer(server: &str, mapped: &str) -> StunResult {
        StunResult {
            region_id: 1,
            server: server.to_owned(),
            addr: Some(server.parse().unwrap()),
            mapped: Some(mapped.parse().unwrap()),
            latency_ms: Some(1.0),
            error: None,
        }
    }

    #[test]
    fn port_mapping_line_names_what_the_gateway_speaks() {
        assert_eq!(port_mapping_line(None), "not checked (--port-mapping)");
        let mut probe = mesh::portmap::Probe::default();
        assert_eq!(port_mapping_line(Some(&probe)), "no default IPv4 gateway");
        probe.gateway = Some(Ipv4Addr::new(10, 0, 0, 1));
        assert!(port_mapping_line(Some(&probe)).starts_with("none (gateway 10.0.0.1"));
        probe.pcp = true;
        probe.upnp = true;
        assert_eq!(port_mapping_line(Some(&probe)), "PCP, UPnP (gateway 10.0.0.1)");
    }

    #[test]
    fn ipv6_is_yes_when_a_server_answers_over_it() {
        let v4 = answer("1.1.1.1:3478", "9.9.9.9:1000");
        let v6 = answer("[2001:db8::1]:3478", "[2001:db8::5]:1000");
        let mut silent6 = answer("[2001:db8::2]:3478", "[::1]:1");
        silent6.mapped = None;
        assert_eq!(ipv6_verdict(Err("no IPv6 route: x"), std::slice::from_ref(&v4)).0, Some(false));
        assert_eq!(ipv6_verdict(Ok(()), std::slice::from_ref(&v4)).0, None);
        assert_eq!(ipv6_verdict(Ok(()), &[v4.clone(), silent6.clone()]).0, Some(false));
        assert_eq!(ipv6_verdict(Ok(()), &[v4.clone(), silent6, v6.clone()]).0, Some(true));
        // An IPv6 answer never makes the IPv4 mapping look hard.
        assert_eq!(mapping_verdict(&[v4, v6]).0, None);
    }

    #[test]
    fn mapping_needs_two_answers() {
        assert_eq!(mapping_verdict(&[]).0, None);
        assert_eq!(mapping_verdict(&[answer("1.1.1.1:3478", "9.9.9.9:1000")]).0, None);
        let same = [answer("1.1.1.1:3478", "9.9.9.9:1000"), answer("2.2.2.2:3478", "9.9.9.9:1000")];
        assert_eq!(mapping_verdict(&same).0, Some(false));
        let hard = [answer("1.1.1.1:3478", "9.9.9.9:1000"), answer("2.2.2.2:3478", "9.9.9.9:1001")];
        assert_eq!(mapping_verdict(&hard).0, Some(true));
    }
}
