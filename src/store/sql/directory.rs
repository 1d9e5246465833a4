//! Users and clients kept in the token database (`stores.users = "sql"`,
//! `stores.clients = "sql"`). Shared by both dialects.

/// Every user, as `store::model::User` (name, password_hash, disabled, roles space-separated).
pub(crate) const SELECT_USERS: &str =
    "SELECT name, password_hash, disabled, roles FROM users ORDER BY name";

pub(crate) const FIND_USER: &str =
    "SELECT name, password_hash, disabled, roles FROM users WHERE name = $1";

pub(crate) const INSERT_USER: &str = "INSERT INTO users (name, password_hash, disabled, \
    roles, created_at) VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING";

/// Replaces the roles (`$1`, space-separated) of user `$2`.
pub(crate) const SET_USER_ROLES: &str = "UPDATE users SET roles = $1 WHERE name = $2";

pub(crate) const DELETE_USER: &str = "DELETE FROM users WHERE name = $1";

pub(crate) const SET_USER_PASSWORD: &str = "UPDATE users SET password_hash = $1 WHERE name = $2";

pub(crate) const SET_USER_DISABLED: &str = "UPDATE users SET disabled = $1 WHERE name = $2";

/// Every client, as `store::directory::ClientRow`s, columns in the order of its fields.
pub(crate) const SELECT_CLIENTS: &str = "SELECT id, secret_hash, grant_types, scopes, \
    access_token_validity_period, application_access_token_validity_period, \
    refresh_token_validity_period, introspect, token_format, audience, disabled, public, \
    redirect_uris, require_consent, name, owner, previous_secret_hash, previous_secret_until \
    FROM clients ORDER BY id";

/// The number the triggers move on every change to `clients`.
pub(crate) const SELECT_CLIENTS_REVISION: &str =
    "SELECT revision FROM directory_revisions WHERE what = 'clients'";

pub(crate) const CLIENT_EXISTS: &str = "SELECT 1 FROM clients WHERE id = $1";

/// A new client, `ClientRow`'s fields in order (`$1`…`$18`; a new client has no previous
/// secret, so `$17` and `$18` are `NULL` but for a copied row), then `created_at` (`$19`).
pub(crate) const INSERT_CLIENT: &str = "INSERT INTO clients (id, secret_hash, grant_types, \
    scopes, access_token_validity_period, application_access_token_validity_period, \
    refresh_token_validity_period, introspect, token_format, audience, disabled, public, \
    redirect_uris, require_consent, name, owner, previous_secret_hash, previous_secret_until, \
    created_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, \
    $19) ON CONFLICT (id) DO NOTHING";

pub(crate) const DELETE_CLIENT: &str = "DELETE FROM clients WHERE id = $1";

pub(crate) const SET_CLIENT_DISABLED: &str = "UPDATE clients SET disabled = $1 WHERE id = $2";
