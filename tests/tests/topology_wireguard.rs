//! `coder tunnel --ip` end to end: the client in one namespace, the agent in
//! another behind a NAT, one `coderd` on the "internet".
//!
//! Through the TUN device (the test runs as root): `curl` to an HTTP server
//! in the workspace at its mesh address and at its `.coder` name (resolved
//! by the tunnel's DNS responder, set as the namespace's resolver), a 64 MiB
//! download with matching SHA-256, UDP echo, and ICMPv6 echo from a raw
//! socket. Through the SOCKS5 mode (no TUN): the same HTTP checks and UDP
//! echo (`UDP ASSOCIATE`); and unprivileged (`setpriv` to nobody), where it
//! falls back to that proxy on its own. A
//! workspace created while the tunnel runs gets a name, and loses it when
//! deleted. A plain boringtun peer the coordinator never announced gets no
//! answer from the agent.
//!
//! Root only; `topology` group.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv6Addr, SocketAddr, SocketAddrV6, TcpListener, UdpSocket};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tests::topology::{push_token_template, spawn_coderd, Host, Nat, Topology};
use tests::{binary, has_program, run_ok, tempdir, FIRST_USER};

const HTTP_PORT: u16 = 8080;
const UDP_PORT: u16 = 9000;
const BIG: usize = 64 << 20;
const DNS_ADDR: &str = "fd5c:9a3e:71b2::53";

/// Kills a child process when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The deterministic 64 MiB body of `GET /big`.
fn big_body() -> Vec<u8> {
    (0..BIG as u32).map(|i| (i.wrapping_mul(2654435761) >> 13) as u8).collect()
}

/// A tiny HTTP/1.0 server on the agent's loopback: `/` says hello, `/big`
/// sends [`big_body`].
fn http_server(agent: &Host) {
    let listener = agent.in_netns(|| Ok(TcpListener::bind(("127.0.0.1", HTTP_PORT))?)).unwrap();
    let big = std::sync::Arc::new(big_body());
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            let big = big.clone();
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    return;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let body: &[u8] = if line.starts_with("GET /big ") {
                    &big
                } else {
                    b"hello from the workspace\n"
                };
                let head = format!(
                    "HTTP/1.0 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = conn.write_all(head.as_bytes());
                let _ = conn.write_all(body);
            });
        }
    });
}

fn udp_echo(agent: &Host) {
    let sock = agent.in_netns(|| Ok(UdpSocket::bind(("127.0.0.1", UDP_PORT))?)).unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let _ = sock.send_to(&buf[..n], from);
        }
    });
}

/// `coder` in `host`'s namespace with the test's login.
fn coder(host: &Host, cfg: &Path) -> Command {
    let mut c = host.command(binary("coder").unwrap());
    c.env("CODER_CONFIG_DIR", cfg).env_remove("CODER_URL").env_remove("CODER_SESSION_TOKEN");
    c
}

/// A running `coder tunnel --ip` and its stdout lines.
struct Tunnel {
    _child: Killed,
    lines: mpsc::Receiver<String>,
    stderr_log: std::path::PathBuf,
}

impl Tunnel {
    fn start(mut cmd: Command, stderr_log: &Path) -> Tunnel {
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(stderr_log).unwrap())
            .spawn()
            .unwrap();
        let mut child = Killed(child);
        let stdout = child.0.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                eprintln!("tunnel: {line}");
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Tunnel { _child: child, lines, stderr_log: stderr_log.to_owned() }
    }

    /// Waits for a printed names table satisfying `want`; returns it.
    fn wait_table(&self, what: &str, want: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut table = String::new();
        let mut in_table = false;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            let Ok(line) = self.lines.recv_timeout(left) else { break };
            if line.starts_with("# coder tunnel --ip") {
                table.clear();
                in_table = true;
            } else if line == "# end" && in_table {
                in_table = false;
                if want(&table) {
                    return table;
                }
            } else if in_table {
                table.push_str(&line);
                table.push('\n');
            }
        }
        let err = std::fs::read_to_string(&self.stderr_log).unwrap_or_default();
        panic!("no names table with {what} within 60 s; last table:\n{table}\nstderr:\n{err}");
    }
}

/// The address a table gives `name`.
fn address_of(table: &str, name: &str) -> Ipv6Addr {
    table
        .lines()
        .find(|l| l.split_whitespace().skip(1).any(|n| n == name))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("{name} not in the table:\n{table}"))
}

