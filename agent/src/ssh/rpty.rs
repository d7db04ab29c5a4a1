//! Reconnecting PTYs for the web terminal: a shell keyed by an id the
//! browser picks, which outlives the stream that started it, so a page
//! reload re-attaches to the same shell and sees its recent output again.
//!
//! Stream (after the `pty:<id>:<rows>:<cols>` header): the agent writes the
//! shell's output, first the last [`REPLAY_BYTES`] it printed, then live.
//! The peer writes frames `kind:u8 len:u16be payload`: kind 0 is input,
//! kind 1 a resize (`rows:u16be cols:u16be`). Unknown kinds are skipped.
//! A shell nobody is attached to for [`IDLE_TIMEOUT`] is hung up.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::broadcast;

use super::process::{CommandSpec, Running};
use super::pty::{pty_size, spawn_pty, PtyRequest};

/// Output kept for a re-attaching client.
pub const REPLAY_BYTES: usize = 64 * 1024;
/// A detached shell is hung up after this long.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(5 * 60);
use mesh::pty_frame::{INPUT as FRAME_INPUT, RESIZE as FRAME_RESIZE};

/// The shells of one agent, by id.
#[derive(Clone, Default)]
pub(crate) struct Registry {
    shells: Arc<Mutex<HashMap<u128, Arc<Shell>>>>,
}

struct Shell {
    running: Mutex<Running>,
    output: Mutex<Output>,
    attached: Mutex<(usize, u64)>,
}

/// Recent output and the live feed, behind one lock so a new client gets
/// the replay and the feed with no byte lost or doubled between them.
struct Output {
    recent: VecDeque<u8>,
    live: broadcast::Sender<Bytes>,
    exited: bool,
}

impl Registry {
    fn get_or_spawn(
        &self,
        id: u128,
        spec: &CommandSpec,
        rows: u16,
        cols: u16,
    ) -> Result<Arc<Shell>, String> {
        let mut shells = self.shells.lock().map_err(|_| "registry poisoned".to_owned())?;
        if let Some(s) = shells.get(&id) {
            return Ok(s.clone());
        }
        let (sink, mut source) = tokio::io::duplex(64 * 1024);
        let request = PtyRequest {
            term: "xterm-256color".into(),
            size: pty_size(u32::from(cols), u32::from(rows), 0, 0),
        };
        let running = spawn_pty(spec, &request, sink).map_err(|e| e.to_string())?;
        let (live, _) = broadcast::channel(256);
        let shell = Arc::new(Shell {
            running: Mutex::new(running),
            output: Mutex::new(Output { recent: VecDeque::new(), live, exited: false }),
            attached: Mutex::new((0, 0)),
        });
        shells.insert(id, shell.clone());
        // The pump ends when the shell's PTY hangs up; then the shell is gone.
        let (pump_shell, registry) = (shell.clone(), self.clone());
        tokio::spawn(async move {
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                let n = match source.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                let chunk = Bytes::copy_from_slice(buf.get(..n).unwrap_or_default());
                if let Ok(mut out) = pump_shell.output.lock() {
                    out.recent.extend(chunk.iter());
                    let excess = out.recent.len().saturating_sub(REPLAY_BYTES);
                    out.recent.drain(..excess);
                    let _ = out.live.send(chunk);
                }
            }
            if let Ok(mut out) = pump_shell.output.lock() {
                out.exited = true;
                // Dropping the sender ends every attached client's feed.
                let (closed, _) = broadcast::channel(1);
                out.live = closed;
            }
            registry.remove(id, &pump_shell);
        });
        Ok(shell)
    }

    fn remove(&self, id: u128, shell: &Arc<Shell>) {
        if let Ok(mut shells) = self.shells.lock() {
            if shells.get(&id).is_some_and(|s| Arc::ptr_eq(s, shell)) {
                shells.remove(&id);
            }
        }
    }

    /// How many shells are alive (for tests and stats).
    pub(crate) fn len(&self) -> usize {
        self.shells.lock().map(|s| s.len()).unwrap_or(0)
    }

    /// Attaches a stream to shell `id`, starting it if needed.
    pub(crate) async fn serve<R, W>(
        &self,
        spec: &CommandSpec,
        id: u128,
        rows: u16,
        cols: u16,
        mut recv: R,
        mut send: W,
    ) where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        let shell = match self.get_or_spawn(id, spec, rows, cols) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot start a terminal");
                let _ = send.write_all(format!("cannot start a shell: {e}\r\n").as_bytes()).await;
                return;
            }
        };
        let generation = match shell.attached.lock() {
            Ok(mut a) => {
                a.0 += 1;
                a.1 += 1;
                a.1
            }
            Err(_) => return,
        };
        if let Ok(r) = shell.running.lock() {
            r.resize(pty_size(u32::from(cols), u32::from(rows), 0, 0));
        }
        let (replay, mut feed, exited) = match shell.output.lock() {
            Ok(out) => {
                (out.recent.iter().copied().collect::<Vec<u8>>(), out.live.subscribe(), out.exited)
            }
            Err(_) => return,
        };
        let down = async {
            if send.write_all(&replay).await.is_err() || exited {
                return;
            }
            loop {
                match feed.recv().await {
                    Ok(chunk) => {
                        if send.write_all(&chunk).await.is_err() {
                            return;
                        }
                    }
                    // A slow client skips what it missed rather than stall the shell.
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                }
            }
        };
        let up = async {
            loop {
                let mut head = [0u8; 3];
                if recv.read_exact(&mut head).await.is_err() {
                    return;
                }
                let [kind, hi, lo] = head;
                let mut payload = vec![0u8; usize::from(u16::from_be_bytes([hi, lo]))];
                if recv.read_exact(&mut payload).await.is_err() {
                    return;
                }
                let input = match shell.running.lock() {
                    Ok(r) => {
                        if kind == FRAME_RESIZE {
                            if let [r0, r1, c0, c1] = payload[..] {
                                let (rows, cols) =
                                    (u16::from_be_bytes([r0, r1]), u16::from_be_bytes([c0, c1]));
                                r.resize(pty_size(u32::from(cols), u32::from(rows), 0, 0));
                            }
                        }
                        r.input.clone()
                    }
                    Err(_) => return,
                };
                if kind == FRAME_INPUT {
                    let Some(input) = input else { return };
                    if input.send(Bytes::from(payload)).await.is_err() {
                        return;
                    }
                }
            }
        };
        // Either side ending detaches this client; the shell stays.
        tokio::select! {
            _ = down => {}
            _ = up => {}
        }
        let _ = send.shutdown().await;
        self.detach(id, shell, generation);
    }

    fn detach(&self, id: u128, shell: Arc<Shell>, generation: u64) {
        let now_unattached = match shell.attached.lock() {
            Ok(mut a) => {
                a.0 = a.0.saturating_sub(1);
                a.0 == 0
            }
            Err(_) => false,
        };
        if !now_unattached {
            return;
        }
        let registry = self.clone();
        tokio::spawn(async move {
            tokio::time::sleep(IDLE_TIMEOUT).await;
            let idle =
                shell.attached.lock().map(|a| a.0 == 0 && a.1 == generation).unwrap_or(false);
            if idle {
                tracing::debug!(id = format!("{id:032x}"), "hanging up an idle terminal");
                // The pump sees the hang-up and removes the shell.
                if let Ok(r) = shell.running.lock() {
                    r.signal(&russh::Sig::HUP);
                }
                registry.remove(id, &shell);
            }
        });
    }
}
