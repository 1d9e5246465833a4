//! Editing the user and client files for `tokengate user …` and `tokengate client …`.
//!
//! toml_edit keeps the operator's comments and layout. Writes go to a temporary file in the
//! same folder that is then renamed over the original, so a running server (which re-reads the
//! files) never sees half a file; the result is validated before it replaces the original.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use toml_edit::{value, Array, DocumentMut, Item, Table};

use crate::store::model::{Client, GrantType, Role, User};
use crate::store::toml_file::{load_clients, load_users, parse_clients, parse_users, FileError};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: not valid TOML: {message}", path.display())]
    Parse { path: PathBuf, message: String },
    /// `place`: the file, or the token database.
    #[error("{place}: {what} `{name}` already exists")]
    Exists {
        place: String,
        what: &'static str,
        name: String,
    },
    #[error("{place}: no {what} named `{name}`")]
    NotFound {
        place: String,
        what: &'static str,
        name: String,
    },
    #[error("{0}")]
    Invalid(String),
    #[error("the edit would leave an invalid file:\n{0}")]
    Validation(FileError),
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> AdminError + '_ {
    move |source| AdminError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_document(path: &Path, header: &str) -> Result<DocumentMut, AdminError> {
    match std::fs::read_to_string(path) {
        Ok(text) => text
            .parse::<DocumentMut>()
            .map_err(|err| AdminError::Parse {
                path: path.to_path_buf(),
                message: err.to_string().replace('\n', " "),
            }),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            Ok(header.parse::<DocumentMut>().unwrap_or_default())
        }
        Err(err) => Err(io_error(path)(err)),
    }
}

/// Runs `edit` holding an exclusive lock on a sidecar file, so two CLI runs editing the same
/// file at once cannot lose one another's change.
fn locked<T>(path: &Path, edit: impl FnOnce() -> Result<T, AdminError>) -> Result<T, AdminError> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let lock_path = path.with_file_name(format!(".{name}.lock"));
    if let Some(dir) = lock_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        crate::secret_files::create_private_dir_all(dir).map_err(io_error(dir))?;
    }
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(crate::secret_files::PRIVATE_FILE_MODE)
        .open(&lock_path)
        .map_err(io_error(&lock_path))?;
    lock.lock().map_err(io_error(&lock_path))?;
    let result = edit();
    let _ = lock.unlock();
    result
}

/// Writes `text` next to `path` and renames it into place, keeping the original's owner and
/// permissions (a root-run CLI must not leave a file the service cannot read), following a
/// symlink to the real file, and syncing the folder so the rename survives a crash.
fn replace_file(path: &Path, text: &str) -> Result<(), AdminError> {
    let resolved = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let path = resolved.as_path();
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    crate::secret_files::create_private_dir_all(dir).map_err(io_error(dir))?;
    let mut temp = tempfile::NamedTempFile::new_in(dir).map_err(io_error(dir))?;
    temp.write_all(text.as_bytes()).map_err(io_error(path))?;
    let original = std::fs::metadata(path).ok();
    let mode = original
        .as_ref()
        .map(|m| m.permissions().mode())
        .unwrap_or(crate::secret_files::PRIVATE_FILE_MODE);
    temp.as_file()
        .set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(io_error(path))?;
    if let Some(original) = &original {
        use std::os::unix::fs::MetadataExt as _;
        // Best effort: only root can give a file to another owner, and then this is wanted.
        let _ = std::os::unix::fs::chown(temp.path(), Some(original.uid()), Some(original.gid()));
    }
    temp.as_file().sync_all().map_err(io_error(path))?;
    temp.persist(path)
        .map_err(|err| io_error(path)(err.error))?;
    if let Ok(folder) = std::fs::File::open(dir) {
        let _ = folder.sync_all();
    }
    Ok(())
}

