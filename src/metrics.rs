//! Every metric tokengate exports, by name, in one place (issue 11): the [`Registry`] the
//! management listener encodes, and one small handle per component, so each part records only
//! its own metrics and gets them through its constructor (no global recorder: several servers
//! run in one test process, each with its own registry).
//!
//! Labels are bounded: every label value is an enum or a `&'static str` chosen by the code,
//! never request text, except `client_id` on `tokengate_token_requests_total` when
//! `[management] per_client_metrics = true` (one series per client and outcome). Recording is
//! an atomic add, or a short lock for histograms, with no allocation for the label set.

use std::fmt::{self, Write as _};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeLabelValue, EncodeMetric as _, LabelValueEncoder,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::store::measured::StoreObserver;

/// The version and commit this binary was built from (`build.rs`; "unknown" without git).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
pub const COMMIT: &str = match option_env!("TOKENGATE_COMMIT") {
    Some(commit) => commit,
    None => "unknown",
};

/// Request latency, 0.5 ms (a refresh on SQLite) to 10 s (a stalled database).
const REQUEST_BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];
/// One argon2 verification: ~15 ms with the default parameters on one core.
const VERIFY_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 1.0,
];
/// One store operation or batch: 50 µs (a primary-key read) to 10 s (the client-side bound).
const STORE_BUCKETS: [f64; 15] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 3.0,
    10.0,
];
/// Rows or writes per group commit.
const BATCH_BUCKETS: [f64; 10] = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0];

/// Writes a label value known at compile time.
macro_rules! static_label_value {
    ($type:ty) => {
        impl EncodeLabelValue for $type {
            fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> fmt::Result {
                encoder.write_str(self.as_str())
            }
        }
    };
}

/// `endpoint` of the request metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Endpoint {
    Token,
    Revoke,
    Introspect,
    /// `/authorize` and its consent form: the login pages.
    Authorize,
    Logout,
    /// `/register` and `/register/{client_id}` (RFC 7591/7592).
    Register,
    /// `/client-registration/v0.17/register` (`[registration] wso2_compat`).
    RegisterWso2,
    /// The developer portal's pages (`/portal/…`).
    Portal,
    /// A path the token port does not serve.
    Other,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Token => "token",
            Self::Revoke => "revoke",
            Self::Introspect => "introspect",
            Self::Authorize => "authorize",
            Self::Logout => "logout",
            Self::Register => "register",
            Self::RegisterWso2 => "register_wso2",
            Self::Portal => "portal",
            Self::Other => "other",
        }
    }
}
static_label_value!(Endpoint);

/// `grant_type` of the request metrics: a known grant, `other` for anything else sent to
/// `/token` (unknown or missing), `none` for endpoints that take no grant type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum GrantLabel {
    Password,
    RefreshToken,
    ClientCredentials,
    AuthorizationCode,
    Other,
    None,
}

impl GrantLabel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::RefreshToken => "refresh_token",
            Self::ClientCredentials => "client_credentials",
            Self::AuthorizationCode => "authorization_code",
            Self::Other => "other",
            Self::None => "none",
        }
    }
}
static_label_value!(GrantLabel);

