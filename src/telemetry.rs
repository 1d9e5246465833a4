//! Logging setup. Secrets never reach a log: they are `SecretString`s or redacted types, and
//! the request id ([`in_request`]) is the only request value a line carries besides named,
//! non-secret fields. Every field and message goes through [`EscapedFields`] (text, laid out
//! by [`TextLines`]) or [`JsonFields`] (JSON lines), so a value from a request cannot
//! start a forged line or send terminal escapes; [`cut`] bounds how much of such a value a line
//! carries. `[logging]` (format and level) applies once the config is read, and again on a
//! config reload, through [`reconfigure`].

use std::fmt::{self, Write as _};
use std::future::Future;
use std::io::Write as _;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use tracing::field::{Field, Visit};
use tracing::Subscriber;
use tracing_subscriber::field::RecordFields;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::FormatTime as _;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::layer::{Layered, SubscriberExt as _};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{reload, EnvFilter, Layer, Registry};

tokio::task_local! {
    /// The id of the request the current task serves, for its log lines. A task-local costs a
    /// pointer swap per poll; a tracing span around every request (registry slot, formatted
    /// fields, enter and exit per poll) cost ~5 % of a refresh grant's CPU.
    static REQUEST_ID: Arc<str>;
}

/// Runs `work` (a request's handling) with `id` as the request id of every line it logs.
pub async fn in_request<F: Future>(id: Arc<str>, work: F) -> F::Output {
    REQUEST_ID.scope(id, work).await
}

/// The request id of the current task, if it serves a request.
pub fn current_request_id() -> Option<Arc<str>> {
    REQUEST_ID.try_with(Arc::clone).ok()
}

/// `work`, to be spawned as a task of its own, logging under the current request's id.
pub fn in_current_request<F: Future>(work: F) -> impl Future<Output = F::Output> {
    let id = current_request_id();
    async move {
        match id {
            Some(id) => REQUEST_ID.scope(id, work).await,
            None => work.await,
        }
    }
}

/// The most characters of a request value (client id, user name) one log field shows.
pub const MAX_LOGGED_CHARS: usize = 128;

/// The filter when neither `[logging] level` nor `TOKENGATE_LOG` says otherwise.
pub const DEFAULT_LEVEL: &str = "info";

/// The variable whose filter wins over `[logging] level`.
const LOG_ENV: &str = "TOKENGATE_LOG";

/// `[logging] format`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One human-readable line per event (tracing-subscriber's layout).
    Text,
    /// One JSON object per line: `timestamp`, `level`, `target`, `message`, `fields`.
    Json,
}

/// `[logging]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingSettings {
    pub format: LogFormat,
    /// A filter directive (`info`, `warn,tokengate=debug`); `TOKENGATE_LOG` overrides it.
    pub level: String,
}

impl Default for LoggingSettings {
    fn default() -> Self {
        Self {
            format: LogFormat::Text,
            level: DEFAULT_LEVEL.to_owned(),
        }
    }
}

/// Parses a filter directive as `[logging] level` and `TOKENGATE_LOG` take it.
pub fn parse_filter(directive: &str) -> Result<EnvFilter, LogConfigError> {
    EnvFilter::builder()
        .parse(directive)
        .map_err(|err| LogConfigError::Filter(err.to_string()))
}

