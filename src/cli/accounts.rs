//! `tokengate user …` / `client …` against wherever `[stores]` keeps users and clients: a TOML
//! file (edited through [`admin`]) or the token database (`"sql"`).

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

use super::admin::{self, AdminError, NewClient};
use super::CliError;
use crate::clock::{Clock as _, SystemClock};
use crate::config::{ConfigError, DirectoryLocation, Settings};
use crate::store::model::{Client, Role, User};
use crate::store::toml_file::{load_clients, load_users};
use crate::store::{self, DatabaseStores, SubjectKind};

/// How the messages name the database.
const DATABASE: &str = "the token database";

/// The user and client stores the settings name, opened for editing.
pub struct Accounts<'a> {
    settings: &'a Settings,
    database: Option<DatabaseStores>,
}

fn not_found(what: &'static str, name: &str) -> CliError {
    CliError::Admin(AdminError::NotFound {
        place: DATABASE.into(),
        what,
        name: name.to_owned(),
    })
}

fn exists(what: &'static str, name: &str) -> CliError {
    CliError::Admin(AdminError::Exists {
        place: DATABASE.into(),
        what,
        name: name.to_owned(),
    })
}

fn found(changed: bool, what: &'static str, name: &str) -> Result<(), CliError> {
    if changed {
        Ok(())
    } else {
        Err(not_found(what, name))
    }
}

impl<'a> Accounts<'a> {
    /// Opens the token database when users or clients live there, or when `with_database`.
    pub async fn open(settings: &'a Settings, with_database: bool) -> Result<Self, CliError> {
        let needed = with_database
            || settings.stores.users == DirectoryLocation::Database
            || settings.stores.clients == DirectoryLocation::Database;
        let database = if needed {
            Some(
                store::open_database(
                    &settings.stores.tokens,
                    Arc::new(store::measured::Unobserved),
                )
                .await?,
            )
        } else {
            None
        };
        Ok(Self { settings, database })
    }

    pub fn database(&self) -> Result<&DatabaseStores, CliError> {
        self.database
            .as_ref()
            .ok_or_else(|| CliError::Input("the token database is not open".into()))
    }

    /// Commits and closes the database connection, if one was opened.
    pub async fn close(self) {
        if let Some(database) = self.database {
            database.tokens.close().await;
        }
    }

    /// Whether users live in a file (running servers see changes within `reload_interval`).
    pub fn users_in_file(&self) -> bool {
        self.settings.stores.users != DirectoryLocation::Database
    }

    pub fn users_place(&self) -> String {
        self.settings.stores.users.describe()
    }

    pub fn clients_place(&self) -> String {
        self.settings.stores.clients.describe()
    }

    pub async fn user_exists(&self, name: &str) -> Result<bool, CliError> {
        Ok(match &self.settings.stores.users {
            DirectoryLocation::File(path) => load_users(path).is_ok_and(|u| u.contains_key(name)),
            DirectoryLocation::Database => {
                self.database()?.directory.find_user(name).await?.is_some()
            }
        })
    }

    pub async fn client_exists(&self, id: &str) -> Result<bool, CliError> {
        Ok(match &self.settings.stores.clients {
            DirectoryLocation::File(path) => load_clients(path).is_ok_and(|c| c.contains_key(id)),
            DirectoryLocation::Database => self.database()?.directory.client_exists(id).await?,
        })
    }

    pub async fn add_user(&self, user: &User) -> Result<(), CliError> {
        match &self.settings.stores.users {
            DirectoryLocation::File(path) => {
                admin::add_user(path, user)?;
            }
            DirectoryLocation::Database => {
                admin::check_user_name(&user.name)?;
                let added = self.database()?.directory.add_user(user, now()).await?;
                if !added {
                    return Err(exists("user", &user.name));
                }
            }
        }
        Ok(())
    }

