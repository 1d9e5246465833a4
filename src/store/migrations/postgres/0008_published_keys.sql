-- The public JWT signing keys of every node ([oauth] signing_keys stay files, private, on each
-- node). Each node writes its own and reads all, so every node's /jwks names every key any
-- node signs with. A node keeps pushing `valid_until` forward for as long as its key may have
-- signed tokens that are still live; a key whose node is gone drops out when that passes.
-- SQLite has no such table: its database serves one node.
CREATE TABLE published_keys (
    kid TEXT PRIMARY KEY,
    -- The public JWK as /jwks serves it (JSON, with kid, alg and use).
    jwk TEXT NOT NULL,
    valid_until BIGINT NOT NULL
);
