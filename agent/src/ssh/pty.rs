//! Starting a command on a pseudo-terminal with `portable-pty`, which does the
//! `setsid`/`TIOCSCTTY` dance this crate may not (`unsafe_code` is denied).
//!
//! `portable-pty` gives blocking `Read`/`Write` handles, so three plain
//! threads serve a PTY: a reader (master → bounded channel → the output
//! task), a writer (input channel → master) and a waiter (`wait()` → exit
//! oneshot). None of them can be aborted, but each ends on its own once the
//! session is over: the reader when the PTY hangs up (the child is sent
//! `SIGHUP` when its [`Running`] drops, and the master is closed), the writer
//! when its input sender drops, the waiter when the child exits.

use std::io::{Read, Write};

use bytes::Bytes;
use portable_pty::{CommandBuilder, PtySize};
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;

use super::process::{sig_from_name, CommandSpec, ExitOutcome, Running, INPUT_QUEUE};

/// What the client asked for in `pty-req`, updated by `window-change`.
#[derive(Debug, Clone)]
pub(crate) struct PtyRequest {
    pub(crate) term: String,
    pub(crate) size: PtySize,
}

/// Builds a [`PtySize`] from SSH's u32 fields, clamping absurd values.
pub(crate) fn pty_size(cols: u32, rows: u32, px_width: u32, px_height: u32) -> PtySize {
    let clamp = |v: u32, default: u16| match u16::try_from(v) {
        Ok(0) => default,
        Ok(v) => v,
        Err(_) => u16::MAX,
    };
    PtySize {
        rows: clamp(rows, 24),
        cols: clamp(cols, 80),
        pixel_width: u16::try_from(px_width).unwrap_or(0),
        pixel_height: u16::try_from(px_height).unwrap_or(0),
    }
}

/// Why a PTY could not be started.
#[derive(Debug, thiserror::Error)]
#[error("cannot start command on a pty: {0}")]
pub(crate) struct PtyError(String);

/// Starts `spec` on a new PTY; everything it prints goes to `sink`.
pub(crate) fn spawn_pty<W>(
    spec: &CommandSpec,
    request: &PtyRequest,
    sink: W,
) -> Result<Running, PtyError>
where
    W: AsyncWrite + Unpin + Send + 'static,
{
    let err = |e: &dyn std::fmt::Display| PtyError(e.to_string());
    let pair = portable_pty::native_pty_system().openpty(request.size).map_err(|e| err(&e))?;
    let mut cmd = CommandBuilder::new(&spec.shell);
    cmd.args(spec.args());
    cmd.cwd(spec.working_dir());
    // `CommandBuilder::new` starts from the agent's environment.
    cmd.env_clear();
    for (k, v) in &spec.env {
        cmd.env(k, v);
    }
    cmd.env("TERM", &request.term);
    if let Some(tty) = pair.master.tty_name() {
        cmd.env("SSH_TTY", tty);
    }
    let mut child = pair.slave.spawn_command(cmd).map_err(|e| err(&e))?;
    // The parent must not hold the slave open, or the master never sees the
    // hang-up when the child exits.
    drop(pair.slave);
    let pid = child.process_id();
    let mut reader = pair.master.try_clone_reader().map_err(|e| err(&e))?;
    let mut writer = pair.master.take_writer().map_err(|e| err(&e))?;

    let (out_tx, mut out_rx) = mpsc::channel::<Bytes>(8);
    std::thread::Builder::new()
        .name("ssh-pty-read".into())
        .spawn(move || {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        let chunk = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
                        if out_tx.blocking_send(chunk).is_err() {
                            break;
                        }
                    }
                }
            }
        })
        .map_err(|e| err(&e))?;

    let (input, mut input_rx) = mpsc::channel::<Bytes>(INPUT_QUEUE);
    std::thread::Builder::new()
        .name("ssh-pty-write".into())
        .spawn(move || {
            while let Some(data) = input_rx.blocking_recv() {
                if writer.write_all(&data).and_then(|()| writer.flush()).is_err() {
                    break;
                }
            }
        })
        .map_err(|e| err(&e))?;

    let (exit_tx, exit) = oneshot::channel();
    std::thread::Builder::new()
        .name("ssh-pty-wait".into())
        .spawn(move || {
            let outcome = match child.wait() {
                Ok(status) => match status.signal() {
                    Some(desc) => ExitOutcome::Signal {
                        signal: signal_from_description(desc),
                        core_dumped: desc.contains("core dumped"),
                    },
                    None => ExitOutcome::Code(status.exit_code()),
                },
                Err(_) => ExitOutcome::Code(255),
            };
            let _ = exit_tx.send(outcome);
        })
        .map_err(|e| err(&e))?;

    let mut output = JoinSet::new();
    output.spawn(async move {
        let mut sink = sink;
        while let Some(chunk) = out_rx.recv().await {
            if sink.write_all(&chunk).await.is_err() {
                break;
            }
        }
        let _ = sink.flush().await;
    });

    Ok(Running {
        input: Some(input),
        exit,
        output,
        pid,
        exited: false,
        _tasks: JoinSet::new(),
        pty: Some(pair.master),
    })
}

/// `portable-pty` reports signals as `strsignal(3)` text; map glibc's texts
/// back to SSH signal names.
fn signal_from_description(desc: &str) -> russh::Sig {
    let name = match desc.trim_end_matches(" (core dumped)") {
        "Hangup" => "HUP",
        "Interrupt" => "INT",
        "Quit" => "QUIT",
        "Illegal instruction" => "ILL",
        "Aborted" => "ABRT",
        "Floating point exception" => "FPE",
        "Killed" => "KILL",
        "Segmentation fault" => "SEGV",
        "Broken pipe" => "PIPE",
        "Alarm clock" => "ALRM",
        "Terminated" => "TERM",
        "User defined signal 1" => "USR1",
        "User defined signal 2" => "USR2",
        _ => "TERM",
    };
    sig_from_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_clamped() {
        let s = pty_size(0, 100_000, 1, 2);
        assert_eq!((s.cols, s.rows), (80, u16::MAX));
        assert_eq!((s.pixel_width, s.pixel_height), (1, 2));
    }

    #[test]
    fn signal_texts_map_to_names() {
        assert!(matches!(signal_from_description("Killed"), russh::Sig::KILL));
        assert!(matches!(
            signal_from_description("User defined signal 2"),
            russh::Sig::Custom(s) if s == "USR2"
        ));
    }
}