/// The section (`[users]` / `[clients]`) holding one sub-table per entry.
fn section<'a>(doc: &'a mut DocumentMut, name: &str) -> Result<&'a mut Table, AdminError> {
    let item = doc.entry(name).or_insert_with(|| {
        let mut table = Table::new();
        table.set_implicit(true);
        Item::Table(table)
    });
    item.as_table_mut()
        .ok_or_else(|| AdminError::Invalid(format!("`{name}` in the file is not a table")))
}

/// Adds `[section.name]`. In a file without entries the comments are the document's trailing
/// text, which would end up below the new table; they move above it instead.
fn insert_entry(
    doc: &mut DocumentMut,
    section_name: &str,
    name: &str,
    mut entry: Table,
) -> Result<(), AdminError> {
    let first_entry = section(doc, section_name)?.is_empty();
    if first_entry {
        let trailing = doc.trailing().as_str().unwrap_or("").to_owned();
        if !trailing.trim().is_empty() {
            doc.set_trailing("");
            let comments = if trailing.ends_with("\n\n") {
                trailing
            } else {
                format!("{}\n\n", trailing.trim_end())
            };
            entry.decor_mut().set_prefix(comments);
        }
    } else {
        entry.decor_mut().set_prefix("\n");
    }
    section(doc, section_name)?.insert(name, Item::Table(entry));
    Ok(())
}

/// Parses a user or client file's text; problems name `path`.
type Parse<T> = fn(&str, &Path) -> Result<T, FileError>;

/// Validates a file's new text before it replaces the original.
fn validate_with<T>(path: &Path, text: &str, parse: Parse<T>) -> Result<T, AdminError> {
    parse(text, path).map_err(AdminError::Validation)
}

const USERS_HEADER: &str = "# tokengate users: one [users.NAME] table each, password_hash an argon2id PHC string.\n# Edit with `tokengate user add|remove|list`.\n";
const CLIENTS_HEADER: &str = "# tokengate clients (applications): one [clients.ID] table each.\n# Edit with `tokengate client add|remove|list`.\n";

/// User names: printable, no surrounding spaces, at most 255 characters.
pub fn check_user_name(name: &str) -> Result<(), AdminError> {
    let ok = !name.is_empty()
        && name.chars().count() <= 255
        && name.trim() == name
        && !name.chars().any(char::is_control);
    if ok {
        Ok(())
    } else {
        Err(AdminError::Invalid(format!(
            "`{name}` is not a valid user name (1-255 printable characters, no surrounding spaces)"
        )))
    }
}

/// Client ids: letters, digits and `.`, `_`, `~`, `-` (safe in Basic credentials and URLs).
pub fn check_client_id(id: &str) -> Result<(), AdminError> {
    let ok = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '~' | '-'));
    if ok {
        Ok(())
    } else {
        Err(AdminError::Invalid(format!(
            "`{id}` is not a valid client id (1-128 of A-Z a-z 0-9 . _ ~ -)"
        )))
    }
}

pub fn add_user(path: &Path, user: &User) -> Result<(), AdminError> {
    check_user_name(&user.name)?;
    locked(path, || add_user_unlocked(path, user))
}

fn add_user_unlocked(path: &Path, user: &User) -> Result<(), AdminError> {
    let mut doc = read_document(path, USERS_HEADER)?;
    if section(&mut doc, "users")?.contains_key(&user.name) {
        return Err(AdminError::Exists {
            place: path.display().to_string(),
            what: "user",
            name: user.name.clone(),
        });
    }
    let mut entry = Table::new();
    entry.insert("password_hash", value(&user.password_hash));
    if user.disabled {
        entry.insert("disabled", value(true));
    }
    if !user.roles.is_empty() {
        let list: toml_edit::Array = user.roles.iter().map(|role| role.as_str()).collect();
        entry.insert("roles", value(list));
    }
    insert_entry(&mut doc, "users", &user.name, entry)?;
    let text = doc.to_string();
    validate_with(path, &text, parse_users)?;
    replace_file(path, &text)
}

