-- Issue 13, the developer portal's "regenerate secret with overlap": a client's previous
-- secret hash, still accepted until `previous_secret_until` (Unix seconds, `[portal]
-- secret_overlap` after the new secret was made). Both NULL: no previous secret.
ALTER TABLE clients ADD COLUMN previous_secret_hash TEXT;
ALTER TABLE clients ADD COLUMN previous_secret_until BIGINT;
