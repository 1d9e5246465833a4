//! PostgreSQL over TLS authenticates the server: with `sslmode=verify-full` and `sslrootcert`
//! a node reaches a database whose certificate its own CA signed, and refuses one signed by
//! another CA or issued for another host; `sslmode=require` starts with a warning.
//!
//! The database server here is a TLS front made by the test: it answers PostgreSQL's
//! SSLRequest with `S`, does the TLS handshake with a certificate from a CA generated here,
//! and relays the plain protocol to the local PostgreSQL (TOKENGATE_TEST_DATABASE_URL).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr as _;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair, KeyUsagePurpose};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use sqlx::postgres::PgConnectOptions;
use tokengate::clock::ManualClock;
use tokengate::Application;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

use crate::helpers::process::{serve, Home};
use crate::helpers::*;

/// PostgreSQL's SSLRequest: length 8, then the code 1234 5679.
const SSL_REQUEST: [u8; 8] = [0, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];

/// A CA made for one test, written to `dir` as PEM.
struct TestCa {
    cert: rcgen::Certificate,
    key: KeyPair,
    pem_path: PathBuf,
}

impl TestCa {
    fn new(dir: &Path, name: &str) -> Self {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let pem_path = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&pem_path, cert.pem()).unwrap();
        Self {
            cert,
            key,
            pem_path,
        }
    }

    /// A server certificate for `names` (DNS names or IP addresses) signed by this CA.
    fn issue(&self, names: &[&str]) -> (CertificateDer<'static>, PrivateKeyDer<'static>) {
        let names: Vec<String> = names.iter().map(|name| (*name).to_owned()).collect();
        let mut params = CertificateParams::new(names).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "postgres");
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.cert, &self.key).unwrap();
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (cert.der().clone(), key)
    }
}

/// The TLS front: its address and how many TLS handshakes it completed.
struct TlsFront {
    addr: SocketAddr,
    handshakes: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TlsFront {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts a TLS front for `upstream` presenting `cert`.
async fn tls_front(
    upstream: SocketAddr,
    (cert, key): (CertificateDer<'static>, PrivateKeyDer<'static>),
) -> TlsFront {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![cert], key)
        .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let handshakes = Arc::new(AtomicUsize::new(0));
    let counted = handshakes.clone();
    let task = tokio::spawn(async move {
        loop {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let counted = counted.clone();
            tokio::spawn(async move {
                let mut request = [0u8; 8];
                if client.read_exact(&mut request).await.is_err() || request != SSL_REQUEST {
                    return;
                }
                if client.write_all(b"S").await.is_err() {
                    return;
                }
                // A client that refuses the certificate ends the handshake here.
                let Ok(mut tls) = acceptor.accept(client).await else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                let Ok(mut database) = TcpStream::connect(upstream).await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut database).await;
            });
        }
    });
    TlsFront {
        addr,
        handshakes,
        task,
    }
}

/// Where the test database really is.
fn upstream_of(database: &TestDatabase) -> SocketAddr {
    let options = PgConnectOptions::from_str(&database.url).unwrap();
    let host = match options.get_host() {
        "localhost" => "127.0.0.1",
        host => host,
    };
    SocketAddr::new(host.parse().unwrap(), options.get_port())
}

/// `database`'s URL through `front`, with `query` (sslmode and sslrootcert).
fn url_through(database: &TestDatabase, front: &TlsFront, query: &str) -> String {
    let options = PgConnectOptions::from_str(&database.url).unwrap();
    format!(
        "postgres://{}@{}/{}?{query}",
        options.get_username(),
        front.addr,
        database.name
    )
}

fn verify_full(ca: &TestCa) -> String {
    format!("sslmode=verify-full&sslrootcert={}", ca.pem_path.display())
}

/// A node on `url`, or why it did not start.
async fn start_node(url: String) -> Result<TestApp, String> {
    let home = Arc::new(tempfile::tempdir().unwrap());
    write_fixture_stores(home.path());
    let mut settings = test_settings(home.path());
    settings.stores.tokens =
        tokengate::config::TokenStoreSettings::Postgres(tokengate::config::PostgresSettings {
            url,
            max_connections: 5,
            run_migrations: true,
        });
    let built = tokio::time::timeout(
        Duration::from_secs(30),
        Application::build_with_clock(settings.clone(), Arc::new(ManualClock::starting_now())),
    )
    .await
    .expect("the node neither started nor gave up within 30 s");
    match built {
        // Built: start it the usual way (the database is reachable).
        Ok(app) => {
            drop(app);
            let clock = Arc::new(ManualClock::starting_now());
            Ok(spawn_in(home, settings, clock).await)
        }
        Err(err) => Err(err.to_string()),
    }
}

