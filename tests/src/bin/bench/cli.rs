//! Group `cli`: throughput users see through the CLI against the mesh's raw
//! QUIC bulk figures measured in this same group: `coder speedtest` (download,
//! direct path and relay only; upload, direct) and `coder tunnel --tcp` (a TCP
//! transfer through the forward to a sink in the workspace). The tunnel is
//! compared with raw QUIC between two processes over its own path (the upload
//! speed test: CLI to agent), and with the in-process raw figure, whose two
//! ends share one runtime.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::deployment::{Deployment, WORKSPACE};
use crate::net;
use crate::plot::{self, Bar};
use crate::report::{Better, Goal, Plot, Row, Section};
use crate::stats::{median, mib_per_s, CpuMark};
use crate::Ctx;

struct Plan {
    reps: usize,
    speedtest: &'static str,
    tunnel_bytes: u64,
    quic_bytes: u64,
}

fn plan(ctx: &Ctx) -> Plan {
    if ctx.quick {
        Plan { reps: 1, speedtest: "500ms", tunnel_bytes: 4 << 20, quic_bytes: 4 << 20 }
    } else {
        Plan { reps: 9, speedtest: "2s", tunnel_bytes: 256 << 20, quic_bytes: 256 << 20 }
    }
}

pub async fn run(ctx: &Ctx, dep: &Deployment) -> anyhow::Result<Section> {
    let p = plan(ctx);
    let mut section = Section::new(
        "CLI throughput (`bench cli`)",
        &format!(
            "Median of {reps} runs each, taking turns. *raw mesh QUIC*: one stream \
             between two in-process `mesh::MeshEndpoint`s on 127.0.0.1 ({quic} MiB). \
             *speedtest*: `coder speedtest {WORKSPACE} -t {t} --output json` (download: \
             the agent writes, the CLI reads), with `--direct` and with `--relay-only`; \
             and `--direct --direction up` (the CLI writes 1 MiB at a time, timed until \
             the agent has said how much it read): raw mesh QUIC between two processes, \
             the CLI and the agent, the way the tunnel's bytes go. *tunnel*: `coder \
             tunnel {WORKSPACE} --tcp L:R` running, {tunnel} MiB written into \
             `127.0.0.1:L` and read to the end by a sink listening on R in the workspace \
             (this machine), timed until the sink has every byte; compared with both raw \
             figures: the in-process one (both QUIC ends share one runtime, which is \
             slower than two processes) and the upload speed test (the same two \
             processes and path as the tunnel, without the TCP at either end). *CPU per \
             GiB*: the busy core-seconds of the whole machine (`/proc/stat`) during \
             each transfer, over the bytes moved; a *loopback TCP hop* is the same \
             writer sending straight to the sink.",
            reps = p.reps,
            quic = p.quic_bytes >> 20,
            t = p.speedtest,
            tunnel = p.tunnel_bytes >> 20,
        ),
    );

    let (a, b) = net::pair(net::config(1, None, false), net::config(2, None, false)).await?;
    let (ca, cb) = net::connect(&a, &b).await.context("mesh QUIC connect")?;
    let sink = Sink::start()?;
    let local = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let mut tunnel = Tunnel::start(dep, local, sink.port)?;
    net::mesh_transfer(&ca, &cb, 8 << 20).await.context("mesh QUIC warm-up")?;
    tunnel.transfer(8 << 20).context("tunnel warm-up")?;

    let (mut quic, mut direct, mut relay, mut through) = (vec![], vec![], vec![], vec![]);
    let mut up = vec![];
    // Core-seconds per GiB, machine-wide, of the raw stream, the tunnel, and
    // one plain TCP hop over loopback (the writer straight to the sink).
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let per_gib = |core_s: f64, bytes: u64| core_s / (bytes as f64 / f64::from(1u32 << 30));
    let (mut quic_cpu, mut tunnel_cpu, mut tcp_cpu) = (vec![], vec![], vec![]);
    for _ in 0..p.reps {
        let mark = CpuMark::now()?;
        let elapsed = net::mesh_transfer(&ca, &cb, p.quic_bytes).await?;
        quic_cpu.push(per_gib(mark.core_seconds_since(cores)?, p.quic_bytes));
        quic.push(mib_per_s(p.quic_bytes, elapsed));
        direct.push(speedtest(dep, p.speedtest, "--direct", "down")?);
        up.push(speedtest(dep, p.speedtest, "--direct", "up")?);
        relay.push(speedtest(dep, p.speedtest, "--relay-only", "down")?);
        let mark = CpuMark::now()?;
        let elapsed = tunnel.transfer(p.tunnel_bytes)?;
        tunnel_cpu.push(per_gib(mark.core_seconds_since(cores)?, p.tunnel_bytes));
        through.push(mib_per_s(p.tunnel_bytes, elapsed));
        let mark = CpuMark::now()?;
        tcp_transfer(sink.port, p.tunnel_bytes).context("TCP straight to the sink")?;
        tcp_cpu.push(per_gib(mark.core_seconds_since(cores)?, p.tunnel_bytes));
    }
    drop(tunnel);
    a.close().await;
    b.close().await;
    let (quic_cpu, tunnel_cpu, tcp_cpu) =
        (median(&quic_cpu), median(&tunnel_cpu), median(&tcp_cpu));

    let raw = median(&quic);
    let base = "raw mesh QUIC, 1 stream";
    section.rows.push(
        Row::new("`coder speedtest --direct` (download)", median(&direct), "MiB/s", Better::Higher)
            .baseline(base, raw),
    );
    section.rows.push(
        Row::new(
            "`coder speedtest --relay-only` (download)",
            median(&relay),
            "MiB/s",
            Better::Higher,
        )
        .baseline("`coder speedtest --direct`", median(&direct)),
    );
    section.rows.push(
        Row::new("`coder speedtest --direct --direction up`", median(&up), "MiB/s", Better::Higher)
            .baseline(base, raw),
    );
    let tunnel_row = || {
        Row::new(
            "`coder tunnel --tcp`, 1 TCP connection",
            median(&through),
            "MiB/s",
            Better::Higher,
        )
    };
    section.rows.push(
        tunnel_row()
            .baseline(
                "raw mesh QUIC, 2 processes (`coder speedtest --direct --direction up`)",
                median(&up),
            )
            .goal(Goal::RatioAtLeast(0.9))
            .note("the same processes and path"),
    );
    section.rows.push(
        tunnel_row()
            .baseline(format!("{base}, in-process"), raw)
            .note("both QUIC ends in one process"),
    );
    let unit = "core-s/GiB";
    section.rows.push(Row::new(
        "CPU per GiB, raw mesh QUIC, 1 stream",
        quic_cpu,
        unit,
        Better::Lower,
    ));
    section.rows.push(
        Row::new("CPU per GiB, `coder tunnel --tcp`", tunnel_cpu, unit, Better::Lower)
            .baseline("raw mesh QUIC + 2 loopback TCP hops", quic_cpu + 2.0 * tcp_cpu)
            .note("every process on the machine, the writer and the sink included"),
    );
    section.rows.push(Row::new(
        "CPU per GiB, 1 loopback TCP hop (writer → sink, no tunnel)",
        tcp_cpu,
        unit,
        Better::Lower,
    ));
    if tunnel_cpu > 0.0 {
        let ceiling = cores as f64 * 1024.0 / tunnel_cpu;
        let through = median(&through);
        section.notes.push(format!(
            "The tunnel's bytes also cross two loopback TCP connections that raw QUIC \
             does not (the writer into `coder tunnel`, the agent out to the sink; \
             {tcp_cpu:.2} core-s/GiB each), and every stage shares the same {cores} \
             cores. At {tunnel_cpu:.2} core-s/GiB, the whole machine busy would carry \
             {ceiling:.0} MiB/s; the tunnel ran at {through:.0} MiB/s, {:.0} % of that. \
             It can cost less than in-process raw QUIC plus the two hops because its \
             QUIC ends are two processes, as in `coder speedtest`.",
            100.0 * through / ceiling,
        ));
    }
    let bars = [
        Bar { label: "raw mesh QUIC", value: raw, ours: false },
        Bar { label: "speedtest direct", value: median(&direct), ours: true },
        Bar { label: "speedtest up", value: median(&up), ours: true },
        Bar { label: "speedtest relay", value: median(&relay), ours: true },
        Bar { label: "tunnel --tcp", value: median(&through), ours: true },
    ];
    let (file, md) = ctx.plot_file("cli");
    plot::bars(&file, "Throughput through the CLI (higher is better)", "MiB/s", &bars)?;
    section.plots.push(Plot { file: md, caption: "CLI throughput".into() });
    Ok(section)
}