#[derive(Debug, thiserror::Error)]
pub enum LogConfigError {
    #[error("not a log filter: {0}")]
    Filter(String),
    #[error("the log settings could not be swapped: {0}")]
    Reload(#[from] reload::Error),
}

type FilteredRegistry = Layered<reload::Layer<EnvFilter, Registry>, Registry>;
type FormatLayer = Box<dyn Layer<FilteredRegistry> + Send + Sync>;

/// What [`reconfigure`] changes in the one process-wide subscriber.
struct LogControl {
    filter: reload::Handle<EnvFilter, Registry>,
    format: reload::Handle<FormatLayer, FilteredRegistry>,
    writer: LogWriter,
    ansi: bool,
    current: Mutex<LogFormat>,
}

/// The tracing subscriber is process-wide (one per process, set once), so its handle is too;
/// `None` until [`init`] ran (library users and tests that log elsewhere).
static CONTROL: OnceLock<LogControl> = OnceLock::new();

/// Logs to stderr; the filter comes from `TOKENGATE_LOG` (e.g. `debug`), default `info`,
/// text format, until [`reconfigure`] applies `[logging]`.
///
/// Lines are formatted by the code that logs and written by a thread of their own (see
/// [`LogWriter`]), so a request never waits for stderr. Keep the returned guard alive:
/// dropping it writes what is queued.
pub fn init() -> LogGuard {
    let filter = env_filter().unwrap_or_else(|| EnvFilter::new(DEFAULT_LEVEL));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let (writer, guard) = LogWriter::start();
    let (filter, filter_handle) = reload::Layer::new(filter);
    let (format, format_handle) =
        reload::Layer::new(format_layer(LogFormat::Text, writer.clone(), ansi));
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(format)
        .try_init()
        .is_ok();
    if installed {
        let _ = CONTROL.set(LogControl {
            filter: filter_handle,
            format: format_handle,
            writer,
            ansi,
            current: Mutex::new(LogFormat::Text),
        });
    }
    guard
}

/// Applies `[logging]` to the running process: the filter (unless `TOKENGATE_LOG` sets it)
/// and the format, from the next line on. Called when `serve` and the CLI have read the
/// config, and by a config reload. Does nothing before [`init`].
pub fn reconfigure(settings: &LoggingSettings) -> Result<(), LogConfigError> {
    let Some(control) = CONTROL.get() else {
        return Ok(());
    };
    let filter = match env_filter() {
        Some(filter) => filter,
        None => parse_filter(&settings.level)?,
    };
    control.filter.reload(filter)?;
    // `log` records (from rustls, sqlx) are dropped before tracing sees them above this level.
    log::set_max_level(match tracing::level_filters::LevelFilter::current() {
        tracing::level_filters::LevelFilter::OFF => log::LevelFilter::Off,
        tracing::level_filters::LevelFilter::ERROR => log::LevelFilter::Error,
        tracing::level_filters::LevelFilter::WARN => log::LevelFilter::Warn,
        tracing::level_filters::LevelFilter::INFO => log::LevelFilter::Info,
        tracing::level_filters::LevelFilter::DEBUG => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    });
    let mut current = control
        .current
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if *current != settings.format {
        control.format.reload(format_layer(
            settings.format,
            control.writer.clone(),
            control.ansi,
        ))?;
        *current = settings.format;
    }
    Ok(())
}

/// `TOKENGATE_LOG`'s filter, when it is set and valid.
fn env_filter() -> Option<EnvFilter> {
    let directive = std::env::var(LOG_ENV).ok()?;
    parse_filter(&directive).ok()
}

fn format_layer(format: LogFormat, writer: LogWriter, ansi: bool) -> FormatLayer {
    match format {
        LogFormat::Text => Box::new(
            tracing_subscriber::fmt::layer()
                .event_format(TextLines)
                .fmt_fields(EscapedFields)
                .with_writer(writer)
                .with_ansi(ansi),
        ),
        LogFormat::Json => Box::new(
            tracing_subscriber::fmt::layer()
                .event_format(JsonLines)
                .fmt_fields(JsonFields)
                .with_writer(writer)
                .with_ansi(false),
        ),
    }
}

/// Lines waiting for the writer thread.
#[derive(Default)]
struct Pending {
    bytes: Vec<u8>,
    /// Lines left out because stderr was not keeping up, not yet reported.
    dropped: u64,
    /// The writer thread waits for a first line (nothing was logged for 20 ms): the next
    /// line wakes it, so a quiet server's lines appear at once.
    idle: bool,
    stopping: bool,
    /// The writer thread has written everything and ended.
    finished: bool,
}

#[derive(Default)]
struct LogQueue {
    pending: Mutex<Pending>,
    /// Wakes the writer thread early: a first line after a quiet spell, a large backlog, or
    /// stopping.
    wake_writer: Condvar,
    /// Tells the guard the writer thread has finished.
    finished: Condvar,
}

/// Written by this many bytes at once, or every [`LOG_FLUSH_INTERVAL`].
const LOG_FLUSH_BYTES: usize = 64 * 1024;
const LOG_FLUSH_INTERVAL: Duration = Duration::from_millis(20);
/// Past this much queued, stderr is stuck (a full pipe nobody reads): lines are left out and
/// counted rather than waited for, since the loggers are the runtime's threads.
const LOG_MAX_PENDING: usize = 4 * 1024 * 1024;
/// How long the exit waits for queued lines to be written.
const LOG_EXIT_WAIT: Duration = Duration::from_secs(2);

/// Where log lines go: appended to a shared buffer (one lock, one copy), which a thread of its
/// own writes to stderr in one system call. The per-request summary lines are written every
/// 20 ms (or 64 KiB) while they keep coming, at once after a quiet spell; any other line wakes
/// the writer at once. At tens of thousands
/// of requests a second a write per line, or a thread woken per line (`tracing-appender`), was
/// a tenth of the server's CPU. A logger never waits for stderr: when 4 MiB are queued, lines
/// are left out, and how many is written once stderr takes lines again. If the thread cannot
/// be started, lines are written directly.
#[derive(Clone)]
pub struct LogWriter {
    queue: Option<Arc<LogQueue>>,
    /// Written at once: every line but the per-request summaries, which come at the request
    /// rate and are what the batching is for.
    urgent: bool,
}

/// The target of the one summary line per token request (`http/token.rs`).
const REQUEST_SUMMARY_TARGET: &str = "tokengate::http::token";

impl LogWriter {
    fn start() -> (Self, LogGuard) {
        let queue = Arc::new(LogQueue::default());
        let started = {
            let queue = queue.clone();
            std::thread::Builder::new()
                .name("log-writer".into())
                .spawn(move || write_out(&queue))
                .is_ok()
        };
        let queue = started.then_some(queue);
        let writer = Self {
            queue: queue.clone(),
            urgent: true,
        };
        (writer, LogGuard { queue })
    }
}

fn lock(queue: &LogQueue) -> MutexGuard<'_, Pending> {
    // A logger that panicked mid-append leaves at worst a partial line.
    queue
        .pending
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The writer thread: takes what is queued and writes it, until stopped and drained.
fn write_out(queue: &LogQueue) {
    let mut spare = Vec::new();
    loop {
        let (stopping, dropped) = {
            let mut pending = lock(queue);
            if pending.bytes.len() < LOG_FLUSH_BYTES && !pending.stopping {
                // While lines keep coming, they are written every 20 ms, whatever their rate.
                pending = queue
                    .wake_writer
                    .wait_timeout(pending, LOG_FLUSH_INTERVAL)
                    .map(|(guard, _)| guard)
                    .unwrap_or_else(|poisoned| poisoned.into_inner().0);
                // A quiet spell: sleep until the next line.
                while pending.bytes.is_empty() && pending.dropped == 0 && !pending.stopping {
                    pending.idle = true;
                    pending = queue
                        .wake_writer
                        .wait(pending)
                        .unwrap_or_else(|poisoned| poisoned.into_inner());
                }
                pending.idle = false;
            }
            std::mem::swap(&mut pending.bytes, &mut spare);
            (pending.stopping, std::mem::take(&mut pending.dropped))
        };
        let mut stderr = std::io::stderr().lock();
        // Nowhere to report a failed write to stderr.
        if dropped > 0 {
            let _ = writeln!(
                stderr,
                "{dropped} log lines were left out: stderr was not taking lines fast enough"
            );
        }
        if !spare.is_empty() {
            let _ = stderr.write_all(&spare);
            spare.clear();
        }
        drop(stderr);
        if stopping && lock(queue).bytes.is_empty() {
            lock(queue).finished = true;
            queue.finished.notify_all();
            return;
        }
    }
}

impl std::io::Write for LogWriter {
    fn write(&mut self, line: &[u8]) -> std::io::Result<usize> {
        let Some(queue) = &self.queue else {
            return std::io::stderr().write_all(line).map(|()| line.len());
        };
        let mut pending = lock(queue);
        if pending.bytes.len() > LOG_MAX_PENDING {
            pending.dropped += 1;
        } else {
            pending.bytes.extend_from_slice(line);
            if self.urgent || pending.idle || pending.bytes.len() >= LOG_FLUSH_BYTES {
                pending.idle = false;
                queue.wake_writer.notify_one();
            }
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }

    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        Self {
            queue: self.queue.clone(),
            urgent: meta.target() != REQUEST_SUMMARY_TARGET
                || meta.level() <= &tracing::Level::WARN,
        }
    }
}

/// Stops the log writer thread when dropped, after it has written everything queued (waiting
/// at most 2 s: a stuck stderr must not keep the process from exiting).
#[must_use = "dropping the guard stops the log writer"]
pub struct LogGuard {
    queue: Option<Arc<LogQueue>>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        let Some(queue) = &self.queue else { return };
        let mut pending = lock(queue);
        pending.stopping = true;
        queue.wake_writer.notify_one();
        let deadline = std::time::Instant::now() + LOG_EXIT_WAIT;
        while !pending.finished {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            if left.is_zero() {
                return;
            }
            pending = queue
                .finished
                .wait_timeout(pending, left)
                .map(|(guard, _)| guard)
                .unwrap_or_else(|poisoned| poisoned.into_inner().0);
        }
    }
}

