//! Killing the relay in use: relayed peers move to the second region, direct
//! peers are unaffected.
//!
//! One `coderd` on the internet namespace with two `derper`s as regions 1
//! and 2 of its relay map (`--derp-config-path`; the embedded relay stays as
//! region 999). Two pairs, each a `coder ssh` session carrying a SHA-256
//! checked stream ([`HashedSession`]):
//! - relayed: client and agent behind `UdpBlocked` routers;
//! - direct: client and agent on `Nat::None` hosts, direct before it starts.
//!
//! Every node homes on region 1 (all regions answer within a millisecond;
//! the lowest id wins ties). `kill -9` of region 1's `derper`; then both
//! streams must keep moving, region 2 must carry the relayed one and be home
//! to the nodes, the direct pair must still go direct, and both streams must
//! end with equal checksums (no byte lost, duplicated or reordered).
//! Root only; `topology` group.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tests::topology::{
    push_token_template, spawn_coderd, spawn_derper, AgentProcess, Derper, Host, Nat, Topology,
};
use tests::{has_program, run_ok, tempdir, HashedSession, FIRST_USER};

fn coder(host: &Host, cfg: &Path) -> Command {
    tests::topology::coder(host, cfg).unwrap()
}

fn start_agent(host: &Host, url: &str, token_file: &Path, home: &Path) -> AgentProcess {
    tests::topology::start_agent(host, url, token_file, home).unwrap()
}

/// `coder ping WS -o json` from `client` until it reports a direct path.
fn wait_direct(client: &Host, cfg: &Path, ws: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(45);
    loop {
        let out = run_ok(coder(client, cfg).args(["ping", ws, "-o", "json"]))?;
        let report: serde_json::Value = serde_json::from_str(&out)?;
        if report["direct"] == serde_json::Value::Bool(true) {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{ws} never went direct: {out}");
        }
    }
}

fn relay_map(regions: &[(u16, &Derper)]) -> String {
    let regions: serde_json::Map<String, serde_json::Value> = regions
        .iter()
        .map(|(id, d)| {
            let region = serde_json::json!({
                "region_id": id,
                "region_code": format!("r{id}"),
                "region_name": format!("Region {id}"),
                "nodes": [{ "name": format!("r{id}"), "url": d.url }],
            });
            (id.to_string(), region)
        })
        .collect();
    serde_json::json!({ "regions": regions }).to_string()
}

#[test]
fn topology_relay_killed_relayed_peers_move_to_the_second_region() {
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
    let mut topo = Topology::new("relayfail")?;
    let c_relay = topo.host("c0", Nat::UdpBlocked)?;
    let a_relay = topo.host("a0", Nat::UdpBlocked)?;
    let c_direct = topo.host("c1", Nat::None)?;
    let a_direct = topo.host("a1", Nat::None)?;
    let mut r1 = spawn_derper(topo.internet(), 3340)?;
    let r2 = spawn_derper(topo.internet(), 3341)?;
    let map = tmp.path().join("relays.json");
    std::fs::write(&map, relay_map(&[(1, &r1), (2, &r2)]))?;
    let map_s = map.to_str().context("non-UTF-8 path")?;
    let srv = spawn_coderd(
        topo.internet(),
        &tmp.path().join("data"),
        3000,
        &["--derp-config-path", map_s],
    )?;
    let url = srv.url.to_string();

    let cfg = tmp.path().join("config");
    run_ok(coder(&a_direct, &cfg).args(["login", &url]).args(FIRST_USER))?;
    let tokens = push_token_template(coder(&a_direct, &cfg), tmp.path(), "topo")?;
    let mut agents = Vec::new();
    for (ws, host) in [("ws-relay", &a_relay), ("ws-direct", &a_direct)] {
        run_ok(coder(host, &cfg).args(["create", ws, "-t", "topo", "--yes"]))?;
        let token = tokens.join(format!("{ws}.token"));
        agents.push(start_agent(host, &url, &token, &tmp.path().join(ws)));
    }
    wait_direct(&c_direct, &cfg, "ws-direct")?;
    eprintln!("set up after {:?}", start.elapsed());

    let relayed = HashedSession::start(coder(&c_relay, &cfg), &["-v", "ws-relay"])?;
    let path = relayed.stderr_line(Duration::from_secs(10)).unwrap_or_default();
    assert!(path.contains("connected via relay"), "the UDP-blocked pair reported {path:?}");
    let direct = HashedSession::start(coder(&c_direct, &cfg), &["-v", "ws-direct"])?;
    relayed.wait_progress("before the kill")?;
    direct.wait_progress("before the kill")?;

    // Region 1 is the relay in use: home to every node (two agents, two
    // clients), carrying the relayed stream.
    let home1 = r1.metric("clients_home")?;
    assert!(home1 >= 4, "region 1 is home to {home1} clients, expected all 4 nodes");
    assert_eq!(r2.metric("clients_home")?, 0, "nobody calls region 2 home yet");
    let r1_bytes = r1.metric("bytes_forwarded_total")?;
    relayed.wait_progress("through region 1")?;
    let r1_bytes_later = r1.metric("bytes_forwarded_total")?;
    assert!(r1_bytes_later > r1_bytes + (2 << 20), "region 1 carries the relayed stream");

    let r2_bytes = r2.metric("bytes_forwarded_total")?;
    let killed = Instant::now();
    r1.kill9()?;
    eprintln!("killed region 1 ({:?} in)", start.elapsed());
    direct.wait_progress("right after region 1 was killed")?;
    let direct_moved = killed.elapsed();
    relayed.wait_progress("after region 1 was killed")?;
    let relayed_moved = killed.elapsed();
    relayed.wait_progress("on region 2")?;
    eprintln!(
        "after the kill: direct stream moved 4 MiB in {direct_moved:?}, relayed in {relayed_moved:?}"
    );

    let r2_bytes_later = r2.metric("bytes_forwarded_total")?;
    assert!(
        r2_bytes_later > r2_bytes + (4 << 20),
        "region 2 carries the relayed stream ({r2_bytes} → {r2_bytes_later} bytes)"
    );
    let home2 = r2.metric("clients_home")?;
    assert!(home2 >= 4, "region 2 is home to {home2} clients, expected all 4 nodes");
    wait_direct(&c_direct, &cfg, "ws-direct")?;

    let relayed_bytes = relayed.finish().context("relayed stream")?;
    let direct_bytes = direct.finish().context("direct stream")?;
    eprintln!(
        "SHA-256 equal: relayed {relayed_bytes} bytes, direct {direct_bytes} bytes; test took {:?}",
        start.elapsed()
    );
    drop(agents);
    drop(srv);
    Ok(())
}
