//! Every permission decision of coderd, in one function:
//! [`authorize`]`(subject, action, object)`, after Coder's
//! `rbac.Authorize` (which `dbauthz` calls around every query).
//!
//! Handlers authenticate (a [`Subject`] comes from the session, the agent
//! token, the provisioner key or coderd's own mesh secret), load the row
//! they act on, describe it as an [`Object`] with the facts a rule needs
//! (its owner, whether a version is the active one, an app's share level),
//! and ask. The handler decides only how a refusal looks to the caller
//! (often a 404, so that another user's things do not even seem to exist);
//! the rules live here, so new roles (template-admin, user-admin, auditor)
//! are new arms of [`authorize`], not edits to handlers.
//!
//! Which routes need which kind of credential at all is declared beside
//! each route (`api::Access`); this module decides what an authenticated
//! party may do with a particular object.

use codersdk::Role;
use uuid::Uuid;

/// The authenticated party a decision is about.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Subject {
    /// A user, by session or API token, with the roles they hold.
    User { id: Uuid, roles: Vec<Role> },
    /// A workspace agent, by its agent token.
    Agent { agent_id: Uuid },
    /// This coderd process itself (its mesh peer: the app proxy and the web
    /// terminal), which authorizes each user request before it dials.
    Coderd,
    /// An external provisioner daemon, by the deployment's pre-shared key.
    Provisioner,
    /// A request without credentials: it may open only `public` apps and
    /// ports (when the deployment allows that level).
    Anonymous,
}

impl Subject {
    /// A user with the roles stored for them.
    pub fn user(id: Uuid, roles: &[Role]) -> Subject {
        Subject::User { id, roles: roles.to_vec() }
    }

    fn has_role(&self, role: Role) -> bool {
        matches!(self, Subject::User { roles, .. } if roles.contains(&role))
    }

    /// Whether this is the user `id`.
    fn is_user(&self, user: Uuid) -> bool {
        matches!(self, Subject::User { id, .. } if *id == user)
    }
}

/// What the subject wants to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    Read,
    Create,
    Update,
    Delete,
    /// Build a workspace from a template version.
    Use,
    /// Open a connection to an agent: SSH, tunnels, port forwards, the
    /// web terminal.
    Connect,
    /// Open a workspace app through coderd's proxy.
    ApplicationConnect,
}

/// Who may open an app (`coder_app.share`) or a dev-URL port (its port
/// share), ordered from narrowest to widest. What is stored is capped by the
/// deployment's `--max-port-share-level` ([`Share::capped`]) when read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Share {
    Owner,
    Authenticated,
    /// Anyone, without logging in.
    Public,
}

impl Share {
    /// A stored level; unknown levels fail closed.
    pub fn parse(s: &str) -> Share {
        Share::from_name(s).unwrap_or(Share::Owner)
    }

    /// A level a user asked for: `None` when it is not one.
    pub fn from_name(s: &str) -> Option<Share> {
        match s {
            "owner" => Some(Share::Owner),
            "authenticated" => Some(Share::Authenticated),
            "public" => Some(Share::Public),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Share::Owner => "owner",
            Share::Authenticated => "authenticated",
            Share::Public => "public",
        }
    }

