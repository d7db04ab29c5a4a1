//! Starting a session's command and owning it while it runs.
//!
//! A [`Running`] process is the same whatever its stdio is: input goes in
//! through a bounded channel (dropping the sender is EOF), output is pumped
//! into the SSH channel by tasks in `output`, and the exit arrives on a
//! oneshot. Pipes ([`spawn_piped`]) give separate stdout and stderr; a PTY
//! ([`super::pty::spawn_pty`]) merges them. Dropping a [`Running`] aborts its
//! tasks and kills the process if it has not exited.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use bytes::Bytes;
use russh::Sig;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

/// How a process ended, in SSH's terms.
#[derive(Debug, Clone)]
pub(crate) enum ExitOutcome {
    Code(u32),
    Signal { signal: Sig, core_dumped: bool },
}

/// What to run and where.
#[derive(Debug, Clone)]
pub(crate) struct CommandSpec {
    pub(crate) shell: PathBuf,
    /// `None` starts an interactive login shell.
    pub(crate) command: Option<String>,
    /// The whole environment: nothing is inherited from the agent.
    pub(crate) env: Vec<(String, String)>,
    pub(crate) dir: PathBuf,
}

impl CommandSpec {
    /// The argv after the program: `-c CMD` for commands, `-l` for the login
    /// shells known to take it.
    pub(crate) fn args(&self) -> Vec<OsString> {
        match &self.command {
            Some(c) => vec!["-c".into(), c.into()],
            None => {
                let name = self.shell.file_name().and_then(|n| n.to_str()).unwrap_or_default();
                if matches!(name, "bash" | "zsh" | "sh" | "dash" | "ksh" | "fish") {
                    vec!["-l".into()]
                } else {
                    Vec::new()
                }
            }
        }
    }

    /// `dir` if it exists, else `/`, so a missing directory does not make
    /// every command fail.
    pub(crate) fn working_dir(&self) -> &Path {
        if self.dir.is_dir() {
            &self.dir
        } else {
            Path::new("/")
        }
    }
}

/// A started process and the tasks that serve it.
pub(crate) struct Running {
    /// Input to the process; `None` once the client sent EOF.
    pub(crate) input: Option<mpsc::Sender<Bytes>>,
    /// Resolves once when the process exits.
    pub(crate) exit: oneshot::Receiver<ExitOutcome>,
    /// Tasks copying the process's output into the channel; all done means
    /// all output was sent.
    pub(crate) output: JoinSet<()>,
    pub(crate) pid: Option<u32>,
    /// Set once `exit` resolved, so that drop does not signal a reused pid.
    pub(crate) exited: bool,
    /// Owns the stdin writer and the waiter (which kills on drop).
    pub(crate) _tasks: JoinSet<()>,
    /// Kept for `window-change`; closing it hangs the PTY up.
    pub(crate) pty: Option<Box<dyn portable_pty::MasterPty + Send>>,
}

impl Running {
    /// Delivers an SSH `signal` request.
    pub(crate) fn signal(&self, sig: &Sig) {
        let (Some(pid), Some(signal)) = (self.pid, to_nix_signal(sig)) else {
            return;
        };
        if self.exited {
            return;
        }
        let Ok(pid) = i32::try_from(pid) else { return };
        if let Err(e) = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal) {
            tracing::debug!(error = %e, "cannot signal process");
        }
    }

    /// Applies a `window-change` request to the PTY, if there is one.
    pub(crate) fn resize(&self, size: portable_pty::PtySize) {
        if let Some(pty) = &self.pty {
            if let Err(e) = pty.resize(size) {
                tracing::debug!(error = %e, "cannot resize pty");
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // Pipes: the waiter task's child is killed on drop. A PTY child gets
        // a hangup, as when a terminal closes.
        if self.pty.is_some() && !self.exited {
            self.signal(&Sig::HUP);
        }
    }
}

/// Starts `spec` with pipes: stdout and stderr go to the two writers
/// (the channel's data and extended data).
pub(crate) fn spawn_piped<O, E>(
    spec: &CommandSpec,
    stdout_sink: O,
    stderr_sink: E,
) -> std::io::Result<Running>
where
    O: AsyncWrite + Unpin + Send + 'static,
    E: AsyncWrite + Unpin + Send + 'static,
{
    let mut child = tokio::process::Command::new(&spec.shell)
        .args(spec.args())
        .current_dir(spec.working_dir())
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id();
    let mut tasks = JoinSet::new();
    let mut output = JoinSet::new();
    if let Some(stdout) = child.stdout.take() {
        output.spawn(pump(stdout, stdout_sink));
    }
    if let Some(stderr) = child.stderr.take() {
        output.spawn(pump(stderr, stderr_sink));
    }
    let (input, mut input_rx) = mpsc::channel::<Bytes>(INPUT_QUEUE);
    if let Some(mut stdin) = child.stdin.take() {
        tasks.spawn(async move {
            while let Some(data) = input_rx.recv().await {
                if stdin.write_all(&data).await.is_err() {
                    break;
                }
            }
        });
    }
    let (exit_tx, exit) = oneshot::channel();
    tasks.spawn(async move {
        let outcome = match child.wait().await {
            Ok(status) => outcome_of(status),
            Err(e) => {
                tracing::debug!(error = %e, "cannot wait for process");
                ExitOutcome::Code(255)
            }
        };
        let _ = exit_tx.send(outcome);
    });
    Ok(Running { input: Some(input), exit, output, pid, exited: false, _tasks: tasks, pty: None })
}

/// Chunks queued for a process's input before the channel stops reading.
pub(crate) const INPUT_QUEUE: usize = 32;

/// Copies a process's output into the channel until either side ends.
async fn pump<R, W>(mut from: R, mut to: W)
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut buf = vec![0u8; 32 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let Some(chunk) = buf.get(..n) else { break };
        if to.write_all(chunk).await.is_err() {
            break;
        }
    }
    let _ = to.flush().await;
}

