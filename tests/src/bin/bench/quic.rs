//! Group `quic`: direct-path bulk throughput of the mesh's QUIC (two
//! `MeshEndpoint`s, one stream) against TCP and plain quinn without the mesh
//! (self-signed certificate, same quinn version, default transport settings),
//! all in this process, one after the other, and iroh (`tests/iroh-baseline`,
//! a child process per transfer). With root, every kind runs between the same
//! two network namespaces (veth pairs on a bridge); else on 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use mesh::MeshEndpoint;
use tests::topology::{Host, Nat, Topology};

use crate::net;
use crate::plot::{self, Bar};
use crate::report::{Better, Goal, Row, Section};
use crate::stats::{median, mib_per_s};
use crate::Ctx;

/// Transfer size and repetitions.
fn sizes(ctx: &Ctx) -> (u64, usize) {
    if ctx.quick {
        (4 << 20, 2)
    } else {
        (128 << 20, 15)
    }
}

/// Where the two ends of every transfer live: two network namespaces on one
/// bridge (each joined to it by a veth pair) when this process may make them,
/// else 127.0.0.1.
struct Link {
    /// The topology and its two hosts; `None` on loopback.
    hosts: Option<(Topology, Host, Host)>,
}

impl Link {
    fn new(section: &mut Section) -> anyhow::Result<Self> {
        if let Some(reason) = Topology::unavailable() {
            section.notes.push(format!(
                "On loopback, not the veth pair: {reason}. Ours and every baseline still \
                 share the path."
            ));
            return Ok(Self { hosts: None });
        }
        let mut topo = Topology::new("quicbench")?;
        let (a, b) = (topo.host("a", Nat::None)?, topo.host("b", Nat::None)?);
        Ok(Self { hosts: Some((topo, a, b)) })
    }