/// Warns about `TOKENGATE_*` variables that tokengate does not read (likely typos).
pub fn warn_unknown_env_vars() {
    for (name, _) in std::env::vars_os() {
        let Some(name) = name.to_str() else { continue };
        if name.starts_with("TOKENGATE_") && !crate::config::KNOWN_ENV_VARS.contains(&name) {
            tracing::warn!(
                variable = name,
                "unknown TOKENGATE_ environment variable is ignored"
            );
        }
    }
}

/// A request value as a log field, cut to [`MAX_LOGGED_CHARS`] characters (a cut value ends
/// in `…`): `client_id = ?telemetry::cut(id)` quotes it like any other string field.
pub fn cut(value: &str) -> Cut<'_> {
    Cut(value)
}

/// See [`cut`].
pub struct Cut<'a>(&'a str);

impl Cut<'_> {
    fn parts(&self) -> (&str, bool) {
        match self.0.char_indices().nth(MAX_LOGGED_CHARS) {
            Some((end, _)) => (self.0.get(..end).unwrap_or(self.0), true),
            None => (self.0, false),
        }
    }
}

impl fmt::Debug for Cut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (shown, was_cut) = self.parts();
        write!(f, "{shown:?}{}", if was_cut { "…" } else { "" })
    }
}

impl fmt::Display for Cut<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (shown, was_cut) = self.parts();
        write!(f, "{shown}{}", if was_cut { "…" } else { "" })
    }
}

