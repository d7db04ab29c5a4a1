//! Peer coordination: agents and clients exchange their mesh nodes through
//! the coordinator (`docs/protocols/coordination.md`).
//!
//! Data flow within a replica: the API handlers authenticate a WebSocket and
//! hand it to the replica's [`Replica`] ([`replica`]), which runs one task per
//! connection ([`conn`]: framing, size and rate limits, tunnel requests) and
//! one run loop around the sans-IO [`Core`] ([`core`]). The run loop
//! re-authorizes all its connections at once ([`reauth`]: two queries a
//! sweep), every few seconds and when the database announces a revocation.
//! The run loop queues the core's [`StoreOp`]s for a writer task
//! ([`writer`]) that persists them in Postgres ([`store`]) and announces them
//! on the `coordination` pub/sub channel; other replicas re-read the
//! announced rows and feed them to their cores, so a client on one replica
//! and an agent on another see each other. Replicas heartbeat ([`heartbeat`]);
//! the peers of one that stops are marked lost by the others. A Postgres
//! restart costs no local fan-out: the run loop never waits on a write, and
//! resyncs (rewrite, prune, re-read) once the database answers again.

mod authz;
mod conn;
pub mod core;
mod heartbeat;
mod keys;
mod reauth;
mod replica;
mod store;
mod writer;

use std::time::Duration;

pub use self::core::{Core, Kind, Output, Record, StoreOp};
pub use authz::Principal;
pub use authz::{may_reach, may_resume};
pub use replica::{Replica, SpawnError};
pub use store::{debug_snapshot, DebugSnapshot};

/// Coordination settings of one replica.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Config {
    /// How often the replica heartbeats and checks the others.
    pub heartbeat_interval: Duration,
    /// A replica whose heartbeat is older than this is dead; its peers lost.
    pub heartbeat_timeout: Duration,
    /// How often every connection's token and tunnels are re-authorized (in
    /// one sweep for the replica). Revocations the database announces
    /// (migration 0006's triggers) start a sweep at once; this interval
    /// catches tokens that simply expire, and anything a lost notification
    /// hid.
    pub reauthorize_interval: Duration,
    /// Sustained messages per second a peer may send (token bucket refill).
    pub messages_per_second: f64,
    /// Messages a peer may send in a burst (token bucket size).
    pub message_burst: f64,
    /// Lost peers are deleted after this long.
    pub lost_retention: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            heartbeat_interval: Duration::from_secs(2),
            heartbeat_timeout: Duration::from_secs(6),
            reauthorize_interval: Duration::from_secs(3),
            messages_per_second: 20.0,
            message_burst: 100.0,
            lost_retention: Duration::from_secs(3600),
        }
    }
}

pub use codersdk::coordination::node_id;
pub use store::{node_key_is_known, peer_changes};
