//! Garbage, truncated and oversized input at every port of a running
//! `coderd` (HTTP API, WebSocket coordination, the relay upgrade and its
//! WebSocket fallback, STUN) and of a running `coder-agent` (its mesh UDP
//! socket). Each server must refuse or drop what it cannot parse and keep
//! serving everyone else: after the barrage (and while some of it is still
//! connected) the processes are alive, the API answers, coordination and the
//! relay accept clients, STUN answers, and `coder ping` reaches the agent
//! over a direct path through the socket that was attacked.
//!
//! The test also lists the listening sockets of both processes from `/proc`
//! and fails on one it did not attack, so a new listener cannot slip past.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bad_input_support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use bad_input_support::{listening_sockets, Proto};
use rand::{Rng, RngCore, SeedableRng};
use serde_json::Value;
use tests::{local_workspace, require_programs, run_ok, tempdir, Coderd};

const IO_TIMEOUT: Duration = Duration::from_secs(10);

fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).unwrap();
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s
}

/// Sends `bytes` and reads what comes back until the server closes (or the
/// timeout). Write errors are fine: the server may hang up mid-request.
fn exchange(addr: SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = connect(addr);
    let _ = s.write_all(bytes);
    let mut back = Vec::new();
    let _ = s.read_to_end(&mut back);
    back
}

/// The status of an HTTP/1.1 response, if `bytes` start with one.
fn status(bytes: &[u8]) -> Option<u16> {
    let text = String::from_utf8_lossy(bytes.get(..12)?);
    text.strip_prefix("HTTP/1.1 ")?.get(..3)?.parse().ok()
}

/// Asserts the server answered a bad request with a 4xx (or just hung up),
/// never with a 5xx or a success.
fn refused(what: &str, back: &[u8]) {
    match status(back) {
        None => assert!(back.is_empty(), "{what}: not HTTP: {:?}", String::from_utf8_lossy(back)),
        Some(code) => assert!((400..500).contains(&code), "{what}: answered {code}"),
    }
}

/// Opens an upgraded connection (`101`) on `path` with these extra headers;
/// returns the stream positioned after the response head.
fn upgrade(addr: SocketAddr, path: &str, headers: &str) -> TcpStream {
    let mut s = connect(addr);
    write!(s, "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: Upgrade\r\n{headers}\r\n")
        .unwrap();
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert_eq!(s.read(&mut b).unwrap(), 1, "{path}: closed during the upgrade: {head:?}");
        head.push(b[0]);
    }
    assert_eq!(status(&head), Some(101), "{path}: {}", String::from_utf8_lossy(&head));
    s
}

const WS_HEADERS: &str =
    "Upgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n";

/// A masked client WebSocket frame header with a 64-bit length and no payload.
fn ws_frame_header(opcode: u8, len: u64) -> Vec<u8> {
    let mut f = vec![0x80 | opcode, 0x80 | 127];
    f.extend_from_slice(&len.to_be_bytes());
    f.extend_from_slice(&[1, 2, 3, 4]);
    f
}

/// A masked client WebSocket frame.
fn ws_frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0x80 | opcode];
    let len = payload.len();
    if len < 126 {
        f.push(0x80 | len as u8);
    } else {
        f.push(0x80 | 126);
        f.extend_from_slice(&(len as u16).to_be_bytes());
    }
    let mask = [9, 8, 7, 6];
    f.extend_from_slice(&mask);
    f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    f
}

/// Reads until the server closes the connection; fails if it never does.
fn until_closed(what: &str, mut s: TcpStream) {
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("{what}: the server kept the connection open ({e})"),
        }
    }
}

fn garbage(rng: &mut impl RngCore, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    rng.fill_bytes(&mut v);
    v
}