    /// This level, at most `max` (the deployment's maximum).
    pub fn capped(self, max: Share) -> Share {
        self.min(max)
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

/// What an action is on, with the facts the rules need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Object {
    /// Deployment-wide state (the coordinator's debug view).
    Deployment,
    /// The replica registry (`GET /api/v2/replicas`): internal addresses
    /// and health of every coderd; owners only, like Coder's.
    Replicas,
    /// The user directory: listing every user, creating users.
    Users,
    /// One user's profile.
    User {
        id: Uuid,
    },
    /// One user's account: suspend, activate, reset the password (`Update`),
    /// delete; `owner` when the user holds the owner role, which only
    /// owners may touch.
    UserAccount {
        id: Uuid,
        owner: bool,
    },
    /// Holding `role`: granting it (`Create`) or taking it away (`Delete`).
    RoleAssignment {
        role: Role,
    },
    /// The audit log.
    AuditLog,
    /// An API key (session or personal token) of `owner`.
    ApiKey {
        owner: Uuid,
    },
    /// An uploaded file (template archive).
    File {
        created_by: Uuid,
    },
    Template,
    /// A template version; `active` when it is its template's active one.
    TemplateVersion {
        active: bool,
    },
    /// Every user's workspaces at once (`?owner=all`).
    Workspaces,
    Workspace {
        owner: Uuid,
    },
    WorkspaceBuild {
        owner: Uuid,
    },
    /// The port shares of a workspace of `owner`: reading them is reading
    /// the workspace; changing them is the owner's (and owners'), not a
    /// template-admin's, who may not open other users' apps either.
    PortShares {
        owner: Uuid,
    },
    /// An agent of a live workspace of `owner`.
    Agent {
        owner: Uuid,
    },
    /// An app (or a dev-URL port) of an agent of a workspace of `owner`.
    App {
        owner: Uuid,
        share: Share,
        method: AccessMethod,
        path_apps: PathAppConfig,
    },
    /// The provisioner job queue (acquire, heartbeat, complete).
    ProvisionerJobs,
}

/// A refusal. How it looks to the caller (403, or 404 to hide that the
/// object exists) is the handler's choice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Forbidden {
    #[error("not permitted")]
    Denied,
    /// The user could open this app on its own origin, but a path app runs
    /// on the dashboard's, which only the workspace's owner may use unless
    /// the operator opted in.
    #[error("path apps open for their workspace's owner only")]
    PathAppOwnerOnly,
}

/// The one permission check, after Coder's built-in roles (roles add up;
/// every user is also a member):
///
/// - `owner`: everything, except minting another user's tokens.
/// - `template-admin`: templates, their versions and files; reads every
///   workspace and user; builds (starts, stops, deletes, cancels) any
///   workspace. As in Coder, it may not connect to (SSH, tunnels, apps)
///   or create workspaces for others.
/// - `user-admin`: reads and creates users; suspends, activates, deletes and
///   resets the password of any user who is not an owner; grants and
///   removes every role but `owner`.
/// - `auditor`: reads the audit log and every resource (not apps or
///   connections, which are not reads); changes nothing.
/// - `member`: their own workspaces, builds, agents, keys and files; reads
///   templates, and builds only a template's active version.
///
/// Agents, provisioners and coderd reach only what their own routes serve
/// (and coderd any live agent).
pub fn authorize(subject: &Subject, action: Action, object: &Object) -> Result<(), Forbidden> {
    if allowed(subject, action, object) {
        return Ok(());
    }
    match object {
        Object::App { owner, share, method: AccessMethod::Path, .. }
            if action == Action::ApplicationConnect && share_allows(subject, *share, *owner) =>
        {
            Err(Forbidden::PathAppOwnerOnly)
        }
        _ => Err(Forbidden::Denied),
    }
}

/// What a subject's roles grant it, besides what it owns.
#[derive(Debug, Clone, Copy)]
struct Grants {
    owner: bool,
    template_admin: bool,
    user_admin: bool,
    /// Reads everything but apps and connections.
    reads_all: bool,
}

impl Grants {
    fn of(subject: &Subject) -> Grants {
        let owner = subject.has_role(Role::Owner);
        let template_admin = owner || subject.has_role(Role::TemplateAdmin);
        let user_admin = owner || subject.has_role(Role::UserAdmin);
        Grants {
            owner,
            template_admin,
            user_admin,
            reads_all: owner || subject.has_role(Role::Auditor),
        }
    }
}

fn allowed(subject: &Subject, action: Action, object: &Object) -> bool {
    use Action::{Connect, Read, Update};
    match (subject, object) {
        (Subject::Coderd, Object::Agent { .. }) => action == Connect,
        (Subject::Provisioner, Object::ProvisionerJobs) => matches!(action, Read | Update),
        (Subject::User { .. }, object) => {
            user_allowed(subject, Grants::of(subject), action, *object)
        }
        (Subject::Anonymous, Object::App { owner, share, method, path_apps }) => {
            action == Action::ApplicationConnect
                && app_allowed(subject, false, *owner, *share, *method, *path_apps)
        }
        _ => false,
    }
}

