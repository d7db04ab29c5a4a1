//! The relay frame codec: `type (1 byte) | length (4 bytes, big endian) | payload`.
//!
//! Sans-IO: [`decode`] takes frames off the front of a byte buffer that the
//! I/O shell fills from a TCP stream or from WebSocket binary messages, and
//! [`Frame::encode`] appends one frame to a buffer. Unknown frame types are
//! skipped; short, oversized or malformed frames become a [`DecodeError`],
//! never a panic. Fixed-size frames ignore trailing payload bytes so later
//! protocol versions may extend them.

use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::key::{PublicKey, KEY_LEN};

/// Bytes in a frame header.
pub const HEADER_LEN: usize = 5;
/// Largest frame payload accepted or produced (64 KiB).
pub const MAX_FRAME_LEN: usize = 64 * 1024;
/// Largest packet a client may send: leaves room for the 64 bytes of keys a
/// mesh `ForwardPacket` adds, so every packet accepted can also be forwarded.
pub const MAX_PACKET_SIZE: usize = MAX_FRAME_LEN - 2 * KEY_LEN;
/// The 8 bytes that open a `ServerKey` frame: `"DERP🔑"`.
pub const MAGIC: [u8; 8] = *b"DERP\xF0\x9F\x94\x91";
/// Length of the random challenge a server sends with its key.
pub const CHALLENGE_LEN: usize = 16;

/// Frame type bytes, as on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
#[non_exhaustive]
pub enum FrameType {
    ServerKey = 0x01,
    ClientInfo = 0x02,
    ServerInfo = 0x03,
    SendPacket = 0x04,
    RecvPacket = 0x05,
    KeepAlive = 0x06,
    NotePreferred = 0x07,
    PeerGone = 0x08,
    PeerPresent = 0x09,
    ForwardPacket = 0x0a,
    WatchConns = 0x10,
    Ping = 0x12,
    Pong = 0x13,
    Health = 0x14,
    Restarting = 0x15,
}

impl FrameType {
    /// `None` for types this version does not know (they are skipped).
    pub fn from_byte(b: u8) -> Option<Self> {
        use FrameType::*;
        Some(match b {
            0x01 => ServerKey,
            0x02 => ClientInfo,
            0x03 => ServerInfo,
            0x04 => SendPacket,
            0x05 => RecvPacket,
            0x06 => KeepAlive,
            0x07 => NotePreferred,
            0x08 => PeerGone,
            0x09 => PeerPresent,
            0x0a => ForwardPacket,
            0x10 => WatchConns,
            0x12 => Ping,
            0x13 => Pong,
            0x14 => Health,
            0x15 => Restarting,
            _ => return None,
        })
    }
}

/// Why a peer is gone, in a `PeerGone` frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerGoneReason {
    /// The peer was connected and has disconnected.
    Disconnected,
    /// A packet was sent to a peer this relay (and its mesh) does not know.
    NotHere,
    /// A reason from a newer protocol version.
    Other(u8),
}

impl PeerGoneReason {
    fn to_byte(self) -> u8 {
        match self {
            Self::Disconnected => 0,
            Self::NotHere => 1,
            Self::Other(b) => b,
        }
    }

    fn from_byte(b: u8) -> Self {
        match b {
            0 => Self::Disconnected,
            1 => Self::NotHere,
            b => Self::Other(b),
        }
    }
}