/// One `coder speedtest` run; its total in MiB/s.
fn speedtest(dep: &Deployment, time: &str, path: &str, direction: &str) -> anyhow::Result<f64> {
    let out = dep
        .coder_ok(&[
            "speedtest",
            WORKSPACE,
            "-t",
            time,
            path,
            "--direction",
            direction,
            "--output",
            "json",
        ])
        .with_context(|| format!("coder speedtest {path} --direction {direction}"))?;
    let report: serde_json::Value = serde_json::from_str(&out).context("speedtest JSON")?;
    let mbits = report["total"]["mbits_per_sec"].as_f64().context("no total in speedtest JSON")?;
    Ok(mbits * 1e6 / 8.0 / f64::from(1u32 << 20))
}

/// A TCP sink: reads each connection to its end and answers the byte count
/// (u64 BE), so the writer knows when every byte arrived.
struct Sink {
    port: u16,
}

impl Sink {
    fn start() -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        let port = listener.local_addr()?.port();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut conn = conn;
                    let mut buf = vec![0u8; 256 * 1024];
                    let mut total = 0u64;
                    while let Ok(n @ 1..) = conn.read(&mut buf) {
                        total += n as u64;
                    }
                    let _ = conn.write_all(&total.to_be_bytes());
                });
            }
        });
        Ok(Self { port })
    }
}

