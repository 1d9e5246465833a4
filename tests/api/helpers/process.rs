//! The real `tokengate` binary, as an operator runs it: a TOKENGATE_HOME with a copy of the
//! shipped `config/`, CLI runs, and `tokengate serve` child processes waited on over `/health`.
//!
//! Every test gets its own home (so certs/, data/ and the user and client files resolve inside
//! it) and its own free port.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::helpers::{https_client, post_basic_form, project_root, Reply};

const TOKENGATE: &str = env!("CARGO_BIN_EXE_tokengate");

/// `[server] https_port` in the shipped config; the offset is added to it.
const SHIPPED_HTTPS_PORT: u16 = 8243;
/// `[server] shutdown_grace_period` in the shipped config.
pub(crate) const GRACE_PERIOD: Duration = Duration::from_secs(10);
/// `[stores] reload_interval` is 2 s; a change must be picked up well within this.
const PICKUP_DEADLINE: Duration = Duration::from_secs(10);
const HEALTH_DEADLINE: Duration = Duration::from_secs(30);
const CLI_DEADLINE: Duration = Duration::from_secs(60);
pub(crate) const POLL: Duration = Duration::from_millis(50);

/// The demo credentials the shipped config carries (see config/clients.toml and users.toml).
pub(crate) const DEMO_CLIENT_ID: &str = "wU62DjlyDBnq87GlBwplfqvmAbAa";
pub(crate) const DEMO_CLIENT_SECRET: &str = "ksdSdoefDDP7wpaElfqvmjDue";
pub(crate) const DEMO_USER: &str = "admin";
pub(crate) const DEMO_PASSWORD: &str = "admin";

/// A TOKENGATE_HOME holding a copy of the project's `config/` folder.
pub(crate) struct Home {
    dir: TempDir,
    starts: std::cell::Cell<usize>,
    /// `TOKENGATE_*` variables every command gets (all others are removed).
    env: std::cell::RefCell<Vec<(String, String)>>,
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
            env: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// Sets `name` (a `TOKENGATE_*` variable) for every command run from now on.
    pub(crate) fn set_env(&self, name: &str, value: &str) {
        self.env
            .borrow_mut()
            .push((name.to_owned(), value.to_owned()));
    }

    pub(crate) fn path(&self) -> &Path {
        self.dir.path()
    }