    fn words(&self) -> &'static str {
        match self.hosts {
            Some(_) => "between two network namespaces over veth pairs and a bridge (MTU 1500)",
            None => "on 127.0.0.1",
        }
    }

    /// The sender's (`a`) or the receiver's (`b`) host.
    fn host(&self, receiver: bool) -> Option<&Host> {
        self.hosts.as_ref().map(|(_, a, b)| if receiver { b } else { a })
    }

    fn addr(&self, receiver: bool) -> IpAddr {
        self.host(receiver).map_or(IpAddr::V4(Ipv4Addr::LOCALHOST), |h| IpAddr::V4(h.addr))
    }

    /// Runs `f` where the sender's or receiver's sockets must be made.
    fn within<T: Send>(
        &self,
        receiver: bool,
        f: impl FnOnce() -> anyhow::Result<T> + Send,
    ) -> anyhow::Result<T> {
        match self.host(receiver) {
            Some(host) => host.in_netns(f),
            None => f(),
        }
    }

    /// Mesh node `id`, bound on the sender's or receiver's side.
    fn mesh_node(&self, receiver: bool, id: u64) -> anyhow::Result<MeshEndpoint> {
        let mut config = net::config(id, None, false);
        config.bind = SocketAddr::new(self.addr(receiver), 0);
        net::bind_in(self.host(receiver), config)
    }

    /// A UDP socket on the sender's or receiver's side.
    fn udp(&self, receiver: bool) -> anyhow::Result<std::net::UdpSocket> {
        let addr = SocketAddr::new(self.addr(receiver), 0);
        self.within(receiver, || Ok(std::net::UdpSocket::bind(addr)?))
    }
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Section> {
    let (len, reps) = sizes(ctx);
    let mut section = Section::new("QUIC direct path (`bench quic`)", "");
    let link = Link::new(&mut section)?;
    section.method = format!(
        "One stream carries {} MiB from one node to another {}, timed from opening \
         the stream until the receiver has read the last byte; median of {reps} \
         transfers after a warm-up, the kinds taking turns. *mesh QUIC*: two \
         `mesh::MeshEndpoint`s (magic socket, path selector, mesh TLS) with a direct \
         UDP path. *plain quinn*: two bare quinn endpoints (the workspace's quinn \
         0.11.12 with its GSO batching patch, `third_party/README.md`; default \
         transport config, self-signed certificate). *iroh*: two `iroh` 1.4 \
         endpoints in a child process (`tests/iroh-baseline`, built with mimalloc as \
         our binaries are; each bound on its side of the same path; relay mode \
         disabled, no address lookup, dialing the listener's bound address), one \
         unidirectional stream per transfer, timed the same way. Every sender writes \
         {} KiB at a time (the iroh baseline reports its size and the bench refuses a \
         different one). *TCP*: a tokio `TcpStream` over the same path.",
        len >> 20,
        link.words(),
        net::CHUNK >> 10,
    );

    // All set up first, then one transfer of each per round, so that noise
    // from other processes on the machine hits all of them alike.
    let a = link.mesh_node(false, 1)?;
    let b = link.mesh_node(true, 2)?;
    a.upsert_peer(&b.node())?;
    b.upsert_peer(&a.node())?;
    let (ca, cb) = net::connect(&a, &b).await.context("mesh QUIC connect")?;
    let q = Quinn::connect(&link).await.context("plain quinn connect")?;
    let listener = link.within(true, || {
        let l = std::net::TcpListener::bind(SocketAddr::new(link.addr(true), 0))?;
        l.set_nonblocking(true)?;
        Ok(l)
    })?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let warm = len.min(8 << 20);
    net::mesh_transfer(&ca, &cb, warm).await.context("mesh QUIC warm-up")?;
    q.transfer(warm).await.context("plain quinn warm-up")?;
    tcp_transfer(&link, &listener, warm).await.context("TCP warm-up")?;
    let iroh_bin = iroh_baseline();
    let (mut mesh, mut quinn, mut tcp, mut iroh) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..reps {
        mesh.push(mib_per_s(len, net::mesh_transfer(&ca, &cb, len).await.context("mesh QUIC")?));
        quinn.push(mib_per_s(len, q.transfer(len).await.context("plain quinn")?));
        tcp.push(mib_per_s(len, tcp_transfer(&link, &listener, len).await.context("TCP")?));
        if let Some(bin) = &iroh_bin {
            iroh.extend(iroh_transfer(bin, &link, len).await.context("iroh")?);
        }
    }
    q.close().await;
    a.close().await;
    b.close().await;
    drop(link);
    let (mesh, quinn, tcp) = (median(&mesh), median(&quinn), median(&tcp));

    section.rows.push(
        Row::new("mesh QUIC, 1 stream, direct", mesh, "MiB/s", Better::Higher)
            .baseline("plain quinn", quinn)
            .goal(Goal::RatioAtLeast(0.9)),
    );
    match iroh_bin {
        Some(_) => section.rows.push(
            Row::new("mesh QUIC, 1 stream, direct", mesh, "MiB/s", Better::Higher)
                .baseline("iroh 1.4 (relay off, direct address)", median(&iroh))
                .goal(Goal::RatioAtLeast(1.2)),
        ),
        None => section.notes.push(
            "iroh baseline skipped: `tests/iroh-baseline` is not built (the bench builds \
             it unless `--quick` or `--no-build`)."
                .to_owned(),
        ),
    }
    section.rows.push(
        Row::new("mesh QUIC, 1 stream, direct", mesh, "MiB/s", Better::Higher)
            .baseline("TCP, same path", tcp),
    );
    section.rows.push(
        Row::new("plain quinn, 1 stream", quinn, "MiB/s", Better::Higher)
            .baseline("TCP, same path", tcp)
            .note("what QUIC in user space costs before the mesh adds anything"),
    );
    let (file, md) = ctx.plot_file("quic");
    plot::bars(
        &file,
        "Bulk throughput, one stream",
        "MiB/s",
        &[
            Bar { label: "mesh QUIC (direct)", value: mesh, ours: true },
            Bar { label: "plain quinn", value: quinn, ours: false },
            Bar {
                label: "iroh",
                value: if iroh.is_empty() { 0.0 } else { median(&iroh) },
                ours: false,
            },
            Bar { label: "TCP", value: tcp, ours: false },
        ],
    )?;
    section
        .plots
        .push(crate::report::Plot { file: md, caption: "Direct-path bulk throughput".into() });
    Ok(section)
}

