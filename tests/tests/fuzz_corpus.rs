//! The fuzz targets' seed corpora (`<crate>/fuzz/corpus/<target>/`) are real
//! encodings made here by the crates' own encoders, so the fuzzers start from
//! inputs that reach deep into each parser. This test fails when a committed
//! seed no longer matches what the encoders produce (a wire format changed);
//! regenerate them with
//!
//! ```sh
//! FUZZ_CORPUS_UPDATE=1 cargo test -p tests --test fuzz_corpus
//! ```
//!
//! Seeds sealed with a random nonce or signed at a random serial cannot be
//! reproduced byte for byte; for those only their presence is checked.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use bytes::Bytes;
use codersdk::coordination::{ClientMessage, ServerMessage};
use derp::proto::{ClientInfo, Frame, PeerGoneReason, ServerInfo};
use derp::stun::TransactionId;
use mesh::disco::{CallMeMaybe, Message, Ping, Pong, TxId};
use mesh::{mesh_addresses, wire, DiscoSecret, Node, NodeId, NodeSecret, QuicSecret, Service};
use uuid::Uuid;

struct Seed {
    /// `<crate>/fuzz/corpus/<target>/<name>`, relative to the repository.
    path: PathBuf,
    bytes: Vec<u8>,
    /// Whether the encoders give the same bytes on every run.
    exact: bool,
}

#[derive(Default)]
struct Corpus(Vec<Seed>);

impl Corpus {
    fn add(&mut self, krate: &str, target: &str, name: &str, bytes: Vec<u8>) {
        self.0.push(Seed { path: seed_path(krate, target, name), bytes, exact: true });
    }
    fn add_inexact(&mut self, krate: &str, target: &str, name: &str, bytes: Vec<u8>) {
        self.0.push(Seed { path: seed_path(krate, target, name), bytes, exact: false });
    }
}

