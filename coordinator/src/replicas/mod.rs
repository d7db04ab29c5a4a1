//! The replica registry: every `coderd` process sharing the database records
//! itself in `replicas` (id, hostname, the relay URL other replicas reach it
//! at, region, start time), heartbeats, and deletes replicas whose heartbeat
//! is older than [`ReplicaConfig::heartbeat_deadline`] (a few beats).
//!
//! Data flow: the registry task beats every interval (and re-reads the table
//! when another replica announces itself on [`CHANNEL`]), diffs the live set
//! against the last one with [`Membership`] (a pure core: joins and leaves
//! are logged), and publishes it on a `watch` channel. [`RelayMesh`] follows
//! that channel to mesh the embedded relay with every other replica's relay;
//! `GET /api/v2/replicas` reads the table through [`ReplicaRegistry::report`].
//!
//! After a failed beat (Postgres away) the task holds off expiring others
//! for one deadline once the database answers, as coordination's heartbeat
//! does: every replica's heartbeat went stale during the outage.

mod mesh;

pub use mesh::{relay_mesh_key, MeshKeyError, RelayMesh};

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{broadcast, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use url::Url;
use uuid::Uuid;

use crate::database::replicas as rows;
pub use crate::database::replicas::ReplicaRow;
use crate::pubsub::{Message, Pubsub};

/// The pub/sub channel a replica announces itself on (join and leave), so
/// the others re-read the registry at once rather than at their next beat.
pub const CHANNEL: &str = "coderd_replicas";

/// How this replica registers.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ReplicaConfig {
    pub id: Uuid,
    pub hostname: String,
    /// The relay endpoint other replicas mesh with (`…/derp`); `None`
    /// without an embedded relay or a reachable address.
    pub relay_url: Option<Url>,
    pub region_id: u16,
    pub heartbeat_interval: Duration,
    /// A replica silent this long is forgotten.
    pub heartbeat_deadline: Duration,
}

impl Default for ReplicaConfig {
    fn default() -> Self {
        let hostname =
            nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_default();
        ReplicaConfig {
            id: Uuid::new_v4(),
            hostname,
            relay_url: None,
            region_id: crate::relay::EMBEDDED_REGION_ID,
            heartbeat_interval: Duration::from_secs(2),
            heartbeat_deadline: Duration::from_secs(6),
        }
    }
}

/// The relay endpoint of a `--derp-server-relay-url`: the URL as given,
/// with `/derp` as its path when it names none.
pub fn relay_endpoint(mut url: Url) -> Url {
    if url.path().is_empty() || url.path() == "/" {
        url.set_path("/derp");
    }
    url
}

/// The pure core: which replicas joined and which left between two reads.
#[derive(Debug, Default)]
pub struct Membership {
    known: HashSet<Uuid>,
}

/// What changed in one read of the registry.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct MembershipChange {
    pub joined: Vec<Uuid>,
    pub left: Vec<Uuid>,
}

impl Membership {
    /// Takes the live set and returns what changed since the last one.
    #[must_use]
    pub fn handle_read(&mut self, live: &[ReplicaRow]) -> MembershipChange {
        let next: HashSet<Uuid> = live.iter().map(|r| r.id).collect();
        let mut joined: Vec<Uuid> = next.difference(&self.known).copied().collect();
        let mut left: Vec<Uuid> = self.known.difference(&next).copied().collect();
        joined.sort();
        left.sort();
        self.known = next;
        MembershipChange { joined, left }
    }
}

/// A handle to this process's registration; cloning shares it. Dropping the
/// last handle stops the heartbeat (the row then expires);
/// [`ReplicaRegistry::shutdown`] deletes it at once.
#[derive(Clone)]
pub struct ReplicaRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    db: sqlx::PgPool,
    pubsub: Pubsub,
    row: ReplicaRow,
    config: ReplicaConfig,
    live: watch::Receiver<Vec<ReplicaRow>>,
    /// Why the last heartbeat failed; `None` when it succeeded.
    beat_error: Arc<Mutex<Option<String>>>,
    stop: CancellationToken,
    _task: AbortOnDropHandle<()>,
}

impl std::fmt::Debug for ReplicaRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReplicaRegistry").field("id", &self.inner.row.id).finish_non_exhaustive()
    }
}

