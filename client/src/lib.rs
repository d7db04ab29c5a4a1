//! The `coder` CLI and the SDK (API types, HTTP client) that the agent and
//! the coordinator share.

pub mod cli;
pub mod config;
pub mod coordination;
pub mod iptunnel;
pub mod meshnet;
pub mod runtime;
pub mod sdk;
