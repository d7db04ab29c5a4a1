//! A long-lived SSH session through `coder ssh` that carries a checksummed
//! byte stream, for fault tests: the workspace hashes what it reads
//! (`sha256sum`), the test hashes what it wrote, and [`HashedSession::finish`]
//! compares the two, so a lost, duplicated or reordered byte fails the test.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use sha2::{Digest, Sha256};

/// How much must go through before [`HashedSession::wait_progress`] counts
/// it as progress: more than the pipes and the SSH window buffer.
const PROGRESS_BYTES: u64 = 4 << 20;

/// A running session; killed on drop.
pub struct HashedSession {
    child: Child,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    feeder: Option<JoinHandle<anyhow::Result<String>>>,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
}

impl HashedSession {
    /// Runs `coder` (a `coder` command with its config) as `coder ssh
    /// SSH_ARGS -- <echo a line, then sha256sum>` (`SSH_ARGS`: the workspace,
    /// after flags such as `-v`), waits (up to 60 s) until the workspace
    /// echoes, then feeds it a seeded pseudo-random stream at a few MiB/s
    /// until [`Self::finish`].
    pub fn start(mut coder: Command, ssh_args: &[&str]) -> anyhow::Result<Self> {
        let mut child = coder
            .arg("ssh")
            .args(ssh_args)
            .args(["--", "read l; echo \"$l\"; sha256sum"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn coder ssh")?;
        let mut stdin = child.stdin.take().context("stdin")?;
        let stdout = lines(child.stdout.take().context("stdout")?);
        let stderr = lines(child.stderr.take().context("stderr")?);
        writeln!(stdin, "ready")?;
        match stdout.recv_timeout(Duration::from_secs(60)) {
            Ok(l) if l == "ready" => {}
            other => bail!("the session did not start: {other:?}"),
        }
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let (stop2, sent2) = (stop.clone(), sent.clone());
        let feeder = std::thread::spawn(move || {
            let mut hash = Sha256::new();
            let mut state = 0x2545_f491_4f6c_dd1du64;
            let mut chunk = vec![0u8; 16 * 1024];
            while !stop2.load(Ordering::Relaxed) {
                for b in chunk.iter_mut() {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    *b = state as u8;
                }
                // A write blocks when the session stalls: that shows as no progress.
                stdin.write_all(&chunk).context("the SSH session broke")?;
                hash.update(&chunk);
                sent2.fetch_add(chunk.len() as u64, Ordering::Relaxed);
                // Pacing, not waiting for anything.
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(hex::encode(hash.finalize()))
        });
        Ok(HashedSession { child, stop, sent, feeder: Some(feeder), stdout, stderr })
    }

    /// Bytes written into the session so far.
    pub fn sent(&self) -> u64 {
        self.sent.load(Ordering::Relaxed)
    }

    /// Waits (up to 30 s) until several MiB more went through; `what` names
    /// the moment for the error.
    pub fn wait_progress(&self, what: &str) -> anyhow::Result<()> {
        let since = self.sent();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.sent() < since + PROGRESS_BYTES {
            if Instant::now() > deadline || self.feeder.as_ref().is_some_and(|f| f.is_finished()) {
                bail!("the session stalled {what} ({} bytes in 30 s)", self.sent() - since);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// The next line `coder` wrote to stderr (with `-v`: the path it took).
    pub fn stderr_line(&self, timeout: Duration) -> Option<String> {
        self.stderr.recv_timeout(timeout).ok()
    }

    /// Stops feeding, and checks that the workspace read exactly what was
    /// written; returns the byte count.
    pub fn finish(mut self) -> anyhow::Result<u64> {
        self.stop.store(true, Ordering::Relaxed);
        let feeder = self.feeder.take().context("finished twice")?;
        let want = feeder.join().map_err(|_| anyhow::anyhow!("the feeder panicked"))??;
        let got = self.stdout.recv_timeout(Duration::from_secs(60)).context("no digest")?;
        if got.split_whitespace().next() != Some(want.as_str()) {
            bail!("the workspace read {got:?}, but {want} was written ({} bytes)", self.sent());
        }
        let status = self.child.wait()?;
        if !status.success() {
            bail!("coder ssh exited with {status}");
        }
        Ok(self.sent())
    }
}

impl Drop for HashedSession {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn lines(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}
