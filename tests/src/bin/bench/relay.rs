//! Group `relay`: mesh QUIC through a local `derp::Server` (both nodes
//! relay-only) for one pair against the direct path, then many pairs at once
//! for per-pair throughput and Jain's fairness index, then one transfer that
//! starts on the relay and moves to the direct path (throughput per 100 ms).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use futures::future::try_join_all;
use mesh::{MeshEndpoint, Service};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

use crate::plot::{self, Bar, Series};
use crate::report::{Better, Goal, Plot, Row, Section};
use crate::stats::{jain, median, mib_per_s, percentile};
use crate::{net, quic, Ctx};

struct Sizes {
    len: u64,
    reps: usize,
    pairs: usize,
    warmup: Duration,
    window: Duration,
    switch_at: Duration,
    switch_total: Duration,
}

fn sizes(ctx: &Ctx) -> Sizes {
    if ctx.quick {
        Sizes {
            len: 2 << 20,
            reps: 2,
            pairs: 10,
            warmup: Duration::from_millis(200),
            window: Duration::from_millis(300),
            switch_at: Duration::from_millis(300),
            switch_total: Duration::from_millis(800),
        }
    } else {
        Sizes {
            len: 64 << 20,
            reps: 5,
            pairs: 100,
            warmup: Duration::from_secs(2),
            window: Duration::from_secs(10),
            switch_at: Duration::from_secs(2),
            switch_total: Duration::from_secs(5),
        }
    }
}

