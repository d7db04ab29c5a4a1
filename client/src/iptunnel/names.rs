//! Names for the workspaces a user can reach: `AGENT.WS.OWNER.coder` for
//! every agent, and `WS.coder` for the first agent (by name) of each of the
//! user's workspaces. Addresses come from the agent ids alone
//! ([`codersdk::coordination::node_id`]), so a name resolves before the agent's
//! node arrives.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::IpAddr;

use mesh::mesh_addresses;
use uuid::Uuid;

use codersdk::coordination::node_id;

/// The top-level domain of mesh names.
pub const TLD: &str = "coder";

/// One agent of a running workspace.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct AgentEntry {
    pub owner: String,
    pub workspace: String,
    pub agent: String,
    pub id: Uuid,
}

/// Name → addresses, lowercase names without the trailing dot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Names {
    map: BTreeMap<String, Vec<IpAddr>>,
    /// For the hosts table: each agent's address and names.
    rows: Vec<(IpAddr, Vec<String>)>,
}

impl Names {
    /// The table for these agents; `me` is the user whose workspaces get the
    /// short `WS.coder` names.
    pub fn new(agents: &[AgentEntry], me: &str) -> Self {
        let mut agents = agents.to_vec();
        agents.sort();
        let mut names = Names::default();
        let mut short_taken = std::collections::HashSet::new();
        for a in &agents {
            let addrs = mesh_addresses(node_id(a.id));
            let mut ips = vec![IpAddr::V6(addrs.ipv6)];
            ips.extend(addrs.ipv4.map(IpAddr::V4));
            let mut own =
                vec![format!("{}.{}.{}.{TLD}", a.agent, a.workspace, a.owner).to_lowercase()];
            if a.owner.eq_ignore_ascii_case(me) && short_taken.insert(a.workspace.to_lowercase()) {
                own.push(format!("{}.{TLD}", a.workspace).to_lowercase());
            }
            for n in &own {
                names.map.insert(n.clone(), ips.clone());
            }
            for ip in ips {
                names.rows.push((ip, own.clone()));
            }
        }
        names
    }

    /// The addresses of `name` (any case, trailing dot allowed).
    pub fn lookup(&self, name: &str) -> Option<&[IpAddr]> {
        let name = name.trim_end_matches('.').to_lowercase();
        self.map.get(&name).map(Vec::as_slice)
    }

    /// Whether `name` is in our domain (so we answer for it, even "no such name").
    pub fn in_domain(name: &str) -> bool {
        let name = name.trim_end_matches('.').to_lowercase();
        name == TLD || name.ends_with(&format!(".{TLD}"))
    }

    /// The table in `/etc/hosts` format.
    pub fn hosts(&self) -> String {
        let mut out = String::new();
        for (ip, names) in &self.rows {
            let _ = writeln!(out, "{ip:<40} {}", names.join(" "));
        }
        out
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn entry(owner: &str, ws: &str, agent: &str, id: u128) -> AgentEntry {
        AgentEntry {
            owner: owner.into(),
            workspace: ws.into(),
            agent: agent.into(),
            id: Uuid::from_u128(id),
        }
    }

    #[test]
    fn long_and_short_names() {
        let names = Names::new(
            &[
                entry("dev", "ws1", "main", 1),
                entry("dev", "ws1", "db", 2),
                entry("other", "ws1", "main", 3),
            ],
            "dev",
        );
        let main = mesh_addresses(node_id(Uuid::from_u128(1))).ipv6;
        let db = mesh_addresses(node_id(Uuid::from_u128(2))).ipv6;
        assert_eq!(names.lookup("main.ws1.dev.coder"), Some(&[IpAddr::V6(main)][..]));
        assert_eq!(names.lookup("MAIN.ws1.dev.coder."), Some(&[IpAddr::V6(main)][..]));
        // The short name goes to the first agent by name: db.
        assert_eq!(names.lookup("ws1.coder"), Some(&[IpAddr::V6(db)][..]));
        assert!(names.lookup("main.ws1.other.coder").is_some());
        assert!(names.lookup("nope.coder").is_none());
        assert!(Names::in_domain("nope.coder.") && !Names::in_domain("example.com"));
        let hosts = names.hosts();
        assert_eq!(hosts.lines().count(), 3, "{hosts}");
        assert!(
            hosts.contains(&format!("{db}")) && hosts.contains("db.ws1.dev.coder ws1.coder"),
            "{hosts}"
        );
    }
}
