-- Not-before revocation per subject (`tokengate user|client revoke-tokens`, `set-password`,
-- `remove`): every token of a grant that started before `not_before` is revoked, with one row
-- per user or client however many tokens exist. `not_before` is a UUIDv7-shaped lower bound
-- (48-bit milliseconds, then zero bytes): blobs compare bytewise, so comparing it with a token's
-- family id (the grant's first, time-ordered refresh token id) is exact to the millisecond.
-- Rows are never purged: one per subject, and a removed name must stay ended for good.
CREATE TABLE revoked_subjects (
    kind       TEXT    NOT NULL, -- 'user' or 'client'
    name       TEXT    NOT NULL,
    not_before BLOB    NOT NULL,
    revoked_at INTEGER NOT NULL,
    PRIMARY KEY (kind, name)
) WITHOUT ROWID;
