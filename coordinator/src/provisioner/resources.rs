//! The shape of a workspace as a template declares it: resources, the agents that run
//! on them, the agents' apps and metadata scripts, and template parameters. Built by
//! [`super::terraform::parse`] from terraform's JSON; a job's output carries them as
//! they are (in process, and as JSON over the provisioner daemon API), and
//! `provisionerd` stores them.
//!
//! On the wire every field is optional (missing reads as empty), so an older or newer
//! peer's output still reads.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A workspace resource (VM, container, volume, …) and what runs on it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Resource {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    /// Full address, e.g. `module.vm.docker_container.ws[0]`.
    pub address: String,
    pub agents: Vec<Agent>,
    /// From `coder_metadata` items, in declaration order.
    pub metadata: Vec<MetadataItem>,
    pub hide: bool,
    pub icon: String,
    pub daily_cost: i64,
    /// Runs at least one agent.
    pub computational: bool,
    /// Also exists when the workspace is stopped. Known from an import (the `stop`
    /// plan has it too, see [`super::terraform::merge_import`]); a build records every
    /// resource of its state as persistent.
    pub persistent: bool,
}

/// One `item` of a `coder_metadata`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct MetadataItem {
    pub key: String,
    pub value: String,
    pub sensitive: bool,
}

/// A `coder_agent`. In a plan, `id` and `token` are empty: the provider computes them
/// at apply time.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Agent {
    pub id: String,
    /// The resource name: `main` for `coder_agent.main`.
    pub name: String,
    pub address: String,
    pub token: String,
    pub os: String,
    pub arch: String,
    pub dir: String,
    pub env: BTreeMap<String, String>,
    pub startup_script: String,
    pub startup_script_behavior: String,
    pub shutdown_script: String,
    pub connection_timeout_seconds: i64,
    pub troubleshooting_url: String,
    pub motd_file: String,
    pub order: i64,
    pub metadata: Vec<AgentMetadata>,
    pub apps: Vec<App>,
    /// `coder_script`s, then the agent's own `startup_script` ("Startup Script") and
    /// `shutdown_script` ("Shutdown Script") as Coder turns them into scripts.
    pub scripts: Vec<Script>,
    /// `coder_env`s, as `(name, value)` in address order.
    pub extra_envs: Vec<(String, String)>,
}

/// A `coder_script` (or the agent's startup or shutdown script as one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Script {
    pub display_name: String,
    pub icon: String,
    pub script: String,
    pub cron: String,
    pub log_path: String,
    pub run_on_start: bool,
    pub run_on_stop: bool,
    pub start_blocks_login: bool,
    pub timeout_seconds: i64,
}

/// A `metadata` block of a `coder_agent`: a script the agent runs periodically.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct AgentMetadata {
    pub key: String,
    pub display_name: String,
    pub script: String,
    pub interval: i64,
    pub timeout: i64,
    pub order: i64,
}

/// A `coder_app`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct App {
    pub id: String,
    pub slug: String,
    pub display_name: String,
    pub icon: String,
    pub url: String,
    pub command: String,
    pub external: bool,
    pub subdomain: bool,
    /// `owner`, `authenticated` or `public`.
    pub share: String,
    pub hidden: bool,
    pub order: i64,
    pub healthcheck: Option<Healthcheck>,
}

/// An app's `healthcheck` block.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Healthcheck {
    pub url: String,
    pub interval: i64,
    pub threshold: i64,
}

/// A `coder_parameter` data source.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct Parameter {
    pub name: String,
    /// `string`, `number`, `bool` or `list(string)`.
    #[serde(rename = "type")]
    pub type_: String,
    pub default: Option<String>,
    pub mutable: bool,
    pub description: String,
    pub display_name: String,
    pub icon: String,
    pub order: i64,
    pub options: Vec<ParameterOption>,
    pub validation: Option<ParameterValidation>,
    /// No default: every build must give a value.
    pub required: bool,
}

/// An `option` block of a parameter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ParameterOption {
    pub name: String,
    pub value: String,
    pub description: String,
    pub icon: String,
}

/// The `validation` block of a parameter.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
#[non_exhaustive]
pub struct ParameterValidation {
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub monotonic: Option<String>,
    pub regex: Option<String>,
    pub error: Option<String>,
}
