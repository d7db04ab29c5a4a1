//! Group `ssh`: wall time of `coder ssh WS -- true` (OpenSSH with `coder ssh
//! --stdio` as ProxyCommand: API lookup, joining the mesh, QUIC to the agent,
//! SSH handshake, exec) against `ssh 127.0.0.1 true` to a private OpenSSH
//! `sshd` on a high port (its own host key, config and client key in a temp
//! directory), interleaved so noise hits both alike.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::deployment::{Deployment, WORKSPACE};
use crate::plot::{self, Bar};
use crate::report::{Better, Goal, Plot, Row, Section};
use crate::stats::{median, ms, percentile};
use crate::Ctx;

const SSHD: &str = "/usr/sbin/sshd";

/// The account the OpenSSH baseline logs in as when the bench runs as root: a
/// system user made for the bench, with an empty home, so that no rc file of
/// its own runs (root's `~/.bashrc` on a developer machine can cost more than
/// the whole session).
pub const BENCH_USER: &str = "coder-bench-ssh";
const BENCH_HOME: &str = "/var/lib/coder-bench-ssh";

/// Who the baseline's sessions log in as.
#[derive(Debug, Clone)]
pub struct Login {
    pub user: String,
    pub shell: PathBuf,
    /// The bench's own user with an empty home (else the current user, rc files and all).
    pub dedicated: bool,
}

impl Login {
    /// As root: [`BENCH_USER`] with login shell `shell` (made if missing; its
    /// home must be empty). Otherwise the current user, whose shell and rc
    /// files are what they are.
    pub fn for_bench(shell: &Path) -> anyhow::Result<Self> {
        if !is_root() {
            let user = tests::run_ok(Command::new("id").arg("-un"))?.trim().to_owned();
            let shell = std::env::var_os("SHELL").map_or_else(|| "/bin/sh".into(), PathBuf::from);
            return Ok(Self { user, shell, dedicated: false });
        }
        let shell_arg = shell.to_str().context("shell path is not UTF-8")?;
        let exists = Command::new("id")
            .arg(BENCH_USER)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        // Password `*`: none, yet not locked (`!`), which OpenSSH without PAM
        // would hold against key logins too.
        if exists {
            tests::run_ok(Command::new("usermod").args(["-s", shell_arg, "-p", "*", BENCH_USER]))?;
        } else {
            tests::run_ok(Command::new("useradd").args([
                "--system",
                "--user-group",
                "--no-create-home",
                "--home-dir",
                BENCH_HOME,
                "--shell",
                shell_arg,
                "--password",
                "*",
                BENCH_USER,
            ]))?;
        }
        std::fs::create_dir_all(BENCH_HOME)?;
        tests::run_ok(Command::new("chown").arg(format!("{BENCH_USER}:")).arg(BENCH_HOME))?;
        let entries: Vec<String> = std::fs::read_dir(BENCH_HOME)?
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        if !entries.is_empty() {
            bail!("{BENCH_HOME} ({BENCH_USER}'s home) must be empty; it holds {entries:?}");
        }
        Ok(Self { user: BENCH_USER.to_owned(), shell: shell.to_owned(), dedicated: true })
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .and_then(|v| v.split_whitespace().nth(1))
            .is_some_and(|euid| euid == "0")
    })
}

/// A private `sshd -D` on 127.0.0.1, killed on drop.
pub struct Sshd {
    child: Child,
    dir: tempfile::TempDir,
    port: u16,
    pub login: Login,
}

impl Sshd {
    /// Logging in as [`Login::for_bench`] with `shell`.
    pub fn start(shell: &Path) -> anyhow::Result<Self> {
        if !std::path::Path::new(SSHD).is_file() {
            bail!("{SSHD} is not installed (apt-get install openssh-server)");
        }
        let login = Login::for_bench(shell)?;
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
        // sshd reads authorized_keys as the user logging in.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o711))?;
        std::fs::set_permissions(p("authorized_keys"), std::fs::Permissions::from_mode(0o644))?;
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
        let mut sshd = Self { child, dir, port, login };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Ok(Some(status)) = sshd.child.try_wait() {
                bail!("sshd exited ({status}): {}", sshd.log());
            }
            if Instant::now() > deadline {
                bail!("sshd did not listen within 10 s");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // A session proves key authentication works, not just the listener.
        let who = tests::run_ok(&mut sshd.ssh(&[], &["id -un"]))
            .with_context(|| format!("ssh to the private sshd; its log: {}", sshd.log()))?;
        anyhow::ensure!(
            who.trim() == sshd.login.user,
            "logged in as {who:?}, not {}",
            sshd.login.user
        );
        Ok(sshd)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("sshd.log")).unwrap_or_default()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("client_key")
    }

