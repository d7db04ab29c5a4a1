//! The startup script: run once when the agent starts, its output streamed to
//! the coordinator as agent logs, its outcome reported as the lifecycle
//! (`starting → ready | start_error | start_timeout`).
//!
//! Log lines are batched (up to a batch size or a short delay) and sent in
//! order; a failed send is retried with the same batch, so a coordinator that
//! is briefly away loses nothing. The queue is bounded: a script that prints
//! without end is throttled by back-pressure, not buffered without limit.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use codersdk::{
    AgentLog, Client, LifecycleState, LogLevel, PatchAgentLogsRequest, PostLifecycleRequest,
};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;

/// How a startup script run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartupOutcome {
    Ready,
    Error(i32),
    Timeout,
}

impl StartupOutcome {
    pub fn lifecycle(self) -> LifecycleState {
        match self {
            StartupOutcome::Ready => LifecycleState::Ready,
            StartupOutcome::Error(_) => LifecycleState::StartError,
            StartupOutcome::Timeout => LifecycleState::StartTimeout,
        }
    }
}

/// What the script needs.
#[derive(Debug, Clone)]
pub struct StartupScript {
    pub script: String,
    pub dir: PathBuf,
    /// The whole environment ([`crate::environ::base`]); nothing is inherited.
    pub env: Vec<(String, String)>,
    /// Zero: no limit.
    pub timeout: Duration,
}

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

/// Runs the script, streaming its output, and reports the lifecycle.
pub async fn run(client: &Client, script: StartupScript) -> StartupOutcome {
    report_lifecycle(client, LifecycleState::Starting, None).await;
    let (tx, rx) = mpsc::channel::<AgentLog>(1024);
    let sender = tokio::spawn(send_logs(client.clone(), rx));
    let outcome = execute(&script, tx).await;
    // The channel closed when `execute` returned; wait for the last batch.
    let _ = sender.await;
    let code = match outcome {
        StartupOutcome::Error(c) => Some(c),
        StartupOutcome::Ready => Some(0),
        StartupOutcome::Timeout => None,
    };
    report_lifecycle(client, outcome.lifecycle(), code).await;
    outcome
}

async fn execute(script: &StartupScript, logs: mpsc::Sender<AgentLog>) -> StartupOutcome {
    if script.script.trim().is_empty() {
        return StartupOutcome::Ready;
    }
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(&script.script)
        .current_dir(if script.dir.is_dir() { script.dir.clone() } else { std::env::temp_dir() })
        .env_clear()
        .envs(script.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            let _ = logs
                .send(AgentLog {
                    level: LogLevel::Error,
                    output: format!("cannot start the startup script: {e}"),
                })
                .await;
            return StartupOutcome::Error(127);
        }
    };
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(forward_lines(out, LogLevel::Info, logs.clone())));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(forward_lines(err, LogLevel::Error, logs.clone())));
    }
    let wait = async {
        let status = child.wait().await;
        for r in readers {
            let _ = r.await;
        }
        status
    };
    let status = if script.timeout.is_zero() {
        wait.await
    } else {
        match tokio::time::timeout(script.timeout, wait).await {
            Ok(s) => s,
            Err(_) => {
                let _ = logs
                    .send(AgentLog {
                        level: LogLevel::Error,
                        output: format!("the startup script ran longer than {:?}", script.timeout),
                    })
                    .await;
                return StartupOutcome::Timeout;
            }
        }
    };
    match status {
        Ok(s) if s.success() => StartupOutcome::Ready,
        Ok(s) => StartupOutcome::Error(s.code().unwrap_or(-1)),
        Err(_) => StartupOutcome::Error(-1),
    }
}

async fn forward_lines(
    r: impl tokio::io::AsyncRead + Unpin,
    level: LogLevel,
    logs: mpsc::Sender<AgentLog>,
) {
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if logs.send(AgentLog { level, output: line }).await.is_err() {
            return;
        }
    }
}

/// Sends log batches in order until the channel closes.
async fn send_logs(client: Client, mut rx: mpsc::Receiver<AgentLog>) {
    let mut batch = Vec::with_capacity(100);
    while rx.recv_many(&mut batch, 100).await > 0 {
        // Give a chatty script a moment to fill the batch.
        if batch.len() < 100 {
            let room = 100 - batch.len();
            let _ = tokio::time::timeout(Duration::from_millis(50), rx.recv_many(&mut batch, room))
                .await;
        }
        let req = PatchAgentLogsRequest {
            source: "startup_script".into(),
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
