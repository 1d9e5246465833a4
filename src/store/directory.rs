//! Users and clients kept in the token database (`stores.users = "sql"`,
//! `stores.clients = "sql"`), so that every node of a cluster reads the same ones.
//!
//! Users are looked up per request (a user table can be large). Clients are few and needed on
//! every request, so each node keeps them in memory and re-reads them when the table's
//! revision (moved by a trigger on every change) differs from the one it holds.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;

use super::model::{is_secret_hash, Client, ClientFields, PreviousSecret, User};
use super::{ClientStore, Directory, StoreError, UserStore};

/// A `clients` row as both backends store it; the one place rows become [`Client`]s.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ClientRow {
    pub id: String,
    pub secret_hash: String,
    /// Space-separated.
    pub grant_types: String,
    /// Space-separated.
    pub scopes: String,
    pub access_token_validity_period: Option<i64>,
    pub application_access_token_validity_period: Option<i64>,
    pub refresh_token_validity_period: Option<i64>,
    pub introspect: bool,
    pub token_format: Option<String>,
    pub audience: Option<String>,
    pub disabled: bool,
    pub public: bool,
    /// Space-separated (a redirect URI holds no spaces).
    pub redirect_uris: String,
    pub require_consent: bool,
    pub name: Option<String>,
    pub owner: Option<String>,
    /// With `previous_secret_until`: [`Client::previous_secret`]; both `NULL` when none.
    pub previous_secret_hash: Option<String>,
    /// Unix seconds.
    pub previous_secret_until: Option<i64>,
}

fn seconds(value: Option<u64>) -> Option<i64> {
    value.and_then(|secs| i64::try_from(secs).ok())
}

impl ClientRow {
    pub fn from_client(client: &Client) -> Self {
        let grant_types: Vec<&str> = client.grant_types.iter().map(|g| g.as_str()).collect();
        let scopes: Vec<&str> = client.scopes.iter().map(String::as_str).collect();
        Self {
            id: client.id.clone(),
            secret_hash: client.secret_hash.clone(),
            grant_types: grant_types.join(" "),
            scopes: scopes.join(" "),
            access_token_validity_period: seconds(client.access_token_validity_secs),
            application_access_token_validity_period: seconds(
                client.application_access_token_validity_secs,
            ),
            refresh_token_validity_period: seconds(client.refresh_token_validity_secs),
            introspect: client.introspect,
            token_format: client.token_format.map(|f| f.as_str().to_owned()),
            audience: client.audience.clone(),
            disabled: client.disabled,
            public: client.public,
            redirect_uris: client
                .redirect_uris
                .iter()
                .map(|uri| uri.as_str())
                .collect::<Vec<_>>()
                .join(" "),
            require_consent: client.require_consent,
            owner: client.owner.clone(),
            name: client.name.clone(),
            previous_secret_hash: client.previous_secret.as_ref().map(|p| p.hash.clone()),
            previous_secret_until: client.previous_secret.as_ref().map(|p| p.until),
        }
    }

    /// A row someone wrote by hand may hold anything: it is checked by the same rules as a
    /// clients file, and reported, never trusted.
    pub fn into_client(self) -> Result<Client, StoreError> {
        let words = |list: &str| list.split_whitespace().map(str::to_owned).collect();
        let fields = ClientFields {
            public: self.public,
            redirect_uris: words(&self.redirect_uris),
            require_consent: self.require_consent,
            name: self.name,
            owner: self.owner,
            grant_types: words(&self.grant_types),
            scopes: words(&self.scopes),
            secret_hash: self.secret_hash,
            access_token_validity_period: self.access_token_validity_period,
            application_access_token_validity_period: self.application_access_token_validity_period,
            refresh_token_validity_period: self.refresh_token_validity_period,
            introspect: self.introspect,
            token_format: self.token_format,
            audience: self.audience,
            disabled: self.disabled,
        };
        let (mut client, problems) = Client::check(self.id, fields);
        if problems.is_empty() {
            client.previous_secret = previous_secret(
                &client.id,
                self.previous_secret_hash,
                self.previous_secret_until,
            );
            return Ok(client);
        }
        let problems: Vec<String> = problems
            .into_iter()
            .map(|(field, message)| format!("{field} {message}"))
            .collect();
        Err(StoreError::Corrupt(format!(
            "clients row `{}`: {}",
            client.id,
            problems.join("; ")
        )))
    }
}

