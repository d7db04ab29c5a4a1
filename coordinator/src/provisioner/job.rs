//! What travels between a job backend and a worker: the acquired job with
//! every input terraform needs, log lines, heartbeats, and the job's output.
//!
//! These are the wire types of the provisioner daemon API
//! (`/api/v2/provisionerdaemons/…`, see `docs/provisioners.md`) as well as
//! the in-process hand-off, so both workers run the same code. Byte fields
//! (template archives, terraform state) travel as standard base64.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::queue::{JobInput, Tags};
use crate::provisionerd::{self, BuildEnv, Transition};

/// The right to work on one job: the job and the worker that acquired it.
/// Heartbeats, logs and results are accepted only under the lease that
/// acquired the job, and only while the job still runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub job_id: Uuid,
    pub worker_id: String,
}

/// A job handed to a worker, with everything needed to run it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcquiredJob {
    pub lease: Lease,
    pub input: JobInput,
    /// The template archive (tar).
    #[serde(with = "base64_bytes")]
    pub archive: Vec<u8>,
    /// The facts the provider reads from the environment.
    pub facts: BuildFacts,
    /// The terraform state the previous build left, for builds.
    #[serde(default, with = "base64_opt_bytes")]
    pub prior_state: Option<Vec<u8>>,
}

/// [`BuildEnv`], serializable: the workspace, owner, template and
/// parameters a build runs with. For an import most are placeholders.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct BuildFacts {
    /// The URL agents reach coderd at (`CODER_AGENT_URL`).
    pub access_url: String,
    pub workspace_id: Uuid,
    pub workspace_name: String,
    pub owner_id: Uuid,
    pub owner_name: String,
    pub owner_email: String,
    #[serde(with = "transition")]
    pub transition: Transition,
    pub build_id: Uuid,
    pub template_id: Uuid,
    pub template_name: String,
    pub template_version: String,
    /// `(name, value)` of each parameter value of the build.
    pub parameters: Vec<(String, String)>,
}

impl From<BuildFacts> for BuildEnv {
    fn from(f: BuildFacts) -> BuildEnv {
        BuildEnv {
            access_url: f.access_url,
            workspace_id: f.workspace_id,
            workspace_name: f.workspace_name,
            owner_id: f.owner_id,
            owner_name: f.owner_name,
            owner_email: f.owner_email,
            transition: f.transition,
            build_id: f.build_id,
            template_id: f.template_id,
            template_name: f.template_name,
            template_version: f.template_version,
            parameters: f.parameters,
        }
    }
}

/// One line of job output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobLog {
    pub stage: String,
    pub level: String,
    pub output: String,
}

/// What a heartbeat learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Heartbeat {
    Running,
    /// A user asked to cancel: stop the work, then complete the job.
    CancelRequested,
    /// The job is no longer ours (failed by the stale-job detector, or done).
    Lost,
}

/// What a successful job produced, to be recorded with its completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum JobOutput {
    /// A template import: the template's parameters and the `start` plan's resources.
    Import { parameters: Vec<ParameterRecord>, resources: Vec<ResourceRecord> },
    /// A build: the new terraform state and the resources in it.
    Build {
        #[serde(with = "base64_bytes")]
        state: Vec<u8>,
        resources: Vec<ResourceRecord>,
    },
}

/// How a job failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobFailure {
    /// For users: what went wrong and, where possible, what to do.
    pub error: String,
    /// For machines: `terraform`, `canceled`, `bad_archive`, `setup`, …
    pub code: String,
    /// The state terraform left behind (a failed apply), so the next build
    /// starts from it.
    #[serde(default, with = "base64_opt_bytes")]
    pub state: Option<Vec<u8>>,
}

impl JobFailure {
    pub fn new(error: impl std::fmt::Display, code: &str) -> Self {
        JobFailure { error: error.to_string(), code: code.to_owned(), state: None }
    }
}

/// What a worker announces when it asks for a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerIdentity {
    pub worker_id: String,
    #[serde(default)]
    pub tags: Tags,
}

/// A workspace resource as recorded: [`provisionerd::Resource`] plus its
/// import classification.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ResourceRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub address: String,
    pub agents: Vec<AgentRecord>,
    pub metadata: Vec<MetadataRecord>,
    pub hide: bool,
    pub icon: String,
    pub daily_cost: i64,
    /// Runs at least one agent.
    pub computational: bool,
    /// Also exists when the workspace is stopped.
    pub persistent: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct MetadataRecord {
    pub key: String,
    pub value: String,
    pub sensitive: bool,
}