    pub(crate) fn file(&self, relative: &str) -> PathBuf {
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
    pub(crate) fn command(&self, args: &[&str]) -> Command {
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
        for (name, value) in self.env.borrow().iter() {
            command.env(name, value);
        }
        command
    }

    /// Runs `tokengate ARGS`, feeding `stdin`, and waits for it (bounded).
    pub(crate) async fn run(&self, args: &[&str], stdin: Option<&str>) -> Run {
        run_to_end(self.command(args), stdin).await
    }

    pub(crate) fn cert(&self) -> PathBuf {
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
    pub(crate) status: ExitStatus,
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
pub(crate) async fn run_to_end(mut command: Command, stdin: Option<&str>) -> Run {
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
pub(crate) fn signal(pid: u32, sig: &str) {
    let status = Command::new("kill")
        .arg(format!("-{sig}"))
        .arg(pid.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "kill -{sig} {pid} failed");
}

/// `[management] port` in the shipped config; the offset is added to it.
const SHIPPED_MANAGEMENT_PORT: u16 = 9000;

/// A port that was free a moment ago and can be reached as 8243 + offset, with the management
/// port of that offset free too: `serve` listens with SO_REUSEPORT, so a port another test's
/// server already holds would be shared silently instead of failing to bind.
pub(crate) fn free_port() -> u16 {
    for _ in 0..100 {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if port < SHIPPED_HTTPS_PORT {
            continue;
        }
        let Some(management) = (port - SHIPPED_HTTPS_PORT).checked_add(SHIPPED_MANAGEMENT_PORT)
        else {
            continue;
        };
        // One statement each: the first probe must be closed before the second binds.
        let wildcard_free = std::net::TcpListener::bind(("0.0.0.0", management)).is_ok();
        let loopback_free = std::net::TcpListener::bind(("127.0.0.1", management)).is_ok();
        if wildcard_free && loopback_free {
            return port;
        }
    }
    panic!("no free port at or above {SHIPPED_HTTPS_PORT}");
}

pub(crate) fn offset_of(port: u16) -> String {
    (port - SHIPPED_HTTPS_PORT).to_string()
}

/// How `serve` is told its port offset.
#[derive(Clone, Copy)]
pub(crate) enum OffsetFrom {
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
    pub(crate) port: u16,
    log: PathBuf,
    pub(crate) client: reqwest::Client,
}

/// Starts `tokengate serve` in `home` with the offset given by `--port-offset`.
pub(crate) async fn serve(home: &Home) -> Server {
    serve_with(home, OffsetFrom::Flag).await
}

/// Starts `tokengate serve` on a free port and waits for `GET /health` to answer 200 over TLS
/// with the certificate in `home/certs/`. Retries on another port if the process exits early
/// (e.g. the port was taken in the meantime).
pub(crate) async fn serve_with(home: &Home, offset_from: OffsetFrom) -> Server {
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

/// Starts `tokengate serve --takeover` on `port` (another process of the same home may listen
/// there already: an upgrade, so once listening it takes the pid file over and sends the
/// process holding it SIGTERM) and waits until this process
/// listens (its log says so) and `/health` answers 200 there.
pub(crate) async fn serve_on(home: &Home, port: u16) -> Server {
    serve_on_with(home, port, &[]).await
}

/// [`serve_on`] with these environment variables too (e.g. another `TOKENGATE_CONFIG`).
pub(crate) async fn serve_on_with(home: &Home, port: u16, env: &[(&str, &str)]) -> Server {
    let mut command = home.command(&["serve", "--takeover", "--port-offset", &offset_of(port)]);
    command.envs(env.iter().copied());
    let log = home.next_log();
    let file = std::fs::File::create(&log).unwrap();
    command
        .stdin(Stdio::null())
        .stdout(Stdio::from(file.try_clone().unwrap()))
        .stderr(Stdio::from(file));
    let mut server = Server {
        child: command.spawn().unwrap(),
        port,
        log,
        client: reqwest::Client::new(),
    };
    let deadline = Instant::now() + HEALTH_DEADLINE;
    while !server.log().contains("tokengate listening") {
        if let Some(status) = server.child.try_wait().unwrap() {
            panic!("exited with {status} before listening:\n{}", server.log());
        }
        assert!(
            Instant::now() < deadline,
            "not listening within {HEALTH_DEADLINE:?}:\n{}",
            server.log()
        );
        tokio::time::sleep(POLL).await;
    }
    match server.wait_until_healthy(&home.cert()).await {
        Ok(client) => server.client = client,
        Err(Startup::Exited(why) | Startup::TimedOut(why)) => {
            panic!("port {port}: {why}\n{}", server.log())
        }
    }
    server
}

impl Server {
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn url(&self, path: &str) -> String {
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

    pub(crate) async fn get(&self, path: &str) -> Reply {
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

    pub(crate) async fn post_token(
        &self,
        client_id: &str,
        secret: &str,
        form: &[(&str, &str)],
    ) -> Reply {
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
    pub(crate) async fn poll_password_grant(
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
    pub(crate) fn reloads(&self) -> usize {
        self.log().matches(" reloaded").count()
    }

    /// Waits until the server reports more reloads than `before` (bounded by PICKUP_DEADLINE).
    pub(crate) async fn wait_for_reload_after(&self, before: usize) {
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

    pub(crate) fn send_signal(&self, sig: &str) {
        signal(self.child.id(), sig);
    }

    /// Waits for the process to exit; `None` if it still runs after `within`.
    pub(crate) async fn wait_for_exit(&mut self, within: Duration) -> Option<ExitStatus> {
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

/// The lines of a file that are comments, in order.
pub(crate) fn comment_lines(text: &str) -> Vec<String> {
    text.lines()
        .filter(|line| line.trim_start().starts_with('#'))
        .map(str::to_owned)
        .collect()
}

pub(crate) fn toml_of(text: &str) -> toml::Value {
    text.parse::<toml::Value>().unwrap()
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
