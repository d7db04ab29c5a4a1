//! One coordination WebSocket: reads and parses the peer's messages under a
//! size limit and a token-bucket rate limit, authorizes tunnel requests, and
//! writes what the run loop sends it. Malformed input closes the socket with
//! a reason. Re-authorization is the run loop's, for all connections at once
//! (`reauth.rs`): a connection holds no timer for it and queries nothing
//! while idle.

use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use codersdk::coordination::{ClientMessage, ServerMessage, MAX_MESSAGE_BYTES};
use futures::SinkExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::Instrument;
use uuid::Uuid;

use super::authz::{self, Principal, Standing};
use super::core::{Close, ConnId};
use super::Config;

/// What the run loop sends a connection.
#[derive(Debug)]
pub(crate) enum Outbound {
    /// Both boxed: the channel allocates a block of 32 slots up front, for
    /// every idle connection; a `Node` inline would make it several KiB,
    /// and even a `Close` inline doubles it (32 bytes a slot, not 16).
    Message(Box<ServerMessage>),
    Close(Box<Close>),
}

/// What a connection tells the run loop.
#[derive(Debug)]
pub(crate) enum Inbound {
    Node(mesh::Node),
    AddTunnel(Uuid),
    RemoveTunnel(Uuid),
    Closed,
}

/// Everything one connection task needs.
pub(crate) struct Connection {
    pub conn: ConnId,
    pub peer: Uuid,
    pub principal: Principal,
    /// The one agent of a single-agent connection.
    pub single_agent: Option<Uuid>,
    pub socket: WebSocket,
    /// The `hello`, encoded: a `ServerMessage` would keep the relay map's
    /// JSON tree (kilobytes of small allocations) alive for the connection's
    /// lifetime; this string is freed once sent.
    pub hello: String,
    pub outbound: mpsc::Receiver<Outbound>,
    pub inbound: mpsc::Sender<(ConnId, Inbound)>,
    pub db: sqlx::PgPool,
    pub config: Config,
}

/// A token bucket: `rate` tokens a second, at most `burst`.
#[derive(Debug)]
struct Bucket {
    tokens: f64,
    rate: f64,
    burst: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, burst: f64, now: Instant) -> Self {
        Bucket { tokens: burst, rate, burst, at: now }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now;
    }

    /// When one token is available.
    fn ready_at(&mut self, now: Instant) -> Instant {
        self.refill(now);
        if self.tokens >= 1.0 || self.rate <= 0.0 {
            return now;
        }
        now + Duration::from_secs_f64((1.0 - self.tokens) / self.rate)
    }

    fn take(&mut self, now: Instant) {
        self.refill(now);
        self.tokens -= 1.0;
    }
}

impl Connection {
    pub async fn run(self) {
        let span = tracing::info_span!("coordinate", peer = %self.peer, conn = self.conn);
        let inbound = self.inbound.clone();
        let conn = self.conn;
        let close = self.run_inner().instrument(span.clone()).await;
        span.in_scope(|| tracing::debug!(code = close.code, reason = %close.reason, "closed"));
        let _ = inbound.send((conn, Inbound::Closed)).await;
    }

    async fn run_inner(mut self) -> Close {
        let close = self.serve().await;
        let frame = CloseFrame { code: close.code, reason: truncate(close.reason.clone()).into() };
        let _ = tokio::time::timeout(
            Duration::from_secs(1),
            self.socket.send(Message::Close(Some(frame))),
        )
        .await;
        close
    }

    async fn serve(&mut self) -> Close {
        let hello = std::mem::take(&mut self.hello);
        if let Err(close) = self.write_text(hello).await {
            return close;
        }
        if let Some(agent) = self.single_agent {
            if let Err(close) = self.tell(Inbound::AddTunnel(agent)).await {
                return close;
            }
        }
        let now = Instant::now();
        let mut bucket =
            Bucket::new(self.config.messages_per_second, self.config.message_burst, now);
        let mut ping = tokio::time::interval_at(now + PING_INTERVAL, PING_INTERVAL);
        let mut last_heard = now;
        loop {
            let ready_at = bucket.ready_at(Instant::now());
            let throttled = ready_at > Instant::now();
            tokio::select! {
                biased;
                out = self.outbound.recv() => match out {
                    Some(Outbound::Message(m)) => {
                        if let Err(close) = self.write_queued(&m).await {
                            return close;
                        }
                    }
                    Some(Outbound::Close(close)) => return *close,
                    None => return Close { code: 1012, reason: "coordinator restarting; reconnect".into() },
                },
                _ = ping.tick() => {
                    if last_heard.elapsed() > PING_INTERVAL * 3 {
                        return Close { code: 1001, reason: "peer stopped answering pings".into() };
                    }
                    if self.socket.send(Message::Ping(Default::default())).await.is_err() {
                        return Close { code: 1001, reason: "write failed".into() };
                    }
                }
                _ = tokio::time::sleep_until(ready_at), if throttled => {}
                msg = self.socket.recv(), if !throttled => {
                    last_heard = Instant::now();
                    let text = match msg {
                        None => return Close { code: 1000, reason: "closed".into() },
                        Some(Err(e)) => return read_error(&e),
                        Some(Ok(Message::Text(text))) => text,
                        Some(Ok(Message::Binary(_))) => {
                            return Close { code: 1003, reason: "binary messages are not part of the protocol".into() };
                        }
                        Some(Ok(Message::Close(_))) => return Close { code: 1000, reason: "closed by peer".into() },
                        Some(Ok(_)) => continue,
                    };
                    bucket.take(Instant::now());
                    let msg = match ClientMessage::parse(text.as_str()) {
                        Ok(m) => m,
                        Err(e) => return Close { code: 1007, reason: truncate(format!("malformed message: {e}")) },
                    };
                    if let Err(close) = self.handle(msg).await {
                        return close;
                    }
                }
            }
        }
    }

