//! Failed-login counts (`login_failures`): one row per user name and client address, and one
//! per name for every address (`source = ''`). Shared by both dialects; PostgreSQL also takes
//! an advisory lock per name first (`postgres.rs`), SQLite's single writer needs none.

/// The rows of name `$1` for source `$2` and for every address (`$3`).
pub(crate) const SELECT_ROWS: &str = "SELECT source, failures, window_start, locked_until, \
    pending FROM login_failures WHERE username = $1 AND source IN ($2, $3)";

pub(crate) const DELETE_ROW: &str =
    "DELETE FROM login_failures WHERE username = $1 AND source = $2";

/// Stores a row: name `$1`, source `$2`, failures `$3`, window start `$4`, lock end `$5`,
/// checks in flight `$6`.
pub(crate) const UPSERT_ROW: &str = "INSERT INTO login_failures (username, source, failures, \
    window_start, locked_until, pending) VALUES ($1, $2, $3, $4, $5, $6) \
    ON CONFLICT (username, source) DO UPDATE SET \
    failures = $3, window_start = $4, locked_until = $5, pending = $6";

/// `tokengate user unlock`: every row of name `$1`.
pub(crate) const CLEAR_USER: &str = "DELETE FROM login_failures WHERE username = $1";
