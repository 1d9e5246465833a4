-- RFC 7009 §2.1 / RFC 9700 §4.14: one row per revoked grant ("family").
CREATE TABLE revoked_families (
    family_id  BYTEA  NOT NULL PRIMARY KEY,
    revoked_at BIGINT NOT NULL
);
