//! Shutdown before destroy: a stop or delete build first asks the agents it
//! is about to destroy to shut down (their `shutdown_script` and
//! `run_on_stop` scripts), and waits until each reports `off`,
//! `shutdown_error` or `shutdown_timeout`, stops heartbeating, or its wait
//! bound (longest stop script timeout plus a margin) passes. Only then does
//! terraform run. An agent that is not connected, or has no stop scripts, is
//! not waited for (it is still asked, and reports `off`).
//!
//! [`Waiter`] is the decision core (no I/O, time passed in); [`run`] drives it
//! against a [`JobBackend`], streaming what happens to the build's logs
//! (stage `shutdown`).

use std::time::Duration;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::backend::JobBackend;
use super::job::{AgentShutdown, Lease};
use super::worker::JobContext;
use crate::provisioner::LogLevel;

/// How often the agents' state is looked at while waiting.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);

const STAGE: &str = "shutdown";

/// Which agents are still awaited, and until when.
#[derive(Debug)]
#[must_use]
pub struct Waiter {
    /// `(agent id, name)` of the agents still shutting down.
    waiting: Vec<(Uuid, String)>,
    deadline: Instant,
}

fn finished(l: codersdk::LifecycleState) -> bool {
    use codersdk::LifecycleState as L;
    matches!(l, L::Off | L::ShutdownError | L::ShutdownTimeout)
}

impl Waiter {
    /// From the first answer: the connected agents that are not done yet,
    /// with the longest of their wait bounds. Returns the log lines to show.
    pub fn new(now: Instant, agents: &[AgentShutdown]) -> (Waiter, Vec<String>) {
        let mut lines = Vec::new();
        let mut waiting = Vec::new();
        let mut bound = 0;
        for a in agents {
            if !a.connected {
                lines.push(format!("Agent {} is not connected: not waiting for it.", a.name));
            } else if !a.has_stop_scripts {
                lines.push(format!("Agent {} has no shutdown scripts.", a.name));
            } else if finished(a.lifecycle) {
                lines.push(format!("Agent {} is already {}.", a.name, a.lifecycle));
            } else {
                lines.push(format!(
                    "Waiting up to {} s for agent {} to run its shutdown scripts…",
                    a.wait_seconds, a.name
                ));
                bound = bound.max(a.wait_seconds);
                waiting.push((a.agent_id, a.name.clone()));
            }
        }
        (Waiter { waiting, deadline: now + Duration::from_secs(bound) }, lines)
    }

    /// Nothing is left to wait for.
    pub fn done(&self) -> bool {
        self.waiting.is_empty()
    }

    pub fn deadline(&self) -> Instant {
        self.deadline
    }

    /// A later answer: drops the agents that finished or went away; the
    /// log lines to show.
    pub fn handle_agents(&mut self, agents: &[AgentShutdown]) -> Vec<String> {
        let mut lines = Vec::new();
        self.waiting.retain(|(id, name)| match agents.iter().find(|a| a.agent_id == *id) {
            None => {
                lines.push(format!("Agent {name} is gone."));
                false
            }
            Some(a) if finished(a.lifecycle) => {
                lines.push(format!("Agent {name} shut down: {}.", a.lifecycle));
                false
            }
            Some(a) if !a.connected => {
                lines.push(format!("Agent {name} disconnected while shutting down."));
                false
            }
            Some(_) => true,
        });
        lines
    }

    /// The deadline passed: the names of the agents given up on.
    pub fn handle_timeout(&mut self, now: Instant) -> Vec<String> {
        if now < self.deadline {
            return Vec::new();
        }
        self.waiting
            .drain(..)
            .map(|(_, name)| {
                format!("Agent {name} did not finish shutting down in time; going on.")
            })
            .collect()
    }
}

/// Asks the agents to shut down and waits as [`Waiter`] decides. Errors
/// talking to the backend are logged and end the wait: a build must never
/// hang on it.
pub async fn run<B: JobBackend>(backend: &B, lease: &Lease, ctx: &JobContext) {
    let agents = match backend.shutdown_agents(lease).await {
        Ok(Some(a)) => a,
        Ok(None) => return,
        Err(e) => {
            let msg = format!("Cannot ask the agents to shut down: {e}");
            ctx.log(STAGE, LogLevel::Warn, msg).await;
            return;
        }
    };
    let (mut waiter, lines) = Waiter::new(Instant::now(), &agents);
    log_all(ctx, lines).await;
    let cancel: &CancellationToken = &ctx.cancel;
    while !waiter.done() {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(POLL_INTERVAL) => {}
        }
        let lines = waiter.handle_timeout(Instant::now());
        log_all(ctx, lines).await;
        if waiter.done() {
            break;
        }
        match backend.shutdown_agents(lease).await {
            Ok(Some(agents)) => log_all(ctx, waiter.handle_agents(&agents)).await,
            Ok(None) => return,
            Err(e) => tracing::debug!(error = %e, "agent shutdown poll failed; retrying"),
        }
    }
}

async fn log_all(ctx: &JobContext, lines: Vec<String>) {
    for line in lines {
        ctx.log(STAGE, LogLevel::Info, line).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use codersdk::LifecycleState as L;

    fn agent(name: &str, lifecycle: L, connected: bool, wait_seconds: u64) -> AgentShutdown {
        AgentShutdown {
            agent_id: Uuid::from_u128(name.len() as u128),
            name: name.into(),
            lifecycle,
            connected,
            has_stop_scripts: true,
            wait_seconds,
        }
    }

    #[test]
    fn waits_only_for_connected_agents_that_are_not_done() {
        let now = Instant::now();
        let agents = [
            agent("a", L::Ready, true, 20),
            agent("bb", L::Ready, false, 90),
            agent("ccc", L::Off, true, 90),
        ];
        let (mut w, lines) = Waiter::new(now, &agents);
        assert_eq!(lines.len(), 3);
        let mut idle = agent("dddd", L::Ready, true, 15);
        idle.has_stop_scripts = false;
        let (w2, _) = Waiter::new(now, &[idle]);
        assert!(w2.done(), "nothing to wait for without stop scripts");
        assert_eq!(w.deadline(), now + Duration::from_secs(20), "bound of the waited agent only");
        assert!(w.handle_agents(&[agent("a", L::ShuttingDown, true, 20)]).is_empty());
        assert!(!w.done());
        let lines = w.handle_agents(&[agent("a", L::ShutdownTimeout, true, 20)]);
        assert_eq!(lines, ["Agent a shut down: shutdown_timeout."]);
        assert!(w.done());
    }

    #[test]
    fn gives_up_at_the_deadline_and_on_disconnect() {
        let now = Instant::now();
        let (mut w, _) =
            Waiter::new(now, &[agent("a", L::Ready, true, 5), agent("bb", L::Starting, true, 5)]);
        assert!(w.handle_timeout(now + Duration::from_secs(4)).is_empty());
        let lines = w.handle_agents(&[
            agent("a", L::ShuttingDown, false, 5),
            agent("bb", L::ShuttingDown, true, 5),
        ]);
        assert_eq!(lines, ["Agent a disconnected while shutting down."]);
        assert_eq!(w.handle_timeout(now + Duration::from_secs(5)).len(), 1);
        assert!(w.done());
    }
}
