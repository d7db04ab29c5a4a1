//! Relay frames over a connection: the I/O shell around [`crate::proto`].
//!
//! After the HTTP handshake a relay connection is either the raw upgraded
//! byte stream (`Upgrade: DERP`) or a WebSocket whose binary messages carry
//! the same frames. Both sides split the connection into a [`FrameReader`]
//! and a [`FrameWriter`] so reading never waits on a stalled write.
//! WebSocket message boundaries carry no meaning: received bytes go through
//! the same stream decoder.
//!
//! Both directions batch: a read takes whatever the socket holds (up to
//! [`READ_CHUNK`] bytes, many frames), and a writer encodes every frame fed
//! to it into one buffer that [`FrameWriter::flush`] writes at once. On a
//! WebSocket the buffered frames go out as few binary messages, each at
//! most one largest frame long ([`WS_MESSAGE_MAX`]), so a peer that still
//! caps messages at one frame reads them. Received payloads are slices of
//! the read buffer (`Bytes`), never copied.

use std::io;

use bytes::BytesMut;
use futures::stream::{SplitSink, SplitStream};
use futures::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

use crate::proto::{self, DecodeError, EncodeError, Frame, HEADER_LEN, MAX_FRAME_LEN};

/// Any bidirectional byte stream: TCP, TLS, or a hyper upgrade.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}
pub(crate) type BoxedIo = Box<dyn Io>;
pub(crate) type WsStream = WebSocketStream<BoxedIo>;

/// The WebSocket subprotocol name both sides ask for and echo.
pub(crate) const WS_PROTOCOL: &str = "derp";

/// A relay connection failed or misbehaved.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnError {
    #[error("connection closed")]
    Closed,
    #[error("i/o error: {0}")]
    Io(#[from] io::Error),
    #[error("bad frame from peer: {0}")]
    Decode(#[from] DecodeError),
    #[error("frame cannot be sent: {0}")]
    Encode(#[from] EncodeError),
    #[error("websocket error: {0}")]
    WebSocket(#[from] tungstenite::Error),
}

/// Bytes a read may take at once: room for dozens of full-size packets.
pub(crate) const READ_CHUNK: usize = 64 * 1024;
/// The largest WebSocket message either side sends or accepts: one largest
/// frame. Smaller frames share messages up to this size.
pub(crate) const WS_MESSAGE_MAX: usize = HEADER_LEN + MAX_FRAME_LEN;

pub(crate) fn ws_config() -> WebSocketConfig {
    // Anything larger than the largest frame is hostile.
    WebSocketConfig::default()
        .max_message_size(Some(WS_MESSAGE_MAX))
        .max_frame_size(Some(WS_MESSAGE_MAX))
}

/// Splits an upgraded byte stream into frame halves.
pub(crate) fn split_raw(io: BoxedIo) -> (FrameReader, FrameWriter) {
    let (r, w) = tokio::io::split(io);
    (
        FrameReader { source: Source::Raw(r), buf: BytesMut::with_capacity(READ_CHUNK) },
        FrameWriter { sink: Sink::Raw(w), buf: BytesMut::with_capacity(READ_CHUNK) },
    )
}

/// Splits a WebSocket into frame halves.
pub(crate) fn split_ws(ws: WsStream) -> (FrameReader, FrameWriter) {
    let (w, r) = ws.split();
    (
        FrameReader { source: Source::Ws(r), buf: BytesMut::new() },
        FrameWriter { sink: Sink::Ws(w), buf: BytesMut::new() },
    )
}

enum Source {
    Raw(ReadHalf<BoxedIo>),
    Ws(SplitStream<WsStream>),
}

/// The receiving half: yields decoded frames.
pub(crate) struct FrameReader {
    source: Source,
    buf: BytesMut,
}

impl FrameReader {
    /// The next known frame; [`ConnError::Closed`] on a clean end of stream.
    pub(crate) async fn recv(&mut self) -> Result<Frame, ConnError> {
        loop {
            if let Some(frame) = proto::decode(&mut self.buf)? {
                return Ok(frame);
            }
            match &mut self.source {
                Source::Raw(r) => {
                    // Frames already decoded are slices of this buffer, so
                    // this allocates afresh once the old block is spent.
                    if self.buf.capacity() - self.buf.len() < READ_CHUNK / 4 {
                        self.buf.reserve(READ_CHUNK);
                    }
                    if r.read_buf(&mut self.buf).await? == 0 {
                        return Err(ConnError::Closed);
                    }
                }
                Source::Ws(r) => match r.next().await {
                    None | Some(Ok(Message::Close(_))) => return Err(ConnError::Closed),
                    Some(Ok(Message::Binary(data))) => self.buf.extend_from_slice(&data),
                    Some(Ok(_)) => {}
                    Some(Err(err)) => return Err(err.into()),
                },
            }
        }
    }
}

enum Sink {
    Raw(WriteHalf<BoxedIo>),
    Ws(SplitSink<WsStream, Message>),
}

/// The sending half. [`FrameWriter::feed`] queues, [`FrameWriter::flush`]
/// writes, so a burst of frames costs one write.
pub(crate) struct FrameWriter {
    sink: Sink,
    buf: BytesMut,
}

impl FrameWriter {
    pub(crate) async fn feed(&mut self, frame: &Frame) -> Result<(), ConnError> {
        if let Sink::Ws(w) = &mut self.sink {
            if !self.buf.is_empty() && self.buf.len() + frame.encoded_len() > WS_MESSAGE_MAX {
                w.feed(Message::Binary(self.buf.split().freeze())).await?;
            }
        }
        frame.encode(&mut self.buf)?;
        Ok(())
    }

    pub(crate) async fn flush(&mut self) -> Result<(), ConnError> {
        match &mut self.sink {
            Sink::Raw(w) => {
                w.write_all(&self.buf).await?;
                self.buf.clear();
                w.flush().await?;
            }
            Sink::Ws(w) => {
                if !self.buf.is_empty() {
                    w.feed(Message::Binary(self.buf.split().freeze())).await?;
                }
                w.flush().await?;
            }
        }
        Ok(())
    }

    pub(crate) async fn send(&mut self, frame: &Frame) -> Result<(), ConnError> {
        self.feed(frame).await?;
        self.flush().await
    }

    /// Best-effort orderly close.
    pub(crate) async fn close(&mut self) {
        let _ = match &mut self.sink {
            Sink::Raw(w) => w.shutdown().await.map_err(ConnError::from),
            Sink::Ws(w) => w.close().await.map_err(ConnError::from),
        };
    }
}
