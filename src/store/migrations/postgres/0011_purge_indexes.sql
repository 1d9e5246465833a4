-- What the janitor's purge looks up (same indexes as on SQLite). Without these every purge
-- batch scans its table, so a large store could not be cleaned faster than the server fills
-- it. rate_buckets keeps no index on full_at_ms (see 0007): every take updates that column.
-- Building an index blocks writes to its table meanwhile; on a large store, create them
-- beforehand with CREATE INDEX CONCURRENTLY and these names, and this migration does nothing.
CREATE INDEX IF NOT EXISTS access_tokens_expires_at ON access_tokens (expires_at);
CREATE INDEX IF NOT EXISTS refresh_tokens_expires_at ON refresh_tokens (expires_at);
CREATE INDEX IF NOT EXISTS revoked_families_revoked_at ON revoked_families (revoked_at);
CREATE INDEX IF NOT EXISTS login_failures_window_start ON login_failures (window_start);
