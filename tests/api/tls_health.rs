//! `/health`, TLS and HTTP version negotiation, resilience to non-TLS or stalled peers, and
//! startup failures that are reported as errors rather than panics.

use std::os::unix::fs::PermissionsExt as _;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ProtocolVersion, SupportedProtocolVersion};
use serde_json::json;
use tokengate::config::Settings;
use tokengate::Application;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::helpers::{
    read_until_closed, spawn_app, spawn_app_with, test_settings, write_fixture_stores, Reply,
    TestApp,
};

// ---------------------------------------------------------------------------------------------
// Helpers local to this module
// ---------------------------------------------------------------------------------------------

async fn get_health(client: &reqwest::Client, app: &TestApp) -> reqwest::Response {
    client.get(app.url("/health")).send().await.unwrap()
}

/// GET /health over HTTPS answers 200 `{"status":"ok","store":"ok"}`.
async fn assert_healthy(app: &TestApp) {
    let reply = Reply::read(get_health(&app.client, app).await).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body, json!({"status": "ok", "store": "ok"}));
}

/// The app's certificate as the only trust anchor.
fn app_roots(app: &TestApp) -> rustls::RootCertStore {
    let pem = std::fs::read(&app.settings.tls.cert).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in <CertificateDer<'static> as PemObject>::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    roots
}

/// A TLS handshake with the app offering only `versions` and ALPN `http/1.1`.
async fn handshake(
    app: &TestApp,
    versions: &[&'static SupportedProtocolVersion],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(app_roots(app))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// Sends `GET /health` over an established TLS stream and returns the whole response as text.
async fn health_over(stream: &mut tokio_rustls::client::TlsStream<TcpStream>) -> String {
    stream
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    stream.flush().await.unwrap();
    String::from_utf8_lossy(&read_until_closed(stream).await).into_owned()
}

/// Settings for a second, not yet built app in a fresh home folder with the fixture stores.
fn fresh_settings() -> (tempfile::TempDir, Settings) {
    let home = tempfile::tempdir().unwrap();
    write_fixture_stores(home.path());
    let settings = test_settings(home.path());
    (home, settings)
}

/// Builds an app that must fail, and returns its error's Display text.
async fn startup_error(settings: Settings) -> String {
    match Application::build(settings).await {
        Ok(app) => panic!("the app built and listens on {}", app.local_addr()),
        Err(err) => err.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// /health
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn health_is_200_json_status_ok_store_ok() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let reply = Reply::read(get_health(&app.client, &app).await).await;

    // Assert
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.header("content-type"), Some("application/json"));
    assert_eq!(reply.body, json!({"status": "ok", "store": "ok"}));
    assert_eq!(reply.text, r#"{"status":"ok","store":"ok"}"#);
}

// ---------------------------------------------------------------------------------------------
// HTTP versions via ALPN
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn health_is_served_over_http2_when_alpn_offers_h2() {
    // Arrange: the helper client offers h2 and http/1.1 via ALPN.
    let app = spawn_app().await;

    // Act
    let response = get_health(&app.client, &app).await;

    // Assert
    assert_eq!(response.version(), reqwest::Version::HTTP_2);
    let reply = Reply::read(response).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body, json!({"status": "ok", "store": "ok"}));
}

#[tokio::test]
async fn health_is_served_over_http1_1_to_a_client_that_only_speaks_http1() {
    // Arrange
    let app = spawn_app().await;
    let pem = std::fs::read(&app.settings.tls.cert).unwrap();
    let http1 = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .http1_only()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // Act
    let response = get_health(&http1, &app).await;

    // Assert
    assert_eq!(response.version(), reqwest::Version::HTTP_11);
    let reply = Reply::read(response).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body, json!({"status": "ok", "store": "ok"}));
}

// ---------------------------------------------------------------------------------------------
// TLS versions
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn a_tls_1_2_only_client_completes_the_handshake_and_is_served() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let mut tls = handshake(&app, &[&rustls::version::TLS12]).await;

    // Assert
    let connection = tls.get_ref().1;
    assert_eq!(
        connection.protocol_version(),
        Some(ProtocolVersion::TLSv1_2)
    );
    assert_eq!(connection.alpn_protocol(), Some(&b"http/1.1"[..]));
    let response = health_over(&mut tls).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.ends_with(r#"{"status":"ok","store":"ok"}"#),
        "{response}"
    );
}

