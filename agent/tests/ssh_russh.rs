//! The SSH server driven by russh's client over in-memory streams, for what
//! OpenSSH's client does not show: exit signals, misbehaving clients, and
//! that ending a connection ends what it started.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::Duration;

use agent::ssh::{SshConfig, SshError, SshServer};
use anyhow::{bail, Context, Result};
use russh::client::{self, Handle};
use russh::keys::PublicKeyOrCertificate;
use russh::{ChannelMsg, Sig};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio::task::JoinHandle;

const DEADLINE: Duration = Duration::from_secs(20);

struct AcceptAny;

impl client::Handler for AcceptAny {
    type Error = russh::Error;

    async fn check_server_key(
        &mut self,
        _key: &PublicKeyOrCertificate,
    ) -> Result<bool, Self::Error> {
        Ok(true)
    }
}

fn server(dir: &std::path::Path) -> SshServer {
    let mut config = SshConfig::new(dir);
    config.shell = Some("/bin/sh".into());
    SshServer::new(config)
}

/// One in-memory connection: the server side runs in a task.
fn serve(server: &SshServer) -> (DuplexStream, JoinHandle<Result<(), SshError>>) {
    let (client, server_end) = tokio::io::duplex(1 << 16);
    let server = server.clone();
    let task =
        tokio::spawn(async move { server.serve_stream(server_end, "test-peer".into()).await });
    (client, task)
}

async fn connect(
    server: &SshServer,
) -> Result<(Handle<AcceptAny>, JoinHandle<Result<(), SshError>>)> {
    let (stream, task) = serve(server);
    let config = Arc::new(client::Config::default());
    let mut session = client::connect_stream(config, stream, AcceptAny).await?;
    let auth = session.authenticate_none("coder").await?;
    if !auth.success() {
        bail!("none auth refused: {auth:?}");
    }
    Ok((session, task))
}

/// What an `exec` produced.
#[derive(Debug, Default)]
struct Exec {
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    status: Option<u32>,
    signal: Option<Sig>,
}

async fn exec(session: &Handle<AcceptAny>, command: &str) -> Result<Exec> {
    let mut ch = session.channel_open_session().await?;
    ch.exec(true, command).await?;
    let mut out = Exec::default();
    tokio::time::timeout(DEADLINE, async {
        while let Some(msg) = ch.wait().await {
            match msg {
                ChannelMsg::Data { data } => out.stdout.extend_from_slice(&data),
                ChannelMsg::ExtendedData { data, ext: 1 } => out.stderr.extend_from_slice(&data),
                ChannelMsg::ExitStatus { exit_status } => out.status = Some(exit_status),
                ChannelMsg::ExitSignal { signal_name, .. } => out.signal = Some(signal_name),
                _ => {}
            }
        }
    })
    .await
    .context("exec timed out")?;
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_reports_status_streams_and_signals() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let srv = server(dir.path());
    let (session, _task) = connect(&srv).await?;

    let out = exec(&session, "printf out; printf err >&2; exit 7").await?;
    assert_eq!(out.status, Some(7));
    assert_eq!(out.stdout, b"out");
    assert_eq!(out.stderr, b"err");

    let out = exec(&session, "kill -TERM $$").await?;
    assert!(matches!(out.signal, Some(Sig::TERM)), "{out:?}");
    assert_eq!(out.status, None);

    let out = exec(&session, "echo $CODER_SSH_NOPE; false").await?;
    assert_eq!(out.status, Some(1));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_garbage_client_only_ends_its_own_connection() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let srv = server(dir.path());
    let (good, _good_task) = connect(&srv).await?;

    let (mut bad, bad_task) = serve(&srv);
    let mut banner = [0u8; 8];
    bad.read_exact(&mut banner).await?;
    assert_eq!(&banner, b"SSH-2.0-");
    bad.write_all(b"SSH-2.0-evil\r\n").await?;
    bad.write_all(&[0xff; 4096]).await?;
    let ended = tokio::time::timeout(DEADLINE, bad_task).await??;
    assert!(ended.is_err(), "garbage should fail the connection");

    let out = exec(&good, "echo still-here").await?;
    assert_eq!(out.stdout, b"still-here\n");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ending_the_connection_kills_its_commands() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let srv = server(dir.path());
    let (session, task) = connect(&srv).await?;
    let mut ch = session.channel_open_session().await?;
    ch.exec(true, "echo $$; exec sleep 1000").await?;
    let mut pid = String::new();
    tokio::time::timeout(DEADLINE, async {
        while !pid.ends_with('\n') {
            match ch.wait().await {
                Some(ChannelMsg::Data { data }) => pid.push_str(&String::from_utf8_lossy(&data)),
                Some(_) => {}
                None => break,
            }
        }
    })
    .await?;
    let pid: i32 = pid.trim().parse().context("pid")?;
    assert!(alive(pid));
    assert_eq!(srv.stats().connections_active, 1);

    // Aborting the task drops the `serve_stream` future mid-connection.
    task.abort();
    let deadline = tokio::time::Instant::now() + DEADLINE;
    // No event tells us a foreign process died; poll with a deadline.
    while alive(pid) {
        if tokio::time::Instant::now() > deadline {
            bail!("command {pid} survived its connection");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    while srv.stats().connections_active != 0 {
        if tokio::time::Instant::now() > deadline {
            bail!("connection still counted as active");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_ends_open_connections() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let srv = server(dir.path());
    let (_session, task) = connect(&srv).await?;
    srv.shutdown();
    let ended = tokio::time::timeout(DEADLINE, task).await??;
    assert!(ended.is_err());
    Ok(())
}

/// Reads the channel's data until `needle` appears; returns the exit status
/// if the channel ends first.
async fn read_channel_until(ch: &mut russh::Channel<client::Msg>, needle: &str) -> Result<String> {
    let mut seen = String::new();
    tokio::time::timeout(DEADLINE, async {
        while !seen.contains(needle) {
            match ch.wait().await {
                Some(ChannelMsg::Data { data }) => seen.push_str(&String::from_utf8_lossy(&data)),
                Some(ChannelMsg::ExitStatus { exit_status }) => {
                    seen.push_str(&format!("<exit {exit_status}>"))
                }
                Some(_) => {}
                None => bail!("channel closed before {needle:?}; got {seen:?}"),
            }
        }
        Ok(seen)
    })
    .await
    .with_context(|| format!("timed out waiting for {needle:?}"))?
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_shell_follows_window_changes() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let srv = server(dir.path());
    let (session, _task) = connect(&srv).await?;
    let mut ch = session.channel_open_session().await?;
    ch.request_pty(true, "vt100", 100, 30, 0, 0, &[]).await?;
    ch.request_shell(true).await?;
    ch.data(&b"stty size; echo TTY=$SSH_TTY TERM=$TERM\n"[..]).await?;
    let seen = read_channel_until(&mut ch, "TERM=vt100").await?;
    assert!(seen.contains("30 100"), "{seen:?}");
    assert!(seen.contains("TTY=/dev/pts/"), "{seen:?}");
    ch.window_change(120, 40, 0, 0).await?;
    ch.data(&b"stty size\n"[..]).await?;
    read_channel_until(&mut ch, "40 120").await?;
    ch.data(&b"exit 4\n"[..]).await?;
    read_channel_until(&mut ch, "<exit 4>").await?;
    assert_eq!(srv.stats().sessions_total.shell, 1);
    Ok(())
}

/// Running and not a zombie.
fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => !stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
        Err(_) => false,
    }
}
