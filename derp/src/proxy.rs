//! TCP connections through an HTTP forward proxy, as the environment says.
//!
//! The relay client and the coordination client open long-lived TCP
//! connections that an HTTP client library would not make for them (an
//! `Upgrade: DERP` or WebSocket stream), so they find and use the proxy
//! here, the way Go's `net/http` (and so Coder and Tailscale) read the
//! environment:
//!
//! - `HTTPS_PROXY`/`https_proxy` for `https`/`wss` targets,
//!   `HTTP_PROXY`/`http_proxy` for `http`/`ws` ones (upper case first); a
//!   value without a scheme is `http://`; only `http://` proxies are spoken;
//! - `NO_PROXY`/`no_proxy`: comma-separated `*`, host names (`example.com`
//!   matches it and its subdomains, `.example.com` only subdomains), IP
//!   addresses and CIDR blocks, each optionally with `:port`; `localhost`
//!   and loopback addresses never go through a proxy;
//! - the tunnel is `CONNECT host:port` for every scheme (a forwarding proxy
//!   would not pass the upgrade of a plain-HTTP request reliably), with
//!   `Proxy-Authorization: Basic` from the proxy URL's userinfo if present.
//!
//! Credentials never appear in errors or logs: [`Proxy`] displays as
//! `http://host:port`.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use base64::Engine;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The longest proxy response header we read.
const MAX_RESPONSE_HEADER: usize = 16 * 1024;

/// Why a connection (through a proxy, or direct) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProxyError {
    /// No proxy applies, and the direct connection failed.
    #[error("connecting to {target}: {source}")]
    Direct {
        target: String,
        #[source]
        source: std::io::Error,
    },
    /// The proxy setting cannot be used.
    #[error("proxy setting {var}: {reason}")]
    Invalid { var: &'static str, reason: String },
    /// The proxy is unreachable or hung up.
    #[error("proxy {proxy}: {source}")]
    Io {
        proxy: String,
        #[source]
        source: std::io::Error,
    },
    /// The proxy answered the `CONNECT` with an error.
    #[error("proxy {proxy} refused CONNECT to {target} with HTTP {status}{hint}")]
    Refused { proxy: String, target: String, status: u16, hint: &'static str },
    /// The proxy's answer is not HTTP.
    #[error("proxy {proxy} sent a malformed response to CONNECT")]
    Malformed { proxy: String },
    /// No answer within the timeout.
    #[error("proxy {proxy} did not answer CONNECT in time")]
    Timeout { proxy: String },
}

/// An HTTP proxy to tunnel through.
#[derive(Clone, PartialEq, Eq)]
pub struct Proxy {
    host: String,
    port: u16,
    /// `Basic …`, from the URL's userinfo.
    authorization: Option<String>,
}

impl fmt::Display for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "http://[{}]:{}", self.host, self.port)
        } else {
            write!(f, "http://{}:{}", self.host, self.port)
        }
    }
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the credentials.
        write!(f, "Proxy({self}, auth: {})", self.authorization.is_some())
    }
}

impl Proxy {
    /// The proxy the environment names for `host:port` (`tls`: an
    /// `https`/`wss` target), or `None` to connect directly.
    pub fn from_env(tls: bool, host: &str, port: u16) -> Result<Option<Proxy>, ProxyError> {
        Self::from_lookup(|name| std::env::var(name).ok(), tls, host, port)
    }

    /// [`Self::from_env`] with the variables from `lookup`.
    pub fn from_lookup(
        lookup: impl Fn(&str) -> Option<String>,
        tls: bool,
        host: &str,
        port: u16,
    ) -> Result<Option<Proxy>, ProxyError> {
        let any = |names: [&'static str; 2]| {
            names
                .into_iter()
                .find_map(|n| lookup(n).filter(|v| !v.trim().is_empty()).map(|v| (n, v)))
        };
        let vars = if tls { ["HTTPS_PROXY", "https_proxy"] } else { ["HTTP_PROXY", "http_proxy"] };
        let Some((var, value)) = any(vars) else { return Ok(None) };
        let host = host.trim_start_matches('[').trim_end_matches(']');
        if is_local(host) {
            return Ok(None);
        }
        if let Some((_, no_proxy)) = any(["NO_PROXY", "no_proxy"]) {
            if bypasses(&no_proxy, host, port) {
                return Ok(None);
            }
        }
        Self::parse(var, value.trim()).map(Some)
    }

