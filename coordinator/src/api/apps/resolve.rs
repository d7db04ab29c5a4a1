//! Finds the agent and app a [`Target`](super::target::Target) names, and
//! describes it for [`crate::authz`], which decides whether the requesting
//! user may use it.

use super::target::{AppRef, WorkspaceRef};
pub use crate::authz::{AccessMethod, PathAppConfig, Share};
use crate::database::{agents, apps, port_shares};
use sqlx::PgPool;

/// One agent of a live workspace's latest build.
pub use crate::database::agents::AgentTarget;

/// Why a target cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ResolveError {
    #[error("no such workspace or agent")]
    NotFound,
    #[error("the workspace has several agents; name one: WORKSPACE.AGENT")]
    Ambiguous,
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

/// The agent `ws` names (its only agent when it names none).
pub async fn agent(db: &PgPool, ws: &WorkspaceRef) -> Result<AgentTarget, ResolveError> {
    let rows = agents::of_workspace_named(db, &ws.owner, &ws.workspace).await?;
    match &ws.agent {
        Some(name) => {
            rows.into_iter().find(|r| &r.agent_name == name).ok_or(ResolveError::NotFound)
        }
        None => {
            let mut it = rows.into_iter();
            match (it.next(), it.next()) {
                (Some(a), None) => Ok(a),
                (None, _) => Err(ResolveError::NotFound),
                (Some(_), Some(_)) => Err(ResolveError::Ambiguous),
            }
        }
    }
}

/// An app as the proxy needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct App {
    pub share: Share,
    /// Where the app listens on the agent's host.
    pub port: u16,
    /// The path prefix of the app's URL (`/` or e.g. `/ui/`).
    pub base_path: String,
    /// The `Host` header the app expects.
    pub host: String,
}

/// Why an app's URL cannot be proxied.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AppUrlError {
    #[error("the app's url {0:?} is not a valid URL")]
    Invalid(String),
    #[error("the app's url must be http:// (got {0:?})")]
    Scheme(String),
    #[error("the app must listen on the agent's host (localhost or 127.0.0.1), not {0:?}")]
    Host(String),
}

impl App {
    /// A dev URL: a port on the agent's host, opening at `share`.
    pub fn port(port: u16, share: Share) -> App {
        App { share, port, base_path: "/".into(), host: format!("localhost:{port}") }
    }

    /// From a `coder_app` row's `url` and `share`.
    pub fn from_url(url: &str, share: &str) -> Result<App, AppUrlError> {
        let u = url::Url::parse(url).map_err(|_| AppUrlError::Invalid(url.to_owned()))?;
        if u.scheme() != "http" {
            return Err(AppUrlError::Scheme(u.scheme().to_owned()));
        }
        let host = u.host_str().unwrap_or_default();
        // The agent's `tcp:` service connects to its own loopback.
        if !matches!(host, "localhost" | "127.0.0.1" | "[::1]") {
            return Err(AppUrlError::Host(host.to_owned()));
        }
        let port = u.port_or_known_default().unwrap_or(80);
        let mut base_path = u.path().to_owned();
        if !base_path.ends_with('/') {
            base_path.push('/');
        }
        Ok(App {
            share: Share::parse(share),
            port,
            base_path,
            host: match u.port() {
                Some(p) => format!("{host}:{p}"),
                None => host.to_owned(),
            },
        })
    }

    /// The upstream path for a request below the app's prefix (`rest` starts
    /// with `/`), with the query.
    pub fn upstream_path(&self, rest: &str, query: Option<&str>) -> String {
        let mut p = format!("{}{}", self.base_path.trim_end_matches('/'), rest);
        if p.is_empty() {
            p.push('/');
        }
        if let Some(q) = query {
            p.push('?');
            p.push_str(q);
        }
        p
    }
}

/// The app `app` of `agent`, or `None`. A port opens at its stored share
/// level (the owner's only without one); ports and apps alike at most at the
/// deployment's `max` share level.
pub async fn app(
    db: &PgPool,
    agent: &AgentTarget,
    app: &AppRef,
    max: Share,
) -> Result<Option<Result<App, AppUrlError>>, sqlx::Error> {
    let found = match app {
        AppRef::Port(p) => {
            let level = port_shares::level(db, agent.workspace_id, &agent.agent_name, *p).await?;
            Some(Ok(App::port(*p, level.as_deref().map(Share::parse).unwrap_or(Share::Owner))))
        }
        AppRef::Slug(slug) => {
            let row = apps::url_and_share(db, agent.agent_id, slug).await?;
            row.map(|(url, share)| App::from_url(&url, &share))
        }
    };
    Ok(found.map(|r| r.map(|a| App { share: a.share.capped(max), ..a })))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn app_urls() {
        let a = App::from_url("http://localhost:8000", "owner").unwrap();
        assert_eq!((a.port, a.host.as_str()), (8000, "localhost:8000"));
        assert_eq!(a.upstream_path("/x/y", Some("a=1")), "/x/y?a=1");
        assert_eq!(a.upstream_path("/", None), "/");
        let b = App::from_url("http://127.0.0.1:9000/ui", "authenticated").unwrap();
        assert_eq!(b.upstream_path("/index.html", None), "/ui/index.html");
        assert_eq!(b.share, Share::Authenticated);
        assert_eq!(App::from_url("http://localhost", "owner").unwrap().port, 80);
        assert!(matches!(
            App::from_url("https://localhost:1", "owner"),
            Err(AppUrlError::Scheme(_))
        ));
        assert!(matches!(App::from_url("http://10.0.0.1:80", "owner"), Err(AppUrlError::Host(_))));
        assert!(matches!(App::from_url("::", "owner"), Err(AppUrlError::Invalid(_))));
    }
}
