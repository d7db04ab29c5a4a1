//! Fairness between connections: a sender that always has megabytes
//! waiting in its socket gets no more of the relay's turns than one that
//! sends a packet at a time.

use bytes::Bytes;
use derp::proto::Frame;
use derp::{SecretKey, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::task::AbortOnDropHandle;

use crate::harness::{within, RawConn, Relay};

/// Packets the relay handled (forwarded or dropped), all senders together.
fn handled(relay: &Relay) -> u64 {
    let stats = relay.server.stats();
    stats.packets_forwarded + stats.packets_dropped_queue_full
}

/// G floods R from a raw connection whose socket is never empty; A sends
/// B one packet at a time and waits for it. While each of A's packets
/// crosses the relay, the relay may route a few reads' worth of the flood
/// (a few hundred packets), not tokio's whole budget of reads per turn
/// (thousands): a paced flow's round trip does not grow with a flood's
/// backlog.
#[tokio::test]
async fn a_greedy_sender_does_not_starve_another_flow() {
    let relay = Relay::start(ServerConfig::default()).await;
    let (a, b) = (relay.client().await, relay.client().await);
    let (greedy, sink) = (SecretKey::generate(), SecretKey::generate());
    let g = RawConn::connect(relay.addr, &greedy).await;
    let r = RawConn::connect(relay.addr, &sink).await;

    let mut r_stream = r.stream;
    let _sink = AbortOnDropHandle::new(tokio::spawn(async move {
        let mut buf = vec![0u8; 1 << 20];
        while r_stream.read(&mut buf).await.unwrap_or(0) > 0 {}
    }));
    let frame = Frame::SendPacket { dst: sink.public(), data: Bytes::from(vec![0x5a; 1200]) };
    let chunk = frame.to_bytes().unwrap().repeat(800);
    let mut g_stream = g.stream;
    let _flood = AbortOnDropHandle::new(tokio::spawn(async move {
        while g_stream.write_all(&chunk).await.is_ok() {}
    }));
    within("the flood to flow", async {
        while handled(&relay) < 20_000 {
            tokio::task::yield_now().await;
        }
    })
    .await;

    let mut during = Vec::new();
    for i in 0..40u8 {
        let before = handled(&relay);
        a.send(b.public_key(), Bytes::from(vec![i])).await.unwrap();
        let packet = within("B to receive A's packet", b.recv()).await.unwrap();
        assert_eq!((packet.src, packet.data), (a.public_key(), Bytes::from(vec![i])));
        during.push(handled(&relay) - before);
    }
    during.sort_unstable();
    let median = during[during.len() / 2];
    assert!(
        median < 1_000,
        "the relay routed a median of {median} flood packets while one of A's crossed: {during:?}"
    );
}
