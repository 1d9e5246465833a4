//! `spawn_app()`: a real tokengate on a free port, with its own temp folder, config, certificate
//! and SQLite database, and an HTTPS client that trusts its certificate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Once};
use std::time::Duration;

use reqwest::header::HeaderMap;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use serde_json::Value;
use tempfile::TempDir;
use tokengate::clock::ManualClock;
use tokengate::config::{self, ConfigSource, PasswordHashingSettings, Settings};
use tokengate::crypto::{password, secret};
use tokengate::store::TokenStore;
use tokengate::Application;
use tokio::io::AsyncReadExt as _;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A client with a generated (SHA-256-hashed) secret and every grant; scopes PRODUCTION, SANDBOX.
pub const CLIENT_ID: &str = "test-app";
pub const CLIENT_SECRET: &str = "Zm9vYmFyYmF6cXV4Zm9vYmFyYmF6cXV4Zm9vYmFyYmE";
/// A second client, to check that tokens are bound to their client.
pub const OTHER_CLIENT_ID: &str = "other-app";
pub const OTHER_CLIENT_SECRET: &str = "b3RoZXItc2VjcmV0LW90aGVyLXNlY3JldC1vdGhlcg";
/// A client with an operator-chosen secret (argon2id-hashed).
pub const ARGON_CLIENT_ID: &str = "argon-app";
pub const ARGON_CLIENT_SECRET: &str = "operator chosen";
/// A client allowed only the password grant: it gets no refresh token.
pub const NO_REFRESH_CLIENT_ID: &str = "no-refresh-app";
/// A client allowed only the refresh grant.
pub const REFRESH_ONLY_CLIENT_ID: &str = "refresh-only-app";
/// A client with its own validity periods: 120 s access, 600 s refresh.
pub const SHORT_CLIENT_ID: &str = "short-lived-app";
/// Shared by the clients above except the argon one.
pub const SHARED_SECRET: &str = "c2hhcmVkLXNlY3JldC1zaGFyZWQtc2VjcmV0LXNoYXJl";

/// A resource server: may call /introspect, may not get tokens.
pub const RESOURCE_SERVER_ID: &str = "resource-server";
/// A client whose access tokens are RFC 9068 JWTs with its own audience.
pub const JWT_CLIENT_ID: &str = "jwt-app";
pub const JWT_AUDIENCE: &str = "https://api.example.test";
/// A client allowed only client_credentials, scope reports.read, application tokens of 600 s.
pub const SERVICE_CLIENT_ID: &str = "service-app";
/// A public client (a native app: no secret) with the authorization code grant, scope
/// PRODUCTION, and a private-use, a loopback and an https redirect URI.
pub const PUBLIC_CLIENT_ID: &str = "native-app";
pub const PUBLIC_REDIRECT_URI: &str = "com.example.app:/callback";
pub const LOOPBACK_REDIRECT_URI: &str = "http://127.0.0.1/callback";
pub const HTTPS_REDIRECT_URI: &str = "https://app.example.test/callback";
/// A confidential client (a web app, SHARED_SECRET) with the authorization code grant.
pub const WEB_CLIENT_ID: &str = "web-app";
pub const WEB_REDIRECT_URI: &str = "https://web.example.test/cb";
/// A third-party public client that needs the user's consent (`require_consent`), scopes
/// PRODUCTION and SANDBOX, an https and the loopback redirect URI.
pub const THIRD_PARTY_CLIENT_ID: &str = "photo-printer";
pub const THIRD_PARTY_NAME: &str = "Photo Printer";
pub const THIRD_PARTY_REDIRECT_URI: &str = "https://printer.example.test/cb";

pub const USER: &str = "alice";
pub const PASSWORD: &str = "alice-password";
pub const DISABLED_USER: &str = "mallory";
pub const DISABLED_PASSWORD: &str = "mallory-password";

pub fn project_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn init_tracing() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if std::env::var_os("TEST_LOG").is_some() {
            // Never dropped: the log writer runs as long as the test binary.
            std::mem::forget(tokengate::telemetry::init());
        }
    });
}

fn hashing() -> PasswordHashingSettings {
    PasswordHashingSettings {
        argon2_memory_kib: 12_288,
        argon2_iterations: 3,
        argon2_parallelism: 1,
        workers: 2,
        queue_capacity: 64,
    }
}

