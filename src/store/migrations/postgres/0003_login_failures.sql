-- Account lockout: failed password grants per user name within a window, and the lock.
CREATE TABLE login_failures (
    username     TEXT   NOT NULL PRIMARY KEY,
    failures     BIGINT NOT NULL,
    window_start BIGINT NOT NULL,
    locked_until BIGINT
);
