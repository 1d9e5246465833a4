//! Graceful shutdown: no new connections, requests in flight finish, the store closes.

use std::time::Duration;

use tokio::io::AsyncWriteExt as _;

use crate::helpers::*;

#[tokio::test]
async fn a_request_in_flight_when_shutdown_begins_still_gets_its_answer() {
    let app = spawn_app().await;
    let body = format!("grant_type=password&username={USER}&password={PASSWORD}");
    let (head_and_half, rest) = {
        let credentials = base64_basic(CLIENT_ID, CLIENT_SECRET);
        let request = format!(
            "POST /token HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {credentials}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let split = request.len() - 10;
        (request[..split].to_owned(), request[split..].to_owned())
    };
    let mut tls = raw_http1_connection(&app).await;
    tls.write_all(head_and_half.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    // The headers are in: the request is in flight, its body still incomplete.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let addr = app.addr;

    let stopping = tokio::spawn(app.stop());
    tokio::time::sleep(Duration::from_millis(200)).await;
    let refused = tokio::net::TcpStream::connect(addr).await;
    tls.write_all(rest.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let received = read_until_closed(&mut tls).await;

    assert!(refused.is_err(), "no new connections once shutdown began");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains("\"access_token\""), "{text}");
    tokio::time::timeout(Duration::from_secs(15), stopping)
        .await
        .expect("the server stops within its grace period")
        .unwrap();
}

fn base64_basic(id: &str, secret: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(format!("{id}:{secret}"))
}
