//! Files that hold secrets: what tokengate creates for them is readable by the owner only
//! (files 0600, new folders 0700), and [`exposed`] names any such file that group or others
//! can read, for `serve` and `check-config` to warn about. Existing files keep their mode:
//! an operator may share one with a group on purpose, so tokengate warns rather than chmods.

use std::io;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use crate::config::{DirectoryLocation, Settings, TokenStoreSettings};

/// The mode of every file tokengate creates for a secret.
pub const PRIVATE_FILE_MODE: u32 = 0o600;
/// The mode of every folder tokengate creates for such files.
pub const PRIVATE_DIR_MODE: u32 = 0o700;

/// Creates `dir` and its missing parents, each new one 0700; existing ones are left alone.
pub fn create_private_dir_all(dir: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(PRIVATE_DIR_MODE)
        .create(dir)
}

/// Opens a new file at `path`, 0600, failing if it exists.
pub fn create_private_file(path: &Path) -> io::Result<std::fs::File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(PRIVATE_FILE_MODE)
        .open(path)
}

/// Makes sure `path` exists, creating it empty and 0600 if it does not.
pub fn ensure_private_file(path: &Path) -> io::Result<()> {
    match create_private_file(path) {
        Ok(_) => Ok(()),
        Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(err) => Err(err),
    }
}

/// The permission bits of `path` when group or others may read it.
pub fn readable_by_others(path: &Path) -> Option<u32> {
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o044 != 0).then_some(mode)
}

/// Whether a PostgreSQL URL carries a password (`user:password@` or `password=`).
fn url_has_password(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let (authority, query) = match rest.split_once('?') {
        Some((before, query)) => (before, query),
        None => (rest, ""),
    };
    let authority = authority.split('/').next().unwrap_or_default();
    let in_userinfo = authority
        .rsplit_once('@')
        .and_then(|(userinfo, _)| userinfo.split_once(':'))
        .is_some_and(|(_, password)| !password.is_empty());
    in_userinfo
        || query.split('&').any(|pair| {
            pair.strip_prefix("password=")
                .is_some_and(|p| !p.is_empty())
        })
}

/// The files `settings` names that hold secrets: the config file when its database URL has a
/// password, the users and clients files, the TLS key, the JWT signing keys, and the SQLite
/// token database with its `-wal`/`-shm` files (password hashes when users are in it).
pub fn secret_files(settings: &Settings) -> Vec<PathBuf> {
    let mut files = Vec::new();
    match &settings.stores.tokens {
        TokenStoreSettings::Postgres(postgres) if url_has_password(&postgres.url) => {
            files.push(settings.config_file.clone());
        }
        TokenStoreSettings::Postgres(_) => {}
        TokenStoreSettings::Sqlite { path, .. } => {
            files.push(path.clone());
            for suffix in ["-wal", "-shm"] {
                let mut name = path.clone().into_os_string();
                name.push(suffix);
                files.push(PathBuf::from(name));
            }
        }
    }
    for location in [&settings.stores.users, &settings.stores.clients] {
        if let DirectoryLocation::File(path) = location {
            files.push(path.clone());
        }
    }
    files.push(settings.tls.key.clone());
    if let Ok(entries) = std::fs::read_dir(&settings.oauth.signing_keys_dir) {
        let mut keys: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "pem"))
            .collect();
        keys.sort();
        files.extend(keys);
    }
    files
}

/// Each secret file that group or others can read, with its mode.
pub fn exposed(settings: &Settings) -> Vec<(PathBuf, u32)> {
    secret_files(settings)
        .into_iter()
        .filter_map(|path| readable_by_others(&path).map(|mode| (path, mode)))
        .collect()
}

/// What `serve` and `check-config` say about one exposed file.
pub fn warning(path: &Path, mode: u32) -> String {
    format!(
        "{}: holds secrets and is readable by group or others (mode {mode:o}); run chmod 600 on it",
        path.display()
    )
}

/// Logs a warning for every exposed secret file (at `serve`).
pub fn warn_exposed(settings: &Settings) {
    for (path, mode) in exposed(settings) {
        tracing::warn!("{}", warning(&path, mode));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_passwords_are_found_in_the_userinfo_or_the_query() {
        for url in [
            "postgres://tokengate:hunter2@db:5432/tokens",
            "postgresql://u:p@db/tokens?sslmode=verify-full",
            "postgres://db/tokens?user=u&password=p",
        ] {
            assert!(url_has_password(url), "{url}");
        }
        for url in [
            "postgres://tokengate@db:5432/tokens",
            "postgres://db/tokens?sslmode=require",
            "postgres://u:@db/tokens",
            "postgres://u@db/tokens?passfile=/x:y@",
        ] {
            assert!(!url_has_password(url), "{url}");
        }
    }

    #[test]
    fn new_files_and_folders_are_private() {
        let home = tempfile::tempdir().unwrap();
        let dir = home.path().join("a/b");
        create_private_dir_all(&dir).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&home.path().join("a")), 0o700);
        assert_eq!(mode(&dir), 0o700);
        let file = dir.join("f");
        ensure_private_file(&file).unwrap();
        ensure_private_file(&file).unwrap();
        assert_eq!(mode(&file), 0o600);
        assert_eq!(readable_by_others(&file), None);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(readable_by_others(&file), Some(0o640));
    }
}
