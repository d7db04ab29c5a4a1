//! The provisioner: turns a template and the facts of a build into a workspace's
//! resources. Its one implementation is [`terraform`]; [`crate::provisionerd`], the
//! daemon that takes jobs from the queue, drives it.
//!
//! What goes in and comes out is plain data shared with the daemon and its wire
//! protocol (`/api/v2/provisionerdaemons/…`), so nothing is converted on the way:
//!
//! ```text
//! BuildEnv ──▶ terraform::Session ──▶ Resource { agents: [Agent { apps: [App] }] }, Parameter
//!                     └── every output line ──▶ mpsc::Sender<JobLog> ──▶ provisionerd stores it
//! ```

mod resources;
pub mod terraform;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use codersdk::Transition;
pub use resources::{
    Agent, AgentMetadata, App, Healthcheck, MetadataItem, Parameter, ParameterOption,
    ParameterValidation, Resource, Script,
};

/// The facts of a build that the provider reads from the environment: the workspace,
/// owner, template and parameters.
///
/// For a template import most are unknown: they stay at their defaults (nil UUIDs,
/// empty strings) and the provider uses its own defaults.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct BuildEnv {
    /// The deployment's URL that agents dial (`CODER_AGENT_URL`).
    pub access_url: String,
    pub workspace_id: Uuid,
    pub workspace_name: String,
    pub owner_id: Uuid,
    pub owner_name: String,
    pub owner_email: String,
    /// The build's transition. [`terraform::Session::plan`] and
    /// [`terraform::Session::apply`] take theirs as an argument (an import plans both
    /// `start` and `stop`), which wins over this one.
    pub transition: Transition,
    pub build_id: Uuid,
    pub template_id: Uuid,
    pub template_name: String,
    pub template_version: String,
    /// `(name, value)` of each parameter value of the build.
    pub parameters: Vec<(String, String)>,
}

pub use codersdk::LogLevel;

/// One line of a job's output, as the provisioner prints it and the job's log stores it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLog {
    /// `extract`, `init`, `plan`, `apply` or `destroy`.
    pub stage: String,
    pub level: LogLevel,
    /// The line without its newline.
    pub output: String,
}
