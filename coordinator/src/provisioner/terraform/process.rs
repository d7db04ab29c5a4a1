//! Running one terraform command: a child process with a curated environment whose
//! stdout and stderr lines are forwarded, in the order they are read, as [`JobLog`]s.
//!
//! Cancellation follows what a terminal's Ctrl-C would do to terraform, minus the
//! collateral: SIGINT goes to terraform alone (it then stops its providers and
//! provisioners cleanly and writes its state), and if it has not exited after the grace
//! period, SIGKILL goes to its whole process group, which also takes out provisioner
//! children such as a `local-exec` shell's `sleep`. The child runs in its own process
//! group for that reason, and is killed if the future running it is dropped.
//!
//! Everything happens inside the calling future: no task is spawned.

use std::ffi::OsString;
use std::path::Path;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncBufReadExt as _, AsyncRead, BufReader};
use tokio::process::Command;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::provisioner::{JobLog, LogLevel};

/// How long to keep reading output after the process exited: a grandchild that
/// outlived it may hold the pipes open forever.
const DRAIN_AFTER_EXIT: Duration = Duration::from_secs(2);

/// How long a line may wait for a slow log receiver once the run is canceled.
const SEND_AFTER_CANCEL: Duration = Duration::from_millis(500);

/// Why a command did not run to completion.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    #[error("cannot start {program:?}")]
    Spawn {
        program: OsString,
        #[source]
        source: std::io::Error,
    },
    #[error("waiting for terraform failed")]
    Wait(#[source] std::io::Error),
    #[error("canceled")]
    Canceled,
}

/// A terraform command to run.
pub(crate) struct Invocation<'a> {
    pub program: &'a Path,
    pub args: &'a [&'a str],
    pub dir: &'a Path,
    pub env: &'a [(OsString, OsString)],
    pub stage: &'a str,
}

/// Output of a command whose stdout was captured rather than logged.
#[derive(Debug)]
pub(crate) struct Captured {
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    /// The first `Error: …` diagnostic printed, for the job's error message.
    pub first_error: Option<String>,
}

/// `line` without the box terraform draws around diagnostics.
fn diagnostic_text(line: &str) -> &str {
    line.trim_start_matches(['│', '╷', '╵', ' '])
}

/// Level of a line: terraform prints diagnostics as `Error: …` / `Warning: …`, inside a
/// box drawn with `│` when not given `-compact-warnings`.
fn level_of(line: &str, from_stderr: bool) -> LogLevel {
    let text = diagnostic_text(line);
    if text.starts_with("Warning:") {
        LogLevel::Warn
    } else if text.starts_with("Error:") || from_stderr {
        LogLevel::Error
    } else {
        LogLevel::Info
    }
}

fn to_line(buf: &[u8]) -> String {
    let line = buf.strip_suffix(b"\n").unwrap_or(buf);
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    String::from_utf8_lossy(line).into_owned()
}

