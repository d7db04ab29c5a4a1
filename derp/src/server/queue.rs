//! One connection's packet queue: bounded, and fair between senders.
//!
//! Every sender into a receiver gets its own FIFO; the writer takes one
//! packet from each sender in turn (round robin), so a sender that floods a
//! receiver delays the others by at most one packet per turn. The bound is
//! on the whole queue, and a sender already holding its fair part of it
//! (the bound ÷ the senders queued, at least [`MIN_SHARE`]) is refused
//! first: a flood fills only its own share, and the others still get in.
//! Refused packets are dropped by the caller, as a congested link would.
//!
//! The queue is plain data under a short mutex (never held across an
//! `.await`); [`PacketQueue::wait`] parks the one consumer on a `Notify`.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::key::PublicKey;
use crate::proto::Frame;

/// A sender may always queue this many packets, however many others do.
pub(crate) const MIN_SHARE: usize = 8;

/// The queue was full for this sender; the packet was not taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Full;

#[derive(Debug, Default)]
struct Inner {
    by_sender: HashMap<PublicKey, VecDeque<Frame>>,
    /// Senders with packets queued, in turn order (each at most once).
    turns: VecDeque<PublicKey>,
    len: usize,
}

/// A bounded multi-sender queue drained round robin by one writer.
#[derive(Debug)]
pub(crate) struct PacketQueue {
    inner: Mutex<Inner>,
    notify: Notify,
    capacity: usize,
}

impl PacketQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self { inner: Mutex::default(), notify: Notify::new(), capacity: capacity.max(1) }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Queues `frame` from `sender`, unless the queue or the sender's share
    /// of it is full.
    pub(crate) fn push(&self, sender: PublicKey, frame: Frame) -> Result<(), Full> {
        let mut inner = self.lock();
        if inner.len >= self.capacity {
            return Err(Full);
        }
        let queued_senders = inner.turns.len();
        let share = (self.capacity / queued_senders.max(1)).max(MIN_SHARE);
        let own = inner.by_sender.entry(sender).or_default();
        if own.len() >= share {
            return Err(Full);
        }
        if own.is_empty() {
            inner.turns.push_back(sender);
        }
        // Looked up again: `turns` and `by_sender` are borrowed apart.
        inner.by_sender.entry(sender).or_default().push_back(frame);
        inner.len += 1;
        drop(inner);
        self.notify.notify_one();
        Ok(())
    }

    /// Moves up to `max` packets into `out`, one per sender per turn.
    pub(crate) fn pop_batch(&self, max: usize, out: &mut Vec<Frame>) -> usize {
        let mut inner = self.lock();
        let mut taken = 0;
        while taken < max {
            let Some(sender) = inner.turns.pop_front() else { break };
            let Some(own) = inner.by_sender.get_mut(&sender) else { continue };
            let Some(frame) = own.pop_front() else { continue };
            if own.is_empty() {
                inner.by_sender.remove(&sender);
            } else {
                inner.turns.push_back(sender);
            }
            out.push(frame);
            taken += 1;
        }
        inner.len -= taken;
        taken
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.lock().len
    }

    /// Returns once the queue holds a packet. Cancel-safe; one consumer.
    pub(crate) async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the check, so a push in between wakes it.
            notified.as_mut().enable();
            if self.lock().len > 0 {
                return;
            }
            notified.await;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use bytes::Bytes;

    use super::*;
    use crate::key::SecretKey;

    fn packet(src: PublicKey, n: u8) -> Frame {
        Frame::RecvPacket { src, data: Bytes::from(vec![n]) }
    }

    fn sources(frames: &[Frame]) -> Vec<PublicKey> {
        frames
            .iter()
            .map(|f| match f {
                Frame::RecvPacket { src, .. } => *src,
                other => panic!("unexpected {other:?}"),
            })
            .collect()
    }

    #[test]
    fn a_flood_keeps_to_its_share_and_turns_alternate() {
        let q = PacketQueue::new(32);
        let (flood, quiet) = (SecretKey::generate().public(), SecretKey::generate().public());
        let accepted = (0..100).filter(|i| q.push(flood, packet(flood, *i)).is_ok()).count();
        // Alone, the flood may fill the queue...
        assert_eq!(accepted, 32);
        // ...so a full queue refuses everyone, until the writer drains some.
        assert_eq!(q.push(quiet, packet(quiet, 0)), Err(Full));
        let mut out = Vec::new();
        assert_eq!(q.pop_batch(16, &mut out), 16);
        for i in 0..4 {
            q.push(quiet, packet(quiet, i)).unwrap();
        }
        // With two senders queued the flood's share is 16: it has 16 already.
        assert_eq!(q.push(flood, packet(flood, 200)), Err(Full));
        out.clear();
        q.pop_batch(8, &mut out);
        assert_eq!(sources(&out), [flood, quiet, flood, quiet, flood, quiet, flood, quiet]);
        // Per sender, order is kept.
        let quiet_bytes: Vec<u8> = out
            .iter()
            .filter_map(|f| match f {
                Frame::RecvPacket { src, data } if *src == quiet => Some(data[0]),
                _ => None,
            })
            .collect();
        assert_eq!(quiet_bytes, [0, 1, 2, 3]);
        assert_eq!(q.len(), 12);
    }

    #[test]
    fn many_senders_each_get_the_minimum_share() {
        let q = PacketQueue::new(64);
        let keys: Vec<PublicKey> = (0..20).map(|_| SecretKey::generate().public()).collect();
        for key in &keys {
            for i in 0..3 {
                q.push(*key, packet(*key, i)).unwrap();
            }
        }
        // 60 queued: 4 more fit, the 65th does not.
        for i in 0..4 {
            q.push(keys[0], packet(keys[0], 10 + i)).unwrap();
        }
        assert_eq!(q.push(keys[1], packet(keys[1], 9)), Err(Full));
        let mut out = Vec::new();
        q.pop_batch(20, &mut out);
        let mut seen = sources(&out);
        seen.sort();
        let mut want = keys.clone();
        want.sort();
        assert_eq!(seen, want, "one packet from each sender in the first turn");
    }

    #[tokio::test]
    async fn wait_wakes_on_push() {
        let q = std::sync::Arc::new(PacketQueue::new(4));
        let key = SecretKey::generate().public();
        let waiter = tokio::spawn({
            let q = q.clone();
            async move { q.wait().await }
        });
        tokio::task::yield_now().await;
        q.push(key, packet(key, 1)).unwrap();
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap();
        // Already non-empty: returns at once.
        tokio::time::timeout(std::time::Duration::from_secs(5), q.wait()).await.unwrap();
    }
}
