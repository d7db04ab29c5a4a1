//! The workspace agent: SSH server, port forwarding, scripts, liveness.
mod agent;
pub mod apphealth;
pub mod environ;
mod ip;
pub mod metadata;
pub mod ports;
pub mod scripts;
mod services;
pub mod ssh;
pub mod startup;

pub use agent::{run, AgentConfig, AgentError};
