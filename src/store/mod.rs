//! Persistence behind traits: one trait per aggregate, one implementation per backend, chosen
//! once at startup by [`open_token_store`].

pub mod directory;
pub mod measured;
pub mod model;
pub mod postgres;
pub mod redirect_uri;
mod revocation;
mod sql;
pub mod sqlite;
pub mod toml_file;

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;

use crate::abuse::rate_limit::{Rate, Take};
use crate::crypto::token::SecretDigest;
use crate::crypto::token::TokenId;
use measured::{ConnectionPools, StoreObserver};
use model::{
    AccessTokenRecord, AuthorizationCodeRecord, Client, ConsentRecord, InitialAccessTokenRecord,
    InitialTokenRow, LoginSessionRecord, NewTokens, PreviousSecret, RefreshTokenRecord,
    RegistrationRecord, Role, User,
};
use std::fmt;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or is shutting down; the request may be retried.
    #[error("token store unavailable: {0}")]
    Unavailable(String),
    /// A stored row does not decode; never expected, reported rather than panicking.
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("token store error: {0}")]
    Backend(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// What the janitor may delete (see [`TokenStore::purge`]).
#[derive(Debug, Clone, Copy)]
pub struct PurgeLimits {
    pub expired_before: i64,
    /// Failed-login rows whose window started before this and that hold no current lock.
    pub failures_before: i64,
    /// Shared rate-limit buckets full again before this (ms): they mean nothing any more.
    pub buckets_full_before_ms: i64,
    pub now: i64,
    pub batch: u32,
}

/// The rows one purge batch deleted, per table (a table a backend does not have stays 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PurgedRows {
    pub access_tokens: u64,
    pub refresh_tokens: u64,
    pub revoked_families: u64,
    pub login_failures: u64,
    pub rate_buckets: u64,
    pub published_keys: u64,
    pub authorization_codes: u64,
    pub login_sessions: u64,
    pub initial_access_tokens: u64,
}

impl PurgedRows {
    /// Each table's name and count.
    pub fn by_table(&self) -> [(&'static str, u64); 9] {
        [
            ("access_tokens", self.access_tokens),
            ("refresh_tokens", self.refresh_tokens),
            ("revoked_families", self.revoked_families),
            ("login_failures", self.login_failures),
            ("rate_buckets", self.rate_buckets),
            ("published_keys", self.published_keys),
            ("authorization_codes", self.authorization_codes),
            ("login_sessions", self.login_sessions),
            ("initial_access_tokens", self.initial_access_tokens),
        ]
    }

    pub fn total(&self) -> u64 {
        self.by_table()
            .iter()
            .fold(0, |sum, (_, rows)| sum.saturating_add(*rows))
    }
}

/// Outcome of redeeming a refresh token under rotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rotation {
    /// The old token was marked spent and the new tokens recorded, in one transaction.
    Rotated,
    /// The old token was already spent or revoked when the write ran (e.g. a concurrent
    /// redemption won the race); nothing was written.
    AlreadySpent,
}

/// What replaces a live refresh token under rotation, decided by the caller once the store has
/// read the token (see [`TokenStore::rotate_presented`]): the tokens to record in its place, or
/// `None` to leave it as it is. It runs where the store reads (the SQLite writer's thread), so
/// it must be quick: checks and record building, no I/O and no signing.
pub type Successor = Box<dyn FnOnce(&RefreshTokenRecord) -> Option<NewTokens> + Send>;

/// What `successor` makes of the refresh token `old` as read: nothing for a spent or revoked
/// token (it is not asked), nothing when it declines or panics (on the SQLite writer's thread a
/// panic would end the thread, and with it every write of the process).
fn successor_of(old: &RefreshTokenRecord, successor: Successor) -> Option<NewTokens> {
    if old.spent_at.is_some() || old.token.revoked_at.is_some() {
        return None;
    }
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| successor(old))) {
        Ok(decided) => decided,
        Err(_) => {
            tracing::error!("a refresh token's successor panicked; the token is left as it was");
            None
        }
    }
}