/// `[logging] format = "text"`: tracing-subscriber's default ("full") layout, `{timestamp}
/// {level} request{request_id=…}: {target}: {message} {fields}`, with the request id of
/// [`in_request`] where that layout shows a request span (and any real spans after it).
/// Coloured as the default when stderr is a terminal.
pub struct TextLines;

impl<S, N> FormatEvent<S, N> for TextLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        use tracing_log::NormalizeEvent as _;
        let normalized = event.normalized_metadata();
        let metadata = normalized.as_ref().unwrap_or_else(|| event.metadata());
        let ansi = writer.has_ansi_escapes();
        let style = |code: &'static str| if ansi { code } else { "" };
        let (dim, bold, reset) = (style("\x1b[2m"), style("\x1b[1m"), style("\x1b[0m"));
        write!(writer, "{dim}")?;
        tracing_subscriber::fmt::time::SystemTime.format_time(&mut writer)?;
        let level = *metadata.level();
        let colour = style(match level {
            tracing::Level::TRACE => "\x1b[35m",
            tracing::Level::DEBUG => "\x1b[34m",
            tracing::Level::INFO => "\x1b[32m",
            tracing::Level::WARN => "\x1b[33m",
            tracing::Level::ERROR => "\x1b[31m",
        });
        write!(writer, "{reset} {colour}{:>5}{reset} ", level.as_str())?;
        let mut spans = false;
        if let Some(id) = current_request_id() {
            // A request id is 1-128 characters of `[A-Za-z0-9-_.:+/=@]` (`http/request_id.rs`).
            write!(
                writer,
                "{bold}request{{{reset}request_id={id}{bold}}}{reset}{dim}:{reset}"
            )?;
            spans = true;
        }
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                write!(writer, "{bold}{}{reset}", span.metadata().name())?;
                if let Some(fields) = span.extensions().get::<FormattedFields<N>>() {
                    if !fields.is_empty() {
                        write!(writer, "{bold}{{{reset}{fields}{bold}}}{reset}")?;
                    }
                }
                write!(writer, "{dim}:{reset}")?;
                spans = true;
            }
        }
        if spans {
            writer.write_char(' ')?;
        }
        write!(writer, "{dim}{}:{reset} ", metadata.target())?;
        ctx.format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Formats event and span fields as `name=value` separated by spaces (the message bare), like