/// `outcome` of `tokengate_token_requests_total`: `ok`, or the RFC 6749 error code, with the
/// server's own refusals told apart (`rate_limited`, `overloaded` and
/// `unavailable` for the two kinds of `temporarily_unavailable`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    Ok,
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    AccessDenied,
    ServerError,
    /// Over a rate limit (429).
    RateLimited,
    /// Password hashing or a client's verification gate is saturated (503).
    Overloaded,
    /// The token store does not answer, or the node is not ready (503).
    Unavailable,
    /// An unknown path (404).
    NotFound,
    /// RFC 7591 §3.2.2 (`/register`).
    InvalidRedirectUri,
    InvalidClientMetadata,
    /// RFC 6750 §3.1: a bad initial or registration access token (`/register`).
    InvalidToken,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::AccessDenied => "access_denied",
            Self::ServerError => "server_error",
            Self::RateLimited => "rate_limited",
            Self::Overloaded => "overloaded",
            Self::Unavailable => "unavailable",
            Self::NotFound => "not_found",
            Self::InvalidRedirectUri => "invalid_redirect_uri",
            Self::InvalidClientMetadata => "invalid_client_metadata",
            Self::InvalidToken => "invalid_token",
        }
    }
}
static_label_value!(Outcome);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RequestLabels {
    endpoint: Endpoint,
    grant_type: GrantLabel,
    outcome: Outcome,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClientRequestLabels {
    endpoint: Endpoint,
    grant_type: GrantLabel,
    outcome: Outcome,
    /// The authenticated client; empty when authentication did not succeed.
    client_id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct DurationLabels {
    endpoint: Endpoint,
    grant_type: GrantLabel,
}

type HistogramFamily<S> = Family<S, Histogram, fn() -> Histogram>;

fn request_histogram() -> Histogram {
    Histogram::new(REQUEST_BUCKETS)
}

fn store_histogram() -> Histogram {
    Histogram::new(STORE_BUCKETS)
}

#[derive(Clone, Debug)]
enum RequestCounter {
    Plain(Family<RequestLabels, Counter>),
    PerClient(Family<ClientRequestLabels, Counter>),
}

/// `/token`, `/revoke`, `/introspect` (and unknown paths): what the HTTP layer records once
/// per request, when its answer is known.
#[derive(Clone, Debug)]
pub struct TokenEndpointMetrics {
    requests: RequestCounter,
    duration: HistogramFamily<DurationLabels>,
}

impl TokenEndpointMetrics {
    /// One answered request. `client_id` is the authenticated client (only used with
    /// `per_client_metrics`).
    pub fn record(
        &self,
        endpoint: Endpoint,
        grant_type: GrantLabel,
        outcome: Outcome,
        client_id: Option<&str>,
        elapsed: Duration,
    ) {
        match &self.requests {
            RequestCounter::Plain(family) => {
                family
                    .get_or_create(&RequestLabels {
                        endpoint,
                        grant_type,
                        outcome,
                    })
                    .inc();
            }
            RequestCounter::PerClient(family) => {
                family
                    .get_or_create(&ClientRequestLabels {
                        endpoint,
                        grant_type,
                        outcome,
                        client_id: client_id.unwrap_or_default().to_owned(),
                    })
                    .inc();
            }
        }
        self.duration
            .get_or_create(&DurationLabels {
                endpoint,
                grant_type,
            })
            .observe(elapsed.as_secs_f64());
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum VerifyOutcome {
    Valid,
    Invalid,
    Shed,
}

impl VerifyOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Valid => "valid",
            Self::Invalid => "invalid",
            Self::Shed => "shed",
        }
    }
}
static_label_value!(VerifyOutcome);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct VerifyLabels {
    outcome: VerifyOutcome,
}

/// The argon2 pool (`crypto/password.rs`).
#[derive(Clone, Debug)]
pub struct PasswordPoolMetrics {
    verifications: Family<VerifyLabels, Counter>,
    queue_depth: Gauge,
    verify_seconds: Histogram,
}

impl PasswordPoolMetrics {
    /// A worker finished a verification (`valid` false also for a stored hash it could not
    /// use), which took `took` of its time (queueing not included).
    pub fn verified(&self, valid: bool, took: Duration) {
        let outcome = if valid {
            VerifyOutcome::Valid
        } else {
            VerifyOutcome::Invalid
        };
        self.verifications
            .get_or_create(&VerifyLabels { outcome })
            .inc();
        self.verify_seconds.observe(took.as_secs_f64());
    }

    /// A verification was refused because the queue was full (answered 503).
    pub fn shed(&self) {
        self.verifications
            .get_or_create(&VerifyLabels {
                outcome: VerifyOutcome::Shed,
            })
            .inc();
    }

    /// A job entered the queue.
    pub fn queued(&self) {
        self.queue_depth.inc();
    }

    /// A worker took a job off the queue.
    pub fn dequeued(&self) {
        self.queue_depth.dec();
    }
}

/// Security events of the grants (`oauth/grants/`).
#[derive(Clone, Debug)]
pub struct GrantMetrics {
    account_lockouts: Counter,
    refresh_reuse: Counter,
    code_reuse: Counter,
}

impl GrantMetrics {
    /// Failed logins locked a user name (for one address or everywhere).
    pub fn account_locked(&self) {
        self.account_lockouts.inc();
    }

    /// A spent refresh token came back and its grant was revoked.
    pub fn refresh_reuse_detected(&self) {
        self.refresh_reuse.inc();
    }

    /// A redeemed authorization code came back and the tokens issued from it were revoked.
    pub fn authorization_code_reuse_detected(&self) {
        self.code_reuse.inc();
    }
}

/// `bucket` of `tokengate_rate_limited_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateBucket {
    Ip,
    Client,
}

impl RateBucket {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Ip => "ip",
            Self::Client => "client",
        }
    }
}
static_label_value!(RateBucket);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BucketLabels {
    bucket: RateBucket,
}

