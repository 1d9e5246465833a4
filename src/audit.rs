//! The audit trail: one JSON object per line (JSON Lines) for each security event, in the
//! `[audit] file` (README "Audit trail" documents every event and field).
//!
//! The server records through an [`Audit`] handle that `startup.rs` gives each component
//! through its constructor (like the metrics handles). Recording never waits: the line is
//! serialised by the caller and put in a bounded queue that a thread of its own writes to the
//! file; when the queue is full the event is left out, counted in
//! `tokengate_audit_events_dropped_total` and reported in the log (once per episode), because
//! a request must never wait for a slow disk. Failures that anyone can cause at will
//! (`login_failed`, `client_auth_failed`, `rate_limited`) are written once per address and
//! window, the repeats counted ([`FloodGate`]). The file is opened for appending and created
//! 0600; [`Audit::reopen`] (SIGUSR1, and SIGHUP's reload) opens the path again after logrotate
//! moved the file, and `max_bytes`/`keep` rotate it without logrotate (unless another process
//! rotated it already: then the new file is opened). The CLI, a separate process, appends its
//! own events with [`append_cli_event`] (open, one `write`, close: O_APPEND keeps lines whole).

use std::fs::File;
use std::io::{self, Write as _};
use std::net::IpAddr;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_channel::{Receiver, Sender, TrySendError};
use serde::Serialize;

use crate::clock::Clock;
use crate::metrics::AuditMetrics;
use crate::secret_files::{create_private_dir_all, PRIVATE_FILE_MODE};

/// Events waiting for the writer thread; past this many, new ones are left out and counted.
pub const QUEUE_CAPACITY: usize = 16 * 1024;

/// `[audit]`, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditSettings {
    pub destination: AuditDestination,
    /// Rotate the file before it would grow past this many bytes; `None`: never (logrotate).
    pub max_bytes: Option<u64>,
    /// Rotated files kept (`audit.jsonl.1` the newest … `audit.jsonl.<keep>`).
    pub keep: u32,
}

impl AuditSettings {
    /// No audit trail (`[audit] file = ""`).
    pub fn off() -> Self {
        Self {
            destination: AuditDestination::Off,
            max_bytes: None,
            keep: 0,
        }
    }
}

/// Where audit lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditDestination {
    /// `file = ""`.
    Off,
    /// `file = "-"`: standard error, next to the log.
    Stderr,
    /// An absolute path (relative ones resolve against `TOKENGATE_HOME`).
    File(PathBuf),
}

/// Where a request came from, for its events: its request id and client address.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Origin {
    pub request_id: Option<String>,
    pub ip: Option<IpAddr>,
}

/// Why a password grant failed (`login_failed`).
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginFailure {
    /// Wrong password, unknown or disabled user (one answer for all, as to the client).
    InvalidCredentials,
    /// Refused unchecked: the name is locked for this address or everywhere.
    AccountLocked,
}

/// Why client authentication failed (`client_auth_failed`).
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientAuthFailure {
    /// No credentials, or a client id without a secret, or a scheme other than Basic.
    NoCredentials,
    /// No such client, or a disabled one.
    UnknownClient,
    WrongSecret,
    /// A public client (which has no secret) presented one.
    SecretForPublicClient,
    /// Refused unchecked: too many wrong secrets from this address.
    Locked,
}

/// Who revoked a grant (`grant_revoked`).
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RevokedBy {
    /// The client, through `/revoke` (RFC 7009).
    Client,
    /// A spent refresh token came back (RFC 9700 §4.14.2).
    ReuseDetection,
}

/// One security event: its own fields; the common ones (`ts`, `event`, `outcome`,
/// `client_id`, `subject`, `ip`, `request_id`, `node`, `source`) are added when recorded.
/// Never a token, a secret or a password: tokens are named by their id (`jti`).
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
pub enum Event {
    TokenIssued {
        grant_type: &'static str,
        scope: String,
        /// The access token's id (its `jti` when it is a JWT).
        token_id: String,
        refresh_token_id: Option<String>,
        /// The grant (refresh-token family) the tokens belong to.
        grant_id: String,
    },
    LoginFailed {
        reason: LoginFailure,
    },
    /// `/authorize` gave the client a code for the user, who signed in on the login page
    /// (`login`: `form`) or had a login session (`session`).
    AuthorizationCodeIssued {
        scope: String,
        login: &'static str,
    },
    /// The user allowed a `require_consent` client `scope` on the consent screen.
    ConsentGiven {
        scope: String,
    },
    /// The user refused a client on the consent screen (`access_denied` to the client).
    ConsentDenied {
        scope: String,
    },
    /// `GET /logout` ended the user's login session.
    LoggedOut {},
    AccountLocked {
        /// `address` (this client IP) or `everywhere`.
        locked_for: &'static str,
        locked_until: String,
    },
    RefreshReuseDetected {
        token_id: String,
        grant_id: String,
    },
    /// A redeemed authorization code was presented again (RFC 6749 §4.1.2); `grant_id` names
    /// the tokens issued from it, now revoked (`None` if it issued none).
    AuthorizationCodeReuseDetected {
        grant_id: Option<String>,
    },
    GrantRevoked {
        grant_id: String,
        by: RevokedBy,
    },
    /// A client revoked one access token through `/revoke`.
    TokenRevoked {
        token_id: String,
    },
    ClientAuthFailed {
        reason: ClientAuthFailure,
    },
    ClientLocked {
        locked_until: String,
    },
    RateLimited {
        /// `ip` or `client`.
        bucket: &'static str,
    },
    UserAdded {},
    PasswordSet {
        /// Whether the user's tokens were ended (not `--keep-sessions`).
        tokens_revoked: bool,
    },
    UserRemoved {},
    UserDisabled {},
    UserEnabled {},
    UserUnlocked {},
    /// `user set-roles`: the user's developer-portal roles now.
    RolesSet {
        roles: Vec<String>,
    },
    /// `user revoke-tokens` or `client revoke-tokens`: every grant of the subject ended.
    TokensRevoked {},
    ClientAdded {
        grant_types: Vec<String>,
        scopes: Vec<String>,
        /// `generated` (SHA-256 stored) or `chosen` (argon2id stored).
        secret: &'static str,
    },
    ClientRemoved {},
    ClientDisabled {},
    ClientEnabled {},
    /// `POST /register` (RFC 7591) added the client.
    ClientRegistered {
        grant_types: Vec<String>,
        scopes: Vec<String>,
        /// `none` (a public client), `client_secret_basic` or `client_secret_post`.
        token_endpoint_auth_method: String,
        /// `initial_access_token` or `open`: how the registration was allowed.
        mode: &'static str,
    },
    /// `PUT /register/{client_id}` (RFC 7592 §2.2) replaced the client's metadata.
    ClientRegistrationUpdated {
        grant_types: Vec<String>,
        scopes: Vec<String>,
        token_endpoint_auth_method: String,
    },
    /// `DELETE /register/{client_id}` (RFC 7592 §2.3), or the developer portal (`subject`: who),
    /// removed the client and ended its tokens.
    ClientRegistrationDeleted {},
    /// The developer portal gave the client a new secret; the old one is accepted until
    /// `previous_valid_until`, or no longer at all (`None`).
    ClientSecretRegenerated {
        previous_valid_until: Option<String>,
    },
    /// The developer portal's "Generate a token": an application token for the client, shown
    /// to `subject`, a developer or admin who gave the client's secret.
    PortalTokenIssued {
        token_id: String,
        scope: String,
        expires_in: u64,
    },
    /// `tokengate registration token create`: an initial access token (RFC 7591 §3).
    InitialAccessTokenCreated {
        expires_at: String,
        uses: u32,
    },
    /// `registration token revoke`: `token_id` is the id `registration token list` shows.
    InitialAccessTokenRevoked {
        token_id: String,
    },
    KeyRotated {
        kid: String,
        algorithm: &'static str,
        file: String,
    },
    ConfigReloaded {
        /// Settings now in effect.
        changed: Vec<String>,
        /// Settings that changed in the file but need a restart.
        needs_restart: Vec<String>,
        /// Why the file was refused (`outcome` is `failure`), as `check-config` prints them.
        problems: Vec<String>,
    },
}