/// Writes the test users and clients into `home/config/`.
pub fn write_fixture_stores(home: &Path) {
    let config_dir = home.join("config");
    std::fs::create_dir_all(&config_dir).unwrap();
    let alice = password::hash_password(PASSWORD, &hashing()).unwrap();
    let mallory = password::hash_password(DISABLED_PASSWORD, &hashing()).unwrap();
    std::fs::write(
        config_dir.join("users.toml"),
        format!(
            "# test users\n[users.{USER}]\npassword_hash = \"{alice}\"\n\n\
             [users.{DISABLED_USER}]\npassword_hash = \"{mallory}\"\ndisabled = true\n"
        ),
    )
    .unwrap();
    let main = secret::hash_sha256(CLIENT_SECRET);
    let other = secret::hash_sha256(OTHER_CLIENT_SECRET);
    let shared = secret::hash_sha256(SHARED_SECRET);
    let argon = password::hash_password(ARGON_CLIENT_SECRET, &hashing()).unwrap();
    std::fs::write(
        config_dir.join("clients.toml"),
        format!(
            "# test clients\n\
             [clients.{CLIENT_ID}]\nsecret_hash = \"{main}\"\n\
             grant_types = [\"password\", \"refresh_token\"]\nscopes = [\"PRODUCTION\", \"SANDBOX\"]\n\n\
             [clients.{OTHER_CLIENT_ID}]\nsecret_hash = \"{other}\"\n\
             grant_types = [\"password\", \"refresh_token\"]\nscopes = [\"PRODUCTION\", \"SANDBOX\"]\n\n\
             [clients.{ARGON_CLIENT_ID}]\nsecret_hash = \"{argon}\"\n\
             grant_types = [\"password\", \"refresh_token\"]\nscopes = []\n\n\
             [clients.{NO_REFRESH_CLIENT_ID}]\nsecret_hash = \"{shared}\"\n\
             grant_types = [\"password\"]\n\n\
             [clients.{REFRESH_ONLY_CLIENT_ID}]\nsecret_hash = \"{shared}\"\n\
             grant_types = [\"refresh_token\"]\n\n\
             [clients.{SHORT_CLIENT_ID}]\nsecret_hash = \"{shared}\"\n\
             grant_types = [\"password\", \"refresh_token\"]\n\
             access_token_validity_period = 120\nrefresh_token_validity_period = 600\n\n\
             [clients.{RESOURCE_SERVER_ID}]\nsecret_hash = \"{shared}\"\n\
             grant_types = []\nintrospect = true\n\n\
             [clients.{JWT_CLIENT_ID}]\nsecret_hash = \"{shared}\"\n\
             grant_types = [\"password\", \"refresh_token\", \"client_credentials\"]\n\
             scopes = [\"PRODUCTION\"]\ntoken_format = \"jwt\"\naudience = \"{JWT_AUDIENCE}\"\n\n\
             [clients.{SERVICE_CLIENT_ID}]\nsecret_hash = \"{shared}\"\n\
             grant_types = [\"client_credentials\"]\nscopes = [\"reports.read\"]\n\
             application_access_token_validity_period = 600\n\n\
             [clients.{PUBLIC_CLIENT_ID}]\npublic = true\nname = \"Example Notes\"\n\
             grant_types = [\"authorization_code\", \"refresh_token\"]\nscopes = [\"PRODUCTION\"]\n\
             redirect_uris = [\"{PUBLIC_REDIRECT_URI}\", \"{LOOPBACK_REDIRECT_URI}\", \"{HTTPS_REDIRECT_URI}\"]\n\n\
             [clients.{WEB_CLIENT_ID}]\nsecret_hash = \"{shared}\"\n\
             grant_types = [\"authorization_code\", \"refresh_token\"]\nscopes = [\"PRODUCTION\"]\n\
             redirect_uris = [\"{WEB_REDIRECT_URI}\"]\n\n\
             [clients.{THIRD_PARTY_CLIENT_ID}]\npublic = true\nname = \"{THIRD_PARTY_NAME}\"\n\
             require_consent = true\n\
             grant_types = [\"authorization_code\", \"refresh_token\"]\nscopes = [\"PRODUCTION\", \"SANDBOX\"]\n\
             redirect_uris = [\"{THIRD_PARTY_REDIRECT_URI}\", \"{LOOPBACK_REDIRECT_URI}\"]\n"
        ),
    )
    .unwrap();
}