    /// Parses `[http://][user[:password]@]host[:port][/]`.
    fn parse(var: &'static str, value: &str) -> Result<Proxy, ProxyError> {
        let invalid = |reason: &str| ProxyError::Invalid { var, reason: reason.to_owned() };
        let rest = match value.split_once("://") {
            Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
            Some((scheme, _)) => {
                return Err(ProxyError::Invalid {
                    var,
                    reason: format!("{scheme}:// proxies are not supported (use http://)"),
                })
            }
            None => value,
        };
        let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
        let (userinfo, hostport) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (host, port) = match hostport.strip_prefix('[') {
            Some(v6) => {
                let (addr, tail) = v6.split_once(']').ok_or_else(|| invalid("unclosed ["))?;
                let port = match tail {
                    "" => None,
                    t => Some(t.strip_prefix(':').ok_or_else(|| invalid("not a host[:port]"))?),
                };
                (addr, port)
            }
            None => match hostport.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (hostport, None),
            },
        };
        let valid_host = |h: &str| {
            !h.is_empty() && h.chars().all(|c| c.is_ascii_alphanumeric() || "-._:".contains(c))
        };
        if !valid_host(host) {
            return Err(invalid("not a host[:port]"));
        }
        let port = match port {
            Some(p) => p.parse::<u16>().map_err(|_| invalid("bad port"))?,
            None => 80,
        };
        let host = host.to_owned();
        let authorization = userinfo.map(|u| {
            let (user, password) = u.split_once(':').unwrap_or((u, ""));
            let pair = format!("{}:{}", percent_decode(user), percent_decode(password));
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(pair))
        });
        Ok(Proxy { host, port, authorization })
    }

    /// Opens a TCP connection to the proxy and a `CONNECT` tunnel through
    /// it to `host:port`, within `wait`.
    pub async fn connect(
        &self,
        host: &str,
        port: u16,
        wait: Duration,
    ) -> Result<TcpStream, ProxyError> {
        let io = |source| ProxyError::Io { proxy: self.to_string(), source };
        let tunnel = async {
            let mut tcp = TcpStream::connect((self.host.as_str(), self.port)).await.map_err(io)?;
            let _ = tcp.set_nodelay(true);
            let target = authority(host, port);
            let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
            if let Some(auth) = &self.authorization {
                request.push_str(&format!("Proxy-Authorization: {auth}\r\n"));
            }
            request.push_str("\r\n");
            tcp.write_all(request.as_bytes()).await.map_err(io)?;
            let status = read_status(&mut tcp).await.map_err(|e| match e {
                Some(e) => io(e),
                None => ProxyError::Malformed { proxy: self.to_string() },
            })?;
            if !(200..300).contains(&status) {
                let hint = match status {
                    407 if self.authorization.is_some() => {
                        " (the proxy refused the credentials in the proxy URL)"
                    }
                    407 => " (the proxy wants credentials: http://user:password@host:port)",
                    _ => "",
                };
                return Err(ProxyError::Refused { proxy: self.to_string(), target, status, hint });
            }
            tracing::debug!(proxy = %self, %target, "connected through the proxy");
            Ok(tcp)
        };
        tokio::time::timeout(wait, tunnel)
            .await
            .map_err(|_| ProxyError::Timeout { proxy: self.to_string() })?
    }
}

/// Connects to `host:port`, through the proxy the environment names for it
/// if any (`tls`: the target is `https`/`wss`), within `wait`.
pub async fn connect_tcp(
    tls: bool,
    host: &str,
    port: u16,
    wait: Duration,
) -> Result<TcpStream, ProxyError> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if let Some(proxy) = Proxy::from_env(tls, host, port)? {
        return proxy.connect(host, port, wait).await;
    }
    let target = authority(host, port);
    let io = |source| ProxyError::Direct { target: target.clone(), source };
    match tokio::time::timeout(wait, TcpStream::connect((host, port))).await {
        Ok(Ok(tcp)) => {
            let _ = tcp.set_nodelay(true);
            Ok(tcp)
        }
        Ok(Err(e)) => Err(io(e)),
        Err(_) => Err(io(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!("no answer within {wait:?}"),
        ))),
    }
}

