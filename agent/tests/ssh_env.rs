//! What a workspace process's environment holds: exactly the server's
//! configured environment plus the session's own variables, never the agent's
//! process environment (its token, the provisioner's `TF_*`, `OLDPWD`), on
//! every spawn path: `exec` on pipes, `exec` on a PTY, and the web terminal's
//! reconnecting PTY.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use agent::ssh::{Peer, SshConfig, SshServer};
use russh::client;
use russh::keys::PublicKeyOrCertificate;
use russh::ChannelMsg;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const DEADLINE: Duration = Duration::from_secs(20);

/// Set in the test process, as a provisioner sets them in the agent's.
const POISON: &[(&str, &str)] = &[
    ("CODER_AGENT_TOKEN", "leaked-agent-token-5f1c"),
    ("TF_LOG", "trace"),
    ("TF_CLI_CONFIG_FILE", "/jobs/1/cli/config.tfrc"),
    ("CODER_PARAMETER_X", "leaked-parameter"),
    ("OLDPWD", "/var/lib/coder/provisioner/job/template"),
];

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

fn assert_clean(what: &str, output: &str) {
    for (name, value) in POISON {
        assert!(
            !output.contains(&format!("{name}=")) && !output.contains(value),
            "{what} leaked {name}:\n{output}"
        );
    }
    assert!(!output.contains("TF_"), "{what} leaked a TF_ variable:\n{output}");
    assert!(output.contains("ONLY_THIS=configured"), "{what} lost the configured env:\n{output}");
}

async fn exec(session: &client::Handle<AcceptAny>, command: &str, pty: bool) -> String {
    let mut ch = session.channel_open_session().await.unwrap();
    if pty {
        ch.request_pty(true, "vt100", 200, 40, 0, 0, &[]).await.unwrap();
    }
    ch.exec(true, command).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        while let Some(msg) = ch.wait().await {
            if let ChannelMsg::Data { data } = msg {
                out.extend_from_slice(&data);
            }
        }
    })
    .await
    .expect("exec timed out");
    String::from_utf8_lossy(&out).into_owned()
}

/// The web terminal: types `env` into a new reconnecting PTY and reads until
/// the end marker (written so that the echoed input does not contain it).
async fn web_terminal_env(srv: &SshServer) -> String {
    let (mut client_send, server_recv) = tokio::io::duplex(1 << 16);
    let (server_send, mut client_recv) = tokio::io::duplex(1 << 16);
    let pty = {
        let srv = srv.clone();
        tokio::spawn(async move { srv.serve_pty(7, 40, 200, server_recv, server_send).await })
    };
    let input = b"env; echo END-OF-''ENV\n";
    let mut frame = vec![0u8];
    frame.extend_from_slice(&u16::try_from(input.len()).unwrap().to_be_bytes());
    frame.extend_from_slice(input);
    client_send.write_all(&frame).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(DEADLINE, async {
        let mut buf = [0u8; 4096];
        while !String::from_utf8_lossy(&out).contains("END-OF-ENV") {
            let n = client_recv.read(&mut buf).await.unwrap();
            assert!(n > 0, "terminal closed: {}", String::from_utf8_lossy(&out));
            out.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("no env from the web terminal");
    drop(client_send);
    pty.abort();
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn sessions_and_terminals_get_only_the_configured_environment() {
    // Before any thread starts: the environment is process-wide.
    for (name, value) in POISON {
        std::env::set_var(name, value);
    }
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build();
    rt.unwrap().block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = SshConfig::new(dir.path());
        config.shell = Some("/bin/sh".into());
        config.env = vec![
            ("PATH".into(), agent::environ::DEFAULT_PATH.into()),
            ("ONLY_THIS".into(), "configured".into()),
        ];
        let srv = SshServer::new(config);

        let (stream, server_end) = tokio::io::duplex(1 << 16);
        let addrs: (SocketAddr, SocketAddr) =
            ("100.64.0.7:0".parse().unwrap(), "100.64.0.1:22".parse().unwrap());
        let peer = Peer { name: "test-peer".into(), addrs: Some(addrs) };
        let server = srv.clone();
        let _task = tokio::spawn(async move { server.serve_peer(server_end, peer).await });
        let config = Arc::new(client::Config::default());
        let mut session = client::connect_stream(config, stream, AcceptAny).await.unwrap();
        assert!(session.authenticate_none("coder").await.unwrap().success());

        let piped = exec(&session, "env", false).await;
        assert_clean("exec", &piped);
        assert!(piped.contains("SSH_CONNECTION=100.64.0.7 0 100.64.0.1 22"), "{piped}");
        assert!(piped.contains("SSH_CLIENT=100.64.0.7 0 22"), "{piped}");

        let tty = exec(&session, "env", true).await;
        assert_clean("exec on a pty", &tty);
        assert!(tty.contains("TERM=vt100") && tty.contains("SSH_TTY=/dev/"), "{tty}");

        let web = web_terminal_env(&srv).await;
        assert_clean("the web terminal", &web);
    });
}

#[test]
fn the_default_configuration_passes_no_secrets() {
    for (name, value) in POISON {
        std::env::set_var(name, value);
    }
    let env = SshConfig::default().env;
    let text: String = env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
    for (name, value) in POISON {
        assert!(!text.contains(name) && !text.contains(value), "{name} passed:\n{text}");
    }
    assert!(env.iter().any(|(k, _)| k == "PATH"), "{text}");
}
