//! The real `tokengate` binary, as an operator runs it: `serve` on a port offset, the README's
//! curl commands, signals, restarts, `check-config`, `hash-password`, `user …` and `client …`.
//!
//! Every test gets its own TOKENGATE_HOME (a temp folder with a copy of the shipped `config/`),
//! so certs/, data/ and the user and client files resolve inside it, and its own free port.

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::Value;
use tempfile::TempDir;

use crate::helpers::{
    assert_token_shape, https_client, post_basic_form, project_root, Reply, TestDatabase,
};

const TOKENGATE: &str = env!("CARGO_BIN_EXE_tokengate");

/// `[server] https_port` in the shipped config; the offset is added to it.
const SHIPPED_HTTPS_PORT: u16 = 8243;
/// `[server] shutdown_grace_period` in the shipped config.
const GRACE_PERIOD: Duration = Duration::from_secs(10);
/// `[stores] reload_interval` is 2 s; a change must be picked up well within this.
const PICKUP_DEADLINE: Duration = Duration::from_secs(10);
const HEALTH_DEADLINE: Duration = Duration::from_secs(30);
const CLI_DEADLINE: Duration = Duration::from_secs(60);
const POLL: Duration = Duration::from_millis(50);

/// The demo credentials the shipped config carries (see config/clients.toml and users.toml).
pub(crate) const DEMO_CLIENT_ID: &str = "wU62DjlyDBnq87GlBwplfqvmAbAa";
pub(crate) const DEMO_CLIENT_SECRET: &str = "ksdSdoefDDP7wpaElfqvmjDue";
pub(crate) const DEMO_USER: &str = "admin";
pub(crate) const DEMO_PASSWORD: &str = "admin";

const ARGON2ID_PREFIX: &str = "$argon2id$v=19$m=19456,t=2,p=1$";

// ---------------------------------------------------------------------------------------------
// Harness: a home folder, CLI runs, a served binary
// ---------------------------------------------------------------------------------------------

/// A TOKENGATE_HOME holding a copy of the project's `config/` folder.
pub(crate) struct Home {
    dir: TempDir,
    starts: std::cell::Cell<usize>,
}

impl Home {
    pub(crate) fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");
        std::fs::create_dir_all(&config).unwrap();
        for name in ["identity.toml", "users.toml", "clients.toml"] {
            std::fs::copy(project_root().join("config").join(name), config.join(name)).unwrap();
        }
        // The binary runs from here, so a path that ignored TOKENGATE_HOME would not be found.
        std::fs::create_dir_all(dir.path().join("elsewhere")).unwrap();
        Self {
            dir,
            starts: std::cell::Cell::new(0),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    fn file(&self, relative: &str) -> PathBuf {
        self.path().join(relative)
    }

    pub(crate) fn read(&self, relative: &str) -> String {
        std::fs::read_to_string(self.file(relative)).unwrap()
    }

    /// Replaces the first `from` in a file with `to`; fails if `from` is not there.
    pub(crate) fn edit(&self, relative: &str, from: &str, to: &str) {
        let text = self.read(relative);
        assert!(text.contains(from), "{relative} has no `{from}`");
        std::fs::write(self.file(relative), text.replacen(from, to, 1)).unwrap();
    }

    /// `tokengate ARGS` with TOKENGATE_HOME set to this folder and no other TOKENGATE_ variable.
    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(TOKENGATE);
        command.args(args);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("TOKENGATE_") {
                command.env_remove(&name);
            }
        }
        command
            .env("TOKENGATE_HOME", self.path())
            .current_dir(self.file("elsewhere"));
        command
    }

    /// Runs `tokengate ARGS`, feeding `stdin`, and waits for it (bounded).
    pub(crate) async fn run(&self, args: &[&str], stdin: Option<&str>) -> Run {
        run_to_end(self.command(args), stdin).await
    }

    fn cert(&self) -> PathBuf {
        self.file("certs/server.crt")
    }

    fn next_log(&self) -> PathBuf {
        let n = self.starts.get() + 1;
        self.starts.set(n);
        self.file(&format!("server-{n}.log"))
    }
}

/// What a finished command printed.
#[derive(Debug)]
pub(crate) struct Run {
    status: ExitStatus,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    pub(crate) fn assert_success(&self) {
        assert_eq!(self.status.code(), Some(0), "{self:#?}");
        assert!(!self.stderr.contains("panicked"), "{self:#?}");
    }

    pub(crate) fn assert_failure(&self) {
        assert_eq!(self.status.code(), Some(1), "{self:#?}");
        assert!(!self.stderr.contains("panicked"), "{self:#?}");
    }

    pub(crate) fn stdout_lines(&self) -> Vec<&str> {
        self.stdout.lines().collect()
    }
}

/// Runs `command` to the end with `stdin` as its input; kills it if it outlives CLI_DEADLINE.
async fn run_to_end(mut command: Command, stdin: Option<&str>) -> Run {
    command
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let pid = child.id();
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(input.as_bytes()).unwrap();
    }
    let waiting = tokio::task::spawn_blocking(move || child.wait_with_output());
    let output: Output = match tokio::time::timeout(CLI_DEADLINE, waiting).await {
        Ok(finished) => finished.unwrap().unwrap(),
        Err(_) => {
            signal(pid, "KILL");
            panic!("{command:?} did not finish within {CLI_DEADLINE:?}");
        }
    };
    Run {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `kill -SIG pid`, for a process this test started.
fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// A port that was free a moment ago and can be reached as 8243 + offset.
fn free_port() -> u16 {
    for _ in 0..100 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        if port >= SHIPPED_HTTPS_PORT {
            return port;
        }
    }
    panic!("no free port at or above {SHIPPED_HTTPS_PORT}");
}

fn offset_of(port: u16) -> String {
    (port - SHIPPED_HTTPS_PORT).to_string()
}

/// How `serve` is told its port offset.
#[derive(Clone, Copy)]
enum OffsetFrom {
    Flag,
    Env,
    /// The flag with this test's offset, TOKENGATE_PORT_OFFSET with another free port's.
    FlagOverEnv,
}

/// Why `serve` did not come up.
enum Startup {
    Exited(String),
    TimedOut(String),
}

/// A `tokengate serve` child process. Dropping it kills the process if it still runs.
pub(crate) struct Server {
    child: Child,
    port: u16,
    log: PathBuf,
    client: reqwest::Client,
}

/// Starts `tokengate serve` in `home` with the offset given by `--port-offset`.
pub(crate) async fn serve(home: &Home) -> Server {
    serve_with(home, OffsetFrom::Flag).await
}