/// One output pipe being read line by line.
struct Pipe<R> {
    reader: Option<BufReader<R>>,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Pipe<R> {
    fn new(reader: Option<R>) -> Self {
        Self { reader: reader.map(BufReader::new), buf: Vec::new() }
    }

    fn open(&self) -> bool {
        self.reader.is_some()
    }

    /// The next complete line (or final unterminated one); `None` at end of stream.
    /// Cancel safe: a partial line stays in `buf` for the next call.
    async fn next_line(&mut self) -> Option<Vec<u8>> {
        let reader = self.reader.as_mut()?;
        match reader.read_until(b'\n', &mut self.buf).await {
            Ok(n) if n > 0 && self.buf.ends_with(b"\n") => Some(std::mem::take(&mut self.buf)),
            Ok(_) | Err(_) => {
                self.reader = None;
                (!self.buf.is_empty()).then(|| std::mem::take(&mut self.buf))
            }
        }
    }
}

/// Runs `inv`, sending each stdout line (unless `capture_stdout`) and each stderr line
/// to `logs` as it is read.
pub(crate) async fn run(
    inv: Invocation<'_>,
    capture_stdout: bool,
    logs: &mpsc::Sender<JobLog>,
    cancel: &CancellationToken,
    grace: Duration,
) -> Result<Captured, ProcessError> {
    if cancel.is_cancelled() {
        return Err(ProcessError::Canceled);
    }
    let mut child = Command::new(inv.program)
        .args(inv.args)
        .current_dir(inv.dir)
        .env_clear()
        .envs(inv.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|source| ProcessError::Spawn { program: inv.program.into(), source })?;
    let pid = child.id().and_then(|id| i32::try_from(id).ok()).map(Pid::from_raw);
    let mut out = Pipe::new(child.stdout.take());
    let mut err = Pipe::new(child.stderr.take());
    let mut captured = Vec::new();
    let mut sink = LogSink { logs, stage: inv.stage, cancel, first_error: None };

    let mut status = None;
    let mut canceled = false;
    let mut kill_at: Option<Instant> = None;
    let mut drain_until: Option<Instant> = None;
    let far = || Instant::now() + Duration::from_secs(86_400 * 365);
    while status.is_none() || out.open() || err.open() {
        tokio::select! {
            biased;
            () = cancel.cancelled(), if !canceled => {
                canceled = true;
                if let Some(pid) = pid {
                    // Already exited is fine: nothing to interrupt.
                    let _ = signal::kill(pid, Signal::SIGINT);
                }
                kill_at = Some(Instant::now() + grace);
            }
            () = tokio::time::sleep_until(kill_at.unwrap_or_else(far)), if kill_at.is_some() => {
                kill_at = None;
                kill_group(pid);
            }
            () = tokio::time::sleep_until(drain_until.unwrap_or_else(far)),
                if drain_until.is_some() => break,
            exit = child.wait(), if status.is_none() => {
                status = Some(exit.map_err(ProcessError::Wait)?);
                drain_until = Some(Instant::now() + DRAIN_AFTER_EXIT);
            }
            line = out.next_line(), if out.open() => {
                if let Some(line) = line {
                    if capture_stdout {
                        captured.extend_from_slice(&line);
                    } else {
                        sink.line(&line, false).await;
                    }
                }
            }
            line = err.next_line(), if err.open() => {
                if let Some(line) = line {
                    sink.line(&line, true).await;
                }
            }
        }
    }
    if canceled {
        // Whatever terraform left behind in its group goes too.
        kill_group(pid);
        return Err(ProcessError::Canceled);
    }
    match status {
        Some(status) => Ok(Captured { status, stdout: captured, first_error: sink.first_error }),
        None => Err(ProcessError::Wait(std::io::Error::other("no exit status"))),
    }
}

fn kill_group(pid: Option<Pid>) {
    if let Some(pid) = pid {
        // The child leads its own group (process_group(0)), so its pid is the pgid.
        let _ = signal::killpg(pid, Signal::SIGKILL);
    }
}

/// Where the lines of one command go.
struct LogSink<'a> {
    logs: &'a mpsc::Sender<JobLog>,
    stage: &'a str,
    cancel: &'a CancellationToken,
    first_error: Option<String>,
}