/// Outcome of [`TokenStore::rotate_presented`].
#[derive(Debug)]
pub enum PresentedRotation {
    /// No refresh token has this id.
    Unknown,
    /// The token as read, left as it was: spent, revoked, or declined by the successor.
    Kept(RefreshTokenRecord),
    /// The token as read before it was spent, and the tokens recorded in its place.
    Rotated {
        old: RefreshTokenRecord,
        new: Box<NewTokens>,
    },
}

/// Outcome of redeeming an authorization code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redemption {
    /// The code was marked redeemed and the tokens recorded, in one transaction.
    Redeemed,
    /// The code was already redeemed (e.g. a concurrent redemption won the race), expired, or
    /// is unknown when the write ran; nothing was written.
    Refused,
}

/// Whose tokens a not-before mark ends (see [`TokenStore::revoke_subject`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SubjectKind {
    /// Every token of the user, whatever client it was issued to.
    User,
    /// Every token issued to the client, for any user or for the client itself.
    Client,
}

impl SubjectKind {
    /// The `kind` column of `revoked_subjects`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::Client => "client",
        }
    }
}

/// Issued tokens, keyed by their time-ordered id, holding only digests of their secrets.
#[async_trait]
pub trait TokenStore: Send + Sync + 'static {
    /// Records the tokens of one grant. Returns once they are durable (committed).
    async fn create_tokens(&self, tokens: NewTokens) -> Result<(), StoreError>;

    /// RFC 7009: revokes one access token. `Ok(false)` if it was unknown or already revoked.
    async fn revoke_access_token(&self, id: &TokenId, now: i64) -> Result<bool, StoreError>;

    /// RFC 7009 §2.1: revokes every token of a grant (refresh and access tokens sharing
    /// `family_id`). The revocation is kept until no token issued before it is stored (see
    /// [`TokenStore::purge`]), whatever lifetimes are configured later. `Ok(false)` if the
    /// family was already revoked.
    async fn revoke_family(&self, family_id: &TokenId, now: i64) -> Result<bool, StoreError>;

    /// Not-before revocation (as Keycloak's): every token of every grant of the user or client
    /// `name` that started before `not_before_ms` counts as revoked from the commit on, on
    /// every node, with one write however many tokens there are. A grant started at or after
    /// that millisecond is not affected. The mark is kept for good (one row per subject); a
    /// later call with an earlier time does not move it back.
    async fn revoke_subject(
        &self,
        kind: SubjectKind,
        name: &str,
        not_before_ms: i64,
        now: i64,
    ) -> Result<(), StoreError>;

    /// `Ok(None)` when no refresh token has this id. `revoked_at` includes the revocation of
    /// the token's family and the not-before marks of its user and client.
    async fn find_refresh_token(
        &self,
        id: &TokenId,
    ) -> Result<Option<RefreshTokenRecord>, StoreError>;

    /// `Ok(None)` when no access token has this id; `revoked_at` includes its family's and
    /// its user's and client's not-before marks.
    async fn find_access_token(
        &self,
        id: &TokenId,
    ) -> Result<Option<AccessTokenRecord>, StoreError>;

    /// RFC 6749 §6 rotation: atomically marks `old` spent (only if it is neither spent nor
    /// revoked, its family not revoked and no not-before mark of its user or client covers
    /// it) and records `new`. Exactly one of several concurrent calls for the same `old`
    /// returns [`Rotation::Rotated`].
    async fn rotate_refresh_token(
        &self,
        old: &TokenId,
        now: i64,
        new: NewTokens,
    ) -> Result<Rotation, StoreError>;

    /// RFC 6749 §6 rotation in one store round: reads refresh token `id` as
    /// [`TokenStore::find_refresh_token`] does and, if it is neither spent nor revoked, asks
    /// `successor` for the tokens that replace it; those are recorded and the token marked
    /// spent in one transaction, with the guarantee of [`TokenStore::rotate_refresh_token`].
    /// The default takes two rounds (a read, then the conditional write); a backend that can
    /// read and write in one overrides it.
    async fn rotate_presented(
        &self,
        id: &TokenId,
        now: i64,
        successor: Successor,
    ) -> Result<PresentedRotation, StoreError> {
        let Some(old) = self.find_refresh_token(id).await? else {
            return Ok(PresentedRotation::Unknown);
        };
        let Some(new) = successor_of(&old, successor) else {
            return Ok(PresentedRotation::Kept(old));
        };
        match self.rotate_refresh_token(id, now, new.clone()).await? {
            Rotation::Rotated => Ok(PresentedRotation::Rotated {
                old,
                new: Box::new(new),
            }),
            // Spent or revoked meanwhile: the caller judges the token as it is now.
            Rotation::AlreadySpent => Ok(match self.find_refresh_token(id).await? {
                Some(now_read) => PresentedRotation::Kept(now_read),
                None => PresentedRotation::Unknown,
            }),
        }
    }

    /// Records a new authorization code (its `redeemed_at` and `family_id` are not read).
    /// Returns once it is durable.
    async fn create_authorization_code(
        &self,
        code: AuthorizationCodeRecord,
    ) -> Result<(), StoreError>;

    /// The code with this digest, redeemed or not; `Ok(None)` when none was issued (or it was
    /// purged after it expired).
    async fn find_authorization_code(
        &self,
        digest: &SecretDigest,
    ) -> Result<Option<AuthorizationCodeRecord>, StoreError>;

    /// RFC 6749 §4.1.2, "MUST NOT use the authorization code more than once": atomically marks
    /// the code redeemed at `now` (only if it is not redeemed yet and `expires_at > now`),
    /// records on it the family of `new` (so that a second presentation can revoke the tokens
    /// issued from it) and records `new`. Exactly one of several concurrent calls for the same
    /// code returns [`Redemption::Redeemed`]; the others write nothing.
    async fn redeem_authorization_code(
        &self,
        digest: &SecretDigest,
        now: i64,
        new: NewTokens,
    ) -> Result<Redemption, StoreError>;

    /// Records a login session. Returns once it is durable, on every node.
    async fn create_login_session(&self, session: LoginSessionRecord) -> Result<(), StoreError>;

    /// The user of the session with this digest, if it is alive at `now` and no not-before
    /// mark of the user ([`TokenStore::revoke_subject`]) came after its start; `Ok(None)`
    /// otherwise.
    async fn find_login_session(
        &self,
        digest: &SecretDigest,
        now: i64,
    ) -> Result<Option<String>, StoreError>;

    /// Ends a session (`GET /logout`); `Ok(false)` if there was none.
    async fn delete_login_session(&self, digest: &SecretDigest) -> Result<bool, StoreError>;

    /// Records (or replaces) a user's consent to a client. Returns once it is durable.
    async fn save_consent(&self, consent: ConsentRecord) -> Result<(), StoreError>;

    /// The scope `username` allowed `client_id`, if they did and no not-before mark of the
    /// user or the client ([`TokenStore::revoke_subject`]) came after; `Ok(None)` otherwise.
    async fn find_consent(
        &self,
        username: &str,
        client_id: &str,
    ) -> Result<Option<String>, StoreError>;

    /// Deletes at most `limits.batch` rows per table of what can no longer matter: tokens,
    /// authorization codes and login sessions expired before `limits.expired_before`, grant revocations older than every stored
    /// token (so none issued before the revocation is left, whatever its lifetime),
    /// failed-login counts whose window and lock are over. Not-before marks are never purged.
    /// Returns the rows deleted, per table. Safe to run on every node at once (no two delete
    /// the same rows, and each batch is a short transaction).
    async fn purge(&self, limits: PurgeLimits) -> Result<PurgedRows, StoreError>;

    /// Whether the store answers; for readiness.
    async fn ping(&self) -> Result<(), StoreError>;

    /// Flushes pending writes and closes connections.
    async fn close(&self);
}