/// Starts `tokengate serve` on a free port and waits for `GET /health` to answer 200 over TLS
/// with the certificate in `home/certs/`. Retries on another port if the process exits early
/// (e.g. the port was taken in the meantime).
async fn serve_with(home: &Home, offset_from: OffsetFrom) -> Server {
    let mut failures = Vec::new();
    for _ in 0..5 {
        let port = free_port();
        let mut command = match offset_from {
            OffsetFrom::Flag => home.command(&["serve", "--port-offset", &offset_of(port)]),
            OffsetFrom::Env => {
                let mut command = home.command(&["serve"]);
                command.env("TOKENGATE_PORT_OFFSET", offset_of(port));
                command
            }
            OffsetFrom::FlagOverEnv => {
                let other = loop {
                    let other = free_port();
                    if other != port {
                        break other;
                    }
                };
                let mut command = home.command(&["serve", "--port-offset", &offset_of(port)]);
                command.env("TOKENGATE_PORT_OFFSET", offset_of(other));
                command
            }
        };
        let log = home.next_log();
        let file = std::fs::File::create(&log).unwrap();
        command
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone().unwrap()))
            .stderr(Stdio::from(file));
        let child = command.spawn().unwrap();
        let mut server = Server {
            child,
            port,
            log,
            client: reqwest::Client::new(),
        };
        match server.wait_until_healthy(&home.cert()).await {
            Ok(client) => {
                server.client = client;
                return server;
            }
            // The port was taken between choosing and binding it: try another.
            Err(Startup::Exited(why)) => {
                failures.push(format!("port {port}: {why}\n{}", server.log()))
            }
            Err(Startup::TimedOut(why)) => panic!("port {port}: {why}\n{}", server.log()),
        }
    }
    panic!(
        "tokengate serve did not start:\n{}",
        failures.join("\n---\n")
    );
}