    pub async fn remove_user(&self, name: &str) -> Result<(), CliError> {
        match &self.settings.stores.users {
            DirectoryLocation::File(path) => Ok(admin::remove_user(path, name)?),
            DirectoryLocation::Database => {
                let removed = self.database()?.directory.remove_user(name).await?;
                found(removed, "user", name)
            }
        }
    }

    pub async fn set_user_password(&self, name: &str, password_hash: &str) -> Result<(), CliError> {
        match &self.settings.stores.users {
            DirectoryLocation::File(path) => {
                Ok(admin::set_user_password(path, name, password_hash)?)
            }
            DirectoryLocation::Database => {
                let directory = &self.database()?.directory;
                let changed = directory.set_user_password(name, password_hash).await?;
                found(changed, "user", name)
            }
        }
    }

    /// Ends every token of the user or client issued so far, on every node, with one write:
    /// a not-before mark in the token database (see `TokenStore::revoke_subject`).
    ///
    /// `after_edit`: the subject was just changed (a new password, a removal). Running servers
    /// go on using the old entry until they re-read it, within `reload_interval` (users and
    /// clients files, and the clients table, which nodes hold in memory; only users in the
    /// database are read on every login), so the mark is then set that much (plus a second)
    /// ahead: tokens issued on the old entry meanwhile are ended too, and so are logins of the
    /// next few seconds. Returns the mark's time (Unix ms).
    pub async fn end_tokens(
        &self,
        kind: SubjectKind,
        name: &str,
        after_edit: bool,
    ) -> Result<i64, CliError> {
        let seen_late = match kind {
            SubjectKind::User => self.users_in_file(),
            SubjectKind::Client => true,
        };
        let now_ms = SystemClock.now_ms();
        let ahead_ms = if after_edit && seen_late {
            let reload = self.settings.stores.reload_interval.as_millis();
            i64::try_from(reload)
                .unwrap_or(i64::MAX)
                .saturating_add(1000)
        } else {
            0
        };
        let not_before_ms = now_ms.saturating_add(ahead_ms);
        self.database()?
            .tokens
            .revoke_subject(kind, name, not_before_ms, now_ms.div_euclid(1000))
            .await?;
        Ok(not_before_ms)
    }

    pub async fn set_user_disabled(&self, name: &str, disabled: bool) -> Result<(), CliError> {
        match &self.settings.stores.users {
            DirectoryLocation::File(path) => Ok(admin::set_user_disabled(path, name, disabled)?),
            DirectoryLocation::Database => {
                let directory = &self.database()?.directory;
                let changed = directory.set_user_disabled(name, disabled).await?;
                found(changed, "user", name)
            }
        }
    }

    /// Every user, by name.
    pub async fn list_users(&self) -> Result<Vec<User>, CliError> {
        let mut users = match &self.settings.stores.users {
            DirectoryLocation::File(path) => return Ok(admin::list_users(path)?),
            DirectoryLocation::Database => self.database()?.directory.list_users().await?,
        };
        users.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(users)
    }

    pub async fn set_user_roles(&self, name: &str, roles: &BTreeSet<Role>) -> Result<(), CliError> {
        match &self.settings.stores.users {
            DirectoryLocation::File(path) => Ok(admin::set_user_roles(path, name, roles)?),
            DirectoryLocation::Database => {
                let directory = &self.database()?.directory;
                let changed = directory.set_user_roles(name, roles).await?;
                found(changed, "user", name)
            }
        }
    }

    pub async fn add_client(&self, client: &NewClient<'_>) -> Result<(), CliError> {
        match &self.settings.stores.clients {
            DirectoryLocation::File(path) => admin::add_client(path, client)?,
            DirectoryLocation::Database => {
                let checked = admin::check_new_client(client, DATABASE)?;
                let added = self
                    .database()?
                    .directory
                    .add_client(&checked, now())
                    .await?;
                if !added {
                    return Err(exists("client", client.id));
                }
            }
        }
        Ok(())
    }

