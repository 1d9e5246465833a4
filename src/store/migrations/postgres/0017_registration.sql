-- Issue 13: dynamic client registration (RFC 7591/7592). Initial access tokens (`tokengate
-- registration token create`) and each registered client's registration access token are kept
-- as SHA-256 digests only. An initial token is spent one use at a time by a conditional UPDATE,
-- so concurrent registrations cannot use it more often than `uses_left` allows.
CREATE TABLE initial_access_tokens (
    digest BYTEA PRIMARY KEY NOT NULL,
    expires_at BIGINT NOT NULL,
    uses_left BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
-- One registration access token per registered client, bound to it alone (RFC 7592 §3).
CREATE TABLE client_registrations (
    client_id TEXT PRIMARY KEY NOT NULL,
    token_sha256 BYTEA NOT NULL,
    -- As registered (RFC 7591 §2), for RFC 7592 reads: none, client_secret_basic or _post.
    token_endpoint_auth_method TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
