//! Running one script: `/bin/sh -c SCRIPT` in its own process group, in the
//! workspace directory with the session environment, its stdout and stderr
//! forwarded line by line (also appended to its `log_path`), killed as a
//! whole group at its timeout or when the run is dropped. A script that ends
//! on its own leaves its background processes running (as Coder's do); the
//! run ends when they close its output too.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use codersdk::{AgentLog, LogLevel};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;
use tokio::sync::{mpsc, Mutex};

/// How one run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The exit code (-1: killed by a signal or not waited for).
    Error(i32),
    Timeout,
}

/// What a run needs besides the script.
#[derive(Debug, Clone)]
pub struct Run<'a> {
    pub script: &'a str,
    pub dir: &'a Path,
    pub env: &'a [(String, String)],
    /// Zero: no limit.
    pub timeout: Duration,
    /// Also append the output here.
    pub log_path: Option<PathBuf>,
    /// Names the script in messages.
    pub name: &'a str,
}

/// Kills the process group when dropped, unless disarmed.
struct GroupGuard(Option<Pid>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0.take() {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
    }
}

/// Runs the script to its end (or timeout), sending its lines to `logs`.
pub async fn run(r: Run<'_>, logs: mpsc::Sender<AgentLog>) -> Outcome {
    let say = |level, output: String| {
        let logs = logs.clone();
        async move {
            let _ = logs.send(AgentLog { level, output }).await;
        }
    };
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(r.script)
        .current_dir(if r.dir.is_dir() { r.dir.to_owned() } else { std::env::temp_dir() })
        .env_clear()
        .envs(r.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => {
            say(LogLevel::Error, format!("cannot start {}: {e}", r.name)).await;
            return Outcome::Error(127);
        }
    };
    let mut guard = GroupGuard(child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw));
    let file = match &r.log_path {
        Some(path) => match open_log(path).await {
            Ok(f) => Some(std::sync::Arc::new(Mutex::new(f))),
            Err(e) => {
                let msg = format!("cannot open the log file {}: {e}", path.display());
                say(LogLevel::Warn, msg).await;
                None
            }
        },
        None => None,
    };
    let mut readers = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(tokio::spawn(forward(out, LogLevel::Info, logs.clone(), file.clone())));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(tokio::spawn(forward(err, LogLevel::Error, logs.clone(), file.clone())));
    }
    let wait = async {
        let status = child.wait().await;
        // Ended on its own: what it started in the background (a server the
        // startup script launches) keeps running.
        guard.0 = None;
        for r in readers {
            let _ = r.await;
        }
        status
    };
    let status = if r.timeout.is_zero() {
        wait.await
    } else {
        match tokio::time::timeout(r.timeout, wait).await {
            Ok(s) => s,
            Err(_) => {
                say(LogLevel::Error, format!("{} ran longer than {:?}; killed", r.name, r.timeout))
                    .await;
                return Outcome::Timeout;
            }
        }
    };
    match status {
        Ok(s) if s.success() => Outcome::Success,
        Ok(s) => Outcome::Error(s.code().unwrap_or(-1)),
        Err(_) => Outcome::Error(-1),
    }
}

async fn open_log(path: &Path) -> std::io::Result<tokio::fs::File> {
    if let Some(parent) = path.parent() {
        tokio::fs::create_dir_all(parent).await?;
    }
    tokio::fs::OpenOptions::new().create(true).append(true).open(path).await
}

async fn forward(
    r: impl tokio::io::AsyncRead + Unpin,
    level: LogLevel,
    logs: mpsc::Sender<AgentLog>,
    file: Option<std::sync::Arc<Mutex<tokio::fs::File>>>,
) {
    let mut lines = BufReader::new(r).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        if let Some(f) = &file {
            let mut f = f.lock().await;
            let _ = f.write_all(format!("{line}\n").as_bytes()).await;
            // tokio's file hands the write to a blocking thread and returns;
            // the flush waits until it is in the file, so the log holds
            // every line once the script's run has returned (a test read
            // it a moment too early once).
            let _ = f.flush().await;
        }
        if logs.send(AgentLog { level, output: line }).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn env() -> Vec<(String, String)> {
        vec![("PATH".into(), "/usr/bin:/bin".into()), ("GREETING".into(), "hi".into())]
    }

    async fn run_collect(
        script: &str,
        timeout: Duration,
        log: Option<PathBuf>,
    ) -> (Outcome, Vec<String>) {
        let dir = std::env::temp_dir();
        let env = env();
        let (tx, mut rx) = mpsc::channel(100);
        let r = Run { script, dir: &dir, env: &env, timeout, log_path: log, name: "test" };
        let outcome = run(r, tx).await;
        let mut lines = Vec::new();
        while let Some(l) = rx.recv().await {
            lines.push(l.output);
        }
        (outcome, lines)
    }

    #[tokio::test]
    async fn output_exit_codes_and_log_file() {
        let tmp = tempfile::tempdir().unwrap();
        let log = tmp.path().join("sub/script.log");
        let (o, lines) =
            run_collect("echo $GREETING; echo oops >&2; exit 3", Duration::ZERO, Some(log.clone()))
                .await;
        assert_eq!(o, Outcome::Error(3));
        assert!(
            lines.contains(&"hi".to_owned()) && lines.contains(&"oops".to_owned()),
            "{lines:?}"
        );
        let file = std::fs::read_to_string(&log).unwrap();
        assert!(file.contains("hi\n") && file.contains("oops\n"), "{file}");
        let (o, _) = run_collect("true", Duration::ZERO, None).await;
        assert_eq!(o, Outcome::Success);
    }

    #[tokio::test]
    async fn a_timeout_kills_the_whole_group() {
        let tmp = tempfile::tempdir().unwrap();
        let pid_file = tmp.path().join("pid");
        // A grandchild in the background, and the shell itself, both hang.
        let script = format!("sleep 300 & echo $! > {}; sleep 300", pid_file.display());
        let (o, lines) = run_collect(&script, Duration::from_millis(500), None).await;
        assert_eq!(o, Outcome::Timeout);
        assert!(lines.last().unwrap().contains("ran longer than"), "{lines:?}");
        let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().trim().parse().unwrap();
        // Killed: gone, or a zombie until its parent (also killed) is reaped.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        loop {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            if stat.is_empty() || stat.contains(") Z ") {
                break;
            }
            assert!(std::time::Instant::now() < deadline, "the background sleep survived: {stat}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