/// tracing-subscriber's default, with every control character (and U+2028/U+2029, which some
/// viewers treat as line ends) written as an escape. Being the one field formatter, it covers
/// `%` (Display) fields and messages too, which the default leaves as they are.
pub struct EscapedFields;

impl<'writer> FormatFields<'writer> for EscapedFields {
    fn format_fields<R: RecordFields>(&self, writer: Writer<'writer>, fields: R) -> fmt::Result {
        let mut visitor = EscapingVisitor {
            writer,
            first: true,
            result: Ok(()),
        };
        fields.record(&mut visitor);
        visitor.result
    }
}

struct EscapingVisitor<'writer> {
    writer: Writer<'writer>,
    first: bool,
    result: fmt::Result,
}

impl EscapingVisitor<'_> {
    fn write(&mut self, field: &Field, value: fmt::Arguments<'_>) {
        if self.result.is_err() {
            return;
        }
        let separator = if std::mem::take(&mut self.first) {
            ""
        } else {
            " "
        };
        let name = field.name();
        let name = name.strip_prefix("r#").unwrap_or(name);
        self.result = if name == "message" {
            self.writer.write_str(separator)
        } else {
            write!(self.writer, "{separator}{name}=")
        }
        .and_then(|()| Escaping(&mut self.writer).write_fmt(value));
    }
}

impl Visit for EscapingVisitor<'_> {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.write(field, format_args!("{value}"));
        } else {
            self.write(field, format_args!("{value:?}"));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.write(field, format_args!("{value}"));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.write(field, format_args!("{value:?}"));
    }
}

/// Passes text through, writing control characters as `\n`, `\r`, `\t` or `\u{..}`.
struct Escaping<'a, W: fmt::Write>(&'a mut W);

impl<W: fmt::Write> fmt::Write for Escaping<'_, W> {
    fn write_str(&mut self, text: &str) -> fmt::Result {
        let mut plain_from = 0;
        for (at, ch) in text.char_indices() {
            if !(ch.is_control() || ch == '\u{2028}' || ch == '\u{2029}') {
                continue;
            }
            self.0
                .write_str(text.get(plain_from..at).unwrap_or_default())?;
            match ch {
                '\n' => self.0.write_str("\\n")?,
                '\r' => self.0.write_str("\\r")?,
                '\t' => self.0.write_str("\\t")?,
                other => write!(self.0, "\\u{{{:x}}}", u32::from(other))?,
            }
            plain_from = at + ch.len_utf8();
        }
        self.0.write_str(text.get(plain_from..).unwrap_or_default())
    }
}

/// `[logging] format = "json"`: one object per line, `{"timestamp", "level", "target",
/// "message", "fields"}`; `fields` holds the request's `request_id` ([`in_request`]), the
/// fields of the event's spans (outermost first) and those of the event. Values are JSON strings, numbers or
/// booleans; a `?`-formatted string field (`client_id = ?cut(id)`) is its string, not its
/// quoted `Debug` form. serde_json escapes control characters; U+2028/U+2029 are escaped too.
pub struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'w> FormatFields<'w> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> fmt::Result {
        let mut timestamp = String::new();
        tracing_subscriber::fmt::time::SystemTime.format_time(&mut Writer::new(&mut timestamp))?;
        let mut members = Vec::new();
        if let Some(id) = current_request_id() {
            members.push(format!("\"request_id\":{}", json_string(&id)));
        }
        if let Some(scope) = ctx.event_scope() {
            for span in scope.from_root() {
                let extensions = span.extensions();
                // Spans made while the text format was on carry text fields: left out.
                if let Some(fields) = extensions.get::<FormattedFields<JsonFields>>() {
                    if !fields.fields.is_empty() {
                        members.push(fields.fields.clone());
                    }
                }
            }
        }
        let mut visitor = JsonVisitor::default();
        event.record(&mut visitor);
        if !visitor.members.is_empty() {
            members.push(visitor.members);
        }
        let metadata = event.metadata();
        let line = format!(
            "{{\"timestamp\":{},\"level\":{},\"target\":{},\"message\":{},\"fields\":{{{}}}}}",
            json_string(&timestamp),
            json_string(metadata.level().as_str()),
            json_string(metadata.target()),
            json_string(visitor.message.as_deref().unwrap_or_default()),
            members.join(",")
        );
        writer.write_str(
            &line
                .replace('\u{2028}', "\\u2028")
                .replace('\u{2029}', "\\u2029"),
        )?;
        writer.write_char('\n')
    }
}

