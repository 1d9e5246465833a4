-- Users and clients in the database (`stores.users = "sql"`, `stores.clients = "sql"`).
-- Lists (grant types, scopes) are space-separated, as on the wire.
CREATE TABLE users (
    name TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    disabled BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);

CREATE TABLE clients (
    id TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    grant_types TEXT NOT NULL,
    scopes TEXT NOT NULL DEFAULT '',
    access_token_validity_period BIGINT,
    application_access_token_validity_period BIGINT,
    refresh_token_validity_period BIGINT,
    introspect BOOLEAN NOT NULL DEFAULT FALSE,
    token_format TEXT,
    audience TEXT,
    disabled BOOLEAN NOT NULL DEFAULT FALSE,
    created_at BIGINT NOT NULL
);

-- Nodes keep the client list in memory and re-read it only when this number moved. A trigger
-- moves it, so an edit made with plain SQL is noticed too.
CREATE TABLE directory_revisions (
    what TEXT PRIMARY KEY,
    revision BIGINT NOT NULL
);
INSERT INTO directory_revisions (what, revision) VALUES ('clients', 0);

CREATE FUNCTION bump_clients_revision() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE directory_revisions SET revision = revision + 1 WHERE what = 'clients';
    RETURN NULL;
END
$$;

CREATE TRIGGER clients_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE ON clients
    FOR EACH STATEMENT EXECUTE FUNCTION bump_clients_revision();
