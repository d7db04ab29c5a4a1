//! UPnP IGD messages: the sans-IO codec.
//!
//! Discovery is an SSDP `M-SEARCH` on UDP port 1900 whose answer's
//! `LOCATION` header names the gateway's device description (HTTP). That
//! XML names the control URL of its `WANIPConnection` (or
//! `WANPPPConnection`) service, to which SOAP requests go over HTTP:
//! `GetExternalIPAddress`, `AddPortMapping`, `DeletePortMapping`. This
//! module builds those requests and parses the answers by plain text
//! search (the documents are small and flat); the HTTP exchange itself is
//! the shell's ([`super::client`]).

use std::net::{Ipv4Addr, SocketAddrV4};

/// The SSDP multicast group and port.
pub const SSDP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 255, 255, 250), 1900);
const IGD: &str = "urn:schemas-upnp-org:device:InternetGatewayDevice:1";

/// The SSDP search for an Internet gateway.
pub fn search_request() -> Vec<u8> {
    format!(
        "M-SEARCH * HTTP/1.1\r\nHOST: {SSDP}\r\nST: {IGD}\r\nMAN: \"ssdp:discover\"\r\nMX: 1\r\n\r\n"
    )
    .into_bytes()
}

/// Why a gateway's answer was not understood.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ParseError {
    /// An SSDP answer without a usable `LOCATION`.
    #[error("SSDP answer without an http:// LOCATION")]
    NoLocation,
    /// The description lists no WAN connection service.
    #[error("the device description has no WANIPConnection or WANPPPConnection service")]
    NoService,
    /// Not an HTTP answer.
    #[error("malformed HTTP answer")]
    Http,
    /// The SOAP answer lacks the element asked for.
    #[error("SOAP answer without <{0}>")]
    Missing(&'static str),
    /// The gateway returned a UPnP error.
    #[error("UPnP error {code}: {description}")]
    Upnp {
        /// e.g. 718 ConflictInMappingEntry, 725 OnlyPermanentLeasesSupported.
        code: u16,
        /// The gateway's words.
        description: String,
    },
}

/// An `http://host:port/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpUrl {
    /// Where to connect.
    pub addr: SocketAddrV4,
    /// The path, from `/`.
    pub path: String,
}

impl HttpUrl {
    /// Parses an absolute `http://` URL with an IPv4 host.
    pub fn parse(url: &str) -> Option<HttpUrl> {
        let rest = url.trim().strip_prefix("http://")?;
        let (host, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        let addr = match host.parse::<SocketAddrV4>() {
            Ok(addr) => addr,
            Err(_) => SocketAddrV4::new(host.parse().ok()?, 80),
        };
        Some(HttpUrl { addr, path: path.to_owned() })
    }

    /// `reference` resolved against this URL: absolute, or a path on its host.
    pub fn join(&self, reference: &str) -> Option<HttpUrl> {
        let reference = reference.trim();
        if reference.starts_with("http://") {
            return HttpUrl::parse(reference);
        }
        let path = match reference.starts_with('/') {
            true => reference.to_owned(),
            false => format!("/{reference}"),
        };
        Some(HttpUrl { addr: self.addr, path })
    }
}

/// The `LOCATION` of an SSDP answer.
pub fn parse_search_response(b: &[u8]) -> Result<HttpUrl, ParseError> {
    let text = std::str::from_utf8(b).map_err(|_| ParseError::NoLocation)?;
    if !text.starts_with("HTTP/1.1 200") {
        return Err(ParseError::NoLocation);
    }
    header(text, "location").and_then(HttpUrl::parse).ok_or(ParseError::NoLocation)
}

fn header<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
    })
}

/// A WAN connection service: its type (for `SOAPAction`) and control URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// e.g. `urn:schemas-upnp-org:service:WANIPConnection:1`.
    pub service_type: String,
    /// Where SOAP requests go.
    pub control: HttpUrl,
}

