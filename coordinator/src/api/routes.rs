//! Route declarations: every route names, beside its method and path, the
//! credential it takes ([`Access`]), so no route can be added without one,
//! and [`super::route_table`] lists them all (`tests/routes.rs` compares that
//! list with the one it expects).
//!
//! The access level says who may call the route at all; the handler's
//! extractor enforces it (`Session`, `AgentSession`, the provisioner and
//! relay keys, coderd's mesh secret), and what that caller may do with a
//! particular object is [`crate::authz::authorize`]'s decision.

use axum::handler::Handler;
use axum::http::Method;
use axum::routing::{self, MethodFilter, MethodRouter};
use axum::Router;

use super::AppState;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Access {
    /// Anyone: health, build info, the relay map, first-user setup, login,
    /// the agent binary, the login page and the dashboard's assets.
    Public,
    /// A user's session or API token (header, or cookie with CSRF and
    /// origin checks); else 401.
    User,
    /// A dashboard page on the session cookie; without a session the browser
    /// is sent to the login page.
    Dashboard,
    /// A workspace agent's token (`/workspaceagents/me/…`); else 401.
    Agent,
    /// The deployment's provisioner key (`--provisioner-psk-file`); without
    /// one configured, 404.
    Provisioner,
    /// The relay-verification key (`--derp-verify-clients-psk-file`); to
    /// anyone else, and without one configured, 404.
    RelayPsk,
    /// This coderd's own mesh peer, by its per-process secret; else 401.
    Coderd,
    /// The embedded relay: a client proves its node key in the relay
    /// handshake, and only keys an authenticated peer announced are admitted.
    RelayNode,
}

/// One declared route: `ANY` stands for a route that takes every method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub method: Method,
    pub path: String,
    pub access: Access,
}

/// A router whose routes each declare an [`Access`].
#[derive(Debug)]
pub struct Routes {
    router: Router<AppState>,
    table: Vec<Route>,
}

impl Default for Routes {
    fn default() -> Self {
        Routes::new()
    }
}

impl Routes {
    pub fn new() -> Self {
        Routes { router: Router::new(), table: Vec::new() }
    }

    fn on(
        mut self,
        method: Method,
        path: &'static str,
        access: Access,
        r: MethodRouter<AppState>,
    ) -> Self {
        self.router = self.router.route(path, r);
        self.table.push(Route { method, path: path.to_owned(), access });
        self
    }

    pub fn get<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        access: Access,
        h: H,
    ) -> Self {
        self.on(Method::GET, path, access, routing::on(MethodFilter::GET, h))
    }

    pub fn post<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        access: Access,
        h: H,
    ) -> Self {
        self.on(Method::POST, path, access, routing::on(MethodFilter::POST, h))
    }

    pub fn patch<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        access: Access,
        h: H,
    ) -> Self {
        self.on(Method::PATCH, path, access, routing::on(MethodFilter::PATCH, h))
    }

    pub fn put<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        access: Access,
        h: H,
    ) -> Self {
        self.on(Method::PUT, path, access, routing::on(MethodFilter::PUT, h))
    }

    pub fn delete<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        access: Access,
        h: H,
    ) -> Self {
        self.on(Method::DELETE, path, access, routing::on(MethodFilter::DELETE, h))
    }

    /// A route for every method (the relay's upgrade).
    pub fn any<H: Handler<T, AppState>, T: 'static>(
        self,
        path: &'static str,
        access: Access,
        h: H,
    ) -> Self {
        self.on(any_method(), path, access, routing::any(h))
    }

    pub fn merge(mut self, other: Routes) -> Self {
        self.router = self.router.merge(other.router);
        self.table.extend(other.table);
        self
    }

    /// Applies layers, a fallback, … to the router; the table is unchanged.
    pub fn map(mut self, f: impl FnOnce(Router<AppState>) -> Router<AppState>) -> Self {
        self.router = f(self.router);
        self
    }

    /// The declared routes, with `prefix` before each path.
    pub fn table(&self, prefix: &str) -> impl Iterator<Item = Route> + '_ {
        let prefix = prefix.to_owned();
        self.table.iter().map(move |r| Route { path: format!("{prefix}{}", r.path), ..r.clone() })
    }

    pub fn into_router(self) -> Router<AppState> {
        self.router
    }
}

/// How the table spells a route that takes every method.
pub fn any_method() -> Method {
    Method::from_bytes(b"ANY").unwrap_or_default()
}
