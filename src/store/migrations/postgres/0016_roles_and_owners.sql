-- Issue 13: users' roles (`developer`, `admin`; space-separated, as the other lists) for the
-- developer portal, and the user who owns a client (NULL: made by the CLI, managed by admins).
ALTER TABLE users ADD COLUMN roles TEXT NOT NULL DEFAULT '';
ALTER TABLE clients ADD COLUMN owner TEXT;
CREATE INDEX clients_owner ON clients (owner);