pub async fn run(ctx: &Ctx) -> anyhow::Result<Section> {
    let s = sizes(ctx);
    let mut section = Section::new(
        "Relay (`bench relay`)",
        &format!(
            "A `derp::Server` on 127.0.0.1 (default config: 512-packet queue per client, \
             no rate limit) in this process. *One pair*: two relay-only mesh nodes move \
             {} MiB on one QUIC stream, median of {} transfers; packets/s counts every \
             packet the relay forwarded in both directions (data and ACKs). *Direct*: the \
             same transfer between two nodes with a direct UDP path. *{} pairs*: every pair \
             sends on one stream at once; after {:.1} s of warm-up, the bytes each receiver \
             reads in {:.1} s give its throughput; fairness is Jain's index over the pairs \
             (1 = all equal). The fair-share baseline is the one-pair figure ÷ the number \
             of pairs; the slowest pair is held against an even split of what the relay \
             moved for all pairs. *Meshed pair*: the two nodes are homed on two relays of \
             one region meshed with a mesh key, so every packet crosses both (median of {} \
             transfers). The machine is shared and noisy: figures are medians.",
            s.len >> 20,
            s.reps,
            s.pairs,
            s.warmup.as_secs_f64(),
            s.window.as_secs_f64(),
            s.reps,
        ),
    );

    let direct = median(&quic::mesh_direct(s.len, s.reps).await.context("direct")?);
    let one = one_pair(s.len, s.reps).await.context("one relayed pair")?;
    section.rows.push(
        Row::new("relayed mesh QUIC, 1 pair", one.mib_s, "MiB/s", Better::Higher)
            .baseline("direct mesh QUIC", direct)
            .goal(Goal::RatioAtLeast(0.5)),
    );
    let worst = one.per_transfer.iter().copied().fold(f64::INFINITY, f64::min);
    section.rows.push(
        Row::new(
            format!("relayed mesh QUIC, 1 pair, slowest of {} transfers", s.reps),
            worst,
            "MiB/s",
            Better::Higher,
        )
        .baseline("direct mesh QUIC", direct)
        .goal(Goal::RatioAtLeast(0.5)),
    );
    let meshed = meshed_pair(s.len, s.reps).await.context("meshed pair")?;
    section.rows.push(
        Row::new("relayed mesh QUIC, meshed pair (2 relays)", meshed, "MiB/s", Better::Higher)
            .baseline("direct mesh QUIC", direct)
            .goal(Goal::RatioAtLeast(0.4)),
    );
    section.rows.push(Row::new(
        "relay packets forwarded, 1 pair",
        one.packets_s,
        "packets/s",
        Better::Higher,
    ));
    if one.dropped > 0 {
        section.notes.push(format!(
            "The relay dropped {} packets for full client queues during the one-pair \
             transfers (QUIC retransmitted them).",
            one.dropped
        ));
    }

    let many = many_pairs(s.pairs, s.warmup, s.window).await.context("many relayed pairs")?;
    let fair_share = one.mib_s / s.pairs as f64;
    let per_pair_median = median(&many.per_pair);
    let total: f64 = many.per_pair.iter().sum();
    // What each pair would get if the relay split what it moved evenly.
    let even_split = total / s.pairs as f64;
    let min = many.per_pair.iter().copied().fold(f64::INFINITY, f64::min);
    let starved = many.per_pair.iter().filter(|x| **x <= 0.0).count();
    section.rows.push(
        Row::new(
            format!("per-pair throughput, {} pairs (median)", s.pairs),
            per_pair_median,
            "MiB/s",
            Better::Higher,
        )
        .baseline("fair share of 1 pair", fair_share),
    );
    section.rows.push(
        Row::new(format!("slowest pair, {} pairs", s.pairs), min, "MiB/s", Better::Higher)
            .baseline("even split of the aggregate", even_split)
            .goal(Goal::RatioAtLeast(0.5))
            .note(format!(
                "{starved} pairs starved (0 bytes); p10 {:.2} MiB/s",
                percentile(&many.per_pair, 10.0)
            )),
    );
    section.rows.push(
        Row::new(format!("aggregate, {} pairs", s.pairs), total, "MiB/s", Better::Higher)
            .baseline("1 pair", one.mib_s),
    );
    section.rows.push(
        Row::new(
            format!("Jain's fairness index, {} pairs", s.pairs),
            jain(&many.per_pair),
            "",
            Better::Higher,
        )
        .baseline("perfectly fair", 1.0)
        .goal(Goal::AtLeast(0.9)),
    );
    if many.dropped > 0 {
        section.notes.push(format!(
            "With {} pairs the relay dropped {} packets for full client queues.",
            s.pairs, many.dropped
        ));
    }

    let (file, md) = ctx.plot_file("relay");
    plot::bars(
        &file,
        "Mesh QUIC, one stream: relayed vs direct",
        "MiB/s",
        &[
            Bar { label: "relayed (derp, loopback)", value: one.mib_s, ours: true },
            Bar { label: "direct UDP", value: direct, ours: false },
        ],
    )?;
    section.plots.push(Plot { file: md, caption: "Relayed vs direct throughput, one pair".into() });
    let mut sorted = many.per_pair.clone();
    sorted.sort_by(f64::total_cmp);
    let (file, md) = ctx.plot_file("relay_pairs");
    plot::lines(
        &file,
        &format!("{} relayed pairs at once: per-pair throughput, sorted", s.pairs),
        ("pair (sorted)", "MiB/s"),
        &[
            Series {
                name: "per pair",
                points: sorted.iter().enumerate().map(|(i, v)| (i as f64, *v)).collect(),
            },
            Series {
                name: "fair share",
                points: vec![
                    (0.0, total / s.pairs as f64),
                    ((s.pairs - 1) as f64, total / s.pairs as f64),
                ],
            },
        ],
        &[],
    )?;
    section.plots.push(Plot {
        file: md,
        caption: format!(
            "Per-pair throughput of {} concurrent relayed pairs (flat = fair)",
            s.pairs
        ),
    });

    let sw = switch(s.switch_at, s.switch_total).await.context("relay → direct transfer")?;
    let (file, md) = ctx.plot_file("relay_to_direct");
    let mut markers = vec![(s.switch_at.as_secs_f64(), "endpoints announced".to_owned())];
    if let Some(at) = sw.direct_at {
        markers.push((at.as_secs_f64(), "direct".to_owned()));
    }
    plot::lines(
        &file,
        "One transfer: relay first, direct once endpoints are known",
        ("seconds", "MiB/s per 100 ms"),
        &[Series { name: "throughput", points: sw.samples.clone() }],
        &markers,
    )?;
    section.plots.push(Plot {
        file: md,
        caption: "Throughput per 100 ms of one stream that starts on the relay; the nodes \
                  learn each other's endpoints at the first marker and the path selector \
                  moves to direct UDP at the second"
            .into(),
    });
    let before = avg_between(&sw.samples, 0.2, s.switch_at.as_secs_f64());
    let after_from = sw.direct_at.map_or(s.switch_total.as_secs_f64(), |d| d.as_secs_f64() + 0.3);
    let after = avg_between(&sw.samples, after_from, s.switch_total.as_secs_f64() + 0.05);
    section.rows.push(
        Row::new("same stream, on the relay", before, "MiB/s", Better::Higher)
            .baseline("after moving to direct", after)
            .note(match sw.direct_at {
                Some(d) => format!(
                    "direct {:.0} ms after the endpoints were announced",
                    (d.saturating_sub(s.switch_at)).as_secs_f64() * 1000.0
                ),
                None => "never went direct".to_owned(),
            }),
    );
    Ok(section)
}

