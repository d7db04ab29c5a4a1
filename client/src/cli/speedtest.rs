//! `coder speedtest`: throughput to or from a workspace agent over the mesh.
//!
//! One QUIC stream to the agent's `speedtest` service. Download (`d`): the
//! agent writes bulk bytes until we stop reading; we count what arrives per
//! interval. Upload (`u`): we write bulk bytes for the duration, finish the
//! stream, and the agent answers how many bytes it received (`u64` BE); the
//! total is that count over the time until the answer, so bytes still in
//! flight when the clock stops are not counted as sent.

use std::time::Duration;

use anyhow::{bail, Context};
use mesh::Service;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use super::output::{outln, OutputFormat, StdoutError};
use super::ping::{relay_hint, AgentLink, PathInfo};
use super::Context_;

#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Workspace to you.
    Down,
    /// You to the workspace.
    Up,
}

#[derive(clap::Args, Debug)]
pub struct SpeedtestArgs {
    /// `WORKSPACE` or `WORKSPACE.AGENT`.
    pub workspace: String,
    /// How long to measure (e.g. `5s`).
    #[arg(short = 't', long = "time", default_value = "5s", value_parser = parse_duration)]
    pub time: Duration,
    /// Which way the bytes flow.
    #[arg(short, long, value_enum, default_value_t = Direction::Down)]
    pub direction: Direction,
    /// Wait for a direct path before measuring; fail if none appears.
    #[arg(long, conflicts_with = "relay_only")]
    pub direct: bool,
    /// How long `--direct` waits for the direct path.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub direct_timeout: Duration,
    /// Report throughput this often.
    #[arg(short, long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Use only the relay.
    #[arg(long, env = "CODER_SSH_RELAY_ONLY")]
    pub relay_only: bool,
    #[command(flatten)]
    pub out: super::output::OutputArgs,
}

/// Parses `500ms`, `5s`, `1.5s`, `2m`, `1h`, or a bare number of seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(s.len());
    let (number, unit) = s.split_at(split);
    let value: f64 =
        number.parse().map_err(|_| format!("{s:?} is not a duration; try 5s or 500ms"))?;
    let seconds = match unit {
        "" | "s" => value,
        "ms" => value / 1e3,
        "m" => value * 60.0,
        "h" => value * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?}; use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{s:?}: {e}"))
}

#[derive(Debug, Clone, Serialize)]
struct Interval {
    start_s: f64,
    end_s: f64,
    bytes: u64,
    mbits_per_sec: f64,
}

impl Interval {
    fn new(start: Duration, end: Duration, bytes: u64) -> Self {
        let secs = (end - start).as_secs_f64();
        let mbits_per_sec = if secs > 0.0 { bytes as f64 * 8.0 / secs / 1e6 } else { 0.0 };
        Interval { start_s: start.as_secs_f64(), end_s: end.as_secs_f64(), bytes, mbits_per_sec }
    }

    fn line(&self) -> String {
        format!(
            "{:<15}  {:>10}  {:>10.2} Mbit/s",
            format!("{:.2}-{:.2} s", self.start_s, self.end_s),
            human_bytes(self.bytes),
            self.mbits_per_sec
        )
    }
}

fn human_bytes(n: u64) -> String {
    let n = n as f64;
    if n >= 1e9 {
        format!("{:.2} GB", n / 1e9)
    } else if n >= 1e6 {
        format!("{:.2} MB", n / 1e6)
    } else if n >= 1e3 {
        format!("{:.2} kB", n / 1e3)
    } else {
        format!("{n} B")
    }
}

#[derive(Debug, Serialize)]
struct Report {
    workspace: String,
    direction: Direction,
    /// The path when the measurement started.
    path: PathInfo,
    /// The path when it ended, if different.
    #[serde(skip_serializing_if = "Option::is_none")]
    path_after: Option<PathInfo>,
    intervals: Vec<Interval>,
    total: Interval,
}

/// Counts bytes per interval and prints each interval as it closes.
struct Meter {
    start: Instant,
    last: Instant,
    bytes: u64,
    total: u64,
    intervals: Vec<Interval>,
    live: bool,
}

impl Meter {
    fn new(live: bool) -> Self {
        let now = Instant::now();
        Meter { start: now, last: now, bytes: 0, total: 0, intervals: Vec::new(), live }
    }

    fn add(&mut self, n: usize) {
        self.bytes += n as u64;
        self.total += n as u64;
    }

    fn close_interval(&mut self, now: Instant) -> Result<(), StdoutError> {
        let interval = Interval::new(self.last - self.start, now - self.start, self.bytes);
        if self.live {
            outln!("{}", interval.line())?;
        }
        self.intervals.push(interval);
        self.last = now;
        self.bytes = 0;
        Ok(())
    }
}

