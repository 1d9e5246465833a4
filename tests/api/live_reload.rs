//! Changing it live (issue 11): the TLS certificate replaced on disk (checked every
//! `reload_interval`, and on SIGHUP) is presented to new handshakes while open connections go
//! on; a pair that does not load is refused; SIGHUP re-reads `identity.toml`, applying what can
//! change live and logging what needs a restart; `tokengate reload` finds the server through
//! the pid file `serve` writes; the management listener speaks HTTPS with its own certificate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, ServerName};
use tokengate::clock::{Clock as _, SystemClock};
use tokengate::config::{CertificateFiles, ConfigSource};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::helpers::process::{free_port, offset_of, serve, Home, Server};
use crate::helpers::{https_client, project_root, spawn_app, spawn_app_with, TestApp, USER};

const POLL: Duration = Duration::from_millis(50);
const DEADLINE: Duration = Duration::from_secs(15);
const DAY: i64 = 86_400;

fn now() -> i64 {
    SystemClock.now_secs()
}

/// A certificate for localhost and 127.0.0.1 named `name`, valid from `not_before` to
/// `not_after` (Unix seconds), and its key.
struct Pair {
    cert_pem: String,
    key_pem: String,
    der: Vec<u8>,
}

impl Pair {
    fn new(name: &str, not_before: i64, not_after: i64) -> Self {
        let key = rcgen::KeyPair::generate().unwrap();
        Self::signed(key, name, not_before, not_after)
    }

    /// A new certificate for the key in `key_pem` (the key the server already has).
    fn for_key(key_pem: &str, name: &str, not_before: i64, not_after: i64) -> Self {
        let key = rcgen::KeyPair::from_pem(key_pem).unwrap();
        Self::signed(key, name, not_before, not_after)
    }

    fn signed(key: rcgen::KeyPair, name: &str, not_before: i64, not_after: i64) -> Self {
        let mut params =
            rcgen::CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        let epoch = rcgen::date_time_ymd(1970, 1, 1);
        let secs = |at: i64| Duration::from_secs(u64::try_from(at).unwrap());
        params.not_before = epoch + secs(not_before);
        params.not_after = epoch + secs(not_after);
        let cert = params.self_signed(&key).unwrap();
        Self {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            der: cert.der().to_vec(),
        }
    }

    /// Valid from yesterday for a year.
    fn current(name: &str) -> Self {
        Self::new(name, now() - DAY, now() + 365 * DAY)
    }

    /// Writes the key, then the certificate, each replaced in one rename (as an operator's
    /// deploy tool would).
    fn write(&self, cert: &Path, key: &Path) {
        replace_file(key, &self.key_pem);
        replace_file(cert, &self.cert_pem);
    }
}

fn replace_file(path: &Path, contents: &str) {
    let temp = path.with_extension("new");
    std::fs::write(&temp, contents).unwrap();
    std::fs::rename(&temp, path).unwrap();
}

/// The DER of the (first) certificate in a PEM file.
fn der_of(cert: &Path) -> Vec<u8> {
    let pem = std::fs::read(cert).unwrap();
    CertificateDer::pem_slice_iter(&pem)
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// A TLS connection (ALPN http/1.1) trusting exactly `trusted` (self-signed certificates).
async fn connect(addr: SocketAddr, trusted: &[&[u8]]) -> TlsStream<TcpStream> {
    let mut roots = rustls::RootCertStore::empty();
    for der in trusted {
        roots.add(CertificateDer::from(der.to_vec())).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let tcp = TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config))
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// The certificate the server presented on `stream`.
fn peer(stream: &TlsStream<TcpStream>) -> Vec<u8> {
    stream.get_ref().1.peer_certificates().unwrap()[0].to_vec()
}

/// `GET path` on a kept-alive HTTP/1.1 connection; the status, with the body read.
async fn get_on(stream: &mut TlsStream<TcpStream>, path: &str) -> u16 {
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        if let Some(at) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break at + 4;
        }
        let read = stream.read(&mut chunk).await.unwrap();
        assert!(read > 0, "the connection closed before an answer");
        buffer.extend_from_slice(&chunk[..read]);
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).to_lowercase();
    let length: usize = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
        .map_or(0, |value| value.trim().parse().unwrap());
    while buffer.len() < head_end + length {
        let read = stream.read(&mut chunk).await.unwrap();
        assert!(read > 0, "the connection closed within the body");
        buffer.extend_from_slice(&chunk[..read]);
    }
    head.split(' ').nth(1).unwrap().parse().unwrap()
}