fn user_allowed(subject: &Subject, g: Grants, action: Action, object: Object) -> bool {
    use Action::*;
    let read = action == Read;
    match object {
        Object::Deployment => g.owner || (read && g.reads_all),
        Object::Replicas => g.owner,
        Object::ProvisionerJobs => g.owner,
        Object::AuditLog => read && g.reads_all,
        Object::Users => match action {
            Read => g.reads_all || g.user_admin || g.template_admin,
            Create => g.user_admin,
            _ => g.owner,
        },
        Object::User { id } => {
            read && (subject.is_user(id) || g.reads_all || g.user_admin || g.template_admin)
        }
        // Nobody suspends, deletes or resets themselves this way (the
        // handler refuses it with a reason); owners' accounts are owners'.
        Object::UserAccount { id: _, owner: true } => g.owner || (read && g.reads_all),
        Object::UserAccount { .. } => g.user_admin || (read && g.reads_all),
        Object::RoleAssignment { role: Role::Owner } => g.owner,
        Object::RoleAssignment { .. } => g.user_admin,
        // Tokens are personal: not even an owner mints one for someone else.
        Object::ApiKey { owner } if action == Create => subject.is_user(owner),
        Object::ApiKey { owner } => subject.is_user(owner) || g.owner || (read && g.reads_all),
        Object::File { created_by } => {
            subject.is_user(created_by) || g.template_admin || (read && g.reads_all)
        }
        Object::Template => read || g.template_admin,
        Object::TemplateVersion { active } => match action {
            Read => true,
            Use => active || g.template_admin,
            _ => g.template_admin,
        },
        Object::Workspaces => read && (g.reads_all || g.template_admin),
        Object::Workspace { owner } => {
            subject.is_user(owner)
                || g.owner
                || (read && (g.reads_all || g.template_admin))
                || (g.template_admin && matches!(action, Update | Delete))
        }
        Object::WorkspaceBuild { owner } => {
            subject.is_user(owner) || g.template_admin || (read && g.reads_all)
        }
        Object::Agent { owner } | Object::PortShares { owner } => {
            subject.is_user(owner) || g.owner || (read && (g.reads_all || g.template_admin))
        }
        Object::App { owner, share, method, path_apps } => {
            action == ApplicationConnect
                && app_allowed(subject, g.owner, owner, share, method, path_apps)
        }
    }
}

/// Whether the share level alone lets `subject` use an app of `owner`.
fn share_allows(subject: &Subject, share: Share, owner: Uuid) -> bool {
    match share {
        Share::Owner => subject.is_user(owner) || subject.has_role(Role::Owner),
        Share::Authenticated => matches!(subject, Subject::User { .. }),
        Share::Public => matches!(subject, Subject::User { .. } | Subject::Anonymous),
    }
}

