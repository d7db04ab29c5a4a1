//! `terraform-provider-coder`: the Terraform provider that workspace templates use to
//! declare agents, apps, parameters and metadata, served over Terraform's plugin
//! protocol v6 (via the `tf-provider` crate) under the address `coder/coder`.
//!
//! Resources `coder_agent`, `coder_app`, `coder_metadata`, `coder_script`, `coder_env`; data sources
//! `coder_workspace`, `coder_workspace_owner`, `coder_parameter`. The schema follows
//! Coder's provider (v2), so templates carry over. Build facts reach the provider as
//! environment variables set by the provisioner worker (see `README.md`).
//!
//! The worker installs the provider with [`write_cli_config`] and runs terraform with
//! [`terraform_env`]; the binary (`src/main.rs`) only calls [`serve`].

mod agent;
mod app;
mod cli_config;
mod init_script;
mod managed;
mod metadata;
mod parameter;
mod provider;
mod schema_util;
mod script;
mod workspace;

pub use cli_config::{
    platform, terraform_env, write_cli_config, CliConfigError, CLI_CONFIG_FILE_NAME,
    PROVIDER_SOURCE, PROVIDER_VERSION,
};
pub use init_script::{
    agent_binary_name, render as render_init_script, ARCHITECTURES, OPERATING_SYSTEMS,
};
pub use parameter::{
    check_declaration as check_parameter_declaration, parameter_env_var,
    resolve as resolve_parameter, ParameterError, ParameterSpec, ValidationSpec, PARAMETER_TYPES,
};
pub use provider::{CoderProvider, ACCESS_URL_ENV};
pub use workspace::TRANSITIONS;

/// The plugin server failed (could not listen, or the gRPC server stopped with an error).
#[derive(Debug, thiserror::Error)]
#[error("terraform provider server failed")]
pub struct ServeError(#[source] Box<dyn std::error::Error + Send + Sync>);

/// Serves the provider to the terraform process that started this one: prints the
/// go-plugin handshake line on stdout and answers gRPC until terraform stops it.
pub async fn serve() -> Result<(), ServeError> {
    tf_provider::serve("coder", CoderProvider::new()).await.map_err(|e| ServeError(e.into()))
}
