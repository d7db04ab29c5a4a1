//! The wrapper around a client's byte stream: counts bytes for the stats and
//! fails all I/O once the connection is cancelled, which is how dropping
//! [`SshServer::serve_stream`](super::SshServer::serve_stream) (or
//! [`SshServer::shutdown`](super::SshServer::shutdown)) ends the session task
//! that russh spawns and does not let us own.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::stats::Counters;

pub(crate) struct CountedStream<S> {
    inner: S,
    counters: Counters,
    cancelled: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<S> CountedStream<S> {
    pub(crate) fn new(inner: S, counters: &Counters, cancel: CancellationToken) -> Self {
        Self { inner, counters: counters.clone(), cancelled: Box::pin(cancel.cancelled_owned()) }
    }

    /// Ready with an error once cancelled; registers the waker otherwise, so a
    /// task parked on I/O wakes up to see the cancellation.
    fn poll_cancelled(&mut self, cx: &mut Context<'_>) -> Poll<io::Error> {
        match self.cancelled.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(io::Error::new(
                io::ErrorKind::ConnectionAborted,
                "ssh connection cancelled",
            )),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for CountedStream<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Poll::Ready(e) = this.poll_cancelled(cx) {
            return Poll::Ready(Err(e));
        }
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = r {
            this.counters.add_bytes_in(buf.filled().len().saturating_sub(before));
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for CountedStream<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Poll::Ready(e) = this.poll_cancelled(cx) {
            return Poll::Ready(Err(e));
        }
        let r = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            this.counters.add_bytes_out(n);
        }
        r
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Poll::Ready(e) = this.poll_cancelled(cx) {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn counts_and_cancels() {
        let counters = Counters::default();
        let cancel = CancellationToken::new();
        let (a, mut b) = tokio::io::duplex(64);
        let mut s = CountedStream::new(a, &counters, cancel.clone());
        s.write_all(b"hello").await.unwrap();
        b.write_all(b"abc").await.unwrap();
        let mut buf = [0u8; 3];
        s.read_exact(&mut buf).await.unwrap();
        let snap = counters.snapshot();
        assert_eq!((snap.bytes_in, snap.bytes_out), (3, 5));
        let reader = tokio::spawn(async move { s.read(&mut [0u8; 8]).await });
        cancel.cancel();
        let err = reader.await.unwrap().unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionAborted);
    }
}