/// Settings from the shipped `config/identity.toml`, with `home` as TOKENGATE_HOME, port 0
/// on 127.0.0.1.
pub fn test_settings(home: &Path) -> Settings {
    let source = ConfigSource {
        config_path: Some(project_root().join("config/identity.toml")),
        port_offset: None,
        home: Some(home.to_path_buf()),
    };
    let mut settings = config::load(&source).expect("the shipped config is valid");
    settings.server.host = "127.0.0.1".parse().unwrap();
    settings.server.https_port = 0;
    // Never the shipped 9000: tests run many servers at once.
    settings.management.port = 0;
    settings.password_hashing = hashing();
    settings.stores.reload_interval = Duration::from_secs(1);
    settings
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// The management listener (`None` when `[management] enabled = false`).
    pub management_addr: Option<SocketAddr>,
    pub base_url: String,
    pub client: reqwest::Client,
    pub home: Arc<TempDir>,
    pub settings: Settings,
    pub clock: Arc<ManualClock>,
    pub store: Arc<dyn TokenStore>,
    pub hasher: tokengate::crypto::password::PasswordHasher,
    /// Re-reads `settings.source`'s config file, as SIGHUP does in the real process.
    pub reloader: Arc<tokengate::reload::Reloader>,
    shutdown: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<()>>,
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

/// Spawns an app after `adjust` has changed its settings.
pub async fn spawn_app_with(adjust: impl FnOnce(&mut Settings)) -> TestApp {
    let home = Arc::new(tempfile::tempdir().unwrap());
    write_fixture_stores(home.path());
    let mut settings = test_settings(home.path());
    adjust(&mut settings);
    spawn_in(home, settings, Arc::new(ManualClock::starting_now())).await
}

/// Spawns an app in an existing home folder (e.g. to restart on the same database).
pub async fn spawn_in(home: Arc<TempDir>, settings: Settings, clock: Arc<ManualClock>) -> TestApp {
    init_tracing();
    let app = Application::build_with_clock(settings.clone(), clock.clone())
        .await
        .expect("the test app builds");
    let addr = app.local_addr();
    let management_addr = app.management_addr();
    let store = app.token_store();
    let hasher = app.password_hasher();
    let reloader = app.reloader();
    let (shutdown, stop) = oneshot::channel::<()>();
    let server = tokio::spawn(async move {
        app.run_until(async {
            let _ = stop.await;
        })
        .await
        .unwrap();
    });
    let client = https_client(&settings.tls.cert);
    TestApp {
        addr,
        management_addr,
        base_url: format!("https://127.0.0.1:{}", addr.port()),
        client,
        home,
        settings,
        clock,
        store,
        hasher,
        reloader,
        shutdown: Some(shutdown),
        server: Some(server),
    }
}

/// An HTTPS client that trusts exactly the certificate at `cert` (no redirects, no proxy).
pub fn https_client(cert: &Path) -> reqwest::Client {
    let pem = std::fs::read(cert).unwrap();
    reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
        .tls_built_in_root_certs(false)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// A response read to the end: status, headers, body as JSON (Null if not JSON).
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
    pub text: String,
}

impl Reply {
    pub async fn read(response: reqwest::Response) -> Self {
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let text = response.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Self {
            status,
            headers,
            body,
            text,
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|v| v.to_str().unwrap())
    }

    pub fn str(&self, field: &str) -> &str {
        self.body[field]
            .as_str()
            .unwrap_or_else(|| panic!("`{field}` missing in {}", self.text))
    }

    /// Asserts an RFC 6749 §5.2 error with this status and code, and no-store headers.
    pub fn assert_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "body: {}", self.text);
        assert_eq!(self.body["error"], code, "body: {}", self.text);
        assert!(
            self.body["error_description"].is_string(),
            "error_description missing: {}",
            self.text
        );
        assert_eq!(self.header("content-type"), Some("application/json"));
        assert_eq!(self.header("cache-control"), Some("no-store"));
        assert_eq!(self.header("pragma"), Some("no-cache"));
    }

    /// Asserts an RFC 6749 §5.1 success, returning (access_token, refresh_token).
    pub fn assert_tokens(&self, expires_in: u64, scope: &str) -> (String, Option<String>) {
        assert_eq!(self.status, 200, "body: {}", self.text);
        assert_eq!(self.header("content-type"), Some("application/json"));
        assert_eq!(self.header("cache-control"), Some("no-store"));
        assert_eq!(self.header("pragma"), Some("no-cache"));
        assert_eq!(self.body["token_type"], "Bearer");
        assert_eq!(self.body["expires_in"], expires_in);
        assert_eq!(self.body["scope"], scope);
        let access = self.str("access_token").to_owned();
        assert_token_shape(&access);
        let refresh = self.body["refresh_token"].as_str().map(str::to_owned);
        if let Some(refresh) = &refresh {
            assert_token_shape(refresh);
            assert_ne!(&access, refresh);
        }
        (access, refresh)
    }
}

