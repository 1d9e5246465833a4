-- Issue 12: authorization codes (RFC 6749 §4.1), keyed by the SHA-256 of the code (never the
-- code). `redeemed_at` makes a code work once; `family_id` names the tokens issued from it, so
-- that presenting it again revokes them. Purged by the janitor once expired.
CREATE TABLE authorization_codes (
    digest BYTEA PRIMARY KEY,
    client_id TEXT NOT NULL,
    redirect_uri TEXT,
    code_challenge TEXT NOT NULL,
    username TEXT NOT NULL,
    scope TEXT NOT NULL,
    issued_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    redeemed_at BIGINT,
    family_id BYTEA
);
CREATE INDEX authorization_codes_expires_at ON authorization_codes (expires_at);