fn seed_path(krate: &str, target: &str, name: &str) -> PathBuf {
    ["..", krate, "fuzz", "corpus", target, name].iter().collect()
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Keys every seed uses; the fuzz targets hold the same secrets.
const RELAY_CLIENT: [u8; 32] = [0x11; 32];
const RELAY_SERVER: [u8; 32] = [0x22; 32];
const CHALLENGE: [u8; 16] = [7; 16];
const DISCO_RECEIVER: [u8; 32] = [1; 32];
const DISCO_SENDER: [u8; 32] = [2; 32];

fn relay_frames(c: &mut Corpus) -> anyhow::Result<()> {
    let client = derp::SecretKey::from_bytes(RELAY_CLIENT);
    let server = derp::SecretKey::from_bytes(RELAY_SERVER);
    let peer = derp::SecretKey::from_bytes([0x33; 32]).public();
    let data = Bytes::from_static(b"\xc0opaque encrypted packet");
    let frames = [
        ("server_key", Frame::ServerKey { key: server.public(), challenge: CHALLENGE }),
        ("send_packet", Frame::SendPacket { dst: peer, data: data.clone() }),
        ("recv_packet", Frame::RecvPacket { src: peer, data: data.clone() }),
        ("keep_alive", Frame::KeepAlive),
        ("note_preferred", Frame::NotePreferred { preferred: true }),
        ("peer_gone", Frame::PeerGone { key: peer, reason: PeerGoneReason::Disconnected }),
        ("peer_present", Frame::PeerPresent { key: peer }),
        ("forward_packet", Frame::ForwardPacket { src: client.public(), dst: peer, data }),
        ("watch_conns", Frame::WatchConns),
        ("ping", Frame::Ping { data: *b"pingdata" }),
        ("pong", Frame::Pong { data: *b"pingdata" }),
        ("health", Frame::Health { problem: "relay is draining".into() }),
        (
            "restarting",
            Frame::Restarting {
                reconnect_in: Duration::from_millis(500),
                try_for: Duration::from_secs(10),
            },
        ),
    ];
    let mut session = Vec::new();
    for (name, frame) in frames {
        let bytes = frame.to_bytes()?.to_vec();
        session.extend_from_slice(&bytes);
        c.add("derp", "frame_decode", name, bytes);
    }
    c.add("derp", "frame_decode", "session", session);
    // The handshake boxes use a random nonce.
    let sealed = [
        ("client_info", ClientInfo::new(CHALLENGE, None).seal(&client, &server.public())?),
        ("server_info", ServerInfo::default().seal(&server, &client.public())?),
    ];
    for (name, frame) in sealed {
        c.add_inexact("derp", "frame_decode", name, frame.to_bytes()?.to_vec());
    }

    let txid = TransactionId([9; 12]);
    c.add("derp", "stun_parse", "binding_request", derp::stun::binding_request(txid));
    for (name, addr) in
        [("binding_response_v4", "192.0.2.7:41641"), ("binding_response_v6", "[2001:db8::7]:41641")]
    {
        let addr: SocketAddr = addr.parse()?;
        c.add("derp", "stun_parse", name, derp::stun::binding_response(txid, addr));
    }
    Ok(())
}

fn disco_messages() -> anyhow::Result<Vec<(&'static str, Message)>> {
    let node_key = NodeSecret::from_bytes([4; 32]).public();
    Ok(vec![
        ("ping", Message::Ping(Ping { tx_id: TxId([5; 12]), node_key })),
        ("pong_v4", Message::Pong(Pong { tx_id: TxId([5; 12]), src: "192.0.2.1:41000".parse()? })),
        (
            "pong_v6",
            Message::Pong(Pong { tx_id: TxId([5; 12]), src: "[2001:db8::1]:41001".parse()? }),
        ),
        (
            "call_me_maybe",
            Message::CallMeMaybe(CallMeMaybe {
                endpoints: vec!["192.0.2.1:41000".parse()?, "[2001:db8::1]:41001".parse()?],
            }),
        ),
    ])
}

fn mesh_inputs(c: &mut Corpus) -> anyhow::Result<()> {
    let receiver = DiscoSecret::from_bytes(DISCO_RECEIVER).public();
    let sender = DiscoSecret::from_bytes(DISCO_SENDER);
    for (i, (name, msg)) in disco_messages()?.into_iter().enumerate() {
        let mut plain = Vec::new();
        msg.encode(&mut plain);
        c.add("mesh", "disco_packet", &format!("plain_{name}"), plain.clone());
        let nonce = [u8::try_from(i)?; 24];
        c.add(
            "mesh",
            "disco_packet",
            &format!("sealed_{name}"),
            wire::seal(&sender, receiver, nonce, &msg),
        );
        // The path selector's script: op 1 (a sealed message), source, length, bytes.
        let mut script = vec![5, 1, 0, u8::try_from(plain.len())?];
        script.extend_from_slice(&plain);
        c.add("mesh", "path_probes", &format!("peer_sends_{name}"), script);
    }
    c.add(
        "mesh",
        "disco_packet",
        "quic_initial",
        [&[0xc3, 0, 0, 0, 1, 8][..], &[0xab; 40]].concat(),
    );
    c.add(
        "mesh",
        "disco_packet",
        "wireguard_handshake",
        [&[1, 0, 0, 0][..], &[0x5a; 144]].concat(),
    );
    // Scripts: activity (pings go out), time, answers from the right and the
    // wrong address, a restart with a new disco key, a relay-borne pong.
    let scripts: [(&str, &[u8]); 5] = [
        ("answer_first_ping", &[5, 2, 0, 0, 0, 4, 0, 50, 2, 0, 0, 0]),
        ("answer_from_elsewhere", &[5, 2, 0, 2, 0, 2, 0, 3, 1]),
        ("call_me_maybe_then_time", &[3, 0xf0, 1, 3, 0, 1, 2, 4, 0x13, 0x88, 2, 1, 1, 1]),
        ("peer_restarts", &[5, 2, 0, 0, 0, 6, 0, 9, 2, 0, 1, 5, 2, 0, 0, 0]),
        ("pong_through_relay", &[5, 2, 0, 0xf0, 0, 4, 0x27, 0x10, 4, 0x27, 0x10]),
    ];
    for (name, script) in scripts {
        c.add("mesh", "path_probes", name, script.to_vec());
    }

    // WireGuard datagrams by message type (initiation, response, cookie, data)
    // and an IPv6 packet for the stack's header parser.
    c.add(
        "mesh",
        "wireguard_datagram",
        "handshake_initiation",
        [&[1, 0, 0, 0][..], &[0x5a; 144]].concat(),
    );
    c.add(
        "mesh",
        "wireguard_datagram",
        "handshake_response",
        [&[2, 0, 0, 0][..], &[0x3c; 88]].concat(),
    );
    c.add("mesh", "wireguard_datagram", "cookie_reply", [&[3, 0, 0, 0][..], &[0x11; 60]].concat());
    c.add(
        "mesh",
        "wireguard_datagram",
        "transport_data",
        [&[4, 0, 0, 0][..], &[0; 12], &[0xab; 48]].concat(),
    );
    let mut ipv6 = vec![0x60, 0, 0, 0, 0, 20, 6, 64];
    ipv6.extend_from_slice(&mesh_addresses(NodeId(2)).ipv6.octets());
    ipv6.extend_from_slice(&mesh_addresses(NodeId(1)).ipv6.octets());
    ipv6.extend_from_slice(&[
        0x1f, 0x90, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0, 0, 0, 0,
    ]);
    c.add("mesh", "wireguard_datagram", "ipv6_tcp_syn", ipv6);

    let pty = Service::Pty { id: 0x0123_4567_89ab_cdef, rows: 24, cols: 80 };
    for service in [Service::Ssh, Service::Tcp(22), Service::Udp(53), Service::Speedtest, pty] {
        let header = service.header();
        let name = header.get(1..).context("empty header")?.to_vec();
        let file = format!("service_{}", service.to_string().replace(':', "_"));
        c.add("mesh", "stream_header", &file, name);
    }
    // A certificate as peers present it (rcgen signs with a random serial).
    let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)?;
    let cert = rcgen::CertificateParams::new(vec![mesh::tls::SERVER_NAME.to_string()])?
        .self_signed(&key_pair)?;
    c.add_inexact("mesh", "stream_header", "certificate", cert.der().to_vec());
    Ok(())
}

