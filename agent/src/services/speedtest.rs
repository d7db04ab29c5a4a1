//! The `speedtest` stream (`docs/cli.md`): the client sends one byte, `u`
//! (it uploads: we sink, then answer the byte count as `u64 BE`), `d` (it
//! downloads: we source until it stops reading) or `p` (ping: we echo every
//! byte back until it finishes).

/// Serves one speed test stream.
pub(crate) async fn serve(mut send: quinn::SendStream, mut recv: quinn::RecvStream) {
    let mut dir = [0u8; 1];
    if recv.read_exact(&mut dir).await.is_err() {
        return;
    }
    match dir[0] {
        b'd' => {
            let buf = vec![0x5au8; 1024 * 1024];
            while send.write_all(&buf).await.is_ok() {}
        }
        b'p' => {
            let mut buf = [0u8; 1024];
            while let Ok(Some(n)) = recv.read(&mut buf).await {
                let Some(echo) = buf.get(..n) else { break };
                if send.write_all(echo).await.is_err() {
                    break;
                }
            }
            let _ = send.finish();
        }
        _ => {
            let mut buf = vec![0u8; 1024 * 1024];
            let mut total: u64 = 0;
            while let Ok(Some(n)) = recv.read(&mut buf).await {
                total += n as u64;
            }
            let _ = send.write_all(&total.to_be_bytes()).await;
            let _ = send.finish();
        }
    }
}