pub fn remove_user(path: &Path, name: &str) -> Result<(), AdminError> {
    remove_entry(path, &USERS, name, parse_users)
}

fn remove_entry<T>(
    path: &Path,
    entry: &Entry,
    name: &str,
    parse: Parse<T>,
) -> Result<(), AdminError> {
    locked(path, || remove_entry_unlocked(path, entry, name, parse))
}

fn remove_entry_unlocked<T>(
    path: &Path,
    entry: &Entry,
    name: &str,
    parse: Parse<T>,
) -> Result<(), AdminError> {
    let mut doc = read_document(path, entry.header)?;
    let table = section(&mut doc, entry.section)?;
    let Some(removed) = table.remove(name) else {
        return Err(AdminError::NotFound {
            place: path.display().to_string(),
            what: entry.what,
            name: name.to_owned(),
        });
    };
    // Comments written above the removed entry belong to the file, not to the entry.
    let comments = removed
        .as_table()
        .and_then(|t| t.decor().prefix())
        .and_then(|prefix| prefix.as_str())
        .filter(|prefix| prefix.contains('#'))
        .map(str::to_owned);
    if let Some(comments) = comments {
        let kept_by_next_entry = match table.iter_mut().next() {
            Some((_, Item::Table(next))) => {
                let own = next.decor().prefix().and_then(|p| p.as_str()).unwrap_or("");
                let own = if own.trim().is_empty() { "" } else { own }.to_owned();
                next.decor_mut().set_prefix(format!("{comments}{own}"));
                true
            }
            _ => false,
        };
        if !kept_by_next_entry {
            let trailing = doc.trailing().as_str().unwrap_or("").to_owned();
            doc.set_trailing(format!("{}\n{trailing}", comments.trim_end()));
        }
    }
    let text = doc.to_string();
    validate_with(path, &text, parse)?;
    replace_file(path, &text)
}

pub fn set_user_disabled(path: &Path, name: &str, disabled: bool) -> Result<(), AdminError> {
    locked(path, || {
        set_disabled(path, &USERS, name, disabled, parse_users)
    })
}

/// Replaces the user's `password_hash`, keeping everything else in the file as it is.
pub fn set_user_password(path: &Path, name: &str, password_hash: &str) -> Result<(), AdminError> {
    locked(path, || {
        edit_entry(path, &USERS, name, parse_users, |table| {
            // The value is replaced in place: the key keeps the comment lines above it, the
            // value the comment at the end of its line.
            match table.get_mut("password_hash").and_then(Item::as_value_mut) {
                Some(old) => {
                    let decor = old.decor().clone();
                    *old = toml_edit::Value::from(password_hash);
                    *old.decor_mut() = decor;
                }
                None => {
                    table.insert("password_hash", value(password_hash));
                }
            }
        })
    })
}

pub fn set_client_disabled(path: &Path, id: &str, disabled: bool) -> Result<(), AdminError> {
    locked(path, || {
        set_disabled(path, &CLIENTS, id, disabled, parse_clients)
    })
}

/// Which kind of entry an edit is about.
struct Entry {
    section: &'static str,
    what: &'static str,
    header: &'static str,
}

const USERS: Entry = Entry {
    section: "users",
    what: "user",
    header: USERS_HEADER,
};

const CLIENTS: Entry = Entry {
    section: "clients",
    what: "client",
    header: CLIENTS_HEADER,
};

/// Sets `disabled = true`, or removes the key (enabled is the default).
fn set_disabled<T>(
    path: &Path,
    entry: &Entry,
    name: &str,
    disabled: bool,
    parse: Parse<T>,
) -> Result<(), AdminError> {
    edit_entry(path, entry, name, parse, |table| {
        if disabled {
            table.insert("disabled", value(true));
        } else {
            table.remove("disabled");
        }
    })
}

