//! The terraform provisioner: safe template extraction, running terraform, and
//! reading agents, apps and parameters from plans and state.
//!
//! It knows nothing of the database: [`crate::provisionerd`] acquires a job, drives
//! one [`Session`] for it and stores what comes back.
//!
//! ```text
//! template archive ──tar::extract──▶ work_root/<job>/template/
//!                                   │  Session::init
//!   import job:  Session::import ───┤  plan start + plan stop ─▶ ImportResult
//!   build job:   Session::apply ────┘  plan+apply | destroy ───▶ ApplyResult { state, resources }
//!                    every stdout/stderr line ──▶ mpsc::Sender<JobLog>
//!                    CancellationToken ──▶ SIGINT, SIGKILL after the grace period
//! ```
//!
//! - [`tar`]: [`extract`], the strict unpacking of untrusted uploads (the CLI packs
//!   them with `codersdk::archive::pack_dir`).
//! - [`session`]: [`Terraform`], [`Session`], the curated environment.
//! - [`parse`]: typed [`Resource`](super::Resource)s, [`Agent`](super::Agent)s,
//!   [`Parameter`](super::Parameter)s from `terraform show -json`, and [`merge_import`].

mod deps;
pub mod parse;
mod process;
pub mod session;
pub mod tar;
mod template;

pub use parse::{
    graph_edges, merge_import, parse_plan, parse_state, ParseError, PlanResult, StateResources,
};
pub use process::ProcessError;
pub use session::{
    ApplyError, ApplyResult, ImportResult, Session, SetupError, Terraform, TerraformError,
};
pub use tar::{extract, ExtractError, ExtractLimits, ExtractSummary};
pub use template::sanitize_template;