/// The rate limiters (`abuse/rate_limit.rs`).
#[derive(Clone, Debug)]
pub struct RateLimitMetrics {
    limited: Family<BucketLabels, Counter>,
}

impl RateLimitMetrics {
    /// The counter of requests refused by the limiter on `bucket`, for that limiter to keep.
    pub fn refused(&self, bucket: RateBucket) -> Counter {
        self.limited.get_or_create_owned(&BucketLabels { bucket })
    }
}

/// `reason` of `tokengate_connections_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RejectReason {
    /// `[server] max_connections_per_ip`.
    PerIpLimit,
    /// `[server] max_connections`.
    MaxConnections,
}

impl RejectReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PerIpLimit => "per_ip_limit",
            Self::MaxConnections => "max_connections",
        }
    }
}
static_label_value!(RejectReason);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct RejectLabels {
    reason: RejectReason,
}

/// Connections to the token port (`startup.rs` accept loop, `connection.rs`).
#[derive(Clone, Debug)]
pub struct ConnectionMetrics {
    open: Gauge,
    handshake_failures: Counter,
    rejected: Family<RejectLabels, Counter>,
}

/// Counts one open connection until dropped, however the connection ends (also when its
/// task is dropped mid-request).
#[derive(Debug)]
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl ConnectionMetrics {
    /// An accepted connection, counted open until the guard is dropped.
    pub fn opened(&self) -> OpenConnection {
        self.open.inc();
        OpenConnection(self.open.clone())
    }

    /// The counter of failed or timed-out TLS handshakes, for each connection to take.
    pub fn handshake_failures(&self) -> Counter {
        self.handshake_failures.clone()
    }

    /// A connection closed at once because of a limit.
    pub fn rejected(&self, reason: RejectReason) {
        self.rejected.get_or_create(&RejectLabels { reason }).inc();
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct TableLabels {
    table: &'static str,
}

/// The janitor (`janitor.rs`).
#[derive(Clone, Debug)]
pub struct JanitorMetrics {
    purged: Family<TableLabels, Counter>,
}

impl JanitorMetrics {
    /// `rows` deleted from `table` (the store's table name, e.g. `"refresh_tokens"`).
    pub fn purged(&self, table: &'static str, rows: u64) {
        self.purged
            .get_or_create(&TableLabels { table })
            .inc_by(rows);
    }
}

/// `state` of `tokengate_signing_keys`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyState {
    /// Signs new tokens now.
    Active,
    /// Published, not signing yet (a rotated-in key during the cluster's activation delay).
    Pending,
    /// Replaced, still published while tokens it signed may be live.
    Published,
    /// No longer published: its file may be deleted.
    Retired,
}

impl KeyState {
    pub const ALL: [Self; 4] = [Self::Active, Self::Pending, Self::Published, Self::Retired];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Pending => "pending",
            Self::Published => "published",
            Self::Retired => "retired",
        }
    }
}
static_label_value!(KeyState);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct KeyStateLabels {
    state: KeyState,
}

/// The JWT signing keys of this node's folder.
#[derive(Clone, Debug)]
pub struct SigningKeyMetrics {
    keys: Family<KeyStateLabels, Gauge>,
}

impl SigningKeyMetrics {
    /// How many keys are in `state` now.
    pub fn set(&self, state: KeyState, keys: usize) {
        self.keys
            .get_or_create(&KeyStateLabels { state })
            .set(i64::try_from(keys).unwrap_or(i64::MAX));
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum ReloadOutcome {
    Ok,
    Error,
}

impl ReloadOutcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Ok => "ok",
            Self::Error => "error",
        }
    }
}
static_label_value!(ReloadOutcome);

/// What was re-read: `source` of `tokengate_config_reloads_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReloadSource {
    /// `identity.toml`, on SIGHUP.
    Config,
    /// The token port's certificate and key.
    Tls,
    /// The management listener's certificate and key.
    ManagementTls,
    /// The JWT signing-key folder.
    SigningKeys,
}

impl ReloadSource {
    const ALL: [Self; 4] = [
        Self::Config,
        Self::Tls,
        Self::ManagementTls,
        Self::SigningKeys,
    ];

    fn as_str(self) -> &'static str {
        match self {
            Self::Config => "config",
            Self::Tls => "tls",
            Self::ManagementTls => "management_tls",
            Self::SigningKeys => "signing_keys",
        }
    }
}
static_label_value!(ReloadSource);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ReloadLabels {
    outcome: ReloadOutcome,
    source: ReloadSource,
}

