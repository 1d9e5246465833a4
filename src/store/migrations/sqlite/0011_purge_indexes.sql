-- What the janitor's purge looks up. Without these every purge batch scans its table, so a
-- large store could not be cleaned faster than the server fills it. Each costs one more
-- B-tree entry per insert; expiry times grow with the clock, so those entries mostly append.
CREATE INDEX IF NOT EXISTS access_tokens_expires_at ON access_tokens (expires_at);
CREATE INDEX IF NOT EXISTS refresh_tokens_expires_at ON refresh_tokens (expires_at);
CREATE INDEX IF NOT EXISTS revoked_families_revoked_at ON revoked_families (revoked_at);
CREATE INDEX IF NOT EXISTS login_failures_window_start ON login_failures (window_start);
