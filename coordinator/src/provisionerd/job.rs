//! What travels between a job backend and a worker: the acquired job with
//! every input terraform needs, log lines, heartbeats, and the job's output
//! (the provisioner's own [`Resource`]s and [`Parameter`]s, as they are).
//!
//! These are the wire types of the provisioner daemon API
//! (`/api/v2/provisionerdaemons/…`, see `docs/provisioners.md`) as well as
//! the in-process hand-off, so both workers run the same code. Byte fields
//! (template archives, terraform state) travel as standard base64.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::queue::{JobInput, Tags};
pub use crate::provisioner::JobLog;
use crate::provisioner::{BuildEnv, Parameter, Resource};

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
    pub facts: BuildEnv,
    /// The terraform state the previous build left, for builds.
    #[serde(default, with = "base64_opt_bytes")]
    pub prior_state: Option<Vec<u8>>,
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
    Import { parameters: Vec<Parameter>, resources: Vec<Resource> },
    /// A build: the new terraform state and the resources in it.
    Build {
        #[serde(with = "base64_bytes")]
        state: Vec<u8>,
        resources: Vec<Resource>,
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

/// An agent that a stop or delete build asked to shut down (it runs its
/// shutdown scripts before terraform destroys it), as the worker polls it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentShutdown {
    pub agent_id: Uuid,
    pub name: String,
    pub lifecycle: codersdk::LifecycleState,
    /// Heartbeating now; an agent that is not is not waited for.
    pub connected: bool,
    /// Has `run_on_stop` scripts (or a `shutdown_script`); an agent without
    /// any is asked to shut down but not waited for.
    #[serde(default)]
    pub has_stop_scripts: bool,
    /// How long its shutdown may take: its longest stop script's timeout
    /// plus a margin.
    pub wait_seconds: u64,
}

/// What a worker announces when it asks for a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerIdentity {
    pub worker_id: String,
    #[serde(default)]
    pub tags: Tags,
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
    use crate::provisioner::{Agent, Transition};

    #[test]
    fn acquired_job_round_trips_through_json() {
        let job = AcquiredJob {
            lease: Lease { job_id: Uuid::new_v4(), worker_id: "w1".into() },
            input: JobInput::WorkspaceBuild { workspace_build_id: Uuid::new_v4() },
            archive: vec![0, 1, 2, 255],
            facts: BuildEnv {
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
        assert!("restart".parse::<Transition>().is_err());
    }

    #[test]
    fn outputs_and_failures_round_trip() {
        let out = JobOutput::Build {
            state: b"state".to_vec(),
            resources: vec![Resource {
                name: "box".into(),
                type_: "docker_container".into(),
                agents: vec![Agent { token: "t".into(), ..Default::default() }],
                computational: true,
                ..Default::default()
            }],
        };
        let json = serde_json::to_value(&out).unwrap();
        // The wire names of docs/provisioners.md.
        assert_eq!(json["resources"][0]["type"], "docker_container");
        assert_eq!(json["resources"][0]["computational"], true);
        assert_eq!(json["resources"][0]["agents"][0]["token"], "t");
        assert_eq!(serde_json::from_value::<JobOutput>(json).unwrap(), out);
        // What an older peer leaves out reads as empty.
        let sparse = r#"{"type":"import","parameters":[{"name":"region"}],"resources":[{}]}"#;
        let JobOutput::Import { parameters, resources } = serde_json::from_str(sparse).unwrap()
        else {
            panic!("not an import")
        };
        assert_eq!((parameters[0].name.as_str(), resources.len()), ("region", 1));
        let log = r#"{"stage":"plan","level":"verbose","output":"x"}"#;
        assert!(serde_json::from_str::<JobLog>(log).is_err(), "an unknown level is an error");
        let f = JobFailure::new("boom", "terraform");
        let json = serde_json::to_value(&f).unwrap();
        assert!(json["state"].is_null());
        assert_eq!(serde_json::from_value::<JobFailure>(json).unwrap(), f);
        let bad = r#"{"error":"x","code":"y","state":"not base64!"}"#;
        assert!(serde_json::from_str::<JobFailure>(bad).is_err());
    }
}
