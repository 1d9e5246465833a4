-- Users and clients in the database (`stores.users = "sql"`, `stores.clients = "sql"`).
-- Lists (grant types, scopes) are space-separated, as on the wire.
CREATE TABLE users (
    name TEXT PRIMARY KEY NOT NULL,
    password_hash TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);

CREATE TABLE clients (
    id TEXT PRIMARY KEY NOT NULL,
    secret_hash TEXT NOT NULL,
    grant_types TEXT NOT NULL,
    scopes TEXT NOT NULL DEFAULT '',
    access_token_validity_period INTEGER,
    application_access_token_validity_period INTEGER,
    refresh_token_validity_period INTEGER,
    introspect INTEGER NOT NULL DEFAULT 0,
    token_format TEXT,
    audience TEXT,
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL
);

-- Nodes keep the client list in memory and re-read it only when this number moved. Triggers
-- move it, so an edit made with plain SQL is noticed too.
CREATE TABLE directory_revisions (
    what TEXT PRIMARY KEY NOT NULL,
    revision INTEGER NOT NULL
);
INSERT INTO directory_revisions (what, revision) VALUES ('clients', 0);

CREATE TRIGGER clients_inserted AFTER INSERT ON clients BEGIN
    UPDATE directory_revisions SET revision = revision + 1 WHERE what = 'clients';
END;
CREATE TRIGGER clients_updated AFTER UPDATE ON clients BEGIN
    UPDATE directory_revisions SET revision = revision + 1 WHERE what = 'clients';
END;
CREATE TRIGGER clients_deleted AFTER DELETE ON clients BEGIN
    UPDATE directory_revisions SET revision = revision + 1 WHERE what = 'clients';
END;
