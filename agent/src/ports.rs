//! The TCP ports listening in the workspace, for the `listening-ports` mesh
//! service (`coder ports`): read from `/proc/net/tcp` and `/proc/net/tcp6`,
//! with each socket's process found through `/proc/<pid>/fd` where the agent
//! may look.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use codersdk::ListeningPort;

/// The `st` column of a socket in the LISTEN state.
const TCP_LISTEN: &str = "0A";

/// A listening socket from one line of `/proc/net/tcp{,6}`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Listener {
    address: IpAddr,
    port: u16,
    inode: u64,
}

/// Parses a `/proc/net/tcp` or `/proc/net/tcp6` table; other states and
/// malformed lines are skipped.
fn parse_table(table: &str) -> Vec<Listener> {
    table.lines().skip(1).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Listener> {
    let fields: Vec<&str> = line.split_whitespace().collect();
    let (local, state, inode) = (fields.get(1)?, fields.get(3)?, fields.get(9)?);
    if *state != TCP_LISTEN {
        return None;
    }
    let (addr, port) = local.split_once(':')?;
    Some(Listener {
        address: parse_address(addr)?,
        port: u16::from_str_radix(port, 16).ok()?,
        inode: inode.parse().ok()?,
    })
}

/// The kernel prints addresses as 32-bit words in host byte order.
fn parse_address(hex: &str) -> Option<IpAddr> {
    let word = |i: usize| -> Option<[u8; 4]> {
        let w = u32::from_str_radix(hex.get(i * 8..i * 8 + 8)?, 16).ok()?;
        Some(w.to_ne_bytes())
    };
    match hex.len() {
        8 => Some(IpAddr::V4(Ipv4Addr::from(word(0)?))),
        32 => {
            let mut bytes = [0u8; 16];
            for i in 0..4 {
                bytes[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            Some(IpAddr::V6(Ipv6Addr::from(bytes)))
        }
        _ => None,
    }
}

/// Socket inode → name of a process holding it, for the processes we may inspect.
fn socket_owners() -> HashMap<u64, String> {
    let mut owners = HashMap::new();
    let Ok(procs) = std::fs::read_dir("/proc") else { return owners };
    for entry in procs.flatten() {
        let pid = entry.file_name();
        if !pid.to_string_lossy().bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else { continue };
        let mut name = None;
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else { continue };
            let Some(inode) = target
                .to_str()
                .and_then(|t| t.strip_prefix("socket:["))
                .and_then(|t| t.strip_suffix(']'))
                .and_then(|t| t.parse::<u64>().ok())
            else {
                continue;
            };
            let name = name.get_or_insert_with(|| {
                std::fs::read_to_string(entry.path().join("comm"))
                    .map(|c| c.trim().to_owned())
                    .unwrap_or_default()
            });
            owners.entry(inode).or_insert_with(|| name.clone());
        }
    }
    owners
}

/// Groups listeners by port: one entry per port with all its addresses.
fn group(listeners: Vec<Listener>, owners: &HashMap<u64, String>) -> Vec<ListeningPort> {
    let mut by_port: BTreeMap<u16, ListeningPort> = BTreeMap::new();
    for l in listeners {
        let entry = by_port.entry(l.port).or_insert_with(|| ListeningPort {
            port: l.port,
            network: "tcp".into(),
            addresses: Vec::new(),
            process_name: String::new(),
        });
        let address = l.address.to_string();
        if !entry.addresses.contains(&address) {
            entry.addresses.push(address);
        }
        if entry.process_name.is_empty() {
            if let Some(name) = owners.get(&l.inode) {
                entry.process_name.clone_from(name);
            }
        }
    }
    by_port.into_values().collect()
}

/// Every TCP port listening in this network namespace, sorted by port.
pub fn listening_ports() -> Vec<ListeningPort> {
    let mut listeners = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        if let Ok(text) = std::fs::read_to_string(table) {
            listeners.extend(parse_table(&text));
        }
    }
    group(listeners, &socket_owners())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 4242 1 0000000000000000 100 0 0 10 0
   1: 0100007F:1F40 0100007F:A1B2 01 00000000:00000000 00:00000000 00000000     0        0 4343 1 0000000000000000 20 4 30 10 -1
   2: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 99 1
   3: garbage
";
    const TCP6: &str = "  sl  local_address                         remote_address                        st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 00000000000000000000000000000000:0016 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 77 1
   1: 00000000000000000000000001000000:1F41 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 78 1
";

    #[test]
    fn parses_listeners_and_skips_other_states_and_garbage() {
        let v4 = parse_table(TCP);
        assert_eq!(
            v4,
            vec![
                Listener { address: Ipv4Addr::LOCALHOST.into(), port: 8000, inode: 4242 },
                Listener { address: Ipv4Addr::UNSPECIFIED.into(), port: 22, inode: 99 },
            ]
        );
        let v6 = parse_table(TCP6);
        assert_eq!(v6[0].address, IpAddr::V6(Ipv6Addr::UNSPECIFIED));
        assert_eq!(v6[1], Listener { address: Ipv6Addr::LOCALHOST.into(), port: 8001, inode: 78 });
    }

    #[test]
    fn groups_by_port_with_every_address_and_the_owner() {
        let mut all = parse_table(TCP);
        all.extend(parse_table(TCP6));
        let owners = HashMap::from([(4242, "python3".to_owned())]);
        let ports = group(all, &owners);
        assert_eq!(ports.iter().map(|p| p.port).collect::<Vec<_>>(), vec![22, 8000, 8001]);
        assert_eq!(ports[0].addresses, vec!["0.0.0.0", "::"]);
        assert_eq!(ports[1].process_name, "python3");
    }

    #[test]
    fn sees_a_real_listener_with_its_process() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let ports = listening_ports();
        let found = ports.iter().find(|p| p.port == port).expect("our listener is reported");
        assert_eq!(found.addresses, vec!["127.0.0.1"]);
        let me = std::fs::read_to_string("/proc/self/comm").unwrap();
        assert_eq!(found.process_name, me.trim());
    }

    #[test]
    fn short_or_odd_addresses_are_refused() {
        assert_eq!(parse_address("0100007"), None);
        assert_eq!(parse_address("zz00007F"), None);
        assert_eq!(parse_line("0: 0100007F 00000000:0000 0A x x x x x 1"), None);
    }
}
