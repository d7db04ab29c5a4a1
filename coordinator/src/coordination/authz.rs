//! Who a coordination connection speaks for, and the checks that decide what
//! it may reach: at connect and on every tunnel request one by one, and in
//! bulk for all of a replica's connections ([`Sweep`]: two queries, however
//! many peers) every few seconds and whenever the database announces a
//! revocation, so a revoked token or a deleted workspace tears tunnels down.
//! The decision itself is [`crate::authz::authorize`] (`Connect` on the
//! agent); this module finds the facts it needs, in bulk.

use std::collections::{BTreeSet, HashMap};

use codersdk::Role;
use sqlx::PgPool;
use uuid::Uuid;

use crate::authz::{self, Action, Object, Subject};
use crate::database::{agents, api_keys};

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

    /// Whether its tunnels are checked with [`may_reach`]: users' and
    /// coderd's are; agents open none (the core refuses them).
    pub(crate) fn opens_tunnels(&self) -> bool {
        !matches!(self, Principal::Agent { .. })
    }
}

/// The result of re-checking a principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Standing {
    /// Still valid, as this subject (for users, with their current roles).
    Valid(Subject),
    Revoked,
}

/// Re-checks that the principal's credentials still hold: the user's api key
/// is unexpired and the user active; the agent still belongs to the latest
/// build of a workspace that is not deleted.
pub(crate) async fn standing(db: &PgPool, who: &Principal) -> Result<Standing, sqlx::Error> {
    let standing = match who {
        Principal::User { key_id, .. } => {
            let keys = key_standings(db, std::slice::from_ref(key_id)).await?;
            Verdicts { keys, asked_keys: [key_id.clone()].into(), ..Verdicts::default() }
                .standing(who)
        }
        Principal::Coderd => Some(Standing::Valid(Subject::Coderd)),
        Principal::Agent { agent_id } => {
            let agents = agent_owners(db, &[*agent_id]).await?;
            Verdicts { agents, asked_agents: [*agent_id].into(), ..Verdicts::default() }
                .standing(who)
        }
    };
    Ok(standing.unwrap_or(Standing::Revoked))
}

/// The valid ones among `keys` (unexpired, of an active user): key id →
/// (user, the user's roles).
async fn key_standings(
    db: &PgPool,
    keys: &[String],
) -> Result<HashMap<String, (Uuid, Vec<Role>)>, sqlx::Error> {
    let rows = api_keys::valid_holders(db, keys).await?;
    Ok(rows.into_iter().map(|k| (k.id, (k.user_id, k.roles.0))).collect())
}

/// The live ones among `agents` (of the latest build of a workspace that is
/// not deleted), each with the workspace's owner.
async fn agent_owners(db: &PgPool, agents: &[Uuid]) -> Result<HashMap<Uuid, Uuid>, sqlx::Error> {
    Ok(agents::live_owners(db, agents).await?.into_iter().collect())
}

/// The credentials and agents a re-authorization sweep checks: those of
/// every connection of the replica, in one query each.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Sweep {
    pub keys: BTreeSet<String>,
    pub agents: BTreeSet<Uuid>,
}

impl Sweep {
    /// Adds what `who` and its tunnels depend on.
    pub fn add(&mut self, who: &Principal, tunnels: impl IntoIterator<Item = Uuid>) {
        match who {
            Principal::User { key_id, .. } => {
                self.keys.insert(key_id.clone());
            }
            Principal::Agent { agent_id } => {
                self.agents.insert(*agent_id);
            }
            // No credential of its own to re-check; its tunnels are.
            Principal::Coderd => {}
        }
        self.agents.extend(tunnels);
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.agents.is_empty()
    }

    /// Runs the two queries.
    pub async fn run(self, db: &PgPool) -> Result<Verdicts, sqlx::Error> {
        let keys: Vec<String> = self.keys.iter().cloned().collect();
        let agents: Vec<Uuid> = self.agents.iter().copied().collect();
        Ok(Verdicts {
            keys: key_standings(db, &keys).await?,
            agents: agent_owners(db, &agents).await?,
            asked_keys: self.keys,
            asked_agents: self.agents,
        })
    }
}

/// What a [`Sweep`] found. Only what was asked is judged: a key or agent a
/// connection took on after the sweep started was checked when it did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct Verdicts {
    keys: HashMap<String, (Uuid, Vec<Role>)>,
    agents: HashMap<Uuid, Uuid>,
    asked_keys: BTreeSet<String>,
    asked_agents: BTreeSet<Uuid>,
}