struct OnePair {
    mib_s: f64,
    per_transfer: Vec<f64>,
    packets_s: f64,
    dropped: u64,
}

async fn one_pair(len: u64, reps: usize) -> anyhow::Result<OnePair> {
    let (server, url) = net::relay().await?;
    let (a, b) =
        net::pair(net::config(11, Some(&url), true), net::config(12, Some(&url), true)).await?;
    let (ca, cb) = net::connect(&a, &b).await?;
    net::mesh_transfer(&ca, &cb, len.min(8 << 20)).await.context("warm-up")?;
    let (mut rates, mut pps) = (Vec::new(), Vec::new());
    let first = server.stats();
    for _ in 0..reps {
        let before = server.stats();
        let elapsed = net::mesh_transfer(&ca, &cb, len).await?;
        let after = server.stats();
        rates.push(mib_per_s(len, elapsed));
        pps.push(
            (after.packets_forwarded - before.packets_forwarded) as f64 / elapsed.as_secs_f64(),
        );
    }
    let dropped = server.stats().packets_dropped_queue_full - first.packets_dropped_queue_full;
    a.close().await;
    b.close().await;
    Ok(OnePair { mib_s: median(&rates), per_transfer: rates, packets_s: median(&pps), dropped })
}

/// Median throughput between two relay-only nodes homed on two meshed
/// relays of one region (`derper --mesh-with`, as coderd's replicas do).
async fn meshed_pair(len: u64, reps: usize) -> anyhow::Result<f64> {
    let mesh_key = derp::MeshKey::generate();
    let listeners =
        [TcpListener::bind("127.0.0.1:0").await?, TcpListener::bind("127.0.0.1:0").await?];
    let mut urls = Vec::new();
    for l in &listeners {
        urls.push(format!("http://{}/derp", l.local_addr()?));
    }
    let mut relays = Vec::new();
    for listener in listeners {
        let mut config = derp::ServerConfig::default();
        config.mesh_key = Some(mesh_key.clone());
        config.mesh_with = urls.clone();
        relays.push(net::relay_on(listener, config)?);
    }
    let (a, b) = net::pair(
        net::config(31, Some(&relays[0].1), true),
        net::config(32, Some(&relays[1].1), true),
    )
    .await?;
    // Each relay must know the other's client before the first packet.
    for ((server, _), node) in relays.iter().zip([&b, &a]) {
        let key: derp::PublicKey = node.node().key.into();
        let mut changes = server.membership_changes();
        tokio::time::timeout(Duration::from_secs(10), async {
            while server.peer_location(&key).is_none() {
                changes.changed().await?;
            }
            anyhow::Ok(())
        })
        .await
        .context("the relays never meshed")??;
    }
    let (ca, cb) = net::connect(&a, &b).await?;
    net::mesh_transfer(&ca, &cb, len.min(8 << 20)).await.context("warm-up")?;
    let mut rates = Vec::new();
    for _ in 0..reps {
        rates.push(mib_per_s(len, net::mesh_transfer(&ca, &cb, len).await?));
    }
    let forwarded = relays.iter().map(|(s, _)| s.stats().packets_forwarded_mesh).sum::<u64>();
    anyhow::ensure!(forwarded > 0, "no packet crossed the relay mesh");
    a.close().await;
    b.close().await;
    Ok(median(&rates))
}

struct ManyPairs {
    per_pair: Vec<f64>,
    dropped: u64,
}

