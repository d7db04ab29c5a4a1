//! Who a coordination connection speaks for, and the checks that decide what
//! it may reach: at connect, on every tunnel request, and again every few
//! seconds, so a revoked token or a deleted workspace tears tunnels down.

use sqlx::PgPool;
use uuid::Uuid;

/// The authenticated party behind a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Principal {
    /// A workspace agent.
    Agent { agent_id: Uuid },
    /// A user, through the session token (api key) `key_id`.
    User { user_id: Uuid, key_id: String },
    /// This `coderd` process itself (app proxy, web terminal): it authorizes
    /// each request on its own before it dials, so it may reach any live agent.
    Coderd,
}

impl Principal {
    pub fn agent(agent_id: Uuid) -> Self {
        Principal::Agent { agent_id }
    }

    pub fn user(user_id: Uuid, key_id: String) -> Self {
        Principal::User { user_id, key_id }
    }

    /// The user whose reach [`may_reach`] checks, for principals that open
    /// tunnels; `coderd` reaches as nobody in particular with the owner role.
    pub(crate) fn reaching_user(&self) -> Option<Uuid> {
        match self {
            Principal::Agent { .. } => None,
            Principal::User { user_id, .. } => Some(*user_id),
            Principal::Coderd => Some(Uuid::nil()),
        }
    }
}

/// The result of re-checking a principal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Still valid; for users, whether they hold the owner role.
    Valid {
        owner: bool,
    },
    Revoked,
}

/// Re-checks that the principal's credentials still hold: the user's api key
/// is unexpired and the user active; the agent still belongs to the latest
/// build of a workspace that is not deleted.
pub(crate) async fn standing(db: &PgPool, who: &Principal) -> Result<Standing, sqlx::Error> {
    match who {
        Principal::User { user_id, key_id } => {
            let roles: Option<Vec<String>> = sqlx::query_scalar(
                "SELECT u.roles FROM api_keys k JOIN users u ON u.id = k.user_id
                 WHERE k.id = $1 AND k.user_id = $2 AND k.expires_at > now()
                   AND NOT u.deleted AND u.status = 'active'",
            )
            .bind(key_id)
            .bind(user_id)
            .fetch_optional(db)
            .await?;
            Ok(match roles {
                Some(roles) => Standing::Valid { owner: roles.iter().any(|r| r == "owner") },
                None => Standing::Revoked,
            })
        }
        Principal::Coderd => Ok(Standing::Valid { owner: true }),
        Principal::Agent { agent_id } => {
            Ok(if agent_workspace_owner(db, *agent_id).await?.is_some() {
                Standing::Valid { owner: false }
            } else {
                Standing::Revoked
            })
        }
    }
}

/// The owner of the live workspace whose latest build has agent `agent`.
async fn agent_workspace_owner(db: &PgPool, agent: Uuid) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT w.owner_id
         FROM workspace_agents a
         JOIN workspace_resources r ON r.id = a.resource_id
         JOIN workspace_builds b ON b.job_id = r.job_id
         JOIN workspaces w ON w.id = b.workspace_id
         WHERE a.id = $1 AND NOT w.deleted
           AND b.build_number = (SELECT max(build_number) FROM workspace_builds WHERE workspace_id = w.id)
         LIMIT 1",
    )
    .bind(agent)
    .fetch_optional(db)
    .await
}

/// Whether a user may open a tunnel to `agent`: it is an agent of a live
/// workspace they own, or they are an owner.
pub async fn may_reach(
    db: &PgPool,
    user_id: Uuid,
    owner_role: bool,
    agent: Uuid,
) -> Result<bool, sqlx::Error> {
    Ok(match agent_workspace_owner(db, agent).await? {
        Some(owner) => owner == user_id || owner_role,
        None => false,
    })
}

/// Whether a client may resume peer id `peer`: only its own user's client
/// peer (live or lost) can be resumed, so nobody takes over another's node id.
pub async fn may_resume(db: &PgPool, user_id: Uuid, peer: Uuid) -> Result<bool, sqlx::Error> {
    let owner: Option<Option<Uuid>> =
        sqlx::query_scalar("SELECT owner_id FROM peers WHERE id = $1 AND kind = 'client'")
            .bind(peer)
            .fetch_optional(db)
            .await?;
    Ok(owner.flatten() == Some(user_id))
}
