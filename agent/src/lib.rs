//! The workspace agent: SSH server, port forwarding, startup script, liveness.
pub mod ssh;