/// Reads bulk bytes until `time` is up.
async fn download<R: AsyncRead + Unpin>(
    recv: &mut R,
    time: Duration,
    every: Duration,
    meter: &mut Meter,
) -> anyhow::Result<()> {
    let end = meter.start + time;
    let mut tick = tokio::time::interval_at(meter.start + every, every);
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        tokio::select! {
            biased;
            () = tokio::time::sleep_until(end) => {
                meter.close_interval(end)?;
                return Ok(());
            }
            now = tick.tick() => meter.close_interval(now)?,
            r = recv.read(&mut buf) => match r.context("the agent stopped sending")? {
                0 => bail!("the agent ended the speed test early"),
                n => meter.add(n),
            },
        }
    }
}

/// Writes bulk bytes until `time` is up, then asks how much arrived.
async fn upload<S, R>(
    send: &mut S,
    recv: &mut R,
    time: Duration,
    every: Duration,
    meter: &mut Meter,
) -> anyhow::Result<u64>
where
    S: AsyncWrite + Unpin,
    R: AsyncRead + Unpin,
{
    let end = meter.start + time;
    let mut tick = tokio::time::interval_at(meter.start + every, every);
    let buf = vec![0xa5u8; 1024 * 1024];
    loop {
        tokio::select! {
            biased;
            () = tokio::time::sleep_until(end) => {
                meter.close_interval(end)?;
                break;
            }
            now = tick.tick() => meter.close_interval(now)?,
            r = send.write(&buf) => meter.add(r.context("the agent stopped receiving")?),
        }
    }
    send.shutdown().await.context("finish the upload")?;
    let mut count = [0u8; 8];
    tokio::time::timeout(Duration::from_secs(30), recv.read_exact(&mut count))
        .await
        .context("the agent did not report what it received within 30 s")?
        .context("the agent did not report what it received")?;
    Ok(u64::from_be_bytes(count))
}

/// Waits until data to the agent goes direct, or `timeout` passes.
async fn wait_for_direct(link: &mut AgentLink, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if link.path().is_direct() {
            return true;
        }
        tokio::select! {
            r = link.events.recv() => if let Err(tokio::sync::broadcast::error::RecvError::Closed) = r {
                return false;
            },
            () = tokio::time::sleep_until(deadline) => return link.path().is_direct(),
        }
    }
}

pub async fn run(ctx: &Context_, args: SpeedtestArgs) -> anyhow::Result<()> {
    if args.time.is_zero() || args.interval.is_zero() {
        bail!("--time and --interval must be longer than zero.");
    }
    let json = args.out.output == OutputFormat::Json;
    let mut link = AgentLink::connect(ctx, &args.workspace, args.relay_only).await?;
    let ws = link.workspace.clone();
    if args.direct && !wait_for_direct(&mut link, args.direct_timeout).await {
        bail!(
            "No direct path to {ws} within {:?} ({}); drop --direct to measure through the relay.",
            args.direct_timeout,
            relay_hint(false)
        );
    }
    let path = link.path();
    let way = match args.direction {
        Direction::Down => "download",
        Direction::Up => "upload",
    };
    if !json {
        outln!("Speed test with {ws} ({way}, {:?}) via {path}", args.time)?;
        outln!("{:<15}  {:>10}  {:>17}", "interval", "transfer", "bandwidth")?;
    }
    let (mut send, mut recv) =
        link.conn.open(Service::Speedtest).await.context("open the speed test stream")?;
    let (total, meter) = match args.direction {
        Direction::Down => {
            send.write_all(b"d").await.context("start the speed test")?;
            let mut meter = Meter::new(!json);
            download(&mut recv, args.time, args.interval, &mut meter).await?;
            (Interval::new(Duration::ZERO, args.time, meter.total), meter)
        }
        Direction::Up => {
            send.write_all(b"u").await.context("start the speed test")?;
            let mut meter = Meter::new(!json);
            let received =
                upload(&mut send, &mut recv, args.time, args.interval, &mut meter).await?;
            (Interval::new(Duration::ZERO, meter.start.elapsed(), received), meter)
        }
    };
    drop((send, recv));
    let after = link.path();
    if !json {
        outln!("{}  (total)", total.line())?;
        if after != path {
            outln!("the path changed during the test: now {after}")?;
        }
        if !after.is_direct() {
            outln!("measured through the relay: {}", relay_hint(args.relay_only))?;
        }
    } else {
        let report = Report {
            workspace: ws,
            direction: args.direction,
            path_after: (after != path).then_some(after),
            path,
            intervals: meter.intervals,
            total,
        };
        outln!("{}", serde_json::to_string_pretty(&report)?)?;
    }
    link.close().await;
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn durations_parse() {
        assert_eq!(parse_duration("5s").unwrap(), Duration::from_secs(5));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("3").unwrap(), Duration::from_secs(3));
        assert!(parse_duration("5 parsecs").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
    }

    #[test]
    fn interval_rates() {
        let i = Interval::new(Duration::from_secs(1), Duration::from_secs(2), 12_500_000);
        assert!((i.mbits_per_sec - 100.0).abs() < 1e-9);
        assert!(i.line().contains("12.50 MB"), "{}", i.line());
        assert_eq!(Interval::new(Duration::ZERO, Duration::ZERO, 5).mbits_per_sec, 0.0);
    }
}
