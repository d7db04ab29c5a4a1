//! Resource `coder_agent`: declares an agent that runs inside the workspace.
//!
//! Create generates the agent's `id` (a UUID) and `token` (a random secret, sensitive),
//! both kept in state so that they are stable until the agent is replaced. `init_script`
//! is rendered at plan time from `os`, `arch` and the access URL (see
//! [`crate::init_script`]); if the access URL changes between builds, the next plan
//! updates it in place. Every other attribute forces replacement, as in Coder.

use std::collections::BTreeSet;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeType, NestedBlock, Schema};
use tf_provider::value::Value;
use tf_provider::{AttributePath, Diagnostics};

use crate::init_script::{self, ARCHITECTURES, OPERATING_SYSTEMS};
use crate::managed::CoderResource;
use crate::provider::{trim_url, AccessUrl};
use crate::schema_util::{
    block, check_int, computed, defaulted, known_str, optional, or_default, required, Bool, Num,
    Str, StrMap,
};

/// One `metadata` block: a value the agent refreshes by running `script`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgentMetadata {
    pub key: Str,
    pub display_name: Str,
    pub script: Str,
    pub interval: Num,
    pub timeout: Num,
    pub order: Num,
}

/// The `display_apps` block: which built-in apps the dashboard shows for the agent.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct DisplayApps {
    pub vscode: Bool,
    pub vscode_insiders: Bool,
    pub web_terminal: Bool,
    pub port_forwarding_helper: Bool,
    pub ssh_helper: Bool,
}

impl DisplayApps {
    fn fill_defaults(&mut self) {
        or_default(&mut self.vscode, true);
        or_default(&mut self.vscode_insiders, false);
        or_default(&mut self.web_terminal, true);
        or_default(&mut self.port_forwarding_helper, true);
        or_default(&mut self.ssh_helper, true);
    }
}

/// State of a `coder_agent`; field names are the schema's attribute names.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct AgentState {
    pub id: Str,
    pub token: Str,
    pub init_script: Str,
    pub os: Str,
    pub arch: Str,
    pub auth: Str,
    pub dir: Str,
    pub env: StrMap,
    pub startup_script: Str,
    pub startup_script_behavior: Str,
    pub shutdown_script: Str,
    pub connection_timeout: Num,
    pub troubleshooting_url: Str,
    pub motd_file: Str,
    pub order: Num,
    pub metadata: Value<Vec<Value<AgentMetadata>>>,
    pub display_apps: Value<Vec<Value<DisplayApps>>>,
}

impl AgentState {
    fn fill_defaults(&mut self) {
        or_default(&mut self.auth, "token".to_owned());
        or_default(&mut self.connection_timeout, 120.0);
        or_default(&mut self.startup_script_behavior, "non-blocking".to_owned());
        if let Value::Value(items) = &mut self.display_apps {
            for item in items.iter_mut() {
                if let Value::Value(apps) = item {
                    apps.fill_defaults();
                }
            }
        }
    }
}

/// The `coder_agent` resource.
#[derive(Debug, Clone)]
pub struct AgentResource {
    access_url: AccessUrl,
}

impl AgentResource {
    pub(crate) fn new(access_url: AccessUrl) -> Self {
        Self { access_url }
    }

    /// The init script for `state`'s os/arch, unknown while either is unknown.
    fn init_script(&self, diags: &mut Diagnostics, state: &AgentState) -> Str {
        match (known_str(&state.os), known_str(&state.arch)) {
            (Some(os), Some(arch)) => match self.access_url.get(diags) {
                Some(url) => Value::Value(init_script::render(&trim_url(&url), os, arch)),
                None => Value::Unknown,
            },
            _ => Value::Unknown,
        }
    }
}

