-- Tokens are keyed by their UUIDv7 id (time-ordered, so inserts append to the B-tree) and hold
-- only the SHA-256 digest of their secret half. WITHOUT ROWID: the id is the clustering key.
CREATE TABLE access_tokens (
    id            BLOB    NOT NULL PRIMARY KEY,
    secret_sha256 BLOB    NOT NULL,
    client_id     TEXT    NOT NULL,
    username      TEXT,
    scope         TEXT    NOT NULL,
    family_id     BLOB    NOT NULL,
    issued_at     INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER
) WITHOUT ROWID;

CREATE TABLE refresh_tokens (
    id            BLOB    NOT NULL PRIMARY KEY,
    secret_sha256 BLOB    NOT NULL,
    client_id     TEXT    NOT NULL,
    username      TEXT,
    scope         TEXT    NOT NULL,
    family_id     BLOB    NOT NULL,
    issued_at     INTEGER NOT NULL,
    expires_at    INTEGER NOT NULL,
    revoked_at    INTEGER,
    spent_at      INTEGER,
    replaced_by   BLOB
) WITHOUT ROWID;
