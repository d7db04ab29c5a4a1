//! API types shared by `coderd` (which serves them) and the SDK (which sends them).
//!
//! These are the JSON bodies of `/api/v2`. Field names follow Coder's API so
//! that tooling written against Coder reads them unchanged.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

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

/// A role a user holds across the deployment.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Owner,
    Member,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Member => "member",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "owner" => Some(Role::Owner),
            "member" => Some(Role::Member),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub id: Uuid,
    pub username: String,
    pub email: String,
    pub roles: Vec<Role>,
    pub status: String,
    pub created_at: DateTime<Utc>,
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
    pub login_type: String,
    pub expires_at: DateTime<Utc>,
    pub last_used: DateTime<Utc>,
    pub created_at: DateTime<Utc>,
}

/// `POST /api/v2/files` answer: the file's id (named `hash` as in Coder's API).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UploadResponse {
    pub hash: Uuid,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum ProvisionerJobStatus {
    Pending,
    Running,
    Canceling,
    Canceled,
    Succeeded,
    Failed,
}

impl ProvisionerJobStatus {
    pub fn is_done(self) -> bool {
        matches!(self, Self::Canceled | Self::Succeeded | Self::Failed)
    }
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
    pub level: String,
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

/// What a build does to the workspace. The default is `Start` (a template import
/// plans a start).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash, Default)]
#[serde(rename_all = "snake_case")]
pub enum Transition {
    #[default]
    Start,
    Stop,
    Delete,
}

/// A transition name other than `start`, `stop` and `delete`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown workspace transition {0:?}: expected start, stop or delete")]
pub struct UnknownTransition(pub String);

impl std::str::FromStr for Transition {
    type Err = UnknownTransition;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Transition::parse(s).ok_or_else(|| UnknownTransition(s.to_owned()))
    }
}

/// For database rows (`#[sqlx(try_from = "String")]`): an unknown value is an error.
impl TryFrom<String> for Transition {
    type Error = UnknownTransition;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl Transition {
    /// `start`, `stop` or `delete`, as in `CODER_WORKSPACE_TRANSITION`.
    pub fn as_str(self) -> &'static str {
        match self {
            Transition::Start => "start",
            Transition::Stop => "stop",
            Transition::Delete => "delete",
        }
    }

    pub fn parse(s: &str) -> Option<Transition> {
        match s {
            "start" => Some(Transition::Start),
            "stop" => Some(Transition::Stop),
            "delete" => Some(Transition::Delete),
            _ => None,
        }
    }
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
    pub status: String,
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
}

/// An app's `healthcheck` block: the agent GETs `url` every `interval`
/// seconds; `threshold` consecutive failures make the app unhealthy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Healthcheck {
    pub url: String,
    pub interval: i64,
    pub threshold: i64,
}

/// Coder's `WorkspaceAppHealth`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AppHealth {
    #[default]
    Disabled,
    Initializing,
    Healthy,
    Unhealthy,
}

impl AppHealth {
    pub fn as_str(self) -> &'static str {
        match self {
            AppHealth::Disabled => "disabled",
            AppHealth::Initializing => "initializing",
            AppHealth::Healthy => "healthy",
            AppHealth::Unhealthy => "unhealthy",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [Self::Disabled, Self::Initializing, Self::Healthy, Self::Unhealthy]
            .into_iter()
            .find(|h| h.as_str() == s)
    }
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
    pub status: String,
    pub lifecycle_state: String,
    pub first_connected_at: Option<DateTime<Utc>>,
    pub last_connected_at: Option<DateTime<Utc>>,
    pub apps: Vec<WorkspaceApp>,
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

/// Agent lifecycle states, as Coder names them.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum LifecycleState {
    Created,
    Starting,
    StartTimeout,
    StartError,
    Ready,
    ShuttingDown,
    ShutdownTimeout,
    ShutdownError,
    Off,
}

impl LifecycleState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Created => "created",
            Self::Starting => "starting",
            Self::StartTimeout => "start_timeout",
            Self::StartError => "start_error",
            Self::Ready => "ready",
            Self::ShuttingDown => "shutting_down",
            Self::ShutdownTimeout => "shutdown_timeout",
            Self::ShutdownError => "shutdown_error",
            Self::Off => "off",
        }
    }
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
    #[serde(default = "default_log_level")]
    pub level: String,
    pub output: String,
}

fn default_log_level() -> String {
    "info".into()
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PatchAgentLogsRequest {
    #[serde(default)]
    pub source: String,
    pub logs: Vec<AgentLog>,
}

/// A stored agent log line, as listed.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct WorkspaceAgentLog {
    pub id: i64,
    pub created_at: DateTime<Utc>,
    pub source: String,
    pub level: String,
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
    #[serde(default)]
    pub session_count: u64,
    #[serde(default)]
    pub version: String,
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
