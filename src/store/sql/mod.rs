//! The SQL of every kind of stored data, one file per kind, both dialects side by side.
//!
//! A statement both databases read the same way is written once, with PostgreSQL's `$1`, `$2`…
//! parameters. SQLite reads `$1` as a named parameter and numbers named parameters in the
//! order they first appear, so in a shared statement `$1` must come first, then `$2`, and so
//! on: `every_shared_statement_numbers_its_parameters_in_order` checks each one against the
//! real SQLite schema. Where the dialects differ, the two texts sit next to each other, named
//! `…_SQLITE` and `…_POSTGRES`. The backends (`sqlite.rs`, `postgres.rs`) hold only how
//! statements are run: connections, threads, batching, retries.

pub(crate) mod directory;
pub(crate) mod lockouts;
pub(crate) mod purge;
pub(crate) mod registration;
pub(crate) mod tokens;

#[cfg(test)]
mod tests {
    use std::sync::LazyLock;

    use super::*;

    /// Every statement the SQLite store runs as written here.
    fn shared_statements() -> Vec<(&'static str, String)> {
        let fixed: [(&str, &str); 36] = [
            ("tokens::INSERT_SESSION", tokens::INSERT_SESSION),
            ("tokens::FIND_SESSION", tokens::FIND_SESSION),
            ("tokens::DELETE_SESSION", tokens::DELETE_SESSION),
            ("purge::SESSIONS_SQLITE", purge::SESSIONS_SQLITE),
            ("tokens::INSERT_CODE", tokens::INSERT_CODE),
            ("tokens::FIND_CODE", tokens::FIND_CODE),
            ("tokens::REDEEM_CODE", tokens::REDEEM_CODE),
            ("purge::CODES_SQLITE", purge::CODES_SQLITE),
            ("tokens::INSERT_ACCESS", tokens::INSERT_ACCESS),
            ("tokens::INSERT_REFRESH", tokens::INSERT_REFRESH),
            ("tokens::REVOKE_ACCESS", tokens::REVOKE_ACCESS),
            ("tokens::REVOKE_FAMILY", tokens::REVOKE_FAMILY),
            ("lockouts::SELECT_ROWS", lockouts::SELECT_ROWS),
            ("lockouts::DELETE_ROW", lockouts::DELETE_ROW),
            ("lockouts::UPSERT_ROW", lockouts::UPSERT_ROW),
            ("lockouts::CLEAR_USER", lockouts::CLEAR_USER),
            ("directory::SELECT_USERS", directory::SELECT_USERS),
            ("directory::FIND_USER", directory::FIND_USER),
            ("directory::INSERT_USER", directory::INSERT_USER),
            ("directory::DELETE_USER", directory::DELETE_USER),
            ("directory::SET_USER_PASSWORD", directory::SET_USER_PASSWORD),
            ("directory::SET_USER_DISABLED", directory::SET_USER_DISABLED),
            ("directory::SELECT_CLIENTS", directory::SELECT_CLIENTS),
            ("directory::INSERT_CLIENT", directory::INSERT_CLIENT),
            ("directory::DELETE_CLIENT", directory::DELETE_CLIENT),
            (
                "directory::SET_CLIENT_DISABLED",
                directory::SET_CLIENT_DISABLED,
            ),
            ("directory::CLIENT_EXISTS", directory::CLIENT_EXISTS),
            (
                "registration::INSERT_INITIAL_TOKEN",
                registration::INSERT_INITIAL_TOKEN,
            ),
            (
                "registration::FIND_INITIAL_TOKEN",
                registration::FIND_INITIAL_TOKEN,
            ),
            (
                "registration::SPEND_INITIAL_TOKEN",
                registration::SPEND_INITIAL_TOKEN,
            ),
            (
                "registration::UPSERT_REGISTRATION",
                registration::UPSERT_REGISTRATION,
            ),
            (
                "registration::FIND_REGISTRATION",
                registration::FIND_REGISTRATION,
            ),
            (
                "registration::DELETE_REGISTRATION",
                registration::DELETE_REGISTRATION,
            ),
            ("registration::UPDATE_CLIENT", registration::UPDATE_CLIENT),
            (
                "registration::REPLACE_CLIENT_SECRET",
                registration::REPLACE_CLIENT_SECRET,
            ),
            (
                "registration::SET_REGISTRATION_AUTH_METHOD",
                registration::SET_REGISTRATION_AUTH_METHOD,
            ),
        ];
        let built: [(&str, &LazyLock<String>); 5] = [
            ("tokens::FIND_REFRESH", &tokens::FIND_REFRESH),
            ("tokens::FIND_ACCESS", &tokens::FIND_ACCESS),
            ("tokens::SPEND_REFRESH", &tokens::SPEND_REFRESH),
            ("tokens::UPSERT_MARK", &tokens::UPSERT_MARK),
            ("purge::REVOCATIONS_SQLITE", &purge::REVOCATIONS_SQLITE),
        ];
        fixed
            .into_iter()
            .map(|(name, sql)| (name, sql.to_owned()))
            .chain(built.into_iter().map(|(name, sql)| (name, (**sql).clone())))
            .chain(
                purge::TOKENS_SQLITE
                    .into_iter()
                    .chain([purge::LOCKOUTS_SQLITE, directory::SELECT_CLIENTS_REVISION])
                    .map(|sql| ("purge/revision", sql.to_owned())),
            )
            .collect()
    }

    #[test]
    fn every_shared_statement_numbers_its_parameters_in_order() {
        let conn = rusqlite::Connection::open_in_memory().unwrap();
        let migrations = std::fs::read_dir(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/src/store/migrations/sqlite"
        ))
        .unwrap();
        let mut files: Vec<_> = migrations.map(|entry| entry.unwrap().path()).collect();
        files.sort();
        for file in files {
            conn.execute_batch(&std::fs::read_to_string(&file).unwrap())
                .unwrap_or_else(|err| panic!("{}: {err}", file.display()));
        }
        for (name, sql) in shared_statements() {
            let statement = conn
                .prepare(&sql)
                .unwrap_or_else(|err| panic!("{name} does not prepare on SQLite: {err}"));
            for index in 1..=statement.parameter_count() {
                assert_eq!(
                    statement.parameter_name(index),
                    Some(format!("${index}").as_str()),
                    "{name}: parameter {index} is not ${index}: {sql}"
                );
            }
        }
    }
}
