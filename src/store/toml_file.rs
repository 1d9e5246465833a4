//! Users and clients kept in TOML files (`config/users.toml`, `config/clients.toml`).
//!
//! The files are the operator's interface (edited by hand or by `tokengate user|client …`), so
//! a running server notices changes: every `reload_interval` it checks the file's identity
//! (inode, size, mtime) and re-reads it when it changed. A file that no longer parses is
//! reported in the log and the last good contents stay in force.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;

use super::model::{Client, ClientFields, Role, User};
use super::{ClientStore, StoreError, UserStore};
use crate::crypto::password;
use crate::toml_parse;

/// One thing wrong with a users or clients file, naming where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    pub file: PathBuf,
    /// Dotted key path (`clients.ID.scopes`); empty when the problem is the whole file.
    pub key: String,
    pub message: String,
}

impl fmt::Display for FileProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.key, self.message)
        }
    }
}

/// Every problem of an unreadable users or clients file, one a line (`config` turns it into a
/// `FileError`).
#[derive(Debug, thiserror::Error)]
pub struct FileError {
    pub problems: Vec<FileProblem>,
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.problems.iter().map(ToString::to_string).collect();
        write!(f, "{}", lines.join("\n"))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUsersFile {
    #[serde(default)]
    users: BTreeMap<String, RawUser>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    password_hash: String,
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    roles: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClientsFile {
    #[serde(default)]
    clients: BTreeMap<String, RawClient>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawClient {
    /// Absent for a public client.
    #[serde(default)]
    secret_hash: Option<String>,
    #[serde(default)]
    public: bool,
    #[serde(default)]
    redirect_uris: Vec<String>,
    #[serde(default)]
    require_consent: bool,
    name: Option<String>,
    owner: Option<String>,
    grant_types: Vec<String>,
    #[serde(default)]
    scopes: Vec<String>,
    access_token_validity_period: Option<i64>,
    application_access_token_validity_period: Option<i64>,
    refresh_token_validity_period: Option<i64>,
    #[serde(default)]
    introspect: bool,
    token_format: Option<String>,
    audience: Option<String>,
    #[serde(default)]
    disabled: bool,
    #[serde(default)]
    #[allow(dead_code)] // for the operator's eyes only
    description: Option<String>,
}

fn read(path: &Path) -> Result<String, FileError> {
    std::fs::read_to_string(path).map_err(|err| FileError {
        problems: vec![problem(
            path,
            String::new(),
            format!("cannot read the file: {err}"),
        )],
    })
}

fn problem(file: &Path, key: String, message: impl Into<String>) -> FileProblem {
    FileProblem {
        file: file.to_path_buf(),
        key,
        message: message.into(),
    }
}

/// [`toml_parse::parse`], its problems naming `path`.
fn parse_toml<T: serde::de::DeserializeOwned>(text: &str, path: &Path) -> Result<T, FileError> {
    toml_parse::parse(text).map_err(|found| FileError {
        problems: found
            .into_iter()
            .map(|found| problem(path, found.key, found.message))
            .collect(),
    })
}

/// Reads and validates a users file, collecting every problem.
pub fn load_users(path: &Path) -> Result<HashMap<String, User>, FileError> {
    parse_users(&read(path)?, path)
}

/// Validates the text of a users file; problems name `path`.
pub fn parse_users(text: &str, path: &Path) -> Result<HashMap<String, User>, FileError> {
    let raw: RawUsersFile = parse_toml(text, path)?;
    let mut problems = Vec::new();
    let mut users = HashMap::new();
    for (name, user) in raw.users {
        if let Err(err) = password::check_phc(&user.password_hash) {
            problems.push(problem(
                path,
                format!("users.{name}.password_hash"),
                format!("not an argon2 PHC string ({err})"),
            ));
        }
        let (roles, unknown) = Role::parse_list(user.roles.iter().map(String::as_str));
        for role in unknown {
            problems.push(problem(
                path,
                format!("users.{name}.roles"),
                format!("unknown role `{role}` (known: developer, admin)"),
            ));
        }
        users.insert(
            name.clone(),
            User {
                name,
                password_hash: user.password_hash,
                disabled: user.disabled,
                roles,
            },
        );
    }
    if problems.is_empty() {
        Ok(users)
    } else {
        Err(FileError { problems })
    }
}

/// Reads and validates a clients file, collecting every problem.
pub fn load_clients(path: &Path) -> Result<HashMap<String, Arc<Client>>, FileError> {
    parse_clients(&read(path)?, path)
}

/// Validates the text of a clients file; problems name `path`.
pub fn parse_clients(text: &str, path: &Path) -> Result<HashMap<String, Arc<Client>>, FileError> {
    let raw: RawClientsFile = parse_toml(text, path)?;
    let mut problems = Vec::new();
    let mut clients = HashMap::new();
    for (id, raw_client) in raw.clients {
        let fields = ClientFields {
            secret_hash: raw_client.secret_hash.unwrap_or_default(),
            public: raw_client.public,
            redirect_uris: raw_client.redirect_uris,
            require_consent: raw_client.require_consent,
            name: raw_client.name,
            owner: raw_client.owner,
            grant_types: raw_client.grant_types,
            scopes: raw_client.scopes,
            access_token_validity_period: raw_client.access_token_validity_period,
            application_access_token_validity_period: raw_client
                .application_access_token_validity_period,
            refresh_token_validity_period: raw_client.refresh_token_validity_period,
            introspect: raw_client.introspect,
            token_format: raw_client.token_format,
            audience: raw_client.audience,
            disabled: raw_client.disabled,
        };
        let (client, found) = Client::check(id.clone(), fields);
        problems.extend(
            found
                .into_iter()
                .map(|(field, message)| problem(path, format!("clients.{id}.{field}"), message)),
        );
        clients.insert(id, Arc::new(client));
    }
    if problems.is_empty() {
        Ok(clients)
    } else {
        Err(FileError { problems })
    }
}

type Stamp = (u64, u64, i64, i64);

fn stamp_of(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.ino(), meta.size(), meta.mtime(), meta.mtime_nsec()))
}

/// A parsed file kept current by a background task.
struct WatchedFile<T> {
    path: PathBuf,
    load: fn(&Path) -> Result<T, FileError>,
    current: RwLock<(Option<Stamp>, Arc<T>)>,
}

impl<T: Send + Sync + 'static> WatchedFile<T> {
    fn open(path: &Path, load: fn(&Path) -> Result<T, FileError>) -> Result<Self, FileError> {
        let stamp = stamp_of(path);
        let value = load(path)?;
        Ok(Self {
            path: path.to_path_buf(),
            load,
            current: RwLock::new((stamp, Arc::new(value))),
        })
    }