impl ReplicaRegistry {
    /// Records this replica (the first beat), reads the others, announces
    /// itself and starts heartbeating.
    pub async fn spawn(
        db: sqlx::PgPool,
        pubsub: Pubsub,
        config: ReplicaConfig,
    ) -> Result<Self, sqlx::Error> {
        let now = chrono::Utc::now();
        let row = ReplicaRow {
            id: config.id,
            hostname: config.hostname.clone(),
            relay_url: config.relay_url.as_ref().map(Url::to_string).unwrap_or_default(),
            region_id: i32::from(config.region_id),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: now,
            heartbeat_at: now,
        };
        let notices = pubsub.subscribe(CHANNEL).await;
        rows::heartbeat(&db, &row).await?;
        let (live, _) = rows::list(&db).await?;
        let mut membership = Membership::default();
        let _ = membership.handle_read(&live);
        tracing::info!(replica = %row.id, relay_url = %row.relay_url, others = live.len().saturating_sub(1), "replica registered");
        let (live_tx, live_rx) = watch::channel(live);
        let beat_error = Arc::new(Mutex::new(None));
        let stop = CancellationToken::new();
        let task = Task {
            db: db.clone(),
            row: row.clone(),
            config: config.clone(),
            membership,
            live: live_tx,
            beat_error: beat_error.clone(),
        };
        let handle = tokio::spawn(task.run(notices, stop.clone()));
        if let Err(e) = pubsub.publish(CHANNEL, &row.id.to_string()).await {
            tracing::warn!(error = %e, "replicas: cannot announce this replica");
        }
        Ok(ReplicaRegistry {
            inner: Arc::new(Inner {
                db,
                pubsub,
                row,
                config,
                live: live_rx,
                beat_error,
                stop,
                _task: AbortOnDropHandle::new(handle),
            }),
        })
    }

    pub fn id(&self) -> Uuid {
        self.inner.row.id
    }

    pub fn config(&self) -> &ReplicaConfig {
        &self.inner.config
    }

    /// The live replicas (this one included), updated on every change.
    pub fn live(&self) -> watch::Receiver<Vec<ReplicaRow>> {
        self.inner.live.clone()
    }

    /// Every replica with its health as this replica sees it: in time with
    /// its heartbeat, and (for the others) with this replica's relay mesh
    /// link to it up, when both run a relay.
    pub async fn report(
        &self,
        relay: Option<&derp::Server>,
    ) -> Result<Vec<codersdk::Replica>, sqlx::Error> {
        let beat_error = self.inner.beat_error.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let this = Viewpoint {
            id: Some(self.id()),
            beat_error,
            deadline: self.inner.config.heartbeat_deadline,
            relay,
        };
        report(&self.inner.db, this).await
    }

    /// Stops heartbeating and deletes this replica's row, so the others
    /// forget it now rather than after the deadline.
    pub async fn shutdown(&self) {
        self.inner.stop.cancel();
        if let Err(e) = rows::delete(&self.inner.db, self.id()).await {
            tracing::warn!(error = %e, "replicas: cannot deregister this replica");
            return;
        }
        let _ = self.inner.pubsub.publish(CHANNEL, &self.id().to_string()).await;
        tracing::info!(replica = %self.id(), "replica deregistered");
    }
}

/// Who judges the replicas' health in [`report`].
#[derive(Debug, Default)]
pub struct Viewpoint<'a> {
    /// The answering replica (`None`: a process that did not register).
    pub id: Option<Uuid>,
    /// Why its own last heartbeat failed.
    pub beat_error: Option<String>,
    pub deadline: Duration,
    /// Its relay, whose mesh links show which replicas it reaches.
    pub relay: Option<&'a derp::Server>,
}

/// Every recorded replica with its health as `this` sees it.
pub async fn report(
    db: &sqlx::PgPool,
    this: Viewpoint<'_>,
) -> Result<Vec<codersdk::Replica>, sqlx::Error> {
    let (all, now) = rows::list(db).await?;
    let links = this.relay.map(derp::Server::mesh_links).unwrap_or_default();
    let deadline =
        chrono::Duration::from_std(this.deadline).unwrap_or_else(|_| chrono::Duration::days(1));
    Ok(all
        .into_iter()
        .map(|r| {
            let current = Some(r.id) == this.id;
            let silent = now - r.heartbeat_at;
            let error = if current {
                this.beat_error.clone().map(|e| format!("heartbeat failed: {e}"))
            } else if silent > deadline {
                Some(format!("no heartbeat for {}s", silent.num_seconds()))
            } else if this.relay.is_some() && !r.relay_url.is_empty() {
                match links.iter().find(|l| l.url == r.relay_url) {
                    Some(l) if l.up => None,
                    Some(_) => Some("this replica's relay cannot reach its relay".to_owned()),
                    None => Some("not meshed with this replica's relay yet".to_owned()),
                }
            } else {
                None
            };
            codersdk::Replica {
                id: r.id,
                hostname: r.hostname,
                relay_url: r.relay_url,
                region_id: u16::try_from(r.region_id).unwrap_or_default(),
                version: r.version,
                started_at: r.started_at,
                heartbeat_at: r.heartbeat_at,
                healthy: error.is_none(),
                error: error.unwrap_or_default(),
                current,
            }
        })
        .collect())
}