/// Every reload counter; [`Reloads::of`] gives each reloading part its own handle.
#[derive(Clone, Debug)]
pub struct Reloads {
    reloads: Family<ReloadLabels, Counter>,
}

impl Reloads {
    pub fn of(&self, source: ReloadSource) -> ReloadMetrics {
        ReloadMetrics {
            reloads: self.reloads.clone(),
            source,
        }
    }
}

/// One reloading part's counter: the config file, a certificate, the signing-key folder.
#[derive(Clone, Debug)]
pub struct ReloadMetrics {
    reloads: Family<ReloadLabels, Counter>,
    source: ReloadSource,
}

impl ReloadMetrics {
    /// A changed file was re-read: `ok`, or refused (what was running stays).
    pub fn reloaded(&self, ok: bool) {
        let outcome = if ok {
            ReloadOutcome::Ok
        } else {
            ReloadOutcome::Error
        };
        let source = self.source;
        self.reloads
            .get_or_create(&ReloadLabels { outcome, source })
            .inc();
    }
}

/// `listener` of `tokengate_tls_certificate_expiry_seconds`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TlsListener {
    /// The token port.
    Https,
    Management,
}

impl TlsListener {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Https => "https",
            Self::Management => "management",
        }
    }
}
static_label_value!(TlsListener);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ListenerLabels {
    listener: TlsListener,
}

/// The certificates the listeners present.
#[derive(Clone, Debug)]
pub struct TlsMetrics {
    expiry: Family<ListenerLabels, Gauge>,
}

impl TlsMetrics {
    /// The certificate `listener` now presents expires at `not_after` (Unix seconds).
    pub fn certificate_expires(&self, listener: TlsListener, not_after: i64) {
        self.expiry
            .get_or_create(&ListenerLabels { listener })
            .set(not_after);
    }
}

/// What happened to a client (`tokengate_client_changes_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientChange {
    Registered,
    Updated,
    SecretRegenerated,
    Disabled,
    Enabled,
    Deleted,
}

impl ClientChange {
    pub const ALL: [ClientChange; 6] = [
        Self::Registered,
        Self::Updated,
        Self::SecretRegenerated,
        Self::Disabled,
        Self::Enabled,
        Self::Deleted,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Registered => "registered",
            Self::Updated => "updated",
            Self::SecretRegenerated => "secret_regenerated",
            Self::Disabled => "disabled",
            Self::Enabled => "enabled",
            Self::Deleted => "deleted",
        }
    }
}
static_label_value!(ClientChange);

/// Through what a client was changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientChangeVia {
    /// RFC 7591/7592 (`/register`).
    Register,
    /// WSO2's `/client-registration/v0.17/register`.
    Wso2,
    /// The developer portal.
    Portal,
}

impl ClientChangeVia {
    pub const ALL: [ClientChangeVia; 3] = [Self::Register, Self::Wso2, Self::Portal];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Register => "register",
            Self::Wso2 => "wso2",
            Self::Portal => "portal",
        }
    }
}
static_label_value!(ClientChangeVia);

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ClientChangeLabels {
    change: ClientChange,
    via: ClientChangeVia,
}

/// Clients registered, changed and deleted while running (registration endpoints, portal).
#[derive(Clone, Debug, Default)]
pub struct ClientChangeMetrics {
    changes: Family<ClientChangeLabels, Counter>,
}

impl ClientChangeMetrics {
    pub fn changed(&self, change: ClientChange, via: ClientChangeVia) {
        self.changes
            .get_or_create(&ClientChangeLabels { change, via })
            .inc();
    }

    /// How many `change`s through `via` were counted (for tests).
    pub fn count(&self, change: ClientChange, via: ClientChangeVia) -> u64 {
        self.changes
            .get_or_create(&ClientChangeLabels { change, via })
            .get()
    }
}

/// The audit trail's writer (`audit.rs`).
#[derive(Clone, Debug)]
pub struct AuditMetrics {
    dropped: Counter,
}

impl AuditMetrics {
    /// An audit event was left out: the queue to the writer thread was full.
    pub fn dropped(&self) {
        self.dropped.inc();
    }

    /// Counts into nothing (the CLI, which writes its events itself).
    pub fn unregistered() -> Self {
        Self {
            dropped: Counter::default(),
        }
    }

