//! What the janitor deletes (see `TokenStore::purge`), one bounded batch per statement. The
//! dialects differ here, so each statement is written twice, side by side: SQLite's single
//! writer deletes by primary key; PostgreSQL's nodes may purge at once, so each takes rows
//! the others have not locked (`FOR UPDATE SKIP LOCKED`) and deletes them by `ctid`, without
//! a second index lookup.

use std::sync::LazyLock;

use crate::store::revocation::{CLOCK_SKEW_SLACK_SECS, OLDEST_TOKEN_ISSUED_AT};

/// Tokens expired before `$1`, at most `$2` per table.
pub(crate) const TOKENS_SQLITE: [&str; 2] = [
    "DELETE FROM access_tokens WHERE id IN \
     (SELECT id FROM access_tokens WHERE expires_at < $1 LIMIT $2)",
    "DELETE FROM refresh_tokens WHERE id IN \
     (SELECT id FROM refresh_tokens WHERE expires_at < $1 LIMIT $2)",
];
pub(crate) const TOKENS_POSTGRES: [&str; 2] = [
    "DELETE FROM access_tokens WHERE ctid = ANY(ARRAY(SELECT ctid FROM access_tokens \
     WHERE expires_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED))",
    "DELETE FROM refresh_tokens WHERE ctid = ANY(ARRAY(SELECT ctid FROM refresh_tokens \
     WHERE expires_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED))",
];

/// Authorization codes expired before `$1`, at most `$2`. A redeemed code is kept until then,
/// so that presenting it again within its lifetime still revokes the tokens issued from it.
pub(crate) const CODES_SQLITE: &str = "DELETE FROM authorization_codes WHERE digest IN \
     (SELECT digest FROM authorization_codes WHERE expires_at < $1 LIMIT $2)";
pub(crate) const CODES_POSTGRES: &str = "DELETE FROM authorization_codes WHERE ctid = \
     ANY(ARRAY(SELECT ctid FROM authorization_codes WHERE expires_at < $1 LIMIT $2 \
     FOR UPDATE SKIP LOCKED))";

/// Login sessions expired before `$1`, at most `$2`.
pub(crate) const SESSIONS_SQLITE: &str = "DELETE FROM login_sessions WHERE digest IN \
     (SELECT digest FROM login_sessions WHERE expires_at < $1 LIMIT $2)";
pub(crate) const SESSIONS_POSTGRES: &str = "DELETE FROM login_sessions WHERE ctid = \
     ANY(ARRAY(SELECT ctid FROM login_sessions WHERE expires_at < $1 LIMIT $2 \
     FOR UPDATE SKIP LOCKED))";

/// Initial access tokens (`registration token create`) expired before `$1` or used up, at most
/// `$2`: neither can register a client any more.
pub(crate) const INITIAL_TOKENS_SQLITE: &str = "DELETE FROM initial_access_tokens WHERE digest \
     IN (SELECT digest FROM initial_access_tokens WHERE expires_at < $1 OR uses_left <= 0 \
     LIMIT $2)";
pub(crate) const INITIAL_TOKENS_POSTGRES: &str = "DELETE FROM initial_access_tokens WHERE ctid \
     = ANY(ARRAY(SELECT ctid FROM initial_access_tokens WHERE expires_at < $1 OR uses_left <= 0 \
     LIMIT $2 FOR UPDATE SKIP LOCKED))";

/// Grant revocations older than every stored token (with the clock-skew slack), at most `$2`;
/// `$1` stands in for "no token stored" (`i64::MAX`). A revocation goes only once no token
/// issued before it is stored, whatever lifetimes the grant's tokens were issued with.
pub(crate) static REVOCATIONS_SQLITE: LazyLock<String> = LazyLock::new(|| {
    format!(
        "DELETE FROM revoked_families WHERE family_id IN \
         (SELECT family_id FROM revoked_families \
          WHERE revoked_at < COALESCE({OLDEST_TOKEN_ISSUED_AT}, $1) - {CLOCK_SKEW_SLACK_SECS} \
          LIMIT $2)"
    )
});
pub(crate) static REVOCATIONS_POSTGRES: LazyLock<String> = LazyLock::new(|| {
    format!(
        "DELETE FROM revoked_families WHERE ctid = ANY(ARRAY(\
         SELECT ctid FROM revoked_families \
         WHERE revoked_at < COALESCE({OLDEST_TOKEN_ISSUED_AT}, $1) - {CLOCK_SKEW_SLACK_SECS} \
         LIMIT $2 FOR UPDATE SKIP LOCKED))"
    )
});

/// Failed-login rows whose window started before `$1` and that hold no lock at `$2`, at most
/// `$3`.
pub(crate) const LOCKOUTS_SQLITE: &str = "DELETE FROM login_failures WHERE (username, source) \
    IN (SELECT username, source FROM login_failures WHERE window_start < $1 \
    AND COALESCE(locked_until, 0) <= $2 LIMIT $3)";
pub(crate) const LOCKOUTS_POSTGRES: &str = "DELETE FROM login_failures WHERE ctid = \
    ANY(ARRAY(SELECT ctid FROM login_failures WHERE window_start < $1 \
    AND COALESCE(locked_until, 0) <= $2 LIMIT $3 FOR UPDATE SKIP LOCKED))";

/// Shared rate-limit buckets (PostgreSQL only) full again before `$1` (ms), at most `$2`.
pub(crate) const RATE_BUCKETS_POSTGRES: &str = "DELETE FROM rate_buckets WHERE ctid = \
    ANY(ARRAY(SELECT ctid FROM rate_buckets WHERE full_at_ms < $1 LIMIT $2 \
    FOR UPDATE SKIP LOCKED))";

/// Published keys (PostgreSQL only) no longer valid at `$1`.
pub(crate) const PUBLISHED_KEYS_POSTGRES: &str =
    "DELETE FROM published_keys WHERE valid_until < $1";