/// Polls new connections until one is presented `expected`.
async fn until_new_connections_get(addr: SocketAddr, trusted: &[&[u8]], expected: &[u8]) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if peer(&connect(addr, trusted).await) == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "new connections still get the old certificate"
        );
        tokio::time::sleep(POLL).await;
    }
}

fn reloads(source: &str, outcome: &str) -> String {
    format!("tokengate_config_reloads_total{{outcome=\"{outcome}\",source=\"{source}\"}}")
}

async fn sample_until(app: &TestApp, series: &str, done: impl Fn(f64) -> bool) -> f64 {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let value = app.metric(series).await;
        if done(value) {
            return value;
        }
        assert!(Instant::now() < deadline, "{series} stayed at {value}");
        tokio::time::sleep(POLL).await;
    }
}

#[tokio::test]
async fn new_handshakes_get_a_replaced_certificate_while_an_open_connection_goes_on() {
    // Arrange: a connection opened and used before the files change.
    let app = spawn_app().await;
    let (cert, key) = (&app.settings.tls.cert, &app.settings.tls.key);
    let old = der_of(cert);
    let not_after = now() + 365 * DAY;
    let new = Pair::new("replacement", now() - DAY, not_after);
    let trusted: [&[u8]; 2] = [&old, &new.der];
    let mut open = connect(app.addr, &trusted).await;
    assert_eq!(get_on(&mut open, "/health").await, 200);

    // Act: the files are replaced; the server checks them every reload_interval (1 s here).
    new.write(cert, key);

    // Assert: new handshakes get the new certificate, the open connection still works.
    until_new_connections_get(app.addr, &trusted, &new.der).await;
    assert_eq!(get_on(&mut open, "/health").await, 200);
    assert_eq!(peer(&open), old);
    assert_eq!(
        app.metric("tokengate_tls_certificate_expiry_seconds{listener=\"https\"}")
            .await,
        not_after as f64,
        "the metric follows the new certificate"
    );
}

#[tokio::test]
async fn a_mismatched_expired_or_unreadable_pair_is_refused_and_the_old_certificate_still_served() {
    // Arrange
    let app = spawn_app().await;
    let (cert, key) = (&app.settings.tls.cert, &app.settings.tls.key);
    let old = der_of(cert);
    let errors = reloads("tls", "error");

    // Act: a certificate for another key, beside the old key.
    let stranger = Pair::current("someone else's");
    replace_file(cert, &stranger.cert_pem);

    // Assert: refused (counted), the old one served to new connections.
    sample_until(&app, &errors, |n| n >= 1.0).await;
    let trusted: [&[u8]; 2] = [&old, &stranger.der];
    assert_eq!(peer(&connect(app.addr, &trusted).await), old);

    // Act: a certificate for the right key, but expired yesterday.
    let key_pem = std::fs::read_to_string(key).unwrap();
    let expired = Pair::for_key(&key_pem, "expired", now() - 30 * DAY, now() - DAY);
    replace_file(cert, &expired.cert_pem);

    // Assert
    sample_until(&app, &errors, |n| n >= 2.0).await;
    let trusted: [&[u8]; 2] = [&old, &expired.der];
    assert_eq!(peer(&connect(app.addr, &trusted).await), old);

    // Act: not PEM at all.
    replace_file(cert, "not a certificate\n");

    // Assert
    sample_until(&app, &errors, |n| n >= 3.0).await;
    let trusted: [&[u8]; 1] = [&old];
    let mut connection = connect(app.addr, &trusted).await;
    assert_eq!(peer(&connection), old);
    assert_eq!(get_on(&mut connection, "/health").await, 200);
    assert_eq!(app.metric(&reloads("tls", "ok")).await, 0.0);
}

#[tokio::test]
async fn the_expiry_metric_is_the_certificates_not_after_as_unix_time() {
    // Arrange: a certificate ending at a known second, in place before start.
    let not_after = now() + 30 * DAY;
    let pair = Pair::new("known end", now() - DAY, not_after);

    // Act
    let app = spawn_app_with(|settings| {
        std::fs::create_dir_all(settings.tls.cert.parent().unwrap()).unwrap();
        pair.write(&settings.tls.cert, &settings.tls.key);
    })
    .await;

    // Assert
    assert_eq!(
        app.metric("tokengate_tls_certificate_expiry_seconds{listener=\"https\"}")
            .await,
        not_after as f64
    );
}

