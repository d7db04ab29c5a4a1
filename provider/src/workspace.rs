//! Data sources `coder_workspace` and `coder_workspace_owner`: what the provisioner
//! worker knows about the build, passed in through environment variables.
//!
//! | attribute | variable | default |
//! |---|---|---|
//! | `coder_workspace.id` | `CODER_WORKSPACE_ID` | nil UUID |
//! | `coder_workspace.name` | `CODER_WORKSPACE_NAME` | `default` |
//! | `coder_workspace.transition` | `CODER_WORKSPACE_TRANSITION` | `start` |
//! | `coder_workspace.template_id` / `template_name` / `template_version` | `CODER_WORKSPACE_TEMPLATE_ID` / `_NAME` / `_VERSION` | `""` |
//! | `coder_workspace.access_url` | provider `url` or `CODER_AGENT_URL` | `""` |
//! | `coder_workspace_owner.id` | `CODER_WORKSPACE_OWNER_ID` | nil UUID |
//! | `coder_workspace_owner.name` | `CODER_WORKSPACE_OWNER` | `default` |
//! | `coder_workspace_owner.full_name` | `CODER_WORKSPACE_OWNER_NAME` | `""` |
//! | `coder_workspace_owner.email` | `CODER_WORKSPACE_OWNER_EMAIL` | `default@example.com` |
//! | `coder_workspace_owner.session_token` | `CODER_WORKSPACE_OWNER_SESSION_TOKEN` | `""` |
//!
//! Defaults apply when a variable is unset or empty, so a template can be planned
//! outside a build (for example when a template version is imported).

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeType, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{AttributePath, DataSource, Diagnostics};

use crate::provider::AccessUrl;
use crate::schema_util::{block, computed, Num, Str};

/// Workspace transitions, as in `CODER_WORKSPACE_TRANSITION`.
pub const TRANSITIONS: &[&str] = &["start", "stop", "delete"];

const NIL_UUID: &str = "00000000-0000-0000-0000-000000000000";

/// The value of environment variable `name`, or `default` when unset or empty.
fn env_or(name: &str, default: &str) -> String {
    std::env::var(name).ok().filter(|v| !v.is_empty()).unwrap_or_else(|| default.to_owned())
}

/// State of `data.coder_workspace`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkspaceState {
    pub id: Str,
    pub name: Str,
    pub transition: Str,
    pub start_count: Num,
    pub access_url: Str,
    pub access_port: Num,
    pub template_id: Str,
    pub template_name: Str,
    pub template_version: Str,
}

/// The `coder_workspace` data source.
#[derive(Debug, Clone)]
pub struct WorkspaceDataSource {
    access_url: AccessUrl,
}

impl WorkspaceDataSource {
    pub(crate) fn new(access_url: AccessUrl) -> Self {
        Self { access_url }
    }
}

#[async_trait]
impl DataSource for WorkspaceDataSource {
    type State<'a> = WorkspaceState;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        use AttributeType::{Number as N, String as S};
        Some(Schema {
            version: 1,
            block: block(
                "Use this data source to get information for the active workspace build.",
                vec![
                    ("id", computed(S, "UUID of the workspace.")),
                    ("name", computed(S, "Name of the workspace.")),
                    ("transition", computed(S, "`start`, `stop` or `delete`.")),
                    (
                        "start_count",
                        computed(N, "1 when `transition` is `start`, else 0; use it as a `count`."),
                    ),
                    ("access_url", computed(S, "The access URL of the Coder deployment.")),
                    ("access_port", computed(N, "The port of the access URL.")),
                    ("template_id", computed(S, "ID of the workspace's template.")),
                    ("template_name", computed(S, "Name of the workspace's template.")),
                    ("template_version", computed(S, "Version of the workspace's template.")),
                ],
                vec![],
            ),
        })
    }

    async fn read<'a>(
        &self,
        diags: &mut Diagnostics,
        _config: WorkspaceState,
        _meta: ValueEmpty,
    ) -> Option<WorkspaceState> {
        let transition = env_or("CODER_WORKSPACE_TRANSITION", "start");
        if !TRANSITIONS.contains(&transition.as_str()) {
            diags.root_error(
                format!("Invalid workspace transition {transition:?}"),
                format!("CODER_WORKSPACE_TRANSITION must be one of: {}", TRANSITIONS.join(", ")),
            );
            return None;
        }
        let id = env_or("CODER_WORKSPACE_ID", NIL_UUID);
        if uuid::Uuid::parse_str(&id).is_err() {
            diags.error_short(
                format!("CODER_WORKSPACE_ID {id:?} is not a UUID"),
                AttributePath::new("id"),
            );
            return None;
        }
        let access_url = self.access_url.display();
        let access_port = url::Url::parse(&access_url)
            .ok()
            .and_then(|u| u.port_or_known_default())
            .map_or(0.0, f64::from);
        Some(WorkspaceState {
            id: Value::Value(id),
            name: Value::Value(env_or("CODER_WORKSPACE_NAME", "default")),
            start_count: Value::Value(if transition == "start" { 1.0 } else { 0.0 }),
            transition: Value::Value(transition),
            access_url: Value::Value(access_url),
            access_port: Value::Value(access_port),
            template_id: Value::Value(env_or("CODER_WORKSPACE_TEMPLATE_ID", "")),
            template_name: Value::Value(env_or("CODER_WORKSPACE_TEMPLATE_NAME", "")),
            template_version: Value::Value(env_or("CODER_WORKSPACE_TEMPLATE_VERSION", "")),
        })
    }
}

/// State of `data.coder_workspace_owner`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct WorkspaceOwnerState {
    pub id: Str,
    pub name: Str,
    pub full_name: Str,
    pub email: Str,
    pub session_token: Str,
}

/// The `coder_workspace_owner` data source.
#[derive(Debug, Clone, Copy, Default)]
pub struct WorkspaceOwnerDataSource;

#[async_trait]
impl DataSource for WorkspaceOwnerDataSource {
    type State<'a> = WorkspaceOwnerState;
    type ProviderMetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        use AttributeType::String as S;
        let mut session_token =
            computed(S, "A session token of the owner, for the workspace to call the API.");
        session_token.sensitive = true;
        Some(Schema {
            version: 1,
            block: block(
                "Use this data source to fetch information about the workspace owner.",
                vec![
                    ("id", computed(S, "UUID of the owner.")),
                    ("name", computed(S, "Username of the owner.")),
                    ("full_name", computed(S, "Full name of the owner.")),
                    ("email", computed(S, "Email address of the owner.")),
                    ("session_token", session_token),
                ],
                vec![],
            ),
        })
    }

    async fn read<'a>(
        &self,
        _diags: &mut Diagnostics,
        _config: WorkspaceOwnerState,
        _meta: ValueEmpty,
    ) -> Option<WorkspaceOwnerState> {
        Some(WorkspaceOwnerState {
            id: Value::Value(env_or("CODER_WORKSPACE_OWNER_ID", NIL_UUID)),
            name: Value::Value(env_or("CODER_WORKSPACE_OWNER", "default")),
            full_name: Value::Value(env_or("CODER_WORKSPACE_OWNER_NAME", "")),
            email: Value::Value(env_or("CODER_WORKSPACE_OWNER_EMAIL", "default@example.com")),
            session_token: Value::Value(env_or("CODER_WORKSPACE_OWNER_SESSION_TOKEN", "")),
        })
    }
}