impl Event {
    /// The `event` field.
    pub fn name(&self) -> &'static str {
        match self {
            Self::TokenIssued { .. } => "token_issued",
            Self::LoginFailed { .. } => "login_failed",
            Self::AuthorizationCodeIssued { .. } => "authorization_code_issued",
            Self::ConsentGiven { .. } => "consent_given",
            Self::ConsentDenied { .. } => "consent_denied",
            Self::LoggedOut {} => "logged_out",
            Self::AccountLocked { .. } => "account_locked",
            Self::RefreshReuseDetected { .. } => "refresh_reuse_detected",
            Self::AuthorizationCodeReuseDetected { .. } => "authorization_code_reuse_detected",
            Self::GrantRevoked { .. } => "grant_revoked",
            Self::TokenRevoked { .. } => "token_revoked",
            Self::ClientAuthFailed { .. } => "client_auth_failed",
            Self::ClientLocked { .. } => "client_locked",
            Self::RateLimited { .. } => "rate_limited",
            Self::UserAdded {} => "user_added",
            Self::PasswordSet { .. } => "password_set",
            Self::UserRemoved {} => "user_removed",
            Self::UserDisabled {} => "user_disabled",
            Self::UserEnabled {} => "user_enabled",
            Self::UserUnlocked {} => "user_unlocked",
            Self::RolesSet { .. } => "user_roles_set",
            Self::TokensRevoked {} => "tokens_revoked",
            Self::ClientAdded { .. } => "client_added",
            Self::ClientRemoved {} => "client_removed",
            Self::ClientDisabled {} => "client_disabled",
            Self::ClientEnabled {} => "client_enabled",
            Self::ClientRegistered { .. } => "client_registered",
            Self::ClientRegistrationUpdated { .. } => "client_registration_updated",
            Self::ClientRegistrationDeleted {} => "client_registration_deleted",
            Self::ClientSecretRegenerated { .. } => "client_secret_regenerated",
            Self::PortalTokenIssued { .. } => "portal_token_issued",
            Self::InitialAccessTokenCreated { .. } => "initial_access_token_created",
            Self::InitialAccessTokenRevoked { .. } => "initial_access_token_revoked",
            Self::KeyRotated { .. } => "key_rotated",
            Self::ConfigReloaded { .. } => "config_reloaded",
        }
    }

    /// The `outcome` field: `failure` for events that report a refused request (and a
    /// refused config file), `success` for changes that took effect.
    pub fn outcome(&self) -> &'static str {
        match self {
            Self::LoginFailed { .. }
            | Self::ConsentDenied { .. }
            | Self::AccountLocked { .. }
            | Self::RefreshReuseDetected { .. }
            | Self::AuthorizationCodeReuseDetected { .. }
            | Self::ClientAuthFailed { .. }
            | Self::ClientLocked { .. }
            | Self::RateLimited { .. } => "failure",
            Self::ConfigReloaded { problems, .. } if !problems.is_empty() => "failure",
            _ => "success",
        }
    }
}