#[tokio::test]
async fn the_management_listener_serves_metrics_over_https_with_its_own_replaceable_certificate() {
    // Arrange: a pair of its own, unlike the token port's.
    let dir = tempfile::tempdir().unwrap();
    let files = CertificateFiles {
        cert: dir.path().join("management.crt"),
        key: dir.path().join("management.key"),
    };
    let not_after = now() + 200 * DAY;
    let pair = Pair::new("management", now() - DAY, not_after);
    pair.write(&files.cert, &files.key);
    let tls = files.clone();

    // Act
    let app = spawn_app_with(move |settings| settings.management.tls = Some(tls)).await;
    let address = app.management_addr.unwrap();
    let reply = https_client(&files.cert)
        .get(format!("https://127.0.0.1:{}/metrics", address.port()))
        .send()
        .await
        .unwrap();

    // Assert: HTTPS with the management certificate; plain HTTP gets no answer.
    assert_eq!(reply.status(), 200);
    let text = reply.text().await.unwrap();
    let expiry =
        format!("tokengate_tls_certificate_expiry_seconds{{listener=\"management\"}} {not_after}");
    assert!(text.contains(&expiry), "{text}");
    let trusted: [&[u8]; 1] = [&pair.der];
    let mut connection = connect(address, &trusted).await;
    assert_eq!(peer(&connection), pair.der);
    assert_eq!(get_on(&mut connection, "/health/live").await, 200);
    let plain = reqwest::get(format!("http://{address}/metrics")).await;
    assert!(plain.is_err(), "{plain:?}");

    // Act: its files replaced, as the token port's can be.
    let new = Pair::current("management, renewed");
    new.write(&files.cert, &files.key);

    // Assert
    let trusted: [&[u8]; 2] = [&pair.der, &new.der];
    until_new_connections_get(address, &trusted, &new.der).await;
}

#[tokio::test]
async fn a_management_cert_without_a_key_is_a_config_error_naming_the_key() {
    // Arrange
    let text = "[management]\ncert = \"certs/management.crt\"\n";
    let file = PathBuf::from("identity.toml");

    // Act
    let err = tokengate::config::validate(text, &file, &ConfigSource::default()).unwrap_err();

    // Assert
    let keys: Vec<&str> = err.problems.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["management.key"], "{err}");
}

/// An app whose `reloader` reads `home/config/identity.toml`, a copy of the shipped one
/// changed by `edit`, that the test may change again.
async fn app_reading_its_own_config() -> (TestApp, PathBuf) {
    let app = spawn_app_with(|settings| {
        let home = settings.source.home.clone().unwrap();
        let file = home.join("config/identity.toml");
        std::fs::copy(project_root().join("config/identity.toml"), &file).unwrap();
        settings.source.config_path = Some(file);
    })
    .await;
    let file = app.home.path().join("config/identity.toml");
    (app, file)
}

fn edit(file: &Path, from: &str, to: &str) {
    let text = std::fs::read_to_string(file).unwrap();
    assert!(text.contains(from), "no `{from}` in {}", file.display());
    std::fs::write(file, text.replacen(from, to, 1)).unwrap();
}

#[tokio::test]
async fn a_reload_applies_new_lifetimes_and_rate_limits_to_the_next_requests() {
    // Arrange
    let (app, file) = app_reading_its_own_config().await;
    app.login(None).await.assert_tokens(3600, "default");
    edit(
        &file,
        "access_token_default_validity_period = 3600",
        "access_token_default_validity_period = 120",
    );
    edit(&file, "enabled = false", "enabled = true");
    edit(&file, "per_client_rate = 200", "per_client_rate = 0.001");
    edit(&file, "per_client_burst = 400", "per_client_burst = 1");

    // Act
    app.reloader.reload().await.unwrap();

    // Assert: the new lifetime, then the client's one-request burst is spent.
    app.login(None).await.assert_tokens(120, "default");
    app.login(None).await.assert_error(429, "rate_limited");
    assert_eq!(app.metric(&reloads("config", "ok")).await, 1.0);
    assert_eq!(app.metric(&reloads("config", "error")).await, 0.0);
}