/// Coder's rule (`workspaceapps/db.go`): over a path, sharing counts only
/// when the operator allows it, and a site owner opens another user's app
/// only when the operator allows that too.
fn app_allowed(
    subject: &Subject,
    owner_role: bool,
    owner: Uuid,
    share: Share,
    method: AccessMethod,
    path: PathAppConfig,
) -> bool {
    if !share_allows(subject, share, owner) {
        return false;
    }
    if method == AccessMethod::Subdomain || subject.is_user(owner) {
        return true;
    }
    let effective = if path.allow_sharing { share } else { Share::Owner };
    match effective {
        Share::Authenticated | Share::Public => true,
        Share::Owner => owner_role && path.allow_site_owner_access,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Action::*;

    const ALICE: Uuid = Uuid::from_u128(1);
    const BOB: Uuid = Uuid::from_u128(2);

    fn member(id: Uuid) -> Subject {
        Subject::user(id, &[Role::Member])
    }

    fn owner(id: Uuid) -> Subject {
        Subject::user(id, &[Role::Owner])
    }

    fn agent() -> Subject {
        Subject::Agent { agent_id: Uuid::from_u128(10) }
    }

    const DENIED: Result<(), Forbidden> = Err(Forbidden::Denied);

    #[test]
    fn rules() {
        let alice = member(ALICE);
        let bob_owner = owner(BOB);
        let bob = member(BOB);
        let unknown_role = Subject::user(ALICE, &[]);
        let agent = agent();
        let ws = Object::Workspace { owner: ALICE };
        let table: Vec<(&Subject, Action, Object, Result<(), Forbidden>)> = vec![
            // Users.
            (&alice, Read, Object::User { id: ALICE }, Ok(())),
            (&alice, Read, Object::User { id: BOB }, DENIED),
            (&bob_owner, Read, Object::User { id: ALICE }, Ok(())),
            (&alice, Read, Object::Users, DENIED),
            (&alice, Create, Object::Users, DENIED),
            (&bob_owner, Read, Object::Users, Ok(())),
            (&bob_owner, Create, Object::Users, Ok(())),
            (&alice, Read, Object::Deployment, DENIED),
            (&bob_owner, Read, Object::Deployment, Ok(())),
            (&bob_owner, Read, Object::Replicas, Ok(())),
            (&alice, Read, Object::Replicas, DENIED),
            (&unknown_role, Read, Object::Users, DENIED),
            // Keys: personal; owners list and delete them, never mint.
            (&alice, Create, Object::ApiKey { owner: ALICE }, Ok(())),
            (&bob_owner, Create, Object::ApiKey { owner: ALICE }, DENIED),
            (&bob_owner, Read, Object::ApiKey { owner: ALICE }, Ok(())),
            (&bob_owner, Delete, Object::ApiKey { owner: ALICE }, Ok(())),
            (&bob, Delete, Object::ApiKey { owner: ALICE }, DENIED),
            (&bob, Read, Object::ApiKey { owner: ALICE }, DENIED),
            // Files: the uploader's and owners'.
            (&alice, Read, Object::File { created_by: ALICE }, Ok(())),
            (&bob, Read, Object::File { created_by: ALICE }, DENIED),
            (&bob_owner, Read, Object::File { created_by: ALICE }, Ok(())),
            // Templates: everyone reads, owners change.
            (&alice, Read, Object::Template, Ok(())),
            (&alice, Create, Object::Template, DENIED),
            (&alice, Update, Object::Template, DENIED),
            (&bob_owner, Update, Object::Template, Ok(())),
            (&alice, Read, Object::TemplateVersion { active: false }, Ok(())),
            (&alice, Create, Object::TemplateVersion { active: false }, DENIED),
            (&alice, Update, Object::TemplateVersion { active: true }, DENIED),
            (&bob_owner, Create, Object::TemplateVersion { active: false }, Ok(())),
            (&alice, Use, Object::TemplateVersion { active: true }, Ok(())),
            (&alice, Use, Object::TemplateVersion { active: false }, DENIED),
            (&bob_owner, Use, Object::TemplateVersion { active: false }, Ok(())),
            // Workspaces and what hangs off them.
            (&alice, Read, ws, Ok(())),
            (&alice, Create, ws, Ok(())),
            (&bob, Read, ws, DENIED),
            (&bob, Create, ws, DENIED),
            (&bob_owner, Create, ws, Ok(())),
            (&alice, Read, Object::Workspaces, DENIED),
            (&bob_owner, Read, Object::Workspaces, Ok(())),
            (&alice, Update, Object::WorkspaceBuild { owner: ALICE }, Ok(())),
            (&bob, Read, Object::WorkspaceBuild { owner: ALICE }, DENIED),
            (&alice, Connect, Object::Agent { owner: ALICE }, Ok(())),
            (&bob, Connect, Object::Agent { owner: ALICE }, DENIED),
            (&bob, Read, Object::Agent { owner: ALICE }, DENIED),
            (&bob_owner, Connect, Object::Agent { owner: ALICE }, Ok(())),
            (&Subject::Coderd, Connect, Object::Agent { owner: ALICE }, Ok(())),
            (&Subject::Coderd, Read, Object::Workspace { owner: ALICE }, DENIED),
            // Agent and provisioner credentials reach nothing of users'.
            (&agent, Read, ws, DENIED),
            (&agent, Connect, Object::Agent { owner: ALICE }, DENIED),
            (&agent, Read, Object::Template, DENIED),
            (&agent, Update, Object::ProvisionerJobs, DENIED),
            (&Subject::Provisioner, Update, Object::ProvisionerJobs, Ok(())),
            (&Subject::Provisioner, Read, ws, DENIED),
            (&alice, Update, Object::ProvisionerJobs, DENIED),
        ];
        for (subject, action, object, expected) in table {
            assert_eq!(
                authorize(subject, action, &object),
                expected,
                "{subject:?} {action:?} {object:?}"
            );
        }
    }

    #[test]
    fn team_roles() {
        let ta = Subject::user(BOB, &[Role::TemplateAdmin]);
        let ua = Subject::user(BOB, &[Role::UserAdmin]);
        let auditor = Subject::user(BOB, &[Role::Auditor]);
        let both = Subject::user(BOB, &[Role::Auditor, Role::TemplateAdmin]);
        let alice = member(ALICE);
        let (bob, bob_owner) = (member(BOB), owner(BOB));
        let ws = Object::Workspace { owner: ALICE };
        let build = Object::WorkspaceBuild { owner: ALICE };
        let agent = Object::Agent { owner: ALICE };
        let member_account = Object::UserAccount { id: ALICE, owner: false };
        let owner_account = Object::UserAccount { id: ALICE, owner: true };
        let owner_role = Object::RoleAssignment { role: Role::Owner };
        let auditor_role = Object::RoleAssignment { role: Role::Auditor };
        let table: Vec<(&Subject, Action, Object, bool)> = vec![
            // template-admin: templates and every workspace's builds; no
            // connections to others' workspaces, no user administration.
            (&ta, Create, Object::Template, true),
            (&ta, Update, Object::Template, true),
            (&ta, Delete, Object::Template, true),
            (&ta, Create, Object::TemplateVersion { active: false }, true),
            (&ta, Use, Object::TemplateVersion { active: false }, true),
            (&ta, Read, Object::File { created_by: ALICE }, true),
            (&ta, Read, Object::Workspaces, true),
            (&ta, Read, ws, true),
            (&ta, Update, ws, true),
            (&ta, Delete, ws, true),
            (&ta, Create, ws, false),
            (&ta, Create, build, true),
            (&ta, Update, build, true),
            (&ta, Read, agent, true),
            (&ta, Connect, agent, false),
            (&ta, Read, Object::Users, true),
            (&ta, Create, Object::Users, false),
            (&ta, Update, member_account, false),
            (&ta, Create, auditor_role, false),
            (&ta, Read, Object::AuditLog, false),
            (&ta, Read, Object::Deployment, false),
            (&ta, Delete, Object::ApiKey { owner: ALICE }, false),
            // user-admin: users and roles, never the owner's.
            (&ua, Read, Object::Users, true),
            (&ua, Create, Object::Users, true),
            (&ua, Read, Object::User { id: ALICE }, true),
            (&ua, Update, member_account, true),
            (&ua, Delete, member_account, true),
            (&ua, Update, owner_account, false),
            (&ua, Delete, owner_account, false),
            (&ua, Create, auditor_role, true),
            (&ua, Delete, auditor_role, true),
            (&ua, Create, owner_role, false),
            (&ua, Delete, owner_role, false),
            (&ua, Read, ws, false),
            (&ua, Create, Object::Template, false),
            (&ua, Read, Object::AuditLog, false),
            // auditor: reads everything, changes nothing, connects nowhere.
            (&auditor, Read, Object::AuditLog, true),
            (&auditor, Read, Object::Users, true),
            (&auditor, Read, Object::User { id: ALICE }, true),
            (&auditor, Read, Object::Deployment, true),
            (&auditor, Read, Object::Replicas, false),
            (&ta, Read, Object::Replicas, false),
            (&ua, Read, Object::Replicas, false),
            (&auditor, Read, Object::Workspaces, true),
            (&auditor, Read, ws, true),
            (&auditor, Read, build, true),
            (&auditor, Read, agent, true),
            (&auditor, Read, Object::ApiKey { owner: ALICE }, true),
            (&auditor, Read, Object::File { created_by: ALICE }, true),
            (&auditor, Create, Object::Users, false),
            (&auditor, Update, member_account, false),
            (&auditor, Create, auditor_role, false),
            (&auditor, Update, ws, false),
            (&auditor, Delete, ws, false),
            (&auditor, Create, build, false),
            (&auditor, Update, build, false),
            (&auditor, Connect, agent, false),
            (&auditor, Create, Object::Template, false),
            (&auditor, Create, Object::TemplateVersion { active: false }, false),
            (&auditor, Use, Object::TemplateVersion { active: false }, false),
            (&auditor, Delete, Object::ApiKey { owner: ALICE }, false),
            (&auditor, Update, Object::ProvisionerJobs, false),
            // Roles add up.
            (&both, Create, Object::Template, true),
            (&both, Read, Object::AuditLog, true),
            (&both, Connect, agent, false),
            // Owners: everything; members: none of it.
            (&bob_owner, Delete, owner_account, true),
            (&bob_owner, Create, owner_role, true),
            (&bob_owner, Read, Object::AuditLog, true),
            (&alice, Read, Object::AuditLog, false),
            (&alice, Update, Object::UserAccount { id: ALICE, owner: false }, false),
            (&alice, Create, auditor_role, false),
            (&alice, Delete, ws, true),
            (&bob, Delete, ws, false),
            (&bob, Create, build, false),
        ];
        for (subject, action, object, expected) in table {
            let expected = if expected { Ok(()) } else { DENIED };
            assert_eq!(
                authorize(subject, action, &object),
                expected,
                "{subject:?} {action:?} {object:?}"
            );
        }
    }

    #[test]
    fn path_apps_open_for_their_owner_unless_the_operator_opts_in() {
        use AccessMethod::{Path, Subdomain};
        use Forbidden::{Denied, PathAppOwnerOnly};
        let strict = PathAppConfig::default();
        let sharing = PathAppConfig { allow_sharing: true, ..strict };
        let site_owners = PathAppConfig { allow_site_owner_access: true, ..strict };
        let a = |share, method, path_apps, subject: &Subject| {
            let app = Object::App { owner: ALICE, share, method, path_apps };
            authorize(subject, ApplicationConnect, &app)
        };
        let (alice, bob, bob_owner) = (member(ALICE), member(BOB), owner(BOB));
        // The owner's own apps, any way.
        for cfg in [strict, sharing, site_owners] {
            for share in [Share::Owner, Share::Authenticated] {
                assert_eq!(a(share, Path, cfg, &alice), Ok(()));
                assert_eq!(a(share, Subdomain, cfg, &alice), Ok(()));
            }
        }
        // Subdomain apps follow the share level alone.
        assert_eq!(a(Share::Owner, Subdomain, strict, &bob_owner), Ok(()));
        assert_eq!(a(Share::Authenticated, Subdomain, strict, &bob), Ok(()));
        assert_eq!(a(Share::Owner, Subdomain, strict, &bob), Err(Denied));
        // Path apps: refused to others by default, with a reason when the
        // share level would let them in.
        assert_eq!(a(Share::Owner, Path, strict, &bob), Err(Denied));
        assert_eq!(a(Share::Owner, Path, sharing, &bob), Err(Denied));
        assert_eq!(a(Share::Owner, Path, strict, &bob_owner), Err(PathAppOwnerOnly));
        assert_eq!(a(Share::Authenticated, Path, strict, &bob), Err(PathAppOwnerOnly));
        assert_eq!(a(Share::Authenticated, Path, strict, &bob_owner), Err(PathAppOwnerOnly));
        assert_eq!(a(Share::Authenticated, Path, site_owners, &bob), Err(PathAppOwnerOnly));
        // Each opt-in opens what it names and nothing more.
        assert_eq!(a(Share::Authenticated, Path, sharing, &bob), Ok(()));
        assert_eq!(a(Share::Owner, Path, sharing, &bob_owner), Err(PathAppOwnerOnly));
        assert_eq!(a(Share::Owner, Path, site_owners, &bob_owner), Ok(()));
        assert_eq!(a(Share::Authenticated, Path, site_owners, &bob_owner), Ok(()));
        // Apps are opened, not read or connected to; agents open none.
        let app = Object::App {
            owner: ALICE,
            share: Share::Authenticated,
            method: Subdomain,
            path_apps: strict,
        };
        assert_eq!(authorize(&alice, Read, &app), Err(Denied));
        assert_eq!(authorize(&agent(), ApplicationConnect, &app), Err(Denied));
        // Anonymous visitors open public apps only, and over a path only
        // when the operator allows shared path apps.
        let anon = Subject::Anonymous;
        assert_eq!(a(Share::Public, Subdomain, strict, &anon), Ok(()));
        assert_eq!(a(Share::Authenticated, Subdomain, strict, &anon), Err(Denied));
        assert_eq!(a(Share::Owner, Subdomain, strict, &anon), Err(Denied));
        assert_eq!(a(Share::Public, Path, strict, &anon), Err(PathAppOwnerOnly));
        assert_eq!(a(Share::Public, Path, sharing, &anon), Ok(()));
        assert_eq!(authorize(&anon, Read, &Object::Workspace { owner: ALICE }), Err(Denied));
        assert_eq!(Share::parse("bogus"), Share::Owner);
        assert_eq!(Share::parse("public"), Share::Public);
        assert_eq!(Share::Public.capped(Share::Authenticated), Share::Authenticated);
        assert_eq!(Share::Owner.capped(Share::Public), Share::Owner);
        assert_eq!(Share::from_name("everyone"), None);
    }
}