/// A row's previous secret. One that cannot be used (a hash that is no `$sha256$` or
/// `$argon2id$` PHC string, or half of the pair missing) is reported and ignored: the client
/// keeps working with its current secret, which is what matters.
fn previous_secret(id: &str, hash: Option<String>, until: Option<i64>) -> Option<PreviousSecret> {
    let ignored = |why: &str| {
        tracing::error!(client_id = %id, "ignoring the previous secret of a clients row: {why}");
        None
    };
    match (hash, until) {
        (None, None) => None,
        (Some(hash), Some(until)) if is_secret_hash(&hash) => Some(PreviousSecret { hash, until }),
        (Some(_), Some(_)) => {
            ignored("previous_secret_hash is not a $sha256$ or $argon2id$ PHC string")
        }
        (Some(_), None) => ignored("previous_secret_hash is set without previous_secret_until"),
        (None, Some(_)) => ignored("previous_secret_until is set without previous_secret_hash"),
    }
}

/// The usable clients of `rows`. An unusable row is logged; the client keeps the last good
/// copy in `previous` if there is one (as a clients file with a mistake keeps its last good
/// contents), else it is left out, so one bad row never takes every client down with it.
pub fn usable_clients(rows: Vec<ClientRow>, previous: &ClientMap) -> ClientMap {
    let mut clients = ClientMap::new();
    for row in rows {
        let id = row.id.clone();
        let disabled = row.disabled;
        match row.into_client() {
            Ok(client) => {
                clients.insert(id, Arc::new(client));
            }
            // A row that says it is disabled is taken at its word, however broken the rest.
            Err(err) => match previous.get(&id).filter(|_| !disabled) {
                Some(last_good) => {
                    tracing::error!(error = %err, "keeping the last good copy of a client whose row is unusable");
                    clients.insert(id, last_good.clone());
                }
                None => tracing::error!(error = %err, "ignoring a client the clients table holds"),
            },
        }
    }
    clients
}

/// Users from the database, one query per lookup.
pub struct SqlUserStore {
    directory: Arc<dyn Directory>,
}

impl SqlUserStore {
    pub fn new(directory: Arc<dyn Directory>) -> Self {
        Self { directory }
    }
}

#[async_trait]
impl UserStore for SqlUserStore {
    async fn find_user(&self, name: &str) -> Result<Option<User>, StoreError> {
        self.directory.find_user(name).await
    }
}

type ClientMap = HashMap<String, Arc<Client>>;

/// Clients from the database, held in memory and re-read when the table changed.
pub struct SqlClientStore {
    directory: Arc<dyn Directory>,
    current: RwLock<(i64, Arc<ClientMap>)>,
    /// One re-read at a time: a re-read that began before a change and ended after a later
    /// one's would otherwise put the older copy back.
    reloading: tokio::sync::Mutex<()>,
}

