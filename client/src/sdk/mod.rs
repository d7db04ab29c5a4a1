//! The SDK: API types and an HTTP client for `coderd`'s `/api/v2`.
//!
//! Used by the `coder` CLI, by `coder-agent`, and by tests.

mod http;
mod types;

pub use http::{
    Client, SdkError, SECURE_SESSION_TOKEN_COOKIE, SESSION_TOKEN_COOKIE, SESSION_TOKEN_HEADER,
};
pub use types::*;