/// Everything at the HTTP port that is not an upgrade.
fn attack_http(addr: SocketAddr, rng: &mut impl RngCore) {
    refused("random bytes", &exchange(addr, &garbage(rng, 4096)));
    refused("binary request line", &exchange(addr, b"\x00\xff\x16\x03\x01 / HTTP/1.1\r\n\r\n"));
    refused("TLS hello on plain HTTP", &exchange(addr, &[0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
    refused("bad method and URI", &exchange(addr, b"G\x01T /%zz%00 HTTP/1.1\r\nHost: x\r\n\r\n"));
    let long_uri = format!("GET /api/v2/{} HTTP/1.1\r\nHost: x\r\n\r\n", "a".repeat(256 * 1024));
    refused("256 KiB URI", &exchange(addr, long_uri.as_bytes()));
    let big_header =
        format!("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "b".repeat(1 << 20));
    refused("1 MiB header", &exchange(addr, big_header.as_bytes()));
    let many_headers: String = (0..10_000).map(|i| format!("X-H{i}: v\r\n")).collect();
    refused(
        "10 000 headers",
        &exchange(
            addr,
            format!("GET /healthz HTTP/1.1\r\nHost: x\r\n{many_headers}\r\n").as_bytes(),
        ),
    );
    refused(
        "bad chunk size",
        &exchange(
            addr,
            b"POST /api/v2/users/login HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
              Content-Type: application/json\r\n\r\nzz\r\n{}\r\n0\r\n\r\n",
        ),
    );
    // Truncated JSON, and JSON of the wrong shape: readable JSON errors.
    for json in
        [&b"{\"email\":\"a@b.c\",\"password\":\"x"[..], b"{\"email\":[[[[[[[[[[[[1]]]]]]]]]]]]}"]
    {
        let req = format!(
            "POST /api/v2/users/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            json.len()
        );
        let back = exchange(addr, &[req.as_bytes(), json].concat());
        let text = String::from_utf8_lossy(&back);
        assert!(matches!(status(&back), Some(400 | 422)) && text.contains("\"message\""), "{text}");
    }
    // A 100 MiB body announced, 4 MiB sent: refused as too large.
    let mut s = connect(addr);
    write!(
        s,
        "POST /api/v2/users/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        100u64 << 20
    )
    .unwrap();
    let chunk = vec![b' '; 64 * 1024];
    for _ in 0..64 {
        if s.write_all(&chunk).is_err() {
            break;
        }
    }
    let mut back = Vec::new();
    let _ = s.read_to_end(&mut back);
    refused("100 MiB body", &back);
    // HTTP/2 prior knowledge with a garbage frame after the preface.
    let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    h2.extend_from_slice(&garbage(rng, 512));
    let _ = exchange(addr, &h2);
}

/// The coordination WebSockets: bad frames close only that connection.
fn attack_coordination(addr: SocketAddr, token: &str, agent: &str) {
    let auth = format!("{WS_HEADERS}Coder-Session-Token: {token}\r\n");
    let tailnet = "/api/v2/tailnet?version=1";
    let single = format!("/api/v2/workspaceagents/{agent}/coordinate?version=1");
    let cases: [(&str, &str, Vec<u8>); 6] = [
        ("reserved bits", tailnet, vec![0xf1, 0x85, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
        ("unknown opcode", tailnet, ws_frame(0x3, b"x")),
        ("2^62-byte frame", tailnet, ws_frame_header(0x1, 1 << 62)),
        ("binary message", &single, ws_frame(0x2, &[0u8; 100])),
        ("not JSON", &single, ws_frame(0x1, b"{\"type\":\"node\",\"node\":")),
        ("unmasked frame", tailnet, vec![0x81, 0x02, b'{', b'}']),
    ];
    for (what, path, bytes) in cases {
        let mut s = upgrade(addr, path, &auth);
        s.write_all(&bytes).unwrap();
        until_closed(what, s);
    }
    // Upgrades without credentials, or with a broken handshake, are refused.
    let no_token =
        format!("GET {tailnet} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\n{WS_HEADERS}\r\n");
    refused("upgrade without a token", &exchange(addr, no_token.as_bytes()));
    let bad_handshake = format!(
        "GET {tailnet} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 7\r\nCoder-Session-Token: {token}\r\n\r\n"
    );
    refused("bad websocket handshake", &exchange(addr, bad_handshake.as_bytes()));
}

/// The web terminal's WebSocket and the dashboard/app paths: bad frames
/// close only that connection; malformed paths and queries are 4xx.
fn attack_dashboard(addr: SocketAddr, token: &str, agent: &str) {
    let auth = format!("{WS_HEADERS}Coder-Session-Token: {token}\r\n");
    let pty = format!(
        "/api/v2/workspaceagents/{agent}/pty?reconnect=6f1c3a52-0d4e-4c5b-9a1e-1f2e3d4c5b6a"
    );
    let cases: [(&str, Vec<u8>); 4] = [
        ("pty: reserved bits", vec![0xf1, 0x85, 1, 2, 3, 4, 5, 6, 7, 8, 9]),
        ("pty: unknown opcode", ws_frame(0x3, b"x")),
        ("pty: 2^62-byte frame", ws_frame_header(0x1, 1 << 62)),
        ("pty: 2 MiB message", ws_frame_header(0x1, 2 << 20)),
    ];
    for (what, bytes) in cases {
        let mut s = upgrade(addr, &pty, &auth);
        s.write_all(&bytes).unwrap();
        until_closed(what, s);
    }
    let get = |path: &str| {
        let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nCoder-Session-Token: {token}\r\nConnection: close\r\n\r\n");
        exchange(addr, req.as_bytes())
    };
    for path in [
        format!("/api/v2/workspaceagents/{agent}/pty?reconnect=not-a-uuid"),
        format!("/api/v2/workspaceagents/{agent}/pty?reconnect=6f1c3a52-0d4e-4c5b-9a1e-1f2e3d4c5b6a&height=99999999"),
        "/@%ff/%00/apps/x/".to_owned(),
        "/@../../apps/x/".to_owned(),
        format!("/@{}/ws/apps/x/", "a".repeat(10_000)),
        "/@dev/bad/apps/0/".to_owned(),
        "/@dev/bad/apps/99999/".to_owned(),
        "/@dev/nope.main/terminal".to_owned(),
        "/api/v2/applications/auth-redirect?redirect_uri=%ff".to_owned(),
    ] {
        refused(&path, &get(&path));
    }
}

/// The embedded relay: native upgrade and WebSocket fallback.
fn attack_relay(addr: SocketAddr, rng: &mut impl RngCore) {
    let derp = "Upgrade: DERP\r\n";
    let mut oversized = vec![0x04];
    oversized.extend_from_slice(&u32::MAX.to_be_bytes());
    let mut truncated = vec![0x02];
    truncated.extend_from_slice(&1000u32.to_be_bytes());
    truncated.extend_from_slice(&[0x42; 32]);
    // A client-info frame whose box opens for no key.
    let mut forged = vec![0x02];
    forged.extend_from_slice(&(32u32 + 80).to_be_bytes());
    forged.extend_from_slice(&garbage(rng, 32 + 80));
    let cases = [
        ("relay: random bytes", garbage(rng, 2048)),
        ("relay: 4 GiB frame", oversized),
        ("relay: forged client info", forged),
        ("relay: packet before the handshake", [&[0x04, 0, 0, 0, 40][..], &[7u8; 40]].concat()),
    ];
    for (what, bytes) in cases {
        let mut s = upgrade(addr, "/derp", derp);
        s.write_all(&bytes).unwrap();
        until_closed(what, s);
    }
    // Truncated: the frame never completes; we hang up.
    let mut s = upgrade(addr, "/derp", derp);
    s.write_all(&truncated).unwrap();
    drop(s);
    let mut s = upgrade(addr, "/derp", WS_HEADERS);
    s.write_all(&ws_frame(0x2, &garbage(rng, 300))).unwrap();
    until_closed("relay websocket: garbage frame", s);
    let mut s = upgrade(addr, "/derp", WS_HEADERS);
    s.write_all(&ws_frame_header(0x2, 1 << 40)).unwrap();
    until_closed("relay websocket: 1 TiB frame", s);
    refused(
        "relay: plain GET",
        &exchange(addr, b"GET /derp HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    );
}

/// UDP garbage: random, truncated, oversized, and plausible-looking datagrams.
fn attack_udp(to: SocketAddr, rng: &mut impl RngCore, plausible: &[Vec<u8>]) {
    let s = UdpSocket::bind(if to.is_ipv4() { "127.0.0.1:0" } else { "[::1]:0" }).unwrap();
    let mut sent = 0;
    let mut send = |d: &[u8]| {
        if s.send_to(d, to).is_ok() {
            sent += 1;
        }
    };
    send(&[]);
    send(&garbage(rng, 65_507));
    for _ in 0..500 {
        let len = rng.gen_range(1..1500);
        send(&garbage(rng, len));
    }
    for p in plausible {
        for cut in [1, p.len() / 2, p.len().saturating_sub(1)] {
            send(&p[..cut.min(p.len())]);
        }
        let mut flipped = p.clone();
        for _ in 0..50 {
            let i = rng.gen_range(0..flipped.len());
            flipped[i] ^= 1 << rng.gen_range(0..8);
            send(&flipped);
        }
        send(&[p.as_slice(), &garbage(rng, 60_000)].concat());
    }
    assert!(sent > 500, "could not send to {to}");
}

fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

/// The agent of the `local` template: its pid file under coderd's home.
fn agent_pid(srv: &Coderd) -> u32 {
    let dirs = std::fs::read_dir(srv.data_dir.join("home/coder-workspaces")).unwrap();
    for d in dirs.flatten() {
        if let Ok(text) = std::fs::read_to_string(d.path().join(".coder-agent/agent.pid")) {
            return text.trim().parse().unwrap();
        }
    }
    panic!("no agent pid file");
}

#[test]
fn garbage_at_every_port_leaves_every_server_serving() {
    if !require_programs(&["terraform"]) {
        return;
    }
    let tmp = tempdir().unwrap();
    let (data, cfg) = (tmp.path().join("data"), tmp.path().join("config"));
    let mut srv = Coderd::spawn(&data, &[]).unwrap();
    local_workspace(&srv, &cfg, tmp.path(), "bad").unwrap();
    let http: SocketAddr =
        format!("{}:{}", srv.url.host_str().unwrap(), srv.url.port_or_known_default().unwrap())
            .parse()
            .unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let checks = bad_input_support::Checks::new(&rt, &srv.url);
    let (agent_id, agent_endpoints) = checks.agent_node();
    let stun = rt.block_on(checks.stun_addr());
    // The agent's mesh socket(s): one local address per announced port.
    let mut by_port = std::collections::BTreeMap::new();
    for a in agent_endpoints.iter().filter(|a| a.is_ipv4()) {
        let local = SocketAddr::from(([127, 0, 0, 1], a.port()));
        by_port.insert(a.port(), local);
    }
    let agent_udp: Vec<SocketAddr> = by_port.into_values().collect();
    assert!(!agent_udp.is_empty(), "agent endpoints: {agent_endpoints:?}");

    // Every socket the two processes listen on is one this test attacks.
    let coderd_pid = srv.child.id();
    let agent = agent_pid(&srv);
    let attacked: BTreeSet<(Proto, u16)> = [(Proto::Tcp, http.port()), (Proto::Udp, stun.port())]
        .into_iter()
        .chain(agent_udp.iter().map(|a| (Proto::Udp, a.port())))
        .collect();
    for (pid, name) in [(coderd_pid, "coderd"), (agent, "coder-agent")] {
        let socks = listening_sockets(pid).unwrap();
        eprintln!("{name} (pid {pid}) listens on {socks:?}");
        assert!(!socks.is_empty(), "found no listening socket of {name}");
        for sock in socks {
            assert!(
                attacked.contains(&(sock.proto, sock.addr.port())),
                "{name} listens on {sock:?}, which this test does not attack; add it"
            );
        }
    }

    let mut rng = rand::rngs::StdRng::seed_from_u64(11);
    // Held open for the whole test: a request that never completes.
    let mut slow = connect(http);
    slow.write_all(b"POST /api/v2/users/login HTTP/1.1\r\nHost: x\r\nContent-Le").unwrap();
    let idle: Vec<TcpStream> = (0..50).map(|_| connect(http)).collect();

    attack_http(http, &mut rng);
    attack_coordination(http, &checks.token, &agent_id.to_string());
    attack_dashboard(http, &checks.token, &agent_id.to_string());
    attack_relay(http, &mut rng);
    attack_udp(stun, &mut rng, &bad_input_support::stun_packets());
    for &a in &agent_udp {
        let plausible = bad_input_support::mesh_packets(&mut rng);
        attack_udp(a, &mut rng, &plausible);
    }

    // A peer the coordinator never announced gets no connection to the agent,
    // which goes on accepting everyone else (the ping below dials it).
    checks.unannounced_dial(agent_id).unwrap();

    // Everyone else is still served, while the slow and idle ones hang on.
    assert!(srv.child.try_wait().unwrap().is_none(), "coderd exited");
    assert!(alive(agent), "the agent exited");
    rt.block_on(checks.all_serving(stun));
    let mut ping = srv.coder(&cfg).unwrap();
    ping.args(["ping", "bad", "--interval", "200ms", "--output", "json"]);
    let out = run_ok(&mut ping).unwrap();
    let v: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["direct"], true, "the agent's mesh socket no longer answers directly: {out}");
    drop((slow, idle));
    assert!(srv.child.try_wait().unwrap().is_none(), "coderd exited");
    assert!(alive(agent), "the agent exited");
}
