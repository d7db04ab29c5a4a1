//! The task behind one `session` channel.
//!
//! It reads the channel's messages in order: `pty-req`, `env`,
//! `auth-agent-req` and `window-change` set up state; `exec`, `shell` or
//! `subsystem` start the work. Once a process runs, the task shuttles input,
//! signals and window changes to it, and when it exits waits for its output to
//! drain, then sends `exit-status` (or `exit-signal`), EOF and close. If the
//! client closes first, dropping the [`Running`] process kills it.
//!
//! Input is queued (bounded) to the process. russh delivers a connection's
//! channel data from one loop and opens the SSH window as data arrives, so a
//! process that stops reading its input eventually stalls that connection's
//! reader, not other connections; a bounded queue is preferred to unbounded
//! memory.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use russh::server::{Handle, Msg};
use russh::{Channel, ChannelMsg};
use tokio::time::Instant;

use super::forward::AgentSocket;
use super::process::{spawn_piped, CommandSpec, ExitOutcome, Running};
use super::pty::{pty_size, spawn_pty, PtyRequest};
use super::stats::SessionKind;
use super::{sftp, Inner};

pub(crate) const SFTP_SUBSYSTEM: &str = "sftp";

/// Environment variables one client may set on a session.
const MAX_CLIENT_ENV: usize = 256;

/// After a PTY's process exits, how long to wait for the rest of its output;
/// background jobs may hold the terminal open for ever.
const PTY_DRAIN: Duration = Duration::from_secs(1);

pub(crate) struct SessionContext {
    pub(crate) inner: Arc<Inner>,
    pub(crate) handle: Handle,
    /// The client's and the server's addresses, for `SSH_CLIENT` and `SSH_CONNECTION`.
    pub(crate) addrs: Option<(SocketAddr, SocketAddr)>,
}

/// Session state gathered before the command starts.
#[derive(Default)]
struct Setup {
    env: Vec<(String, String)>,
    pty: Option<PtyRequest>,
    agent: Option<AgentSocket>,
}

pub(crate) async fn run(mut channel: Channel<Msg>, ctx: SessionContext) {
    let mut setup = Setup::default();
    while let Some(msg) = channel.wait().await {
        match msg {
            ChannelMsg::RequestPty {
                term, col_width, row_height, pix_width, pix_height, ..
            } => {
                setup.pty = Some(PtyRequest {
                    term,
                    size: pty_size(col_width, row_height, pix_width, pix_height),
                });
            }
            ChannelMsg::WindowChange { col_width, row_height, pix_width, pix_height } => {
                if let Some(pty) = &mut setup.pty {
                    pty.size = pty_size(col_width, row_height, pix_width, pix_height);
                }
            }
            ChannelMsg::SetEnv { variable_name, variable_value, .. }
                if setup.env.len() < MAX_CLIENT_ENV =>
            {
                setup.env.push((variable_name, variable_value));
            }
            ChannelMsg::AgentForward { .. }
                if ctx.inner.config.agent_forwarding && setup.agent.is_none() =>
            {
                match AgentSocket::bind(ctx.handle.clone(), ctx.inner.counters.clone()) {
                    Ok(agent) => setup.agent = Some(agent),
                    Err(e) => tracing::warn!(error = %e, "cannot create agent socket"),
                }
            }
            ChannelMsg::Exec { command, .. } => {
                let command = String::from_utf8_lossy(&command).into_owned();
                return run_command(channel, &ctx, setup, Some(command)).await;
            }
            ChannelMsg::RequestShell { .. } => {
                return run_command(channel, &ctx, setup, None).await;
            }
            ChannelMsg::RequestSubsystem { name, .. } if name == SFTP_SUBSYSTEM => {
                let _active = ctx.inner.counters.session(SessionKind::Sftp);
                let dir = ctx.inner.config.dir.clone();
                let id = channel.id();
                let mut stream = channel.into_stream();
                // Like sshd, report the subsystem's exit: `scp` in SFTP mode
                // fails without a zero exit status.
                let code = match sftp::serve(&mut stream, dir).await {
                    Ok(()) => 0,
                    Err(e) => {
                        tracing::debug!(error = %e, "sftp session ended with an error");
                        1
                    }
                };
                let _ = ctx.handle.exit_status_request(id, code).await;
                let _ = ctx.handle.eof(id).await;
                return;
            }
            ChannelMsg::Close => return,
            // Refused by the handler, or meaningless before a command runs.
            _ => {}
        }
    }
}

