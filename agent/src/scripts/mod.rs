//! The agent's scripts (`coder_script`s and the agent's own startup and
//! shutdown scripts, from the manifest): start scripts run concurrently at
//! boot, stop scripts concurrently when the workspace stops, `cron` scripts
//! periodically in between. Each script's output goes to its own log source;
//! the lifecycle reports how the whole phase ended:
//!
//! ```text
//! start:  starting ─▶ ready | start_error (a script failed) | start_timeout (one was killed)
//! stop:   shutting_down ─▶ off | shutdown_error | shutdown_timeout
//! ```
//!
//! A timeout kills the script's whole process group ([`process`]).

pub mod cron;
mod process;

use std::path::{Path, PathBuf};
use std::time::Duration;

use codersdk::{AgentLog, AgentScript, Client, LifecycleState};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use process::Outcome;

use crate::startup::{self, report_lifecycle_by};

/// The scripts of one agent and what they run with.
#[derive(Debug, Clone)]
pub struct Scripts {
    pub client: Client,
    pub scripts: Vec<AgentScript>,
    pub dir: PathBuf,
    /// The whole environment ([`crate::environ::base`]); nothing is inherited.
    pub env: Vec<(String, String)>,
}

/// The manifest's scripts; from a coordinator that sends none, the bare
/// `startup_script` as one without a log source.
pub fn from_manifest(manifest: &codersdk::AgentManifest) -> Vec<AgentScript> {
    if !manifest.scripts.is_empty() || manifest.startup_script.trim().is_empty() {
        return manifest.scripts.clone();
    }
    vec![AgentScript {
        display_name: "Startup Script".into(),
        script: manifest.startup_script.clone(),
        run_on_start: true,
        ..AgentScript::default()
    }]
}

/// Where a script's `log_path` points: relative paths are under the
/// system's temporary directory, as Coder puts them in its log directory.
fn log_file(path: &str) -> Option<PathBuf> {
    if path.is_empty() {
        return None;
    }
    let p = Path::new(path);
    Some(if p.is_absolute() { p.to_owned() } else { std::env::temp_dir().join(p) })
}

/// The outcome of a phase: a timeout wins over an error, an error over success.
fn combine(outcomes: &[Outcome]) -> Outcome {
    if outcomes.contains(&Outcome::Timeout) {
        return Outcome::Timeout;
    }
    outcomes.iter().copied().find(|o| matches!(o, Outcome::Error(_))).unwrap_or(Outcome::Success)
}

impl Scripts {
    /// Runs one script with its log source, until `deadline` at the latest.
    async fn run_one(&self, s: &AgentScript, deadline: Option<Instant>) -> Outcome {
        let (tx, rx) = mpsc::channel::<AgentLog>(1024);
        let source_id = (!s.log_source_id.is_nil()).then_some(s.log_source_id);
        let sender = tokio::spawn(startup::send_logs(
            self.client.clone(),
            s.display_name.clone(),
            source_id,
            rx,
        ));
        let mut timeout = Duration::from_secs(s.timeout_seconds.max(0).unsigned_abs());
        if let Some(d) = deadline {
            let left = d.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
            timeout = if timeout.is_zero() { left } else { timeout.min(left) };
        }
        let run = process::Run {
            script: &s.script,
            dir: &self.dir,
            env: &self.env,
            timeout,
            log_path: log_file(&s.log_path),
            name: &s.display_name,
        };
        let outcome = process::run(run, tx).await;
        // The channel closed when `run` returned; wait for the last batch.
        let _ = sender.await;
        tracing::info!(script = %s.display_name, ?outcome, "script finished");
        outcome
    }

    /// Runs the chosen scripts concurrently; the phase's outcome.
    async fn run_all(
        &self,
        pick: impl Fn(&AgentScript) -> bool,
        deadline: Option<Instant>,
    ) -> Outcome {
        let chosen: Vec<&AgentScript> = self.scripts.iter().filter(|s| pick(s)).collect();
        let outcomes =
            futures::future::join_all(chosen.iter().map(|s| self.run_one(s, deadline))).await;
        combine(&outcomes)
    }

    /// The start phase: reports `starting`, runs the `run_on_start` scripts,
    /// reports how they ended.
    pub async fn start(&self) -> LifecycleState {
        startup::report_lifecycle(&self.client, LifecycleState::Starting, None).await;
        let outcome = self.run_all(|s| s.run_on_start, None).await;
        let (state, code) = match outcome {
            Outcome::Success => (LifecycleState::Ready, Some(0)),
            Outcome::Error(c) => (LifecycleState::StartError, Some(c)),
            Outcome::Timeout => (LifecycleState::StartTimeout, None),
        };
        startup::report_lifecycle(&self.client, state, code).await;
        state
    }

    /// The stop phase: reports `shutting_down`, runs the `run_on_stop`
    /// scripts, reports how they ended. With a `deadline` (SIGTERM) every
    /// step ends by then, reports included.
    pub async fn stop(&self, deadline: Option<Instant>) -> LifecycleState {
        let report = |state, at: Option<Instant>| async move {
            match at {
                Some(at) => {
                    report_lifecycle_by(&self.client, state, None, at).await;
                }
                None => startup::report_lifecycle(&self.client, state, None).await,
            }
        };
        let now = Instant::now();
        // A quarter of the time for the first report, the last quarter for the final one.
        let split = deadline.map(|d| d.saturating_duration_since(now) / 4);
        report(LifecycleState::ShuttingDown, split.map(|q| now + q)).await;
        let scripts_end = deadline.zip(split).map(|(d, q)| d - q);
        let outcome = self.run_all(|s| s.run_on_stop, scripts_end).await;
        let state = match outcome {
            Outcome::Success => LifecycleState::Off,
            Outcome::Error(_) => LifecycleState::ShutdownError,
            Outcome::Timeout => LifecycleState::ShutdownTimeout,
        };
        report(state, deadline).await;
        state
    }

    /// Runs each `cron` script on its schedule until the set is dropped;
    /// a run still going when the next is due makes that one wait.
    pub fn spawn_cron(&self, tasks: &mut JoinSet<()>) {
        for s in self.scripts.iter().filter(|s| !s.cron.trim().is_empty()) {
            let schedule: cron::Schedule = match s.cron.parse() {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(script = %s.display_name, error = %e, "script not scheduled");
                    continue;
                }
            };
            let (this, script) = (self.clone(), s.clone());
            tasks.spawn(async move {
                while let Some(wait) = schedule.until_next() {
                    tokio::time::sleep(wait).await;
                    this.run_one(&script, None).await;
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_timeout_outweighs_an_error() {
        use Outcome::*;
        assert_eq!(combine(&[]), Success);
        assert_eq!(combine(&[Success, Error(2), Success]), Error(2));
        assert_eq!(combine(&[Error(1), Timeout]), Timeout);
    }

    #[test]
    fn relative_log_paths_are_under_the_temp_dir() {
        assert_eq!(log_file(""), None);
        assert_eq!(log_file("/var/log/x.log"), Some(PathBuf::from("/var/log/x.log")));
        assert_eq!(
            log_file("coder-startup.log"),
            Some(std::env::temp_dir().join("coder-startup.log"))
        );
    }
}
