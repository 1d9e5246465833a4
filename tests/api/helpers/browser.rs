//! A real browser for the pages people see: headless Chromium driven through WebDriver
//! (Debian's `chromium` and `chromium-driver`; fantoccini is the client). Each [`Browser`] runs a
//! chromedriver of its own, in a process group of its own on a port it picks, and a Chromium
//! profile in a temp folder of its own; dropping it kills that process group, also when the test panics.
//! Without the binaries, [`Browser::start`] prints one `skipped:` line and the test returns.
//!
//! [`Loopback`] plays a native app's loopback redirect target (RFC 8252 §7.3): it records the
//! requests the browser is redirected to and answers each with a small page.

use std::collections::HashMap;
use std::io::Write as _;
use std::os::unix::process::CommandExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use fantoccini::elements::Element;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{json, Value};
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// Debian's paths; `TOKENGATE_CHROMIUM` and `TOKENGATE_CHROMEDRIVER` name others.
pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";

/// How long chromedriver, a page, an element or a redirect may take on a loaded machine.
pub const BROWSER_WAIT: Duration = Duration::from_secs(20);
/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(50);

/// Every session's flags: no sandbox (the tests may run as root, where it refuses to start),
/// nothing fetched from the network, and the test servers' self-signed certificates accepted.
const CHROMIUM_FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--ignore-certificate-errors",
];

/// `default`, or the path in `variable`, if that file exists.
fn binary(variable: &str, default: &str) -> Option<PathBuf> {
    let path = std::env::var_os(variable).map_or_else(|| PathBuf::from(default), PathBuf::from);
    path.is_file().then_some(path)
}

/// A chromedriver process, the leader of its own process group (which the Chromium it starts
/// joins): dropping it kills the whole group.
struct Driver {
    child: Child,
    log: PathBuf,
}