/// The first WAN connection service in the device description fetched from
/// `location`.
pub fn parse_description(location: &HttpUrl, xml: &str) -> Result<Service, ParseError> {
    let mut rest = xml;
    while let Some((service, after)) = element(rest, "service") {
        rest = after;
        let Some((service_type, _)) = element(service, "serviceType") else { continue };
        let service_type = service_type.trim();
        if !(service_type.contains(":WANIPConnection:")
            || service_type.contains(":WANPPPConnection:"))
        {
            continue;
        }
        let control = element(service, "controlURL").and_then(|(url, _)| location.join(url));
        if let Some(control) = control {
            return Ok(Service { service_type: service_type.to_owned(), control });
        }
    }
    Err(ParseError::NoService)
}

/// The text of the first `<name>…</name>` (any namespace prefix) and what follows it.
fn element<'a>(xml: &'a str, name: &str) -> Option<(&'a str, &'a str)> {
    let mut search = 0;
    loop {
        let open = search + xml.get(search..)?.find('<')?;
        let tag_end = open + xml.get(open..)?.find('>')?;
        let tag = xml.get(open + 1..tag_end)?;
        search = tag_end + 1;
        let local = tag.split_whitespace().next().unwrap_or("");
        let local = local.rsplit(':').next().unwrap_or(local);
        if local != name || tag.ends_with('/') {
            continue;
        }
        let body = xml.get(search..)?;
        let close = body.match_indices("</").find(|(i, _)| {
            let close_tag = body.get(i + 2..).unwrap_or("");
            let end = close_tag.find('>').unwrap_or(close_tag.len());
            let close_name = &close_tag[..end];
            close_name.rsplit(':').next() == Some(name)
        })?;
        let after = body.get(close.0..)?.find('>').map(|i| close.0 + i + 1)?;
        return Some((body.get(..close.0)?, body.get(after..)?));
    }
}

/// A SOAP action on the WAN connection service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Action {
    /// The gateway's public address.
    GetExternalIpAddress,
    /// Forward UDP `external_port` to `client:internal_port`.
    AddPortMapping {
        /// The public port.
        external_port: u16,
        /// The LAN host.
        client: Ipv4Addr,
        /// Its port.
        internal_port: u16,
        /// Seconds (0: permanent).
        lease: u32,
        /// Shown in the router's UI.
        description: &'static str,
    },
    /// Remove the UDP forward of `external_port`.
    DeletePortMapping {
        /// The public port.
        external_port: u16,
    },
}

impl Action {
    fn name(&self) -> &'static str {
        match self {
            Action::GetExternalIpAddress => "GetExternalIPAddress",
            Action::AddPortMapping { .. } => "AddPortMapping",
            Action::DeletePortMapping { .. } => "DeletePortMapping",
        }
    }

    /// The whole HTTP request to `service`.
    pub fn http_request(&self, service: &Service) -> Vec<u8> {
        let args = match self {
            Action::GetExternalIpAddress => String::new(),
            Action::AddPortMapping { external_port, client, internal_port, lease, description } => {
                format!(
                    "<NewRemoteHost></NewRemoteHost><NewExternalPort>{external_port}</NewExternalPort>\
                     <NewProtocol>UDP</NewProtocol><NewInternalPort>{internal_port}</NewInternalPort>\
                     <NewInternalClient>{client}</NewInternalClient><NewEnabled>1</NewEnabled>\
                     <NewPortMappingDescription>{description}</NewPortMappingDescription>\
                     <NewLeaseDuration>{lease}</NewLeaseDuration>"
                )
            }
            Action::DeletePortMapping { external_port } => format!(
                "<NewRemoteHost></NewRemoteHost><NewExternalPort>{external_port}</NewExternalPort>\
                 <NewProtocol>UDP</NewProtocol>"
            ),
        };
        let name = self.name();
        let ty = &service.service_type;
        let body = format!(
            "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
             s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>\
             <u:{name} xmlns:u=\"{ty}\">{args}</u:{name}></s:Body></s:Envelope>\r\n"
        );
        format!(
            "POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/xml; charset=\"utf-8\"\r\n\
             SOAPAction: \"{ty}#{name}\"\r\nContent-Length: {len}\r\nConnection: close\r\n\r\n{body}",
            path = service.control.path,
            host = service.control.addr,
            len = body.len(),
        )
        .into_bytes()
    }
}