impl SqlClientStore {
    /// Reads every client, then checks for changes every `interval` while the store is alive.
    pub async fn open(
        directory: Arc<dyn Directory>,
        interval: Duration,
    ) -> Result<Arc<Self>, StoreError> {
        let (revision, clients) = read_clients(directory.as_ref(), &ClientMap::new()).await?;
        let store = Arc::new(Self {
            directory,
            current: RwLock::new((revision, Arc::new(clients))),
            reloading: tokio::sync::Mutex::new(()),
        });
        let weak = Arc::downgrade(&store);
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let Some(store) = weak.upgrade() else { break };
                store.reload_if_changed().await;
            }
        });
        Ok(store)
    }

    fn snapshot(&self) -> (i64, Arc<ClientMap>) {
        match self.current.read() {
            Ok(guard) => guard.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    async fn reload_if_changed(&self) {
        let _one_at_a_time = self.reloading.lock().await;
        let (held, previous) = self.snapshot();
        match self.directory.clients_revision().await {
            Ok(revision) if revision == held => {}
            Ok(_) => match read_clients(self.directory.as_ref(), &previous).await {
                Ok((revision, clients)) => {
                    if let Ok(mut guard) = self.current.write() {
                        *guard = (revision, Arc::new(clients));
                    }
                    tracing::info!(
                        clients = self.snapshot().1.len(),
                        "reloaded the clients table"
                    );
                }
                Err(err) => {
                    tracing::error!(error = %err, "cannot re-read the clients table; keeping the previous clients")
                }
            },
            // An outage shows in /health and on every token request; the clients held stay.
            Err(err) => tracing::debug!(error = %err, "cannot check the clients table for changes"),
        }
    }
}

/// The revision is read first: a change landing between the two reads moves it again, so it
/// is picked up at the next check instead of being missed.
async fn read_clients(
    directory: &dyn Directory,
    previous: &ClientMap,
) -> Result<(i64, ClientMap), StoreError> {
    let revision = directory.clients_revision().await?;
    let clients = usable_clients(directory.list_clients().await?, previous);
    Ok((revision, clients))
}

#[async_trait]
impl ClientStore for SqlClientStore {
    async fn find_client(&self, id: &str) -> Result<Option<Arc<Client>>, StoreError> {
        Ok(self.snapshot().1.get(id).cloned())
    }

    async fn list_clients(&self) -> Result<Vec<Arc<Client>>, StoreError> {
        Ok(self.snapshot().1.values().cloned().collect())
    }

    /// A re-read that starts after the caller's change committed, so its copy holds it.
    async fn refresh(&self) -> Result<(), StoreError> {
        let _one_at_a_time = self.reloading.lock().await;
        let (_, previous) = self.snapshot();
        let (revision, clients) = read_clients(self.directory.as_ref(), &previous).await?;
        if let Ok(mut guard) = self.current.write() {
            *guard = (revision, Arc::new(clients));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::model::GrantType;
    use crate::store::model::TokenFormat;
    use crate::store::redirect_uri::RedirectUri;

    #[test]
    fn a_client_survives_the_round_trip_through_its_row() {
        let client = Client {
            id: "app".into(),
            secret_hash: crate::crypto::secret::hash_sha256("s"),
            grant_types: [
                GrantType::Password,
                GrantType::RefreshToken,
                GrantType::AuthorizationCode,
            ]
            .into(),
            scopes: ["read".to_owned(), "write".to_owned()].into(),
            access_token_validity_secs: Some(600),
            application_access_token_validity_secs: None,
            refresh_token_validity_secs: Some(86_400),
            introspect: true,
            token_format: Some(TokenFormat::Jwt),
            audience: Some("https://api".into()),
            disabled: false,
            public: false,
            redirect_uris: vec![
                RedirectUri::parse("https://app.example/cb").unwrap(),
                RedirectUri::parse("http://127.0.0.1/cb").unwrap(),
            ],
            require_consent: false,
            name: Some("The App".into()),
            owner: Some("alice".into()),
            previous_secret: Some(PreviousSecret {
                hash: crate::crypto::secret::hash_sha256("old"),
                until: 1_700_000_000,
            }),
        };
        assert_eq!(
            ClientRow::from_client(&client).into_client().unwrap(),
            client
        );
    }

    #[test]
    fn a_hand_written_row_with_an_unknown_grant_is_reported_not_trusted() {
        let mut row = ClientRow::from_client(&Client {
            id: "app".into(),
            secret_hash: crate::crypto::secret::hash_sha256("s"),
            grant_types: Default::default(),
            scopes: Default::default(),
            access_token_validity_secs: None,
            application_access_token_validity_secs: None,
            refresh_token_validity_secs: None,
            introspect: false,
            token_format: None,
            audience: None,
            disabled: false,
            public: false,
            redirect_uris: Vec::new(),
            require_consent: false,
            name: None,
            owner: None,
            previous_secret: None,
        });
        row.grant_types = "password implicit".into();
        row.access_token_validity_period = Some(0);
        let Err(StoreError::Corrupt(why)) = row.into_client() else {
            panic!("a bad row was accepted")
        };
        assert!(why.contains("unknown grant type `implicit`"), "{why}");
        assert!(why.contains("access_token_validity_period"), "{why}");
    }

    #[test]
    fn a_row_whose_previous_secret_is_unusable_keeps_the_client_without_it() {
        let client = Client {
            id: "app".into(),
            secret_hash: crate::crypto::secret::hash_sha256("s"),
            grant_types: [GrantType::ClientCredentials].into(),
            scopes: Default::default(),
            access_token_validity_secs: None,
            application_access_token_validity_secs: None,
            refresh_token_validity_secs: None,
            introspect: false,
            token_format: None,
            audience: None,
            disabled: false,
            public: false,
            redirect_uris: Vec::new(),
            require_consent: false,
            name: None,
            owner: None,
            previous_secret: None,
        };
        let row = ClientRow::from_client(&client);
        let unusable = [
            (Some("plain text".to_owned()), Some(10)),
            (Some("$sha256$not-base64".to_owned()), Some(10)),
            (Some(crate::crypto::secret::hash_sha256("old")), None),
            (None, Some(10)),
        ];
        for (hash, until) in unusable {
            let row = ClientRow {
                previous_secret_hash: hash.clone(),
                previous_secret_until: until,
                ..row.clone()
            };
            assert_eq!(row.into_client().unwrap(), client, "{hash:?} {until:?}");
        }
    }
}
