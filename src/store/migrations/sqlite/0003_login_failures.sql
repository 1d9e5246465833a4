-- Account lockout: failed password grants per user name within a window, and the lock.
CREATE TABLE login_failures (
    username        TEXT    NOT NULL PRIMARY KEY,
    failures        INTEGER NOT NULL,
    window_start    INTEGER NOT NULL,
    locked_until    INTEGER
) WITHOUT ROWID;
