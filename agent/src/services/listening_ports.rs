//! The `listening-ports` stream: the workspace's listening TCP ports
//! ([`crate::ports`]) as one JSON array, then the end of the stream.

/// Writes the workspace's listening TCP ports as one JSON array.
pub(crate) async fn serve(mut send: quinn::SendStream) {
    let ports = tokio::task::spawn_blocking(crate::ports::listening_ports).await;
    let Ok(json) = serde_json::to_vec(&ports.unwrap_or_default()) else { return };
    if send.write_all(&json).await.is_ok() {
        let _ = send.finish();
    }
}
