//! The SSH server driven by the real OpenSSH client (`ssh`, `sftp`,
//! `ssh-agent`, `ssh-add`) over loopback TCP, one `serve_stream` per accepted
//! connection, as the agent does per mesh stream.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use agent::ssh::{SshConfig, SshServer};
use anyhow::{bail, Context, Result};
use rand::{RngCore, SeedableRng};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;
use tokio_util::task::AbortOnDropHandle;

const DEADLINE: Duration = Duration::from_secs(30);

/// Whether the OpenSSH client is installed; tests print why they skip.
fn have(tool: &str) -> bool {
    let found = std::process::Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        let reason = format!("`{tool}` is not installed (apt-get install -y openssh-client)");
        // Under CI a missing client is a failure, not a silent pass.
        assert!(
            std::env::var("CI").map_or(true, |v| v.is_empty() || v == "false"),
            "CI must run this test, but {reason}"
        );
        eprintln!("skipping: {reason}");
    }
    found
}

/// An SSH server on 127.0.0.1 serving each TCP connection as one stream.
struct Harness {
    server: SshServer,
    port: u16,
    dir: tempfile::TempDir,
    _accept: AbortOnDropHandle<()>,
}

impl Harness {
    async fn start() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let mut config = SshConfig::new(dir.path());
        config.env = vec![("FROM_CONFIG".into(), "cfgval".into())];
        config.shell = Some("/bin/sh".into());
        let server = SshServer::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let port = listener.local_addr()?.port();
        let srv = server.clone();
        let accept = tokio::spawn(async move {
            let mut conns = JoinSet::new();
            while let Ok((tcp, from)) = listener.accept().await {
                let srv = srv.clone();
                conns.spawn(async move {
                    if let Err(e) = srv.serve_stream(tcp, from.to_string()).await {
                        eprintln!("ssh connection from {from}: {e}");
                    }
                });
            }
        });
        Ok(Self { server, port, dir, _accept: AbortOnDropHandle::new(accept) })
    }

    fn common_opts(&self) -> Vec<String> {
        [
            "-F",
            "/dev/null",
            "-o",
            "StrictHostKeyChecking=no",
            "-o",
            "UserKnownHostsFile=/dev/null",
            "-o",
            "BatchMode=yes",
            "-o",
            "LogLevel=ERROR",
            "-o",
            "IdentityAgent=none",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// `ssh [args] OPTS -p PORT 127.0.0.1 [remote]`, killed when dropped;
    /// `args` come first because ssh keeps the first value of an option.
    fn ssh(&self, args: &[&str], remote: Option<&str>) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(args)
            .args(self.common_opts())
            .args(["-p", &self.port.to_string()])
            .arg("127.0.0.1");
        if let Some(r) = remote {
            cmd.arg(r);
        }
        cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).kill_on_drop(true);
        cmd
    }
}

async fn output(mut cmd: Command) -> Result<std::process::Output> {
    tokio::time::timeout(DEADLINE, cmd.output())
        .await
        .context("command timed out")?
        .context("cannot run command")
}