fn authority(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Reads the proxy's response header (byte by byte: nothing after it may be
/// consumed) and returns its status code. `Err(None)`: not HTTP.
async fn read_status(tcp: &mut TcpStream) -> Result<u16, Option<std::io::Error>> {
    let mut header = Vec::with_capacity(256);
    while !header.ends_with(b"\r\n\r\n") {
        if header.len() >= MAX_RESPONSE_HEADER {
            return Err(None);
        }
        let byte = tcp.read_u8().await.map_err(Some)?;
        header.push(byte);
    }
    let line = header.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = std::str::from_utf8(line).map_err(|_| None)?;
    let mut parts = line.split_whitespace();
    match (parts.next(), parts.next()) {
        (Some(version), Some(code)) if version.starts_with("HTTP/1.") => {
            code.parse().map_err(|_| None)
        }
        _ => Err(None),
    }
}

fn is_local(host: &str) -> bool {
    host.eq_ignore_ascii_case("localhost")
        || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

/// Whether `NO_PROXY` exempts `host:port`.
fn bypasses(no_proxy: &str, host: &str, port: u16) -> bool {
    let host = host.to_ascii_lowercase();
    let ip = host.parse::<IpAddr>().ok();
    no_proxy.split([',', ' ']).map(str::trim).filter(|e| !e.is_empty()).any(|entry| {
        if entry == "*" {
            return true;
        }
        let entry = entry.to_ascii_lowercase();
        // `[v6]:port`, `v4:port`, `name:port`; a bare IPv6 address has colons too.
        let (name, entry_port) = if let Some(rest) = entry.strip_prefix('[') {
            match rest.split_once(']') {
                Some((addr, tail)) => (addr.to_owned(), tail.strip_prefix(':')),
                None => return false,
            }
        } else if entry.matches(':').count() == 1 {
            let (n, p) = entry.split_once(':').unwrap_or((&entry, ""));
            (n.to_owned(), Some(p))
        } else {
            (entry.clone(), None)
        };
        if let Some(p) = entry_port {
            if p.parse::<u16>().ok() != Some(port) {
                return false;
            }
        }
        if let Some(ip) = ip {
            if let Some((net, bits)) = name.split_once('/') {
                return in_cidr(ip, net, bits);
            }
            return name.parse::<IpAddr>().ok() == Some(ip);
        }
        match name.strip_prefix('.') {
            Some(suffix) => host.ends_with(&format!(".{suffix}")),
            None => host == name || host.ends_with(&format!(".{name}")),
        }
    })
}

fn in_cidr(ip: IpAddr, net: &str, bits: &str) -> bool {
    let (Ok(net), Ok(bits)) = (net.parse::<IpAddr>(), bits.parse::<u32>()) else { return false };
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) if bits <= 32 => {
            let mask = u32::MAX.checked_shl(32 - bits).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) if bits <= 128 => {
            let mask = u128::MAX.checked_shl(128 - bits).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// `%XX` escapes decoded; invalid ones kept as written.
fn percent_decode(s: &str) -> String {
    let mut out = Vec::with_capacity(s.len());
    let mut rest = s.as_bytes();
    while let Some((&b, tail)) = rest.split_first() {
        let decoded = tail
            .get(..2)
            .filter(|_| b == b'%')
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match decoded {
            Some(d) => {
                out.push(d);
                rest = tail.get(2..).unwrap_or_default();
            }
            None => {
                out.push(b);
                rest = tail;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn lookup(vars: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let vars: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |name| vars.get(name).cloned()
    }

    #[test]
    fn picks_the_variable_by_scheme_upper_case_first() {
        let env = lookup(&[
            ("HTTP_PROXY", "http://plain:3128"),
            ("http_proxy", "http://lower:1"),
            ("https_proxy", "secure:8080"),
        ]);
        let p = Proxy::from_lookup(&env, false, "coder.example.com", 80).unwrap().unwrap();
        assert_eq!(p.to_string(), "http://plain:3128");
        let p = Proxy::from_lookup(&env, true, "coder.example.com", 443).unwrap().unwrap();
        assert_eq!(p.to_string(), "http://secure:8080");
        assert_eq!(Proxy::from_lookup(lookup(&[]), true, "x", 443).unwrap(), None);
        let empty = lookup(&[("HTTPS_PROXY", " ")]);
        assert_eq!(Proxy::from_lookup(empty, true, "x", 443).unwrap(), None);
    }

    #[test]
    fn credentials_become_basic_auth_and_never_show() {
        let env = lookup(&[("HTTP_PROXY", "http://al%40ice:s%3Acret@10.0.0.1:3128/")]);
        let p = Proxy::from_lookup(env, false, "coder", 80).unwrap().unwrap();
        // base64("al@ice:s:cret")
        assert_eq!(p.authorization.as_deref(), Some("Basic YWxAaWNlOnM6Y3JldA=="));
        assert_eq!(p.to_string(), "http://10.0.0.1:3128");
        let debug = format!("{p:?}");
        assert!(!debug.contains("cret") && !debug.contains("YWx"), "{debug}");
        let p = Proxy::parse("HTTP_PROXY", "http://[fd00::1]").unwrap();
        assert_eq!((p.to_string(), p.authorization), ("http://[fd00::1]:80".into(), None));
    }

    #[test]
    fn unsupported_and_malformed_settings_are_clear_errors() {
        let err = Proxy::parse("HTTPS_PROXY", "socks5://h:1080").unwrap_err().to_string();
        assert!(err.contains("socks5:// proxies are not supported"), "{err}");
        assert!(Proxy::parse("HTTP_PROXY", "http://").is_err());
        assert!(Proxy::parse("HTTP_PROXY", "http://h:notaport").is_err());
        // The error names the variable, never the credentials.
        let err = Proxy::parse("HTTP_PROXY", "http://u:secret@h:99999").unwrap_err().to_string();
        assert!(err.contains("HTTP_PROXY") && !err.contains("secret"), "{err}");
    }

    #[test]
    fn no_proxy_and_loopback_bypass() {
        let proxied = |no_proxy: &str, host: &str, port: u16| {
            let env = lookup(&[("HTTPS_PROXY", "http://p:1"), ("NO_PROXY", no_proxy)]);
            Proxy::from_lookup(env, true, host, port).unwrap().is_some()
        };
        assert!(!proxied("", "localhost", 443));
        assert!(!proxied("", "127.0.0.1", 443));
        assert!(!proxied("", "[::1]", 443));
        assert!(proxied("", "coder.example.com", 443));
        assert!(!proxied("*", "coder.example.com", 443));
        assert!(!proxied("example.com", "coder.example.com", 443));
        assert!(!proxied("example.com", "example.com", 443));
        assert!(proxied("example.com", "badexample.com", 443));
        assert!(!proxied(".example.com", "coder.example.com", 443));
        assert!(proxied(".example.com", "example.com", 443));
        assert!(!proxied("other, Example.COM:443", "coder.example.com", 443));
        assert!(proxied("example.com:8443", "coder.example.com", 443));
        assert!(!proxied("10.0.0.0/8", "10.1.2.3", 443));
        assert!(proxied("10.0.0.0/8", "11.1.2.3", 443));
        assert!(!proxied("10.99.0.1", "10.99.0.1", 3000));
        assert!(!proxied("fd00::/8", "fd12::1", 443));
        assert!(!proxied("[fd12::1]:443", "fd12::1", 443));
        assert!(proxied("[fd12::1]:80", "fd12::1", 443));
        let lower = lookup(&[("https_proxy", "p:1"), ("no_proxy", "example.com")]);
        assert_eq!(Proxy::from_lookup(lower, true, "a.example.com", 443).unwrap(), None);
    }

    /// A one-shot proxy on 127.0.0.1: returns what it read and answers `reply`.
    async fn fake_proxy(reply: &'static str) -> (u16, tokio::task::JoinHandle<String>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut got = Vec::new();
            while !got.ends_with(b"\r\n\r\n") {
                got.push(s.read_u8().await.unwrap());
            }
            s.write_all(reply.as_bytes()).await.unwrap();
            s.write_all(b"tunnelled").await.unwrap();
            String::from_utf8(got).unwrap()
        });
        (port, task)
    }

    #[tokio::test]
    async fn connect_sends_connect_with_auth_and_leaves_the_stream_clean() {
        let (port, seen) = fake_proxy("HTTP/1.1 200 Connection established\r\n\r\n").await;
        let p = Proxy::parse("HTTP_PROXY", &format!("http://u:p@127.0.0.1:{port}")).unwrap();
        let mut tcp = p.connect("relay.example", 3340, Duration::from_secs(5)).await.unwrap();
        let mut after = [0u8; 9];
        tcp.read_exact(&mut after).await.unwrap();
        assert_eq!(&after, b"tunnelled", "bytes after the header belong to the tunnel");
        assert_eq!(
            seen.await.unwrap(),
            "CONNECT relay.example:3340 HTTP/1.1\r\nHost: relay.example:3340\r\n\
             Proxy-Authorization: Basic dTpw\r\n\r\n"
        );

        let (port, _) = fake_proxy("HTTP/1.1 407 Proxy Authentication Required\r\n\r\n").await;
        let p = Proxy::parse("HTTP_PROXY", &format!("127.0.0.1:{port}")).unwrap();
        let err = p.connect("h", 1, Duration::from_secs(5)).await.unwrap_err().to_string();
        assert!(err.contains("HTTP 407") && err.contains("wants credentials"), "{err}");

        let (port, _) = fake_proxy("SSH-2.0-nope\r\n\r\n").await;
        let p = Proxy::parse("HTTP_PROXY", &format!("127.0.0.1:{port}")).unwrap();
        let err = p.connect("h", 1, Duration::from_secs(5)).await.unwrap_err();
        assert!(matches!(err, ProxyError::Malformed { .. }), "{err}");
    }
}