/// The lockout rule applied by [`LockoutStore::attempt`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LockoutPolicy {
    /// Failures of one user name from one client address that lock the name for that address.
    pub max_failures: u32,
    /// Failures of one user name from all addresses together that lock it everywhere; 0 = no
    /// such limit.
    pub max_failures_per_user: u32,
    pub window_secs: i64,
    pub lock_secs: i64,
}

impl LockoutPolicy {
    /// Whether the name's attempts from every address together are counted too.
    pub(crate) fn counts_every_address(&self) -> bool {
        self.max_failures_per_user > 0
    }
}

/// The `source` of the row that counts a user name's attempts from every address.
pub const ALL_SOURCES: &str = "";

/// A step in the life of one login attempt (see [`attempt_steps`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptStep {
    /// Before the password is checked.
    Begin,
    /// The password was right: the failures from this address are forgotten (not those from
    /// every address, so that one honest login cannot give a guesser elsewhere a fresh
    /// allowance).
    Succeeded,
    /// The password was wrong.
    Failed,
    /// The check never happened or was never answered (the hashing pool shed it, the client
    /// went away): release the slot only.
    Abandoned,
}

/// The verdict of an attempt step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    /// Go on (after `Begin`: check the password).
    Allowed,
    /// The account is locked until then; the password must not be checked.
    Locked { until: i64 },
    /// Checks already in flight use up the allowance: retry in a moment (503).
    Busy,
    /// This failure locked the account until then: for every address when `everywhere`, else
    /// for the address it came from.
    LockedNow { until: i64, everywhere: bool },
}

