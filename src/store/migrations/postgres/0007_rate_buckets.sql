-- Token buckets of the rate limits, shared by every node ([rate_limit] shared = true).
-- UNLOGGED: no WAL is written per request, and a database crash only resets the limits.
-- No index on full_at_ms: every take updates it, and without an index the update stays a
-- cheap HOT update; the janitor's occasional scan is the cheaper side of that trade.
-- SQLite has no such table: its database serves one node, which keeps buckets in memory.
CREATE UNLOGGED TABLE rate_buckets (
    key TEXT PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    updated_ms BIGINT NOT NULL,
    -- The verdict of the last take, returned by the same statement that made it.
    allowed BOOLEAN NOT NULL,
    -- When the bucket is full again: from then on the row means nothing (the janitor drops it).
    full_at_ms BIGINT NOT NULL
);
