//! Reporting to the coordinator what scripts do: the lifecycle
//! (`starting → ready | start_error | start_timeout`, `shutting_down → off |
//! shutdown_error | shutdown_timeout`) and each script's output as agent logs
//! of its log source. The scripts themselves run in [`crate::scripts`].
//!
//! Log lines are batched (up to a batch size or a short delay) and sent in
//! order; a failed send is retried with the same batch, so a coordinator that
//! is briefly away loses nothing. The queue is bounded: a script that prints
//! without end is throttled by back-pressure, not buffered without limit.

use std::time::Duration;

use codersdk::{AgentLog, Client, LifecycleState, PatchAgentLogsRequest, PostLifecycleRequest};
use tokio::sync::mpsc;
use uuid::Uuid;

/// How long one report may go unanswered before it counts as failed and is
/// sent again: a coordinator (or a network) that accepts the connection and
/// never answers must not hold the lifecycle up for ever.
pub const REPORT_ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Reports a lifecycle state, retrying until the coordinator takes it.
pub async fn report_lifecycle(client: &Client, state: LifecycleState, exit_code: Option<i32>) {
    let req = PostLifecycleRequest { state, exit_code };
    let mut delay = Duration::from_millis(100);
    loop {
        match tokio::time::timeout(REPORT_ATTEMPT_TIMEOUT, client.post_lifecycle(&req)).await {
            Ok(Ok(())) => return,
            Ok(Err(e)) if e.status().is_some_and(|s| s.is_client_error()) => {
                tracing::warn!(error = %e, "lifecycle report refused");
                return;
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "lifecycle report failed; retrying"),
            Err(_) => tracing::debug!("lifecycle report unanswered; retrying"),
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

/// [`report_lifecycle`], giving up at `deadline`; whether it was delivered
/// (or refused) in time. For shutdown, which must end whatever the network does.
pub async fn report_lifecycle_by(
    client: &Client,
    state: LifecycleState,
    exit_code: Option<i32>,
    deadline: tokio::time::Instant,
) -> bool {
    let report = report_lifecycle(client, state, exit_code);
    match tokio::time::timeout_at(deadline, report).await {
        Ok(()) => true,
        Err(_) => {
            tracing::warn!(
                state = state.as_str(),
                "the coordinator did not take the lifecycle report in time; giving up"
            );
            false
        }
    }
}

/// Sends log batches in order until the channel closes, as `source` (the
/// log source `source_id`, when it has one).
pub async fn send_logs(
    client: Client,
    source: String,
    source_id: Option<Uuid>,
    mut rx: mpsc::Receiver<AgentLog>,
) {
    let mut batch = Vec::with_capacity(100);
    while rx.recv_many(&mut batch, 100).await > 0 {
        // Give a chatty script a moment to fill the batch.
        if batch.len() < 100 {
            let room = 100 - batch.len();
            let _ = tokio::time::timeout(Duration::from_millis(50), rx.recv_many(&mut batch, room))
                .await;
        }
        let req = PatchAgentLogsRequest {
            source: source.clone(),
            log_source_id: source_id,
            logs: std::mem::take(&mut batch),
        };
        let mut delay = Duration::from_millis(100);
        for _ in 0..20 {
            match client.patch_agent_logs(&req).await {
                Ok(()) => break,
                Err(e) if e.status().is_some_and(|s| s.is_client_error()) => {
                    tracing::warn!(error = %e, "agent logs refused");
                    break;
                }
                Err(_) => {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                }
            }
        }
    }
}