/// One row of the failure table: failures in the current window, its start, the lock's end,
/// checks in flight.
pub(crate) type FailureRow = (i64, i64, Option<i64>, i64);

/// What to do with the stored row after a step.
pub(crate) enum RowChange {
    Keep,
    Delete,
    Store(FailureRow),
}

/// The lockout rule for one row, shared by every backend. A check in flight counts against
/// the allowance until it ends, so attempts sent at the same moment cannot get more password
/// checks than `max`; the surplus is told to retry (`Busy`), not refused, so concurrent honest
/// logins for one account still succeed.
fn attempt_step(
    row: Option<FailureRow>,
    step: AttemptStep,
    now: i64,
    max: u32,
    policy: LockoutPolicy,
) -> (Attempt, RowChange) {
    let max = i64::from(max);
    let locked = row.and_then(|(_, _, until, _)| until.filter(|until| *until > now));
    // Counts from an elapsed window no longer matter (nor do checks a crashed node never ended).
    let (failures, start, pending) = match row {
        Some((failures, start, _, pending)) if start.saturating_add(policy.window_secs) > now => {
            (failures, start, pending)
        }
        _ => (0, now, 0),
    };
    match step {
        AttemptStep::Begin => match locked {
            Some(until) => (Attempt::Locked { until }, RowChange::Keep),
            None if failures + pending >= max => (Attempt::Busy, RowChange::Keep),
            None => (
                Attempt::Allowed,
                RowChange::Store((failures, start, None, pending + 1)),
            ),
        },
        AttemptStep::Succeeded => (Attempt::Allowed, RowChange::Delete),
        AttemptStep::Abandoned => (
            Attempt::Allowed,
            RowChange::Store((failures, start, locked, (pending - 1).max(0))),
        ),
        AttemptStep::Failed => {
            let pending = (pending - 1).max(0);
            if locked.is_some() {
                return (
                    Attempt::Allowed,
                    RowChange::Store((0, start, locked, pending)),
                );
            }
            let failures = failures + 1;
            if failures >= max {
                let until = now.saturating_add(policy.lock_secs);
                (
                    Attempt::LockedNow {
                        until,
                        everywhere: false,
                    },
                    RowChange::Store((0, now, Some(until), pending)),
                )
            } else {
                (
                    Attempt::Allowed,
                    RowChange::Store((failures, start, None, pending)),
                )
            }
        }
    }
}

/// The rows one attempt touches: the user name from this address, and the user name from
/// every address (`None` when there is no per-user limit).
pub(crate) struct AttemptRows<T> {
    pub(crate) source: T,
    pub(crate) all: Option<T>,
}