async fn many_pairs(pairs: usize, warmup: Duration, window: Duration) -> anyhow::Result<ManyPairs> {
    let (server, url) = net::relay().await?;
    let bind = (0..pairs).map(|i| {
        let url = url.clone();
        async move {
            let id = 1000 + 2 * i as u64;
            net::pair(net::config(id, Some(&url), true), net::config(id + 1, Some(&url), true))
                .await
        }
    });
    let nodes: Vec<(MeshEndpoint, MeshEndpoint)> = try_join_all(bind).await?;
    let conns = try_join_all(nodes.iter().map(|(a, b)| net::connect(a, b))).await?;
    let counters: Vec<Arc<AtomicU64>> = (0..pairs).map(|_| Arc::default()).collect();
    let mut tasks = JoinSet::new();
    for ((ca, cb), counter) in conns.iter().zip(&counters) {
        let (ca, cb, counter) = (ca.clone(), cb.clone(), counter.clone());
        tasks.spawn(async move {
            let (send, _recv) = ca.open(Service::Speedtest).await?;
            net::send_bulk(send, None).await
        });
        tasks.spawn(async move {
            let (_service, _send, recv) = cb.accept().await?;
            net::recv_bulk(recv, counter).await.map(drop)
        });
    }
    tokio::time::sleep(warmup).await;
    let dropped_before = server.stats().packets_dropped_queue_full;
    let start: Vec<u64> = counters.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let t0 = Instant::now();
    tokio::time::sleep(window).await;
    let elapsed = t0.elapsed();
    let per_pair = counters
        .iter()
        .zip(start)
        .map(|(c, s)| mib_per_s(c.load(Ordering::Relaxed) - s, elapsed))
        .collect();
    let dropped = server.stats().packets_dropped_queue_full - dropped_before;
    tasks.abort_all();
    drop(conns);
    drop(nodes);
    Ok(ManyPairs { per_pair, dropped })
}

struct Switch {
    /// (seconds since start, MiB/s over the 100 ms before).
    samples: Vec<(f64, f64)>,
    direct_at: Option<Duration>,
}

/// One stream that starts on the relay: the nodes announce no endpoints at
/// first (so discovery has nothing to probe), and learn each other's UDP
/// address at `switch_at`, as if the coordinator had just sent it.
async fn switch(switch_at: Duration, total: Duration) -> anyhow::Result<Switch> {
    let (_server, url) = net::relay().await?;
    let quiet = |id| {
        let mut c = net::config(id, Some(&url), false);
        c.announce_local = false;
        c
    };
    let (a, b) = net::pair(quiet(21), quiet(22)).await?;
    let mut events = a.path_events();
    let (ca, cb) = net::connect(&a, &b).await?;
    let counter = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    {
        let (ca, cb, counter) = (ca.clone(), cb.clone(), counter.clone());
        tasks.spawn(async move {
            let (send, _recv) = ca.open(Service::Speedtest).await?;
            net::send_bulk(send, None).await
        });
        tasks.spawn(async move {
            let (_service, _send, recv) = cb.accept().await?;
            net::recv_bulk(recv, counter).await.map(drop)
        });
    }
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tick.tick().await;
    let (mut samples, mut last, mut last_t) = (vec![(0.0, 0.0)], 0u64, start);
    let mut announced = false;
    let mut direct_at = None;
    while start.elapsed() < total {
        tick.tick().await;
        let (now, bytes) = (Instant::now(), counter.load(Ordering::Relaxed));
        samples
            .push((now.duration_since(start).as_secs_f64(), mib_per_s(bytes - last, now - last_t)));
        (last, last_t) = (bytes, now);
        if !announced && start.elapsed() >= switch_at {
            let (mut na, mut nb) = (a.node(), b.node());
            na.endpoints = vec![a.local_addr()?];
            nb.endpoints = vec![b.local_addr()?];
            net::introduce(&a, &b, &na, &nb)?;
            announced = true;
        }
        while let Ok(ev) = events.try_recv() {
            if direct_at.is_none() && matches!(ev, mesh::PathEvent::RelayToDirect { .. }) {
                direct_at = Some(start.elapsed());
            }
        }
    }
    tasks.abort_all();
    Ok(Switch { samples, direct_at })
}

/// Mean of the samples with `from <= t < to`.
fn avg_between(samples: &[(f64, f64)], from: f64, to: f64) -> f64 {
    let xs: Vec<f64> = samples.iter().filter(|(t, _)| *t >= from && *t < to).map(|p| p.1).collect();
    if xs.is_empty() {
        0.0
    } else {
        xs.iter().sum::<f64>() / xs.len() as f64
    }
}
