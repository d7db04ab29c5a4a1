//! Relay URLs: `http://host:port/derp` or `https://host/derp`.

use std::fmt;
use std::str::FromStr;

use http::uri::{Scheme, Uri};

/// A parsed relay URL. The path defaults to `/derp`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayUrl {
    pub(crate) tls: bool,
    /// Host without IPv6 brackets, for TLS server names.
    pub(crate) host: String,
    pub(crate) port: u16,
    /// `host:port` as written, for `Host` headers and dialing.
    pub(crate) authority: String,
    pub(crate) path: String,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("relay URL {url:?}: {reason}")]
pub struct InvalidRelayUrl {
    url: String,
    reason: &'static str,
}

impl FromStr for RelayUrl {
    type Err = InvalidRelayUrl;

    fn from_str(url: &str) -> Result<Self, Self::Err> {
        let err = |reason| InvalidRelayUrl { url: url.to_owned(), reason };
        let uri: Uri = url.parse().map_err(|_| err("not a URL"))?;
        let tls = match uri.scheme() {
            Some(s) if *s == Scheme::HTTP || s.as_str() == "ws" => false,
            Some(s) if *s == Scheme::HTTPS || s.as_str() == "wss" => true,
            _ => return Err(err("scheme must be http or https")),
        };
        let auth = uri.authority().ok_or_else(|| err("missing host"))?;
        let host = auth.host().trim_start_matches('[').trim_end_matches(']').to_owned();
        if host.is_empty() {
            return Err(err("missing host"));
        }
        let port = auth.port_u16().unwrap_or(if tls { 443 } else { 80 });
        let path = match uri.path() {
            "" | "/" => "/derp".to_owned(),
            p => p.to_owned(),
        };
        Ok(Self { tls, host, port, authority: auth.as_str().to_owned(), path })
    }
}

impl fmt::Display for RelayUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "https" } else { "http" };
        write!(f, "{scheme}://{}{}", self.authority, self.path)
    }
}

impl RelayUrl {
    /// The same relay as a WebSocket URL.
    pub(crate) fn ws_uri(&self) -> String {
        let scheme = if self.tls { "wss" } else { "ws" };
        format!("{scheme}://{}{}", self.authority, self.path)
    }

    /// `host:port` to open a TCP connection to.
    pub(crate) fn dial_addr(&self) -> (String, u16) {
        (self.host.clone(), self.port)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn parses_relay_urls() {
        let url: RelayUrl = "http://127.0.0.1:3340".parse().unwrap();
        assert_eq!((url.tls, url.port, url.path.as_str()), (false, 3340, "/derp"));
        assert_eq!(url.to_string(), "http://127.0.0.1:3340/derp");
        let url: RelayUrl = "https://[::1]/derp".parse().unwrap();
        assert_eq!((url.tls, url.host.as_str(), url.port), (true, "::1", 443));
        assert_eq!(url.ws_uri(), "wss://[::1]/derp");
        assert!("ftp://x".parse::<RelayUrl>().is_err());
        assert!("nonsense".parse::<RelayUrl>().is_err());
    }
}