/// The lockout rule, shared by every backend: [`attempt_step`] applied to the row of the
/// address and to the row of every address. `Begin` is `Locked` or `Busy` if either row says
/// so (and then changes neither), else takes a slot in both. A success forgets the failures
/// from its address and gives back its slot in the every-address row, whose failures stay.
pub(crate) fn attempt_steps(
    rows: AttemptRows<Option<FailureRow>>,
    step: AttemptStep,
    now: i64,
    policy: LockoutPolicy,
) -> (Attempt, AttemptRows<RowChange>) {
    let (source_verdict, source_change) =
        attempt_step(rows.source, step, now, policy.max_failures, policy);
    let all = rows.all.map(|row| {
        // A success is no proof about the other addresses' guesses.
        let step = match step {
            AttemptStep::Succeeded => AttemptStep::Abandoned,
            other => other,
        };
        let (verdict, change) = attempt_step(row, step, now, policy.max_failures_per_user, policy);
        let verdict = match verdict {
            Attempt::LockedNow { until, .. } => Attempt::LockedNow {
                until,
                everywhere: true,
            },
            other => other,
        };
        (verdict, change)
    });
    let Some((all_verdict, all_change)) = all else {
        return (
            source_verdict,
            AttemptRows {
                source: source_change,
                all: None,
            },
        );
    };
    let unchanged = || AttemptRows {
        source: RowChange::Keep,
        all: Some(RowChange::Keep),
    };
    let verdict = match (source_verdict, all_verdict) {
        (Attempt::Locked { until: a }, Attempt::Locked { until: b }) => {
            return (Attempt::Locked { until: a.max(b) }, unchanged())
        }
        (Attempt::Locked { until }, _) | (_, Attempt::Locked { until }) => {
            return (Attempt::Locked { until }, unchanged())
        }
        (Attempt::Busy, _) | (_, Attempt::Busy) => return (Attempt::Busy, unchanged()),
        (_, everywhere @ Attempt::LockedNow { .. }) => everywhere,
        (verdict, _) => verdict,
    };
    (
        verdict,
        AttemptRows {
            source: source_change,
            all: Some(all_change),
        },
    )
}

/// Login attempts per user name and client address, and account locks. Kept in the token
/// database so that every node of a cluster sees the same counts.
#[async_trait]
pub trait LockoutStore: Send + Sync + 'static {
    /// Applies one step of an attempt for `username` from `source` (the client address as
    /// text), to the rows of that address and of every address ([`ALL_SOURCES`]), atomically
    /// (see [`attempt_steps`]).
    async fn attempt(
        &self,
        username: &str,
        source: &str,
        step: AttemptStep,
        now: i64,
        policy: LockoutPolicy,
    ) -> Result<Attempt, StoreError> {
        self.attempt_counted_in(username, source, ALL_SOURCES, step, now, policy)
            .await
    }

    /// [`LockoutStore::attempt`] with the every-address counts kept in the row `every_address`
    /// instead of [`ALL_SOURCES`]: a login channel anyone can reach (the login page) has its
    /// own, so that it cannot lock the name for the others.
    async fn attempt_counted_in(
        &self,
        username: &str,
        source: &str,
        every_address: &'static str,
        step: AttemptStep,
        now: i64,
        policy: LockoutPolicy,
    ) -> Result<Attempt, StoreError>;

    /// Forgets attempts and any lock of the name, from every address (`tokengate user
    /// unlock`). Returns whether there was anything to forget.
    async fn clear_failures(&self, username: &str) -> Result<bool, StoreError>;
}

/// Users, looked up by name.
#[async_trait]
pub trait UserStore: Send + Sync + 'static {
    async fn find_user(&self, name: &str) -> Result<Option<User>, StoreError>;

    /// Whether the store holds its users in memory, so that [`UserStore::enabled_in_memory`]
    /// answers without waiting.
    fn holds_users_in_memory(&self) -> bool {
        false
    }

    /// Whether `name` is a user who may get tokens (known and not disabled), when the store
    /// can tell from memory without waiting; `None` when it would take a read. A rotation's
    /// [`Successor`] asks it on the token store's thread.
    fn enabled_in_memory(&self, _name: &str) -> Option<bool> {
        None
    }
}