/// The iroh baseline binary, if built (`build_iroh_baseline`).
fn iroh_baseline() -> Option<std::path::PathBuf> {
    let bin = crate::bins_dir().ok()?.parent()?.join("iroh-baseline/release/iroh-baseline");
    bin.is_file().then_some(bin)
}

/// Builds `tests/iroh-baseline` (its own workspace, so the test suite never
/// compiles iroh) into the bench's target directory.
pub fn build_iroh_baseline() -> anyhow::Result<()> {
    let target = crate::bins_dir()?.parent().context("no target dir")?.join("iroh-baseline");
    let manifest = concat!(env!("CARGO_MANIFEST_DIR"), "/iroh-baseline/Cargo.toml");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!("bench: building the iroh baseline");
    let status = std::process::Command::new(cargo)
        .args(["build", "--release", "--manifest-path", manifest, "--target-dir"])
        .arg(&target)
        .status()
        .context("run cargo build for the iroh baseline")?;
    anyhow::ensure!(status.success(), "building the iroh baseline failed ({status})");
    Ok(())
}

/// One iroh transfer of `len` bytes (a fresh pair of endpoints in a child process); MiB/s.
async fn iroh_transfer(bin: &std::path::Path, link: &Link, len: u64) -> anyhow::Result<Vec<f64>> {
    let mut cmd = tokio::process::Command::new(bin);
    cmd.arg(len.to_string()).arg("1");
    if let Some((_, a, b)) = &link.hosts {
        cmd.args([&a.netns, &a.addr.to_string(), &b.netns, &b.addr.to_string()]);
    }
    let out = cmd.output().await?;
    anyhow::ensure!(
        out.status.success(),
        "iroh-baseline failed ({}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    parse_iroh_output(&out.stdout)
}

/// The figures of `iroh-baseline`'s JSON line, if it wrote in our chunk size.
fn parse_iroh_output(stdout: &[u8]) -> anyhow::Result<Vec<f64>> {
    let v: serde_json::Value = serde_json::from_slice(stdout).context("iroh-baseline JSON")?;
    let chunk = v["chunk"].as_u64();
    anyhow::ensure!(
        chunk == Some(net::CHUNK as u64),
        "iroh-baseline writes {chunk:?}-byte chunks, not {} like the other transfers \
         (rebuild it: `tests/iroh-baseline`)",
        net::CHUNK
    );
    let figures = v["mib_per_s"].as_array().context("no mib_per_s")?;
    Ok(figures.iter().filter_map(serde_json::Value::as_f64).collect())
}

/// MiB/s of mesh QUIC between two nodes on a direct loopback path.
pub async fn mesh_direct(len: u64, reps: usize) -> anyhow::Result<Vec<f64>> {
    let (a, b) = net::pair(net::config(1, None, false), net::config(2, None, false)).await?;
    let (ca, cb) = net::connect(&a, &b).await?;
    let out = net::mesh_throughputs(&ca, &cb, len, reps).await?;
    a.close().await;
    b.close().await;
    Ok(out)
}

/// Two plain quinn endpoints (self-signed certificate) and a connection between them.
struct Quinn {
    client: quinn::Endpoint,
    _server: quinn::Endpoint,
    client_conn: quinn::Connection,
    server_conn: quinn::Connection,
}

impl Quinn {
    async fn connect(link: &Link) -> anyhow::Result<Self> {
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])?;
        let cert_der = cert.cert.der().clone();
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(cert.key_pair.serialize_der());
        let server_config =
            quinn::ServerConfig::with_single_cert(vec![cert_der.clone()], key.into())?;
        let runtime = Arc::new(quinn::TokioRuntime);
        let server = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            Some(server_config),
            link.udp(true)?,
            runtime.clone(),
        )?;
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert_der)?;
        let client_config = quinn::ClientConfig::with_root_certificates(Arc::new(roots))?;
        let mut client = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            link.udp(false)?,
            runtime,
        )?;
        client.set_default_client_config(client_config);
        let server_addr = server.local_addr()?;
        let accept = async {
            let incoming = server.accept().await.context("server closed")?;
            anyhow::Ok(incoming.await?)
        };
        let dial = async { anyhow::Ok(client.connect(server_addr, "localhost")?.await?) };
        let (server_conn, client_conn) = tokio::try_join!(accept, dial)?;
        Ok(Self { client, _server: server, client_conn, server_conn })
    }

    /// Sends `len` bytes on a new stream; the time until the server read them all.
    async fn transfer(&self, len: u64) -> anyhow::Result<Duration> {
        let start = Instant::now();
        let sending = async {
            let (send, _recv) = self.client_conn.open_bi().await?;
            net::send_bulk(send, Some(len)).await
        };
        let receiving = async {
            let (_send, recv) = self.server_conn.accept_bi().await?;
            let got = net::recv_bulk(recv, Arc::default()).await?;
            anyhow::ensure!(got == len, "received {got} of {len} bytes");
            Ok(start.elapsed())
        };
        let (_, elapsed) = tokio::try_join!(sending, receiving)?;
        Ok(elapsed)
    }

    async fn close(self) {
        self.client_conn.close(0u32.into(), b"done");
        self.client.wait_idle().await;
    }
}