impl Server {
    fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.port)
    }

    /// Polls `GET /health` until 200; `Err` if the process exits or HEALTH_DEADLINE passes.
    async fn wait_until_healthy(&mut self, cert: &Path) -> Result<reqwest::Client, Startup> {
        let deadline = Instant::now() + HEALTH_DEADLINE;
        let mut client = None;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(Startup::Exited(format!(
                    "exited with {status} before /health answered"
                )));
            }
            let cert_written = std::fs::read_to_string(cert)
                .is_ok_and(|pem| pem.trim_end().ends_with("-----END CERTIFICATE-----"));
            if client.is_none() && cert_written {
                client = Some(https_client(cert));
            }
            if let Some(client) = &client {
                let answer = client
                    .get(self.url("/health"))
                    .timeout(Duration::from_secs(2))
                    .send()
                    .await;
                if answer.is_ok_and(|response| response.status() == 200) {
                    return Ok(client.clone());
                }
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                return Err(Startup::TimedOut(format!(
                    "/health did not answer 200 within {HEALTH_DEADLINE:?}"
                )));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Everything the process wrote to stdout and stderr so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    async fn get(&self, path: &str) -> Reply {
        Reply::read(self.client.get(self.url(path)).send().await.unwrap()).await
    }

    /// POSTs a form to `path` with HTTP Basic client credentials.
    pub(crate) async fn post_token_form(
        &self,
        path: &str,
        client_id: &str,
        secret: &str,
        form: &[(&str, &str)],
    ) -> Reply {
        post_basic_form(&self.client, &self.url(path), client_id, secret, form).await
    }

    async fn post_token(&self, client_id: &str, secret: &str, form: &[(&str, &str)]) -> Reply {
        self.post_token_form("/token", client_id, secret, form)
            .await
    }

    /// The README's password grant: the demo client, the given user, scope PRODUCTION.
    pub(crate) async fn password_grant(
        &self,
        client_id: &str,
        secret: &str,
        user: &str,
        password: &str,
    ) -> Reply {
        self.post_token(
            client_id,
            secret,
            &[
                ("grant_type", "password"),
                ("username", user),
                ("password", password),
                ("scope", "PRODUCTION"),
            ],
        )
        .await
    }

    pub(crate) async fn demo_login(&self) -> Reply {
        self.password_grant(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_USER, DEMO_PASSWORD)
            .await
    }

    pub(crate) async fn demo_refresh(&self, refresh_token: &str) -> Reply {
        self.post_token(
            DEMO_CLIENT_ID,
            DEMO_CLIENT_SECRET,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", refresh_token),
            ],
        )
        .await
    }

    /// Polls a password grant until it answers 200 (a change to the user or client file has
    /// been picked up) or PICKUP_DEADLINE passes; returns the last reply.
    async fn poll_password_grant(
        &self,
        client_id: &str,
        secret: &str,
        user: &str,
        password: &str,
    ) -> Reply {
        let deadline = Instant::now() + PICKUP_DEADLINE;
        loop {
            let reply = self.password_grant(client_id, secret, user, password).await;
            if reply.status == 200 || Instant::now() > deadline {
                return reply;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// How many times the server has reported re-reading a user or client file.
    fn reloads(&self) -> usize {
        self.log().matches(" reloaded").count()
    }

    /// Waits until the server reports more reloads than `before` (bounded by PICKUP_DEADLINE).
    async fn wait_for_reload_after(&self, before: usize) {
        let deadline = Instant::now() + PICKUP_DEADLINE;
        while self.reloads() <= before {
            assert!(
                Instant::now() < deadline,
                "no reload reported:\n{}",
                self.log()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    fn send_signal(&self, sig: &str) {
        signal(self.child.id(), sig);
    }

    /// Waits for the process to exit; `None` if it still runs after `within`.
    async fn wait_for_exit(&mut self, within: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return Some(status);
            }
            if Instant::now() > deadline {
                return None;
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// POSTs `body` to `https://localhost:PORT/token` with the demo client's Basic credentials the
/// way the README does: with `curl -k -s` when curl is installed, else the same request with
/// reqwest. Returns the response body as JSON.
async fn readme_token_request(port: u16, body: &str) -> Value {
    let basic = base64::engine::general_purpose::STANDARD
        .encode(format!("{DEMO_CLIENT_ID}:{DEMO_CLIENT_SECRET}"));
    let url = format!("https://localhost:{port}/token");
    let text = if curl_installed() {
        let mut curl = Command::new("curl");
        curl.args(["-k", "-s", "-d", body, "-H"])
            .arg(format!("Authorization: Basic {basic}"))
            .arg(&url);
        for proxy in ["https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"] {
            curl.env_remove(proxy);
        }
        let run = run_to_end(curl, None).await;
        assert_eq!(run.status.code(), Some(0), "curl failed: {run:#?}");
        run.stdout
    } else {
        // Only here, standing in for `curl -k`: the README's command skips verification.
        let client = reqwest::Client::builder()
            .danger_accept_invalid_certs(true)
            .no_proxy()
            .build()
            .unwrap();
        client
            .post(&url)
            .header("Authorization", format!("Basic {basic}"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text:?}"))
}

fn curl_installed() -> bool {
    Command::new("curl")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success())
}

/// The lines of a file that are comments, in order.
fn comment_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| line.trim_start().starts_with('#'))
        .map(str::to_owned)
        .collect()
}

fn toml_of(text: &str) -> toml::Value {
    text.parse::<toml::Value>().unwrap()
}

// ---------------------------------------------------------------------------------------------
// serve
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn serve_generates_a_self_signed_certificate_and_answers_health_on_the_offset_port() {
    // Arrange
    let home = Home::new();
    assert!(!home.cert().exists());

    // Act
    let server = serve(&home).await;
    let health = server.get("/health").await;

    // Assert
    assert_eq!(health.status, 200, "{}", health.text);
    assert_eq!(health.header("content-type"), Some("application/json"));
    assert_eq!(health.body["status"], "ok", "{}", health.text);
    assert!(home.cert().is_file());
    let key = home.file("certs/server.key");
    assert!(key.is_file());
    let mode = std::fs::metadata(&key).unwrap().permissions().mode();
    assert_eq!(mode & 0o077, 0, "the key is readable by others: {mode:o}");
    assert!(
        home.file("data/tokens.db").is_file(),
        "the token database is not in TOKENGATE_HOME"
    );
    let cwd = std::fs::read_dir(home.file("elsewhere")).unwrap().count();
    assert_eq!(cwd, 0, "files were written to the current folder");
    let log = server.log();
    assert!(
        log.contains("self-signed") && log.contains(&home.cert().display().to_string()),
        "the log does not mention the generated certificate:\n{log}"
    );
    assert!(
        log.contains(&format!(":{}", server.port)),
        "the log does not name the port:\n{log}"
    );
}

#[tokio::test]
async fn the_readme_curl_commands_get_and_refresh_tokens_from_the_served_binary() {
    // Arrange
    let home = Home::new();
    let server = serve(&home).await;

    // Act: the README's password grant.
    let issued = readme_token_request(
        server.port,
        "grant_type=password&username=admin&password=admin&scope=PRODUCTION",
    )
    .await;

    // Assert
    assert_eq!(issued["token_type"], "Bearer", "{issued}");
    assert_eq!(issued["expires_in"], 3600, "{issued}");
    assert_eq!(issued["scope"], "PRODUCTION", "{issued}");
    let access = issued["access_token"].as_str().unwrap().to_owned();
    let refresh = issued["refresh_token"].as_str().unwrap().to_owned();
    assert_token_shape(&access);
    assert_token_shape(&refresh);

    // Act: the README's refresh grant.
    let refreshed = readme_token_request(
        server.port,
        &format!("grant_type=refresh_token&refresh_token={refresh}"),
    )
    .await;

    // Assert
    assert_eq!(refreshed["token_type"], "Bearer", "{refreshed}");
    assert_eq!(refreshed["expires_in"], 3600, "{refreshed}");
    assert_eq!(refreshed["scope"], "PRODUCTION", "{refreshed}");
    let new_access = refreshed["access_token"].as_str().unwrap();
    let new_refresh = refreshed["refresh_token"].as_str().unwrap();
    assert_token_shape(new_access);
    assert_token_shape(new_refresh);
    assert_ne!(new_access, access);
    assert_ne!(new_refresh, refresh);

    // Act + Assert: the first refresh token was spent by the refresh.
    server
        .demo_refresh(&refresh)
        .await
        .assert_error(400, "invalid_grant");
}

#[tokio::test]
async fn the_password_grant_of_the_readme_answers_200_with_no_store_headers() {
    // Arrange
    let home = Home::new();
    let server = serve(&home).await;

    // Act
    let reply = server.demo_login().await;

    // Assert
    let (_, refresh) = reply.assert_tokens(3600, "PRODUCTION");
    assert!(refresh.is_some(), "{}", reply.text);
}

#[tokio::test]
async fn serve_warns_loudly_about_the_demo_client_and_the_demo_user() {
    // Arrange
    let home = Home::new();

    // Act
    let server = serve(&home).await;

    // Assert
    let log = server.log();
    let warnings: Vec<&str> = log.lines().filter(|line| line.contains("WARN")).collect();
    assert!(
        warnings
            .iter()
            .any(|line| line.contains("DEMO CLIENT") && line.contains(DEMO_CLIENT_ID)),
        "no warning about the demo client:\n{log}"
    );
    assert!(
        warnings
            .iter()
            .any(|line| line.contains("DEMO USER") && line.contains(DEMO_USER)),
        "no warning about the demo user:\n{log}"
    );
}

#[tokio::test]
async fn the_port_offset_can_come_from_the_environment() {
    // Arrange
    let home = Home::new();

    // Act: TOKENGATE_PORT_OFFSET, no flag.
    let server = serve_with(&home, OffsetFrom::Env).await;

    // Assert
    let health = server.get("/health").await;
    assert_eq!(health.status, 200, "{}", health.text);
    let log = server.log();
    assert!(log.contains(&format!(":{}", server.port)), "{log}");
}

#[tokio::test]
async fn the_port_offset_flag_wins_over_the_environment_variable() {
    // Arrange
    let home = Home::new();

    // Act: --port-offset N and TOKENGATE_PORT_OFFSET pointing elsewhere.
    let server = serve_with(&home, OffsetFrom::FlagOverEnv).await;

    // Assert: the flag's port (8243 + N) answers.
    let health = server.get("/health").await;
    assert_eq!(health.status, 200, "{}", health.text);
    let log = server.log();
    assert!(log.contains(&format!(":{}", server.port)), "{log}");
}

#[tokio::test]
async fn sigterm_stops_the_server_with_status_0_and_its_tokens_refresh_after_a_restart() {
    // Arrange
    let home = Home::new();
    let mut server = serve(&home).await;
    let (_, refresh) = server.demo_login().await.assert_tokens(3600, "PRODUCTION");
    let refresh = refresh.unwrap();

    // Act
    server.send_signal("TERM");
    let status = server.wait_for_exit(GRACE_PERIOD).await;

    // Assert
    let status = status.unwrap_or_else(|| {
        panic!(
            "still running {GRACE_PERIOD:?} after SIGTERM:\n{}",
            server.log()
        )
    });
    assert_eq!(status.code(), Some(0), "{status}\n{}", server.log());
    assert!(!server.log().contains("panicked"), "{}", server.log());

    // Act: a new process on the same home.
    let restarted = serve(&home).await;
    let reply = restarted.demo_refresh(&refresh).await;

    // Assert
    let (_, rotated) = reply.assert_tokens(3600, "PRODUCTION");
    assert_ne!(rotated.as_deref(), Some(refresh.as_str()));
}

#[tokio::test]
async fn a_token_answered_with_200_survives_sigkill_right_after() {
    // Arrange
    let home = Home::new();
    let mut server = serve(&home).await;
    let (_, refresh) = server.demo_login().await.assert_tokens(3600, "PRODUCTION");
    let refresh = refresh.unwrap();

    // Act: killed at once, no chance to flush anything.
    server.send_signal("KILL");
    let status = server.wait_for_exit(GRACE_PERIOD).await.unwrap();
    assert_eq!(status.code(), None, "killed by a signal: {status}");
    let restarted = serve(&home).await;
    let reply = restarted.demo_refresh(&refresh).await;

    // Assert
    reply.assert_tokens(3600, "PRODUCTION");
}

#[tokio::test]
async fn serve_with_a_broken_config_exits_1_naming_the_file_and_the_key_without_panicking() {
    // Arrange
    let home = Home::new();
    home.edit(
        "config/identity.toml",
        "https_port = 8243",
        "https_port = 70000",
    );
    let offset = offset_of(free_port());

    // Act
    let run = home.run(&["serve", "--port-offset", &offset], None).await;

    // Assert
    run.assert_failure();
    let identity = home.file("config/identity.toml").display().to_string();
    assert!(run.stderr.contains(&identity), "{run:#?}");
    assert!(run.stderr.contains("server.https_port"), "{run:#?}");
}

#[tokio::test]
async fn serve_with_a_broken_users_file_exits_1_naming_the_file_and_the_key_without_panicking() {
    // Arrange
    let home = Home::new();
    let users = home.read("config/users.toml");
    let hash = toml_of(&users)["users"]["admin"]["password_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    home.edit("config/users.toml", &hash, "not-a-hash");
    let offset = offset_of(free_port());

    // Act
    let run = home.run(&["serve", "--port-offset", &offset], None).await;

    // Assert
    run.assert_failure();
    let users_file = home.file("config/users.toml").display().to_string();
    assert!(run.stderr.contains(&users_file), "{run:#?}");
    assert!(run.stderr.contains("users.admin.password_hash"), "{run:#?}");
}

// ---------------------------------------------------------------------------------------------
// check-config
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn check_config_accepts_the_shipped_config() {
    // Arrange
    let home = Home::new();

    // Act
    let run = home.run(&["check-config"], None).await;

    // Assert
    run.assert_success();
    assert!(run.stdout.contains("ok"), "{run:#?}");
    let identity = home.file("config/identity.toml").display().to_string();
    assert!(run.stdout.contains(&identity), "{run:#?}");
}

#[tokio::test]
async fn check_config_rejects_an_unknown_key_naming_the_file_and_the_key() {
    // Arrange
    let home = Home::new();
    home.edit("config/identity.toml", "[server]\n", "[server]\nfoo = 1\n");

    // Act
    let run = home.run(&["check-config"], None).await;

    // Assert
    run.assert_failure();
    let identity = home.file("config/identity.toml").display().to_string();
    assert!(run.stderr.contains(&identity), "{run:#?}");
    assert!(run.stderr.contains("foo"), "{run:#?}");
    assert!(!run.stdout.contains("ok"), "{run:#?}");
}

#[tokio::test]
async fn check_config_rejects_a_bad_value_naming_its_key() {
    // Arrange
    let home = Home::new();
    home.edit(
        "config/identity.toml",
        "https_port = 8243",
        "https_port = 70000",
    );

    // Act
    let run = home.run(&["check-config"], None).await;

    // Assert
    run.assert_failure();
    let identity = home.file("config/identity.toml").display().to_string();
    assert!(run.stderr.contains(&identity), "{run:#?}");
    assert!(run.stderr.contains("server.https_port"), "{run:#?}");
}

#[tokio::test]
async fn check_config_prints_every_problem() {
    // Arrange
    let home = Home::new();
    home.edit(
        "config/identity.toml",
        "https_port = 8243",
        "https_port = 70000",
    );
    home.edit(
        "config/identity.toml",
        "argon2_memory_kib = 19456",
        "argon2_memory_kib = 1024",
    );

    // Act
    let run = home.run(&["check-config"], None).await;

    // Assert
    run.assert_failure();
    assert!(run.stderr.contains("server.https_port"), "{run:#?}");
    assert!(
        run.stderr.contains("password_hashing.argon2_memory_kib"),
        "{run:#?}"
    );
}

#[tokio::test]
async fn check_config_names_the_users_file_and_key_of_a_broken_password_hash() {
    // Arrange
    let home = Home::new();
    let users = home.read("config/users.toml");
    let hash = toml_of(&users)["users"]["admin"]["password_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    home.edit("config/users.toml", &hash, "$argon2id$broken");

    // Act
    let run = home.run(&["check-config"], None).await;

    // Assert
    run.assert_failure();
    let users_file = home.file("config/users.toml").display().to_string();
    assert!(run.stderr.contains(&users_file), "{run:#?}");
    assert!(run.stderr.contains("users.admin.password_hash"), "{run:#?}");
}

// ---------------------------------------------------------------------------------------------
// --config and TOKENGATE_CONFIG
// ---------------------------------------------------------------------------------------------

/// Writes a valid copy and a broken copy of the config outside `config/`; returns (good, bad).
fn alternative_configs(home: &Home) -> (PathBuf, PathBuf) {
    let dir = home.file("alt");
    std::fs::create_dir_all(&dir).unwrap();
    let shipped = home.read("config/identity.toml");
    let good = dir.join("good.toml");
    std::fs::write(&good, &shipped).unwrap();
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        shipped.replacen("https_port = 8243", "https_port = 70000", 1),
    )
    .unwrap();
    // The default file is broken too, so only a selected good file can pass.
    home.edit("config/identity.toml", "[server]\n", "[server]\nfoo = 1\n");
    (good, bad)
}

#[tokio::test]
async fn the_config_flag_selects_the_config_file() {
    // Arrange
    let home = Home::new();
    let (good, bad) = alternative_configs(&home);

    // Act
    let accepted = home
        .run(&["--config", good.to_str().unwrap(), "check-config"], None)
        .await;
    let rejected = home
        .run(&["--config", bad.to_str().unwrap(), "check-config"], None)
        .await;

    // Assert
    accepted.assert_success();
    assert!(
        accepted.stdout.contains(good.to_str().unwrap()),
        "{accepted:#?}"
    );
    rejected.assert_failure();
    assert!(
        rejected.stderr.contains(bad.to_str().unwrap()),
        "{rejected:#?}"
    );
}

#[tokio::test]
async fn the_tokengate_config_variable_selects_the_config_file() {
    // Arrange
    let home = Home::new();
    let (good, bad) = alternative_configs(&home);

    // Act
    let mut command = home.command(&["check-config"]);
    command.env("TOKENGATE_CONFIG", &good);
    let accepted = run_to_end(command, None).await;
    let mut command = home.command(&["check-config"]);
    command.env("TOKENGATE_CONFIG", &bad);
    let rejected = run_to_end(command, None).await;

    // Assert
    accepted.assert_success();
    assert!(
        accepted.stdout.contains(good.to_str().unwrap()),
        "{accepted:#?}"
    );
    rejected.assert_failure();
    assert!(
        rejected.stderr.contains(bad.to_str().unwrap()),
        "{rejected:#?}"
    );
}

#[tokio::test]
async fn the_config_flag_wins_over_the_tokengate_config_variable() {
    // Arrange
    let home = Home::new();
    let (good, bad) = alternative_configs(&home);
    let mut command = home.command(&["--config", good.to_str().unwrap(), "check-config"]);
    command.env("TOKENGATE_CONFIG", &bad);

    // Act
    let run = run_to_end(command, None).await;

    // Assert
    run.assert_success();
    assert!(run.stdout.contains(good.to_str().unwrap()), "{run:#?}");
}

// ---------------------------------------------------------------------------------------------
// hash-password
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn hash_password_prints_one_argon2id_line_for_the_password_on_stdin() {
    // Arrange
    let home = Home::new();

    // Act
    let run = home.run(&["hash-password"], Some("secret\n")).await;

    // Assert
    run.assert_success();
    let lines = run.stdout_lines();
    assert_eq!(lines.len(), 1, "{run:#?}");
    let hash = lines[0];
    assert!(hash.starts_with(ARGON2ID_PREFIX), "{hash}");
    let mut work_area = Vec::new();
    assert!(tokengate::crypto::password::verify_with(hash, "secret", &mut work_area).unwrap());
    assert!(
        !tokengate::crypto::password::verify_with(hash, "secret\n", &mut work_area).unwrap(),
        "the trailing newline is not part of the password"
    );
}

// ---------------------------------------------------------------------------------------------
// user add | list | remove
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn user_add_stores_a_hashed_password_and_keeps_the_files_comments() {
    // Arrange
    let home = Home::new();
    let comments_before = comment_lines(&home.read("config/users.toml"));
    assert!(!comments_before.is_empty());

    // Act
    let added = home
        .run(&["user", "add", "bob", "--password-stdin"], Some("bob-pw"))
        .await;
    let listed = home.run(&["user", "list"], None).await;

    // Assert
    added.assert_success();
    listed.assert_success();
    assert_eq!(listed.stdout_lines(), vec!["admin", "bob"], "{listed:#?}");
    let users = home.read("config/users.toml");
    assert_eq!(
        comment_lines(&users),
        comments_before,
        "comments lost:\n{users}"
    );
    assert!(
        !users.contains("bob-pw"),
        "the password itself is stored:\n{users}"
    );
    let hash = toml_of(&users)["users"]["bob"]["password_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(hash.starts_with(ARGON2ID_PREFIX), "{hash}");
    assert!(tokengate::crypto::password::verify_with(&hash, "bob-pw", &mut Vec::new()).unwrap());
}

#[tokio::test]
async fn user_add_refuses_a_user_that_already_exists() {
    // Arrange
    let home = Home::new();
    home.run(&["user", "add", "bob", "--password-stdin"], Some("bob-pw"))
        .await
        .assert_success();
    let before = home.read("config/users.toml");

    // Act
    let again = home
        .run(
            &["user", "add", "bob", "--password-stdin"],
            Some("other-pw"),
        )
        .await;

    // Assert
    again.assert_failure();
    assert!(again.stderr.contains("already exists"), "{again:#?}");
    assert_eq!(home.read("config/users.toml"), before, "the file changed");
}

#[tokio::test]
async fn user_remove_deletes_the_user_and_keeps_the_files_comments() {
    // Arrange
    let home = Home::new();
    let comments_before = comment_lines(&home.read("config/users.toml"));
    home.run(&["user", "add", "bob", "--password-stdin"], Some("bob-pw"))
        .await
        .assert_success();

    // Act
    let removed = home.run(&["user", "remove", "bob"], None).await;
    let listed = home.run(&["user", "list"], None).await;

    // Assert
    removed.assert_success();
    listed.assert_success();
    assert_eq!(listed.stdout_lines(), vec!["admin"], "{listed:#?}");
    let users = home.read("config/users.toml");
    assert!(toml_of(&users)["users"].get("bob").is_none(), "{users}");
    assert_eq!(
        comment_lines(&users),
        comments_before,
        "comments lost:\n{users}"
    );
}

#[tokio::test]
async fn user_and_client_disable_and_enable_edit_the_files_and_a_running_server_follows() {
    // Arrange
    let home = Home::new();
    let server = serve(&home).await;
    server.demo_login().await.assert_tokens(3600, "PRODUCTION");

    // Act + Assert: the user. Polling logins would count as failed logins and lock the
    // account, so wait for the server to report the reload instead.
    let reloads = server.reloads();
    home.run(&["user", "disable", DEMO_USER], None)
        .await
        .assert_success();
    let users = home.read("config/users.toml");
    assert_eq!(
        toml_of(&users)["users"][DEMO_USER]["disabled"].as_bool(),
        Some(true),
        "{users}"
    );
    assert_eq!(
        home.run(&["user", "list"], None).await.stdout_lines(),
        vec!["admin\tdisabled"]
    );
    server.wait_for_reload_after(reloads).await;
    server.demo_login().await.assert_error(400, "invalid_grant");
    let reloads = server.reloads();
    home.run(&["user", "enable", DEMO_USER], None)
        .await
        .assert_success();
    assert!(toml_of(&home.read("config/users.toml"))["users"][DEMO_USER]
        .get("disabled")
        .is_none());
    server.wait_for_reload_after(reloads).await;
    server.demo_login().await.assert_tokens(3600, "PRODUCTION");

    // The client.
    home.run(&["client", "disable", DEMO_CLIENT_ID], None)
        .await
        .assert_success();
    poll_until(|| server.demo_login(), |reply| reply.status == 401)
        .await
        .assert_error(401, "invalid_client");
    home.run(&["client", "enable", DEMO_CLIENT_ID], None)
        .await
        .assert_success();
    poll_until(|| server.demo_login(), |reply| reply.status == 200)
        .await
        .assert_tokens(3600, "PRODUCTION");
    let missing = home.run(&["client", "disable", "nobody"], None).await;
    missing.assert_failure();
    assert!(
        missing.stderr.contains("no client named `nobody`"),
        "{missing:#?}"
    );
}

#[tokio::test]
async fn user_and_client_import_copy_another_file_into_the_configured_files() {
    // Arrange
    let home = Home::new();
    let other = home.path().join("other-users.toml");
    let hash = tokengate::crypto::password::hash_password(
        "carol-pw",
        &tokengate::config::PasswordHashingSettings {
            argon2_memory_kib: 19_456,
            argon2_iterations: 2,
            argon2_parallelism: 1,
            workers: 1,
            queue_capacity: 1,
        },
    )
    .unwrap();
    std::fs::write(
        &other,
        format!(
            "[users.carol]\npassword_hash = \"{hash}\"\n\n[users.admin]\npassword_hash = \"{hash}\"\n\
             \n[users.dave]\npassword_hash = \"{hash}\"\ndisabled = true\n"
        ),
    )
    .unwrap();

    // Act
    let imported = home
        .run(&["user", "import", other.to_str().unwrap()], None)
        .await;
    let listed = home.run(&["user", "list"], None).await;

    // Assert: admin was there already and keeps its own password.
    imported.assert_success();
    assert!(
        imported.stderr.contains("skipped user `admin`"),
        "{imported:#?}"
    );
    assert!(
        imported.stderr.contains("imported 2 user(s)"),
        "{imported:#?}"
    );
    assert_eq!(
        listed.stdout_lines(),
        vec!["admin", "carol", "dave\tdisabled"]
    );
    let server = serve(&home).await;
    server.demo_login().await.assert_tokens(3600, "PRODUCTION");
    server
        .password_grant(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, "carol", "carol-pw")
        .await
        .assert_tokens(3600, "PRODUCTION");
}

/// Repeats `request` until `done` holds for its reply or PICKUP_DEADLINE passes.
pub(crate) async fn poll_until<F: std::future::Future<Output = Reply>>(
    mut request: impl FnMut() -> F,
    done: impl Fn(&Reply) -> bool,
) -> Reply {
    let deadline = Instant::now() + PICKUP_DEADLINE;
    loop {
        let reply = request().await;
        if done(&reply) || Instant::now() > deadline {
            return reply;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn user_remove_of_a_missing_user_fails() {
    // Arrange
    let home = Home::new();
    let before = home.read("config/users.toml");

    // Act
    let run = home.run(&["user", "remove", "nobody"], None).await;

    // Assert
    run.assert_failure();
    assert!(run.stderr.contains("nobody"), "{run:#?}");
    assert_eq!(home.read("config/users.toml"), before, "the file changed");
}

#[tokio::test]
async fn a_running_server_picks_up_a_user_added_with_the_cli() {
    // Arrange: polling logins for a name that does not exist yet would lock it (lockout counts
    // unknown names too), so this test turns the lockout off.
    let home = Home::new();
    home.edit(
        "config/identity.toml",
        "max_failed_login_attempts = 5",
        "max_failed_login_attempts = 0",
    );
    let server = serve(&home).await;
    let unknown = server
        .password_grant(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, "bob", "bob-pw")
        .await;
    unknown.assert_error(400, "invalid_grant");

    // Act
    home.run(&["user", "add", "bob", "--password-stdin"], Some("bob-pw"))
        .await
        .assert_success();
    let reply = server
        .poll_password_grant(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, "bob", "bob-pw")
        .await;

    // Assert
    reply.assert_tokens(3600, "PRODUCTION");
}

// ---------------------------------------------------------------------------------------------
// client add | list | remove
// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn client_add_prints_a_generated_secret_once_and_stores_only_its_sha256_hash() {
    // Arrange
    let home = Home::new();
    let comments_before = comment_lines(&home.read("config/clients.toml"));

    // Act
    let run = home
        .run(
            &[
                "client",
                "add",
                "my-app",
                "--scopes",
                "PRODUCTION",
                "--grant-types",
                "password refresh_token",
            ],
            None,
        )
        .await;

    // Assert
    run.assert_success();
    let lines = run.stdout_lines();
    assert_eq!(lines.len(), 1, "the secret alone on stdout: {run:#?}");
    let secret = lines[0];
    assert_eq!(secret.len(), 43, "{secret}");
    assert!(
        secret
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
        "not base64url: {secret}"
    );
    assert!(
        !run.stderr.contains(secret),
        "the secret went to stderr too: {run:#?}"
    );
    let clients = home.read("config/clients.toml");
    assert!(
        !clients.contains(secret),
        "the secret itself is stored:\n{clients}"
    );
    let entry = &toml_of(&clients)["clients"]["my-app"];
    assert!(
        entry["secret_hash"]
            .as_str()
            .unwrap()
            .starts_with("$sha256$"),
        "{clients}"
    );
    assert_eq!(
        entry["grant_types"],
        toml_of("v = [\"password\", \"refresh_token\"]")["v"]
    );
    assert_eq!(entry["scopes"], toml_of("v = [\"PRODUCTION\"]")["v"]);
    assert_eq!(
        comment_lines(&clients),
        comments_before,
        "comments lost:\n{clients}"
    );
}

#[tokio::test]
async fn a_running_server_gives_tokens_to_a_client_added_with_the_cli() {
    // Arrange
    let home = Home::new();
    let server = serve(&home).await;

    // Act
    let added = home
        .run(
            &[
                "client",
                "add",
                "my-app",
                "--scopes",
                "PRODUCTION",
                "--grant-types",
                "password refresh_token",
            ],
            None,
        )
        .await;
    added.assert_success();
    let secret = added.stdout.trim().to_owned();
    let reply = server
        .poll_password_grant("my-app", &secret, DEMO_USER, DEMO_PASSWORD)
        .await;

    // Assert
    let (_, refresh) = reply.assert_tokens(3600, "PRODUCTION");
    let refresh = refresh.expect("refresh_token is among the client's grant types");
    let refreshed = server
        .post_token(
            "my-app",
            &secret,
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        )
        .await;
    refreshed.assert_tokens(3600, "PRODUCTION");
}

#[tokio::test]
async fn client_add_with_secret_stdin_stores_an_argon2id_hash_of_that_secret() {
    // Arrange
    let home = Home::new();

    // Act
    let run = home
        .run(
            &["client", "add", "x", "--secret-stdin"],
            Some("operator chosen\n"),
        )
        .await;

    // Assert
    run.assert_success();
    assert!(!run.stdout.contains("operator chosen"), "{run:#?}");
    let clients = home.read("config/clients.toml");
    assert!(!clients.contains("operator chosen"), "{clients}");
    let hash = toml_of(&clients)["clients"]["x"]["secret_hash"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(hash.starts_with("$argon2id$"), "{hash}");
    assert!(
        tokengate::crypto::password::verify_with(&hash, "operator chosen", &mut Vec::new())
            .unwrap()
    );
}

#[tokio::test]
async fn client_add_refuses_an_unknown_grant_type() {
    // Arrange
    let home = Home::new();
    let before = home.read("config/clients.toml");

    // Act
    let run = home
        .run(
            &["client", "add", "bad-app", "--grant-types", "implicit"],
            None,
        )
        .await;

    // Assert
    run.assert_failure();
    assert!(run.stderr.contains("implicit"), "{run:#?}");
    assert_eq!(home.read("config/clients.toml"), before, "the file changed");
}

#[tokio::test]
async fn client_list_shows_every_client_id() {
    // Arrange
    let home = Home::new();
    home.run(&["client", "add", "my-app", "--scopes", "PRODUCTION"], None)
        .await
        .assert_success();

    // Act
    let run = home.run(&["client", "list"], None).await;

    // Assert
    run.assert_success();
    let ids: Vec<&str> = run
        .stdout_lines()
        .into_iter()
        .map(|line| line.split('\t').next().unwrap())
        .collect();
    assert_eq!(ids, vec!["my-app", DEMO_CLIENT_ID], "{run:#?}");
}

#[tokio::test]
async fn client_remove_deletes_the_client_and_keeps_the_files_comments() {
    // Arrange
    let home = Home::new();
    let comments_before = comment_lines(&home.read("config/clients.toml"));
    home.run(&["client", "add", "my-app", "--scopes", "PRODUCTION"], None)
        .await
        .assert_success();

    // Act
    let removed = home.run(&["client", "remove", "my-app"], None).await;
    let listed = home.run(&["client", "list"], None).await;
    let missing = home.run(&["client", "remove", "my-app"], None).await;

    // Assert
    removed.assert_success();
    listed.assert_success();
    assert_eq!(listed.stdout_lines().len(), 1, "{listed:#?}");
    assert!(listed.stdout.starts_with(DEMO_CLIENT_ID), "{listed:#?}");
    let clients = home.read("config/clients.toml");
    assert!(
        toml_of(&clients)["clients"].get("my-app").is_none(),
        "{clients}"
    );
    assert_eq!(
        comment_lines(&clients),
        comments_before,
        "comments lost:\n{clients}"
    );
    missing.assert_failure();
}

#[tokio::test]
async fn keys_rotate_adds_a_key_that_a_running_server_publishes_and_signs_with() {
    // Arrange: a server whose demo client gets JWT access tokens.
    let home = Home::new();
    home.edit(
        "config/clients.toml",
        "scopes = [\"PRODUCTION\", \"SANDBOX\"]",
        "scopes = [\"PRODUCTION\", \"SANDBOX\"]\ntoken_format = \"jwt\"",
    );
    let server = serve(&home).await;
    let jwks = server.get("/jwks").await;
    assert_eq!(
        jwks.body["keys"].as_array().unwrap().len(),
        1,
        "{}",
        jwks.text
    );
    let first_kid = jwks.body["keys"][0]["kid"].as_str().unwrap().to_owned();

    // Act
    let rotated = home.run(&["keys", "rotate"], None).await;
    let listed = home.run(&["keys", "list"], None).await;

    // Assert
    rotated.assert_success();
    assert!(rotated.stderr.contains("signing key"), "{rotated:#?}");
    listed.assert_success();
    assert_eq!(listed.stdout_lines().len(), 2, "{listed:#?}");
    assert!(
        listed.stdout_lines()[0].starts_with(&first_kid),
        "{listed:#?}"
    );
    let new_kid = listed.stdout_lines()[1]
        .split('\t')
        .next()
        .unwrap()
        .to_owned();
    let mut published = Vec::new();
    for _ in 0..100 {
        let jwks = server.get("/jwks").await;
        published = jwks.body["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|key| key["kid"].as_str().unwrap().to_owned())
            .collect();
        if published.len() == 2 {
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    assert!(
        published.contains(&first_kid) && published.contains(&new_kid),
        "{published:?}"
    );
    let token = server
        .poll_password_grant(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_USER, DEMO_PASSWORD)
        .await;
    let access = token.str("access_token");
    let header = jsonwebtoken::decode_header(access).unwrap();
    assert_eq!(header.kid.as_deref(), Some(new_kid.as_str()));
}

#[tokio::test]
async fn client_add_with_introspect_makes_a_resource_server() {
    // Arrange
    let home = Home::new();
    let server = serve(&home).await;

    // Act
    let added = home
        .run(
            &[
                "client",
                "add",
                "api-gateway",
                "--introspect",
                "--grant-types",
                "",
            ],
            None,
        )
        .await;

    // Assert
    added.assert_success();
    assert!(home
        .read("config/clients.toml")
        .contains("introspect = true"));
    let secret = added.stdout.trim().to_owned();
    let token = server
        .poll_password_grant(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, DEMO_USER, DEMO_PASSWORD)
        .await;
    let access = token.str("access_token").to_owned();
    let mut reply = None;
    for _ in 0..100 {
        let response = server
            .client
            .post(server.url("/introspect"))
            .basic_auth("api-gateway", Some(&secret))
            .form(&[("token", access.as_str())])
            .send()
            .await
            .unwrap();
        let read = Reply::read(response).await;
        if read.status == 200 {
            reply = Some(read);
            break;
        }
        tokio::time::sleep(POLL).await;
    }
    let reply = reply.expect("the new resource server was picked up");
    assert_eq!(reply.body["active"], true, "{}", reply.text);
    assert_eq!(reply.body["client_id"], DEMO_CLIENT_ID);
}

#[tokio::test]
async fn user_unlock_lifts_an_account_lock() {
    // Arrange: lock the demo user with five wrong passwords.
    let home = Home::new();
    let server = serve(&home).await;
    for _ in 0..5 {
        let reply = server
            .post_token(
                DEMO_CLIENT_ID,
                DEMO_CLIENT_SECRET,
                &[
                    ("grant_type", "password"),
                    ("username", DEMO_USER),
                    ("password", "nope"),
                ],
            )
            .await;
        reply.assert_error(400, "invalid_grant");
    }
    let login = [
        ("grant_type", "password"),
        ("username", DEMO_USER),
        ("password", DEMO_PASSWORD),
    ];
    server
        .post_token(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, &login)
        .await
        .assert_error(400, "invalid_grant");

    // Act
    let unlocked = home.run(&["user", "unlock", DEMO_USER], None).await;
    let again = home.run(&["user", "unlock", DEMO_USER], None).await;

    // Assert
    unlocked.assert_success();
    assert!(unlocked.stderr.contains("unlocked"), "{unlocked:#?}");
    again.assert_success();
    assert!(again.stderr.contains("no failed logins"), "{again:#?}");
    server
        .post_token(DEMO_CLIENT_ID, DEMO_CLIENT_SECRET, &login)
        .await
        .assert_tokens(3600, "default");
}

#[tokio::test]
async fn concurrent_cli_edits_do_not_lose_one_another() {
    // Arrange
    let home = Home::new();
    let names: Vec<String> = (0..6).map(|i| format!("user{i}")).collect();

    // Act: six `user add` processes at once.
    let args: Vec<[&str; 4]> = names
        .iter()
        .map(|name| ["user", "add", name.as_str(), "--password-stdin"])
        .collect();
    let runs = futures::future::join_all(args.iter().map(|args| home.run(args, Some("pw")))).await;

    // Assert
    for run in &runs {
        run.assert_success();
    }
    let listed = home.run(&["user", "list"], None).await;
    listed.assert_success();
    for name in &names {
        assert!(
            listed.stdout_lines().contains(&name.as_str()),
            "{name} lost: {listed:#?}"
        );
    }
}

/// One refresh on `server`'s connection pool; `None` when the server is gone.
async fn try_refresh(server: &Server, refresh_token: &str) -> Option<Reply> {
    let response = server
        .client
        .post(server.url("/token"))
        .basic_auth(DEMO_CLIENT_ID, Some(DEMO_CLIENT_SECRET))
        .form(&[
            ("grant_type", "refresh_token"),
            ("refresh_token", refresh_token),
        ])
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .ok()?;
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.ok()?;
    Some(Reply {
        status,
        headers,
        body: serde_json::from_str(&text).unwrap_or(Value::Null),
        text,
    })
}

#[tokio::test]
async fn every_token_answered_200_survives_sigkill_under_load() {
    // Arrange: a refresh whose response the kill swallowed leaves the client holding the token
    // it sent, already spent; the reuse grace period is what lets it redeem that once more.
    let home = Home::new();
    home.edit(
        "config/identity.toml",
        "refresh_token_reuse_grace_period = 0",
        "refresh_token_reuse_grace_period = 120",
    );
    let added = home
        .run(
            &[
                "client",
                "add",
                "checker",
                "--introspect",
                "--grant-types",
                "",
            ],
            None,
        )
        .await;
    added.assert_success();
    let checker_secret = added.stdout.trim().to_owned();
    let mut server = serve(&home).await;
    let mut chains = Vec::new();
    for _ in 0..6 {
        let (_, refresh) = server.demo_login().await.assert_tokens(3600, "PRODUCTION");
        chains.push(refresh.unwrap());
    }

    for _ in 0..3 {
        // Act: every chain refreshes as fast as it can; the server is killed at a random
        // moment mid-flight.
        let kill_after =
            Duration::from_millis(rand::Rng::gen_range(&mut rand::thread_rng(), 100..900));
        let stop = std::sync::atomic::AtomicBool::new(false);
        let load = futures::future::join_all(chains.iter().map(|first| {
            let (server, stop) = (&server, &stop);
            async move {
                let mut last_refresh = first.clone();
                let mut last_access = None;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    match try_refresh(server, &last_refresh).await {
                        Some(reply) if reply.status == 200 => {
                            last_refresh = reply.str("refresh_token").to_owned();
                            last_access = Some(reply.str("access_token").to_owned());
                        }
                        _ => break,
                    }
                }
                (last_refresh, last_access)
            }
        }));
        let killer = async {
            tokio::time::sleep(kill_after).await;
            server.send_signal("KILL");
            stop.store(true, std::sync::atomic::Ordering::Relaxed);
        };
        let (results, ()) = tokio::join!(load, killer);
        let status = server.wait_for_exit(GRACE_PERIOD).await.unwrap();
        assert_eq!(status.code(), None, "killed by a signal: {status}");
        assert!(
            results.iter().any(|(_, access)| access.is_some()),
            "the load ran before the kill at {kill_after:?}"
        );

        // Assert: the store opens cleanly, every access token answered 200 is active and every
        // chain's last refresh token redeems.
        server = serve(&home).await;
        assert_eq!(server.get("/health").await.status, 200);
        chains.clear();
        for (last_refresh, last_access) in results {
            if let Some(access) = last_access {
                let response = server
                    .client
                    .post(server.url("/introspect"))
                    .basic_auth("checker", Some(&checker_secret))
                    .form(&[("token", access.as_str())])
                    .send()
                    .await
                    .unwrap();
                let introspected = Reply::read(response).await;
                assert_eq!(introspected.body["active"], true, "{}", introspected.text);
            }
            let reply = server.demo_refresh(&last_refresh).await;
            let (_, next) = reply.assert_tokens(3600, "PRODUCTION");
            chains.push(next.unwrap());
        }
    }
}

#[tokio::test]
async fn three_server_processes_on_one_postgres_behave_as_one_server() {
    // Arrange: three real `serve` processes, each with its own home and port offset, one
    // database. They share the same user and client files, as a cluster must.
    let Some(database) = TestDatabase::create("three_processes").await else {
        return;
    };
    let homes: Vec<Home> = (0..3).map(|_| Home::new()).collect();
    for home in &homes {
        home.edit(
            "config/identity.toml",
            "tokens = \"sqlite://data/tokens.db\"",
            &format!("tokens = \"{}\"", database.url),
        );
    }
    let mut nodes = Vec::new();
    for home in &homes {
        nodes.push(serve(home).await);
    }
    let (a, b, c) = (&nodes[0], &nodes[1], &nodes[2]);
    assert!(
        a.log().contains("every node must get the same files"),
        "{}",
        a.log()
    );

    // Act + Assert: issued on A, refreshed on B, revoked on C, refused on A.
    let (_, refresh) = a.demo_login().await.assert_tokens(3600, "PRODUCTION");
    let (_, refresh) = b
        .demo_refresh(&refresh.unwrap())
        .await
        .assert_tokens(3600, "PRODUCTION");
    let refresh = refresh.unwrap();
    let revoked = c
        .post_token_form(
            "/revoke",
            DEMO_CLIENT_ID,
            DEMO_CLIENT_SECRET,
            &[("token", refresh.as_str())],
        )
        .await;
    assert_eq!(revoked.status, 200, "{}", revoked.text);
    a.demo_refresh(&refresh)
        .await
        .assert_error(400, "invalid_grant");

    // The same refresh token on two processes at the same moment: exactly one succeeds.
    for _ in 0..5 {
        let (_, refresh) = a.demo_login().await.assert_tokens(3600, "PRODUCTION");
        let refresh = refresh.unwrap();
        let (first, second) = tokio::join!(b.demo_refresh(&refresh), c.demo_refresh(&refresh));
        let (won, lost) = if first.status == 200 {
            (first, second)
        } else {
            (second, first)
        };
        won.assert_tokens(3600, "PRODUCTION");
        lost.assert_error(400, "invalid_grant");
    }
}