#[tokio::test]
async fn a_reload_applies_a_stricter_lockout_to_the_next_logins() {
    // Arrange: the shipped policy locks after 5 failures; the file now says 2.
    let (app, file) = app_reading_its_own_config().await;
    edit(
        &file,
        "max_failed_login_attempts = 5",
        "max_failed_login_attempts = 2",
    );

    // Act
    app.reloader.reload().await.unwrap();
    for _ in 0..2 {
        app.post_token(&[
            ("grant_type", "password"),
            ("username", USER),
            ("password", "wrong"),
        ])
        .await
        .assert_error(400, "invalid_grant");
    }

    // Assert: locked, so the right password is refused too.
    app.login(None).await.assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn a_file_with_a_problem_is_refused_whole_and_counted() {
    // Arrange: a good change and a bad one in the same file.
    let (app, file) = app_reading_its_own_config().await;
    edit(
        &file,
        "access_token_default_validity_period = 3600",
        "access_token_default_validity_period = 120",
    );
    edit(
        &file,
        "failed_login_window = 900",
        "failed_login_window = -1",
    );

    // Act
    let refused = app.reloader.reload().await;

    // Assert: nothing of it applies.
    let err = refused.unwrap_err().to_string();
    assert!(err.contains("security.failed_login_window"), "{err}");
    app.login(None).await.assert_tokens(3600, "default");
    assert_eq!(app.metric(&reloads("config", "error")).await, 1.0);
    assert_eq!(app.metric(&reloads("config", "ok")).await, 0.0);
}

// The real binary: SIGHUP, the pid file, `tokengate reload`.

fn expires_in(reply: &crate::helpers::Reply) -> u64 {
    assert_eq!(reply.status, 200, "{}", reply.text);
    reply.body["expires_in"].as_u64().unwrap()
}

/// Polls the demo login until its `expires_in` is `expected`.
async fn until_expires_in(server: &Server, expected: u64) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if expires_in(&server.demo_login().await) == expected {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "expires_in did not become {expected}:\n{}",
            server.log()
        );
        tokio::time::sleep(POLL).await;
    }
}

/// Waits until the server's log contains `text`.
async fn until_logged(server: &Server, text: &str) {
    let deadline = Instant::now() + DEADLINE;
    while !server.log().contains(text) {
        assert!(
            Instant::now() < deadline,
            "`{text}` not logged:\n{}",
            server.log()
        );
        tokio::time::sleep(POLL).await;
    }
}

const VALIDITY: &str = "access_token_default_validity_period = 3600";
const SHORTER: &str = "access_token_default_validity_period = 120";

#[tokio::test]
async fn sighup_applies_a_new_access_token_validity_to_the_next_token() {
    // Arrange
    let home = Home::new();
    let server = serve(&home).await;
    assert_eq!(expires_in(&server.demo_login().await), 3600);
    home.edit("config/identity.toml", VALIDITY, SHORTER);

    // Act
    server.send_signal("HUP");

    // Assert
    until_expires_in(&server, 120).await;
    until_logged(&server, "configuration applied to new requests").await;
    assert!(
        server
            .log()
            .contains("oauth.access_token_default_validity_period"),
        "{}",
        server.log()
    );
}

#[tokio::test]
async fn sighup_with_a_broken_identity_toml_keeps_the_running_settings_and_the_process() {
    // Arrange: a change that would apply, beside a value out of range.
    let home = Home::new();
    let mut server = serve(&home).await;
    home.edit("config/identity.toml", VALIDITY, SHORTER);
    home.edit(
        "config/identity.toml",
        "max_failed_login_attempts = 5",
        "max_failed_login_attempts = -5",
    );

    // Act
    server.send_signal("HUP");

    // Assert: logged as check-config prints it (file: key: message); nothing applied.
    until_logged(&server, "configuration not reloaded").await;
    let identity = home.file("config/identity.toml").display().to_string();
    let problem = format!("{identity}: security.max_failed_login_attempts: must be between");
    assert!(server.log().contains(&problem), "{}", server.log());
    assert!(server
        .wait_for_exit(Duration::from_millis(200))
        .await
        .is_none());
    assert_eq!(expires_in(&server.demo_login().await), 3600);
}

