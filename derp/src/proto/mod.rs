//! The relay wire protocol (version [`PROTOCOL_VERSION`]), free of I/O: the
//! frame codec and the handshake. See `docs/protocols/relay.md`.

mod frame;
mod handshake;

pub use frame::{
    decode, DecodeError, EncodeError, Frame, FrameType, PeerGoneReason, CHALLENGE_LEN, HEADER_LEN,
    MAGIC, MAX_FRAME_LEN, MAX_PACKET_SIZE,
};
pub use handshake::{ClientInfo, HandshakeError, ServerInfo, PROTOCOL_VERSION};
