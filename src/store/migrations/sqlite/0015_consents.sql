-- Issue 12: a user's consent to a client (`require_consent = true`), one row per user and
-- client: the scopes granted and when (`granted`, a UUIDv7-shaped id of that time). A not-before
-- mark of the user or the client in `revoked_subjects` (`user revoke-tokens`, `client
-- revoke-tokens`, …) later than `granted` makes the consent forgotten, as it ends the tokens.
CREATE TABLE consents (
    username TEXT NOT NULL,
    client_id TEXT NOT NULL,
    scope TEXT NOT NULL,
    granted BLOB NOT NULL,
    PRIMARY KEY (username, client_id)
) WITHOUT ROWID;