    /// `ssh` with options `opts` to this server, as [`Sshd::login`], running `args`.
    pub fn ssh(&self, opts: &[&str], args: &[&str]) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.args(["-F", "none", "-p", &self.port.to_string(), "-l", &self.login.user, "-i"])
            .arg(self.key())
            .args(opts)
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

/// What `ssh -v` says was negotiated: key exchange, host key, authentication.
#[derive(Debug, Default, PartialEq)]
struct Handshake {
    kex: String,
    host_key: String,
    auth: String,
}

impl Handshake {
    /// From the debug output of `ssh -v`.
    fn parse(stderr: &str) -> Self {
        let mut h = Handshake::default();
        for line in stderr.lines() {
            let line = line.trim_start_matches("debug1: ");
            if let Some(v) = line.strip_prefix("kex: algorithm: ") {
                h.kex = v.trim().to_owned();
            } else if let Some(v) = line.strip_prefix("kex: host key algorithm: ") {
                h.host_key = v.trim().to_owned();
            } else if line.starts_with("Authenticated to ") {
                if let Some((_, m)) = line.split_once(" using \"") {
                    h.auth = m.trim_end_matches(['"', '.']).to_owned();
                }
            }
        }
        h
    }

    fn words(&self) -> String {
        let or = |s: &str| if s.is_empty() { "?".to_owned() } else { format!("`{s}`") };
        format!(
            "key exchange {}, host key {}, authentication {}",
            or(&self.kex),
            or(&self.host_key),
            or(&self.auth)
        )
    }
}

/// Runs `cmd` (whose `ssh` runs with `-v`) and reads the handshake from its stderr.
fn handshake(cmd: &mut Command) -> anyhow::Result<Handshake> {
    let out = cmd.output().with_context(|| format!("run {cmd:?}"))?;
    anyhow::ensure!(out.status.success(), "{cmd:?} failed ({})", out.status);
    Ok(Handshake::parse(&String::from_utf8_lossy(&out.stderr)))
}

/// `coder ARGS` whose `ssh` is `ssh -v` (a wrapper first on its PATH).
fn coder_with_verbose_ssh(dep: &Deployment, dir: &Path, args: &[&str]) -> anyhow::Result<Command> {
    let real = tests::run_ok(Command::new("sh").args(["-c", "command -v ssh"]))?;
    let wrapper = dir.join("ssh");
    std::fs::write(&wrapper, format!("#!/bin/sh\nexec {} -v \"$@\"\n", real.trim()))?;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))?;
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut paths = vec![dir.to_owned()];
    paths.extend(std::env::split_paths(&path));
    let mut cmd = dep.coder(args)?;
    cmd.env("PATH", std::env::join_paths(paths)?);
    Ok(cmd)
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
             *baseline*: `ssh -l USER 127.0.0.1 true` to a private OpenSSH sshd (ed25519 \
             keys, no PAM) on a high port, logging in as a user whose login shell is the \
             shell the agent runs commands with and whose home is empty, so neither side \
             runs an rc file of its own."
        ),
    );
    // The shell the agent runs `-c COMMAND` with, which the baseline's user gets too.
    let shell = dep
        .coder_ok(&["ssh", WORKSPACE, "--", "printf %s \"$0\""])
        .context("ask the agent for its shell")?;
    let shell = PathBuf::from(shell.trim());
    let sshd = match Sshd::start(&shell) {
        Ok(s) => Some(s),
        Err(e) => {
            section.notes.push(format!("OpenSSH baseline skipped: {e:#}"));
            None
        }
    };
    let ours_cmd = || dep.coder(&["ssh", WORKSPACE, "--", "true"]);
    time(&mut ours_cmd()?).context("warm-up coder ssh")?;
    if let Some(s) = &sshd {
        time(&mut s.ssh(&[], &["true"]))?;
    }
    let (mut ours, mut base) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        ours.push(ms(time(&mut ours_cmd()?)?));
        if let Some(s) = &sshd {
            base.push(ms(time(&mut s.ssh(&[], &["true"]))?));
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
    if let Some(s) = &sshd {
        row = row
            .baseline(
                format!("`ssh -l {} 127.0.0.1 true` (OpenSSH sshd)", s.login.user),
                median(&base),
            )
            .goal(Goal::RatioAtMost(1.0));
    }
    section.rows.push(row);

    // What each side does, as negotiated in one more verbose session each.
    let wrapper = tempfile::Builder::new().prefix("bench-ssh-v-").tempdir()?;
    let ours_hs = handshake(&mut coder_with_verbose_ssh(
        dep,
        wrapper.path(),
        &["ssh", WORKSPACE, "--", "true"],
    )?)
    .context("coder ssh with ssh -v")?;
    section.notes.push(format!(
        "*ours*, per session: on the client, `coder ssh` (looks the workspace up) runs \
         OpenSSH's `ssh`, which starts `coder ssh --stdio` as its ProxyCommand (looks the \
         workspace up again, joins the mesh, dials the agent over QUIC); {} (the mesh \
         connection already proved who the client is); the agent is one long-lived process \
         that serves the session itself and starts only `{} -c true` as its own user, \
         not from sshd, so the shell reads no rc file.",
        ours_hs.words(),
        shell.display(),
    ));
    if let Some(s) = &sshd {
        let base_hs = handshake(&mut s.ssh(&["-v"], &["true"])).context("ssh -v")?;
        let user = if s.login.dedicated {
            format!(
                "`{}`, a system user the bench made, whose login shell is `{}` (as the \
                 agent's) and whose home is empty",
                s.login.user,
                s.login.shell.display()
            )
        } else {
            format!(
                "`{}`, the user the bench runs as (not root, so it could not make a user \
                 without rc files: those of `{}` run)",
                s.login.user,
                s.login.shell.display()
            )
        };
        let startup = if s.login.shell.ends_with("bash") {
            "bash started by sshd reads `/etc/bash.bashrc`, which returns at once when not \
             interactive, and `~/.bashrc`"
        } else {
            "a shell run with `-c` reads no startup file"
        };
        section.notes.push(format!(
            "*baseline*, per session: the client connects over TCP; {}; `sshd` forks and \
             re-executes itself for each connection (a privileged monitor and an \
             unprivileged child before authentication), then forks the session as {user}, \
             which runs `{} -c true` ({startup}).",
            base_hs.words(),
            s.login.shell.display(),
        ));
    }
    let mut bars = vec![Bar { label: "coder ssh WS -- true", value: median(&ours), ours: true }];
    if sshd.is_some() {
        bars.push(Bar { label: "ssh 127.0.0.1 true (OpenSSH)", value: median(&base), ours: false });
    }
    let (file, md) = ctx.plot_file("ssh");
    plot::bars(&file, "Non-interactive SSH session, wall time (lower is better)", "ms", &bars)?;
    section.plots.push(Plot { file: md, caption: "SSH session wall time".into() });
    Ok(section)
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn the_handshake_is_read_from_ssh_v() {
        let stderr = "OpenSSH_9.2p1\r\ndebug1: kex: algorithm: curve25519-sha256\r\n\
                      debug1: kex: host key algorithm: ssh-ed25519\r\n\
                      Authenticated to 127.0.0.1 ([127.0.0.1]:2222) using \"publickey\".\r\n";
        let h = Handshake::parse(&stderr.replace('\r', ""));
        assert_eq!(h.kex, "curve25519-sha256");
        assert_eq!(h.host_key, "ssh-ed25519");
        assert_eq!(h.auth, "publickey");
    }
}