async fn run_command(
    mut channel: Channel<Msg>,
    ctx: &SessionContext,
    setup: Setup,
    command: Option<String>,
) {
    let config = &ctx.inner.config;
    let kind = if setup.pty.is_some() { SessionKind::Shell } else { SessionKind::Exec };
    let _active = ctx.inner.counters.session(kind);
    let mut env = config.env.clone();
    if let Some((client, server)) = ctx.addrs {
        let (cip, cport, sip, sport) = (client.ip(), client.port(), server.ip(), server.port());
        env.push(("SSH_CLIENT".into(), format!("{cip} {cport} {sport}")));
        env.push(("SSH_CONNECTION".into(), format!("{cip} {cport} {sip} {sport}")));
    }
    env.extend(setup.env);
    if let Some(agent) = &setup.agent {
        env.push(("SSH_AUTH_SOCK".into(), agent.path().to_string_lossy().into_owned()));
    }
    let spec =
        CommandSpec { shell: ctx.inner.shell.clone(), command, env, dir: config.dir.clone() };
    tracing::debug!(command = ?spec.command, pty = setup.pty.is_some(), "starting session command");
    let started = match &setup.pty {
        Some(request) => {
            spawn_pty(&spec, request, channel.make_writer()).map_err(|e| e.to_string())
        }
        None => spawn_piped(&spec, channel.make_writer(), channel.make_writer_ext(Some(1)))
            .map_err(|e| e.to_string()),
    };
    let running = match started {
        Ok(running) => running,
        Err(e) => {
            tracing::warn!(error = %e, "cannot start session command");
            let _ =
                channel.extended_data_bytes(1, format!("coder agent: {e}\r\n").into_bytes()).await;
            finish(&channel, &ctx.handle, ExitOutcome::Code(127)).await;
            return;
        }
    };
    if let Some(outcome) = supervise(&mut channel, running, setup.pty.is_some()).await {
        finish(&channel, &ctx.handle, outcome).await;
    }
}

/// Runs until the process exited and its output drained (returns how it
/// exited) or the client closed the channel (returns `None`).
async fn supervise(
    channel: &mut Channel<Msg>,
    mut running: Running,
    is_pty: bool,
) -> Option<ExitOutcome> {
    let mut exit: Option<ExitOutcome> = None;
    let mut drain_deadline: Option<Instant> = None;
    loop {
        tokio::select! {
            biased;
            msg = channel.wait() => match msg {
                Some(ChannelMsg::Data { data }) => {
                    if let Some(input) = &running.input {
                        if input.send(data).await.is_err() {
                            running.input = None;
                        }
                    }
                }
                // A terminal has no EOF of its own; a client's EOF on a PTY
                // session is not a reason to hang the terminal up.
                Some(ChannelMsg::Eof) if !is_pty => running.input = None,
                Some(ChannelMsg::WindowChange { col_width, row_height, pix_width, pix_height }) => {
                    running.resize(pty_size(col_width, row_height, pix_width, pix_height));
                }
                Some(ChannelMsg::Signal { signal }) => running.signal(&signal),
                Some(ChannelMsg::Close) | None => return None,
                Some(_) => {}
            },
            outcome = &mut running.exit, if exit.is_none() => {
                running.exited = true;
                exit = Some(outcome.unwrap_or(ExitOutcome::Code(255)));
                if is_pty {
                    drain_deadline = Some(Instant::now() + PTY_DRAIN);
                }
            }
            done = running.output.join_next(), if exit.is_some() => {
                if done.is_none() {
                    break;
                }
            }
            () = tokio::time::sleep_until(drain_deadline.unwrap_or_else(Instant::now)),
                if drain_deadline.is_some() => break,
        }
    }
    exit
}

/// Reports the exit and closes the channel.
async fn finish(channel: &Channel<Msg>, handle: &Handle, outcome: ExitOutcome) {
    match outcome {
        ExitOutcome::Code(code) => {
            let _ = channel.exit_status(code).await;
        }
        ExitOutcome::Signal { signal, core_dumped } => {
            let _ = handle
                .exit_signal_request(
                    channel.id(),
                    signal,
                    core_dumped,
                    String::new(),
                    String::new(),
                )
                .await;
        }
    }
    let _ = channel.eof().await;
    let _ = channel.close().await;
}
