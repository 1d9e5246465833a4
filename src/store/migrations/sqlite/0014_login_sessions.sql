-- Issue 12: login sessions of the hosted login page, shared by every node. Keyed by the SHA-256
-- of the session id (never the id). `started` is a UUIDv7-shaped id of the login's time, so a
-- user's not-before mark in `revoked_subjects` (`user revoke-tokens`, `set-password`, `remove`)
-- ends the sessions started before it, as it ends the tokens. Purged once expired.
CREATE TABLE login_sessions (
    digest BLOB PRIMARY KEY NOT NULL,
    username TEXT NOT NULL,
    started BLOB NOT NULL,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX login_sessions_expires_at ON login_sessions (expires_at);