/// `coder tunnel WS --tcp LOCAL:REMOTE`, killed on drop.
struct Tunnel {
    child: Child,
    local: u16,
}

impl Tunnel {
    fn start(dep: &Deployment, local: u16, remote: u16) -> anyhow::Result<Self> {
        let child = dep
            .coder(&["tunnel", WORKSPACE, "--tcp", &format!("{local}:{remote}")])?
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("spawn coder tunnel")?;
        let mut tunnel = Self { child, local };
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", local)).is_err() {
            if let Some(status) = tunnel.child.try_wait()? {
                bail!("coder tunnel exited ({status})");
            }
            if Instant::now() > deadline {
                bail!("coder tunnel did not listen on {local} within 30 s");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(tunnel)
    }

    /// Writes `len` bytes through the forward; the time until the sink has them all.
    fn transfer(&mut self, len: u64) -> anyhow::Result<Duration> {
        tcp_transfer(self.local, len)
    }
}

/// Writes `len` bytes to `127.0.0.1:port` (the tunnel, or the sink itself);
/// the time until the sink has them all.
fn tcp_transfer(port: u16, len: u64) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let mut conn = TcpStream::connect(("127.0.0.1", port))?;
    conn.set_nodelay(true)?;
    let chunk = vec![0x5au8; 256 * 1024];
    let mut left = len;
    while left > 0 {
        let n = usize::try_from(left).unwrap_or(usize::MAX).min(chunk.len());
        conn.write_all(&chunk[..n]).with_context(|| format!("write to port {port}"))?;
        left -= n as u64;
    }
    conn.shutdown(std::net::Shutdown::Write)?;
    let mut count = [0u8; 8];
    conn.read_exact(&mut count).context("the sink's byte count")?;
    let elapsed = start.elapsed();
    let got = u64::from_be_bytes(count);
    anyhow::ensure!(got == len, "the sink got {got} of {len} bytes");
    Ok(elapsed)
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