impl Driver {
    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Starts chromedriver on a port of the system's choice, in a process group of its own.
    fn spawn(chromedriver: &Path, log: PathBuf) -> Self {
        let child = Command::new(chromedriver)
            .arg("--port=0")
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|err| panic!("{} does not start: {err}", chromedriver.display()));
        Self { child, log }
    }

    /// Waits until chromedriver (started with `--port=0`) logs the port it listens on; `Err`
    /// with its log if it exited first.
    async fn port(&mut self) -> Result<u16, String> {
        const STARTED: &str = "started successfully on port ";
        let deadline = tokio::time::Instant::now() + BROWSER_WAIT;
        loop {
            let log = self.log();
            if let Some((_, after)) = log.split_once(STARTED) {
                let digits = after.split(|c: char| !c.is_ascii_digit()).next();
                if let Some(port) = digits.and_then(|digits| digits.parse().ok()) {
                    return Ok(port);
                }
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                return Err(format!("chromedriver exited ({status}):\n{log}"));
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "chromedriver does not say it listens:\n{log}"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        let group = i32::try_from(self.child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        if let Some(group) = group {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A headless Chromium session. Fields drop in order: the WebDriver client, then chromedriver
/// with its browser, then the profile folder they used.
pub struct Browser {
    pub client: Client,
    driver: Driver,
    profile: TempDir,
}

/// WebDriver's Get Computed Label: the element's accessible name, as a screen reader announces
/// it (not among fantoccini's commands; sent through its extension point).
#[derive(Debug)]
struct GetComputedLabel(String);

impl WebDriverCompatibleCommand for GetComputedLabel {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        let session = session_id.unwrap_or_default();
        base_url.join(&format!(
            "session/{session}/element/{}/computedlabel",
            self.0
        ))
    }

    fn method_and_body(&self, _request_url: &url::Url) -> (axum::http::Method, Option<String>) {
        (axum::http::Method::GET, None)
    }
}

impl Browser {
    /// A new session in a fresh profile, or `None` after printing one `skipped:` line when
    /// Chromium or chromedriver is not installed.
    pub async fn start() -> Option<Self> {
        let (Some(chromium), Some(chromedriver)) = (
            binary("TOKENGATE_CHROMIUM", CHROMIUM),
            binary("TOKENGATE_CHROMEDRIVER", CHROMEDRIVER),
        ) else {
            // libtest names each test's thread after the test (`module::name`).
            let current = std::thread::current();
            let test = current.name().filter(|name| *name != "main");
            // Straight to stderr: the test harness would swallow a println! of a passing test.
            let _ = writeln!(
                std::io::stderr(),
                "skipped: {} (no Chromium: install chromium chromium-driver, or set \
                 TOKENGATE_CHROMIUM and TOKENGATE_CHROMEDRIVER)",
                test.unwrap_or("a browser test")
            );
            return None;
        };
        let profile = tempfile::tempdir().unwrap();
        // With `--port=0` chromedriver takes a free port for one address family and then
        // binds the same number for the other, where another test's listener may hold it: it
        // exits with ERR_ADDRESS_IN_USE, and a new start gets another port.
        let mut attempt = 0;
        let (driver, port) = loop {
            attempt += 1;
            let log = profile.path().join(format!("chromedriver-{attempt}.log"));
            let mut driver = Driver::spawn(&chromedriver, log);
            match driver.port().await {
                Ok(port) => break (driver, port),
                Err(log) if attempt < 5 && log.contains("ERR_ADDRESS_IN_USE") => {}
                Err(log) => panic!("{log}"),
            }
        };

        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|&flag| flag.into()).collect();
        args.push(user_data_dir_flag(profile.path()));
        let Value::Object(capabilities) = json!({
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": { "binary": chromium, "args": args },
        }) else {
            unreachable!("a JSON object literal")
        };
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|err| panic!("no Chromium session: {err}\n{}", driver.log()));
        Some(Self {
            client,
            driver,
            profile,
        })
    }

    /// Ends the session (chromedriver quits Chromium and waits for it), then drops the rest.
    pub async fn close(self) {
        let _ = self.client.clone().close().await;
    }

    pub async fn goto(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// The current page's address.
    pub async fn url(&self) -> url::Url {
        self.client.current_url().await.unwrap()
    }

    /// Waits until the current page's address starts with `prefix`.
    pub async fn wait_for_url_starting_with(&self, prefix: &str) -> url::Url {
        let deadline = tokio::time::Instant::now() + BROWSER_WAIT;
        loop {
            let url = self.url().await;
            if url.as_str().starts_with(prefix) {
                return url;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the browser stays at {url}, not {prefix}…"
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits for an element, for as long as a page may take.
    pub async fn wait_for(&self, locator: Locator<'_>) -> Element {
        let description = format!("{locator:?}");
        self.client
            .wait()
            .at_most(BROWSER_WAIT)
            .every(POLL)
            .for_element(locator)
            .await
            .unwrap_or_else(|err| panic!("no element {description}: {err}"))
    }

    /// The input or text area whose `<label>` reads `label` (the label's `for` names its id),
    /// checked to be its accessible name too: what a screen reader announces.
    pub async fn input_labelled(&self, label: &str) -> Element {
        let xpath = format!(
            "//*[self::input or self::textarea][@id = //label[normalize-space(.) = '{label}']/@for]"
        );
        let input = self.wait_for(Locator::XPath(&xpath)).await;
        assert_eq!(
            self.computed_label(&input).await,
            label,
            "the accessible name of the input labelled {label:?}"
        );
        input
    }

    /// The button that reads `text`.
    pub async fn button(&self, text: &str) -> Element {
        let xpath = format!("//button[normalize-space(.) = '{text}']");
        self.wait_for(Locator::XPath(&xpath)).await
    }

    /// The radio button or checkbox inside the `<label>` that reads `label`, checked to be its
    /// accessible name too.
    pub async fn choice_labelled(&self, label: &str) -> Element {
        let xpath = format!("//label[normalize-space(.) = '{label}']//input");
        let input = self.wait_for(Locator::XPath(&xpath)).await;
        assert_eq!(
            self.computed_label(&input).await,
            label,
            "the accessible name of the choice labelled {label:?}"
        );
        input
    }

    /// Selects the radio button or ticks the checkbox labelled `label` by clicking its label, as
    /// a person would (a ticked checkbox is left as it is).
    pub async fn choose(&self, label: &str) {
        let input = self.choice_labelled(label).await;
        if !input.is_selected().await.unwrap() {
            let xpath = format!("//label[normalize-space(.) = '{label}']");
            let label_element = self.wait_for(Locator::XPath(&xpath)).await;
            label_element.click().await.unwrap();
        }
        assert!(
            input.is_selected().await.unwrap(),
            "clicking the label {label:?} does not select its input"
        );
    }

    /// The link that reads `text`.
    pub async fn link(&self, text: &str) -> Element {
        let xpath = format!("//a[normalize-space(.) = '{text}']");
        self.wait_for(Locator::XPath(&xpath)).await
    }

    /// Waits until the page's `<h1>` reads `text` (after a click that loads a page).
    pub async fn wait_for_heading(&self, text: &str) {
        let deadline = tokio::time::Instant::now() + BROWSER_WAIT;
        loop {
            let heading = match self.client.find(Locator::Css("h1")).await {
                Ok(heading) => heading.text().await.unwrap_or_default(),
                Err(_) => String::new(),
            };
            if heading == text {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the page's heading stays {heading:?}, not {text:?} (at {})",
                self.url().await
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// The text of the element with `id`, as the page shows it.
    pub async fn text_of(&self, id: &str) -> String {
        let element = self.wait_for(Locator::Id(id)).await;
        element.text().await.unwrap()
    }

    /// The element's accessible name (WebDriver Get Computed Label).
    pub async fn computed_label(&self, element: &Element) -> String {
        let label = self
            .client
            .issue_cmd(GetComputedLabel(element.element_id().to_string()))
            .await
            .unwrap();
        label.as_str().unwrap().to_owned()
    }

    /// The WebDriver id of the element that has keyboard focus.
    pub async fn focused(&self) -> String {
        self.client
            .active_element()
            .await
            .unwrap()
            .element_id()
            .to_string()
    }

    /// Runs `script` (a function body) in the page and returns its value. WebDriver's scripts
    /// run although the pages' CSP allows none (`default-src 'none'`): CSP binds the page only.
    pub async fn script(&self, script: &str) -> Value {
        self.client.execute(script, vec![]).await.unwrap()
    }

    /// The viewport's size in CSS pixels.
    pub async fn viewport(&self) -> (i64, i64) {
        let size = self
            .script("return [window.innerWidth, window.innerHeight];")
            .await;
        (size[0].as_i64().unwrap(), size[1].as_i64().unwrap())
    }

    /// Sizes the window so that the viewport is `width` × `height` CSS pixels.
    pub async fn set_viewport(&self, width: u32, height: u32) {
        self.client.set_window_size(width, height).await.unwrap();
        let (inner_width, inner_height) = self.viewport().await;
        let grow = |want: u32, have: i64| u32::try_from(2 * i64::from(want) - have).unwrap();
        if (inner_width, inner_height) != (i64::from(width), i64::from(height)) {
            self.client
                .set_window_size(grow(width, inner_width), grow(height, inner_height))
                .await
                .unwrap();
        }
        assert_eq!(
            self.viewport().await,
            (i64::from(width), i64::from(height)),
            "the window cannot be sized to that viewport"
        );
    }
}

fn user_data_dir_flag(profile: &Path) -> String {
    format!("--user-data-dir={}", profile.join("chromium").display())
}

/// A loopback redirect target on `127.0.0.1`: the target (path and query) of every request for
/// `/callback` is kept, and each request gets a small page.
pub struct Loopback {
    pub port: u16,
    targets: mpsc::UnboundedReceiver<String>,
    server: JoinHandle<()>,
}

const LANDED_PAGE: &str =
    "<!doctype html><title>Signed in</title><p>You can return to the app now.</p>";

impl Loopback {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (sender, targets) = mpsc::unbounded_channel();
        let server = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(answer(stream, sender.clone()));
            }
        });
        Self {
            port,
            targets,
            server,
        }
    }

    /// The redirect URI to ask for: it matches the fixture's `http://127.0.0.1/callback`
    /// whatever the port.
    pub fn redirect_uri(&self) -> String {
        format!("http://127.0.0.1:{}/callback", self.port)
    }

    /// Waits for the next redirect to `/callback` and returns its query parameters.
    pub async fn next_redirect(&mut self) -> HashMap<String, String> {
        let target = tokio::time::timeout(BROWSER_WAIT, self.targets.recv())
            .await
            .expect("the browser is redirected to the app")
            .unwrap();
        let query = target.split_once('?').map_or("", |(_, query)| query);
        url::form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect()
    }

    /// Asserts that no redirect to `/callback` arrived (beyond those already taken).
    pub fn assert_no_redirect(&mut self) {
        if let Ok(target) = self.targets.try_recv() {
            panic!("unexpected redirect to the app: {target}");
        }
    }
}

impl Drop for Loopback {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// Reads one request's head, passes a `/callback` target on, answers and closes.
async fn answer(mut stream: TcpStream, targets: mpsc::UnboundedSender<String>) {
    let mut head = Vec::new();
    let mut buf = [0u8; 2048];
    let read_head = async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16 * 1024 {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return false,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        true
    };
    // A speculative connection that never sends a request just times out.
    if !matches!(
        tokio::time::timeout(BROWSER_WAIT, read_head).await,
        Ok(true)
    ) {
        return;
    }
    let head = String::from_utf8_lossy(&head);
    let target = head.split(' ').nth(1).unwrap_or_default().to_owned();
    let found = target == "/callback" || target.starts_with("/callback?");
    if found {
        let _ = targets.send(target);
    }
    let (status, body) = if found {
        ("200 OK", LANDED_PAGE)
    } else {
        ("404 Not Found", "")
    };
    let response = format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/html; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}