/// Clients, looked up by id.
#[async_trait]
pub trait ClientStore: Send + Sync + 'static {
    async fn find_client(&self, id: &str) -> Result<Option<Arc<Client>>, StoreError>;

    /// Every client (for the discovery document and key retirement).
    async fn list_clients(&self) -> Result<Vec<Arc<Client>>, StoreError>;

    /// Re-reads the clients now if the store holds a copy (this node just changed them, e.g.
    /// a dynamic registration, which must work on this node at once). Returns once the copy
    /// holds every change committed before the call. Nothing to do by default.
    async fn refresh(&self) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Users and clients kept in the token database (`stores.users = "sql"`,
/// `stores.clients = "sql"`), written by `tokengate user|client …`. Adding returns `Ok(false)`
/// when the name is taken; removing and (dis)abling return `Ok(false)` when it is unknown.
#[async_trait]
pub trait Directory: Send + Sync + 'static {
    async fn find_user(&self, name: &str) -> Result<Option<User>, StoreError>;
    async fn list_users(&self) -> Result<Vec<User>, StoreError>;
    async fn add_user(&self, user: &User, now: i64) -> Result<bool, StoreError>;
    async fn remove_user(&self, name: &str) -> Result<bool, StoreError>;
    /// Replaces the user's password hash; `Ok(false)` when the user is unknown.
    async fn set_user_password(&self, name: &str, password_hash: &str) -> Result<bool, StoreError>;
    async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<bool, StoreError>;
    /// Replaces the user's roles; `Ok(false)` when the user is unknown.
    async fn set_user_roles(&self, name: &str, roles: &BTreeSet<Role>) -> Result<bool, StoreError>;

    /// A number that moves whenever the clients table changes (by any means).
    async fn clients_revision(&self) -> Result<i64, StoreError>;
    /// Every row, unchecked (see [`directory::usable_clients`]).
    async fn list_clients(&self) -> Result<Vec<directory::ClientRow>, StoreError>;
    async fn client_exists(&self, id: &str) -> Result<bool, StoreError>;
    async fn add_client(&self, client: &Client, now: i64) -> Result<bool, StoreError>;
    async fn remove_client(&self, id: &str) -> Result<bool, StoreError>;
    async fn set_client_disabled(&self, id: &str, disabled: bool) -> Result<bool, StoreError>;
}

/// Outcome of [`RegistrationStore::register_client`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registration {
    /// The client, its registration token and the initial token's use, in one transaction.
    Registered,
    /// The initial access token was unknown, expired or used up when the write ran (e.g. a
    /// concurrent registration took its last use); nothing was written.
    InitialTokenRefused,
    /// A client with this id exists; nothing was written.
    IdTaken,
}

/// Dynamic client registration (RFC 7591/7592) in the token database: initial access tokens
/// and the registration access token of each registered client, as SHA-256 digests only.
#[async_trait]
pub trait RegistrationStore: Send + Sync + 'static {
    /// Records an initial access token (`tokengate registration token create`).
    async fn create_initial_token(
        &self,
        token: &InitialAccessTokenRecord,
        now: i64,
    ) -> Result<(), StoreError>;

    /// Whether the initial access token with this digest is known, unexpired at `now` and has
    /// a use left. A read: the use is spent by [`RegistrationStore::register_client`].
    async fn initial_token_usable(
        &self,
        digest: &SecretDigest,
        now: i64,
    ) -> Result<bool, StoreError>;

    /// Adds `client` and its `registration`, and spends one use of `initial` when given, in
    /// one transaction: all of it or none. Of concurrent calls for the last use of an initial
    /// token exactly one returns [`Registration::Registered`].
    async fn register_client(
        &self,
        client: &Client,
        registration: &RegistrationRecord,
        initial: Option<&SecretDigest>,
        now: i64,
    ) -> Result<Registration, StoreError>;

    /// The registration of `client_id` (the digest of its registration access token);
    /// `Ok(None)` when the client was not registered through the endpoint (or was deleted).
    async fn find_registration(
        &self,
        client_id: &str,
    ) -> Result<Option<RegistrationRecord>, StoreError>;

    /// Replaces a client's metadata and secret hash (RFC 7592 §2.2), and its registration's
    /// auth method, in one transaction; its `disabled` flag stays. Only while its secret hash
    /// is still `read_secret_hash` (the one the caller read): a change another node made since
    /// (say a new secret) is never written over. `Ok(false)` when no client has this id or its
    /// secret changed; nothing is written then.
    async fn update_registered_client(
        &self,
        client: &Client,
        token_endpoint_auth_method: &str,
        read_secret_hash: &str,
    ) -> Result<bool, StoreError>;

    /// Deletes the client and its registration in one transaction (RFC 7592 §2.3); `Ok(false)`
    /// when no client has this id. Its tokens are the caller's to revoke.
    async fn delete_registered_client(&self, client_id: &str) -> Result<bool, StoreError>;

    /// Every initial access token still stored (usable or not), oldest first.
    async fn list_initial_tokens(&self) -> Result<Vec<InitialTokenRow>, StoreError>;

    /// Deletes an initial access token (`registration token revoke`); `Ok(false)` when none
    /// has this digest.
    async fn revoke_initial_token(&self, digest: &SecretDigest) -> Result<bool, StoreError>;

    /// Replaces client `client_id`'s secret hash with `secret_hash`, if it is still
    /// `read_secret_hash`; `previous` (the old hash and until when it is still accepted) is
    /// stored beside it, or cleared when `None`. One UPDATE. `Ok(false)` when no client has
    /// this id or its secret changed meanwhile. The clients revision moves (as for every
    /// change).
    async fn replace_client_secret(
        &self,
        client_id: &str,
        read_secret_hash: &str,
        secret_hash: &str,
        previous: Option<&PreviousSecret>,
    ) -> Result<bool, StoreError>;
}

