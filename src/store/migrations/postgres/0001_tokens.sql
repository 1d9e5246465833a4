-- Same schema and version numbers as the SQLite migrations. Tokens are keyed by their UUIDv7
-- id (time-ordered, so inserts land at the end of the primary-key index) and hold only the
-- SHA-256 digest of their secret half.
CREATE TABLE access_tokens (
    id            BYTEA   NOT NULL PRIMARY KEY,
    secret_sha256 BYTEA   NOT NULL,
    client_id     TEXT    NOT NULL,
    username      TEXT,
    scope         TEXT    NOT NULL,
    family_id     BYTEA   NOT NULL,
    issued_at     BIGINT  NOT NULL,
    expires_at    BIGINT  NOT NULL,
    revoked_at    BIGINT
);

CREATE TABLE refresh_tokens (
    id            BYTEA   NOT NULL PRIMARY KEY,
    secret_sha256 BYTEA   NOT NULL,
    client_id     TEXT    NOT NULL,
    username      TEXT,
    scope         TEXT    NOT NULL,
    family_id     BYTEA   NOT NULL,
    issued_at     BIGINT  NOT NULL,
    expires_at    BIGINT  NOT NULL,
    revoked_at    BIGINT,
    spent_at      BIGINT,
    replaced_by   BYTEA
);
