//! Relay frames over a connection: the I/O shell around [`crate::proto`].
//!
//! After the HTTP handshake a relay connection is either the raw upgraded
//! byte stream (`Upgrade: DERP`) or a WebSocket whose binary messages carry
//! the same frames. Both sides split the connection into a [`FrameReader`]
//! and a [`FrameWriter`] so reading never waits on a stalled write.
//! WebSocket message boundaries carry no meaning: received bytes go through
//! the same stream decoder; each sent frame is one message.

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

pub(crate) fn ws_config() -> WebSocketConfig {
    // One frame per message: anything larger than a frame is hostile.
    WebSocketConfig::default()
        .max_message_size(Some(HEADER_LEN + MAX_FRAME_LEN))
        .max_frame_size(Some(HEADER_LEN + MAX_FRAME_LEN))
}

/// Splits an upgraded byte stream into frame halves.
pub(crate) fn split_raw(io: BoxedIo) -> (FrameReader, FrameWriter) {
    let (r, w) = tokio::io::split(io);
    (
        FrameReader { source: Source::Raw(r), buf: BytesMut::with_capacity(8 * 1024) },
        FrameWriter { sink: Sink::Raw(w), buf: BytesMut::with_capacity(8 * 1024) },
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
        match &mut self.sink {
            Sink::Raw(_) => frame.encode(&mut self.buf)?,
            Sink::Ws(w) => w.feed(Message::Binary(frame.to_bytes()?)).await?,
        }
        Ok(())
    }

    pub(crate) async fn flush(&mut self) -> Result<(), ConnError> {
        match &mut self.sink {
            Sink::Raw(w) => {
                w.write_all(&self.buf).await?;
                self.buf.clear();
                w.flush().await?;
            }
            Sink::Ws(w) => w.flush().await?,
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
