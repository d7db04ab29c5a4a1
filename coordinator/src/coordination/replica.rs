//! The I/O shell of one replica's coordination: a run loop that owns the
//! [`Core`], every connection task, the store [`Writer`], the [`Heartbeat`],
//! the [`Reauthorizer`] and the pub/sub subscriptions. Dropping the last
//! [`Replica`] handle stops all of it (the other replicas then mark its
//! peers lost).
//!
//! The run loop never waits on a write: the writer persists in order behind
//! it, so local peers keep exchanging nodes while Postgres restarts. When
//! the database answers again (a heartbeat succeeds after failing, or the
//! listener reconnects and says [`Message::Resync`]) the run loop resyncs:
//! it rewrites its peers and tunnels, prunes rows of peers that left while
//! the database was away, and re-reads everyone else's.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::ws::WebSocket;
use codersdk::coordination::{ServerMessage, PROTOCOL_VERSION};
use sqlx::PgPool;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio_util::task::AbortOnDropHandle;
use uuid::Uuid;

use super::authz::{Principal, Standing, Sweep, Verdicts};
use super::conn::{self, Connection, Inbound, Outbound};
use super::core::{Close, ConnId, Core, Kind, Output, StoreOp};
use super::heartbeat::{Beat, Heartbeat};
use super::reauth::{self, Outcome, Reauthorizer};
use super::store::{Notice, Store, CHANNEL};
use super::writer::{self, Conflict, Write, Writer};
use super::{node_id, Config};
use crate::pubsub::{Message, Pubsub};

/// Starting a replica's coordination failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    #[error("cannot register the replica: {0}")]
    Database(#[from] sqlx::Error),
}

/// Peers re-read in one query when a whole replica's changed.
const REREAD_CHUNK: usize = 1024;

/// Inbound messages the run loop takes before it carries out the core's
/// outputs: one wake-up serves a burst of updates.
const INBOUND_BATCH: usize = 256;

/// A peer to attach, authenticated by the API.
struct Accept {
    socket: WebSocket,
    principal: Principal,
    peer: Uuid,
    kind: Kind,
    single_agent: Option<Uuid>,
    relay_map: serde_json::Value,
}

enum Command {
    Accept(Box<Accept>),
    Shutdown(oneshot::Sender<()>),
}

/// A handle to one replica's coordination. Cloning shares it.
#[derive(Clone)]
pub struct Replica {
    id: Uuid,
    commands: mpsc::Sender<Command>,
    _task: Arc<AbortOnDropHandle<()>>,
}

impl std::fmt::Debug for Replica {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Replica").field("id", &self.id).finish_non_exhaustive()
    }
}

impl Replica {
    /// Registers a new replica, reads the current state and starts the run loop.
    pub async fn spawn(db: PgPool, pubsub: Pubsub, config: Config) -> Result<Self, SpawnError> {
        let id = Uuid::new_v4();
        let store = Store::new(db, pubsub.clone(), id);
        store.heartbeat().await?;
        let notices = pubsub.subscribe(CHANNEL).await;
        let revocations = pubsub.subscribe(reauth::CHANNEL).await;
        let mut core = Core::new(id);
        let (records, tunnels) = store.snapshot().await?;
        core.handle_snapshot(records, tunnels);
        let (commands, commands_rx) = mpsc::channel(64);
        let (inbound, inbound_rx) = mpsc::channel(1024);
        let (beats_tx, beats) = mpsc::channel(4);
        let (reauth, verdicts) = Reauthorizer::spawn(store.db().clone());
        let (conflicts_tx, conflicts) = mpsc::channel(writer::CONFLICTS);
        let run = RunLoop {
            core,
            writer: Writer::spawn(store.clone(), conflicts_tx),
            heartbeat: Heartbeat::spawn(store.clone(), config.clone(), beats_tx),
            reauth,
            store,
            config,
            conns: HashMap::new(),
            tasks: JoinSet::new(),
            next_conn: 0,
            inbound,
        };
        let events = Events {
            commands: commands_rx,
            inbound: inbound_rx,
            beats,
            notices,
            revocations,
            verdicts,
            conflicts,
        };
        let task = tokio::spawn(run.run(events));
        Ok(Replica { id, commands, _task: Arc::new(AbortOnDropHandle::new(task)) })
    }