/// Token buckets in the database, shared by every node on it, so that a rate limit holds for
/// the whole cluster.
#[async_trait]
pub trait RateLimitStore: Send + Sync + 'static {
    /// Takes one token from the bucket `key` at `now_ms`; a new bucket starts full.
    async fn take(&self, key: &str, rate: Rate, now_ms: i64) -> Result<Take, StoreError>;
}

/// A public JWT signing key as `/jwks` serves it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    pub kid: String,
    /// The JWK, as JSON text.
    pub jwk: String,
}

/// The public signing keys of every node on the database, so that each node's JWKS names
/// every key any node signs with (private keys never leave their node).
#[async_trait]
pub trait PublishedKeyStore: Send + Sync + 'static {
    /// Publishes `keys`, or keeps them published, until `valid_until` at least.
    async fn publish_keys(&self, keys: &[PublicKey], valid_until: i64) -> Result<(), StoreError>;

    /// Every key any node published that is still valid at `now`.
    async fn published_keys(&self, now: i64) -> Result<Vec<PublicKey>, StoreError>;
}

/// The stores that live in the token database.
pub struct DatabaseStores {
    pub tokens: Arc<dyn TokenStore>,
    pub lockouts: Arc<dyn LockoutStore>,
    pub directory: Arc<dyn Directory>,
    pub registrations: Arc<dyn RegistrationStore>,
    /// `None` on SQLite: its database serves one node, whose own memory is the faster place.
    pub rate_limits: Option<Arc<dyn RateLimitStore>>,
    /// `None` on SQLite (one node: its own keys are all there are).
    pub published_keys: Option<Arc<dyn PublishedKeyStore>>,
    /// `None` on SQLite, which has no pool.
    pub pools: Option<Arc<dyn ConnectionPools>>,
}

/// Where the tokens live: `[stores] tokens` and the keys that tune it.
#[derive(Debug, Clone)]
pub enum TokenStoreSettings {
    Sqlite {
        path: PathBuf,
        synchronous: sqlite::SqliteSynchronous,
    },
    Postgres(PostgresSettings),
}

/// A PostgreSQL token store, shared by the nodes of a cluster.
#[derive(Clone)]
pub struct PostgresSettings {
    /// `postgres://user:password@host/db?sslmode=require`; may hold a password, so it is
    /// never printed.
    pub url: String,
    pub max_connections: u32,
    /// Apply pending migrations at start (else `tokengate migrate` must have run).
    pub run_migrations: bool,
}

impl fmt::Debug for PostgresSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresSettings")
            .field("url", &"<redacted>")
            .field("max_connections", &self.max_connections)
            .field("run_migrations", &self.run_migrations)
            .finish()
    }
}