/// One relay protocol frame.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Frame {
    /// Server → client, first frame: the relay's key and a fresh challenge
    /// the client must echo inside its sealed client info.
    ServerKey {
        key: PublicKey,
        challenge: [u8; CHALLENGE_LEN],
    },
    /// Client → server: the client's node key and a box sealed from that key
    /// to the server's key holding JSON [`crate::proto::ClientInfo`].
    ClientInfo {
        key: PublicKey,
        sealed: Bytes,
    },
    /// Server → client: a box sealed from the server's key holding JSON
    /// [`crate::proto::ServerInfo`].
    ServerInfo {
        sealed: Bytes,
    },
    /// Client → server: relay `data` to `dst`.
    SendPacket {
        dst: PublicKey,
        data: Bytes,
    },
    /// Server → client: `data` from `src`.
    RecvPacket {
        src: PublicKey,
        data: Bytes,
    },
    /// Either way: nothing to say, the connection is alive.
    KeepAlive,
    /// Client → server: whether this relay is the client's home.
    NotePreferred {
        preferred: bool,
    },
    /// Server → client: a peer the client sent to (or a watched peer) left.
    PeerGone {
        key: PublicKey,
        reason: PeerGoneReason,
    },
    /// Server → mesh watcher: a peer connected to this relay.
    PeerPresent {
        key: PublicKey,
    },
    /// Mesh relay → relay: deliver `data` from `src` to local client `dst`.
    ForwardPacket {
        src: PublicKey,
        dst: PublicKey,
        data: Bytes,
    },
    /// Mesh relay → relay: send me `PeerPresent`/`PeerGone` for your clients.
    WatchConns,
    /// Either way: answer with a `Pong` carrying the same data.
    Ping {
        data: [u8; 8],
    },
    Pong {
        data: [u8; 8],
    },
    /// Server → client: a human-readable problem; empty means healthy again.
    Health {
        problem: String,
    },
    /// Server → client: the relay is restarting; reconnect after
    /// `reconnect_in` and keep trying for `try_for`.
    Restarting {
        reconnect_in: Duration,
        try_for: Duration,
    },
}

/// A frame could not be decoded. The connection it came from is unusable.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    #[error("frame of type {frame_type:#04x} is {len} bytes, over the {MAX_FRAME_LEN} byte limit")]
    TooLarge { frame_type: u8, len: usize },
    #[error("{frame_type:?} frame is {len} bytes, needs at least {min}")]
    TooShort { frame_type: FrameType, len: usize, min: usize },
    #[error("server key frame does not start with the protocol magic")]
    BadMagic,
    #[error("health frame is not UTF-8")]
    InvalidUtf8,
}

/// A frame could not be encoded.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    #[error("frame payload of {len} bytes is over the {MAX_FRAME_LEN} byte limit")]
    TooLarge { len: usize },
}

impl Frame {
    pub fn frame_type(&self) -> FrameType {
        match self {
            Self::ServerKey { .. } => FrameType::ServerKey,
            Self::ClientInfo { .. } => FrameType::ClientInfo,
            Self::ServerInfo { .. } => FrameType::ServerInfo,
            Self::SendPacket { .. } => FrameType::SendPacket,
            Self::RecvPacket { .. } => FrameType::RecvPacket,
            Self::KeepAlive => FrameType::KeepAlive,
            Self::NotePreferred { .. } => FrameType::NotePreferred,
            Self::PeerGone { .. } => FrameType::PeerGone,
            Self::PeerPresent { .. } => FrameType::PeerPresent,
            Self::ForwardPacket { .. } => FrameType::ForwardPacket,
            Self::WatchConns => FrameType::WatchConns,
            Self::Ping { .. } => FrameType::Ping,
            Self::Pong { .. } => FrameType::Pong,
            Self::Health { .. } => FrameType::Health,
            Self::Restarting { .. } => FrameType::Restarting,
        }
    }

    fn payload_len(&self) -> usize {
        match self {
            Self::ServerKey { .. } => MAGIC.len() + KEY_LEN + CHALLENGE_LEN,
            Self::ClientInfo { sealed, .. } => KEY_LEN + sealed.len(),
            Self::ServerInfo { sealed } => sealed.len(),
            Self::SendPacket { data, .. } | Self::RecvPacket { data, .. } => KEY_LEN + data.len(),
            Self::KeepAlive | Self::WatchConns => 0,
            Self::NotePreferred { .. } => 1,
            Self::PeerGone { .. } => KEY_LEN + 1,
            Self::PeerPresent { .. } => KEY_LEN,
            Self::ForwardPacket { data, .. } => 2 * KEY_LEN + data.len(),
            Self::Ping { .. } | Self::Pong { .. } => 8,
            Self::Health { problem } => problem.len(),
            Self::Restarting { .. } => 8,
        }
    }