impl LogSink<'_> {
    /// Sends one line. A slow receiver holds terraform back (its pipe fills up) but
    /// never holds back cancellation; once canceled, a line waits at most
    /// [`SEND_AFTER_CANCEL`], so terraform's last words still usually arrive.
    async fn line(&mut self, raw: &[u8], from_stderr: bool) {
        let output = to_line(raw);
        let level = level_of(&output, from_stderr);
        if self.first_error.is_none() {
            if let Some(text) = diagnostic_text(&output).strip_prefix("Error: ") {
                self.first_error = Some(text.to_owned());
            }
        }
        let line = JobLog { stage: self.stage.to_owned(), level, output };
        // A receiver that went away only loses the logs; the run goes on.
        if self.cancel.is_cancelled() {
            let _ = tokio::time::timeout(SEND_AFTER_CANCEL, self.logs.send(line)).await;
        } else {
            tokio::select! {
                biased;
                _ = self.logs.send(line) => {}
                () = self.cancel.cancelled() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn levels() {
        assert_eq!(level_of("│ Error: boom", false), LogLevel::Error);
        assert_eq!(level_of("Warning: careful", true), LogLevel::Warn);
        assert_eq!(level_of("Plan: 1 to add", false), LogLevel::Info);
        assert_eq!(level_of("anything", true), LogLevel::Error);
    }

    #[test]
    fn lines_are_trimmed_and_lossy() {
        assert_eq!(to_line(b"a\r\n"), "a");
        assert_eq!(to_line(b"\xffb"), "\u{fffd}b");
    }

    fn sh<'a>(script: &'a [&'a str], env: &'a [(OsString, OsString)]) -> Invocation<'a> {
        Invocation {
            program: Path::new("/bin/sh"),
            args: script,
            dir: Path::new("/"),
            env,
            stage: "t",
        }
    }

    #[tokio::test]
    async fn streams_in_order_and_captures() {
        let (tx, mut rx) = mpsc::channel(100);
        let env = [(OsString::from("X"), OsString::from("y"))];
        let script = ["-c", "echo one; echo two >&2; printf 'three'; echo \"$X\" >&2; exit 3"];
        let cancel = CancellationToken::new();
        let out =
            run(sh(&script, &env), false, &tx, &cancel, Duration::from_secs(1)).await.unwrap();
        assert_eq!(out.status.code(), Some(3));
        drop(tx);
        let mut lines = Vec::new();
        while let Some(l) = rx.recv().await {
            lines.push((l.output, l.level));
        }
        let out: Vec<_> = lines.iter().filter(|l| l.1 == LogLevel::Info).map(|l| &l.0).collect();
        let err: Vec<_> = lines.iter().filter(|l| l.1 == LogLevel::Error).map(|l| &l.0).collect();
        assert_eq!(out, ["one", "three"]);
        assert_eq!(err, ["two", "y"]);

        let (tx, _rx) = mpsc::channel(100);
        let script = ["-c", "printf '{\"a\":1}'"];
        let out = run(sh(&script, &[]), true, &tx, &cancel, Duration::from_secs(1)).await.unwrap();
        assert_eq!(out.stdout, b"{\"a\":1}");
    }

    #[tokio::test]
    async fn a_stalled_log_receiver_does_not_block_cancellation() {
        // Capacity 1 and nobody receiving: the second line blocks.
        let (tx, _rx) = mpsc::channel(1);
        let cancel = CancellationToken::new();
        let script = ["-c", "echo a; echo b; echo c; sleep 30"];
        let c = cancel.clone();
        let canceller = async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            c.cancel();
        };
        let started = std::time::Instant::now();
        let (res, ()) = tokio::join!(
            run(sh(&script, &[]), false, &tx, &cancel, Duration::from_millis(100)),
            canceller
        );
        assert!(matches!(res, Err(ProcessError::Canceled)), "{res:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
        // Canceled before the start: nothing runs.
        let res = run(sh(&script, &[]), false, &tx, &cancel, Duration::from_millis(100)).await;
        assert!(matches!(res, Err(ProcessError::Canceled)));
    }

    #[tokio::test]
    async fn cancel_interrupts_then_kills_the_group() {
        let (tx, _rx) = mpsc::channel(100);
        let cancel = CancellationToken::new();
        // The shell ignores SIGINT, so only the group SIGKILL after the grace ends it;
        // its `sleep` child holds the pipes and must die too.
        let script = ["-c", "trap '' INT; sleep 30; echo done"];
        let started = std::time::Instant::now();
        let c = cancel.clone();
        let canceller = async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            c.cancel();
        };
        let (res, ()) = tokio::join!(
            run(sh(&script, &[]), false, &tx, &cancel, Duration::from_millis(300)),
            canceller
        );
        assert!(matches!(res, Err(ProcessError::Canceled)), "{res:?}");
        assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    }
}