/// POSTs a form to `url` with HTTP Basic client credentials and reads the reply.
pub async fn post_basic_form(
    client: &reqwest::Client,
    url: &str,
    client_id: &str,
    secret: &str,
    form: &[(&str, &str)],
) -> Reply {
    let response = client
        .post(url)
        .basic_auth(client_id, Some(secret))
        .form(form)
        .send()
        .await
        .unwrap();
    Reply::read(response).await
}

/// `<22 base64url chars>.<43 base64url chars>`: a 128-bit id and a 256-bit secret.
pub fn assert_token_shape(token: &str) {
    let (id, secret) = token.split_once('.').expect("token has an id and a secret");
    assert_eq!(id.len(), 22, "{token}");
    assert_eq!(secret.len(), 43, "{token}");
    let b64url = |s: &str| {
        s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    assert!(b64url(id) && b64url(secret), "{token}");
}

impl TestApp {
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base_url)
    }

    /// POSTs a raw form body to /token with HTTP Basic credentials.
    pub async fn post_token_as(
        &self,
        client_id: &str,
        secret: &str,
        form: &[(&str, &str)],
    ) -> Reply {
        post_basic_form(&self.client, &self.url("/token"), client_id, secret, form).await
    }

    /// POSTs to /token without an `Authorization` header (a public client names itself
    /// with `client_id` in the form).
    pub async fn post_token_without_secret(&self, form: &[(&str, &str)]) -> Reply {
        let response = self
            .client
            .post(self.url("/token"))
            .form(form)
            .send()
            .await
            .unwrap();
        Reply::read(response).await
    }

    /// The public client's exchange of `code` (authorization_code grant, PKCE `verifier`).
    pub async fn public_code_exchange(
        &self,
        code: &str,
        redirect_uri: &str,
        verifier: &str,
    ) -> Reply {
        self.post_token_without_secret(&[
            ("grant_type", "authorization_code"),
            ("client_id", PUBLIC_CLIENT_ID),
            ("code", code),
            ("redirect_uri", redirect_uri),
            ("code_verifier", verifier),
        ])
        .await
    }

    /// The public client's refresh grant, by client_id alone.
    pub async fn public_refresh(&self, refresh_token: &str) -> Reply {
        self.post_token_without_secret(&[
            ("grant_type", "refresh_token"),
            ("client_id", PUBLIC_CLIENT_ID),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    /// POSTs to /token as the main test client.
    pub async fn post_token(&self, form: &[(&str, &str)]) -> Reply {
        self.post_token_as(CLIENT_ID, CLIENT_SECRET, form).await
    }

    /// A password grant for alice as the main client; returns the reply.
    /// A password grant for the fixture user with the fixture JWT client, scope PRODUCTION.
    pub async fn jwt_password_grant(&self) -> Reply {
        self.post_token_as(
            JWT_CLIENT_ID,
            SHARED_SECRET,
            &[
                ("grant_type", "password"),
                ("username", USER),
                ("password", PASSWORD),
                ("scope", "PRODUCTION"),
            ],
        )
        .await
    }

    pub async fn login(&self, scope: Option<&str>) -> Reply {
        let mut form = vec![
            ("grant_type", "password"),
            ("username", USER),
            ("password", PASSWORD),
        ];
        if let Some(scope) = scope {
            form.push(("scope", scope));
        }
        self.post_token(&form).await
    }

    pub async fn refresh(&self, refresh_token: &str) -> Reply {
        self.post_token(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    /// Stops the server gracefully and waits for it (the store is closed afterwards).
    pub async fn stop(mut self) -> Arc<TempDir> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap();
        }
        self.home.clone()
    }
}

/// The stored record of an access token, found by the id half of the token.
pub async fn stored_access_token(
    app: &TestApp,
    token: &str,
) -> Option<tokengate::store::model::AccessTokenRecord> {
    let presented = tokengate::crypto::token::PresentedToken::parse(&secrecy::SecretString::from(
        token.to_owned(),
    ))?;
    app.store.find_access_token(&presented.id).await.unwrap()
}

/// A TLS connection to the app that trusts its certificate and offers only ALPN `http/1.1`.
pub async fn raw_http1_connection(app: &TestApp) -> tokio_rustls::client::TlsStream<TcpStream> {
    raw_tls_connection(app, b"http/1.1").await
}

/// A rustls client configuration trusting exactly the app's certificate, offering `alpn`.
pub fn tls_client_config(app: &TestApp, alpn: &[u8]) -> rustls::ClientConfig {
    let pem = std::fs::read(&app.settings.tls.cert).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for cert in <CertificateDer<'static> as PemObject>::pem_slice_iter(&pem) {
        roots.add(cert.unwrap()).unwrap();
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![alpn.to_vec()];
    config
}

/// A TLS connection to the app that trusts its certificate and offers only ALPN `alpn`.
pub async fn raw_tls_connection(
    app: &TestApp,
    alpn: &[u8],
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls_client_config(app, alpn)));
    let tcp = TcpStream::connect(app.addr).await.unwrap();
    let tls = connector
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap();
    assert_eq!(tls.get_ref().1.alpn_protocol(), Some(alpn));
    tls
}