fn node() -> Node {
    let id = NodeId(42);
    Node {
        id,
        key: NodeSecret::from_bytes([4; 32]).public(),
        disco_key: DiscoSecret::from_bytes([2; 32]).public(),
        quic_key: QuicSecret::from_bytes([5; 32]).public(),
        preferred_relay: Some(1),
        relay_latency_ms: BTreeMap::from([(1, 12.5), (2, 80.0)]),
        port_mapped: Vec::new(),
        endpoints: vec![
            SocketAddr::from(([192, 0, 2, 1], 41000)),
            "[2001:db8::1]:41001".parse().unwrap_or(SocketAddr::from(([0; 4], 0))),
        ],
        addresses: mesh_addresses(id),
        version: mesh::PROTOCOL_VERSION,
    }
}

fn coordination_messages(c: &mut Corpus) -> anyhow::Result<()> {
    let peer = Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0);
    let client = [
        ("client_node", ClientMessage::Node { node: node() }),
        ("client_add_tunnel", ClientMessage::AddTunnel { peer }),
        ("client_remove_tunnel", ClientMessage::RemoveTunnel { peer }),
    ];
    for (name, msg) in client {
        c.add("codersdk", "coordination_message", name, serde_json::to_vec(&msg)?);
    }
    let relay_map = serde_json::json!({"regions": {"1": {"region_id": 1, "region_code": "coder",
        "nodes": [{"name": "1a", "host_name": "127.0.0.1", "derp_port": 3000, "stun_port": 3478}]}}});
    let server = [
        (
            "server_hello",
            ServerMessage::Hello { version: 1, peer_id: peer, node_id: NodeId(42), relay_map },
        ),
        ("server_node", ServerMessage::Node { peer, node: node() }),
        ("server_disconnected", ServerMessage::Disconnected { peer, reason: "peer left".into() }),
        ("server_lost", ServerMessage::Lost { peer }),
        (
            "server_error",
            ServerMessage::Error { peer: Some(peer), message: "No such agent.".into() },
        ),
    ];
    for (name, msg) in server {
        c.add("codersdk", "coordination_message", name, serde_json::to_vec(&msg)?);
    }
    // Found by the fuzzer: an integer too long for u64 parses to a float that
    // serde_json's default parser may round differently than its own output.
    let huge = format!(
        r#"{{"type":"hello","version":1,"peer_id":"{peer}","node_id":42,"relay_map":{{"x":{}3}}}}"#,
        "34".repeat(60)
    );
    c.add("codersdk", "coordination_message", "regression_huge_number", huge.into_bytes());
    Ok(())
}

