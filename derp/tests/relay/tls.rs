//! HTTPS relays: `derper --tls-cert/--tls-key`, a client trusting the cert.

use std::sync::Arc;

use bytes::Bytes;
use derp::server::tls_acceptor_from_pem_files;
use derp::{Client, ClientConfig, SecretKey, Server, ServerConfig};
use tokio::net::TcpListener;
use tokio_util::task::AbortOnDropHandle;

use crate::harness::within;

#[tokio::test]
async fn clients_exchange_packets_over_https() {
    let rcgen::CertifiedKey { cert, key_pair } =
        rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (cert_path, key_path) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    std::fs::write(&cert_path, cert.pem()).unwrap();
    std::fs::write(&key_path, key_pair.serialize_pem()).unwrap();
    let acceptor = tls_acceptor_from_pem_files(&cert_path, &key_path).unwrap();

    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let server = Server::spawn(ServerConfig::default()).unwrap();
    let _serve = AbortOnDropHandle::new(tokio::spawn({
        let server = server.clone();
        async move { server.serve_tls(listener, acceptor).await }
    }));

    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert.der().clone()).unwrap();
    let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let tls = Arc::new(tls);
    let url: derp::RelayUrl = format!("https://localhost:{port}/derp").parse().unwrap();
    let connect = |tls: Arc<rustls::ClientConfig>| {
        let mut config = ClientConfig::new(url.clone(), SecretKey::generate());
        config.tls = Some(tls);
        Client::connect(config)
    };
    let a = connect(tls.clone()).await.unwrap();
    let b = connect(tls).await.unwrap();
    a.send(b.public_key(), Bytes::from_static(b"secret")).await.unwrap();
    assert_eq!(within("b to receive", b.recv()).await.unwrap().data, Bytes::from_static(b"secret"));

    // Without trusting the certificate the connection is refused.
    let err =
        Client::connect(ClientConfig::new(url.clone(), SecretKey::generate())).await.unwrap_err();
    assert!(matches!(err, derp::client::ConnectError::Io(_)), "{err}");
}