/// Applies `change` to the table of one existing entry, validates and replaces the file.
fn edit_entry<T>(
    path: &Path,
    entry: &Entry,
    name: &str,
    parse: Parse<T>,
    change: impl FnOnce(&mut Table),
) -> Result<(), AdminError> {
    let mut doc = read_document(path, entry.header)?;
    let Some(table) = section(&mut doc, entry.section)?
        .get_mut(name)
        .and_then(Item::as_table_mut)
    else {
        return Err(AdminError::NotFound {
            place: path.display().to_string(),
            what: entry.what,
            name: name.to_owned(),
        });
    };
    change(table);
    let text = doc.to_string();
    validate_with(path, &text, parse)?;
    replace_file(path, &text)
}

/// Every user, by name.
pub fn list_users(path: &Path) -> Result<Vec<User>, AdminError> {
    let users = load_users(path).map_err(AdminError::Validation)?;
    let mut list: Vec<User> = users.into_values().collect();
    list.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(list)
}

/// Replaces the user's `roles` (no key when there are none), keeping the rest of the file.
pub fn set_user_roles(path: &Path, name: &str, roles: &BTreeSet<Role>) -> Result<(), AdminError> {
    locked(path, || {
        edit_entry(path, &USERS, name, parse_users, |table| {
            if roles.is_empty() {
                table.remove("roles");
            } else {
                let list: toml_edit::Array = roles.iter().map(|role| role.as_str()).collect();
                table.insert("roles", value(list));
            }
        })
    })
}

/// `user add --role` / `user set-roles`: the roles, or which word is none.
pub fn parse_roles(words: &[String]) -> Result<BTreeSet<Role>, AdminError> {
    let (roles, unknown) = Role::parse_list(words.iter().map(String::as_str));
    match unknown.first() {
        Some(word) => Err(AdminError::Invalid(format!(
            "`{word}` is not a role (known: developer, admin)"
        ))),
        None => Ok(roles),
    }
}

/// A client to add.
pub struct NewClient<'a> {
    pub id: &'a str,
    /// Empty for a public client.
    pub secret_hash: &'a str,
    pub public: bool,
    pub redirect_uris: &'a [String],
    pub require_consent: bool,
    pub name: Option<&'a str>,
    pub grant_types: &'a [String],
    pub scopes: &'a [String],
    pub access_token_validity_period: Option<i64>,
    pub application_access_token_validity_period: Option<i64>,
    pub refresh_token_validity_period: Option<i64>,
    pub introspect: bool,
    pub token_format: Option<&'a str>,
    pub audience: Option<&'a str>,
    pub disabled: bool,
}

pub fn add_client(path: &Path, client: &NewClient<'_>) -> Result<(), AdminError> {
    locked(path, || add_client_unlocked(path, client))
}

/// What the command line can get wrong before any file or table is read.
fn check_new_client_fields(client: &NewClient<'_>) -> Result<(), AdminError> {
    check_client_id(client.id)?;
    for grant in client.grant_types {
        if GrantType::parse(grant).is_none() {
            return Err(AdminError::Invalid(format!(
                "unknown grant type `{grant}` (known: password refresh_token client_credentials \
                 authorization_code)"
            )));
        }
    }
    Ok(())
}

fn add_client_unlocked(path: &Path, client: &NewClient<'_>) -> Result<(), AdminError> {
    check_new_client_fields(client)?;
    let mut doc = read_document(path, CLIENTS_HEADER)?;
    if section(&mut doc, "clients")?.contains_key(client.id) {
        return Err(AdminError::Exists {
            place: path.display().to_string(),
            what: "client",
            name: client.id.to_owned(),
        });
    }
    let table = client_table(client);
    insert_entry(&mut doc, "clients", client.id, table)?;
    let text = doc.to_string();
    validate_with(path, &text, parse_clients)?;
    replace_file(path, &text)
}

