-- Issue 12: public clients (no secret: `secret_hash` is '') and the authorization code grant's
-- redirect URIs (space-separated, as the other lists), third-party clients that ask the user's
-- consent, and the name the login page shows.
ALTER TABLE clients ADD COLUMN public INTEGER NOT NULL DEFAULT 0;
ALTER TABLE clients ADD COLUMN redirect_uris TEXT NOT NULL DEFAULT '';
ALTER TABLE clients ADD COLUMN require_consent INTEGER NOT NULL DEFAULT 0;
ALTER TABLE clients ADD COLUMN name TEXT;
