//! API types shared by `coderd` (which serves them) and the SDK (which sends them).
//!
//! These are the JSON bodies of `/api/v2`. Field names follow Coder's API so
//! that tooling written against Coder reads them unchanged.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use crate::status::{
    AppHealth, AuditAction, LifecycleState, LogLevel, LoginType, ProvisionerJobStatus,
    ResourceType, Role, Transition, UnknownValue, UserStatus, WorkspaceAgentStatus,
    WorkspaceStatus,
};

/// The body of every error response: what went wrong and what to do.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ApiErrorBody {
    pub message: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct BuildInfo {
    pub version: String,
    pub external_url: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub roles: Vec<Role>,
    pub status: UserStatus,
    /// How the account logs in (`password`, or `oidc`).
    #[serde(default = "password_login")]
    pub login_type: LoginType,
    pub created_at: DateTime<Utc>,
}

fn password_login() -> LoginType {
    LoginType::Password
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateFirstUserRequest {
    pub email: String,
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateFirstUserResponse {
    pub user_id: Uuid,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateUserRequest {
    pub email: String,
    pub username: String,
    pub password: String,
    /// Defaults to `[member]`.
    #[serde(default)]
    pub roles: Vec<Role>,
}

/// Log in with a password. Either `email` or `username` names the user.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct LoginWithPasswordRequest {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub email: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub username: String,
    pub password: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LoginWithPasswordResponse {
    pub session_token: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateTokenRequest {
    pub token_name: String,
    /// Lifetime in seconds; 0 means the deployment default.
    #[serde(default)]
    pub lifetime: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GenerateApiKeyResponse {
    pub key: String,
}

/// A personal API token as listed (the secret is never returned again).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiKey {
    pub id: String,
    pub user_id: Uuid,
    pub token_name: String,
    pub login_type: LoginType,
    pub expires_at: DateTime<Utc>,
    pub last_used: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// `POST /api/v2/files` answer: the file's id (named `hash` as in Coder's API).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadResponse {
    pub hash: Uuid,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProvisionerJob {
    pub id: Uuid,
    pub status: ProvisionerJobStatus,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub canceled_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub error: String,
    #[serde(default)]
    pub error_code: String,
    #[serde(default)]
    pub worker_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionerJobLog {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub stage: String,
    pub level: LogLevel,
    pub output: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateTemplateVersionRequest {
    pub file_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<Uuid>,
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub message: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateVersion {
    pub id: Uuid,
    pub template_id: Option<Uuid>,
    pub name: String,
    pub message: String,
    pub created_at: DateTime<Utc>,
    pub created_by: Uuid,
    pub job: ProvisionerJob,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ParameterOption {
    pub name: String,
    pub value: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TemplateVersionParameter {
    pub name: String,
    pub display_name: String,
    pub description: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub mutable: bool,
    pub default_value: Option<String>,
    pub required: bool,
    pub options: Vec<ParameterOption>,
    pub validation: Option<serde_json::Value>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateTemplateRequest {
    pub name: String,
    pub template_version_id: Uuid,
    #[serde(default)]
    pub display_name: String,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Template {
    pub id: Uuid,
    pub name: String,
    pub display_name: String,
    pub description: String,
    pub active_version_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub created_by: Uuid,
    /// The autostop TTL a new workspace gets (0: none).
    #[serde(default)]
    pub default_ttl_ms: i64,
    /// The longest TTL a workspace may have, and how long a start may run
    /// however busy it is (0: no maximum).
    #[serde(default)]
    pub max_ttl_ms: i64,
    /// Starts by users who are not template admins, and autostarts, build
    /// the active version (`coder templates edit --require-active-version`).
    #[serde(default)]
    pub require_active_version: bool,
    /// An icon's URL (`/`-relative or https; empty: none).
    #[serde(default)]
    pub icon: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UpdateActiveVersionRequest {
    pub id: Uuid,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkspaceBuildParameter {
    pub name: String,
    pub value: String,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct CreateWorkspaceRequest {
    pub name: String,
    pub template_id: Uuid,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_version_id: Option<Uuid>,
    #[serde(default)]
    pub rich_parameter_values: Vec<WorkspaceBuildParameter>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateWorkspaceBuildRequest {
    pub transition: Transition,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_version_id: Option<Uuid>,
    #[serde(default)]
    pub rich_parameter_values: Vec<WorkspaceBuildParameter>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkspaceBuild {
    pub id: Uuid,
    pub workspace_id: Uuid,
    pub template_version_id: Uuid,
    pub build_number: i32,
    pub transition: Transition,
    pub initiator_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub job: ProvisionerJob,
    /// The workspace's state as this build leaves it.
    pub status: WorkspaceStatus,
    /// When the scheduler stops the workspace (a running start build with a
    /// TTL); activity pushes it forward.
    #[serde(default)]
    pub deadline: Option<DateTime<Utc>>,
    /// The latest `deadline` may move to (the template's max TTL).
    #[serde(default)]
    pub max_deadline: Option<DateTime<Utc>>,
    /// Who started it: `initiator` (a user), `autostart` or `autostop`.
    #[serde(default = "initiator")]
    pub reason: String,
}

fn initiator() -> String {
    "initiator".to_owned()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Workspace {
    pub id: Uuid,
    pub name: String,
    pub owner_id: Uuid,
    pub owner_name: String,
    pub template_id: Uuid,
    pub template_name: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub latest_build: WorkspaceBuild,
    /// Autostop after this long running (`None`: manual).
    #[serde(default)]
    pub ttl_ms: Option<i64>,
    /// Autostart schedule, e.g. `9:30 Mon-Fri Europe/Dublin` (`None`: manual).
    #[serde(default)]
    pub autostart_schedule: Option<String>,
    /// The schedule's next start.
    #[serde(default)]
    pub next_start_at: Option<DateTime<Utc>>,
    /// The last time an agent reported activity.
    #[serde(default)]
    pub last_used_at: Option<DateTime<Utc>>,
    /// The latest build's version is not the template's active version:
    /// `coder update` moves it there.
    #[serde(default)]
    pub outdated: bool,
    /// The template's active version (what `coder update` builds).
    #[serde(default)]
    pub template_active_version_id: Uuid,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkspaceApp {
    pub id: Uuid,
    pub slug: String,
    pub display_name: String,
    pub url: String,
    pub command: String,
    pub subdomain: bool,
    pub share: String,
    pub healthcheck: Option<Healthcheck>,
    /// `disabled` when the app has no healthcheck.
    #[serde(default)]
    pub health: AppHealth,
    /// `coder_app.icon`: a `/`-relative or https URL (empty: none).
    #[serde(default)]
    pub icon: String,
}

/// An app's `healthcheck` block: the agent GETs `url` every `interval`
/// seconds; `threshold` consecutive failures make the app unhealthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthcheck {
    pub url: String,
    pub interval: i64,
    pub threshold: i64,
}

/// `PATCH /api/v2/workspaceagents/me/app-health` (Coder's
/// `PostWorkspaceAppHealthsRequest`): the apps whose health changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct PatchAppHealthRequest {
    pub healths: std::collections::BTreeMap<Uuid, AppHealth>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkspaceAgent {
    pub id: Uuid,
    pub name: String,
    pub resource_id: Uuid,
    pub os: String,
    pub architecture: String,
    pub directory: String,
    pub status: WorkspaceAgentStatus,
    pub lifecycle_state: LifecycleState,
    pub first_connected_at: Option<DateTime<Utc>>,
    pub last_connected_at: Option<DateTime<Utc>>,
    pub apps: Vec<WorkspaceApp>,
    /// `blocking` when a script keeps logins waiting until it ends
    /// (`start_blocks_login`, or the agent's own `startup_script_behavior`),
    /// else `non-blocking`: what `coder ssh --wait auto` follows.
    #[serde(default)]
    pub startup_script_behavior: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResourceMetadata {
    pub key: String,
    pub value: String,
    pub sensitive: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WorkspaceResource {
    pub id: Uuid,
    pub job_id: Uuid,
    pub transition: Transition,
    #[serde(rename = "type")]
    pub type_: String,
    pub name: String,
    pub computational: bool,
    pub persistent: bool,
    pub hide: bool,
    pub icon: String,
    pub daily_cost: i32,
    pub metadata: Vec<ResourceMetadata>,
    pub agents: Vec<WorkspaceAgent>,
}

/// The relays peers may use, by region (`GET /api/v2/derp-map`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct RelayMap {
    pub regions: std::collections::BTreeMap<u16, RelayRegion>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RelayRegion {
    pub region_id: u16,
    pub region_code: String,
    pub region_name: String,
    pub nodes: Vec<RelayNode>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RelayNode {
    pub name: String,
    /// The relay endpoint, e.g. `https://relay.example.com/derp`.
    pub url: String,
    /// `host:port` of the region's STUN server, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stun: Option<String>,
}

/// One `coderd` replica of the deployment (`GET /api/v2/replicas`), as the
/// replica that answered sees it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Replica {
    pub id: Uuid,
    pub hostname: String,
    /// Where the other replicas reach its relay (`--derp-server-relay-url`);
    /// empty when it runs no relay.
    pub relay_url: String,
    pub region_id: u16,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub heartbeat_at: DateTime<Utc>,
    /// Heartbeating in time and, for another replica, reachable by the
    /// answering replica's relay mesh.
    pub healthy: bool,
    /// Why it is not healthy; empty when it is.
    #[serde(default)]
    pub error: String,
    /// The replica that answered this request.
    #[serde(default)]
    pub current: bool,
}

/// What an agent learns about itself at start (`GET /api/v2/workspaceagents/me/manifest`).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AgentManifest {
    pub agent_id: Uuid,
    pub agent_name: String,
    pub workspace_id: Uuid,
    pub workspace_name: String,
    pub owner_name: String,
    pub directory: String,
    pub environment_variables: std::collections::BTreeMap<String, String>,
    pub startup_script: String,
    pub metadata: Vec<AgentMetadataDescription>,
    pub apps: Vec<WorkspaceApp>,
    pub relay_map: RelayMap,
    /// Every script the agent runs (`coder_script`s, and the agent's own
    /// `startup_script` and `shutdown_script`), each with its log source.
    #[serde(default)]
    pub scripts: Vec<AgentScript>,
}

/// A script an agent runs: at start, at stop, or on a `cron` schedule
/// (Coder's `WorkspaceAgentScript`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default)]
pub struct AgentScript {
    /// The log source its output is attributed to.
    pub log_source_id: Uuid,
    pub display_name: String,
    pub script: String,
    /// Six fields with seconds first (`*/5 * * * * *`); empty: not periodic.
    pub cron: String,
    /// A file inside the workspace that also receives the output; empty: none.
    pub log_path: String,
    pub run_on_start: bool,
    pub run_on_stop: bool,
    /// The agent is not `ready` (so `coder ssh --wait auto` waits) until it ends.
    pub start_blocks_login: bool,
    /// Seconds before the script is killed; 0: no limit.
    pub timeout_seconds: i64,
}

/// Where an agent's log lines come from (Coder's `WorkspaceAgentLogSource`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentLogSource {
    pub id: Uuid,
    pub workspace_agent_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub display_name: String,
    #[serde(default)]
    pub icon: String,
}

/// `GET /api/v2/workspaceagents/me/graceful-shutdown`: whether coderd asked
/// the agent to run its shutdown scripts (a stop or delete build began).
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct GracefulShutdown {
    pub shutdown_requested: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct AgentMetadataDescription {
    pub key: String,
    #[serde(default)]
    pub display_name: String,
    pub script: String,
    /// Seconds between runs.
    pub interval: i64,
    /// Seconds before a run is killed.
    pub timeout: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PostLifecycleRequest {
    pub state: LifecycleState,
    /// The startup script's exit code, when it has finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentLog {
    #[serde(default)]
    pub level: LogLevel,
    pub output: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PatchAgentLogsRequest {
    #[serde(default)]
    pub source: String,
    /// One of the agent's log sources ([`AgentScript::log_source_id`]);
    /// `None`: the agent's own, older-style `source` name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_source_id: Option<Uuid>,
    pub logs: Vec<AgentLog>,
}

/// A stored agent log line, as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkspaceAgentLog {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    /// The log source's display name (e.g. `Startup Script`), or the
    /// agent's source name for lines sent without a log source.
    pub source: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source_id: Option<Uuid>,
    pub level: LogLevel,
    pub output: String,
}

/// Liveness and stats an agent reports periodically.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct AgentStats {
    #[serde(default)]
    pub connections_by_kind: std::collections::BTreeMap<String, u64>,
    #[serde(default)]
    pub rx_bytes: u64,
    #[serde(default)]
    pub tx_bytes: u64,
    /// SSH connections open now (`coder ssh`, VS Code, scp).
    #[serde(default)]
    pub session_count: u64,
    /// TCP and UDP forwards open now: `coder tunnel`, and apps proxied
    /// through coderd.
    #[serde(default)]
    pub session_count_port_forward: u64,
    #[serde(default)]
    pub version: String,
}

impl AgentStats {
    /// Whether someone uses the workspace now: an SSH connection, a channel
    /// of any kind (the web terminal's PTYs count as `ssh_shell`) or a
    /// forward is open. Activity pushes the autostop deadline forward.
    pub fn is_active(&self) -> bool {
        self.session_count > 0
            || self.session_count_port_forward > 0
            || self.connections_by_kind.values().any(|n| *n > 0)
    }
}

/// One metadata script result, as the agent reports it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AgentMetadataResult {
    pub key: String,
    pub value: String,
    #[serde(default)]
    pub error: String,
    pub collected_at: DateTime<Utc>,
}

/// A TCP port something listens on inside a workspace, as the agent reports it
/// over the mesh (`listening-ports` service; `coder ports`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
pub struct ListeningPort {
    pub port: u16,
    /// `tcp` (the only network reported today).
    pub network: String,
    /// The local addresses it is bound to, e.g. `127.0.0.1`, `::`.
    pub addresses: Vec<String>,
    /// The listening process's name, when the agent may see it.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub process_name: String,
}
