//! A peer the coordinator withdraws loses its open connections at once:
//! `remove_peer` closes every QUIC connection to it with
//! `close::WITHDRAWN` and its reason phrase, so an open stream ends within
//! moments rather than at the idle timeout (`docs/reliability.md`,
//! finding 12). Re-announcing the same record changes nothing.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::{config, connect};
use mesh::{close, MeshEndpoint, Service, WITHDRAWN_REASON};
use quinn::{ConnectionError, ReadError};

/// Far below the idle timeout (30 s): the close is sent at once.
const DEADLINE: Duration = Duration::from_secs(3);

fn is_withdrawn(e: &ConnectionError) -> bool {
    matches!(e, ConnectionError::ApplicationClosed(c)
        if c.error_code == close::WITHDRAWN && c.reason == WITHDRAWN_REASON.as_bytes())
}

#[tokio::test]
async fn removing_a_peer_closes_its_connection_and_streams_with_the_withdrawn_code(
) -> anyhow::Result<()> {
    let a = MeshEndpoint::bind(config(1, None, false)).await?;
    let b = MeshEndpoint::bind(config(2, None, false)).await?;
    a.upsert_peer(&b.node())?;
    b.upsert_peer(&a.node())?;
    let (ca, cb) = tokio::time::timeout(Duration::from_secs(10), connect(&a, &b)).await??;

    // A live stream, a → b (a is the client, b the agent).
    let (mut send, mut recv) = ca.open(Service::Ssh).await?;
    send.write_all(b"ping").await?;
    let (service, mut b_send, mut b_recv) = cb.accept().await?;
    assert_eq!(service, Service::Ssh);
    let mut got = [0u8; 4];
    b_recv.read_exact(&mut got).await?;
    assert_eq!(&got, b"ping");

    // The coordinator re-announces a with the same keys (new endpoints,
    // say): the connection stays.
    b.upsert_peer(&a.node())?;
    b_send.write_all(b"pong").await?;
    recv.read_exact(&mut got).await?;
    assert_eq!(&got, b"pong");
    assert!(cb.quic().close_reason().is_none(), "a re-announcement closed the connection");

    // The coordinator withdraws a from b: b closes at once, and a's open
    // stream and connection end with the code and the reason.
    b.remove_peer(&a.node().key);
    let read = tokio::time::timeout(DEADLINE, recv.read(&mut got)).await?;
    match read {
        Err(ReadError::ConnectionLost(e)) => assert!(is_withdrawn(&e), "{e:?}"),
        other => panic!("the stream did not end with the withdrawal: {other:?}"),
    }
    let closed = tokio::time::timeout(DEADLINE, ca.quic().closed()).await?;
    assert!(is_withdrawn(&closed), "{closed:?}");
    assert_eq!(ca.withdrawn_reason().as_deref(), Some(WITHDRAWN_REASON));
    let local = tokio::time::timeout(DEADLINE, cb.quic().closed()).await?;
    assert!(matches!(local, ConnectionError::LocallyClosed), "{local:?}");

    // Announced again (the tunnel was granted anew), a connects again.
    b.upsert_peer(&a.node())?;
    let (ca2, _cb2) = tokio::time::timeout(Duration::from_secs(10), connect(&a, &b)).await??;
    assert!(ca2.quic().close_reason().is_none());
    Ok(())
}

#[tokio::test]
async fn a_peer_withdrawn_on_the_dialing_side_is_closed_too() -> anyhow::Result<()> {
    let a = MeshEndpoint::bind(config(3, None, false)).await?;
    let b = MeshEndpoint::bind(config(4, None, false)).await?;
    a.upsert_peer(&b.node())?;
    b.upsert_peer(&a.node())?;
    let (ca, cb) = tokio::time::timeout(Duration::from_secs(10), connect(&a, &b)).await??;
    // A clone (as the CLI hands out) does not keep the connection alive past
    // the withdrawal.
    let clone = ca.clone();
    a.remove_peer(&b.node().key);
    let closed = tokio::time::timeout(DEADLINE, cb.quic().closed()).await?;
    assert!(is_withdrawn(&closed), "{closed:?}");
    assert!(matches!(clone.quic().close_reason(), Some(ConnectionError::LocallyClosed)));
    // And a withdrawn peer cannot be dialled.
    assert!(matches!(a.dial(&b.node().key).await, Err(mesh::DialError::UnknownPeer(_))));
    Ok(())
}