/// Sends `len` bytes over a fresh TCP connection to `listener` (made on the
/// sender's side of `path`); the time until the receiver read them all.
async fn tcp_transfer(
    link: &Link,
    listener: &tokio::net::TcpListener,
    len: u64,
) -> anyhow::Result<Duration> {
    let addr = listener.local_addr()?;
    let start = Instant::now();
    // Made before the receiver accepts: a blocking connect completes against the backlog.
    let stream = link.within(false, || {
        let s = std::net::TcpStream::connect(addr)?;
        s.set_nonblocking(true)?;
        Ok(s)
    })?;
    let sending = async {
        let mut stream = tokio::net::TcpStream::from_std(stream)?;
        let chunk = vec![0x5au8; net::CHUNK];
        let mut left = len;
        while left > 0 {
            let n = usize::try_from(left).unwrap_or(usize::MAX).min(chunk.len());
            stream.write_all(&chunk[..n]).await?;
            left -= n as u64;
        }
        stream.shutdown().await?;
        anyhow::Ok(())
    };
    let receiving = async {
        let (mut stream, _) = listener.accept().await?;
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        loop {
            let n = stream.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            got += n as u64;
        }
        anyhow::ensure!(got == len, "received {got} of {len} bytes");
        Ok(start.elapsed())
    };
    let (_, elapsed) = tokio::try_join!(sending, receiving)?;
    Ok(elapsed)
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    /// Issue #20: the iroh baseline wrote 1 MiB chunks where ours write 256 KiB.
    #[test]
    fn an_iroh_baseline_writing_other_chunks_is_refused() {
        let same = format!("{{\"chunk\":{},\"mib_per_s\":[1.5,2.5]}}", net::CHUNK);
        assert_eq!(parse_iroh_output(same.as_bytes()).ok(), Some(vec![1.5, 2.5]));
        let mib = br#"{"chunk":1048576,"mib_per_s":[1.5]}"#;
        assert!(parse_iroh_output(mib).is_err());
        // Builds from before it said its chunk size.
        assert!(parse_iroh_output(br#"{"mib_per_s":[1.5]}"#).is_err());
    }

    /// The chunk the baseline's source writes is the bench's.
    #[test]
    fn the_iroh_baseline_source_writes_our_chunk_size() {
        let src = include_str!("../../../iroh-baseline/src/main.rs");
        assert!(src.contains("const CHUNK: usize = 256 * 1024;"), "chunk size changed");
        assert_eq!(net::CHUNK, 256 * 1024);
    }
}