/// The heartbeat task.
struct Task {
    db: sqlx::PgPool,
    row: ReplicaRow,
    config: ReplicaConfig,
    membership: Membership,
    live: watch::Sender<Vec<ReplicaRow>>,
    beat_error: Arc<Mutex<Option<String>>>,
}

impl Task {
    async fn run(mut self, mut notices: broadcast::Receiver<Message>, stop: CancellationToken) {
        let interval = self.config.heartbeat_interval;
        let mut tick = tokio::time::interval_at(Instant::now() + interval, interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut failing = false;
        let mut grace_until: Option<Instant> = None;
        loop {
            let beat = tokio::select! {
                biased;
                () = stop.cancelled() => return,
                _ = tick.tick() => true,
                notice = notices.recv() => match notice {
                    Err(broadcast::error::RecvError::Closed) => return,
                    // A join, a leave, a lag or the listener's resync: re-read.
                    _ => false,
                },
            };
            if beat {
                // A beat must not outlast the interval: a late beat is a failed one.
                let result =
                    tokio::time::timeout(interval, rows::heartbeat(&self.db, &self.row)).await;
                let error = match result {
                    Ok(Ok(_)) => None,
                    Ok(Err(e)) => Some(e.to_string()),
                    Err(_) => Some("timed out".to_owned()),
                };
                let was_failing = std::mem::replace(&mut failing, error.is_some());
                let recovered = error.is_none() && was_failing;
                if let Some(e) = &error {
                    tracing::warn!(error = %e, "replicas: heartbeat failed");
                }
                *self.beat_error.lock().unwrap_or_else(|p| p.into_inner()) = error.clone();
                if error.is_some() {
                    continue;
                }
                if recovered {
                    tracing::info!("replicas: the database answers again");
                    grace_until = Some(Instant::now() + self.config.heartbeat_deadline);
                }
                if grace_until.is_none_or(|g| Instant::now() >= g) {
                    self.expire().await;
                }
            }
            self.read().await;
        }
    }

    async fn expire(&self) {
        match rows::expire(&self.db, self.row.id, self.config.heartbeat_deadline).await {
            Ok(dead) => {
                for r in dead {
                    tracing::warn!(replica = %r.id, hostname = %r.hostname, last_heartbeat = %r.heartbeat_at, "replica stopped heartbeating; forgetting it");
                }
            }
            Err(e) => tracing::warn!(error = %e, "replicas: cannot expire silent replicas"),
        }
    }

    async fn read(&mut self) {
        let live = match rows::list(&self.db).await {
            Ok((live, _)) => live,
            Err(e) => {
                tracing::warn!(error = %e, "replicas: cannot read the registry");
                return;
            }
        };
        let change = self.membership.handle_read(&live);
        for id in &change.joined {
            let r = live.iter().find(|r| r.id == *id);
            let hostname = r.map(|r| r.hostname.as_str()).unwrap_or_default();
            let relay_url = r.map(|r| r.relay_url.as_str()).unwrap_or_default();
            tracing::info!(replica = %id, %hostname, %relay_url, "replica joined");
        }
        for id in &change.left {
            tracing::info!(replica = %id, "replica left");
        }
        self.live.send_if_modified(|old| {
            let changed = *old != live;
            if changed {
                *old = live;
            }
            changed
        });
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn row(id: u128) -> ReplicaRow {
        let now = chrono::Utc::now();
        ReplicaRow {
            id: Uuid::from_u128(id),
            hostname: "h".into(),
            relay_url: String::new(),
            region_id: 999,
            version: "0".into(),
            started_at: now,
            heartbeat_at: now,
        }
    }

    #[test]
    fn membership_reports_joins_and_leaves_once() {
        let mut m = Membership::default();
        let change = m.handle_read(&[row(1), row(2)]);
        assert_eq!(change.joined, [Uuid::from_u128(1), Uuid::from_u128(2)]);
        assert!(m.handle_read(&[row(2), row(1)]).joined.is_empty());
        let change = m.handle_read(&[row(2), row(3)]);
        assert_eq!(
            change,
            MembershipChange { joined: vec![Uuid::from_u128(3)], left: vec![Uuid::from_u128(1)] }
        );
    }

    #[test]
    fn relay_endpoint_defaults_the_path() {
        let u = |s: &str| relay_endpoint(Url::parse(s).unwrap()).to_string();
        assert_eq!(u("http://10.0.0.5:3000"), "http://10.0.0.5:3000/derp");
        assert_eq!(u("http://10.0.0.5:3000/"), "http://10.0.0.5:3000/derp");
        assert_eq!(u("https://r1.internal/relay/derp"), "https://r1.internal/relay/derp");
    }
}