    /// Adds a client read from another store (`client import`), as it is.
    pub async fn add_existing_client(&self, client: &Client) -> Result<(), CliError> {
        match &self.settings.stores.clients {
            DirectoryLocation::File(path) => {
                let grant_types: Vec<String> = client
                    .grant_types
                    .iter()
                    .map(|g| g.as_str().to_owned())
                    .collect();
                let scopes: Vec<String> = client.scopes.iter().cloned().collect();
                let redirect_uris: Vec<String> = client
                    .redirect_uris
                    .iter()
                    .map(|uri| uri.as_str().to_owned())
                    .collect();
                let secs = |value: Option<u64>| value.and_then(|secs| i64::try_from(secs).ok());
                admin::add_client(
                    path,
                    &NewClient {
                        id: &client.id,
                        secret_hash: &client.secret_hash,
                        public: client.public,
                        redirect_uris: &redirect_uris,
                        require_consent: client.require_consent,
                        name: client.name.as_deref(),
                        grant_types: &grant_types,
                        scopes: &scopes,
                        access_token_validity_period: secs(client.access_token_validity_secs),
                        application_access_token_validity_period: secs(
                            client.application_access_token_validity_secs,
                        ),
                        refresh_token_validity_period: secs(client.refresh_token_validity_secs),
                        introspect: client.introspect,
                        token_format: client.token_format.map(|f| f.as_str()),
                        audience: client.audience.as_deref(),
                        disabled: client.disabled,
                    },
                )?;
            }
            DirectoryLocation::Database => {
                admin::check_client_id(&client.id)?;
                let added = self.database()?.directory.add_client(client, now()).await?;
                if !added {
                    return Err(exists("client", &client.id));
                }
            }
        }
        Ok(())
    }

    pub async fn remove_client(&self, id: &str) -> Result<(), CliError> {
        match &self.settings.stores.clients {
            DirectoryLocation::File(path) => Ok(admin::remove_client(path, id)?),
            DirectoryLocation::Database => {
                let removed = self.database()?.directory.remove_client(id).await?;
                found(removed, "client", id)
            }
        }
    }

    pub async fn set_client_disabled(&self, id: &str, disabled: bool) -> Result<(), CliError> {
        match &self.settings.stores.clients {
            DirectoryLocation::File(path) => Ok(admin::set_client_disabled(path, id, disabled)?),
            DirectoryLocation::Database => {
                let directory = &self.database()?.directory;
                let changed = directory.set_client_disabled(id, disabled).await?;
                found(changed, "client", id)
            }
        }
    }

    /// One line per client, by id.
    pub async fn list_clients(&self) -> Result<Vec<String>, CliError> {
        match &self.settings.stores.clients {
            DirectoryLocation::File(path) => Ok(admin::list_clients(path)?),
            DirectoryLocation::Database => {
                let rows = self.database()?.directory.list_clients().await?;
                let mut lines = Vec::new();
                for row in rows {
                    match row.into_client() {
                        Ok(client) => lines.push(admin::client_line(&client)),
                        // Shown, not hidden: the operator is the one who can mend it.
                        Err(err) => eprintln!("{err}"),
                    }
                }
                Ok(lines)
            }
        }
    }
}

fn now() -> i64 {
    SystemClock.now_secs()
}

/// The users of a users file, for `user import`, by name.
pub fn users_in_file(path: &Path) -> Result<Vec<User>, CliError> {
    let mut users: Vec<User> = load_users(path)
        .map_err(ConfigError::from)?
        .into_values()
        .collect();
    users.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(users)
}

/// The clients of a clients file, for `client import`, by id.
pub fn clients_in_file(path: &Path) -> Result<Vec<Client>, CliError> {
    let mut clients: Vec<Client> = load_clients(path)
        .map_err(ConfigError::from)?
        .into_values()
        .map(|client| Client::clone(&client))
        .collect();
    clients.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(clients)
}