    /// Bytes this frame takes on the wire, header included.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.payload_len()
    }

    /// Appends this frame, header and payload, to `buf`.
    pub fn encode(&self, buf: &mut BytesMut) -> Result<(), EncodeError> {
        let len = self.payload_len();
        if len > MAX_FRAME_LEN {
            return Err(EncodeError::TooLarge { len });
        }
        buf.reserve(HEADER_LEN + len);
        buf.put_u8(self.frame_type() as u8);
        // `len` <= MAX_FRAME_LEN, so it fits in a u32.
        buf.put_u32(len as u32);
        match self {
            Self::ServerKey { key, challenge } => {
                buf.put_slice(&MAGIC);
                buf.put_slice(key.as_bytes());
                buf.put_slice(challenge);
            }
            Self::ClientInfo { key, sealed } => {
                buf.put_slice(key.as_bytes());
                buf.put_slice(sealed);
            }
            Self::ServerInfo { sealed } => buf.put_slice(sealed),
            Self::SendPacket { dst: key, data } | Self::RecvPacket { src: key, data } => {
                buf.put_slice(key.as_bytes());
                buf.put_slice(data);
            }
            Self::KeepAlive | Self::WatchConns => {}
            Self::NotePreferred { preferred } => buf.put_u8(u8::from(*preferred)),
            Self::PeerGone { key, reason } => {
                buf.put_slice(key.as_bytes());
                buf.put_u8(reason.to_byte());
            }
            Self::PeerPresent { key } => buf.put_slice(key.as_bytes()),
            Self::ForwardPacket { src, dst, data } => {
                buf.put_slice(src.as_bytes());
                buf.put_slice(dst.as_bytes());
                buf.put_slice(data);
            }
            Self::Ping { data } | Self::Pong { data } => buf.put_slice(data),
            Self::Health { problem } => buf.put_slice(problem.as_bytes()),
            Self::Restarting { reconnect_in, try_for } => {
                buf.put_u32(millis_u32(*reconnect_in));
                buf.put_u32(millis_u32(*try_for));
            }
        }
        Ok(())
    }

    /// Encodes this frame into a fresh buffer.
    pub fn to_bytes(&self) -> Result<Bytes, EncodeError> {
        let mut buf = BytesMut::with_capacity(self.encoded_len());
        self.encode(&mut buf)?;
        Ok(buf.freeze())
    }

    /// Parses one payload of the given type. `Ok(None)` for unknown types.
    pub fn decode_payload(frame_type: u8, mut payload: Bytes) -> Result<Option<Self>, DecodeError> {
        let Some(ty) = FrameType::from_byte(frame_type) else {
            return Ok(None);
        };
        let len = payload.len();
        let need = |min: usize| {
            if len < min {
                Err(DecodeError::TooShort { frame_type: ty, len, min })
            } else {
                Ok(())
            }
        };
        let frame = match ty {
            FrameType::ServerKey => {
                need(MAGIC.len() + KEY_LEN + CHALLENGE_LEN)?;
                if payload.split_to(MAGIC.len()) != MAGIC[..] {
                    return Err(DecodeError::BadMagic);
                }
                let key = take_key(&mut payload);
                let mut challenge = [0u8; CHALLENGE_LEN];
                payload.copy_to_slice(&mut challenge);
                Self::ServerKey { key, challenge }
            }
            FrameType::ClientInfo => {
                need(KEY_LEN)?;
                let key = take_key(&mut payload);
                Self::ClientInfo { key, sealed: payload }
            }
            FrameType::ServerInfo => Self::ServerInfo { sealed: payload },
            FrameType::SendPacket => {
                need(KEY_LEN)?;
                let dst = take_key(&mut payload);
                Self::SendPacket { dst, data: payload }
            }
            FrameType::RecvPacket => {
                need(KEY_LEN)?;
                let src = take_key(&mut payload);
                Self::RecvPacket { src, data: payload }
            }
            FrameType::KeepAlive => Self::KeepAlive,
            FrameType::WatchConns => Self::WatchConns,
            FrameType::NotePreferred => {
                need(1)?;
                Self::NotePreferred { preferred: payload.get_u8() != 0 }
            }
            FrameType::PeerGone => {
                need(KEY_LEN)?;
                let key = take_key(&mut payload);
                // Version 1 senders always add the reason; a bare key means
                // the peer simply disconnected.
                let reason = if payload.has_remaining() {
                    PeerGoneReason::from_byte(payload.get_u8())
                } else {
                    PeerGoneReason::Disconnected
                };
                Self::PeerGone { key, reason }
            }
            FrameType::PeerPresent => {
                need(KEY_LEN)?;
                Self::PeerPresent { key: take_key(&mut payload) }
            }
            FrameType::ForwardPacket => {
                need(2 * KEY_LEN)?;
                let src = take_key(&mut payload);
                let dst = take_key(&mut payload);
                Self::ForwardPacket { src, dst, data: payload }
            }
            FrameType::Ping | FrameType::Pong => {
                need(8)?;
                let mut data = [0u8; 8];
                payload.copy_to_slice(&mut data);
                if ty == FrameType::Ping {
                    Self::Ping { data }
                } else {
                    Self::Pong { data }
                }
            }
            FrameType::Health => {
                let problem =
                    String::from_utf8(payload.to_vec()).map_err(|_| DecodeError::InvalidUtf8)?;
                Self::Health { problem }
            }
            FrameType::Restarting => {
                need(8)?;
                let reconnect_in = Duration::from_millis(payload.get_u32().into());
                let try_for = Duration::from_millis(payload.get_u32().into());
                Self::Restarting { reconnect_in, try_for }
            }
        };
        Ok(Some(frame))
    }
}

