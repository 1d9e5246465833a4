-- Password checks in flight per user name: counted against the allowance so that guesses sent
-- at the same moment cannot get more checks than the lockout allows.
ALTER TABLE login_failures ADD COLUMN pending INTEGER NOT NULL DEFAULT 0;
