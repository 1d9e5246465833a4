//! A table of hostile or unusual requests, each with its expected answer, and the server
//! healthy after every one.

use std::sync::Arc;

use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::helpers::*;

fn basic() -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
}

fn token_request(version: &str, extra_headers: &str, body: &str) -> String {
    format!(
        "POST /token {version}\r\nHost: localhost\r\nAuthorization: Basic {}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n{extra_headers}\r\n{body}",
        basic(),
        body.len()
    )
}

async fn exchange(app: &TestApp, raw: &[u8]) -> String {
    let mut tls = raw_http1_connection(app).await;
    tls.write_all(raw).await.unwrap();
    tls.flush().await.unwrap();
    String::from_utf8_lossy(&read_until_closed(&mut tls).await).into_owned()
}

async fn assert_healthy(app: &TestApp) {
    assert_eq!(app.get("/health").await.status, 200);
}

#[tokio::test]
async fn hostile_requests_get_their_expected_answers() {
    let app = spawn_app().await;
    let many_params: String = (0..10_000).map(|i| format!("p{i}=1&")).collect();
    let login = format!("grant_type=password&username={USER}&password={PASSWORD}");
    let cases: Vec<(&str, String, &str)> = vec![
        ("HTTP/1.0 is answered", token_request("HTTP/1.0", "", &login), "HTTP/1.0 200"),
        (
            "10,000 parameters exceed the body limit",
            token_request("HTTP/1.1", "Connection: close\r\n", &many_params),
            "HTTP/1.1 413",
        ),
        (
            "a NUL byte in a parameter",
            token_request("HTTP/1.1", "Connection: close\r\n", "grant_type=password&username=a%00b&password=x"),
            "HTTP/1.1 400",
        ),
        (
            "overlong UTF-8 for '/'",
            token_request("HTTP/1.1", "Connection: close\r\n", "grant_type=password&username=%C0%AF&password=x"),
            "HTTP/1.1 400",
        ),
        (
            "an unknown method",
            "BREW /token HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".to_owned(),
            "HTTP/1.1 405",
        ),
        (
            "a request line that is not HTTP",
            "\u{1}\u{2}\u{3} garbage\r\n\r\n".to_owned(),
            "HTTP/1.1 400",
        ),
        (
            "a 100 KB header",
            format!("GET /health HTTP/1.1\r\nHost: localhost\r\nX-Big: {}\r\n\r\n", "a".repeat(100_000)),
            "HTTP/1.1 431",
        ),
        (
            "Content-Length larger than the body sent, then close",
            "POST /token HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 999999\r\n\r\nx".to_owned(),
            "HTTP/1.1 413",
        ),
    ];
    for (what, raw, expected) in cases {
        let answer = exchange(&app, raw.as_bytes()).await;
        assert!(
            answer.starts_with(expected),
            "{what}: expected {expected}, got {answer:.200}"
        );
        assert_healthy(&app).await;
    }
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let app = spawn_app().await;
    let pipelined = format!(
        "GET /nope HTTP/1.1\r\nHost: localhost\r\n\r\n{}",
        token_request(
            "HTTP/1.1",
            "Connection: close\r\n",
            "grant_type=client_credentials"
        )
    );

    let answer = exchange(&app, pipelined.as_bytes()).await;

    let first = answer.find("HTTP/1.1 404").expect(&answer);
    let second = answer.find("HTTP/1.1 400").expect(&answer);
    assert!(first < second, "{answer}");
    assert!(answer.contains("unauthorized_client"), "{answer}");
    assert_healthy(&app).await;
}

#[tokio::test]
async fn a_tls_client_without_sni_is_served() {
    let app = spawn_app().await;
    let mut config = tls_client_config(&app, b"http/1.1");
    config.enable_sni = false;
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    // An IP address as the server name: no SNI is sent, and the certificate's IP SAN matches.
    let name = ServerName::IpAddress(app.addr.ip().into());
    let mut tls = connector.connect(name, tcp).await.unwrap();

    tls.write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let answer = String::from_utf8_lossy(&read_until_closed(&mut tls).await).into_owned();

    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