/// The body of an HTTP answer, or the UPnP error a SOAP fault carries.
pub fn http_body(answer: &[u8]) -> Result<String, ParseError> {
    let text = String::from_utf8_lossy(answer);
    let (head, body) = text.split_once("\r\n\r\n").ok_or(ParseError::Http)?;
    let status: u16 = head
        .strip_prefix("HTTP/1.")
        .and_then(|s| s.get(2..5))
        .and_then(|s| s.parse().ok())
        .ok_or(ParseError::Http)?;
    if status == 200 {
        return Ok(body.to_owned());
    }
    let code = element(body, "errorCode").and_then(|(c, _)| c.trim().parse().ok());
    match code {
        Some(code) => {
            let description = element(body, "errorDescription").map(|(d, _)| d.trim().to_owned());
            Err(ParseError::Upnp { code, description: description.unwrap_or_default() })
        }
        None => Err(ParseError::Http),
    }
}

/// `NewExternalIPAddress` of a `GetExternalIPAddress` answer body.
pub fn parse_external_address(body: &str) -> Result<Ipv4Addr, ParseError> {
    element(body, "NewExternalIPAddress")
        .and_then(|(a, _)| a.trim().parse().ok())
        .ok_or(ParseError::Missing("NewExternalIPAddress"))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    // miniupnpd 2.3.1's description, trimmed to the services' nesting.
    const DESCRIPTION: &str = r#"<?xml version="1.0"?>
<root xmlns="urn:schemas-upnp-org:device-1-0"><device><deviceType>urn:schemas-upnp-org:device:InternetGatewayDevice:1</deviceType>
<serviceList><service><serviceType>urn:schemas-upnp-org:service:Layer3Forwarding:1</serviceType><controlURL>/ctl/L3F</controlURL></service></serviceList>
<deviceList><device><deviceList><device><serviceList><service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>
<serviceId>urn:upnp-org:serviceId:WANIPConn1</serviceId><controlURL>/ctl/IPConn</controlURL><eventSubURL>/evt/IPConn</eventSubURL>
</service></serviceList></device></deviceList></device></deviceList></device></root>"#;

    fn location() -> HttpUrl {
        HttpUrl::parse("http://10.99.101.1:5000/rootDesc.xml").unwrap()
    }

    #[test]
    fn finds_the_wan_service() {
        let service = parse_description(&location(), DESCRIPTION).unwrap();
        assert_eq!(service.service_type, "urn:schemas-upnp-org:service:WANIPConnection:1");
        assert_eq!(service.control, HttpUrl::parse("http://10.99.101.1:5000/ctl/IPConn").unwrap());
        assert_eq!(parse_description(&location(), "<root/>"), Err(ParseError::NoService));
    }

    #[test]
    fn ssdp_answer_location() {
        let answer = b"HTTP/1.1 200 OK\r\nCACHE-CONTROL: max-age=120\r\nST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\nLocation: http://10.99.101.1:5000/rootDesc.xml\r\n\r\n";
        assert_eq!(parse_search_response(answer), Ok(location()));
        assert_eq!(
            parse_search_response(b"NOTIFY * HTTP/1.1\r\n\r\n"),
            Err(ParseError::NoLocation)
        );
        assert_eq!(
            parse_search_response(b"HTTP/1.1 200 OK\r\nLOCATION: ftp://x\r\n\r\n"),
            Err(ParseError::NoLocation)
        );
        assert_eq!(
            String::from_utf8(search_request()).unwrap(),
            "M-SEARCH * HTTP/1.1\r\nHOST: 239.255.255.250:1900\r\n\
             ST: urn:schemas-upnp-org:device:InternetGatewayDevice:1\r\n\
             MAN: \"ssdp:discover\"\r\nMX: 1\r\n\r\n"
        );
    }

    #[test]
    fn add_port_mapping_request_snapshot() {
        let service = parse_description(&location(), DESCRIPTION).unwrap();
        let add = Action::AddPortMapping {
            external_port: 41641,
            client: Ipv4Addr::new(10, 99, 101, 2),
            internal_port: 41641,
            lease: 3600,
            description: "coder",
        };
        let text = String::from_utf8(add.http_request(&service)).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert_eq!(
            head,
            "POST /ctl/IPConn HTTP/1.1\r\nHost: 10.99.101.1:5000\r\n\
             Content-Type: text/xml; charset=\"utf-8\"\r\n\
             SOAPAction: \"urn:schemas-upnp-org:service:WANIPConnection:1#AddPortMapping\"\r\n\
             Content-Length: 591\r\nConnection: close"
        );
        assert_eq!(body.len(), 591);
        assert_eq!(
            body,
            "<?xml version=\"1.0\"?>\r\n<s:Envelope xmlns:s=\"http://schemas.xmlsoap.org/soap/envelope/\" \
             s:encodingStyle=\"http://schemas.xmlsoap.org/soap/encoding/\"><s:Body>\
             <u:AddPortMapping xmlns:u=\"urn:schemas-upnp-org:service:WANIPConnection:1\">\
             <NewRemoteHost></NewRemoteHost><NewExternalPort>41641</NewExternalPort>\
             <NewProtocol>UDP</NewProtocol><NewInternalPort>41641</NewInternalPort>\
             <NewInternalClient>10.99.101.2</NewInternalClient><NewEnabled>1</NewEnabled>\
             <NewPortMappingDescription>coder</NewPortMappingDescription>\
             <NewLeaseDuration>3600</NewLeaseDuration></u:AddPortMapping></s:Body></s:Envelope>\r\n"
        );
    }

    #[test]
    fn soap_answers() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\n\r\n<s:Envelope><s:Body>\
                  <u:GetExternalIPAddressResponse xmlns:u=\"x\"><NewExternalIPAddress>10.99.0.11\
                  </NewExternalIPAddress></u:GetExternalIPAddressResponse></s:Body></s:Envelope>";
        let body = http_body(ok.as_bytes()).unwrap();
        assert_eq!(parse_external_address(&body), Ok(Ipv4Addr::new(10, 99, 0, 11)));
        let fault = "HTTP/1.1 500 Internal Server Error\r\n\r\n<s:Envelope><s:Body><s:Fault>\
                     <detail><UPnPError xmlns=\"urn:schemas-upnp-org:control-1-0\"><errorCode>718\
                     </errorCode><errorDescription>ConflictInMappingEntry</errorDescription>\
                     </UPnPError></detail></s:Fault></s:Body></s:Envelope>";
        assert_eq!(
            http_body(fault.as_bytes()),
            Err(ParseError::Upnp { code: 718, description: "ConflictInMappingEntry".into() })
        );
        assert_eq!(http_body(b"garbage"), Err(ParseError::Http));
        assert_eq!(
            parse_external_address("<x/>"),
            Err(ParseError::Missing("NewExternalIPAddress"))
        );
    }

    proptest::proptest! {
        #[test]
        fn any_text_parses_without_panic(s in ".{0,200}") {
            let _ = parse_description(&location(), &s);
            let _ = parse_search_response(s.as_bytes());
            let _ = http_body(s.as_bytes());
            let _ = parse_external_address(&s);
        }

        #[test]
        fn urls_round_trip(a in proptest::prelude::any::<[u8; 4]>(), port in 1u16.., path in "/[a-z0-9/]{0,20}") {
            let url = format!("http://{}:{port}{path}", Ipv4Addr::from(a));
            let parsed = HttpUrl::parse(&url).unwrap();
            proptest::prop_assert_eq!(parsed.addr, SocketAddrV4::new(a.into(), port));
            proptest::prop_assert_eq!(parsed.path, path);
        }
    }
}
