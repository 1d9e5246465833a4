//! Tokens: recording, finding, rotating and revoking them. Every statement is shared by both
//! dialects (PostgreSQL's store also has batched forms of some, in `postgres/`).

use std::sync::LazyLock;

use crate::store::revocation::{upsert_mark, STILL_REDEEMABLE, TOKEN_COLUMNS};

/// A new authorization code: digest, client, redirect URI, challenge, user, scope, issued,
/// expires.
pub(crate) const INSERT_CODE: &str = "INSERT INTO authorization_codes (digest, client_id, \
    redirect_uri, code_challenge, username, scope, issued_at, expires_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// An authorization code by digest, columns in the order of `AuthorizationCodeRecord`.
pub(crate) const FIND_CODE: &str = "SELECT digest, client_id, redirect_uri, code_challenge, \
    username, scope, issued_at, expires_at, redeemed_at, family_id \
    FROM authorization_codes WHERE digest = $1";

/// Redeems a code at `$1` for the token family `$2`, only if unused and unexpired (`$3` digest):
/// the one conditional write that makes a code work once.
pub(crate) const REDEEM_CODE: &str = "UPDATE authorization_codes SET redeemed_at = $1, \
    family_id = $2 WHERE digest = $3 AND redeemed_at IS NULL AND expires_at > $1";

/// A new login session: digest, user, start (a UUIDv7-shaped id), expiry.
pub(crate) const INSERT_SESSION: &str = "INSERT INTO login_sessions (digest, username, started, \
    expires_at) VALUES ($1, $2, $3, $4)";

/// The user of session `$1` if it is alive at `$2` and no not-before mark of the user (see
/// `revocation.rs`) is later than its start.
pub(crate) const FIND_SESSION: &str = "SELECT s.username FROM login_sessions s \
    WHERE s.digest = $1 AND s.expires_at > $2 AND NOT EXISTS (SELECT 1 FROM revoked_subjects r \
    WHERE r.kind = 'user' AND r.name = s.username AND s.started < r.not_before)";

pub(crate) const DELETE_SESSION: &str = "DELETE FROM login_sessions WHERE digest = $1";

/// A user's consent to a client: username, client, scope, when (a UUIDv7-shaped id). A new
/// answer replaces the old one (the caller adds the scopes still granted).
pub(crate) const SAVE_CONSENT: &str = "INSERT INTO consents (username, client_id, scope, granted) \
    VALUES ($1, $2, $3, $4) ON CONFLICT (username, client_id) \
    DO UPDATE SET scope = excluded.scope, granted = excluded.granted";

/// The scope user `$1` allowed client `$2`, unless a not-before mark of either (see
/// `revocation.rs`) is later than the consent.
pub(crate) const FIND_CONSENT: &str = "SELECT c.scope FROM consents c \
    WHERE c.username = $1 AND c.client_id = $2 AND NOT EXISTS (SELECT 1 FROM revoked_subjects r \
    WHERE ((r.kind = 'user' AND r.name = c.username) \
    OR (r.kind = 'client' AND r.name = c.client_id)) AND c.granted < r.not_before)";

pub(crate) const INSERT_ACCESS: &str = "INSERT INTO access_tokens (id, secret_sha256, \
    client_id, username, scope, family_id, issued_at, expires_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

pub(crate) const INSERT_REFRESH: &str = "INSERT INTO refresh_tokens (id, secret_sha256, \
    client_id, username, scope, family_id, issued_at, expires_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8)";

/// A refresh token by id: [`TOKEN_COLUMNS`] (revocations folded in), then `spent_at` and
/// `replaced_by`, in this order.
pub(crate) static FIND_REFRESH: LazyLock<String> = LazyLock::new(|| {
    format!(
        "SELECT {TOKEN_COLUMNS}, t.spent_at AS spent_at, t.replaced_by AS replaced_by \
         FROM refresh_tokens t WHERE t.id = $1"
    )
});

/// An access token by id: [`TOKEN_COLUMNS`].
pub(crate) static FIND_ACCESS: LazyLock<String> =
    LazyLock::new(|| format!("SELECT {TOKEN_COLUMNS} FROM access_tokens t WHERE t.id = $1"));

/// RFC 6749 §6 rotation: spends `$3` (`spent_at = $1`, `replaced_by = $2`) only if it is still
/// redeemable, so of concurrent rotations exactly one changes a row.
pub(crate) static SPEND_REFRESH: LazyLock<String> = LazyLock::new(|| {
    format!(
        "UPDATE refresh_tokens SET spent_at = $1, replaced_by = $2 WHERE id = $3 \
         {STILL_REDEEMABLE}"
    )
});

/// Spends refresh token `$3` (`spent_at = $1`, `replaced_by = $2`) that the same transaction
/// has just read and found redeemable, under the write lock: nothing can have revoked it since,
/// so only the spent mark is checked again.
pub(crate) const SPEND_READ_REFRESH: &str =
    "UPDATE refresh_tokens SET spent_at = $1, replaced_by = $2 WHERE id = $3 AND spent_at IS NULL";

/// RFC 7009: revokes access token `$2` at `$1`; no row when it already was.
pub(crate) const REVOKE_ACCESS: &str =
    "UPDATE access_tokens SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL";

/// Revokes grant `$1` at `$2`; no row when it already was.
pub(crate) const REVOKE_FAMILY: &str = "INSERT INTO revoked_families (family_id, revoked_at) \
    VALUES ($1, $2) ON CONFLICT (family_id) DO NOTHING";

/// A not-before mark: kind `$1`, name `$2`, not_before `$3`, revoked_at `$4`.
pub(crate) static UPSERT_MARK: LazyLock<String> =
    LazyLock::new(|| upsert_mark(["$1", "$2", "$3", "$4"]));