/// A `coder_agent`. `token` is the secret the agent authenticates with;
/// coderd stores only its hash.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentRecord {
    pub id: String,
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
    pub metadata: Vec<AgentMetadataRecord>,
    pub apps: Vec<AppRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AgentMetadataRecord {
    pub key: String,
    pub display_name: String,
    pub script: String,
    pub interval: i64,
    pub timeout: i64,
    pub order: i64,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AppRecord {
    pub id: String,
    pub slug: String,
    pub display_name: String,
    pub icon: String,
    pub url: String,
    pub command: String,
    pub external: bool,
    pub subdomain: bool,
    pub share: String,
    pub hidden: bool,
    pub order: i64,
    pub healthcheck: Option<HealthcheckRecord>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct HealthcheckRecord {
    pub url: String,
    pub interval: i64,
    pub threshold: i64,
}

/// A `coder_parameter`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ParameterRecord {
    pub name: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub default: Option<String>,
    pub mutable: bool,
    pub description: String,
    pub display_name: String,
    pub icon: String,
    pub order: i64,
    pub options: Vec<ParameterOptionRecord>,
    pub validation: Option<ParameterValidationRecord>,
    pub required: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ParameterOptionRecord {
    pub name: String,
    pub value: String,
    pub description: String,
    pub icon: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct ParameterValidationRecord {
    pub min: Option<i64>,
    pub max: Option<i64>,
    pub monotonic: Option<String>,
    pub regex: Option<String>,
    pub error: Option<String>,
}

impl ResourceRecord {
    pub fn new(r: provisionerd::Resource, computational: bool, persistent: bool) -> Self {
        ResourceRecord {
            name: r.name,
            type_: r.type_,
            address: r.address,
            agents: r.agents.into_iter().map(AgentRecord::from).collect(),
            metadata: r
                .metadata
                .into_iter()
                .map(|m| MetadataRecord { key: m.key, value: m.value, sensitive: m.sensitive })
                .collect(),
            hide: r.hide,
            icon: r.icon,
            daily_cost: r.daily_cost,
            computational,
            persistent,
        }
    }
}

impl From<provisionerd::ImportedResource> for ResourceRecord {
    fn from(r: provisionerd::ImportedResource) -> Self {
        ResourceRecord::new(r.resource, r.computational, r.persistent)
    }
}

impl From<provisionerd::Agent> for AgentRecord {
    fn from(a: provisionerd::Agent) -> Self {
        AgentRecord {
            id: a.id,
            name: a.name,
            address: a.address,
            token: a.token,
            os: a.os,
            arch: a.arch,
            dir: a.dir,
            env: a.env,
            startup_script: a.startup_script,
            startup_script_behavior: a.startup_script_behavior,
            shutdown_script: a.shutdown_script,
            connection_timeout_seconds: a.connection_timeout_seconds,
            troubleshooting_url: a.troubleshooting_url,
            motd_file: a.motd_file,
            order: a.order,
            metadata: a
                .metadata
                .into_iter()
                .map(|m| AgentMetadataRecord {
                    key: m.key,
                    display_name: m.display_name,
                    script: m.script,
                    interval: m.interval,
                    timeout: m.timeout,
                    order: m.order,
                })
                .collect(),
            apps: a
                .apps
                .into_iter()
                .map(|app| AppRecord {
                    id: app.id,
                    slug: app.slug,
                    display_name: app.display_name,
                    icon: app.icon,
                    url: app.url,
                    command: app.command,
                    external: app.external,
                    subdomain: app.subdomain,
                    share: app.share,
                    hidden: app.hidden,
                    order: app.order,
                    healthcheck: app.healthcheck.map(|h| HealthcheckRecord {
                        url: h.url,
                        interval: h.interval,
                        threshold: h.threshold,
                    }),
                })
                .collect(),
        }
    }
}

impl From<provisionerd::Parameter> for ParameterRecord {
    fn from(p: provisionerd::Parameter) -> Self {
        ParameterRecord {
            name: p.name,
            type_: p.type_,
            default: p.default,
            mutable: p.mutable,
            description: p.description,
            display_name: p.display_name,
            icon: p.icon,
            order: p.order,
            options: p
                .options
                .into_iter()
                .map(|o| ParameterOptionRecord {
                    name: o.name,
                    value: o.value,
                    description: o.description,
                    icon: o.icon,
                })
                .collect(),
            validation: p.validation.map(|v| ParameterValidationRecord {
                min: v.min,
                max: v.max,
                monotonic: v.monotonic,
                regex: v.regex,
                error: v.error,
            }),
            required: p.required,
        }
    }
}

mod transition {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::provisionerd::Transition;

    pub fn serialize<S: Serializer>(t: &Transition, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(t.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Transition, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

mod base64_bytes {
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&base64::engine::general_purpose::STANDARD.encode(b))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        base64::engine::general_purpose::STANDARD
            .decode(s.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}

mod base64_opt_bytes {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(b: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match b {
            Some(b) => super::base64_bytes::serialize(b, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        #[derive(Deserialize)]
        struct Wrap(#[serde(with = "super::base64_bytes")] Vec<u8>);
        Ok(Option::<Wrap>::deserialize(d)?.map(|w| w.0))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn acquired_job_round_trips_through_json() {
        let job = AcquiredJob {
            lease: Lease { job_id: Uuid::new_v4(), worker_id: "w1".into() },
            input: JobInput::WorkspaceBuild { workspace_build_id: Uuid::new_v4() },
            archive: vec![0, 1, 2, 255],
            facts: BuildFacts {
                transition: Transition::Delete,
                parameters: vec![("a".into(), "b".into())],
                ..Default::default()
            },
            prior_state: Some(b"{}".to_vec()),
        };
        let json = serde_json::to_value(&job).unwrap();
        assert_eq!(json["archive"], "AAEC/w==");
        assert_eq!(json["facts"]["transition"], "delete");
        assert_eq!(json["prior_state"], "e30=");
        assert_eq!(serde_json::from_value::<AcquiredJob>(json).unwrap(), job);
    }

    #[test]
    fn outputs_and_failures_round_trip() {
        let out = JobOutput::Build {
            state: b"state".to_vec(),
            resources: vec![ResourceRecord {
                name: "box".into(),
                agents: vec![AgentRecord { token: "t".into(), ..Default::default() }],
                ..Default::default()
            }],
        };
        let json = serde_json::to_string(&out).unwrap();
        assert_eq!(serde_json::from_str::<JobOutput>(&json).unwrap(), out);
        let f = JobFailure::new("boom", "terraform");
        let json = serde_json::to_value(&f).unwrap();
        assert!(json["state"].is_null());
        assert_eq!(serde_json::from_value::<JobFailure>(json).unwrap(), f);
        let bad = r#"{"error":"x","code":"y","state":"not base64!"}"#;
        assert!(serde_json::from_str::<JobFailure>(bad).is_err());
    }
}
