//! The real `coderd server --tls-address --tls-cert-file --tls-key-file`
//! with a certificate from a throwaway CA, and the real `coder` CLI: it
//! trusts the CA only through `SSL_CERT_FILE`, and without it fails on the
//! certificate (no fallback to skipping verification).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Output;

use tests::{run_ok, tempdir, Coderd, FIRST_USER};

/// Writes a CA (`ca.pem`) and a certificate it issued for `127.0.0.1`
/// (`cert.pem`, `key.pem`) into `dir`.
fn write_pki(dir: &Path) {
    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name.push(DnType::CommonName, "coderd e2e CA");
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca = ca.self_signed(&ca_key).unwrap();
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &ca, &ca_key)
        .unwrap();
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("cert.pem"), leaf.pem()).unwrap();
    std::fs::write(dir.join("key.pem"), key.serialize_pem()).unwrap();
}

fn failed(out: &Output) -> String {
    assert!(!out.status.success(), "expected a failure: {}", String::from_utf8_lossy(&out.stdout));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn cli_verifies_coderd_certificate_with_ssl_cert_file() {
    let tmp = tempdir().unwrap();
    let pki = tmp.path().join("pki");
    std::fs::create_dir_all(&pki).unwrap();
    write_pki(&pki);
    let path = |name: &str| pki.join(name).to_str().unwrap().to_owned();
    let tls_addr = Coderd::free_addr().unwrap();
    let access = format!("https://{tls_addr}");
    let srv = Coderd::spawn_env(
        &tmp.path().join("data"),
        "127.0.0.1:0",
        &[
            "--tls-address",
            &tls_addr,
            "--tls-cert-file",
            &path("cert.pem"),
            "--tls-key-file",
            &path("key.pem"),
            "--access-url",
            &access,
            "--strict-transport-security",
            "3600",
        ],
        // coderd's own mesh peer reaches its relay at the access URL.
        &[("SSL_CERT_FILE", &path("ca.pem"))],
    )
    .unwrap();
    let cfg = tmp.path().join("config");
    let coder = || {
        let mut c = srv.coder(&cfg).unwrap();
        c.env_remove("SSL_CERT_FILE").env_remove("SSL_CERT_DIR");
        c
    };

    // The system's roots do not include the test CA: a certificate error.
    let out = coder().args(["login", &access]).args(FIRST_USER).output().unwrap();
    let err = failed(&out);
    assert!(err.contains("certificate") || err.contains("UnknownIssuer"), "{err}");

    // An SSL_CERT_FILE that cannot be read is an error, not other roots.
    let out = coder()
        .env("SSL_CERT_FILE", tmp.path().join("missing.pem"))
        .args(["login", &access])
        .args(FIRST_USER)
        .output()
        .unwrap();
    let err = failed(&out);
    assert!(err.contains("SSL_CERT_FILE"), "{err}");

    // Trusting the CA: login and an authenticated call over HTTPS.
    let out = run_ok(
        coder().env("SSL_CERT_FILE", path("ca.pem")).args(["login", &access]).args(FIRST_USER),
    )
    .unwrap();
    assert!(out.contains("Welcome"), "{out}");
    let who = run_ok(coder().env("SSL_CERT_FILE", path("ca.pem")).args(["whoami"])).unwrap();
    assert!(who.contains("dev"), "{who}");

    // The plain HTTP listener redirects to the https access URL.
    let plain = std::net::TcpStream::connect(srv.url.socket_addrs(|| None).unwrap()[0]).unwrap();
    let head = http_get(plain, "/api/v2/buildinfo");
    assert!(head.starts_with("HTTP/1.1 308"), "{head}");
    let location = format!("location: {access}/api/v2/buildinfo");
    assert!(head.to_ascii_lowercase().contains(&location), "{head}");
}

/// A bare HTTP/1.1 GET; returns the response head.
fn http_get(mut s: std::net::TcpStream, path: &str) -> String {
    use std::io::{Read, Write};
    write!(s, "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n").unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out.split("\r\n\r\n").next().unwrap_or_default().to_owned()
}