/// Span fields as JSON object members (`"name":value,...`), for [`JsonLines`].
pub struct JsonFields;

impl<'writer> FormatFields<'writer> for JsonFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        let mut visitor = JsonVisitor::default();
        fields.record(&mut visitor);
        writer.write_str(&visitor.members)
    }

    fn add_fields(
        &self,
        current: &'writer mut FormattedFields<Self>,
        fields: &tracing::span::Record<'_>,
    ) -> fmt::Result {
        let mut visitor = JsonVisitor::default();
        fields.record(&mut visitor);
        if !current.fields.is_empty() && !visitor.members.is_empty() {
            current.fields.push(',');
        }
        current.fields.push_str(&visitor.members);
        Ok(())
    }
}

fn json_string(text: &str) -> String {
    // Serialising a string cannot fail.
    serde_json::to_string(text).unwrap_or_else(|_| "\"\"".to_owned())
}

/// Collects fields as JSON members; the message apart.
#[derive(Default)]
struct JsonVisitor {
    members: String,
    message: Option<String>,
}

impl JsonVisitor {
    fn member(&mut self, field: &Field, value: &str) {
        if !self.members.is_empty() {
            self.members.push(',');
        }
        let name = field.name();
        self.members
            .push_str(&json_string(name.strip_prefix("r#").unwrap_or(name)));
        self.members.push(':');
        self.members.push_str(value);
    }
}

/// A `Debug`-formatted string (`"bob"`, or `"bob…"` from [`cut`]) as the string itself;
/// anything else as its `Debug` text.
fn unquoted(debug: &str) -> String {
    if let Ok(text) = serde_json::from_str::<String>(debug) {
        return text;
    }
    if let Some(quoted) = debug.strip_suffix('…') {
        if let Ok(text) = serde_json::from_str::<String>(quoted) {
            return format!("{text}…");
        }
    }
    debug.to_owned()
}