    /// A handle and its counter, for tests to read.
    #[cfg(test)]
    pub(crate) fn for_test() -> (Self, Counter) {
        let dropped = Counter::default();
        (
            Self {
                dropped: dropped.clone(),
            },
            dropped,
        )
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct OpLabels {
    op: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ErrorKindLabels {
    kind: &'static str,
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct PoolStateLabels {
    state: &'static str,
}

/// The token store (`store/`). Names are fixed by the code (`&'static str`), so the label
/// sets stay bounded.
#[derive(Clone, Debug)]
pub struct StoreMetrics {
    operation_seconds: HistogramFamily<OpLabels>,
    batch_size: Histogram,
    errors: Family<ErrorKindLabels, Counter>,
    connections: Family<PoolStateLabels, Gauge>,
}

impl StoreMetrics {
    /// One store operation (`op`: e.g. `"create_tokens"`, `"rotate"`) took `elapsed`.
    pub fn operation(&self, op: &'static str, elapsed: Duration) {
        self.operation_seconds
            .get_or_create(&OpLabels { op })
            .observe(elapsed.as_secs_f64());
    }

    /// A group commit wrote `size` requests' writes in one transaction.
    pub fn batch(&self, size: usize) {
        // Precision past 2^53 writes is not needed.
        #[allow(clippy::cast_precision_loss)]
        self.batch_size.observe(size as f64);
    }

    /// An operation failed (`kind`: e.g. `"unavailable"`, `"conflict"`, `"corrupt"`).
    pub fn error(&self, kind: &'static str) {
        self.errors.get_or_create(&ErrorKindLabels { kind }).inc();
    }

    /// The PostgreSQL pools' connections now.
    pub fn connections(&self, idle: usize, busy: usize) {
        for (state, count) in [("idle", idle), ("busy", busy)] {
            self.connections
                .get_or_create(&PoolStateLabels { state })
                .set(i64::try_from(count).unwrap_or(i64::MAX));
        }
    }
}

impl StoreObserver for StoreMetrics {
    fn operation(&self, op: &'static str, elapsed: Duration) {
        StoreMetrics::operation(self, op, elapsed);
    }

    fn failed(&self, _op: &'static str, kind: &'static str) {
        self.error(kind);
    }

    fn committed_batch(&self, writes: usize) {
        self.batch(writes);
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct BuildLabels {
    version: &'static str,
    commit: &'static str,
}

/// The registry and every component's handle, made once at startup; `startup.rs` hands each
/// handle to its component and the registry to the management listener.
#[derive(Debug)]
pub struct Metrics {
    pub registry: Registry,
    pub token_endpoint: TokenEndpointMetrics,
    pub password_pool: PasswordPoolMetrics,
    pub grants: GrantMetrics,
    pub rate_limits: RateLimitMetrics,
    pub connections: ConnectionMetrics,
    pub janitor: JanitorMetrics,
    pub signing_keys: SigningKeyMetrics,
    pub reloads: Reloads,
    pub tls: TlsMetrics,
    pub store: StoreMetrics,
    pub audit: AuditMetrics,
    pub client_changes: ClientChangeMetrics,
}

impl Metrics {
    /// Every metric, registered. `per_client` adds `client_id` to
    /// `tokengate_token_requests_total` (`[management] per_client_metrics`).
    pub fn new(per_client: bool) -> Self {
        // Series with a fixed set of labels are created at once (dropping the guard that
        // `get_or_create` returns), so they are exported at 0 before their first event.
        let mut registry = Registry::default();

        let requests = if per_client {
            let family = Family::<ClientRequestLabels, Counter>::default();
            registry.register(
                "tokengate_token_requests",
                "Requests to /token, /revoke, /introspect (and unknown paths: endpoint=\"other\"), by outcome",
                family.clone(),
            );
            RequestCounter::PerClient(family)
        } else {
            let family = Family::<RequestLabels, Counter>::default();
            registry.register(
                "tokengate_token_requests",
                "Requests to /token, /revoke, /introspect (and unknown paths: endpoint=\"other\"), by outcome",
                family.clone(),
            );
            RequestCounter::Plain(family)
        };
        let duration: HistogramFamily<DurationLabels> =
            Family::new_with_constructor(request_histogram);
        registry.register(
            "tokengate_request_duration_seconds",
            "Time from the request reaching the router to its answer",
            duration.clone(),
        );
        let token_endpoint = TokenEndpointMetrics { requests, duration };

        let password_pool = PasswordPoolMetrics {
            verifications: Family::default(),
            queue_depth: Gauge::default(),
            verify_seconds: Histogram::new(VERIFY_BUCKETS),
        };
        for outcome in [
            VerifyOutcome::Valid,
            VerifyOutcome::Invalid,
            VerifyOutcome::Shed,
        ] {
            drop(
                password_pool
                    .verifications
                    .get_or_create(&VerifyLabels { outcome }),
            );
        }
        registry.register(
            "tokengate_password_verifications",
            "argon2 verifications of user passwords and client secrets: valid, invalid, or shed (queue full, 503)",
            password_pool.verifications.clone(),
        );
        registry.register(
            "tokengate_password_queue_depth",
            "Verifications waiting for a hashing thread",
            password_pool.queue_depth.clone(),
        );
        registry.register(
            "tokengate_password_verify_seconds",
            "Hashing-thread time of one argon2 verification (queueing not included)",
            password_pool.verify_seconds.clone(),
        );

        let grants = GrantMetrics {
            account_lockouts: Counter::default(),
            refresh_reuse: Counter::default(),
            code_reuse: Counter::default(),
        };
        registry.register(
            "tokengate_account_lockouts",
            "User names locked after repeated failed logins (for one address or everywhere)",
            grants.account_lockouts.clone(),
        );
        registry.register(
            "tokengate_refresh_reuse_detected",
            "Spent refresh tokens presented again; each revoked its grant",
            grants.refresh_reuse.clone(),
        );
        registry.register(
            "tokengate_authorization_code_reuse_detected",
            "Redeemed authorization codes presented again; each revoked the tokens issued from it",
            grants.code_reuse.clone(),
        );

        let rate_limits = RateLimitMetrics {
            limited: Family::default(),
        };
        for bucket in [RateBucket::Ip, RateBucket::Client] {
            drop(rate_limits.limited.get_or_create(&BucketLabels { bucket }));
        }
        registry.register(
            "tokengate_rate_limited",
            "Requests refused with 429 by the rate limit on the client IP or the client id",
            rate_limits.limited.clone(),
        );

        let connections = ConnectionMetrics {
            open: Gauge::default(),
            handshake_failures: Counter::default(),
            rejected: Family::default(),
        };
        for reason in [RejectReason::PerIpLimit, RejectReason::MaxConnections] {
            drop(connections.rejected.get_or_create(&RejectLabels { reason }));
        }
        registry.register(
            "tokengate_tls_handshake_failures",
            "TLS handshakes on the token port that failed or timed out",
            connections.handshake_failures.clone(),
        );
        registry.register(
            "tokengate_connections_open",
            "Open connections to the token port (from accept to close)",
            connections.open.clone(),
        );
        registry.register(
            "tokengate_connections_rejected",
            "Connections to the token port closed at once because of a connection limit",
            connections.rejected.clone(),
        );

        let janitor = JanitorMetrics {
            purged: Family::default(),
        };
        // Every series exists from the start, so that rate() sees the first increase.
        for (table, _) in crate::store::PurgedRows::default().by_table() {
            drop(janitor.purged.get_or_create(&TableLabels { table }));
        }
        registry.register(
            "tokengate_janitor_purged_rows",
            "Rows the janitor deleted, by table",
            janitor.purged.clone(),
        );

        let signing_keys = SigningKeyMetrics {
            keys: Family::default(),
        };
        registry.register(
            "tokengate_signing_keys",
            "JWT signing keys in this node's folder: active (signs), pending, published (replaced, still in /jwks), retired (may be deleted)",
            signing_keys.keys.clone(),
        );

        let reloads = Reloads {
            reloads: Family::default(),
        };
        for outcome in [ReloadOutcome::Ok, ReloadOutcome::Error] {
            for source in ReloadSource::ALL {
                drop(
                    reloads
                        .reloads
                        .get_or_create(&ReloadLabels { outcome, source }),
                );
            }
        }
        registry.register(
            "tokengate_config_reloads",
            "Re-reads while running, by what was re-read (config: identity.toml on SIGHUP; tls, management_tls: a certificate and key; signing_keys: the key folder): ok, or error (refused; what was running stays)",
            reloads.reloads.clone(),
        );

        let tls = TlsMetrics {
            expiry: Family::default(),
        };
        registry.register(
            "tokengate_tls_certificate_expiry_seconds",
            "When the certificate a listener presents expires (notAfter), as Unix time in seconds",
            tls.expiry.clone(),
        );

        let store = StoreMetrics {
            operation_seconds: Family::new_with_constructor(store_histogram),
            batch_size: Histogram::new(BATCH_BUCKETS),
            errors: Family::default(),
            connections: Family::default(),
        };
        for kind in crate::store::measured::FAILURE_KINDS {
            drop(store.errors.get_or_create(&ErrorKindLabels { kind }));
        }
        registry.register(
            "tokengate_store_operation_seconds",
            "Time of one token-store operation",
            store.operation_seconds.clone(),
        );
        registry.register(
            "tokengate_store_batch_size",
            "Requests' writes committed together in one group commit",
            store.batch_size.clone(),
        );
        registry.register(
            "tokengate_store_errors",
            "Failed token-store operations by kind",
            store.errors.clone(),
        );
        registry.register(
            "tokengate_db_connections",
            "PostgreSQL pool connections: idle or busy",
            store.connections.clone(),
        );

        let build_info = Family::<BuildLabels, Gauge>::default();
        build_info
            .get_or_create(&BuildLabels {
                version: VERSION,
                commit: COMMIT,
            })
            .set(1);
        registry.register(
            "tokengate_build_info",
            "Always 1; the labels say which build this is",
            build_info,
        );
        let client_changes = ClientChangeMetrics::default();
        for change in ClientChange::ALL {
            for via in ClientChangeVia::ALL {
                drop(
                    client_changes
                        .changes
                        .get_or_create(&ClientChangeLabels { change, via }),
                );
            }
        }
        registry.register(
            "tokengate_client_changes",
            "Clients registered, updated, given a new secret, disabled, enabled or deleted while running, by how (register: RFC 7591/7592; wso2: WSO2's registration API; portal: the developer portal)",
            client_changes.changes.clone(),
        );
        let audit = AuditMetrics::unregistered();
        registry.register(
            "tokengate_audit_events_dropped",
            "Audit events left out because the queue to the audit file's writer was full",
            audit.dropped.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector));

        Self {
            registry,
            token_endpoint,
            password_pool,
            grants,
            rate_limits,
            connections,
            janitor,
            signing_keys,
            reloads,
            tls,
            store,
            audit,
            client_changes,
        }
    }
}

/// The Prometheus content type of what [`encode`] writes (text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The registry in the Prometheus text exposition format.
pub fn encode(registry: &Registry) -> Result<String, fmt::Error> {
    let mut text = String::with_capacity(16 * 1024);
    prometheus_client::encoding::prometheus_text::encode(&mut text, registry)?;
    Ok(text)
}

/// The standard `process_*` metrics, read from `/proc/self` at scrape time (Linux; elsewhere
/// they are left out).
#[derive(Debug)]
struct ProcessCollector;

/// `USER_HZ`: the unit of the CPU times in `/proc`, 100 on every Linux architecture.
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

/// What `/proc/self/stat` says about this process.
struct ProcStat {
    cpu_ticks: u64,
    start_ticks: u64,
}

fn proc_stat() -> Option<ProcStat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name (field 2) may hold spaces and parentheses: fields count from the last ')'.
    let (_, rest) = text.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Fields 14 (utime), 15 (stime) and 22 (starttime) of proc(5); `rest` starts at field 3.
    let number = |field: usize| -> Option<u64> { fields.get(field - 3)?.parse().ok() };
    Some(ProcStat {
        cpu_ticks: number(14)?.saturating_add(number(15)?),
        start_ticks: number(22)?,
    })
}

/// `key:   value ...` lines (`/proc/self/status`, `/proc/stat`, `/proc/self/limits`): the first
/// number after `key`.
fn proc_value(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines()
        .find_map(|line| line.strip_prefix(key))
        .and_then(|rest| rest.trim_start_matches(':').split_whitespace().next())
        .and_then(|value| value.parse().ok())
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        // Precision past 2^53 bytes or ticks is not needed.
        #![allow(clippy::cast_precision_loss)]
        if let Some(kib) = proc_value("/proc/self/status", "VmRSS") {
            let gauge = ConstGauge::new(kib.saturating_mul(1024) as f64);
            gauge.encode(encoder.encode_descriptor(
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                None,
                gauge.metric_type(),
            )?)?;
        }
        let stat = proc_stat();
        if let Some(stat) = &stat {
            let counter = ConstCounter::new(stat.cpu_ticks as f64 / CLOCK_TICKS_PER_SEC);
            counter.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "User and system CPU time spent in seconds",
                None,
                counter.metric_type(),
            )?)?;
        }
        if let Ok(entries) = std::fs::read_dir("/proc/self/fd") {
            let gauge = ConstGauge::new(entries.count() as f64);
            gauge.encode(encoder.encode_descriptor(
                "process_open_fds",
                "Number of open file descriptors",
                None,
                gauge.metric_type(),
            )?)?;
        }
        if let Some(limit) = proc_value("/proc/self/limits", "Max open files") {
            let gauge = ConstGauge::new(limit as f64);
            gauge.encode(encoder.encode_descriptor(
                "process_max_fds",
                "Maximum number of open file descriptors",
                None,
                gauge.metric_type(),
            )?)?;
        }
        let boot = proc_value("/proc/stat", "btime");
        if let (Some(stat), Some(boot)) = (&stat, boot) {
            let started = boot as f64 + stat.start_ticks as f64 / CLOCK_TICKS_PER_SEC;
            let gauge = ConstGauge::new(started);
            gauge.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                None,
                gauge.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_is_exported_under_its_issue_11_name() {
        let metrics = Metrics::new(false);
        metrics.token_endpoint.record(
            Endpoint::Token,
            GrantLabel::RefreshToken,
            Outcome::Ok,
            Some("app"),
            Duration::from_millis(2),
        );
        metrics.store.operation("rotate", Duration::from_millis(1));
        metrics.store.batch(3);
        metrics.store.error("unavailable");
        metrics.store.connections(2, 1);
        metrics.janitor.purged("refresh_tokens", 5);
        metrics.signing_keys.set(KeyState::Active, 1);

        let text = encode(&metrics.registry).unwrap();

        for name in [
            "tokengate_token_requests_total{endpoint=\"token\",grant_type=\"refresh_token\",outcome=\"ok\"} 1",
            "tokengate_request_duration_seconds_count{endpoint=\"token\",grant_type=\"refresh_token\"} 1",
            "tokengate_password_verifications_total{outcome=\"shed\"} 0",
            "tokengate_password_queue_depth 0",
            "tokengate_password_verify_seconds_count 0",
            "tokengate_account_lockouts_total 0",
            "tokengate_refresh_reuse_detected_total 0",
            "tokengate_rate_limited_total{bucket=\"client\"} 0",
            "tokengate_tls_handshake_failures_total 0",
            "tokengate_connections_open 0",
            "tokengate_connections_rejected_total{reason=\"per_ip_limit\"} 0",
            "tokengate_janitor_purged_rows_total{table=\"refresh_tokens\"} 5",
            "tokengate_signing_keys{state=\"active\"} 1",
            "tokengate_config_reloads_total{outcome=\"error\",source=\"config\"} 0",
            "tokengate_store_operation_seconds_count{op=\"rotate\"} 1",
            "tokengate_store_batch_size_sum 3",
            "tokengate_store_errors_total{kind=\"unavailable\"} 1",
            "tokengate_db_connections{state=\"busy\"} 1",
            "tokengate_audit_events_dropped_total 0",
            "tokengate_build_info{version=\"",
            "process_resident_memory_bytes ",
            "process_cpu_seconds_total ",
            "process_open_fds ",
            "process_max_fds ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(name), "`{name}` missing in:\n{text}");
        }
        assert!(!text.contains("client_id"), "{text}");
    }

    #[test]
    fn per_client_metrics_label_requests_with_the_authenticated_client_only() {
        let metrics = Metrics::new(true);
        metrics.token_endpoint.record(
            Endpoint::Token,
            GrantLabel::ClientCredentials,
            Outcome::Ok,
            Some("service-app"),
            Duration::from_millis(1),
        );
        metrics.token_endpoint.record(
            Endpoint::Token,
            GrantLabel::ClientCredentials,
            Outcome::InvalidClient,
            None,
            Duration::from_millis(1),
        );

        let text = encode(&metrics.registry).unwrap();

        assert!(text.contains("tokengate_token_requests_total{endpoint=\"token\",grant_type=\"client_credentials\",outcome=\"ok\",client_id=\"service-app\"} 1"), "{text}");
        assert!(
            text.contains("outcome=\"invalid_client\",client_id=\"\"} 1"),
            "{text}"
        );
        assert!(!text.contains("tokengate_request_duration_seconds_count{endpoint=\"token\",grant_type=\"client_credentials\",client_id"), "{text}");
    }

    #[test]
    fn a_connection_guard_counts_until_dropped() {
        let metrics = Metrics::new(false);
        let first = metrics.connections.opened();
        let second = metrics.connections.opened();
        assert_eq!(metrics.connections.open.get(), 2);
        drop(first);
        drop(second);
        assert_eq!(metrics.connections.open.get(), 0);
    }
}
