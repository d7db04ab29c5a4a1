//! The russh [`Handler`] of one connection: accepts authentication (the mesh
//! did it, see the [module docs](super)), answers requests, and spawns one
//! task per channel.
//!
//! russh delivers each channel request twice: to this handler, which must
//! reply, and as a [`russh::ChannelMsg`] to the channel's own receiver, which
//! the channel's task reads in order. So the handler only decides yes or no,
//! and the task does the work ([`super::session`]).

use std::collections::HashMap;
use std::sync::Arc;

use russh::server::{Auth, ChannelOpenHandle, Handler, Msg, Session};
use russh::{Channel, ChannelId, ChannelOpenFailure};
use tokio::task::JoinSet;

use super::forward::{self, RemoteForward};
use super::session::{self, SessionContext};
use super::{Inner, Peer, SshError};

pub(crate) struct ConnectionHandler {
    inner: Arc<Inner>,
    peer: Peer,
    /// Channel tasks; dropped with the handler when the connection ends.
    tasks: JoinSet<()>,
    remote_forwards: HashMap<(String, u32), RemoteForward>,
}

/// Remote forwards one connection may hold at once.
const MAX_REMOTE_FORWARDS: usize = 64;

impl ConnectionHandler {
    pub(crate) fn new(inner: Arc<Inner>, peer: Peer) -> Self {
        Self { inner, peer, tasks: JoinSet::new(), remote_forwards: HashMap::new() }
    }

    fn spawn(&mut self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        while self.tasks.try_join_next().is_some() {}
        self.tasks.spawn(task);
    }
}

impl Handler for ConnectionHandler {
    type Error = SshError;

    async fn auth_none(&mut self, user: &str) -> Result<Auth, Self::Error> {
        tracing::debug!(user, peer = %self.peer.name, "accepting ssh client authenticated by the mesh");
        Ok(Auth::Accept)
    }

    async fn auth_publickey(
        &mut self,
        _user: &str,
        _key: russh::server::VerifiedPublicKey<'_>,
    ) -> Result<Auth, Self::Error> {
        Ok(Auth::Accept)
    }

    async fn channel_open_session(
        &mut self,
        channel: Channel<Msg>,
        reply: ChannelOpenHandle,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        reply.accept().await;
        let ctx = SessionContext {
            inner: self.inner.clone(),
            handle: session.handle(),
            addrs: self.peer.addrs,
        };
        self.spawn(session::run(channel, ctx));
        Ok(())
    }

    async fn channel_open_direct_tcpip(
        &mut self,
        channel: Channel<Msg>,
        host_to_connect: &str,
        port_to_connect: u32,
        _originator_address: &str,
        _originator_port: u32,
        reply: ChannelOpenHandle,
        _session: &mut Session,
    ) -> Result<(), Self::Error> {
        if !self.inner.config.port_forwarding {
            reply.reject(ChannelOpenFailure::AdministrativelyProhibited).await;
            return Ok(());
        }
        let counters = self.inner.counters.clone();
        self.spawn(forward::direct_tcpip(
            channel,
            reply,
            host_to_connect.to_string(),
            port_to_connect,
            counters,
        ));
        Ok(())
    }

    async fn pty_request(
        &mut self,
        channel: ChannelId,
        _term: &str,
        _col_width: u32,
        _row_height: u32,
        _pix_width: u32,
        _pix_height: u32,
        _modes: &[(russh::Pty, u32)],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn env_request(
        &mut self,
        channel: ChannelId,
        _name: &str,
        _value: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn shell_request(
        &mut self,
        channel: ChannelId,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn exec_request(
        &mut self,
        channel: ChannelId,
        _data: &[u8],
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_success(channel)?;
        Ok(())
    }

    async fn subsystem_request(
        &mut self,
        channel: ChannelId,
        name: &str,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        if name == session::SFTP_SUBSYSTEM {
            session.channel_success(channel)?;
        } else {
            session.channel_failure(channel)?;
        }
        Ok(())
    }

    async fn x11_request(
        &mut self,
        channel: ChannelId,
        _single_connection: bool,
        _x11_auth_protocol: &str,
        _x11_auth_cookie: &str,
        _x11_screen_number: u32,
        session: &mut Session,
    ) -> Result<(), Self::Error> {
        session.channel_failure(channel)?;
        Ok(())
    }

    async fn agent_request(
        &mut self,
        _channel: ChannelId,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(self.inner.config.agent_forwarding)
    }

    async fn tcpip_forward(
        &mut self,
        address: &str,
        port: &mut u32,
        session: &mut Session,
    ) -> Result<bool, Self::Error> {
        if !self.inner.config.port_forwarding
            || self.remote_forwards.len() >= MAX_REMOTE_FORWARDS
            || self.remote_forwards.contains_key(&(address.to_string(), *port))
        {
            return Ok(false);
        }
        let bound =
            RemoteForward::bind(address, *port, session.handle(), self.inner.counters.clone())
                .await;
        match bound {
            Ok((listener, bound_port)) => {
                *port = bound_port;
                self.remote_forwards.insert((address.to_string(), bound_port), listener);
                Ok(true)
            }
            Err(e) => {
                tracing::debug!(address, port = *port, error = %e, "cannot listen for remote forward");
                Ok(false)
            }
        }
    }

    async fn cancel_tcpip_forward(
        &mut self,
        address: &str,
        port: u32,
        _session: &mut Session,
    ) -> Result<bool, Self::Error> {
        Ok(self.remote_forwards.remove(&(address.to_string(), port)).is_some())
    }
}