/// Takes the next complete, known frame off the front of `buf`.
///
/// `Ok(None)` means more bytes are needed. Unknown frame types are consumed
/// and skipped. A frame header announcing more than [`MAX_FRAME_LEN`] bytes
/// is an error as soon as the header arrives, before its payload is buffered.
pub fn decode(buf: &mut BytesMut) -> Result<Option<Frame>, DecodeError> {
    loop {
        let Some((frame_type, len)) = peek_header(buf)? else {
            return Ok(None);
        };
        if buf.len() < HEADER_LEN + len {
            buf.reserve(HEADER_LEN + len - buf.len());
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        let payload = buf.split_to(len).freeze();
        if let Some(frame) = Frame::decode_payload(frame_type, payload)? {
            return Ok(Some(frame));
        }
    }
}

/// Reads the header at the front of `buf`, checking the length limit.
fn peek_header(buf: &[u8]) -> Result<Option<(u8, usize)>, DecodeError> {
    let Some(header) = buf.get(..HEADER_LEN) else {
        return Ok(None);
    };
    let mut header = header;
    let frame_type = header.get_u8();
    let len = header.get_u32() as usize;
    if len > MAX_FRAME_LEN {
        return Err(DecodeError::TooLarge { frame_type, len });
    }
    Ok(Some((frame_type, len)))
}

fn take_key(payload: &mut Bytes) -> PublicKey {
    let mut key = [0u8; KEY_LEN];
    payload.copy_to_slice(&mut key);
    PublicKey::from_bytes(key)
}

fn millis_u32(d: Duration) -> u32 {
    u32::try_from(d.as_millis()).unwrap_or(u32::MAX)
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