#[tokio::test]
async fn a_tls_1_3_only_client_completes_the_handshake_and_is_served() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let mut tls = handshake(&app, &[&rustls::version::TLS13]).await;

    // Assert
    let connection = tls.get_ref().1;
    assert_eq!(
        connection.protocol_version(),
        Some(ProtocolVersion::TLSv1_3)
    );
    assert_eq!(connection.alpn_protocol(), Some(&b"http/1.1"[..]));
    let response = health_over(&mut tls).await;
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(
        response.ends_with(r#"{"status":"ok","store":"ok"}"#),
        "{response}"
    );
}

/// A TLS 1.1 ClientHello: legacy_version 3.2, no `supported_versions` extension, two CBC-SHA
/// suites. A real TLS 1.1 client sends no `signature_algorithms` (a TLS 1.2 extension);
/// `with_signature_algorithms` adds one so that nothing but the version is wrong.
fn tls_1_1_client_hello(with_signature_algorithms: bool) -> Vec<u8> {
    let mut hello = vec![0x03, 0x02]; // client_version: TLS 1.1
    hello.extend_from_slice(&[0x42; 32]); // random
    hello.push(0x00); // session_id: empty
    hello.extend_from_slice(&[0x00, 0x04, 0xC0, 0x13, 0x00, 0x2F]); // cipher_suites
    hello.extend_from_slice(&[0x01, 0x00]); // compression_methods: null
    if with_signature_algorithms {
        // extensions (10 bytes): signature_algorithms (13) = rsa_pkcs1_sha256, ecdsa_p256_sha256
        hello.extend_from_slice(&[0x00, 0x0A, 0x00, 0x0D, 0x00, 0x06, 0x00, 0x04]);
        hello.extend_from_slice(&[0x04, 0x01, 0x04, 0x03]);
    }
    let len = u32::try_from(hello.len()).unwrap().to_be_bytes();
    let mut handshake = vec![0x01, len[1], len[2], len[3]]; // ClientHello, 24-bit length
    handshake.extend_from_slice(&hello);
    let len = u16::try_from(handshake.len()).unwrap().to_be_bytes();
    let mut record = vec![0x16, 0x03, 0x01, len[0], len[1]]; // handshake record
    record.extend_from_slice(&handshake);
    record
}

/// Sends a raw ClientHello and returns everything the server sends before closing.
async fn server_answer_to(client_hello: &[u8], app: &TestApp) -> Vec<u8> {
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();
    tcp.write_all(client_hello).await.unwrap();
    read_until_closed(&mut tcp).await
}

#[tokio::test]
async fn a_tls_1_1_client_hello_is_refused_with_a_fatal_alert_and_no_server_hello() {
    // Arrange
    let app = spawn_app().await;

    // Act
    let received = server_answer_to(&tls_1_1_client_hello(false), &app).await;

    // Assert: a single alert record (type 21, 2 bytes), level fatal (2), then the close.
    assert_eq!(received.first(), Some(&0x15), "{received:02X?}");
    assert_eq!(
        received.get(3..6),
        Some(&[0x00, 0x02, 0x02][..]),
        "{received:02X?}"
    );
    assert_eq!(received.len(), 7, "{received:02X?}");
    assert_healthy(&app).await;
}

#[tokio::test]
async fn a_tls_1_1_client_hello_that_is_otherwise_acceptable_gets_a_protocol_version_alert() {
    // Arrange: RFC 8446 §4.2.1 — without `supported_versions` and with a legacy_version below
    // every version the server supports, the server aborts with `protocol_version` (70).
    let app = spawn_app().await;

    // Act
    let received = server_answer_to(&tls_1_1_client_hello(true), &app).await;

    // Assert
    assert_eq!(received.first(), Some(&0x15), "{received:02X?}");
    assert_eq!(
        received.get(3..7),
        Some(&[0x00, 0x02, 0x02, 70][..]),
        "{received:02X?}"
    );
    assert_healthy(&app).await;
}

// ---------------------------------------------------------------------------------------------
// Peers that don't speak TLS, or don't finish
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn plain_http_to_the_tls_port_gets_no_http_answer_and_the_server_stays_up() {
    // Arrange
    let app = spawn_app().await;
    let mut tcp = TcpStream::connect(app.addr).await.unwrap();

    // Act
    tcp.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let received = read_until_closed(&mut tcp).await;

    // Assert: the connection is closed (at most after a TLS alert), never an HTTP response.
    assert!(!received.starts_with(b"HTTP/"), "{received:02X?}");
    assert!(
        received.is_empty() || received.first() == Some(&0x15),
        "expected nothing or a TLS alert: {received:02X?}"
    );
    assert_healthy(&app).await;
}