fn outcome_of(status: std::process::ExitStatus) -> ExitOutcome {
    use std::os::unix::process::ExitStatusExt;
    if let Some(code) = status.code() {
        return ExitOutcome::Code(u32::try_from(code).unwrap_or(255));
    }
    match status.signal() {
        Some(sig) => ExitOutcome::Signal {
            signal: from_signal_number(sig),
            core_dumped: status.core_dumped(),
        },
        None => ExitOutcome::Code(255),
    }
}

/// SSH signal names are the POSIX names without `SIG` (RFC 4254 §6.10).
fn from_signal_number(n: i32) -> Sig {
    match nix::sys::signal::Signal::try_from(n) {
        Ok(s) => sig_from_name(s.as_str().trim_start_matches("SIG")),
        Err(_) => Sig::Custom(format!("SIG{n}")),
    }
}

pub(crate) fn sig_from_name(name: &str) -> Sig {
    match name {
        "ABRT" => Sig::ABRT,
        "ALRM" => Sig::ALRM,
        "FPE" => Sig::FPE,
        "HUP" => Sig::HUP,
        "ILL" => Sig::ILL,
        "INT" => Sig::INT,
        "KILL" => Sig::KILL,
        "PIPE" => Sig::PIPE,
        "QUIT" => Sig::QUIT,
        "SEGV" => Sig::SEGV,
        "TERM" => Sig::TERM,
        "USR1" => Sig::USR1,
        other => Sig::Custom(other.to_string()),
    }
}

fn to_nix_signal(sig: &Sig) -> Option<nix::sys::signal::Signal> {
    use nix::sys::signal::Signal;
    Some(match sig {
        Sig::ABRT => Signal::SIGABRT,
        Sig::ALRM => Signal::SIGALRM,
        Sig::FPE => Signal::SIGFPE,
        Sig::HUP => Signal::SIGHUP,
        Sig::ILL => Signal::SIGILL,
        Sig::INT => Signal::SIGINT,
        Sig::KILL => Signal::SIGKILL,
        Sig::PIPE => Signal::SIGPIPE,
        Sig::QUIT => Signal::SIGQUIT,
        Sig::SEGV => Signal::SIGSEGV,
        Sig::TERM => Signal::SIGTERM,
        Sig::USR1 => Signal::SIGUSR1,
        Sig::Custom(name) => format!("SIG{name}").parse().ok()?,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn signal_names_round_trip() {
        assert!(matches!(from_signal_number(15), Sig::TERM));
        assert!(matches!(from_signal_number(10), Sig::USR1));
        assert!(matches!(from_signal_number(12), Sig::Custom(s) if s == "USR2"));
        assert_eq!(
            to_nix_signal(&Sig::Custom("USR2".into())),
            Some(nix::sys::signal::Signal::SIGUSR2)
        );
        assert_eq!(to_nix_signal(&Sig::Custom("NOPE".into())), None);
    }

    #[test]
    fn login_shells_get_dash_l() {
        let spec = |shell: &str, command: Option<&str>| CommandSpec {
            shell: shell.into(),
            command: command.map(String::from),
            env: Vec::new(),
            dir: "/nonexistent-dir".into(),
        };
        assert_eq!(spec("/bin/bash", None).args(), vec![OsString::from("-l")]);
        assert!(spec("/usr/bin/python3", None).args().is_empty());
        assert_eq!(spec("/bin/sh", Some("exit 7")).args().len(), 2);
        assert_eq!(spec("/bin/sh", None).working_dir(), Path::new("/"));
    }
}