/// Failure events that anyone can cause at will, as fast as they can send requests: written at
/// most once per [`FLOOD_INTERVAL_MS`] for each event, reason and address (see [`FloodGate`]).
/// Successes and state changes (a lockout, a revocation) are never left out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum FloodKind {
    LoginFailed(&'static str),
    ClientAuthFailed(&'static str),
    RateLimited(&'static str),
}

impl Event {
    fn flood_kind(&self) -> Option<FloodKind> {
        match self {
            Self::LoginFailed { reason } => Some(FloodKind::LoginFailed(match reason {
                LoginFailure::InvalidCredentials => "invalid_credentials",
                LoginFailure::AccountLocked => "account_locked",
            })),
            Self::ClientAuthFailed { reason } => Some(FloodKind::ClientAuthFailed(match reason {
                ClientAuthFailure::NoCredentials => "no_credentials",
                ClientAuthFailure::UnknownClient => "unknown_client",
                ClientAuthFailure::WrongSecret => "wrong_secret",
                ClientAuthFailure::SecretForPublicClient => "secret_for_public_client",
                ClientAuthFailure::Locked => "locked",
            })),
            Self::RateLimited { bucket } => Some(FloodKind::RateLimited(bucket)),
            _ => None,
        }
    }
}

/// A failure event is written once per window of this length for each (event, reason, address).
pub const FLOOD_INTERVAL_MS: i64 = 10_000;
/// Addresses (with event and reason) followed in one window; past this, failure events from
/// further addresses are left out until the window ends (and counted in the log).
const FLOOD_MAX_KEYS: usize = 10_000;

type FloodKey = (FloodKind, Option<IpAddr>);

/// Keeps unauthenticated traffic from flooding the trail (filling the disk, or rotating the
/// evidence away): within one window only the first failure event of each (event, reason,
/// address) is written; the ones left out are counted, and that address's first line of the
/// same kind in the next window carries the count as `suppressed`. A count whose address sends
/// nothing like it in the next window is reported in the log instead. Time is the audit's
/// clock; the maps are bounded and start over each window.
#[derive(Default)]
struct FloodGate {
    window_start_ms: Option<i64>,
    /// Events per key in this window; the first was written.
    seen: std::collections::HashMap<FloodKey, u64>,
    /// Left out in the previous window, per key, for the key's next line.
    carried: std::collections::HashMap<FloodKey, u64>,
    /// Left out this window because `seen` was full.
    overflow: u64,
}

impl FloodGate {
    /// `None`: leave the event out. `Some(n)`: write it, with `n` left out before it.
    fn admit(&mut self, key: FloodKey, now_ms: i64) -> Option<u64> {
        let start = *self.window_start_ms.get_or_insert(now_ms);
        if now_ms < start || now_ms.saturating_sub(start) >= FLOOD_INTERVAL_MS {
            self.next_window(now_ms);
        }
        if let Some(count) = self.seen.get_mut(&key) {
            *count = count.saturating_add(1);
            return None;
        }
        if self.seen.len() >= FLOOD_MAX_KEYS {
            self.overflow = self.overflow.saturating_add(1);
            return None;
        }
        self.seen.insert(key, 1);
        Some(self.carried.remove(&key).unwrap_or(0))
    }

    fn next_window(&mut self, now_ms: i64) {
        let unreported: u64 = self.carried.values().sum();
        let overflow = std::mem::take(&mut self.overflow);
        if unreported > 0 || overflow > 0 {
            tracing::warn!(
                unreported,
                overflow,
                "failure events left out of the audit trail (repeats from one address) were not \
                 reported there: `unreported` repeated ones whose address sent no more, \
                 `overflow` from more than 10,000 addresses in 10 s"
            );
        }
        self.carried = self
            .seen
            .drain()
            .filter(|(_, count)| *count > 1)
            .map(|(key, count)| (key, count - 1))
            .collect();
        self.window_start_ms = Some(now_ms);
    }
}

/// One line of the trail, common fields first.
#[derive(Serialize)]
struct Line<'a> {
    ts: String,
    event: &'static str,
    outcome: &'static str,
    client_id: Option<String>,
    subject: Option<String>,
    ip: Option<String>,
    request_id: Option<&'a str>,
    node: &'a str,
    /// `server` or `cli`.
    source: &'static str,
    /// Like failure events from this address left out before this one ([`FloodGate`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    suppressed: Option<u64>,
    #[serde(flatten)]
    details: &'a Event,
}

/// RFC 3339 UTC with milliseconds, for `ts` and times inside events.
pub fn rfc3339_ms(epoch_ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(epoch_ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// As [`rfc3339_ms`], for whole seconds.
pub fn rfc3339_secs(epoch_secs: i64) -> String {
    rfc3339_ms(epoch_secs.saturating_mul(1000))
}

/// A value from a request, cut like the log cuts it (a cut value ends in `…`).
fn cut(value: &str) -> String {
    crate::telemetry::cut(value).to_string()
}

struct Common<'a> {
    client_id: Option<&'a str>,
    subject: Option<&'a str>,
    origin: &'a Origin,
    node: &'a str,
    source: &'static str,
    suppressed: Option<u64>,
}

/// The line for `event`, newline included. Serialising these types cannot fail; should it,
/// the event is reported in the log instead of writing half a line.
fn render(now_ms: i64, common: &Common<'_>, event: &Event) -> Option<Vec<u8>> {
    let line = Line {
        ts: rfc3339_ms(now_ms),
        event: event.name(),
        outcome: event.outcome(),
        client_id: common.client_id.map(cut),
        subject: common.subject.map(cut),
        ip: common.origin.ip.map(|ip| ip.to_string()),
        request_id: common.origin.request_id.as_deref(),
        node: common.node,
        source: common.source,
        suppressed: common.suppressed,
        details: event,
    };
    match serde_json::to_vec(&line) {
        Ok(mut bytes) => {
            bytes.push(b'\n');
            Some(bytes)
        }
        Err(err) => {
            tracing::error!(error = %err, event = event.name(), "an audit event could not be written as JSON");
            None
        }
    }
}

/// The `node` field: this host's name (`/proc/sys/kernel/hostname`), else `localhost`.
pub fn node_name() -> String {
    ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| {
            let name = std::fs::read_to_string(path).ok()?;
            let name = name.trim();
            (!name.is_empty()).then(|| name.to_owned())
        })
        .unwrap_or_else(|| "localhost".to_owned())
}

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("cannot open the audit file {path}: {source}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot start the audit writer thread: {0}")]
    Thread(#[source] io::Error),
    #[error("refusing the audit file {path}: {why}")]
    Refused { path: PathBuf, why: &'static str },
    #[error("cannot write to the audit file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// An open audit file, and whether this process created it.
struct Opened {
    file: File,
    created: bool,
}

/// `open` flags: O_NOFOLLOW, so a symlink at the path is refused (ELOOP), never followed (a
/// user who may write `logs/` must not make a root CLI create or append to a file elsewhere);
/// O_CLOEXEC, so the descriptor is not inherited by a child process.
fn no_follow() -> i32 {
    let flags = rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::CLOEXEC;
    // Both are small positive constants on every platform; the bits are what open(2) takes.
    i32::from_ne_bytes(flags.bits().to_ne_bytes())
}

/// Opens `path` for appending, creating it 0600 (and missing folders 0700). An existing file
/// keeps its mode. The last component is never followed if it is a symlink, and the file must
/// be a regular file with one name (not a FIFO, a device, or a hard link to another file).
fn open_append(path: &Path) -> Result<Opened, AuditError> {
    let failed = |source: io::Error| {
        if source.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
            AuditError::Refused {
                path: path.to_path_buf(),
                why: "it is a symbolic link",
            }
        } else {
            AuditError::Open {
                path: path.to_path_buf(),
                source,
            }
        }
    };
    if let Some(parent) = path.parent() {
        create_private_dir_all(parent).map_err(failed)?;
    }
    let mut options = std::fs::OpenOptions::new();
    options
        .append(true)
        .mode(PRIVATE_FILE_MODE)
        .custom_flags(no_follow());
    // `create_new` (O_EXCL) first, so that `created` is known rather than guessed from an
    // earlier look at the path; O_EXCL never follows a symlink either. A file removed between
    // the two opens (rotation) is tried again.
    let mut attempts = 0;
    let opened = loop {
        attempts += 1;
        match options.clone().create_new(true).open(path) {
            Ok(file) => {
                break Opened {
                    file,
                    created: true,
                }
            }
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => {}
            Err(err) => return Err(failed(err)),
        }
        match options.open(path) {
            Ok(file) => {
                break Opened {
                    file,
                    created: false,
                }
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound && attempts < 3 => {}
            Err(err) => return Err(failed(err)),
        }
    };
    let meta = opened.file.metadata().map_err(failed)?;
    let refused = |why| AuditError::Refused {
        path: path.to_path_buf(),
        why,
    };
    if !meta.is_file() {
        return Err(refused("it is not a regular file"));
    }
    if std::os::unix::fs::MetadataExt::nlink(&meta) != 1 {
        return Err(refused("it has more than one name (a hard link)"));
    }
    Ok(opened)
}

/// Appends one event from the CLI (a process of its own): open, one write, close. Lines are
/// far below the size up to which O_APPEND writes are not interleaved with the server's.
pub fn append_cli_event(
    settings: &AuditSettings,
    clock: &dyn Clock,
    client_id: Option<&str>,
    subject: Option<&str>,
    event: &Event,
) -> Result<(), AuditError> {
    if settings.destination == AuditDestination::Off {
        return Ok(());
    }
    let node = node_name();
    let common = Common {
        client_id,
        subject,
        origin: &Origin::default(),
        node: &node,
        source: "cli",
        suppressed: None,
    };
    let Some(line) = render(clock.now_ms(), &common, event) else {
        return Ok(());
    };
    match &settings.destination {
        AuditDestination::Off => Ok(()),
        AuditDestination::Stderr => {
            let _ = io::stderr().write_all(&line);
            Ok(())
        }
        AuditDestination::File(path) => {
            let Opened { mut file, created } = open_append(path)?;
            if created {
                give_to_folder_owner(&file, path);
            }
            file.write_all(&line).map_err(|source| AuditError::Write {
                path: path.clone(),
                source,
            })
        }
    }
}

/// A file the CLI created (run as root, say) belongs to its folder's owner, the service's
/// user, so that the server can still open it. Changed through the open descriptor, never the
/// path (which someone may have replaced since), and only for the file this process just
/// created. Not being allowed to change it is fine: then the CLI runs as that user already,
/// or the folder is its own.
fn give_to_folder_owner(file: &File, path: &Path) {
    use std::os::unix::fs::MetadataExt as _;
    let Some(folder) = path.parent().and_then(|dir| std::fs::metadata(dir).ok()) else {
        return;
    };
    let Ok(meta) = file.metadata() else {
        return;
    };
    if meta.is_file() && meta.nlink() == 1 {
        let _ = std::os::unix::fs::fchown(file, Some(folder.uid()), Some(folder.gid()));
    }
}

/// What the writer thread is sent, in order: lines recorded before a reopen or new settings
/// go where they went, those after to the new file.
enum Message {
    Line(Vec<u8>),
    Reopen,
    Settings(Box<AuditSettings>),
    /// Write everything queued before this, then answer.
    Flush(Sender<()>),
}

/// A reopen or new settings that did not fit in the full queue: applied before the writer's
/// next batch.
#[derive(Default)]
struct Control {
    reopen: bool,
    settings: Option<AuditSettings>,
}

struct Shared {
    node: String,
    clock: Arc<dyn Clock>,
    /// Whether events are recorded at all (`false` with `file = ""`: nothing is serialised).
    enabled: AtomicBool,
    queue: Sender<Message>,
    control: Mutex<Control>,
    metrics: AuditMetrics,
    /// Events left out since the writer last reported it.
    unreported_drops: AtomicU64,
    flood: Mutex<FloodGate>,
}

/// The server's audit trail: cheap to clone, one per component that records events.
#[derive(Clone)]
pub struct Audit {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Audit")
            .field("node", &self.shared.node)
            .finish_non_exhaustive()
    }
}

impl Audit {
    /// Opens the destination (a file that cannot be opened is a startup error) and starts
    /// the writer thread.
    pub fn start(
        settings: &AuditSettings,
        node: String,
        clock: Arc<dyn Clock>,
        metrics: AuditMetrics,
    ) -> Result<Self, AuditError> {
        let target = Target::open(settings)?;
        Self::start_with(target, settings, node, clock, metrics, QUEUE_CAPACITY)
    }

    fn start_with(
        target: Target,
        settings: &AuditSettings,
        node: String,
        clock: Arc<dyn Clock>,
        metrics: AuditMetrics,
        capacity: usize,
    ) -> Result<Self, AuditError> {
        let (queue, receiver) = crossbeam_channel::bounded(capacity);
        let shared = Arc::new(Shared {
            node,
            clock,
            enabled: AtomicBool::new(settings.destination != AuditDestination::Off),
            queue,
            control: Mutex::new(Control::default()),
            metrics,
            unreported_drops: AtomicU64::new(0),
            flood: Mutex::new(FloodGate::default()),
        });
        let writer = Writer {
            target,
            max_bytes: settings.max_bytes,
            keep: settings.keep,
            shared: Arc::downgrade(&shared),
            failing: false,
        };
        std::thread::Builder::new()
            .name("audit-writer".into())
            .spawn(move || writer.run(&receiver))
            .map_err(AuditError::Thread)?;
        Ok(Self { shared })
    }

    /// Records `event` for a request from `origin`, by or about `client_id` and `subject`.
    /// Never waits: with the queue full the event is counted and left out.
    pub fn record(
        &self,
        origin: &Origin,
        client_id: Option<&str>,
        subject: Option<&str>,
        event: Event,
    ) {
        let shared = &self.shared;
        if !shared.enabled.load(Ordering::Relaxed) {
            return;
        }
        let now_ms = shared.clock.now_ms();
        let suppressed = match event.flood_kind() {
            None => None,
            Some(kind) => {
                let mut flood = match shared.flood.lock() {
                    Ok(flood) => flood,
                    Err(poisoned) => poisoned.into_inner(),
                };
                // By /64 for IPv6, as the rate limits count: one host has that many addresses.
                match flood.admit(
                    (kind, origin.ip.map(crate::abuse::rate_limit::bucket_key)),
                    now_ms,
                ) {
                    None => return,
                    Some(left_out) => (left_out > 0).then_some(left_out),
                }
            }
        };
        let common = Common {
            client_id,
            subject,
            origin,
            node: &shared.node,
            source: "server",
            suppressed,
        };
        let Some(line) = render(now_ms, &common, &event) else {
            return;
        };
        match shared.queue.try_send(Message::Line(line)) {
            Ok(()) => {}
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => {
                shared.metrics.dropped();
                // Once per episode; the writer reports how many when it catches up.
                if shared.unreported_drops.fetch_add(1, Ordering::Relaxed) == 0 {
                    tracing::warn!(
                        event = event.name(),
                        "the audit queue is full: audit events are being left out \
                         (tokengate_audit_events_dropped_total counts them)"
                    );
                }
            }
        }
    }

    /// `config_reloaded`, for the SIGHUP config reload: `changed` and `needs_restart` name
    /// settings (`oauth.access_token_default_validity_period`, …); non-empty `problems` means
    /// the file was refused and the running config kept.
    pub fn config_reloaded(
        &self,
        changed: Vec<String>,
        needs_restart: Vec<String>,
        problems: Vec<String>,
    ) {
        self.record(
            &Origin::default(),
            None,
            None,
            Event::ConfigReloaded {
                changed,
                needs_restart,
                problems,
            },
        );
    }

    /// Opens the file again by its path (logrotate moved it away: SIGUSR1). Events recorded
    /// before go to the moved file, later ones to the new one.
    pub fn reopen(&self) {
        if self.shared.queue.try_send(Message::Reopen).is_err() {
            self.control(|control| control.reopen = true);
        }
    }

    /// Switches to new `[audit]` settings (a config reload): events recorded from now on go
    /// to the new destination, opened by the writer thread; if it cannot be opened, the old
    /// one is kept and an error logged.
    pub fn reconfigure(&self, settings: &AuditSettings) {
        self.shared.enabled.store(
            settings.destination != AuditDestination::Off,
            Ordering::Relaxed,
        );
        let message = Message::Settings(Box::new(settings.clone()));
        if let Err(TrySendError::Full(Message::Settings(settings))) =
            self.shared.queue.try_send(message)
        {
            self.control(move |control| control.settings = Some(*settings));
        }
    }

    /// The queue is full, so the writer is busy: it looks at the control block before its
    /// next batch.
    fn control(&self, change: impl FnOnce(&mut Control)) {
        match self.shared.control.lock() {
            Ok(mut control) => change(&mut control),
            Err(poisoned) => change(&mut poisoned.into_inner()),
        }
    }

    /// Waits (at most `timeout`) until everything recorded so far is written: at shutdown.
    /// Blocks the calling thread.
    pub fn flush_blocking(&self, timeout: Duration) -> bool {
        let (done, finished) = crossbeam_channel::bounded(1);
        let deadline = std::time::Instant::now() + timeout;
        if self
            .shared
            .queue
            .send_timeout(Message::Flush(done), timeout)
            .is_err()
        {
            return false;
        }
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        finished.recv_timeout(left).is_ok()
    }
}

/// Where the writer thread writes.
enum Target {
    Off,
    Stderr,
    File {
        path: PathBuf,
        file: File,
    },
    /// Tests: any writer.
    #[cfg(test)]
    Custom(Box<dyn io::Write + Send>),
}

impl Target {
    fn open(settings: &AuditSettings) -> Result<Self, AuditError> {
        Ok(match &settings.destination {
            AuditDestination::Off => Self::Off,
            AuditDestination::Stderr => Self::Stderr,
            AuditDestination::File(path) => Self::File {
                file: open_append(path)?.file,
                path: path.clone(),
            },
        })
    }
}

struct Writer {
    target: Target,
    max_bytes: Option<u64>,
    keep: u32,
    /// Weak: when the last [`Audit`] is dropped, the queue closes and the thread ends.
    shared: std::sync::Weak<Shared>,
    /// The last write failed (reported once until one succeeds).
    failing: bool,
}

/// Lines written per batch at most (one `write` each batch).
const BATCH_LINES: usize = 512;
/// The writer's rest after each batch: events wait at most this long to be written.
const BATCH_PAUSE: Duration = Duration::from_millis(10);

impl Writer {
    fn run(mut self, queue: &Receiver<Message>) {
        let mut batch = Vec::new();
        // Ends when every sender is gone (the last `Audit` dropped), after writing the rest.
        while let Ok(first) = queue.recv() {
            self.apply_control();
            let mut next = Some(first);
            let mut taken = 0;
            while let Some(message) = next.take() {
                match message {
                    Message::Line(line) => batch.extend_from_slice(&line),
                    Message::Reopen => {
                        self.write_out(&mut batch);
                        self.reopen();
                    }
                    Message::Settings(settings) => {
                        self.write_out(&mut batch);
                        self.apply_settings(&settings);
                    }
                    Message::Flush(done) => {
                        self.write_out(&mut batch);
                        let _ = done.send(());
                    }
                }
                taken += 1;
                if taken < BATCH_LINES {
                    next = queue.try_recv().ok();
                }
            }
            self.write_out(&mut batch);
            self.report_drops();
            // Events gather meanwhile: one wake-up and one write per pause under load, not a
            // thread switch and a write per event (each token request records one). A full
            // batch means a backlog: no rest then.
            if taken < BATCH_LINES {
                std::thread::park_timeout(BATCH_PAUSE);
            }
        }
    }

    fn write_out(&mut self, batch: &mut Vec<u8>) {
        if !batch.is_empty() {
            self.write(batch);
            batch.clear();
        }
    }

    fn apply_control(&mut self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let (reopen, settings) = {
            let mut control = match shared.control.lock() {
                Ok(control) => control,
                Err(poisoned) => poisoned.into_inner(),
            };
            (std::mem::take(&mut control.reopen), control.settings.take())
        };
        if let Some(settings) = settings {
            self.apply_settings(&settings);
        } else if reopen {
            self.reopen();
        }
    }

    fn apply_settings(&mut self, settings: &AuditSettings) {
        match Target::open(settings) {
            Ok(target) => {
                self.target = target;
                self.max_bytes = settings.max_bytes;
                self.keep = settings.keep;
            }
            Err(err) => {
                tracing::error!(error = %err, "the new [audit] settings are not applied; audit events go where they went")
            }
        }
    }

    fn reopen(&mut self) {
        if let Target::File { path, file } = &mut self.target {
            match open_append(path) {
                Ok(reopened) => *file = reopened.file,
                // Writing on to the moved file loses nothing.
                Err(err) => {
                    tracing::error!(error = %err, "cannot reopen the audit file; writing on to the old one")
                }
            }
        }
    }

    /// Writes a batch of lines; with `max_bytes`, in chunks of whole lines that each fit the
    /// room the file has left (or a fresh file's), so rotation keeps every file under it.
    fn write(&mut self, bytes: &[u8]) {
        let Some(max_bytes) = self
            .max_bytes
            .filter(|_| matches!(self.target, Target::File { .. }))
        else {
            return self.write_chunk(bytes);
        };
        let max_bytes = usize::try_from(max_bytes).unwrap_or(usize::MAX);
        let mut rest = bytes;
        while !rest.is_empty() {
            let size = match &self.target {
                Target::File { file, .. } => file.metadata().map_or(0, |meta| meta.len()),
                _ => 0,
            };
            let mut room = max_bytes.saturating_sub(usize::try_from(size).unwrap_or(usize::MAX));
            let mut take = 0;
            for line in rest.split_inclusive(|byte| *byte == b'\n') {
                if take == 0 && line.len() > room {
                    // The file is rotated before this chunk: a fresh one's room.
                    room = max_bytes;
                }
                if take > 0 && take + line.len() > room {
                    break;
                }
                take += line.len();
            }
            let (chunk, tail) = rest.split_at(take);
            self.write_chunk(chunk);
            rest = tail;
        }
    }

    fn write_chunk(&mut self, bytes: &[u8]) {
        self.rotate_if_needed(bytes.len());
        let written = match &mut self.target {
            Target::Off => Ok(()),
            Target::Stderr => io::stderr().lock().write_all(bytes),
            Target::File { file, .. } => file.write_all(bytes),
            #[cfg(test)]
            Target::Custom(writer) => writer.write_all(bytes).and_then(|()| writer.flush()),
        };
        match written {
            Ok(()) => self.failing = false,
            Err(err) => {
                if !std::mem::replace(&mut self.failing, true) {
                    tracing::error!(error = %err, "cannot write the audit trail; its events are lost until writing works again");
                }
            }
        }
    }

    /// With `max_bytes`: moves `audit.jsonl` to `audit.jsonl.1` (and `.1` to `.2`, … up to
    /// `keep`) before a batch would take it past the limit. A file that is still empty is
    /// written to whatever the batch's size, so a batch larger than the limit is not lost.
    fn rotate_if_needed(&mut self, adding: usize) {
        let (Some(max_bytes), Target::File { path, file }) = (self.max_bytes, &mut self.target)
        else {
            return;
        };
        // Another process may have rotated it already (a second server during an upgrade, or
        // logrotate before its signal): then the path names a new file, and rotating again
        // would push that one away too. Write on at the path instead.
        if !names_open_file(path, file) {
            match open_append(path) {
                Ok(fresh) => *file = fresh.file,
                Err(err) => {
                    tracing::error!(error = %err, "cannot reopen the audit file another process rotated; writing on to the old one");
                    return;
                }
            }
        }
        // The file's own size: the CLI appends to it too.
        let size = file.metadata().map_or(0, |meta| meta.len());
        if size == 0 || size.saturating_add(adding as u64) <= max_bytes {
            return;
        }
        let numbered = |n: u32| {
            let mut name = path.clone().into_os_string();
            name.push(format!(".{n}"));
            PathBuf::from(name)
        };
        let mut moved = Ok(());
        if self.keep == 0 {
            moved = std::fs::remove_file(&*path);
        } else {
            let _ = std::fs::remove_file(numbered(self.keep));
            for n in (1..self.keep).rev() {
                match std::fs::rename(numbered(n), numbered(n + 1)) {
                    Err(err) if err.kind() != io::ErrorKind::NotFound => moved = Err(err),
                    _ => {}
                }
            }
            if moved.is_ok() {
                moved = std::fs::rename(&*path, numbered(1));
            }
        }
        let reopened = moved
            .map_err(|source| AuditError::Open {
                path: path.clone(),
                source,
            })
            .and_then(|()| open_append(path));
        match reopened {
            Ok(fresh) => *file = fresh.file,
            Err(err) => {
                tracing::error!(error = %err, "cannot rotate the audit file; writing on to it")
            }
        }
    }

    fn report_drops(&self) {
        let Some(shared) = self.shared.upgrade() else {
            return;
        };
        let dropped = shared.unreported_drops.swap(0, Ordering::Relaxed);
        if dropped > 0 {
            tracing::warn!(
                dropped,
                "audit events were left out: the audit file was not taking them fast enough"
            );
        }
    }
}

/// Whether `path` still names the file `file` has open (same device and inode); not when the
/// path is gone or cannot be looked at.
fn names_open_file(path: &Path, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (std::fs::symlink_metadata(path), file.metadata()) {
        (Ok(at_path), Ok(open)) => at_path.dev() == open.dev() && at_path.ino() == open.ino(),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use super::*;
    use crate::clock::ManualClock;

    /// A writer that blocks on its first write until told to go on, and keeps what it got.
    struct Blocked {
        entered: mpsc::Sender<()>,
        release: Arc<(Mutex<bool>, std::sync::Condvar)>,
        written: Arc<Mutex<Vec<u8>>>,
    }

    impl io::Write for Blocked {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.entered.send(());
            let (released, wake) = &*self.release;
            let mut released = released.lock().unwrap();
            while !*released {
                released = wake.wait(released).unwrap();
            }
            self.written.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn issued(n: usize) -> Event {
        Event::TokenIssued {
            grant_type: "password",
            scope: "default".into(),
            token_id: format!("token-{n}"),
            refresh_token_id: None,
            grant_id: "grant".into(),
        }
    }

    #[test]
    fn a_full_queue_counts_the_events_it_leaves_out_and_never_waits() {
        let (entered, writer_entered) = mpsc::channel();
        let release = Arc::new((Mutex::new(false), std::sync::Condvar::new()));
        let written = Arc::new(Mutex::new(Vec::new()));
        let target = Target::Custom(Box::new(Blocked {
            entered,
            release: release.clone(),
            written: written.clone(),
        }));
        let (metrics, dropped) = AuditMetrics::for_test();
        let capacity = 8;
        let settings = AuditSettings {
            destination: AuditDestination::Stderr,
            max_bytes: None,
            keep: 0,
        };
        let audit = Audit::start_with(
            target,
            &settings,
            "node-a".into(),
            Arc::new(ManualClock::new(0)),
            metrics,
            capacity,
        )
        .unwrap();
        let origin = Origin::default();

        // The writer takes the first event and blocks writing it.
        audit.record(&origin, Some("app"), Some("alice"), issued(0));
        writer_entered
            .recv_timeout(Duration::from_secs(10))
            .unwrap();
        // The queue holds `capacity` more; the five after them are left out, at once.
        let started = std::time::Instant::now();
        for n in 1..=capacity + 5 {
            audit.record(&origin, Some("app"), Some("alice"), issued(n));
        }
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(dropped.get(), 5);

        // Once the file takes lines again, everything queued is written, in order.
        *release.0.lock().unwrap() = true;
        release.1.notify_all();
        assert!(audit.flush_blocking(Duration::from_secs(10)));
        let text = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        let ids: Vec<String> = text
            .lines()
            .map(|line| {
                let value: serde_json::Value = serde_json::from_str(line).unwrap();
                value["token_id"].as_str().unwrap().to_owned()
            })
            .collect();
        let expected: Vec<String> = (0..=capacity).map(|n| format!("token-{n}")).collect();
        assert_eq!(ids, expected);
    }

    fn file_settings(path: &Path) -> AuditSettings {
        AuditSettings {
            destination: AuditDestination::File(path.to_path_buf()),
            max_bytes: None,
            keep: 0,
        }
    }

    fn lines_of(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    #[test]
    fn new_settings_move_the_trail_to_another_file_or_turn_it_off() {
        let dir = tempfile::tempdir().unwrap();
        let (first, second) = (dir.path().join("a.jsonl"), dir.path().join("b/b.jsonl"));
        let audit = Audit::start(
            &file_settings(&first),
            "node-a".into(),
            Arc::new(ManualClock::new(0)),
            AuditMetrics::unregistered(),
        )
        .unwrap();
        let origin = Origin::default();

        audit.record(&origin, None, None, issued(1));
        audit.reconfigure(&file_settings(&second));
        audit.config_reloaded(vec!["audit.file".into()], Vec::new(), Vec::new());
        audit.reconfigure(&AuditSettings::off());
        audit.record(&origin, None, None, issued(2));
        assert!(audit.flush_blocking(Duration::from_secs(10)));

        let first = lines_of(&first);
        assert_eq!(first.len(), 1);
        assert_eq!(first[0]["token_id"], "token-1");
        let second = lines_of(&second);
        assert_eq!(second.len(), 1, "{second:?}");
        assert_eq!(second[0]["event"], "config_reloaded");
        assert_eq!(second[0]["outcome"], "success");
        assert_eq!(second[0]["changed"], serde_json::json!(["audit.file"]));
        assert_eq!(second[0]["client_id"], serde_json::Value::Null);
    }

    #[test]
    fn the_server_refuses_an_audit_path_that_is_a_symlink_or_a_hard_link() {
        let dir = tempfile::tempdir().unwrap();
        let (target, link) = (dir.path().join("elsewhere"), dir.path().join("a.jsonl"));
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let start = |path: &Path| {
            Audit::start(
                &file_settings(path),
                "node-a".into(),
                Arc::new(ManualClock::new(0)),
                AuditMetrics::unregistered(),
            )
        };

        let symlinked = start(&link);
        assert!(
            matches!(symlinked, Err(AuditError::Refused { .. })),
            "{symlinked:?}"
        );
        assert!(!target.exists());

        std::fs::write(&target, "").unwrap();
        let linked = dir.path().join("b.jsonl");
        std::fs::hard_link(&target, &linked).unwrap();
        let hard = start(&linked);
        assert!(matches!(hard, Err(AuditError::Refused { .. })), "{hard:?}");
    }

    #[test]
    fn repeated_failures_from_one_address_are_counted_and_state_changes_always_written() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let clock = Arc::new(ManualClock::new(0));
        let audit = Audit::start(
            &file_settings(&path),
            "node-a".into(),
            clock.clone(),
            AuditMetrics::unregistered(),
        )
        .unwrap();
        let from = |ip: &str| Origin {
            request_id: None,
            ip: Some(ip.parse().unwrap()),
        };
        let (a, b) = (from("192.0.2.1"), from("192.0.2.2"));
        let wrong = || Event::ClientAuthFailed {
            reason: ClientAuthFailure::WrongSecret,
        };
        let limited = || Event::RateLimited { bucket: "ip" };

        for n in 0..50 {
            audit.record(&a, Some("app"), None, wrong());
            audit.record(&a, None, None, limited());
            audit.record(&a, Some("app"), Some("alice"), issued(n));
        }
        audit.record(
            &a,
            Some("app"),
            None,
            Event::ClientAuthFailed {
                reason: ClientAuthFailure::UnknownClient,
            },
        );
        audit.record(&b, Some("app"), None, wrong());
        audit.record(
            &a,
            None,
            Some("alice"),
            Event::AccountLocked {
                locked_for: "address",
                locked_until: rfc3339_secs(60),
            },
        );
        audit.record(
            &a,
            None,
            Some("alice"),
            Event::AccountLocked {
                locked_for: "address",
                locked_until: rfc3339_secs(60),
            },
        );
        // Still the first window: a's repeats are left out.
        clock.advance_secs(9);
        audit.record(&a, Some("app"), None, wrong());
        clock.advance_secs(1);
        audit.record(&a, Some("app"), None, wrong());
        audit.record(&a, Some("app"), None, wrong());
        assert!(audit.flush_blocking(Duration::from_secs(10)));

        let lines = lines_of(&path);
        let named = |name: &str| -> Vec<&serde_json::Value> {
            lines.iter().filter(|line| line["event"] == name).collect()
        };
        assert_eq!(named("token_issued").len(), 50);
        assert_eq!(named("account_locked").len(), 2);
        assert_eq!(named("rate_limited").len(), 1);
        let failed = named("client_auth_failed");
        let reasons_and_counts: Vec<_> = failed
            .iter()
            .map(|line| {
                (
                    line["ip"].as_str().unwrap(),
                    line["reason"].as_str().unwrap(),
                    line.get("suppressed").cloned(),
                )
            })
            .collect();
        assert_eq!(
            reasons_and_counts,
            [
                ("192.0.2.1", "wrong_secret", None),
                ("192.0.2.1", "unknown_client", None),
                ("192.0.2.2", "wrong_secret", None),
                // 49 in the burst and one at 9 s; the one after it in the new window waits.
                ("192.0.2.1", "wrong_secret", Some(serde_json::json!(50))),
            ]
        );
    }

    #[test]
    fn a_file_another_process_rotated_already_is_reopened_not_rotated_again() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.jsonl");
        let numbered = |n: u32| dir.path().join(format!("a.jsonl.{n}"));
        let settings = AuditSettings {
            max_bytes: Some(400),
            keep: 2,
            ..file_settings(&path)
        };
        let audit = Audit::start(
            &settings,
            "node-a".into(),
            Arc::new(ManualClock::new(0)),
            AuditMetrics::unregistered(),
        )
        .unwrap();
        let origin = Origin::default();
        audit.record(&origin, None, None, issued(1));
        assert!(audit.flush_blocking(Duration::from_secs(10)));

        // The other server rotates and opens a new, empty file at the path.
        std::fs::rename(&path, numbered(1)).unwrap();
        std::fs::write(&path, "").unwrap();
        // This line would take the file this server has open past max_bytes.
        audit.record(&origin, None, None, issued(2));
        assert!(audit.flush_blocking(Duration::from_secs(10)));

        assert!(!numbered(2).exists(), "rotated a second time");
        let at_path = lines_of(&path);
        assert_eq!(at_path.len(), 1, "{at_path:?}");
        assert_eq!(at_path[0]["token_id"], "token-2");
        assert_eq!(lines_of(&numbered(1))[0]["token_id"], "token-1");
    }

    #[test]
    fn a_refused_config_reload_is_a_failure_naming_the_problems() {
        let event = Event::ConfigReloaded {
            changed: Vec::new(),
            needs_restart: Vec::new(),
            problems: vec!["identity.toml: oauth.issuer: must be an https URL".into()],
        };
        assert_eq!(event.outcome(), "failure");
        assert_eq!(event.name(), "config_reloaded");
    }

    #[test]
    fn a_line_has_the_common_fields_first_and_the_events_own_after() {
        let origin = Origin {
            request_id: Some("req-1".into()),
            ip: Some("192.0.2.7".parse().unwrap()),
        };
        let common = Common {
            client_id: Some("app"),
            subject: Some("alice"),
            origin: &origin,
            node: "node-a",
            source: "server",
            suppressed: None,
        };
        let line = render(1_700_000_000_123, &common, &issued(1)).unwrap();
        let text = String::from_utf8(line).unwrap();
        assert!(text.ends_with('\n') && text.lines().count() == 1, "{text}");
        assert!(
            text.starts_with(
                "{\"ts\":\"2023-11-14T22:13:20.123Z\",\"event\":\"token_issued\",\"outcome\":\"success\",\
                 \"client_id\":\"app\",\"subject\":\"alice\",\"ip\":\"192.0.2.7\",\"request_id\":\"req-1\",\
                 \"node\":\"node-a\",\"source\":\"server\",\"grant_type\":\"password\""
            ),
            "{text}"
        );
    }

    #[test]
    fn request_values_are_cut_and_control_characters_escaped() {
        let long = format!("eve\n{}", "x".repeat(300));
        let common = Common {
            client_id: Some(&long),
            subject: None,
            origin: &Origin::default(),
            node: "n",
            source: "server",
            suppressed: None,
        };
        let line = render(
            0,
            &common,
            &Event::ClientAuthFailed {
                reason: ClientAuthFailure::UnknownClient,
            },
        )
        .unwrap();
        let text = String::from_utf8(line).unwrap();
        assert_eq!(text.lines().count(), 1);
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        let client_id = value["client_id"].as_str().unwrap();
        assert_eq!(
            client_id.chars().count(),
            crate::telemetry::MAX_LOGGED_CHARS + 1
        );
        assert!(client_id.ends_with('…') && client_id.starts_with("eve\n"));
        assert_eq!(value["subject"], serde_json::Value::Null);
        assert_eq!(value["reason"], "unknown_client");
        assert_eq!(value["outcome"], "failure");
    }
}