#[tokio::test]
async fn a_changed_key_that_needs_a_restart_is_logged_and_not_applied() {
    // Arrange: another port in the file, and a live change beside it.
    let home = Home::new();
    let server = serve(&home).await;
    home.edit(
        "config/identity.toml",
        "https_port = 8243",
        "https_port = 8244",
    );
    home.edit(
        "config/identity.toml",
        "title = \"tokengate\"",
        "title = \"Example Corp\"",
    );
    home.edit("config/identity.toml", VALIDITY, SHORTER);

    // Act
    server.send_signal("HUP");

    // Assert: the port stays (the server answers where it did), the lifetime applies.
    until_expires_in(&server, 120).await;
    let log = server.log();
    let restart = log
        .lines()
        .find(|line| line.contains("needs a restart"))
        .unwrap_or_else(|| panic!("no restart warning:\n{log}"));
    assert!(restart.contains("server.https_port"), "{log}");
    assert!(
        log.lines()
            .any(|line| line.contains("needs a restart") && line.contains("login.title")),
        "{log}"
    );
    assert_eq!(server.get("/health").await.status, 200);
}

#[tokio::test]
async fn sighup_re_reads_the_certificate_files_whether_or_not_they_were_seen_to_change() {
    // Arrange: files checked only hourly, so only the signal can pick the new pair up soon.
    let home = Home::new();
    home.edit(
        "config/identity.toml",
        "reload_interval = 2",
        "reload_interval = 3600",
    );
    let server = serve(&home).await;
    let old = der_of(&home.cert());
    let new = Pair::current("after SIGHUP");
    new.write(&home.cert(), &home.file("certs/server.key"));
    let address: SocketAddr = format!("127.0.0.1:{}", server.port).parse().unwrap();
    let trusted: [&[u8]; 2] = [&old, &new.der];
    assert_eq!(peer(&connect(address, &trusted).await), old);

    // Act
    server.send_signal("HUP");

    // Assert
    until_new_connections_get(address, &trusted, &new.der).await;
}

#[tokio::test]
async fn a_certificate_expiring_within_14_days_is_warned_about() {
    // Arrange: a pair that ends in 5 days.
    let home = Home::new();
    std::fs::create_dir_all(home.file("certs")).unwrap();
    Pair::new("short-lived", now() - DAY, now() + 5 * DAY)
        .write(&home.cert(), &home.file("certs/server.key"));

    // Act
    let server = serve(&home).await;

    // Assert
    until_logged(&server, "the TLS certificate expires soon").await;
    let log = server.log();
    let line = log
        .lines()
        .find(|line| line.contains("expires soon"))
        .unwrap();
    assert!(
        line.contains("days_left=4") || line.contains("days_left=5"),
        "{line}"
    );
}

#[tokio::test]
async fn serve_keeps_a_pid_file_that_tokengate_reload_signals_and_sigterm_removes() {
    // Arrange
    let home = Home::new();
    let mut server = serve(&home).await;
    let pid_file = home.file("data/tokengate.pid");
    let pid = std::fs::read_to_string(&pid_file).unwrap();
    assert_eq!(pid.trim(), server.pid().to_string());
    home.edit("config/identity.toml", VALIDITY, SHORTER);

    // Act
    let run = home.run(&["reload"], None).await;

    // Assert: the server reloaded; after SIGTERM the file is gone.
    run.assert_success();
    assert!(run.stderr.contains(pid.trim()), "{run:#?}");
    until_expires_in(&server, 120).await;
    server.send_signal("TERM");
    let status = server.wait_for_exit(Duration::from_secs(30)).await.unwrap();
    assert!(status.success(), "{status:?}\n{}", server.log());
    assert!(!pid_file.exists());
}

#[tokio::test]
async fn tokengate_reload_without_a_running_server_says_why() {
    // Arrange
    let home = Home::new();
    let pid_file = home.file("data/tokengate.pid");

    // Act: no pid file at all.
    let missing = home.run(&["reload"], None).await;
    // Act: a pid file left by a server that is gone (above any pid the kernel hands out).
    std::fs::create_dir_all(pid_file.parent().unwrap()).unwrap();
    std::fs::write(&pid_file, "99999999\n").unwrap();
    let stale = home.run(&["reload"], None).await;

    // Assert
    missing.assert_failure();
    assert!(missing.stderr.contains("no pid file"), "{missing:#?}");
    assert!(
        missing.stderr.contains(&pid_file.display().to_string()),
        "{missing:#?}"
    );
    stale.assert_failure();
    assert!(
        stale.stderr.contains("stale") && stale.stderr.contains("pid 99999999"),
        "{stale:#?}"
    );
}

