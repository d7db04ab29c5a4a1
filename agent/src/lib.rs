//! The workspace agent: SSH server, port forwarding, startup script, liveness.
mod agent;
pub mod apphealth;
pub mod environ;
mod ip;
pub mod metadata;
pub mod ports;
mod services;
pub mod ssh;
pub mod startup;

pub use agent::{run, AgentConfig, AgentError};
