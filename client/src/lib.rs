//! The `coder` CLI: commands ([`cli`]), the CLI's configuration
//! ([`config`]) and the IP tunnel ([`iptunnel`]). What it shares with
//! `coderd` and the agent (API types, clients, mesh sessions) is in
//! `codersdk`.

// Output goes through `cli::output`'s `outln!`/`out!`, which return the
// error `println!` would panic with (a closed pipe ends `coder` quietly).
#![deny(clippy::print_stdout)]

pub mod cli;
pub mod config;
pub mod iptunnel;