fn header(kind: tar::EntryType, size: u64, link: Option<&str>) -> anyhow::Result<tar::Header> {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    if let Some(target) = link {
        h.set_link_name(target)?;
    }
    Ok(h)
}

/// One archive entry: path, kind, link target, data.
type Entry<'a> = (&'a str, tar::EntryType, Option<&'a str>, &'a [u8]);

fn tar_of(entries: &[Entry]) -> anyhow::Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    for (path, kind, link, data) in entries {
        let mut h = header(*kind, data.len() as u64, *link)?;
        b.append_data(&mut h, path, *data)?;
    }
    Ok(b.into_inner()?)
}

fn template_archives(c: &mut Corpus) -> anyhow::Result<()> {
    use tar::EntryType::{Directory, Link, Regular, Symlink};
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    std::fs::write(d.join("main.tf"), "resource \"coder_agent\" \"main\" {}\n")?;
    std::fs::create_dir(d.join("scripts"))?;
    std::fs::write(d.join("scripts/start.sh"), "#!/bin/sh\necho hi\n")?;
    std::os::unix::fs::symlink("scripts/start.sh", d.join("start"))?;
    let packed = codersdk::archive::pack_dir(d)?;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&packed)?;
    c.add("coordinator", "tar_extract", "template", packed);
    c.add("coordinator", "tar_extract", "template_gz", gz.finish()?);
    let archives: [(&str, &[Entry]); 4] = [
        (
            "hard_link",
            &[
                ("a", Regular, None, b"data"),
                ("d/", Directory, None, b""),
                ("d/b", Link, Some("a"), b""),
            ],
        ),
        (
            "links_up_and_down",
            &[
                ("m/n/", Directory, None, b""),
                ("m/n/f", Regular, None, b"x"),
                ("m/n/up", Symlink, Some("../.."), b""),
                ("m/n/down", Symlink, Some("../n/f"), b""),
            ],
        ),
        // Refused: climbs out through another link (`m/n/s` leads to the root).
        (
            "link_through_link",
            &[
                ("m/n/", Directory, None, b""),
                ("m/n/s", Symlink, Some("../.."), b""),
                ("m/n/l", Symlink, Some("s/../.."), b""),
            ],
        ),
        // Refused: writes through a link of its own.
        ("write_through_link", &[("l", Symlink, Some("."), b""), ("l/f", Regular, None, b"x")]),
    ];
    for (name, entries) in archives {
        c.add("coordinator", "tar_extract", name, tar_of(entries)?);
    }
    Ok(())
}

fn corpus() -> anyhow::Result<Corpus> {
    let mut c = Corpus::default();
    relay_frames(&mut c)?;
    mesh_inputs(&mut c)?;
    coordination_messages(&mut c)?;
    template_archives(&mut c)?;
    Ok(c)
}

fn check(root: &Path, corpus: &Corpus) -> anyhow::Result<()> {
    let mut stale = Vec::new();
    for seed in &corpus.0 {
        let path = root.join(&seed.path);
        match std::fs::read(&path) {
            Ok(bytes) if !seed.exact || bytes == seed.bytes => {}
            Ok(_) => stale.push(format!("{} differs from its encoding", seed.path.display())),
            Err(_) => stale.push(format!("{} is missing", seed.path.display())),
        }
    }
    if !stale.is_empty() {
        bail!(
            "the fuzz corpus is out of date ({}); regenerate it with \
             FUZZ_CORPUS_UPDATE=1 cargo test -p tests --test fuzz_corpus",
            stale.join("; ")
        );
    }
    Ok(())
}

#[test]
fn fuzz_seed_corpus_matches_the_encoders() -> anyhow::Result<()> {
    let root = repo();
    let corpus = corpus()?;
    if std::env::var_os("FUZZ_CORPUS_UPDATE").is_some() {
        for seed in &corpus.0 {
            let path = root.join(&seed.path);
            if !seed.exact && path.exists() {
                continue; // a fresh random nonce would only churn the file
            }
            std::fs::create_dir_all(path.parent().context("seed path has no parent")?)?;
            std::fs::write(&path, &seed.bytes).with_context(|| format!("write {path:?}"))?;
        }
        println!("wrote {} seeds", corpus.0.len());
    }
    check(&root, &corpus)
}