/// Whether `child` is still running `within` from now (a signal it got has had time to end
/// it): proving that nothing happened needs a bound.
async fn still_runs_after(child: &mut std::process::Child, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if child.try_wait().unwrap().is_some() {
            return false;
        }
        tokio::time::sleep(POLL).await;
    }
    true
}

#[tokio::test]
async fn a_pid_file_naming_a_live_unrelated_process_is_stale_reload_signals_nothing_and_serve_replaces_it(
) {
    // Arrange: after a crash, the pid in the file now belongs to another process (a `sleep`,
    // which SIGHUP would end); no server holds the file.
    let home = Home::new();
    let pid_file = home.file("data/tokengate.pid");
    let mut unrelated = Killed(
        std::process::Command::new("sleep")
            .arg("60")
            .spawn()
            .unwrap(),
    );
    std::fs::create_dir_all(pid_file.parent().unwrap()).unwrap();
    std::fs::write(&pid_file, format!("{}\n", unrelated.0.id())).unwrap();

    // Act
    let reload = home.run(&["reload"], None).await;
    let unrelated_runs = still_runs_after(&mut unrelated.0, Duration::from_millis(500)).await;
    let server = serve(&home).await;
    let reload_after_start = home.run(&["reload"], None).await;

    // Assert: refused without a signal; serve started and replaced the file.
    reload.assert_failure();
    assert!(reload.stderr.contains("stale"), "{reload:#?}");
    assert!(
        unrelated_runs,
        "`tokengate reload` signalled an unrelated process"
    );
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        server.pid().to_string()
    );
    // The log is written by a thread of its own every 20 ms: waited for, not read at once.
    until_logged(&server, "replacing a stale pid file").await;
    reload_after_start.assert_success();
    assert!(
        reload_after_start
            .stderr
            .contains(&server.pid().to_string()),
        "{reload_after_start:#?}"
    );
}

#[tokio::test]
async fn a_takeover_that_fails_to_start_leaves_the_running_servers_pid_file() {
    // Arrange: the running server, and a port the new one cannot bind (another program).
    let home = Home::new();
    let old = serve(&home).await;
    let pid_file = home.file("data/tokengate.pid");
    let port = free_port();
    let _other_program = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();

    // Act
    let takeover = home
        .run(
            &["serve", "--takeover", "--port-offset", &offset_of(port)],
            None,
        )
        .await;
    let reload = home.run(&["reload"], None).await;

    // Assert: the start failed; the file still names the old server, which still reloads.
    takeover.assert_failure();
    assert!(takeover.stderr.contains("cannot listen"), "{takeover:#?}");
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        old.pid().to_string()
    );
    reload.assert_success();
    assert!(
        reload.stderr.contains(&old.pid().to_string()),
        "{reload:#?}"
    );
    assert_eq!(old.get("/health").await.status, 200);
}

