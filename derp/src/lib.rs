//! Relay protocol, relay server and client, STUN server.
