//! Splicing a byte stream (a TCP socket, stdio) and a mesh QUIC stream with
//! as few copies as quinn allows.
//!
//! Towards the peer, bytes are read straight into a `BytesMut` and handed to
//! quinn as `Bytes` (`write_chunk` keeps them, it does not copy them again).
//! From the peer, `read_chunks` lends quinn's own received frames, which go
//! out in one vectored write. `tokio::io::copy` would copy each byte once more
//! in each direction through its own buffer.
//!
//! Unlike `copy_bidirectional` over a joined stream, a failure is not mistaken
//! for the end: if either direction fails, the QUIC stream is reset and
//! stopped, so the peer sees an error rather than a clean, truncated end.

use std::io::{self, IoSlice};

use bytes::{Buf, Bytes, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::service::COPY_BUFFER;

/// Below this much free space the read buffer is replaced, so one read is
/// never starved to a few bytes.
const MIN_READ: usize = 16 * 1024;

/// Frames taken from quinn per vectored write.
const CHUNKS: usize = 64;

/// Error code for a stream abandoned because the other side of the splice failed.
const SPLICE_FAILED: u32 = 1;

/// Receive buffer asked for a local TCP connection whose writer is on this
/// machine (the kernel doubles it for its bookkeeping).
///
/// Linux autotunes a receive buffer up to `tcp_rmem`'s maximum (often 6 to
/// 32 MiB). A local writer faster than the mesh then parks megabytes there,
/// and those bytes have left the CPU cache by the time they are read and
/// encrypted: `coder tunnel --tcp` spent three times as long copying out of
/// its socket as a reader that keeps up. A loopback round trip needs a small
/// fraction of this buffer, so the cap costs no throughput.
const LOOPBACK_RCVBUF: usize = 256 * 1024;

/// Fixes the receive buffer of `tcp` at [`LOOPBACK_RCVBUF`] when its peer is
/// on this machine, which also stops the kernel growing it; a remote peer
/// keeps the autotuned buffer its round trip needs. A failure is ignored:
/// the buffer size is only a hint.
pub fn fit_loopback_buffer(tcp: &tokio::net::TcpStream) {
    if tcp.peer_addr().is_ok_and(|peer| peer.ip().to_canonical().is_loopback()) {
        let _ = socket2::SockRef::from(tcp).set_recv_buffer_size(LOOPBACK_RCVBUF);
    }
}

/// Copies `reader` to the peer until it ends; the byte count. Does not finish
/// the stream.
pub async fn copy_to_stream<R: AsyncRead + Unpin + ?Sized>(
    reader: &mut R,
    send: &mut quinn::SendStream,
) -> io::Result<u64> {
    let mut buf = BytesMut::new();
    let mut total = 0u64;
    loop {
        if buf.capacity() - buf.len() < MIN_READ {
            buf.reserve(COPY_BUFFER);
        }
        let n = reader.read_buf(&mut buf).await?;
        if n == 0 {
            return Ok(total);
        }
        total += n as u64;
        send.write_chunk(buf.split().freeze()).await?;
    }
}

/// Copies what the peer sends to `writer` until the stream ends; the byte
/// count. Does not shut `writer` down.
pub async fn copy_from_stream<W: AsyncWrite + Unpin + ?Sized>(
    recv: &mut quinn::RecvStream,
    writer: &mut W,
) -> io::Result<u64> {
    let mut chunks = vec![Bytes::new(); CHUNKS];
    // Writers without vectored writes (stdout, pipes) get one coalesced buffer.
    let mut coalesced = (!writer.is_write_vectored()).then(|| Vec::with_capacity(COPY_BUFFER));
    let mut total = 0u64;
    while let Some(n) = recv.read_chunks(&mut chunks).await? {
        let got = chunks.get_mut(..n).unwrap_or_default();
        total += got.iter().map(|c| c.len() as u64).sum::<u64>();
        match coalesced.as_mut() {
            Some(out) => {
                out.clear();
                got.iter().for_each(|c| out.extend_from_slice(c));
                writer.write_all(out).await?;
            }
            None => write_all_vectored(writer, got).await?,
        }
        // Buffered writers (tokio's stdout) hold bytes until flushed, and an
        // interactive protocol waits for them; on a socket this is free.
        writer.flush().await?;
    }
    Ok(total)
}

/// Writes every chunk, in order, with as few vectored writes as the writer takes.
async fn write_all_vectored<W: AsyncWrite + Unpin + ?Sized>(
    writer: &mut W,
    chunks: &mut [Bytes],
) -> io::Result<()> {
    let mut first = 0;
    while first < chunks.len() {
        let mut written = {
            let rest = chunks.get(first..).unwrap_or_default();
            let slices: Vec<IoSlice<'_>> = rest.iter().map(|c| IoSlice::new(c)).collect();
            writer.write_vectored(&slices).await?
        };
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while let Some(chunk) = chunks.get_mut(first) {
            if written < chunk.len() {
                chunk.advance(written);
                break;
            }
            written -= chunk.len();
            first += 1;
        }
    }
    Ok(())
}

/// Bytes moved by [`splice`], each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Spliced {
    /// From the local reader to the peer.
    pub sent: u64,
    /// From the peer to the local writer.
    pub received: u64,
}

/// Splices a local byte stream (`reader`, `writer`) and a mesh stream until
/// both directions end. An end on one side is passed on as an end (QUIC
/// finish, or a write shutdown) while the other direction goes on. On an error
/// either way, the QUIC stream is reset and stopped and the error returned.
pub async fn splice<R, W>(
    reader: &mut R,
    writer: &mut W,
    mut send: quinn::SendStream,
    mut recv: quinn::RecvStream,
) -> io::Result<Spliced>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let result = {
        let up = async {
            let n = copy_to_stream(reader, &mut send).await?;
            send.finish().map_err(|_| io::Error::from(io::ErrorKind::NotConnected))?;
            io::Result::Ok(n)
        };
        let down = async {
            let n = copy_from_stream(&mut recv, writer).await?;
            writer.shutdown().await?;
            io::Result::Ok(n)
        };
        tokio::try_join!(up, down)
    };
    match result {
        Ok((sent, received)) => Ok(Spliced { sent, received }),
        Err(e) => {
            let _ = send.reset(quinn::VarInt::from_u32(SPLICE_FAILED));
            let _ = recv.stop(quinn::VarInt::from_u32(SPLICE_FAILED));
            Err(e)
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn loopback_connections_get_a_small_receive_buffer() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let before = socket2::SockRef::from(&accepted).recv_buffer_size().unwrap();
        fit_loopback_buffer(&accepted);
        let after = socket2::SockRef::from(&accepted).recv_buffer_size().unwrap();
        // Linux reports twice what was asked.
        assert!(after <= 2 * LOOPBACK_RCVBUF, "receive buffer {after} (was {before})");
        assert!(after >= LOOPBACK_RCVBUF, "receive buffer {after} shrank below the cap");
        drop(client);
    }
}
