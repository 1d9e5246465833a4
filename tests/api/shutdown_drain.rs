//! Graceful shutdown of open connections and the drain before it: every connection accepted
//! before the stop gets its request answered with `Connection: close` (also one that sends it
//! only after the stop began, or was still in its TLS handshake); new connections are refused;
//! with `shutdown_drain_period`, `/health` answers 503 for that long while requests (and new
//! connections) are still served.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;

use crate::helpers::*;

/// A client_credentials grant (SHA-256 secret: no argon2 wait) as raw HTTP/1.1.
fn token_request() -> String {
    use base64::Engine as _;
    let credentials = base64::engine::general_purpose::STANDARD
        .encode(format!("{SERVICE_CLIENT_ID}:{SHARED_SECRET}"));
    let body = "grant_type=client_credentials";
    format!(
        "POST /token HTTP/1.1\r\nHost: localhost\r\nAuthorization: Basic {credentials}\r\n\
         Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Waits until `addr` refuses new connections (the listener is closed).
async fn wait_until_refused(addr: SocketAddr, within: Duration) {
    let deadline = Instant::now() + within;
    while TcpStream::connect(addr).await.is_ok() {
        assert!(
            Instant::now() < deadline,
            "still accepting connections after {within:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends the token request on `tls` and reads until the server closes: the whole answer.
async fn answer_to_token_request(tls: &mut tokio_rustls::client::TlsStream<TcpStream>) -> String {
    tls.write_all(token_request().as_bytes()).await.unwrap();
    tls.flush().await.unwrap();
    String::from_utf8_lossy(&read_until_closed(tls).await).into_owned()
}

fn assert_token_answer_closing_the_connection(text: &str) {
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("\r\nconnection: close\r\n"),
        "{text}"
    );
    assert!(text.contains("\"access_token\""), "{text}");
}

#[tokio::test]
async fn a_connection_that_sends_its_first_request_after_the_stop_gets_it_answered() {
    let app = spawn_app().await;
    let addr = app.addr;
    let mut tls = raw_http1_connection(&app).await;

    let stopping = tokio::spawn(app.stop());
    wait_until_refused(addr, Duration::from_secs(10)).await;
    let answer = answer_to_token_request(&mut tls).await;

    assert_token_answer_closing_the_connection(&answer);
    tokio::time::timeout(Duration::from_secs(15), stopping)
        .await
        .expect("the server stops within its grace period")
        .unwrap();
}

#[tokio::test]
async fn a_connection_still_in_its_tls_handshake_at_the_stop_finishes_it_and_is_answered() {
    let app = spawn_app().await;
    let addr = app.addr;
    // Accepted, but no ClientHello yet: the server waits in the handshake.
    let tcp = TcpStream::connect(addr).await.unwrap();
    // Connections are accepted in order: once a later one is served, the first was accepted.
    let mut later = raw_http1_connection(&app).await;
    later
        .write_all(b"GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .await
        .unwrap();
    let later_answer = String::from_utf8_lossy(&read_until_closed(&mut later).await).into_owned();
    assert!(later_answer.starts_with("HTTP/1.1 200"), "{later_answer}");
    let connector =
        tokio_rustls::TlsConnector::from(Arc::new(tls_client_config(&app, b"http/1.1")));

    let stopping = tokio::spawn(app.stop());
    wait_until_refused(addr, Duration::from_secs(10)).await;
    let mut tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("the handshake begun before the stop completes");
    let answer = answer_to_token_request(&mut tls).await;

    assert_token_answer_closing_the_connection(&answer);
    tokio::time::timeout(Duration::from_secs(15), stopping)
        .await
        .expect("the server stops within its grace period")
        .unwrap();
}

#[tokio::test]
async fn a_connection_that_sends_nothing_after_the_stop_is_closed_after_the_header_read_timeout() {
    let app = spawn_app_with(|s| {
        s.server.header_read_timeout = Duration::from_secs(1);
    })
    .await;
    let addr = app.addr;
    let mut silent = raw_http1_connection(&app).await;

    let started = Instant::now();
    let stopping = tokio::spawn(app.stop());
    let closed = closed_within(&mut silent, Duration::from_secs(8)).await;

    assert!(closed, "a silent connection held the shutdown open");
    tokio::time::timeout(Duration::from_secs(8), stopping)
        .await
        .expect("the server stops once the silent connection is closed")
        .unwrap();
    assert!(started.elapsed() < Duration::from_secs(8));
    assert!(TcpStream::connect(addr).await.is_err());
}

#[tokio::test]
async fn during_the_drain_health_is_503_while_tokens_are_still_issued_then_the_server_stops() {
    const DRAIN: Duration = Duration::from_secs(4);
    let app = spawn_app_with(|s| s.server.shutdown_drain_period = DRAIN).await;
    let addr = app.addr;
    let client = app.client.clone();
    let health_url = app.url("/health");
    let token_url = app.url("/token");
    let cert = app.settings.tls.cert.clone();
    assert_eq!(app.get("/health").await.status, 200);

    let started = Instant::now();
    let stopping = tokio::spawn(app.stop());
    let deadline = Instant::now() + DRAIN;
    let health = loop {
        let reply = Reply::read(client.get(&health_url).send().await.unwrap()).await;
        if reply.status != 200 || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let form = [("grant_type", "client_credentials")];
    let token = post_basic_form(&client, &token_url, SERVICE_CLIENT_ID, SHARED_SECRET, &form).await;
    // A new connection is still accepted and served during the drain.
    let fresh_client = https_client(&cert);
    let fresh = post_basic_form(
        &fresh_client,
        &token_url,
        SERVICE_CLIENT_ID,
        SHARED_SECRET,
        &form,
    )
    .await;
    let answered_within = started.elapsed();
    let still_running = !stopping.is_finished();

    health.assert_error(503, "temporarily_unavailable");
    assert_eq!(token.status, 200, "{}", token.text);
    assert_eq!(fresh.status, 200, "{}", fresh.text);
    assert!(
        still_running && answered_within < DRAIN,
        "answered after {answered_within:?}, the drain is {DRAIN:?}"
    );
    tokio::time::timeout(Duration::from_secs(20), stopping)
        .await
        .expect("the server stops after the drain and its grace period")
        .unwrap();
    assert!(started.elapsed() >= DRAIN, "stopped before the drain ended");
    assert!(TcpStream::connect(addr).await.is_err());
}

/// One HTTP/2 frame (RFC 9113 §4.1).
fn h2_frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags];
    frame.extend_from_slice(&stream.to_be_bytes());
    frame.extend_from_slice(payload);
    frame
}

const H2_HEADERS: u8 = 0x1;
const H2_SETTINGS: u8 = 0x4;
const H2_PING: u8 = 0x6;
const H2_GOAWAY: u8 = 0x7;
const H2_DATA: u8 = 0x0;

/// Reads HTTP/2 frames as a client does (acknowledging the server's SETTINGS and PINGs) until
/// `done` says so or the server closes; every frame read, as (type, flags, stream, payload).
async fn h2_read_until(
    tls: &mut tokio_rustls::client::TlsStream<TcpStream>,
    mut done: impl FnMut(&[(u8, u8, u32, Vec<u8>)]) -> bool,
) -> Vec<(u8, u8, u32, Vec<u8>)> {
    use tokio::io::AsyncReadExt as _;
    let mut frames = Vec::new();
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 16_384];
    let deadline = Instant::now() + Duration::from_secs(20);
    while !done(&frames) {
        while buffer.len() >= 9 {
            let len =
                usize::from(buffer[0]) << 16 | usize::from(buffer[1]) << 8 | usize::from(buffer[2]);
            if buffer.len() < 9 + len {
                break;
            }
            let (kind, flags) = (buffer[3], buffer[4]);
            let stream = u32::from_be_bytes(buffer[5..9].try_into().unwrap()) & 0x7fff_ffff;
            let payload = buffer[9..9 + len].to_vec();
            buffer.drain(..9 + len);
            if kind == H2_SETTINGS && flags & 0x1 == 0 {
                tls.write_all(&h2_frame(H2_SETTINGS, 0x1, 0, &[]))
                    .await
                    .unwrap();
            }
            if kind == H2_PING && flags & 0x1 == 0 {
                tls.write_all(&h2_frame(H2_PING, 0x1, 0, &payload))
                    .await
                    .unwrap();
            }
            frames.push((kind, flags, stream, payload));
        }
        if done(&frames) {
            break;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tls.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => break,
            Ok(Ok(n)) => buffer.extend_from_slice(&chunk[..n]),
            Err(_) => panic!("no more HTTP/2 frames within 20 s: {frames:?}"),
        }
    }
    frames
}

#[tokio::test]
async fn an_http2_connection_gets_no_goaway_before_its_first_request_and_that_request_finishes() {
    let app = spawn_app().await;
    let addr = app.addr;
    let mut tls = raw_tls_connection(&app, b"h2").await;
    tls.write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    tls.write_all(&h2_frame(H2_SETTINGS, 0, 0, &[]))
        .await
        .unwrap();

    let stopping = tokio::spawn(app.stop());
    wait_until_refused(addr, Duration::from_secs(10)).await;
    // A round trip after the stop: whatever the server sent before its answer, a client has
    // seen before it sends its request (after a GOAWAY it would not send it).
    tls.write_all(&h2_frame(H2_PING, 0, 0, b"roundtrp"))
        .await
        .unwrap();
    let before_request = h2_read_until(&mut tls, |frames| {
        frames.iter().any(|(kind, flags, _, payload)| {
            *kind == H2_PING && flags & 0x1 == 1 && payload == b"roundtrp"
        })
    })
    .await;
    // GET https://localhost/health: HPACK indexed :method GET, :scheme https, then :path and
    // :authority as literals with indexed names (RFC 7541 §6.2.2).
    let mut block = vec![0x82, 0x87, 0x04, 7];
    block.extend_from_slice(b"/health");
    block.extend_from_slice(&[0x01, 9]);
    block.extend_from_slice(b"localhost");
    tls.write_all(&h2_frame(H2_HEADERS, 0x4 | 0x1, 1, &block))
        .await
        .unwrap();
    let after_request = h2_read_until(&mut tls, |_| false).await;

    assert!(
        !before_request.iter().any(|(kind, ..)| *kind == H2_GOAWAY),
        "GOAWAY before the first request: {before_request:?}"
    );
    // :status 200 is HPACK static index 8.
    assert!(
        after_request
            .iter()
            .any(|(kind, _, stream, payload)| *kind == H2_HEADERS
                && *stream == 1
                && payload.first() == Some(&0x88)),
        "no 200 on stream 1: {after_request:?}"
    );
    assert!(
        after_request
            .iter()
            .any(|(kind, _, stream, payload)| *kind == H2_DATA
                && *stream == 1
                && String::from_utf8_lossy(payload).contains("\"ok\"")),
        "{after_request:?}"
    );
    assert!(
        after_request.iter().any(|(kind, ..)| *kind == H2_GOAWAY),
        "no GOAWAY: {after_request:?}"
    );
    tokio::time::timeout(Duration::from_secs(15), stopping)
        .await
        .expect("the server stops within its grace period")
        .unwrap();
}

/// Reads one HTTP/1.1 response with a Content-Length body, leaving the connection open.
async fn read_one_response(tls: &mut tokio_rustls::client::TlsStream<TcpStream>) -> String {
    use tokio::io::AsyncReadExt as _;
    let mut received = Vec::new();
    let mut chunk = [0u8; 8192];
    let read = async {
        loop {
            let text = String::from_utf8_lossy(&received).into_owned();
            if let Some(end) = text.find("\r\n\r\n") {
                let length = text[..end]
                    .lines()
                    .find_map(|line| {
                        let (name, value) = line.split_once(':')?;
                        name.eq_ignore_ascii_case("content-length")
                            .then(|| value.trim().parse::<usize>().unwrap())
                    })
                    .unwrap();
                if received.len() >= end + 4 + length {
                    return text;
                }
            }
            let n = tls.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed mid-response: {text}");
            received.extend_from_slice(&chunk[..n]);
        }
    };
    tokio::time::timeout(Duration::from_secs(20), read)
        .await
        .expect("a whole response within 20 s")
}

#[tokio::test]
async fn an_idle_keep_alive_connection_gets_its_next_request_after_the_stop_answered() {
    // Arrange: an HTTP/1.1 connection that has had one answer and is idle, as a busy client's
    // is between two requests; and an HTTP/2 one, whose GOAWAY shows when the stop has come.
    let app = spawn_app().await;
    let mut http1 = raw_http1_connection(&app).await;
    http1.write_all(token_request().as_bytes()).await.unwrap();
    let first = read_one_response(&mut http1).await;
    assert!(first.starts_with("HTTP/1.1 200"), "{first}");
    assert!(
        !first.to_ascii_lowercase().contains("connection: close"),
        "{first}"
    );
    let mut http2 = raw_tls_connection(&app, b"h2").await;
    http2
        .write_all(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    http2
        .write_all(&h2_frame(H2_SETTINGS, 0, 0, &[]))
        .await
        .unwrap();
    // GET https://localhost/health (see the HTTP/2 test above for the encoding).
    let mut block = vec![0x82, 0x87, 0x04, 7];
    block.extend_from_slice(b"/health");
    block.extend_from_slice(&[0x01, 9]);
    block.extend_from_slice(b"localhost");
    http2
        .write_all(&h2_frame(H2_HEADERS, 0x4 | 0x1, 1, &block))
        .await
        .unwrap();
    h2_read_until(&mut http2, |frames| {
        frames
            .iter()
            .any(|(kind, flags, stream, _)| *kind == H2_DATA && *stream == 1 && flags & 0x1 == 1)
    })
    .await;

    // Act: the server stops; once it has said so (GOAWAY), the HTTP/1.1 client sends its
    // next request on the connection it holds.
    let stopping = tokio::spawn(app.stop());
    h2_read_until(&mut http2, |frames| {
        frames.iter().any(|(kind, ..)| *kind == H2_GOAWAY)
    })
    .await;
    let answer = answer_to_token_request(&mut http1).await;

    // Assert: answered, and told that the connection closes.
    assert_token_answer_closing_the_connection(&answer);
    tokio::time::timeout(Duration::from_secs(15), stopping)
        .await
        .expect("the server stops within its grace period")
        .unwrap();
}
