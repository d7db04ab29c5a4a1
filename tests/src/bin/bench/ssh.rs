//! Group `ssh`: wall time of `coder ssh WS -- true` (OpenSSH with `coder ssh
//! --stdio` as ProxyCommand: API lookup, joining the mesh, QUIC to the agent,
//! SSH handshake, exec) against `ssh 127.0.0.1 true` to a private OpenSSH
//! `sshd` on a high port (its own host key, config and client key in a temp
//! directory), interleaved so noise hits both alike.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::deployment::{Deployment, WORKSPACE};
use crate::plot::{self, Bar};
use crate::report::{Better, Plot, Row, Section};
use crate::stats::{median, ms, percentile};
use crate::Ctx;

const SSHD: &str = "/usr/sbin/sshd";

/// A private `sshd -D` on 127.0.0.1, killed on drop.
pub struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
}

impl Sshd {
    pub fn start() -> anyhow::Result<Self> {
        if !std::path::Path::new(SSHD).is_file() {
            bail!("{SSHD} is not installed (apt-get install openssh-server)");
        }
        let dir = tempfile::Builder::new().prefix("bench-sshd-").tempdir()?;
        let p = |name: &str| dir.path().join(name);
        for key in ["host_key", "client_key"] {
            tests::run_ok(
                Command::new("ssh-keygen")
                    .args(["-q", "-t", "ed25519", "-N", "", "-f"])
                    .arg(p(key)),
            )?;
        }
        std::fs::copy(p("client_key.pub"), p("authorized_keys"))?;
        // sshd insists on its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        let config = format!(
            "Port {port}\nListenAddress 127.0.0.1\nHostKey {host}\nAuthorizedKeysFile {auth}\n\
             PidFile {pid}\nUsePAM no\nStrictModes no\nPermitRootLogin yes\n\
             PasswordAuthentication no\nKbdInteractiveAuthentication no\n",
            host = p("host_key").display(),
            auth = p("authorized_keys").display(),
            pid = p("sshd.pid").display(),
        );
        std::fs::write(p("sshd_config"), config)?;
        let log = std::fs::File::create(p("sshd.log"))?;
        let child = Command::new(SSHD)
            .args(["-D", "-e", "-f"])
            .arg(p("sshd_config"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .context("spawn sshd")?;
        let mut sshd = Self { child, dir, port };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = sshd.child.try_wait() {
                let log =
                    std::fs::read_to_string(sshd.dir.path().join("sshd.log")).unwrap_or_default();
                bail!("sshd exited ({status}): {log}");
            }
            if Instant::now() > deadline {
                bail!("sshd did not listen within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // A session proves key authentication works, not just the listener.
        tests::run_ok(&mut sshd.ssh(&["true"])).context("ssh to the private sshd")?;
        Ok(sshd)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// `ssh` to this server running `args`.
    pub fn ssh(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(["-F", "none", "-p", &self.port.to_string(), "-i"])
            .arg(self.key())
            .args([
                "-o",
                "IdentitiesOnly=yes",
                "-o",
                "StrictHostKeyChecking=no",
                "-o",
                "UserKnownHostsFile=/dev/null",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
                "127.0.0.1",
            ])
            .args(args);
        cmd
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `cmd` and returns its wall time; fails if it fails.
fn time(cmd: &mut Command) -> anyhow::Result<Duration> {
    let start = Instant::now();
    tests::run_ok(cmd)?;
    Ok(start.elapsed())
}

pub async fn run(ctx: &Ctx, dep: &Deployment) -> anyhow::Result<Section> {
    let reps = if ctx.quick { 2 } else { 21 };
    let mut section = Section::new(
        "SSH session setup (`bench ssh`)",
        &format!(
            "Wall time of a whole non-interactive session, median of {reps} runs after one \
             warm-up each, ours and the baseline interleaved. *ours*: `coder ssh {WORKSPACE} \
             -- true` against the `local` template's agent on this machine (OpenSSH client, \
             `coder ssh --stdio` as ProxyCommand: workspace lookup over the API, joining \
             the mesh, coordinator handshake, QUIC to the agent, SSH handshake, exec). \
             *baseline*: `ssh 127.0.0.1 true` to a private OpenSSH sshd (ed25519 keys, no \
             PAM) on a high port."
        ),
    );
    let sshd = match Sshd::start() {
        Ok(s) => Some(s),
        Err(e) => {
            section.notes.push(format!("OpenSSH baseline skipped: {e:#}"));
            None
        }
    };
    let ours_cmd = || dep.coder(&["ssh", WORKSPACE, "--", "true"]);
    time(&mut ours_cmd()?).context("warm-up coder ssh")?;
    if let Some(s) = &sshd {
        time(&mut s.ssh(&["true"]))?;
    }
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        ours.push(ms(time(&mut ours_cmd()?)?));
        if let Some(s) = &sshd {
            base.push(ms(time(&mut s.ssh(&["true"]))?));
        }
    }
    let fast = ours.iter().filter(|t| **t < 500.0).count();
    let mut row =
        Row::new(format!("`coder ssh {WORKSPACE} -- true`"), median(&ours), "ms", Better::Lower)
            .note(format!(
                "p90 {:.0} ms, min {:.0} ms; {fast} of {} runs under 500 ms",
                percentile(&ours, 90.0),
                percentile(&ours, 0.0),
                ours.len()
            ));
    if sshd.is_some() {
        row = row.baseline("`ssh 127.0.0.1 true` (OpenSSH sshd)", median(&base));
    }
    section.rows.push(row);
    let mut bars = vec![Bar { label: "coder ssh WS -- true", value: median(&ours), ours: true }];
    if sshd.is_some() {
        bars.push(Bar { label: "ssh 127.0.0.1 true (OpenSSH)", value: median(&base), ours: false });
    }
    let (file, md) = ctx.plot_file("ssh.png");
    plot::bars(&file, "Non-interactive SSH session, wall time (lower is better)", "ms", &bars)?;
    section.plots.push(Plot { file: md, caption: "SSH session wall time".into() });
    Ok(section)
}