fn curl(host: &Host, args: &[&str]) -> anyhow::Result<Vec<u8>> {
    let out = host
        .command("curl")
        .args(["-sS", "--fail", "--max-time", "120", "-g"])
        .args(args)
        .stdin(Stdio::null())
        .output()?;
    if !out.status.success() {
        anyhow::bail!("curl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(out.stdout)
}

/// `curl ARGS` until it succeeds (the first request waits for the agent's
/// node and the WireGuard handshake), for up to a minute.
fn curl_until_ok(host: &Host, args: &[&str], tunnel: &Tunnel) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut args = args.to_vec();
    args.extend(["--max-time", "5"]);
    loop {
        match curl(host, &args) {
            Ok(body) => return body,
            Err(e) if Instant::now() < deadline => eprintln!("not yet: {e}"),
            Err(e) => panic!(
                "{e}\ntunnel log:\n{}",
                std::fs::read_to_string(&tunnel.stderr_log).unwrap_or_default()
            ),
        }
    }
}

/// UDP through the SOCKS5 proxy on 127.0.0.1:1080 in `host`: `UDP
/// ASSOCIATE`, then datagrams to `ws1.coder:UDP_PORT` (resolved by the
/// proxy) until one echo comes back with the header naming the workspace.
fn socks_udp_echo(host: &Host) -> bool {
    host.in_netns(|| {
        let mut ctl = std::net::TcpStream::connect("127.0.0.1:1080")?;
        ctl.set_read_timeout(Some(Duration::from_secs(10)))?;
        let mut answer = [0u8; 10];
        ctl.write_all(&[5, 1, 0])?;
        std::io::Read::read_exact(&mut ctl, &mut answer[..2])?;
        ctl.write_all(&[5, 3, 0, 1, 0, 0, 0, 0, 0, 0])?;
        std::io::Read::read_exact(&mut ctl, &mut answer)?;
        anyhow::ensure!(answer[..4] == [5, 0, 0, 1], "UDP ASSOCIATE refused: {answer:?}");
        let relay = SocketAddr::from((
            [answer[4], answer[5], answer[6], answer[7]],
            u16::from_be_bytes([answer[8], answer[9]]),
        ));
        let udp = UdpSocket::bind("127.0.0.1:0")?;
        udp.set_read_timeout(Some(Duration::from_millis(500)))?;
        let mut datagram = vec![0, 0, 0, 3, 9];
        datagram.extend_from_slice(b"ws1.coder");
        datagram.extend_from_slice(&UDP_PORT.to_be_bytes());
        datagram.extend_from_slice(b"udp via socks");
        for _ in 0..20 {
            udp.send_to(&datagram, relay)?;
            let mut buf = [0u8; 128];
            if let Ok(n) = udp.recv(&mut buf) {
                // RSV FRAG ATYP=4, 16-byte address, port, payload.
                let ok = n == 22 + 13 && buf[3] == 4 && buf[20..22] == UDP_PORT.to_be_bytes();
                return Ok(ok && &buf[22..n] == b"udp via socks");
            }
        }
        Ok(false)
    })
    .unwrap()
}

/// ICMPv6 echo from a raw socket in `host` (no `ping` binary needed): true
/// once a reply to one of up to 20 requests comes back from `dst`.
fn ping6(host: &Host, dst: Ipv6Addr) -> bool {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock: UdpSocket = host
        .in_netns(|| Ok(Socket::new(Domain::IPV6, Type::RAW, Some(Protocol::ICMPV6))?.into()))
        .unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let id = 0x4242u16;
    for seq in 0..20u16 {
        // Type 128, code 0, checksum (the kernel computes it for raw ICMPv6), id, seq.
        let mut req = vec![128, 0, 0, 0];
        req.extend_from_slice(&id.to_be_bytes());
        req.extend_from_slice(&seq.to_be_bytes());
        req.extend_from_slice(b"coder ping");
        sock.send_to(&req, SocketAddrV6::new(dst, 0, 0, 0)).unwrap();
        let until = Instant::now() + Duration::from_millis(500);
        while Instant::now() < until {
            let mut buf = [0u8; 1500];
            let Ok((n, from)) = sock.recv_from(&mut buf) else { break };
            let reply = &buf[..n];
            if from.ip() == std::net::IpAddr::V6(dst)
                && n >= 8
                && reply[0] == 129
                && reply[4..6] == id.to_be_bytes()
            {
                return true;
            }
        }
    }
    false
}

#[test]
fn topology_wireguard_tunnel_ip() {
    if let Some(reason) = Topology::unavailable() {
        coordinator::testutil::skip(&reason);
        return;
    }
    for tool in ["terraform", "curl"] {
        if !has_program(tool) {
            coordinator::testutil::skip(&format!("{tool} is not installed"));
            return;
        }
    }
    let tmp = tempdir().unwrap();
    let mut topo = Topology::new("wgip").unwrap();
    let client = topo.host("client", Nat::Easy).unwrap();
    let agent = topo.host("agent", Nat::Easy).unwrap();
    let srv = spawn_coderd(topo.internet(), &tmp.path().join("data"), 3000, &[]).unwrap();

    let cfg = tmp.path().join("config");
    run_ok(coder(&client, &cfg).args(["login", srv.url.as_str()]).args(FIRST_USER)).unwrap();
    let tokens = push_token_template(coder(&client, &cfg), tmp.path(), "topo").unwrap();
    run_ok(coder(&client, &cfg).args(["create", "ws1", "-t", "topo", "--yes"])).unwrap();
    let token = std::fs::read_to_string(tokens.join("ws1.token")).unwrap();
    let home = tmp.path().join("ws1-home");
    std::fs::create_dir_all(&home).unwrap();
    let _agent = Killed(
        agent
            .command(binary("coder-agent").unwrap())
            .env("CODER_AGENT_URL", srv.url.as_str())
            .env("CODER_AGENT_TOKEN", token.trim())
            .env("HOME", &home)
            .current_dir(&home)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(tmp.path().join("agent.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    http_server(&agent);
    udp_echo(&agent);

    // The client namespace's resolver is the tunnel's DNS responder
    // (`ip netns exec` bind-mounts /etc/netns/NAME/resolv.conf).
    let netns_etc = Path::new("/etc/netns").join(&client.netns);
    std::fs::create_dir_all(&netns_etc).unwrap();
    std::fs::write(netns_etc.join("resolv.conf"), format!("nameserver {DNS_ADDR}\n")).unwrap();
    struct RemoveDir(std::path::PathBuf);
    impl Drop for RemoveDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    let _etc = RemoveDir(netns_etc);

    let mut cmd = coder(&client, &cfg);
    cmd.args(["tunnel", "--ip", "--refresh", "1s"]);
    let tun = Tunnel::start(cmd, &tmp.path().join("tunnel.log"));
    let table = tun.wait_table("ws1.coder", |t| t.contains(" ws1.coder"));
    let ws1 = address_of(&table, "ws1.coder");
    assert_eq!(ws1, address_of(&table, "main.ws1.dev.coder"));

    // HTTP at the address (the first request waits for the agent and the
    // handshake), then at the name.
    let hello = curl_until_ok(&client, &[&format!("http://[{ws1}]:{HTTP_PORT}/")], &tun);
    assert_eq!(hello, b"hello from the workspace\n");
    let hello = curl(&client, &[&format!("http://ws1.coder:{HTTP_PORT}/")]).unwrap();
    assert_eq!(hello, b"hello from the workspace\n");

    // 64 MiB through the TUN device.
    let want = hex::encode(Sha256::digest(big_body()));
    let started = Instant::now();
    let body = curl(&client, &[&format!("http://ws1.coder:{HTTP_PORT}/big")]).unwrap();
    eprintln!("64 MiB through the TUN device in {:?}", started.elapsed());
    assert_eq!(body.len(), BIG);
    assert_eq!(hex::encode(Sha256::digest(&body)), want);

    // UDP echo.
    let sock = client.in_netns(|| Ok(UdpSocket::bind("[::]:0")?)).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut echoed = false;
    for _ in 0..20 {
        sock.send_to(b"udp over wireguard", (ws1, UDP_PORT)).unwrap();
        let mut buf = [0u8; 64];
        if let Ok((n, from)) = sock.recv_from(&mut buf) {
            assert_eq!(&buf[..n], b"udp over wireguard");
            assert_eq!(from, SocketAddr::from((ws1, UDP_PORT)));
            echoed = true;
            break;
        }
    }
    assert!(echoed, "no UDP echo from the workspace");

    // Ping.
    assert!(ping6(&client, ws1), "no ICMPv6 echo reply from {ws1}");

    // SOCKS5 mode, no TUN device.
    let mut cmd = coder(&client, &cfg);
    cmd.args(["tunnel", "--ip", "--socks5", "127.0.0.1:1080", "--refresh", "1s"]);
    let socks = Tunnel::start(cmd, &tmp.path().join("socks.log"));
    socks.wait_table("ws1.coder", |t| t.contains(" ws1.coder"));
    let proxy = ["--socks5-hostname", "127.0.0.1:1080"];
    let by_name = format!("http://ws1.coder:{HTTP_PORT}/");
    let hello = curl_until_ok(&client, &[proxy[0], proxy[1], &by_name], &socks);
    assert_eq!(hello, b"hello from the workspace\n");
    let body =
        curl(&client, &[proxy[0], proxy[1], &format!("http://[{ws1}]:{HTTP_PORT}/big")]).unwrap();
    assert_eq!(hex::encode(Sha256::digest(&body)), want);
    assert!(socks_udp_echo(&client), "no UDP echo through the SOCKS5 proxy");
    let unknown = curl(&client, &[proxy[0], proxy[1], "--max-time", "5", "http://nope.coder/"]);
    assert!(unknown.is_err(), "an unknown name must not resolve");
    drop(socks);

    // Without privileges (no TUN device): the SOCKS5 proxy on 127.0.0.1:1080.
    let mut cmd = client.command("setpriv");
    cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(binary("coder").unwrap())
        .args(["tunnel", "--ip", "--refresh", "1s"])
        .env("CODER_URL", srv.url.as_str())
        .env("CODER_SESSION_TOKEN", std::fs::read_to_string(cfg.join("session")).unwrap().trim())
        .env("CODER_CONFIG_DIR", tmp.path().join("nobody-config"));
    let unprivileged = Tunnel::start(cmd, &tmp.path().join("unprivileged.log"));
    unprivileged.wait_table("ws1.coder", |t| t.contains(" ws1.coder"));
    let hello = curl_until_ok(&client, &[proxy[0], proxy[1], &by_name], &unprivileged);
    assert_eq!(hello, b"hello from the workspace\n");
    let said = std::fs::read_to_string(&unprivileged.stderr_log).unwrap();
    assert!(said.contains("Cannot create a TUN device"), "{said}");
    drop(unprivileged);

    // A workspace created while the tunnel runs appears, and disappears when deleted.
    run_ok(coder(&client, &cfg).args(["create", "ws2", "-t", "topo", "--yes"])).unwrap();
    tun.wait_table("ws2.coder", |t| t.contains(" ws2.coder") && t.contains(" ws1.coder"));
    run_ok(coder(&client, &cfg).args(["delete", "ws2", "--yes"])).unwrap();
    tun.wait_table("no ws2.coder", |t| !t.contains("ws2") && t.contains(" ws1.coder"));

    // A plain boringtun peer that knows the agent's key and reaches its
    // socket, but was never announced: no answer.
    stranger_is_ignored(&srv.url, &cfg, &agent);
    drop(srv);
}

/// Sends a handshake initiation from an unannounced key to every local
/// endpoint the agent announced (from the coordinator's debug view), from
/// inside the agent's namespace, and expects silence.
fn stranger_is_ignored(url: &url::Url, cfg: &Path, agent: &Host) {
    use boringtun::noise::{Tunn, TunnResult};
    use boringtun::x25519::{PublicKey, StaticSecret};

    let token = std::fs::read_to_string(cfg.join("session")).unwrap();
    let debug = agent
        .in_netns(|| {
            let out = Command::new("curl")
                .args(["-sS", "--fail", "-H", &format!("Coder-Session-Token: {}", token.trim())])
                .arg(url.join("/api/v2/debug/coordinator")?.as_str())
                .output()?;
            Ok(out.stdout)
        })
        .unwrap();
    let debug: serde_json::Value = serde_json::from_slice(&debug).unwrap();
    let agent_node = debug["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| &p["node"])
        .find(|n| {
            n["endpoints"].as_array().is_some_and(|eps| {
                eps.iter()
                    .any(|e| e.as_str().is_some_and(|e| e.starts_with(&agent.addr.to_string())))
            })
        })
        .unwrap_or_else(|| panic!("the agent's node is not in {debug}"))
        .clone();
    let key: mesh::NodeKey = agent_node["key"].as_str().unwrap().parse().unwrap();
    let endpoint: SocketAddr = agent_node["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str()?.parse().ok())
        .find(|e: &SocketAddr| e.ip() == std::net::IpAddr::V4(agent.addr))
        .unwrap();
    let sock = agent.bind_udp(0).unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(500))).unwrap();
    let mut stranger = Tunn::new(
        StaticSecret::from([42u8; 32]),
        PublicKey::from(*key.as_bytes()),
        None,
        None,
        7,
        None,
    );
    let mut buf = vec![0u8; 2048];
    let TunnResult::WriteToNetwork(init) = stranger.format_handshake_initiation(&mut buf, false)
    else {
        panic!("no handshake initiation")
    };
    sock.send_to(init, endpoint).unwrap();
    let mut answer = [0u8; 256];
    let got = sock.recv_from(&mut answer);
    assert!(got.is_err(), "the agent answered an unannounced WireGuard peer: {got:?}");
}
