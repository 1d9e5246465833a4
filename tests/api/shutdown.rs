//! Graceful shutdown: no new connections, requests in flight finish, the store closes.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::helpers::*;

/// How long a condition this module waits for may take on a busy machine.
const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn a_request_in_flight_when_shutdown_begins_still_gets_its_answer() {
    let app = spawn_app().await;
    let body = format!("grant_type=password&username={USER}&password={PASSWORD}");
    let (head_and_half, rest) = {
        let credentials = base64_basic(CLIENT_ID, CLIENT_SECRET);
        // `Expect: 100-continue` makes the server say when the handler starts reading the body
        // (RFC 9110 §10.1.1), which is how this test knows the request is in flight.
        let request = format!(
            "POST /token HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {credentials}\r\n\
             Content-Type: application/x-www-form-urlencoded\r\nExpect: 100-continue\r\n\
             Content-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let split = request.len() - 10;
        (request[..split].to_owned(), request[split..].to_owned())
    };
    let mut tls = raw_http1_connection(&app).await;
    tls.write_all(head_and_half.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    // The headers are in: the request is in flight, its body still incomplete.
    wait_for_100_continue(&mut tls).await;
    let addr = app.addr;

    let stopping = tokio::spawn(app.stop());
    let refused = wait_until_connect_is_refused(addr).await;
    tls.write_all(rest.as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    let received = read_until_closed(&mut tls).await;

    assert!(refused, "no new connections once shutdown began");
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

/// Reads the interim `100 Continue` response, and nothing after it.
async fn wait_for_100_continue(stream: &mut (impl tokio::io::AsyncRead + Unpin)) {
    let mut received = Vec::new();
    let read = async {
        while !received.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            assert_eq!(stream.read(&mut byte).await.unwrap(), 1, "closed early");
            received.push(byte[0]);
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("the server reads the request within the deadline");
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 100"), "{text}");
}

/// Whether a new TCP connection to `addr` is refused within DEADLINE, trying every few ms.
async fn wait_until_connect_is_refused(addr: std::net::SocketAddr) -> bool {
    let deadline = Instant::now() + DEADLINE;
    while Instant::now() < deadline {
        if tokio::net::TcpStream::connect(addr).await.is_err() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    false
}
