-- RFC 7009 §2.1 / RFC 9700 §4.14: revoking a refresh token revokes every token of its grant.
-- One row per revoked grant ("family") instead of an index on family_id in the token tables:
-- revocation is rare, while every issuance would pay for such an index.
CREATE TABLE revoked_families (
    family_id  BLOB    NOT NULL PRIMARY KEY,
    revoked_at INTEGER NOT NULL
) WITHOUT ROWID;