/// Reads until the server closes the connection (or resets it), within a generous bound.
pub async fn read_until_closed(stream: &mut (impl tokio::io::AsyncRead + Unpin)) -> Vec<u8> {
    let mut received = Vec::new();
    let mut buf = [0u8; 8192];
    let read_all = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read_all)
        .await
        .expect("the server answers and closes the connection");
    received
}

/// Whether the server closes `stream` within `bound`, reading (and dropping) whatever it sends.
pub async fn closed_within(
    stream: &mut (impl tokio::io::AsyncRead + Unpin),
    bound: Duration,
) -> bool {
    use tokio::io::AsyncReadExt as _;
    let mut buf = [0u8; 4096];
    let drained = async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout(bound, drained).await.is_ok()
}

impl TestApp {
    /// One series' value in a scrape of the management port's `/metrics` (plain HTTP); 0 when
    /// the series is not there.
    pub async fn metric(&self, series: &str) -> f64 {
        let addr = self.management_addr.expect("the management listener is on");
        let text = reqwest::get(format!("http://{addr}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0.0, |value| value.parse().unwrap())
    }
}

impl TestApp {
    /// POSTs a form to `path` as the given client (HTTP Basic).
    pub async fn post_form_as(
        &self,
        path: &str,
        client_id: &str,
        secret: &str,
        form: &[(&str, &str)],
    ) -> Reply {
        post_basic_form(&self.client, &self.url(path), client_id, secret, form).await
    }

    /// Introspects `token` as the fixture resource server.
    pub async fn introspect(&self, token: &str) -> Reply {
        self.post_form_as(
            "/introspect",
            RESOURCE_SERVER_ID,
            SHARED_SECRET,
            &[("token", token)],
        )
        .await
    }

    /// Revokes `token` as the main test client.
    pub async fn revoke(&self, token: &str) -> Reply {
        self.post_form_as("/revoke", CLIENT_ID, CLIENT_SECRET, &[("token", token)])
            .await
    }

    /// `GET path` read to the end.
    pub async fn get(&self, path: &str) -> Reply {
        Reply::read(self.client.get(self.url(path)).send().await.unwrap()).await
    }
}

impl TestApp {
    /// The app's clock, in Unix seconds.
    pub fn clock_now(&self) -> i64 {
        use tokengate::clock::Clock as _;
        self.clock.now_secs()
    }
}
impl TestApp {
    /// POSTs a form to `path` as the given client (HTTP Basic), with `X-Forwarded-For:
    /// forwarded_for` (believed when 127.0.0.1 is a trusted proxy: a client at that address).
    pub async fn post_form_from(
        &self,
        forwarded_for: &str,
        path: &str,
        client_id: &str,
        secret: &str,
        form: &[(&str, &str)],
    ) -> Reply {
        let response = self
            .client
            .post(self.url(path))
            .basic_auth(client_id, Some(secret))
            .header("x-forwarded-for", forwarded_for)
            .form(form)
            .send()
            .await
            .unwrap();
        Reply::read(response).await
    }
}
