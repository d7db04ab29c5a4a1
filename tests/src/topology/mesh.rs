//! In-process mesh pieces on a [`Topology`](super::Topology): a relay and a
//! STUN server listening in a namespace (normally the internet), and
//! [`MeshEndpoint`]s bound inside hosts' namespaces. For tests and
//! benchmarks that drive the mesh library directly, without `coderd`.

use std::net::SocketAddr;

use mesh::{MeshConfig, MeshEndpoint};

use super::Host;

/// A relay serving on `host`'s address (any port), and its URL.
pub async fn relay_in(host: &Host) -> anyhow::Result<(derp::Server, derp::RelayUrl)> {
    let server = derp::Server::spawn(derp::ServerConfig::default())?;
    let addr = host.addr;
    let listener = host.in_netns(|| {
        let l = std::net::TcpListener::bind((addr, 0))?;
        l.set_nonblocking(true)?;
        Ok(l)
    })?;
    let listener = tokio::net::TcpListener::from_std(listener)?;
    let url = format!("http://{}/derp", listener.local_addr()?).parse()?;
    let serving = server.clone();
    tokio::spawn(async move { serving.serve(listener).await });
    Ok((server, url))
}

/// A STUN server on `host`'s address and `port`. Needs a multi-threaded runtime.
pub fn stun_in(host: &Host, port: u16) -> anyhow::Result<derp::stun::StunServer> {
    let addr = SocketAddr::from((host.addr, port));
    let runtime = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        host.in_netns(|| Ok(runtime.block_on(derp::stun::StunServer::spawn(addr))?))
    })
}

/// A node bound with `config` inside `host`'s namespace (its socket stays
/// there, whichever thread uses it). Needs a multi-threaded runtime.
pub fn bind_in(host: &Host, config: MeshConfig) -> anyhow::Result<MeshEndpoint> {
    let runtime = tokio::runtime::Handle::current();
    tokio::task::block_in_place(|| {
        host.in_netns(|| Ok(runtime.block_on(MeshEndpoint::bind(config))?))
    })
}
