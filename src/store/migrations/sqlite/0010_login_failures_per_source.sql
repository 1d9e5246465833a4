-- Lockout counts per user name and client address (`source` = the address as text), plus one
-- row per name for every address together (`source` = ''). SQLite cannot change a primary
-- key in place: the table is rebuilt. The rows are transient; the old per-name counts become
-- the every-address rows.
CREATE TABLE login_failures_by_source (
    username        TEXT    NOT NULL,
    source          TEXT    NOT NULL,
    failures        INTEGER NOT NULL,
    window_start    INTEGER NOT NULL,
    locked_until    INTEGER,
    pending         INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (username, source)
) WITHOUT ROWID;
INSERT INTO login_failures_by_source (username, source, failures, window_start, locked_until, pending)
    SELECT username, '', failures, window_start, locked_until, 0 FROM login_failures;
DROP TABLE login_failures;
ALTER TABLE login_failures_by_source RENAME TO login_failures;
