//! The `coder` CLI: commands ([`cli`]), the CLI's configuration
//! ([`config`]) and the IP tunnel ([`iptunnel`]). What it shares with
//! `coderd` and the agent (API types, clients, mesh sessions) is in
//! `codersdk`.

pub mod cli;
pub mod config;
pub mod iptunnel;
