//! Peer networking: keys, node records, magic socket, path discovery, tunnels.