/// A random 256-bit secret, hex encoded.
fn new_token() -> String {
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

fn check_one_of(diags: &mut Diagnostics, value: &Str, name: &'static str, allowed: &[&str]) {
    if let Some(v) = known_str(value) {
        if !allowed.contains(&v) {
            diags.error(
                format!("Invalid {name} {v:?}"),
                format!("`{name}` must be one of: {}", allowed.join(", ")),
                AttributePath::new(name),
            );
        }
    }
}

fn validate_agent(diags: &mut Diagnostics, config: &AgentState) {
    check_one_of(diags, &config.os, "os", OPERATING_SYSTEMS);
    check_one_of(diags, &config.arch, "arch", ARCHITECTURES);
    // Only token authentication exists on this platform; cloud instance identities
    // of Coder's provider are refused rather than silently ignored.
    check_one_of(diags, &config.auth, "auth", &["token"]);
    check_one_of(
        diags,
        &config.startup_script_behavior,
        "startup_script_behavior",
        &["blocking", "non-blocking"],
    );
    check_int(diags, &config.connection_timeout, Some(0), AttributePath::new("connection_timeout"));
    check_int(diags, &config.order, None, AttributePath::new("order"));
    if let Value::Value(items) = &config.metadata {
        let mut keys = BTreeSet::new();
        for (i, item) in items.iter().enumerate() {
            let Value::Value(item) = item else { continue };
            let path = AttributePath::new("metadata").index(i as i64);
            if let Some(key) = known_str(&item.key) {
                if key.is_empty() {
                    diags.error_short("metadata key must not be empty", path.clone());
                } else if !keys.insert(key.to_owned()) {
                    diags
                        .error_short(format!("duplicate agent metadata key {key:?}"), path.clone());
                }
            }
            check_int(diags, &item.interval, Some(1), path.clone().attribute("interval"));
            check_int(diags, &item.timeout, Some(0), path.clone().attribute("timeout"));
            check_int(diags, &item.order, None, path.attribute("order"));
        }
    }
}

impl CoderResource for AgentResource {
    type State = AgentState;
    const COMPUTED: &'static [&'static str] = &["id", "token", "init_script"];

    fn schema(&self) -> Schema {
        use AttributeType::{Bool as B, Map, Number as N, String as S};
        let metadata = block(
            "A value the agent refreshes by running `script` every `interval` seconds.",
            vec![
                ("key", required(S, "The key of this metadata item.")),
                ("display_name", optional(S, "The user-facing name of this value.")),
                ("script", required(S, "The script that retrieves the value.")),
                ("interval", required(N, "Refresh interval in seconds.")),
                ("timeout", optional(N, "Maximum run time of the script in seconds.")),
                ("order", optional(N, "Position in the UI; lowest first.")),
            ],
            vec![],
        );
        let display_apps = block(
            "Built-in apps to display for this agent.",
            vec![
                ("vscode", defaulted(B, "Show VS Code Desktop. Default `true`.")),
                ("vscode_insiders", defaulted(B, "Show VS Code Insiders. Default `false`.")),
                ("web_terminal", defaulted(B, "Show the web terminal. Default `true`.")),
                (
                    "port_forwarding_helper",
                    defaulted(B, "Show the port-forwarding helper. Default `true`."),
                ),
                ("ssh_helper", defaulted(B, "Show the SSH helper. Default `true`.")),
            ],
            vec![],
        );
        let mut token = computed(
            S,
            "Set the environment variable `CODER_AGENT_TOKEN` with this token to authenticate an agent.",
        );
        token.sensitive = true;
        Schema {
            version: 1,
            block: block(
                "Use this resource to associate an agent.",
                vec![
                    ("id", computed(S, "The agent's UUID.")),
                    ("token", token),
                    (
                        "init_script",
                        computed(
                            S,
                            "Run this script on startup of an instance to initialize the agent.",
                        ),
                    ),
                    ("os", required(S, "`linux`, `darwin` or `windows`.")),
                    ("arch", required(S, "`amd64`, `arm64` or `armv7`.")),
                    ("auth", defaulted(S, "Authentication type; only `token` is supported.")),
                    (
                        "dir",
                        optional(S, "Starting directory of shell sessions. Defaults to `$HOME`."),
                    ),
                    (
                        "env",
                        optional(
                            Map(Box::new(S)),
                            "Environment variables to set in the workspace.",
                        ),
                    ),
                    ("startup_script", optional(S, "A script to run after the agent starts.")),
                    (
                        "startup_script_behavior",
                        defaulted(S, "`blocking` or `non-blocking` (default)."),
                    ),
                    ("shutdown_script", optional(S, "A script to run before the agent stops.")),
                    (
                        "connection_timeout",
                        defaulted(
                            N,
                            "Seconds until the agent is marked timed out. Default 120; 0 disables.",
                        ),
                    ),
                    (
                        "troubleshooting_url",
                        optional(S, "A URL with troubleshooting instructions."),
                    ),
                    ("motd_file", optional(S, "A file whose content is shown on SSH login.")),
                    ("order", optional(N, "Position of the agent in the UI; lowest first.")),
                ],
                vec![
                    ("metadata", NestedBlock::List(metadata)),
                    ("display_apps", NestedBlock::Optional(display_apps)),
                ],
            ),
        }
    }

    fn validate(&self, diags: &mut Diagnostics, config: &AgentState) {
        validate_agent(diags, config);
    }

    fn fill_defaults(&self, state: &mut AgentState) {
        state.fill_defaults();
    }

    fn mark_generated_unknown(&self, state: &mut AgentState) {
        state.id = Value::Unknown;
        state.token = Value::Unknown;
    }

    fn plan_computed(&self, diags: &mut Diagnostics, state: &mut AgentState) {
        state.init_script = self.init_script(diags, state);
    }

    fn generate(&self, diags: &mut Diagnostics, state: &mut AgentState) {
        state.id = Value::Value(uuid::Uuid::new_v4().to_string());
        state.token = Value::Value(new_token());
        if !state.init_script.is_value() {
            state.init_script = self.init_script(diags, state);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn tokens_are_long_and_distinct() {
        let (a, b) = (new_token(), new_token());
        assert_eq!(a.len(), 64);
        assert_ne!(a, b);
    }

    #[test]
    fn validation_reports_bad_os_and_duplicate_metadata() {
        let mut diags = Diagnostics::default();
        let item = AgentMetadata {
            key: Value::Value("load".into()),
            script: Value::Value("uptime".into()),
            interval: Value::Value(10.0),
            ..Default::default()
        };
        let config = AgentState {
            os: Value::Value("plan9".into()),
            arch: Value::Value("amd64".into()),
            metadata: Value::Value(vec![Value::Value(item.clone()), Value::Value(item)]),
            ..Default::default()
        };
        validate_agent(&mut diags, &config);
        let summaries: Vec<_> = diags.errors.iter().map(|d| d.summary.to_string()).collect();
        assert_eq!(summaries.len(), 2, "{summaries:?}");
        assert!(summaries[0].contains("plan9"));
        assert!(summaries[1].contains("duplicate"));
    }

    #[test]
    fn unknown_values_are_not_validated() {
        let mut diags = Diagnostics::default();
        let config = AgentState { os: Value::Unknown, arch: Value::Unknown, ..Default::default() };
        validate_agent(&mut diags, &config);
        assert!(diags.errors.is_empty());
    }
}
