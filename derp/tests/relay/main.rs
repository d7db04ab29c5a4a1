//! In-process relay tests: real relays and clients on 127.0.0.1:0.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod abuse;
mod basic;
mod fair;
mod harness;
mod mesh;
mod tls;
