//! Metadata scripts (`coder_agent` `metadata` blocks): each runs on its own
//! interval with its own timeout, and its latest output is reported to the
//! coordinator, which shows it with the agent.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use codersdk::{AgentMetadataDescription, AgentMetadataResult, Client};
use tokio::process::Command;
use tokio::task::JoinSet;

/// Runs every script in `dir` with environment `env` (the whole of it:
/// [`crate::environ::base`]) until the returned set is dropped.
pub fn spawn(
    client: Client,
    scripts: Vec<AgentMetadataDescription>,
    dir: PathBuf,
    env: Vec<(String, String)>,
) -> JoinSet<()> {
    let mut set = JoinSet::new();
    let env = std::sync::Arc::new(env);
    for desc in scripts {
        set.spawn(run_one(client.clone(), desc, dir.clone(), env.clone()));
    }
    set
}

async fn run_one(
    client: Client,
    desc: AgentMetadataDescription,
    dir: PathBuf,
    env: std::sync::Arc<Vec<(String, String)>>,
) {
    let every = Duration::from_secs(desc.interval.clamp(1, 86_400) as u64);
    let timeout = Duration::from_secs(desc.timeout.clamp(1, 3_600) as u64);
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let result = collect(&desc, &dir, &env, timeout).await;
        if let Err(e) = client.post_agent_metadata(&[result]).await {
            tracing::debug!(key = %desc.key, error = %e, "metadata report failed");
        }
    }
}

/// Runs one script once, with exactly the environment `env`.
pub async fn collect(
    desc: &AgentMetadataDescription,
    dir: &std::path::Path,
    env: &[(String, String)],
    timeout: Duration,
) -> AgentMetadataResult {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(&desc.script)
        .current_dir(if dir.is_dir() { dir.to_path_buf() } else { std::env::temp_dir() })
        .env_clear()
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let (value, error) = match tokio::time::timeout(timeout, cmd.output()).await {
        Ok(Ok(out)) if out.status.success() => {
            (String::from_utf8_lossy(&out.stdout).trim().to_owned(), String::new())
        }
        Ok(Ok(out)) => (
            String::from_utf8_lossy(&out.stdout).trim().to_owned(),
            format!(
                "exit status {}: {}",
                out.status.code().unwrap_or(-1),
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        ),
        Ok(Err(e)) => (String::new(), format!("cannot run: {e}")),
        Err(_) => (String::new(), format!("timed out after {timeout:?}")),
    };
    AgentMetadataResult { key: desc.key.clone(), value, error, collected_at: chrono::Utc::now() }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn desc(script: &str) -> AgentMetadataDescription {
        AgentMetadataDescription {
            key: "k".into(),
            display_name: String::new(),
            script: script.into(),
            interval: 1,
            timeout: 1,
        }
    }

    #[tokio::test]
    async fn values_errors_and_timeouts() {
        let dir = std::env::temp_dir();
        let env = crate::environ::for_current_process();
        let ok = collect(&desc("echo 42"), &dir, &env, Duration::from_secs(5)).await;
        assert_eq!((ok.value.as_str(), ok.error.as_str()), ("42", ""));
        let bad = collect(&desc("echo oops >&2; exit 3"), &dir, &env, Duration::from_secs(5)).await;
        assert!(bad.error.contains("exit status 3") && bad.error.contains("oops"), "{bad:?}");
        let slow = collect(&desc("sleep 5"), &dir, &env, Duration::from_millis(100)).await;
        assert!(slow.error.contains("timed out"), "{slow:?}");
    }

    #[tokio::test]
    async fn scripts_see_only_the_given_environment() {
        // The test process's own variables (CARGO, HOME, …) must not pass.
        let env = vec![("ONLY".to_owned(), "this".to_owned())];
        let out = collect(&desc("env"), &std::env::temp_dir(), &env, Duration::from_secs(5)).await;
        let mut names: Vec<&str> =
            out.value.lines().filter_map(|l| l.split_once('=').map(|(k, _)| k)).collect();
        // sh may add PWD, SHLVL and `_` of its own.
        names.retain(|n| !matches!(*n, "PWD" | "SHLVL" | "_"));
        assert_eq!(names, ["ONLY"], "{}", out.value);
    }
}
