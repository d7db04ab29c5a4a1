//! The `coder` provider itself: its configuration block and the table of resources and
//! data sources it serves.
//!
//! The only provider setting is the access URL of the deployment, taken from the
//! `url` attribute of the `provider "coder"` block or, when that is unset, from the
//! `CODER_AGENT_URL` environment variable that the provisioner worker sets. `configure`
//! stores it in an [`AccessUrl`] cell that every resource and data source shares.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tf_provider::schema::{AttributeType, Schema};
use tf_provider::value::{Value, ValueEmpty};
use tf_provider::{map, AttributePath, Diagnostics, DynamicDataSource, DynamicResource, Provider};

use crate::agent::AgentResource;
use crate::app::AppResource;
use crate::managed::Managed;
use crate::metadata::MetadataResource;
use crate::parameter::ParameterDataSource;
use crate::schema_util::{block, optional, Str};
use crate::script::{EnvResource, ScriptResource};
use crate::workspace::{WorkspaceDataSource, WorkspaceOwnerDataSource};

/// Environment variable holding the deployment's access URL.
pub const ACCESS_URL_ENV: &str = "CODER_AGENT_URL";

/// The access URL, shared between the provider and its resources once configured.
#[derive(Debug, Clone, Default)]
pub(crate) struct AccessUrl(Arc<RwLock<Option<url::Url>>>);

impl AccessUrl {
    fn set(&self, url: url::Url) {
        if let Ok(mut guard) = self.0.write() {
            *guard = Some(url);
        }
    }

    /// The configured URL, or an error diagnostic saying how to configure it.
    pub(crate) fn get(&self, diags: &mut Diagnostics) -> Option<url::Url> {
        let url = self.0.read().ok().and_then(|guard| guard.clone());
        if url.is_none() {
            diags.root_error(
                "The Coder access URL is not configured",
                format!(
                    "Set the `{ACCESS_URL_ENV}` environment variable (the provisioner does) \
                     or the `url` attribute of the `provider \"coder\"` block."
                ),
            );
        }
        url
    }

    /// The configured URL as a string without a trailing slash, or `""` when unset.
    pub(crate) fn display(&self) -> String {
        self.0.read().ok().and_then(|guard| guard.as_ref().map(trim_url)).unwrap_or_default()
    }
}

/// `url` without the trailing `/` that `Url` adds to an empty path.
pub(crate) fn trim_url(url: &url::Url) -> String {
    url.as_str().trim_end_matches('/').to_owned()
}

/// Parses an access URL; only `http` and `https` make sense for agents to dial.
pub(crate) fn parse_access_url(raw: &str) -> Result<url::Url, String> {
    let url = url::Url::parse(raw).map_err(|e| format!("{raw:?} is not a valid URL: {e}"))?;
    match url.scheme() {
        "http" | "https" => Ok(url),
        other => Err(format!("{raw:?} has scheme {other:?}; the access URL must be http or https")),
    }
}

/// The provider configuration block.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ProviderConfig {
    url: Str,
}

/// The `coder` Terraform provider.
#[derive(Debug, Default)]
pub struct CoderProvider {
    access_url: AccessUrl,
}

impl CoderProvider {
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl Provider for CoderProvider {
    type Config<'a> = ProviderConfig;
    type MetaState<'a> = ValueEmpty;

    fn schema(&self, _diags: &mut Diagnostics) -> Option<Schema> {
        Some(Schema {
            version: 1,
            block: block(
                "The Coder provider declares workspace agents, apps and parameters.",
                vec![(
                    "url",
                    optional(
                        AttributeType::String,
                        "The URL to access Coder. Defaults to the `CODER_AGENT_URL` \
                         environment variable.",
                    ),
                )],
                vec![],
            ),
        })
    }

    async fn validate<'a>(&self, diags: &mut Diagnostics, config: ProviderConfig) -> Option<()> {
        if let Value::Value(raw) = &config.url {
            if let Err(e) = parse_access_url(raw) {
                diags.error("Invalid provider url", e, AttributePath::new("url"));
            }
        }
        Some(())
    }

    async fn configure<'a>(
        &self,
        diags: &mut Diagnostics,
        _terraform_version: String,
        config: ProviderConfig,
    ) -> Option<()> {
        let (raw, path) = match config.url {
            Value::Value(raw) => (Some(raw), AttributePath::new("url")),
            Value::Unknown => {
                diags.error_short(
                    "The provider url must be known at plan time",
                    AttributePath::new("url"),
                );
                return Some(());
            }
            Value::Null => (
                std::env::var(ACCESS_URL_ENV).ok().filter(|s| !s.is_empty()),
                AttributePath::root(),
            ),
        };
        if let Some(raw) = raw {
            match parse_access_url(&raw) {
                Ok(url) => self.access_url.set(url),
                Err(e) => diags.error("Invalid Coder access URL", e, path),
            }
        }
        Some(())
    }

    fn get_resources(
        &self,
        _diags: &mut Diagnostics,
    ) -> Option<HashMap<String, Box<dyn DynamicResource>>> {
        Some(map! {
            "agent" => Managed(AgentResource::new(self.access_url.clone())),
            "app" => Managed(AppResource),
            "metadata" => Managed(MetadataResource),
            "script" => Managed(ScriptResource),
            "env" => Managed(EnvResource),
        })
    }

    fn get_data_sources(
        &self,
        _diags: &mut Diagnostics,
    ) -> Option<HashMap<String, Box<dyn DynamicDataSource>>> {
        Some(map! {
            "workspace" => WorkspaceDataSource::new(self.access_url.clone()),
            "workspace_owner" => WorkspaceOwnerDataSource,
            "parameter" => ParameterDataSource,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn access_url_must_be_http() {
        assert!(parse_access_url("http://127.0.0.1:3000").is_ok());
        assert!(parse_access_url("https://coder.example.com/").is_ok());
        assert!(parse_access_url("ftp://x").is_err());
        assert!(parse_access_url("not a url").is_err());
    }

    #[test]
    fn trimmed_url_has_no_trailing_slash() {
        let url = parse_access_url("http://127.0.0.1:3000").unwrap();
        assert_eq!(trim_url(&url), "http://127.0.0.1:3000");
        let url = parse_access_url("https://x.example/coder/").unwrap();
        assert_eq!(trim_url(&url), "https://x.example/coder");
    }
}