    /// This replica's coordinator id.
    pub fn id(&self) -> Uuid {
        self.id
    }

    /// Serves an authenticated coordination WebSocket until it closes.
    pub async fn accept(
        &self,
        socket: WebSocket,
        principal: Principal,
        peer: Uuid,
        kind: Kind,
        single_agent: Option<Uuid>,
        relay_map: serde_json::Value,
    ) {
        let accept = Accept { socket, principal, peer, kind, single_agent, relay_map };
        let _ = self.commands.send(Command::Accept(Box::new(accept))).await;
    }

    /// Closes every connection and removes this replica and its peers from
    /// the store, so other replicas see them disconnected rather than lost.
    pub async fn shutdown(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Shutdown(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// A local connection as the run loop knows it.
struct Conn {
    tx: mpsc::Sender<Outbound>,
    principal: Principal,
    single_agent: Option<Uuid>,
}

/// Everything the run loop waits on.
struct Events {
    commands: mpsc::Receiver<Command>,
    inbound: mpsc::Receiver<(ConnId, Inbound)>,
    beats: mpsc::Receiver<Beat>,
    notices: broadcast::Receiver<Message>,
    /// The database announced a revocation ([`reauth::CHANNEL`]).
    revocations: broadcast::Receiver<Message>,
    verdicts: mpsc::Receiver<Outcome>,
    /// Nodes the store refused ([`writer::Conflict`]).
    conflicts: mpsc::Receiver<Conflict>,
}

struct RunLoop {
    core: Core,
    /// Reads only; writes go through `writer`.
    store: Store,
    writer: Writer,
    heartbeat: Heartbeat,
    reauth: Reauthorizer,
    config: Config,
    conns: HashMap<ConnId, Conn>,
    tasks: JoinSet<()>,
    next_conn: ConnId,
    inbound: mpsc::Sender<(ConnId, Inbound)>,
}

impl RunLoop {
    async fn run(mut self, events: Events) {
        let Events {
            mut commands,
            mut inbound,
            mut beats,
            mut notices,
            mut revocations,
            mut verdicts,
            mut conflicts,
        } = events;
        let every = self.config.reauthorize_interval;
        let mut reauthorize = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        reauthorize.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                biased;
                cmd = commands.recv() => match cmd {
                    Some(Command::Accept(a)) => self.accept(*a),
                    Some(Command::Shutdown(done)) => {
                        self.shutdown().await;
                        let _ = done.send(());
                        return;
                    }
                    // Every handle is gone; the task is being dropped anyway.
                    None => return,
                },
                Some((conn, msg)) = inbound.recv() => {
                    self.inbound(conn, msg);
                    for _ in 1..INBOUND_BATCH {
                        let Ok((conn, msg)) = inbound.try_recv() else { break };
                        self.inbound(conn, msg);
                    }
                }
                Some(c) = conflicts.recv() => self.core.handle_key_conflict(c.peer, c.keys, c.kind),
                Some(beat) = beats.recv() => self.beat(beat).await,
                notice = notices.recv() => match notice {
                    Ok(Message::Payload(p)) => self.notice(&p).await,
                    Ok(Message::Resync) => {
                        self.heartbeat.outage();
                        self.resync().await;
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => self.resync().await,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                Some(outcome) = verdicts.recv() => self.verdicts(outcome),
                // A resync or a lag may have hidden a revocation: sweep anyway.
                revoked = revocations.recv() => match revoked {
                    Err(broadcast::error::RecvError::Closed) => return,
                    _ => self.sweep(),
                },
                _ = reauthorize.tick() => self.sweep(),
                Some(_) = self.tasks.join_next() => {}
            }
            self.drain();
        }
    }

    fn accept(&mut self, a: Accept) {
        let conn = self.next_conn;
        self.next_conn += 1;
        let (tx, rx) = mpsc::channel(1024);
        let hello = ServerMessage::Hello {
            version: PROTOCOL_VERSION,
            peer_id: a.peer,
            node_id: node_id(a.peer),
            relay_map: a.relay_map,
        };
        let Ok(hello) = serde_json::to_string(&hello) else {
            tracing::warn!("coordination: cannot encode a hello");
            return;
        };
        let connection = Connection {
            conn,
            peer: a.peer,
            principal: a.principal,
            single_agent: a.single_agent,
            socket: a.socket,
            hello,
            outbound: rx,
            inbound: self.inbound.clone(),
            db: self.store.db().clone(),
            config: self.config.clone(),
        };
        // A resumed client keeps the tunnels it had; sweeps re-check them.
        self.core.handle_connect(conn, a.peer, a.kind);
        let entry =
            Conn { tx, principal: connection.principal.clone(), single_agent: a.single_agent };
        self.conns.insert(conn, entry);
        self.tasks.spawn(connection.run());
    }

    fn inbound(&mut self, conn: ConnId, msg: Inbound) {
        match msg {
            Inbound::Node(node) => self.core.handle_node(conn, node),
            Inbound::AddTunnel(dst) => self.core.handle_add_tunnel(conn, dst),
            Inbound::RemoveTunnel(dst) => self.core.handle_remove_tunnel(conn, dst),
            Inbound::Closed => {
                self.conns.remove(&conn);
                self.core.handle_disconnect(conn);
            }
        }
    }

    /// Carries out the core's outputs.
    fn drain(&mut self) {
        while let Some(out) = self.core.poll_output() {
            match out {
                Output::Send { conn, message } => {
                    self.send(conn, message);
                }
                Output::Close { conn, close } => {
                    if let Some(c) = self.conns.remove(&conn) {
                        let _ = c.tx.try_send(Outbound::Close(Box::new(close)));
                    }
                }
                Output::Store(op) => self.writer.write(Write::Op(op)),
            }
        }
    }

    fn send(&mut self, conn: ConnId, message: ServerMessage) {
        let Some(c) = self.conns.get(&conn) else { return };
        if c.tx.try_send(Outbound::Message(Box::new(message))).is_err() {
            // Too slow to keep up (or gone): dropping the sender ends it.
            self.conns.remove(&conn);
            self.core.handle_disconnect(conn);
        }
    }

    /// Asks for a re-authorization of every connection and its tunnels.
    fn sweep(&mut self) {
        let (conns, core) = (&self.conns, &self.core);
        self.reauth.want(|| {
            let mut sweep = Sweep::default();
            for (id, c) in conns {
                let tunnels = core.peer(*id).map(|p| core.tunnels_from(p)).unwrap_or_default();
                sweep.add(&c.principal, tunnels);
            }
            sweep
        });
    }

    /// Closes connections whose credentials were revoked and removes tunnels
    /// no longer allowed (both sides hear `disconnected`, the client an
    /// `error` too).
    fn verdicts(&mut self, outcome: Outcome) {
        match outcome {
            Ok(v) => self.apply_verdicts(&v),
            // The database may be restarting; the next sweep checks again.
            Err(e) => tracing::warn!(error = %e, "coordination: cannot re-authorize"),
        }
        if self.reauth.finished() {
            self.sweep();
        }
    }

    fn apply_verdicts(&mut self, v: &Verdicts) {
        let mut closes = Vec::new();
        let mut removed = Vec::new();
        for (&id, c) in &self.conns {
            let subject = match v.standing(&c.principal) {
                None => continue,
                Some(Standing::Revoked) => {
                    closes.push((id, conn::revoked()));
                    continue;
                }
                Some(Standing::Valid(subject)) => subject,
            };
            if !c.principal.opens_tunnels() {
                continue;
            }
            let Some(peer) = self.core.peer(id) else { continue };
            for dst in self.core.tunnels_from(peer) {
                if v.may_reach(&subject, dst) != Some(false) {
                    continue;
                }
                if c.single_agent == Some(dst) {
                    closes.push((id, conn::workspace_gone()));
                    break;
                }
                removed.push((id, dst));
            }
        }
        for (id, close) in closes {
            if let Some(c) = self.conns.remove(&id) {
                let _ = c.tx.try_send(Outbound::Close(Box::new(close)));
            }
            self.core.handle_disconnect(id);
        }
        for (id, dst) in removed {
            self.core.handle_remove_tunnel(id, dst);
            let message = "The workspace is gone or no longer yours.".to_owned();
            self.send(id, ServerMessage::Error { peer: Some(dst), message });
        }
    }

    async fn beat(&mut self, beat: Beat) {
        for coordinator in beat.dead {
            tracing::info!(%coordinator, "coordination: replica stopped heartbeating; its peers are lost");
            self.reread_coordinator(coordinator).await;
        }
        if beat.declared_dead {
            tracing::warn!("coordination: this replica was declared dead; rewriting its state");
        }
        if beat.declared_dead | beat.recovered | self.writer.take_dirty() {
            self.resync().await;
        }
    }

    async fn notice(&mut self, payload: &str) {
        let Ok(notice) = serde_json::from_str::<Notice>(payload) else {
            tracing::warn!(payload, "coordination: ignoring a malformed notice");
            return;
        };
        if notice.from == self.store.me() {
            return;
        }
        if let Some(coordinator) = notice.coordinator {
            self.reread_coordinator(coordinator).await;
        }
        let changed = notice.changed();
        if !changed.is_empty() {
            self.reread_peers(&changed).await;
        }
    }

    async fn reread_peers(&mut self, peers: &[Uuid]) {
        match self.store.peers(peers).await {
            Ok(read) => {
                for (peer, record, tunnels) in read {
                    self.core.handle_remote_peer(peer, record, tunnels);
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "coordination: cannot read peers");
                self.writer.mark_dirty();
            }
        }
    }

    async fn reread_coordinator(&mut self, coordinator: Uuid) {
        match self.store.peers_of(coordinator).await {
            Ok(peers) => {
                for chunk in peers.chunks(REREAD_CHUNK) {
                    self.reread_peers(chunk).await;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "coordination: cannot read a replica's peers");
                self.writer.mark_dirty();
            }
        }
    }

    /// Notifications may have been missed, or writes lost: write our state
    /// back (behind any queued writes), prune rows of peers that left, and
    /// re-read everyone else's.
    async fn resync(&mut self) {
        tracing::info!("coordination: resync");
        let mut keep = Vec::new();
        for (id, kind, node, tunnels) in self.core.local_state() {
            keep.push(id);
            self.writer.write(Write::Op(StoreOp::UpsertPeer { id, kind, node }));
            for dst in tunnels {
                self.writer.write(Write::Op(StoreOp::AddTunnel { src: id, dst }));
            }
        }
        self.writer.write(Write::Prune(keep));
        match self.store.snapshot().await {
            Ok((records, tunnels)) => self.core.handle_snapshot(records, tunnels),
            Err(e) => {
                tracing::warn!(error = %e, "coordination: cannot read the state; resyncing later");
                self.writer.mark_dirty();
            }
        }
    }

    async fn shutdown(&mut self) {
        for (_, c) in self.conns.drain() {
            let close = Close { code: 1001, reason: "coordinator shutting down".into() };
            let _ = c.tx.try_send(Outbound::Close(Box::new(close)));
        }
        let (done, unregistered) = oneshot::channel();
        self.writer.write(Write::Unregister(done));
        let _ = tokio::time::timeout(std::time::Duration::from_secs(5), unregistered).await;
        let join = async { while self.tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(std::time::Duration::from_secs(2), join).await.is_err() {
            self.tasks.shutdown().await;
        }
    }
}