    async fn handle(&mut self, msg: ClientMessage) -> Result<(), Close> {
        match msg {
            ClientMessage::Node { node } => self.tell(Inbound::Node(node)).await,
            ClientMessage::AddTunnel { peer } => {
                // The core refuses (and closes) for agents.
                let allowed = if !self.principal.opens_tunnels() {
                    true
                } else if self.single_agent.is_some_and(|a| a != peer) {
                    false
                } else {
                    let subject = match authz::standing(&self.db, &self.principal).await {
                        Ok(Standing::Valid(subject)) => subject,
                        Ok(Standing::Revoked) => return Err(revoked()),
                        Err(e) => return Err(db_error(&e)),
                    };
                    authz::may_reach(&self.db, &subject, peer).await.map_err(|e| db_error(&e))?
                };
                if !allowed {
                    let message = "No such agent, or you may not reach it.".to_owned();
                    return self.write(&ServerMessage::Error { peer: Some(peer), message }).await;
                }
                self.tell(Inbound::AddTunnel(peer)).await
            }
            ClientMessage::RemoveTunnel { peer } => self.tell(Inbound::RemoveTunnel(peer)).await,
            _ => Err(Close { code: 1008, reason: "unsupported message".into() }),
        }
    }

    async fn tell(&mut self, msg: Inbound) -> Result<(), Close> {
        self.inbound
            .send((self.conn, msg))
            .await
            .map_err(|_| Close { code: 1012, reason: "coordinator restarting; reconnect".into() })
    }

    /// Writes `first` and whatever else is queued behind it (up to
    /// [`WRITE_BATCH`]) with one flush, so a peer told about many nodes at
    /// once costs one write, not one per message. A queued close is sent
    /// after the messages before it.
    async fn write_queued(&mut self, first: &ServerMessage) -> Result<(), Close> {
        self.feed(first).await?;
        let mut close = None;
        for _ in 1..WRITE_BATCH {
            match self.outbound.try_recv() {
                Ok(Outbound::Message(m)) => self.feed(&m).await?,
                Ok(Outbound::Close(c)) => {
                    close = Some(*c);
                    break;
                }
                Err(_) => break,
            }
        }
        self.socket
            .flush()
            .await
            .map_err(|_| Close { code: 1001, reason: "write failed".into() })?;
        close.map_or(Ok(()), Err)
    }

    async fn feed(&mut self, msg: &ServerMessage) -> Result<(), Close> {
        let text = serde_json::to_string(msg)
            .map_err(|e| Close { code: 1011, reason: truncate(format!("cannot encode: {e}")) })?;
        self.socket
            .feed(Message::Text(text.into()))
            .await
            .map_err(|_| Close { code: 1001, reason: "write failed".into() })
    }

    async fn write(&mut self, msg: &ServerMessage) -> Result<(), Close> {
        let text = serde_json::to_string(msg)
            .map_err(|e| Close { code: 1011, reason: truncate(format!("cannot encode: {e}")) })?;
        self.write_text(text).await
    }

    async fn write_text(&mut self, text: String) -> Result<(), Close> {
        self.socket
            .send(Message::Text(text.into()))
            .await
            .map_err(|_| Close { code: 1001, reason: "write failed".into() })
    }
}

const PING_INTERVAL: Duration = Duration::from_secs(15);

/// Most queued messages written with one flush.
const WRITE_BATCH: usize = 64;

pub(crate) fn revoked() -> Close {
    Close { code: 1008, reason: "credentials revoked or workspace gone".into() }
}

/// The one agent of a single-agent connection is no longer reachable.
pub(crate) fn workspace_gone() -> Close {
    Close { code: 1008, reason: "the workspace is gone or no longer yours".into() }
}

fn db_error(e: &sqlx::Error) -> Close {
    tracing::warn!(error = %e, "coordination: database error");
    Close { code: 1011, reason: "internal error; reconnect".into() }
}

fn read_error(e: &axum::Error) -> Close {
    let text = e.to_string();
    if text.contains("too long") || text.contains("too big") || text.contains("Space limit") {
        return Close {
            code: 1009,
            reason: format!("message larger than {MAX_MESSAGE_BYTES} bytes"),
        };
    }
    Close { code: 1002, reason: truncate(format!("read failed: {text}")) }
}

/// Close reasons must fit a control frame (125 bytes with the code).
fn truncate(mut s: String) -> String {
    if s.len() > 120 {
        let mut end = 120;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_throttles_after_burst() {
        let start = Instant::now();
        let mut b = Bucket::new(10.0, 3.0, start);
        for _ in 0..3 {
            assert_eq!(b.ready_at(start), start);
            b.take(start);
        }
        let ready = b.ready_at(start);
        assert_eq!(ready - start, Duration::from_millis(100));
        assert_eq!(b.ready_at(start + Duration::from_secs(10)), start + Duration::from_secs(10));
    }

    #[test]
    fn close_reasons_fit_a_frame() {
        let long = "é".repeat(200);
        assert!(truncate(long).len() <= 120);
    }
}
