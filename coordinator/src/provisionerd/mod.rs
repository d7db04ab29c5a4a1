//! The provisioner worker's core: safe template extraction, running terraform, and
//! reading agents, apps and parameters from plans and state.
//!
//! It knows nothing of the database: the job queue acquires a job, then drives one
//! [`Session`] per job and stores what comes back.
//!
//! ```text
//! template archive ──tar::extract──▶ work_root/<job>/template/
//!                                   │  Session::init
//!   import job:  Session::import ───┤  plan start + plan stop ─▶ ImportResult
//!   build job:   Session::apply ────┘  plan+apply | destroy ───▶ ApplyResult { state, resources }
//!                    every stdout/stderr line ──▶ mpsc::Sender<LogLine>
//!                    CancellationToken ──▶ SIGINT, SIGKILL after the grace period
//! ```
//!
//! - [`tar`]: [`extract`] (untrusted uploads, strict) and [`pack_dir`] (CLI push).
//! - [`terraform`]: [`Terraform`], [`Session`], the curated environment.
//! - [`parse`]: typed [`Resource`]s, [`Agent`]s, [`App`]s, [`Parameter`]s from
//!   `terraform show -json`, and [`merge_import`].

mod deps;
pub mod parse;
mod process;
mod resources;
pub mod tar;
mod template;
pub mod terraform;

pub use parse::{
    graph_edges, merge_import, parse_plan, parse_state, Agent, AgentMetadata, App, Healthcheck,
    ImportedResource, MetadataItem, Parameter, ParameterOption, ParameterValidation, ParseError,
    PlanResult, Resource, StateResources,
};
pub use process::{LogLevel, LogLine, ProcessError};
pub use tar::{extract, pack_dir, ExtractError, ExtractLimits, ExtractSummary, PackError};
pub use template::sanitize_template;
pub use terraform::{
    ApplyError, ApplyResult, BuildEnv, ImportResult, Session, SetupError, Terraform,
    TerraformError, Transition, UnknownTransition,
};
