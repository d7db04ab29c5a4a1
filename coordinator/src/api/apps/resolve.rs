//! Finds the agent and app a [`Target`](super::target::Target) names, and
//! decides whether the requesting user may use it.

use sqlx::PgPool;
use uuid::Uuid;

use super::target::{AppRef, WorkspaceRef};
use crate::database::{agents, apps};

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

/// Who may open an app (`coder_app.share`). `public` is not offered: every
/// app request needs a session, so it is treated as `authenticated`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Share {
    Owner,
    Authenticated,
}

impl Share {
    pub fn parse(s: &str) -> Share {
        match s {
            "authenticated" | "public" => Share::Authenticated,
            // Unknown levels fail closed.
            _ => Share::Owner,
        }
    }

    /// Whether `user` (with the site owner role or not) may use an app of a
    /// workspace owned by `workspace_owner`.
    pub fn allows(self, user: Uuid, site_owner: bool, workspace_owner: Uuid) -> bool {
        match self {
            Share::Owner => user == workspace_owner || site_owner,
            Share::Authenticated => true,
        }
    }
}

/// How a request reaches an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccessMethod {
    /// On an origin of its own (`--wildcard-access-url`).
    Subdomain,
    /// `/@OWNER/WORKSPACE/apps/…`: on the dashboard's origin, where the
    /// app's scripts act as whoever opened it.
    Path,
}

/// The operator's opt-ins for path apps (`coderd server --dangerous-*`).
/// By default (as in Coder) a path app opens for its workspace's owner only,
/// whatever its share level, and its responses are sandboxed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PathAppConfig {
    /// Share levels above `owner` apply to path apps too
    /// (`--dangerous-allow-path-app-sharing`).
    pub allow_sharing: bool,
    /// Site owners may open other users' path apps
    /// (`--dangerous-allow-path-app-site-owner-access`).
    pub allow_site_owner_access: bool,
    /// Proxied path-app responses go without `Content-Security-Policy:
    /// sandbox …` (`--dangerous-disable-path-app-csp-sandbox`).
    pub disable_csp_sandbox: bool,
}

/// Whether a user may open an app.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    Allowed,
    /// Not this user's to see: answered like a missing app.
    Hidden,
    /// The user could open it on its own origin, but a path app runs on the
    /// dashboard's, which only the workspace's owner may use by default.
    PathAppOwnerOnly,
}

/// Coder's rule (`workspaceapps/db.go`): over a path, sharing counts only
/// when the operator allows it, and a site owner opens another user's app
/// only when the operator allows that too.
pub fn access(
    share: Share,
    method: AccessMethod,
    path: PathAppConfig,
    user: Uuid,
    site_owner: bool,
    workspace_owner: Uuid,
) -> Access {
    if !share.allows(user, site_owner, workspace_owner) {
        return Access::Hidden;
    }
    if method == AccessMethod::Subdomain || user == workspace_owner {
        return Access::Allowed;
    }
    let effective = if path.allow_sharing { share } else { Share::Owner };
    let allowed = match effective {
        Share::Authenticated => true,
        Share::Owner => site_owner && path.allow_site_owner_access,
    };
    if allowed {
        Access::Allowed
    } else {
        Access::PathAppOwnerOnly
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
    /// A dev URL: a port on the agent's host, for the workspace owner only.
    pub fn port(port: u16) -> App {
        App { share: Share::Owner, port, base_path: "/".into(), host: format!("localhost:{port}") }
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

/// The app `app` of `agent`, or `None`.
pub async fn app(
    db: &PgPool,
    agent: Uuid,
    app: &AppRef,
) -> Result<Option<Result<App, AppUrlError>>, sqlx::Error> {
    match app {
        AppRef::Port(p) => Ok(Some(Ok(App::port(*p)))),
        AppRef::Slug(slug) => {
            let row = apps::url_and_share(db, agent, slug).await?;
            Ok(row.map(|(url, share)| App::from_url(&url, &share)))
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn share_levels() {
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        assert!(Share::Owner.allows(alice, false, alice));
        assert!(!Share::Owner.allows(bob, false, alice));
        assert!(Share::Owner.allows(bob, true, alice));
        assert!(Share::Authenticated.allows(bob, false, alice));
        assert_eq!(Share::parse("bogus"), Share::Owner);
    }

    #[test]
    fn path_apps_open_for_their_owner_unless_the_operator_opts_in() {
        use AccessMethod::{Path, Subdomain};
        let (alice, bob) = (Uuid::new_v4(), Uuid::new_v4());
        let strict = PathAppConfig::default();
        let sharing = PathAppConfig { allow_sharing: true, ..strict };
        let site_owners = PathAppConfig { allow_site_owner_access: true, ..strict };
        let a = |share, method, cfg, user, site_owner| {
            access(share, method, cfg, user, site_owner, alice)
        };
        // The owner's own apps, any way.
        for cfg in [strict, sharing, site_owners] {
            for share in [Share::Owner, Share::Authenticated] {
                assert_eq!(a(share, Path, cfg, alice, false), Access::Allowed);
            }
        }
        // Subdomain apps follow the share level alone.
        assert_eq!(a(Share::Owner, Subdomain, strict, bob, true), Access::Allowed);
        assert_eq!(a(Share::Authenticated, Subdomain, strict, bob, false), Access::Allowed);
        assert_eq!(a(Share::Owner, Subdomain, strict, bob, false), Access::Hidden);
        // Path apps: refused to others by default, with a reason when the
        // share level would let them in.
        assert_eq!(a(Share::Owner, Path, strict, bob, false), Access::Hidden);
        assert_eq!(a(Share::Owner, Path, sharing, bob, false), Access::Hidden);
        assert_eq!(a(Share::Owner, Path, strict, bob, true), Access::PathAppOwnerOnly);
        assert_eq!(a(Share::Authenticated, Path, strict, bob, false), Access::PathAppOwnerOnly);
        assert_eq!(a(Share::Authenticated, Path, strict, bob, true), Access::PathAppOwnerOnly);
        assert_eq!(
            a(Share::Authenticated, Path, site_owners, bob, false),
            Access::PathAppOwnerOnly
        );
        // Each opt-in opens what it names and nothing more.
        assert_eq!(a(Share::Authenticated, Path, sharing, bob, false), Access::Allowed);
        assert_eq!(a(Share::Owner, Path, sharing, bob, true), Access::PathAppOwnerOnly);
        assert_eq!(a(Share::Owner, Path, site_owners, bob, true), Access::Allowed);
        assert_eq!(a(Share::Authenticated, Path, site_owners, bob, true), Access::Allowed);
    }

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
