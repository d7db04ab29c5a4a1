//! The mesh stream services the agent serves beside SSH and the web
//! terminal: `tcp:`/`udp:` forwards ([`tunnel`], for `coder tunnel`), the
//! speed test ([`speedtest`], for `coder speedtest` and `coder ping`) and the
//! listening-ports query ([`listening_ports`], for `coder ports`). Each takes
//! the halves of one stream whose header the accept loop
//! (`crate::agent`) has already read.

pub(crate) mod listening_ports;
pub(crate) mod speedtest;
pub(crate) mod tunnel;