impl Visit for JsonVisitor {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_owned());
        } else {
            self.member(field, &json_string(value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.member(field, &value.to_string());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.member(field, &value.to_string());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        match serde_json::Number::from_f64(value) {
            Some(number) => self.member(field, &number.to_string()),
            None => self.member(field, &json_string(&value.to_string())),
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.member(field, if value { "true" } else { "false" });
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.member(field, &json_string(&value.to_string()));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        if field.name() == "message" {
            self.message = Some(format!("{value:?}"));
        } else {
            self.member(field, &json_string(&unquoted(&format!("{value:?}"))));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// What `log` writes through the same formatter as `init`.
    fn logged(log: impl FnOnce()) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .event_format(TextLines)
            .fmt_fields(EscapedFields)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    const HOSTILE: &str =
        "eve\n2026-12-01T00:00:00Z  INFO tokengate: forged\r\x1b[31mred\u{2028}\u{85}";

    #[test]
    fn control_characters_in_display_fields_debug_fields_and_messages_are_escaped() {
        let text = logged(|| {
            tracing::info!(display = %HOSTILE, debug = ?HOSTILE, plain = HOSTILE, "said {HOSTILE}");
        });
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            !text.contains('\x1b') && !text.contains('\r') && !text.contains('\u{2028}'),
            "{text:?}"
        );
        assert!(text.contains(r"said eve\n2026-12-01T00:00:00Z  INFO tokengate: forged\r\u{1b}[31mred\u{2028}\u{85}"), "{text}");
        assert!(text.contains(r"display=eve\n2026"), "{text}");
        assert!(text.contains(r#"debug="eve\n2026"#), "{text}");
        assert!(text.contains(r#"plain="eve\n2026"#), "{text}");
    }

    #[test]
    fn span_fields_are_escaped_too() {
        let text = logged(|| {
            let span = tracing::info_span!("request", user = %HOSTILE);
            let _entered = span.enter();
            tracing::info!("inside");
        });
        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(text.contains(r"user=eve\n2026"), "{text}");
    }

    #[test]
    fn text_lines_carry_the_request_id_of_the_task_in_the_default_layout() {
        let text = logged(|| {
            REQUEST_ID.sync_scope(Arc::from("req-7"), || {
                tracing::warn!(client_id = ?cut("app"), "token request");
            });
            tracing::info!("outside");
        });
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2, "{text}");
        let (timestamp, rest) = lines[0].split_once(' ').unwrap();
        assert!(
            chrono::DateTime::parse_from_rfc3339(timestamp).is_ok(),
            "{text}"
        );
        assert_eq!(
            rest,
            format!(
                " WARN request{{request_id=req-7}}: {}: token request client_id=\"app\"",
                module_path!()
            )
        );
        assert!(
            lines[1].ends_with(&format!("  INFO {}: outside", module_path!())),
            "{text}"
        );
    }

    #[test]
    fn json_lines_carry_the_request_id_of_the_task() {
        let text = logged_json(|| {
            REQUEST_ID.sync_scope(Arc::from("req-8"), || tracing::info!(n = 1_u64, "in"));
            tracing::info!("out");
        });
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect();
        assert_eq!(lines[0]["fields"]["request_id"], "req-8", "{text}");
        assert_eq!(lines[0]["fields"]["n"], 1, "{text}");
        assert_eq!(lines[1]["fields"], serde_json::json!({}), "{text}");
    }

    #[tokio::test]
    async fn a_task_spawned_for_a_request_keeps_its_id() {
        let seen = in_request(Arc::from("req-9"), async {
            tokio::spawn(in_current_request(async { current_request_id() }))
                .await
                .unwrap()
        })
        .await;
        assert_eq!(seen.as_deref(), Some("req-9"));
        assert_eq!(current_request_id(), None);
    }

    /// What `log` writes through the JSON format of `reconfigure`.
    fn logged_json(log: impl FnOnce()) -> String {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .event_format(JsonLines)
            .fmt_fields(JsonFields)
            .with_writer(move || writer.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, log);
        let bytes = captured.0.lock().unwrap().clone();
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn json_lines_hold_timestamp_level_target_message_and_the_span_and_event_fields() {
        let text = logged_json(|| {
            let span = tracing::info_span!("request", request_id = %"req-1");
            let _entered = span.enter();
            tracing::warn!(client_id = ?cut("app"), latency_ms = 1.5, attempts = 3_u64, ok = true, user = %HOSTILE, "said {}", "hi\u{2028}");
        });

        assert_eq!(text.lines().count(), 1, "{text}");
        assert!(
            !text.contains('\u{2028}') && !text.contains('\x1b'),
            "{text:?}"
        );
        let line: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(line["timestamp"].as_str().unwrap()).is_ok());
        assert_eq!(line["level"], "WARN");
        assert_eq!(line["target"], module_path!());
        assert_eq!(line["message"], "said hi\u{2028}");
        let fields = &line["fields"];
        assert_eq!(fields["request_id"], "req-1");
        assert_eq!(fields["client_id"], "app");
        assert_eq!(fields["latency_ms"], 1.5);
        assert_eq!(fields["attempts"], 3);
        assert_eq!(fields["ok"], true);
        assert_eq!(fields["user"], HOSTILE);
    }

    #[test]
    fn request_values_are_cut_to_128_characters() {
        let long = "é".repeat(300);
        let text = logged(|| tracing::info!(client_id = ?cut(&long), user = %cut("bob"), "x"));
        let shown = format!("client_id=\"{}\"…", "é".repeat(MAX_LOGGED_CHARS));
        assert!(text.contains(&shown), "{text}");
        assert!(!text.contains(&"é".repeat(MAX_LOGGED_CHARS + 1)), "{text}");
        assert!(
            text.contains("user=bob x") || text.contains("user=bob"),
            "{text}"
        );
        assert_eq!(format!("{}", cut(&"a".repeat(128))), "a".repeat(128));
    }
}
