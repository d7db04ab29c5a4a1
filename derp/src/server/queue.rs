//! One connection's packet queue: bounded, and fair between senders.
//!
//! Every sender into a receiver gets its own FIFO; the writer takes one
//! packet from each sender in turn (round robin), so a sender that floods a
//! receiver delays the others by at most one packet per turn. The bound is
//! on the whole queue. A new packet is always taken, and when there is no
//! room an *older* packet makes way: the sender's own oldest when it
//! already holds its fair part of the queue (the bound ÷ the senders
//! queued, at least [`MIN_SHARE`]), else the oldest packet of whichever
//! sender holds the most ("longest queue drop"). So a flood can fill an
//! empty queue but never keep another sender out, and the loss lands at
//! the head of the flood's own FIFO, where its congestion control notices
//! it a queue's worth of time sooner than a tail drop.
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

#[derive(Debug, Default)]
struct Inner {
    by_sender: HashMap<PublicKey, VecDeque<Frame>>,
    /// Senders with packets queued, in turn order (each at most once).
    turns: VecDeque<PublicKey>,
    len: usize,
}

impl Inner {
    /// Drops the oldest packet of `victim`, which must hold at least one
    /// beside the one about to be queued, or of the sender holding the most.
    fn drop_oldest(&mut self, victim: Option<PublicKey>) -> Option<Frame> {
        let victim = victim.or_else(|| {
            self.by_sender.iter().max_by_key(|(_, frames)| frames.len()).map(|(key, _)| *key)
        })?;
        let own = self.by_sender.get_mut(&victim)?;
        let dropped = own.pop_front()?;
        if own.is_empty() {
            self.by_sender.remove(&victim);
            self.turns.retain(|key| *key != victim);
        }
        self.len -= 1;
        Some(dropped)
    }
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

    /// Queues `frame` from `sender`; returns the older packet dropped to
    /// make room, if any (see the module docs for whose).
    #[must_use = "a dropped packet is counted by the caller"]
    pub(crate) fn push(&self, sender: PublicKey, frame: Frame) -> Option<Frame> {
        let mut inner = self.lock();
        let own = inner.by_sender.get(&sender).map_or(0, VecDeque::len);
        let senders = inner.turns.len() + usize::from(own == 0);
        let share = (self.capacity / senders).max(MIN_SHARE).min(self.capacity);
        let dropped = if own >= share {
            inner.drop_oldest(Some(sender))
        } else if inner.len >= self.capacity {
            inner.drop_oldest(None)
        } else {
            None
        };
        let own = inner.by_sender.entry(sender).or_default();
        let first = own.is_empty();
        own.push_back(frame);
        if first {
            inner.turns.push_back(sender);
        }
        inner.len += 1;
        drop(inner);
        self.notify.notify_one();
        dropped
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

    fn numbers(frames: &[Frame], of: PublicKey) -> Vec<u8> {
        frames
            .iter()
            .filter_map(|f| match f {
                Frame::RecvPacket { src, data } if *src == of => Some(data[0]),
                _ => None,
            })
            .collect()
    }

    fn number(frame: Option<Frame>) -> Option<u8> {
        match frame? {
            Frame::RecvPacket { data, .. } => Some(data[0]),
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn a_flood_gives_way_to_a_newcomer_and_turns_alternate() {
        let q = PacketQueue::new(32);
        let (flood, quiet) = (SecretKey::generate().public(), SecretKey::generate().public());
        let dropped: Vec<u8> =
            (0..100).filter_map(|i| number(q.push(flood, packet(flood, i)))).collect();
        // Alone, the flood may fill the queue; past that its oldest go first.
        assert_eq!(dropped, (0..68).collect::<Vec<u8>>());
        assert_eq!(q.len(), 32);
        // A full queue still takes the quiet sender's packets: the flood,
        // holding the most, loses its oldest for each.
        for i in 0..4 {
            assert_eq!(number(q.push(quiet, packet(quiet, i))), Some(68 + i));
        }
        // Over its share (32 / 2 senders), the flood displaces only itself.
        assert_eq!(number(q.push(flood, packet(flood, 200))), Some(72));
        assert_eq!(q.len(), 32);
        let mut out = Vec::new();
        q.pop_batch(8, &mut out);
        assert_eq!(sources(&out), [flood, quiet, flood, quiet, flood, quiet, flood, quiet]);
        // Per sender, order is kept.
        assert_eq!(numbers(&out, quiet), [0, 1, 2, 3]);
        assert_eq!(numbers(&out, flood), [73, 74, 75, 76]);
        assert_eq!(q.len(), 24);
    }

    /// A sender under its share loses nothing to a flood into the same
    /// receiver, however long the flood lasts, and the queue stays bounded.
    #[test]
    fn a_paced_sender_loses_nothing_to_a_flood() {
        let q = PacketQueue::new(64);
        let (flood, paced) = (SecretKey::generate().public(), SecretKey::generate().public());
        let (mut sent, mut got, mut out) = (0u32, Vec::new(), Vec::new());
        for round in 0..2000u32 {
            // The flood offers 10 packets a round, the paced sender one
            // every other round; the writer takes 4.
            for i in 0..10 {
                let dropped = q.push(flood, packet(flood, i));
                assert!(!matches!(&dropped, Some(Frame::RecvPacket { src, .. }) if *src == paced));
            }
            if round % 2 == 0 {
                let dropped = q.push(paced, packet(paced, (sent % 256) as u8));
                assert!(!matches!(&dropped, Some(Frame::RecvPacket { src, .. }) if *src == paced));
                sent += 1;
            }
            assert!(q.len() <= 64);
            out.clear();
            q.pop_batch(4, &mut out);
            got.extend(numbers(&out, paced));
        }
        out.clear();
        while q.pop_batch(64, &mut out) > 0 {}
        got.extend(numbers(&out, paced));
        let want: Vec<u8> = (0..sent).map(|i| (i % 256) as u8).collect();
        assert_eq!(got, want, "every paced packet, in order");
    }

    #[test]
    fn many_senders_each_get_the_minimum_share() {
        let q = PacketQueue::new(64);
        let keys: Vec<PublicKey> = (0..20).map(|_| SecretKey::generate().public()).collect();
        for key in &keys {
            for i in 0..3 {
                assert!(q.push(*key, packet(*key, i)).is_none());
            }
        }
        // 60 queued: 4 more fit...
        for i in 0..4 {
            assert!(q.push(keys[0], packet(keys[0], 10 + i)).is_none());
        }
        // ...and the 65th displaces the oldest of the sender holding most.
        assert_eq!(number(q.push(keys[1], packet(keys[1], 9))), Some(0));
        assert_eq!(q.len(), 64);
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
        assert!(q.push(key, packet(key, 1)).is_none());
        tokio::time::timeout(std::time::Duration::from_secs(5), waiter).await.unwrap().unwrap();
        // Already non-empty: returns at once.
        tokio::time::timeout(std::time::Duration::from_secs(5), q.wait()).await.unwrap();
    }
}