    fn get(&self) -> Arc<T> {
        match self.current.read() {
            Ok(guard) => guard.1.clone(),
            Err(poisoned) => poisoned.into_inner().1.clone(),
        }
    }

    fn reload_if_changed(&self) {
        let stamp = stamp_of(&self.path);
        let unchanged = match self.current.read() {
            Ok(guard) => guard.0 == stamp,
            Err(_) => false,
        };
        if unchanged {
            return;
        }
        match (self.load)(&self.path) {
            Ok(value) => {
                if let Ok(mut guard) = self.current.write() {
                    *guard = (stamp, Arc::new(value));
                }
                tracing::info!(file = %self.path.display(), "reloaded");
            }
            Err(err) => {
                // Remember the stamp so a broken file is reported once, not every interval.
                if let Ok(mut guard) = self.current.write() {
                    guard.0 = stamp;
                }
                tracing::error!(file = %self.path.display(), problems = %err, "not reloaded; keeping the previous contents");
            }
        }
    }

    /// Checks for changes every `interval` until the store is dropped.
    fn watch(self: &Arc<Self>, interval: Duration) {
        crate::reload::periodically(self, interval, Self::reload_if_changed);
    }
}

/// Users from a TOML file.
pub struct TomlUserStore {
    file: Arc<WatchedFile<HashMap<String, User>>>,
}

impl TomlUserStore {
    pub fn open(path: &Path, reload_interval: Duration) -> Result<Self, FileError> {
        let file = Arc::new(WatchedFile::open(path, load_users)?);
        file.watch(reload_interval);
        Ok(Self { file })
    }

    /// Every user, for the startup demo-credential check.
    pub fn all(&self) -> Vec<User> {
        self.file.get().values().cloned().collect()
    }
}

#[async_trait]
impl UserStore for TomlUserStore {
    async fn find_user(&self, name: &str) -> Result<Option<User>, StoreError> {
        Ok(self.file.get().get(name).cloned())
    }

    fn holds_users_in_memory(&self) -> bool {
        true
    }

    fn enabled_in_memory(&self, name: &str) -> Option<bool> {
        Some(self.file.get().get(name).is_some_and(|user| !user.disabled))
    }
}

/// Clients from a TOML file.
pub struct TomlClientStore {
    file: Arc<WatchedFile<HashMap<String, Arc<Client>>>>,
}

impl TomlClientStore {
    pub fn open(path: &Path, reload_interval: Duration) -> Result<Self, FileError> {
        let file = Arc::new(WatchedFile::open(path, load_clients)?);
        file.watch(reload_interval);
        Ok(Self { file })
    }
}

#[async_trait]
impl ClientStore for TomlClientStore {
    async fn find_client(&self, id: &str) -> Result<Option<Arc<Client>>, StoreError> {
        Ok(self.file.get().get(id).cloned())
    }

    async fn list_clients(&self) -> Result<Vec<Arc<Client>>, StoreError> {
        Ok(self.file.get().values().cloned().collect())
    }
}