#[tokio::test]
async fn a_tls_handshake_that_never_completes_does_not_block_other_clients() {
    // Arrange: the handshake timeout is far longer than the test, so the stalled connections
    // stay open throughout; one sends nothing, one half a TLS record header.
    let app = spawn_app_with(|settings| {
        settings.server.tls_handshake_timeout = Duration::from_secs(600);
    })
    .await;
    let silent = TcpStream::connect(app.addr).await.unwrap();
    let mut partial = TcpStream::connect(app.addr).await.unwrap();
    partial.write_all(&[0x16, 0x03]).await.unwrap();

    // Act
    let health = tokio::time::timeout(Duration::from_secs(20), get_health(&app.client, &app))
        .await
        .expect("/health answers while handshakes are stalled");

    // Assert
    let reply = Reply::read(health).await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert_eq!(reply.body, json!({"status": "ok", "store": "ok"}));
    let mut buf = [0u8; 16];
    for stalled in [&silent, &partial] {
        let still_open = stalled.try_read(&mut buf);
        assert!(
            matches!(&still_open, Err(err) if err.kind() == std::io::ErrorKind::WouldBlock),
            "the stalled connection should still be open and silent: {still_open:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// Startup errors
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn missing_certificate_files_without_self_signing_is_an_error_naming_the_certificate() {
    // Arrange
    let (_home, mut settings) = fresh_settings();
    settings.tls.generate_self_signed = false;
    let cert = settings.tls.cert.clone();
    let key = settings.tls.key.clone();
    assert!(!cert.exists() && !key.exists());

    // Act
    let error = startup_error(settings).await;

    // Assert
    assert!(error.contains(&cert.display().to_string()), "{error}");
    assert!(!cert.exists() && !key.exists(), "nothing may be generated");
}

#[tokio::test]
async fn a_certificate_file_that_is_not_pem_is_an_error_naming_it() {
    // Arrange
    let (_home, settings) = fresh_settings();
    let (cert, key) = (settings.tls.cert.clone(), settings.tls.key.clone());
    tokengate::tls::generate_self_signed(&cert, &key).unwrap();
    std::fs::write(&cert, "this is not a certificate\n").unwrap();

    // Act
    let error = startup_error(settings).await;

    // Assert
    assert!(error.contains(&cert.display().to_string()), "{error}");
}

#[tokio::test]
async fn a_key_file_that_is_not_pem_is_an_error_naming_it() {
    // Arrange
    let (_home, settings) = fresh_settings();
    let (cert, key) = (settings.tls.cert.clone(), settings.tls.key.clone());
    tokengate::tls::generate_self_signed(&cert, &key).unwrap();
    std::fs::write(&key, "this is not a key\n").unwrap();

    // Act
    let error = startup_error(settings).await;

    // Assert
    assert!(error.contains(&key.display().to_string()), "{error}");
}

#[tokio::test]
async fn a_port_already_in_use_is_an_error_not_a_panic() {
    // Arrange: another program listens on the port (a second tokengate would share it:
    // handover.rs).
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = other.local_addr().unwrap().port();
    let (_home, mut settings) = fresh_settings();
    settings.server.https_port = port;

    // Act
    let error = startup_error(settings).await;

    // Assert
    assert!(error.contains("cannot listen"), "{error}");
    assert!(error.contains(&port.to_string()), "{error}");
}

#[tokio::test]
async fn a_missing_certificate_is_generated_self_signed_with_an_owner_only_key() {
    // Arrange: spawn_app starts in an empty home with generate_self_signed = true.
    let app = spawn_app().await;
    let tls = &app.settings.tls;

    // Act
    let cert = std::fs::read_to_string(&tls.cert).unwrap();
    let key_mode = std::fs::metadata(&tls.key).unwrap().permissions().mode();

    // Assert
    assert!(
        tls.cert.starts_with(app.home.path()),
        "{}",
        tls.cert.display()
    );
    assert!(
        tls.key.starts_with(app.home.path()),
        "{}",
        tls.key.display()
    );
    assert!(cert.starts_with("-----BEGIN CERTIFICATE-----"), "{cert}");
    assert_eq!(key_mode & 0o777, 0o600, "key mode {:o}", key_mode & 0o777);
    // The client trusts exactly this file, so a successful request proves it is the one served.
    assert_healthy(&app).await;
}