#[tokio::test]
async fn a_sighup_sent_while_the_server_starts_is_applied_once_it_serves() {
    // Arrange: a server that has read its config but does not listen yet, and the config
    // changed after that read.
    let home = Home::new();
    let port = free_port();
    let log = home.file("starting.log");
    let file = std::fs::File::create(&log).unwrap();
    let mut command = home.command(&["serve", "--port-offset", &offset_of(port)]);
    command
        .stdin(std::process::Stdio::null())
        .stdout(file.try_clone().unwrap())
        .stderr(file);
    let mut child = Killed(command.spawn().unwrap());
    let read = || std::fs::read_to_string(&log).unwrap_or_default();
    // Logged by the build, after the config is read and SIGHUP caught.
    let deadline = Instant::now() + DEADLINE;
    while !read().contains("generated a self-signed certificate") {
        assert!(child.0.try_wait().unwrap().is_none(), "{}", read());
        assert!(Instant::now() < deadline, "{}", read());
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    home.edit("config/identity.toml", VALIDITY, SHORTER);

    // Act
    crate::helpers::process::signal(child.0.id(), "HUP");
    let sent_before_listening = !read().contains("tokengate listening");

    // Assert: once it serves, the new lifetime applies (the signal was not lost).
    let client = https_client(&home.cert());
    let deadline = Instant::now() + DEADLINE;
    loop {
        assert!(child.0.try_wait().unwrap().is_none(), "{}", read());
        let reply = client
            .post(format!("https://127.0.0.1:{port}/token"))
            .basic_auth(
                crate::helpers::process::DEMO_CLIENT_ID,
                Some(crate::helpers::process::DEMO_CLIENT_SECRET),
            )
            .form(&[
                ("grant_type", "password"),
                ("username", crate::helpers::process::DEMO_USER),
                ("password", crate::helpers::process::DEMO_PASSWORD),
                ("scope", "PRODUCTION"),
            ])
            .send()
            .await;
        if let Ok(reply) = reply {
            let body: serde_json::Value = reply.json().await.unwrap();
            if body["expires_in"] == 120 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "the SIGHUP sent during start-up was lost:\n{}",
            read()
        );
        tokio::time::sleep(POLL).await;
    }
    assert!(
        sent_before_listening,
        "the server was already listening: nothing tested\n{}",
        read()
    );
}

#[tokio::test]
async fn a_second_serve_on_the_same_config_is_refused_while_the_first_runs() {
    // Arrange
    let home = Home::new();
    let server = serve(&home).await;

    // Act: another port, same home and so the same pid file.
    let offset = offset_of(free_port());
    let second = home.run(&["serve", "--port-offset", &offset], None).await;

    // Assert
    second.assert_failure();
    assert!(
        second.stderr.contains("already running")
            && second.stderr.contains(&server.pid().to_string()),
        "{second:#?}"
    );
    assert_eq!(server.get("/health").await.status, 200);
}

#[tokio::test]
async fn check_config_reports_a_management_certificate_that_does_not_load() {
    // Arrange: an expired management pair.
    let home = Home::new();
    std::fs::create_dir_all(home.file("certs")).unwrap();
    Pair::new("old", now() - 30 * DAY, now() - DAY).write(
        &home.file("certs/management.crt"),
        &home.file("certs/management.key"),
    );
    home.edit(
        "config/identity.toml",
        "per_client_metrics = false",
        "per_client_metrics = false\ncert = \"certs/management.crt\"\nkey = \"certs/management.key\"",
    );

    // Act
    let run = home.run(&["check-config"], None).await;

    // Assert
    run.assert_failure();
    let cert = home.file("certs/management.crt").display().to_string();
    assert!(run.stderr.contains(&cert), "{run:#?}");
    assert!(run.stderr.contains("expired"), "{run:#?}");
}

#[tokio::test]
async fn serve_takeover_once_listening_takes_the_pid_file_and_stops_the_old_server() {
    // Arrange: the old server, and the pid file naming it.
    let home = Home::new();
    let mut old = serve(&home).await;
    let pid_file = home.file("data/tokengate.pid");

    // Act: a new server on the same config with --takeover (on another port here; the
    // handover tests share one).
    let port = free_port();
    let log = std::fs::File::create(home.file("takeover.log")).unwrap();
    let mut new = home.command(&["serve", "--port-offset", &offset_of(port), "--takeover"]);
    new.stdin(std::process::Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log);
    let mut new = Killed(new.spawn().unwrap());
    let client = https_client(&home.cert());
    let deadline = Instant::now() + DEADLINE;
    loop {
        let health = client
            .get(format!("https://127.0.0.1:{port}/health"))
            .send()
            .await;
        if health.is_ok_and(|reply| reply.status() == 200) {
            break;
        }
        assert!(
            new.0.try_wait().unwrap().is_none(),
            "{}",
            home.read("takeover.log")
        );
        assert!(Instant::now() < deadline, "{}", home.read("takeover.log"));
        tokio::time::sleep(POLL).await;
    }
    // Nobody else signals the old server: the new one does.
    let status = old.wait_for_exit(Duration::from_secs(30)).await;
    let named_after = std::fs::read_to_string(&pid_file);
    let reload = home.run(&["reload"], None).await;
    let new_pid = new.0.id().to_string();
    let new_log = home.read("takeover.log");
    drop(new);

    // Assert: the old server drained and exited cleanly, leaving the new one's file alone;
    // `tokengate reload` reaches the new one.
    assert!(
        status.is_some_and(|status| status.success()),
        "{status:?}\n{}",
        old.log()
    );
    assert!(
        new_log.contains("sent SIGTERM to the server taken over")
            && new_log.contains(&format!("pid={}", old.pid())),
        "{new_log}"
    );
    assert_eq!(named_after.unwrap().trim(), new_pid);
    reload.assert_success();
    assert!(reload.stderr.contains(&new_pid), "{reload:#?}");
}

/// A child process killed when the test ends, however it ends.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
