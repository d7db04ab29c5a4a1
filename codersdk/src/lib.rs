//! What both sides of `coderd` speak, in one leaf crate: `coderd`,
//! `coder-agent` and the `coder` CLI depend on it, and it on neither of them
//! (Coder's `codersdk`, with its `workspacesdk`).
//!
//! - the `/api/v2` types ([`types`], re-exported at the root) and the HTTP
//!   [`Client`], with the session header and cookie names; user lifecycle
//!   and the audit log have modules of their own, as do schedules;
//! - [`coordination`]: the coordination protocol's messages, its version,
//!   [`coordination::node_id`], and the WebSocket client that speaks it;
//! - [`meshnet`]: a mesh session to workspaces (coordination plus a
//!   [`mesh::MeshEndpoint`]), used by the CLI, the agent and coderd's own peer;
//! - [`runtime`]: the worker-thread rule the binaries share;
//! - [`archive`]: the template archive `coder templates push` uploads.

pub mod archive;
mod audit;
pub mod coordination;
mod http;
pub mod meshnet;
mod oidc;
pub mod runtime;
mod schedule;
mod status;
pub mod types;
mod users;

pub use audit::{AuditLog, AuditLogsResponse};
pub use http::{
    Client, SdkError, SECURE_SESSION_TOKEN_COOKIE, SESSION_TOKEN_COOKIE, SESSION_TOKEN_HEADER,
};
pub use oidc::{AuthMethod, AuthMethods, OidcAuthMethod};
pub use schedule::{
    PutExtendWorkspaceRequest, UpdateTemplateMeta, UpdateWorkspaceAutostartRequest,
    UpdateWorkspaceTtlRequest,
};
pub use types::*;
pub use users::{UpdatePasswordRequest, UpdateRolesRequest};