/// The `[clients.ID]` table of a new client.
fn client_table(client: &NewClient<'_>) -> Table {
    let mut table = Table::new();
    if client.public {
        table.insert("public", value(true));
    } else {
        table.insert("secret_hash", value(client.secret_hash));
    }
    if !client.redirect_uris.is_empty() {
        table.insert(
            "redirect_uris",
            value(Array::from_iter(client.redirect_uris.iter())),
        );
    }
    if client.require_consent {
        table.insert("require_consent", value(true));
    }
    if let Some(name) = client.name {
        table.insert("name", value(name));
    }
    table.insert(
        "grant_types",
        value(Array::from_iter(client.grant_types.iter())),
    );
    table.insert("scopes", value(Array::from_iter(client.scopes.iter())));
    if let Some(secs) = client.access_token_validity_period {
        table.insert("access_token_validity_period", value(secs));
    }
    if let Some(secs) = client.application_access_token_validity_period {
        table.insert("application_access_token_validity_period", value(secs));
    }
    if let Some(secs) = client.refresh_token_validity_period {
        table.insert("refresh_token_validity_period", value(secs));
    }
    if client.introspect {
        table.insert("introspect", value(true));
    }
    if let Some(format) = client.token_format {
        table.insert("token_format", value(format));
    }
    if let Some(audience) = client.audience {
        table.insert("audience", value(audience));
    }
    if client.disabled {
        table.insert("disabled", value(true));
    }
    table
}

/// Checks a new client by the same rules as a clients file, for stores that are not files.
pub fn check_new_client(client: &NewClient<'_>, place: &str) -> Result<Client, AdminError> {
    check_new_client_fields(client)?;
    let mut doc = DocumentMut::new();
    section(&mut doc, "clients")?.insert(client.id, Item::Table(client_table(client)));
    let mut clients = validate_with(Path::new(place), &doc.to_string(), parse_clients)?;
    clients
        .remove(client.id)
        .map(|client| Client::clone(&client))
        .ok_or_else(|| AdminError::Invalid(format!("client `{}` did not parse", client.id)))
}

pub fn remove_client(path: &Path, id: &str) -> Result<(), AdminError> {
    remove_entry(path, &CLIENTS, id, parse_clients)
}

/// One line per client: id, grant types, scopes, overrides.
pub fn list_clients(path: &Path) -> Result<Vec<String>, AdminError> {
    let clients = load_clients(path).map_err(AdminError::Validation)?;
    let mut lines: Vec<String> = clients.values().map(|c| client_line(c)).collect();
    lines.sort();
    Ok(lines)
}

/// A client as `client list` prints it.
pub fn client_line(c: &Client) -> String {
    let grants: Vec<&str> = c.grant_types.iter().map(|g| g.as_str()).collect();
    let scopes: Vec<&str> = c.scopes.iter().map(String::as_str).collect();
    let mut line = format!(
        "{}\tgrant_types={}\tscopes={}",
        c.id,
        grants.join(","),
        scopes.join(",")
    );
    if let Some(secs) = c.access_token_validity_secs {
        line.push_str(&format!("\taccess_token_validity_period={secs}"));
    }
    if let Some(secs) = c.refresh_token_validity_secs {
        line.push_str(&format!("\trefresh_token_validity_period={secs}"));
    }
    if c.introspect {
        line.push_str("\tintrospect");
    }
    if c.public {
        line.push_str("\tpublic");
    }
    if !c.redirect_uris.is_empty() {
        let uris: Vec<&str> = c.redirect_uris.iter().map(|uri| uri.as_str()).collect();
        line.push_str(&format!("\tredirect_uris={}", uris.join(",")));
    }
    if c.require_consent {
        line.push_str("\trequire_consent");
    }
    if let Some(name) = &c.name {
        line.push_str(&format!("\tname={name:?}"));
    }
    if let Some(owner) = &c.owner {
        line.push_str(&format!("\towner={owner}"));
    }
    if let Some(format) = c.token_format {
        line.push_str(&format!("\ttoken_format={}", format.as_str()));
    }
    if c.disabled {
        line.push_str("\tdisabled");
    }
    line
}
