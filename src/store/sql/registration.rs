//! Dynamic client registration (RFC 7591/7592): initial access tokens and the registration
//! access token of each registered client, digests only. Shared by both dialects.

pub(crate) const INSERT_INITIAL_TOKEN: &str = "INSERT INTO initial_access_tokens (digest, \
    expires_at, uses_left, created_at) VALUES ($1, $2, $3, $4)";

/// Whether an initial access token is usable at `$2` (known, not expired, a use left).
pub(crate) const FIND_INITIAL_TOKEN: &str = "SELECT 1 FROM initial_access_tokens \
    WHERE digest = $1 AND expires_at > $2 AND uses_left > 0";

/// Every initial access token, oldest first.
pub(crate) const LIST_INITIAL_TOKENS: &str = "SELECT digest, expires_at, uses_left, created_at \
    FROM initial_access_tokens ORDER BY created_at, digest";

pub(crate) const DELETE_INITIAL_TOKEN: &str = "DELETE FROM initial_access_tokens WHERE digest = $1";

/// Spends one use; changes no row when the token is unknown, expired or used up. The row lock
/// this takes makes a concurrent spend of the same token wait and then see the new count.
pub(crate) const SPEND_INITIAL_TOKEN: &str = "UPDATE initial_access_tokens \
    SET uses_left = uses_left - 1 WHERE digest = $1 AND expires_at > $2 AND uses_left > 0";

/// Written only right after the client's own row was inserted (so the id is new): a row left
/// behind by a client removed from the CLI is replaced rather than blocking the id.
pub(crate) const UPSERT_REGISTRATION: &str = "INSERT INTO client_registrations (client_id, \
    token_sha256, token_endpoint_auth_method, created_at) VALUES ($1, $2, $3, $4) \
    ON CONFLICT (client_id) DO UPDATE SET token_sha256 = excluded.token_sha256, \
    token_endpoint_auth_method = excluded.token_endpoint_auth_method, \
    created_at = excluded.created_at";

pub(crate) const SET_REGISTRATION_AUTH_METHOD: &str = "UPDATE client_registrations \
    SET token_endpoint_auth_method = $1 WHERE client_id = $2";

pub(crate) const FIND_REGISTRATION: &str =
    "SELECT token_sha256, token_endpoint_auth_method, created_at FROM client_registrations WHERE client_id = $1";

pub(crate) const DELETE_REGISTRATION: &str =
    "DELETE FROM client_registrations WHERE client_id = $1";

/// Replaces a client's row: `ClientRow`'s fields after `id` but `disabled`, `owner` and the
/// previous secret in order (`$1`…`$13`), then the id (`$14`). `disabled` is left as it is
/// (an operator's `client disable` stands). The previous secret (the portal's overlap) stays
/// while the secret hash stays; a new secret hash clears it (on both dialects the right-hand
/// sides read the row as it was before the UPDATE), so an RFC 7592 secret change never
/// leaves an older secret working.
pub(crate) const UPDATE_CLIENT: &str = "UPDATE clients SET secret_hash = $1, grant_types = $2, \
    scopes = $3, access_token_validity_period = $4, \
    application_access_token_validity_period = $5, refresh_token_validity_period = $6, \
    introspect = $7, token_format = $8, audience = $9, public = $10, redirect_uris = $11, \
    require_consent = $12, name = $13, \
    previous_secret_hash = CASE WHEN secret_hash = $1 THEN previous_secret_hash END, \
    previous_secret_until = CASE WHEN secret_hash = $1 THEN previous_secret_until END \
    WHERE id = $14 AND secret_hash = $15";

/// Gives client `$4` the secret hash `$1`, and as its previous secret `$2` accepted until `$3`
/// (both `NULL`: none), if its secret hash is still `$5`. See
/// `RegistrationStore::replace_client_secret`.
pub(crate) const REPLACE_CLIENT_SECRET: &str = "UPDATE clients SET secret_hash = $1, \
    previous_secret_hash = $2, previous_secret_until = $3 WHERE id = $4 AND secret_hash = $5";
