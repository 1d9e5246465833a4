-- Lockout counts per user name and client address (`source` = the address as text), plus one
-- row per name for every address together (`source` = ''). The old per-name counts become the
-- every-address rows.
ALTER TABLE login_failures ADD COLUMN source TEXT NOT NULL DEFAULT '';
ALTER TABLE login_failures DROP CONSTRAINT login_failures_pkey;
ALTER TABLE login_failures ADD PRIMARY KEY (username, source);
ALTER TABLE login_failures ALTER COLUMN source DROP DEFAULT;