/// Reads `r` until `needle` was seen; returns everything read.
async fn read_until(r: &mut (impl AsyncRead + Unpin), needle: &str) -> Result<String> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 4096];
    tokio::time::timeout(DEADLINE, async {
        loop {
            if String::from_utf8_lossy(&seen).contains(needle) {
                return Ok(String::from_utf8_lossy(&seen).into_owned());
            }
            let n = r.read(&mut buf).await?;
            if n == 0 {
                bail!("EOF before {needle:?}; got {:?}", String::from_utf8_lossy(&seen));
            }
            seen.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .with_context(|| format!("timed out waiting for {needle:?}"))?
}

/// A TCP echo server; returns its port.
async fn echo_server() -> Result<(u16, AbortOnDropHandle<()>)> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let port = listener.local_addr()?.port();
    let task = tokio::spawn(async move {
        let mut conns = JoinSet::new();
        while let Ok((mut tcp, _)) = listener.accept().await {
            conns.spawn(async move {
                let (mut r, mut w) = tcp.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    Ok((port, AbortOnDropHandle::new(task)))
}

/// A port that was free a moment ago (OpenSSH's `-L` cannot report one).
async fn free_port() -> Result<u16> {
    let l = TcpListener::bind("127.0.0.1:0").await?;
    Ok(l.local_addr()?.port())
}

/// Sends 1 MiB of random bytes through `addr` and expects them echoed back,
/// writing and reading concurrently so both directions carry data at once.
async fn echo_round_trip(port: u16) -> Result<()> {
    let mut data = vec![0u8; 1 << 20];
    rand::rngs::StdRng::seed_from_u64(7).fill_bytes(&mut data);
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let (mut r, mut w) = tcp.into_split();
    let to_send = data.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&to_send).await?;
        w.shutdown().await?;
        anyhow::Ok(())
    });
    let mut back = Vec::new();
    tokio::time::timeout(DEADLINE, r.read_to_end(&mut back)).await.context("echo timed out")??;
    writer.await??;
    assert_eq!(back.len(), data.len());
    assert!(back == data, "echoed bytes differ");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_reports_exit_status_and_separates_stderr() -> Result<()> {
    if !have("ssh") {
        return Ok(());
    }
    let h = Harness::start().await?;
    let out = output(h.ssh(&[], Some("echo out; echo err >&2; pwd; exit 7"))).await?;
    assert_eq!(out.status.code(), Some(7), "{out:?}");
    let dir = std::fs::canonicalize(h.dir.path())?;
    assert_eq!(String::from_utf8_lossy(&out.stdout), format!("out\n{}\n", dir.display()));
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");

    let stats = h.server.stats();
    assert!(stats.sessions_total.exec >= 1, "{stats:?}");
    assert!(stats.bytes_in > 0 && stats.bytes_out > 0, "{stats:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exec_passes_stdin_and_client_env() -> Result<()> {
    if !have("ssh") {
        return Ok(());
    }
    let h = Harness::start().await?;
    let mut cmd = h.ssh(
        &["-o", "SetEnv=FOO=bar", "-o", "SendEnv=LC_SSH_TEST"],
        Some("echo $FOO $FROM_CONFIG $LC_SSH_TEST; wc -c"),
    );
    cmd.env("LC_SSH_TEST", "sent").stdin(Stdio::piped());
    let mut child = cmd.spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    stdin.write_all(&[b'x'; 100_000]).await?;
    drop(stdin);
    let out = tokio::time::timeout(DEADLINE, child.wait_with_output()).await??;
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut lines = stdout.lines();
    assert_eq!(lines.next(), Some("bar cfgval sent"));
    assert_eq!(lines.next().map(str::trim), Some("100000"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pty_exec_sees_a_terminal_and_term() -> Result<()> {
    if !have("ssh") {
        return Ok(());
    }
    let h = Harness::start().await?;
    let mut cmd = h.ssh(&["-tt"], Some("tty; echo TERM=$TERM; exit 3"));
    cmd.env("TERM", "xterm-256color");
    let out = output(cmd).await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("/dev/pts/"), "{stdout:?}");
    assert!(stdout.contains("TERM=xterm-256color"), "{stdout:?}");
    assert_eq!(out.status.code(), Some(3));
    assert!(h.server.stats().sessions_total.shell >= 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interactive_shell_runs_typed_commands() -> Result<()> {
    if !have("ssh") {
        return Ok(());
    }
    let h = Harness::start().await?;
    let mut cmd = h.ssh(&["-tt"], None);
    cmd.stdin(Stdio::piped());
    let mut child: Child = cmd.spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let mut stdout = child.stdout.take().context("stdout")?;
    stdin.write_all(b"stty size; echo hello-$((6*7))\n").await?;
    let seen = read_until(&mut stdout, "hello-42").await?;
    assert!(seen.contains("hello-42"));
    stdin.write_all(b"exit 5\n").await?;
    let status = tokio::time::timeout(DEADLINE, child.wait()).await??;
    assert_eq!(status.code(), Some(5));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sftp_put_and_get_32_mib() -> Result<()> {
    if !have("ssh") || !have("sftp") {
        return Ok(());
    }
    let h = Harness::start().await?;
    let local = tempfile::tempdir()?;
    let src = local.path().join("src.bin");
    let mut data = vec![0u8; 32 << 20];
    rand::rngs::StdRng::seed_from_u64(1).fill_bytes(&mut data);
    std::fs::write(&src, &data)?;
    let want = hex::encode(Sha256::digest(&data));
    let back = local.path().join("back.bin");
    let batch = local.path().join("batch");
    // `uploaded.bin` is relative: it must land in the server's directory.
    std::fs::write(
        &batch,
        format!(
            "put {} uploaded.bin\nmkdir sub\nrename uploaded.bin sub/up.bin\nls -l sub\nget sub/up.bin {}\n",
            src.display(),
            back.display()
        ),
    )?;
    let mut cmd = Command::new("sftp");
    cmd.args(h.common_opts())
        .args(["-P", &h.port.to_string(), "-b"])
        .arg(&batch)
        .arg("127.0.0.1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    let out = output(cmd).await?;
    assert!(out.status.success(), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("up.bin"));
    let remote = h.dir.path().join("sub/up.bin");
    assert_eq!(sha256_file(&remote)?, want, "uploaded file differs");
    assert_eq!(sha256_file(&back)?, want, "downloaded file differs");
    assert!(h.server.stats().sessions_total.sftp >= 1);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scp_copies_with_both_protocols() -> Result<()> {
    if !have("ssh") || !have("scp") {
        return Ok(());
    }
    let h = Harness::start().await?;
    let local = tempfile::tempdir()?;
    let src = local.path().join("src.bin");
    let mut data = vec![0u8; 1 << 20];
    rand::rngs::StdRng::seed_from_u64(3).fill_bytes(&mut data);
    std::fs::write(&src, &data)?;
    // -O is the legacy protocol: the client execs `scp -t` on the server.
    for (flag, name) in [("-O", "legacy.bin"), ("-s", "sftp.bin")] {
        let mut cmd = Command::new("scp");
        cmd.arg(flag)
            .args(h.common_opts())
            .args(["-P", &h.port.to_string()])
            .arg(&src)
            .arg(format!("127.0.0.1:{name}"))
            .stdin(Stdio::null())
            .kill_on_drop(true);
        let out = output(cmd).await?;
        assert!(out.status.success(), "scp {flag}: {out:?}");
        assert!(std::fs::read(h.dir.path().join(name))? == data, "scp {flag} corrupted the file");
    }
    Ok(())
}

fn sha256_file(p: &Path) -> Result<String> {
    Ok(hex::encode(Sha256::digest(
        std::fs::read(p).with_context(|| format!("read {}", p.display()))?,
    )))
}

/// Runs `ssh FLAG 127.0.0.1:PORT:127.0.0.1:ECHO` and pushes data through the
/// forwarded port twice.
///
/// OpenSSH sets up `-L` listeners and sends `tcpip-forward` requests (which
/// the server binds before answering) before it opens the session, so
/// "ready" on stdout means the port listens; `cat` keeps the session open.
async fn forward_round_trips(flag: &str) -> Result<Harness> {
    let h = Harness::start().await?;
    let (echo, _echo) = echo_server().await?;
    let port = free_port().await?;
    let spec = format!("127.0.0.1:{port}:127.0.0.1:{echo}");
    let mut cmd = h.ssh(&[flag, &spec, "-o", "ExitOnForwardFailure=yes"], Some("echo ready; cat"));
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn()?;
    let _stdin = child.stdin.take();
    read_until(child.stdout.as_mut().context("stdout")?, "ready").await?;
    echo_round_trip(port).await?;
    echo_round_trip(port).await?;
    Ok(h)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_forward_carries_data_both_ways() -> Result<()> {
    if !have("ssh") {
        return Ok(());
    }
    let h = forward_round_trips("-L").await?;
    assert_eq!(h.server.stats().sessions_total.local_forward, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remote_forward_carries_data_both_ways() -> Result<()> {
    if !have("ssh") {
        return Ok(());
    }
    let h = forward_round_trips("-R").await?;
    assert_eq!(h.server.stats().sessions_total.remote_forward, 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agent_forwarding_reaches_the_clients_agent() -> Result<()> {
    if !have("ssh") || !have("ssh-agent") || !have("ssh-add") || !have("ssh-keygen") {
        return Ok(());
    }
    let h = Harness::start().await?;
    let tmp = tempfile::tempdir()?;
    let sock = tmp.path().join("agent.sock");
    let mut agent = Command::new("ssh-agent")
        .arg("-D")
        .arg("-a")
        .arg(&sock)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    // With -D the agent prints its environment once it listens.
    let mut lines = BufReader::new(agent.stdout.take().context("stdout")?).lines();
    tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .context("ssh-agent did not start")??;
    let key = add_key(tmp.path(), &sock).await?;

    let ident = format!("IdentityAgent={}", sock.display());
    let mut cmd = h.ssh(&["-A", "-o", &ident], Some("echo sock=$SSH_AUTH_SOCK; ssh-add -l"));
    cmd.env("SSH_AUTH_SOCK", &sock);
    let out = output(cmd).await?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(stdout.contains("sock=/"), "{stdout}");
    assert!(stdout.contains(&key), "agent key {key} not listed: {stdout}");
    assert!(h.server.stats().sessions_total.agent_forward >= 1);
    Ok(())
}

/// Generates a key, adds it to the agent at `sock`, returns its fingerprint.
async fn add_key(dir: &Path, sock: &Path) -> Result<String> {
    let key = dir.join("id_ed25519");
    let gen = output({
        let mut c = Command::new("ssh-keygen");
        c.args(["-q", "-t", "ed25519", "-N", "", "-C", "ssh-test", "-f"]).arg(&key);
        c
    })
    .await?;
    assert!(gen.status.success(), "{gen:?}");
    let add = output({
        let mut c = Command::new("ssh-add");
        c.arg(&key).env("SSH_AUTH_SOCK", sock);
        c
    })
    .await?;
    assert!(add.status.success(), "{add:?}");
    let fp = output({
        let mut c = Command::new("ssh-keygen");
        c.arg("-lf").arg(&key);
        c
    })
    .await?;
    let line = String::from_utf8_lossy(&fp.stdout).into_owned();
    Ok(line.split_whitespace().nth(1).context("no fingerprint")?.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_keepalives_are_answered() -> Result<()> {
    if !have("ssh") {
        return Ok(());
    }
    let h = Harness::start().await?;
    // With one-second keepalives and a count of one, a server that ignored
    // keepalive@openssh.com would be disconnected before the command ends.
    let out = output(h.ssh(
        &["-o", "ServerAliveInterval=1", "-o", "ServerAliveCountMax=1"],
        Some("sleep 3; echo survived"),
    ))
    .await?;
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "survived\n");
    Ok(())
}