/// Opens the token database the settings name; its token, lockout and rate-limit stores
/// report each call's time and failure, and each group commit's size, to `observer`.
pub async fn open_database(
    settings: &TokenStoreSettings,
    observer: Arc<dyn StoreObserver>,
) -> Result<DatabaseStores, StoreError> {
    let database = match settings {
        TokenStoreSettings::Sqlite { path, synchronous } => {
            let store = Arc::new(
                sqlite::SqliteTokenStore::open(path, *synchronous, observer.clone()).await?,
            );
            DatabaseStores {
                tokens: store.clone(),
                lockouts: store.clone(),
                directory: store.clone(),
                registrations: store,
                rate_limits: None,
                published_keys: None,
                pools: None,
            }
        }
        TokenStoreSettings::Postgres(postgres) => {
            let store = Arc::new(postgres::PostgresTokenStore::connect(
                &postgres.url,
                postgres.max_connections,
                observer.clone(),
            )?);
            if postgres.run_migrations {
                store.migrate().await?;
            } else if !store.migrations_applied().await? {
                return Err(StoreError::Unavailable(
                    "database migrations are pending: run `tokengate migrate`".into(),
                ));
            }
            store.warm_up().await;
            DatabaseStores {
                tokens: store.clone(),
                lockouts: store.clone(),
                directory: store.clone(),
                registrations: store.clone(),
                rate_limits: Some(store.clone()),
                published_keys: Some(store.clone()),
                pools: Some(store),
            }
        }
    };
    Ok(measured::measure(database, &observer))
}

/// `tokengate migrate`: applies the token database's pending migrations.
pub async fn migrate(settings: &TokenStoreSettings) -> Result<(), StoreError> {
    match settings {
        // SQLite migrates whenever it is opened.
        TokenStoreSettings::Sqlite { path, synchronous } => {
            sqlite::SqliteTokenStore::open(path, *synchronous, Arc::new(measured::Unobserved))
                .await?
                .close()
                .await;
            Ok(())
        }
        TokenStoreSettings::Postgres(postgres) => {
            let store = postgres::PostgresTokenStore::connect(
                &postgres.url,
                1,
                Arc::new(measured::Unobserved),
            )?;
            store.migrate().await?;
            store.close().await;
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: LockoutPolicy = LockoutPolicy {
        max_failures: 2,
        max_failures_per_user: 3,
        window_secs: 100,
        lock_secs: 50,
    };

    fn rows(
        source: Option<FailureRow>,
        all: Option<FailureRow>,
    ) -> AttemptRows<Option<FailureRow>> {
        AttemptRows {
            source,
            all: Some(all),
        }
    }

    fn stored(change: &RowChange) -> Option<FailureRow> {
        match change {
            RowChange::Store(row) => Some(*row),
            RowChange::Keep | RowChange::Delete => None,
        }
    }

    #[test]
    fn begin_takes_a_slot_in_both_rows() {
        let (verdict, changes) = attempt_steps(rows(None, None), AttemptStep::Begin, 0, POLICY);
        assert_eq!(verdict, Attempt::Allowed);
        assert_eq!(stored(&changes.source), Some((0, 0, None, 1)));
        assert_eq!(stored(changes.all.as_ref().unwrap()), Some((0, 0, None, 1)));
    }

    #[test]
    fn a_lock_or_a_full_allowance_in_either_row_changes_neither() {
        let locked = Some((0, 0, Some(60), 0));
        let (verdict, changes) = attempt_steps(rows(None, locked), AttemptStep::Begin, 10, POLICY);
        assert_eq!(verdict, Attempt::Locked { until: 60 });
        assert!(matches!(changes.source, RowChange::Keep));

        let busy = Some((1, 0, None, 1));
        let (verdict, changes) = attempt_steps(rows(busy, None), AttemptStep::Begin, 10, POLICY);
        assert_eq!(verdict, Attempt::Busy);
        assert!(matches!(changes.all, Some(RowChange::Keep)));
    }

    #[test]
    fn the_every_address_count_locks_everywhere() {
        let (verdict, _) = attempt_steps(
            rows(Some((0, 0, None, 1)), Some((2, 0, None, 1))),
            AttemptStep::Failed,
            10,
            POLICY,
        );
        assert_eq!(
            verdict,
            Attempt::LockedNow {
                until: 60,
                everywhere: true
            }
        );
    }

    #[test]
    fn a_success_forgets_its_address_but_not_the_others_failures() {
        let (verdict, changes) = attempt_steps(
            rows(Some((1, 0, None, 1)), Some((2, 0, None, 1))),
            AttemptStep::Succeeded,
            10,
            POLICY,
        );
        assert_eq!(verdict, Attempt::Allowed);
        assert!(matches!(changes.source, RowChange::Delete));
        assert_eq!(stored(changes.all.as_ref().unwrap()), Some((2, 0, None, 0)));
    }
}
