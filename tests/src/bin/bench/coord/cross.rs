//! Cross-replica fan-out: two `coderd` replicas on one Postgres (the first
//! one's embedded cluster, which the second reaches with `--postgres-url`),
//! every agent connected to the first and every client to the second, so
//! each update travels agent → replica A → Postgres (row, `NOTIFY`) →
//! replica B → client.

use anyhow::Context;
use coordinator::postgres::DATABASE;
use coordinator::testutil::seed_agents;

use super::{embedded_db, first_owner, percentile, Cpu, Fleet};
use crate::report::{Better, Goal, Row, Section};

/// Measures `samples` updates one at a time across two replicas serving
/// `peers` peers, and adds the figures to `section`.
pub async fn measure(section: &mut Section, peers: usize, samples: usize) -> anyhow::Result<()> {
    let pairs = peers / 2;
    let tmp = tests::tempdir()?;
    let (data_a, data_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let a = tests::Coderd::spawn(&data_a, &[]).context("replica A")?;
    let result = async {
        let (session_token, owner) = first_owner(&a.url).await?;
        let (cluster, db) = embedded_db(&data_a).await?;
        let agents = seed_agents(&db, owner, pairs).await?;
        db.close().await;
        let postgres_url = cluster.url(DATABASE);
        let b = tests::Coderd::spawn(&data_b, &["--postgres-url", &postgres_url])
            .context("replica B")?;
        let mut fleet =
            Fleet::connect(&a.url, &b.url, &session_token, &agents, &mut || Ok(())).await?;
        let cpu = Cpu::now(a.child.id(), &data_a)?;
        let one = fleet.one_at_a_time(samples).await;
        let cpu = Cpu::now(a.child.id(), &data_a)?.since(&cpu);
        fleet.close().await;
        drop(b);
        anyhow::Ok((one?, cpu))
    }
    .await;
    drop(a);
    tests::stop_embedded_postgres(&data_a);
    let (one, cpu) = result?;
    section.rows.push(Row::new(
        format!("update → peer across two replicas, one at a time, {peers} peers (p50)"),
        percentile(&one, 50.0),
        "ms",
        Better::Lower,
    ));
    section.rows.push(
        Row::new(
            format!("update → peer across two replicas, one at a time, {peers} peers (p99)"),
            percentile(&one, 99.0),
            "ms",
            Better::Lower,
        )
        .goal(Goal::AtMost(10.0)),
    );
    section.notes.push(format!(
        "Across replicas ({peers} peers, agents on replica A, their clients on replica B, \
         one Postgres): CPU while measuring: {cpu} (coderd: replica A only)."
    ));
    Ok(())
}
