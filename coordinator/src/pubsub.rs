//! Postgres `LISTEN/NOTIFY` as an in-process pub/sub.
//!
//! One connection listens for every channel this replica cares about and
//! fans notifications out to local subscribers through broadcast channels.
//! Publishing is `pg_notify`, so subscribers on every replica that shares the
//! database hear it — the cross-replica fan-out of DESIGN.md's "scale out".
//! When the listening connection drops (Postgres restart), it reconnects,
//! re-listens, and sends every subscriber a [`Message::Resync`] so they
//! re-read state instead of trusting that nothing was missed.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use sqlx::postgres::PgListener;
use sqlx::PgPool;
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio_util::task::AbortOnDropHandle;

/// What a subscriber receives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// A notification's payload.
    Payload(String),
    /// Notifications may have been missed; re-read the state.
    Resync,
}

type Channels = Arc<Mutex<HashMap<String, broadcast::Sender<Message>>>>;

/// A handle to the replica's listener. Cloning shares it; the listener task
/// stops when the last handle is dropped.
#[derive(Clone)]
pub struct Pubsub {
    pool: PgPool,
    channels: Channels,
    listen_tx: mpsc::UnboundedSender<(String, oneshot::Sender<()>)>,
    _task: Arc<AbortOnDropHandle<()>>,
}

impl std::fmt::Debug for Pubsub {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pubsub").finish_non_exhaustive()
    }
}

impl Pubsub {
    pub fn new(pool: PgPool) -> Pubsub {
        let channels: Channels = Arc::default();
        let (listen_tx, listen_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(run(pool.clone(), channels.clone(), listen_rx));
        Pubsub { pool, channels, listen_tx, _task: Arc::new(AbortOnDropHandle::new(task)) }
    }

    /// Subscribes to `channel`. Messages published after this returns are
    /// delivered (it waits, up to a few seconds, for `LISTEN` to take effect).
    pub async fn subscribe(&self, channel: &str) -> broadcast::Receiver<Message> {
        let (rx, ack) = {
            let mut map = match self.channels.lock() {
                Ok(m) => m,
                Err(poisoned) => poisoned.into_inner(),
            };
            if let Some(tx) = map.get(channel) {
                return tx.subscribe();
            }
            let (tx, rx) = broadcast::channel(1024);
            map.insert(channel.to_owned(), tx);
            let (ack_tx, ack) = oneshot::channel();
            let _ = self.listen_tx.send((channel.to_owned(), ack_tx));
            (rx, ack)
        };
        // If the listener is reconnecting, the channel is listened on when it
        // is back, and subscribers get a Resync then.
        let _ = tokio::time::timeout(Duration::from_secs(5), ack).await;
        rx
    }

    /// Publishes to every replica's subscribers.
    pub async fn publish(&self, channel: &str, payload: &str) -> Result<(), sqlx::Error> {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(channel)
            .bind(payload)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    fn deliver(channels: &Channels, channel: &str, msg: Message) {
        let map = match channels.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        if let Some(tx) = map.get(channel) {
            let _ = tx.send(msg);
        }
    }
}

async fn run(
    pool: PgPool,
    channels: Channels,
    mut listen_rx: mpsc::UnboundedReceiver<(String, oneshot::Sender<()>)>,
) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let mut listener = match PgListener::connect_with(&pool).await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "pubsub: cannot connect; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let known: Vec<String> = match channels.lock() {
            Ok(m) => m.keys().cloned().collect(),
            Err(p) => p.into_inner().keys().cloned().collect(),
        };
        let refs: Vec<&str> = known.iter().map(String::as_str).collect();
        if let Err(e) = listener.listen_all(refs).await {
            tracing::warn!(error = %e, "pubsub: LISTEN failed; reconnecting");
            continue;
        }
        backoff = Duration::from_millis(100);
        // Anything published while we were away is lost: tell everyone.
        for ch in &known {
            Pubsub::deliver(&channels, ch, Message::Resync);
        }
        loop {
            tokio::select! {
                biased;
                ch = listen_rx.recv() => {
                    let Some((ch, ack)) = ch else { return };
                    if let Err(e) = listener.listen(&ch).await {
                        tracing::warn!(error = %e, "pubsub: LISTEN failed; reconnecting");
                        break;
                    }
                    let _ = ack.send(());
                }
                n = listener.try_recv() => match n {
                    Ok(Some(n)) => Pubsub::deliver(&channels, n.channel(), Message::Payload(n.payload().to_owned())),
                    Ok(None) => {
                        tracing::warn!("pubsub: connection lost; reconnecting");
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "pubsub: receive failed; reconnecting");
                        break;
                    }
                },
            }
        }
    }
}