impl Verdicts {
    /// The principal's standing, or `None` if it was not part of the sweep.
    pub fn standing(&self, who: &Principal) -> Option<Standing> {
        match who {
            Principal::User { user_id, key_id } => {
                if !self.asked_keys.contains(key_id) {
                    return None;
                }
                Some(match self.keys.get(key_id) {
                    Some((user, roles)) if user == user_id => {
                        Standing::Valid(Subject::User { id: *user, roles: roles.clone() })
                    }
                    _ => Standing::Revoked,
                })
            }
            Principal::Agent { agent_id } => {
                if !self.asked_agents.contains(agent_id) {
                    return None;
                }
                Some(if self.agents.contains_key(agent_id) {
                    Standing::Valid(Subject::Agent { agent_id: *agent_id })
                } else {
                    Standing::Revoked
                })
            }
            Principal::Coderd => Some(Standing::Valid(Subject::Coderd)),
        }
    }

    /// Whether `subject` may still reach `agent`, or `None` if the agent was
    /// not part of the sweep.
    pub fn may_reach(&self, subject: &Subject, agent: Uuid) -> Option<bool> {
        if !self.asked_agents.contains(&agent) {
            return None;
        }
        Some(self.agents.get(&agent).is_some_and(|owner| may_connect(subject, *owner)))
    }
}

fn may_connect(subject: &Subject, owner: Uuid) -> bool {
    authz::authorize(subject, Action::Connect, &Object::Agent { owner }).is_ok()
}

/// Whether `subject` may open a tunnel to `agent`, an agent of a live
/// workspace ([`crate::authz`] decides: its owner, site owners, coderd).
pub async fn may_reach(db: &PgPool, subject: &Subject, agent: Uuid) -> Result<bool, sqlx::Error> {
    let agents = agent_owners(db, &[agent]).await?;
    Ok(agents.get(&agent).is_some_and(|owner| may_connect(subject, *owner)))
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

#[cfg(test)]
mod tests {
    use super::*;
    use codersdk::Role;

    fn uuid(n: u128) -> Uuid {
        Uuid::from_u128(n)
    }

    #[test]
    fn verdicts_judge_only_what_the_sweep_asked() {
        let (alice, bob) = (uuid(1), uuid(2));
        let (alices_agent, bobs_agent, gone_agent, new_agent) =
            (uuid(10), uuid(11), uuid(12), uuid(13));
        let mut sweep = Sweep::default();
        sweep.add(&Principal::user(alice, "a".into()), [alices_agent, bobs_agent, gone_agent]);
        sweep.add(&Principal::user(bob, "b".into()), []);
        sweep.add(&Principal::user(bob, "stolen".into()), []);
        sweep.add(&Principal::agent(alices_agent), []);
        let v = Verdicts {
            keys: [
                ("a".to_owned(), (alice, vec![Role::Member])),
                ("b".to_owned(), (bob, vec![Role::Owner])),
                ("stolen".to_owned(), (alice, vec![])),
            ]
            .into(),
            agents: [(alices_agent, alice), (bobs_agent, bob)].into(),
            asked_keys: sweep.keys,
            asked_agents: sweep.agents,
        };
        let alice_s = Subject::User { id: alice, roles: vec![Role::Member] };
        let bob_s = Subject::User { id: bob, roles: vec![Role::Owner] };
        assert_eq!(
            v.standing(&Principal::user(alice, "a".into())),
            Some(Standing::Valid(alice_s.clone()))
        );
        assert_eq!(
            v.standing(&Principal::user(bob, "b".into())),
            Some(Standing::Valid(bob_s.clone()))
        );
        // A key of another user is no credential of this one.
        assert_eq!(v.standing(&Principal::user(bob, "stolen".into())), Some(Standing::Revoked));
        // Asked and not found: revoked; never asked (a later connection): no verdict.
        assert_eq!(v.standing(&Principal::user(alice, "gone".into())), None);
        assert_eq!(
            v.standing(&Principal::agent(alices_agent)),
            Some(Standing::Valid(Subject::Agent { agent_id: alices_agent }))
        );
        assert_eq!(v.standing(&Principal::agent(gone_agent)), Some(Standing::Revoked));
        assert_eq!(v.standing(&Principal::agent(new_agent)), None);

        assert_eq!(v.may_reach(&alice_s, alices_agent), Some(true));
        assert_eq!(v.may_reach(&alice_s, bobs_agent), Some(false));
        assert_eq!(v.may_reach(&bob_s, alices_agent), Some(true), "owners reach every agent");
        assert_eq!(v.may_reach(&Subject::Coderd, bobs_agent), Some(true));
        let agent_s = Subject::Agent { agent_id: alices_agent };
        assert_eq!(v.may_reach(&agent_s, bobs_agent), Some(false), "agents reach no agent");
        assert_eq!(
            v.may_reach(&bob_s, gone_agent),
            Some(false),
            "not even owners reach a gone one"
        );
        assert_eq!(v.may_reach(&alice_s, new_agent), None);
    }
}