#[tokio::test]
async fn verify_full_with_the_servers_own_ca_serves_and_refreshes() {
    let Some(database) = TestDatabase::create("verify_full_with_the_servers_own_ca").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "database");
    let front = tls_front(
        upstream_of(&database),
        ca.issue(&["localhost", "127.0.0.1"]),
    )
    .await;

    let node = start_node(url_through(&database, &front, &verify_full(&ca)))
        .await
        .unwrap();

    let (access, refresh) = node.login(None).await.assert_tokens(3600, "default");
    node.refresh(&refresh.unwrap())
        .await
        .assert_tokens(3600, "default");
    assert_eq!(node.introspect(&access).await.body["active"], true);
    assert_eq!(node.get("/health").await.status, 200);
    assert!(
        front.handshakes.load(Ordering::SeqCst) > 0,
        "nothing went through the TLS front"
    );
}

#[tokio::test]
async fn verify_full_refuses_a_database_whose_certificate_another_ca_signed() {
    let Some(database) = TestDatabase::create("verify_full_refuses_another_ca").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let trusted = TestCa::new(dir.path(), "trusted");
    let other = TestCa::new(dir.path(), "other");
    let front = tls_front(
        upstream_of(&database),
        other.issue(&["localhost", "127.0.0.1"]),
    )
    .await;

    let refused = start_node(url_through(&database, &front, &verify_full(&trusted))).await;

    let err = refused
        .err()
        .expect("the node started with an untrusted database");
    assert!(
        err.contains("invalid peer certificate: UnknownIssuer"),
        "{err}"
    );
    assert_eq!(front.handshakes.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn verify_full_refuses_a_certificate_for_another_host() {
    let Some(database) = TestDatabase::create("verify_full_refuses_another_host").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "database");
    let front = tls_front(upstream_of(&database), ca.issue(&["db.example.test"])).await;

    let refused = start_node(url_through(&database, &front, &verify_full(&ca))).await;

    let err = refused
        .err()
        .expect("the node started with a certificate for another host");
    assert!(
        err.contains("certificate not valid for name \"127.0.0.1\""),
        "{err}"
    );
    assert_eq!(front.handshakes.load(Ordering::SeqCst), 0);
}

/// Waits until `server`'s log holds `needle`, bounded.
async fn wait_for_log(server: &crate::helpers::process::Server, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let log = server.log();
        if log.contains(needle) || Instant::now() > deadline {
            return log;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn sslmode_require_starts_with_a_warning_that_the_server_is_not_authenticated() {
    let Some(database) = TestDatabase::create("sslmode_require_warns").await else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new(dir.path(), "database");
    let front = tls_front(upstream_of(&database), ca.issue(&["127.0.0.1"])).await;
    let warning = "sslmode=require encrypts the connection to PostgreSQL but does not \
                   authenticate the server";

    for (query, warns) in [
        ("sslmode=require".to_owned(), true),
        (verify_full(&ca), false),
    ] {
        let home = Home::new();
        home.edit(
            "config/identity.toml",
            "tokens = \"sqlite://data/tokens.db\"",
            &format!("tokens = \"{}\"", url_through(&database, &front, &query)),
        );
        // A password in the URL (the test database trusts local connections, so it is not
        // checked) makes the config file a secret file, and here everyone can read it.
        let user = PgConnectOptions::from_str(&database.url)
            .unwrap()
            .get_username()
            .to_owned();
        home.edit(
            "config/identity.toml",
            &format!("postgres://{user}@"),
            &format!("postgres://{user}:hunter2@"),
        );
        let server = serve(&home).await;
        server.demo_login().await.assert_tokens(3600, "PRODUCTION");
        let log = wait_for_log(&server, "token request").await;
        assert_eq!(log.contains(warning), warns, "{query}:\n{log}");
        assert_eq!(
            log.contains("sslmode=verify-full"),
            warns,
            "{query}:\n{log}"
        );
        let identity = home.path().join("config/identity.toml");
        let exposed = format!(
            "{}: holds secrets and is readable by group or others (mode 644)",
            identity.display()
        );
        assert!(log.contains(&exposed), "{query}:\n{log}");
        assert!(!log.contains("hunter2"), "the password was logged:\n{log}");
    }
}
