//! The developer portal (`/portal/`) behind the HTTP layer: who may use it, which applications
//! (clients) each user sees, and what they may do with them.
//!
//! A `developer` manages the applications they own; an `admin` every application, including
//! those the CLI made (no owner). Someone else's application is answered exactly as one that
//! does not exist ([`PortalError::NotFound`]), so ids cannot be probed. Applications are
//! clients in the clients table, made through the registration path
//! (`RegistrationService::register_owned`) with `[portal]`'s policy, and checked by the same
//! `Client::check` as every client. A secret is generated, shown once, and stored as a
//! SHA-256 digest; regenerating one can keep the old one working for `[portal]
//! secret_overlap` seconds.

use std::borrow::Cow;
use std::collections::BTreeSet;
use std::sync::Arc;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use secrecy::SecretString;

use super::error::{ErrorCode, OAuthError};
use super::issue::{self, Subject};
use super::registration::{checked, ClientPolicy, OwnedRegistration, RegistrationService};
use super::scope::Scope;
use super::token::TokenService;
use super::wire::ClientMetadataRequest;
use crate::audit::{rfc3339_secs, Event, Origin};
use crate::crypto::secret::{self, SecretHashKind};
use crate::metrics::{ClientChange, ClientChangeMetrics, ClientChangeVia};
use crate::store::model::{Client, ClientFields, GrantType, PreviousSecret, Role};
use crate::store::{Directory, RegistrationStore, StoreError};

/// The audit trail's `mode` of `client_registered` for applications made in the portal.
pub const AUDIT_MODE: &str = "portal";

/// How many applications a developer may own (admins: no limit). Every one is a row that
/// every node holds in memory; a developer who needs more asks an admin.
pub const MAX_APPLICATIONS_PER_DEVELOPER: usize = 50;

/// `[portal]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalSettings {
    /// Whether `/portal/` is served (else 404).
    pub enabled: bool,
    /// What a new application may have.
    pub allowed_grant_types: BTreeSet<GrantType>,
    /// Scopes an application may have besides `default`.
    pub allowed_scopes: BTreeSet<String>,
    /// Seconds a regenerated secret's predecessor still authenticates (0: it stops at once).
    pub secret_overlap_secs: u64,
}

impl Default for PortalSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            allowed_grant_types: [
                GrantType::AuthorizationCode,
                GrantType::RefreshToken,
                GrantType::ClientCredentials,
            ]
            .into(),
            allowed_scopes: BTreeSet::new(),
            secret_overlap_secs: 0,
        }
    }
}

/// Someone signed in to the portal with a portal role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortalUser {
    pub name: String,
    /// Sees and manages every application.
    pub admin: bool,
}

impl PortalUser {
    /// Whether this user may see and change `client`.
    pub fn manages(&self, client: &Client) -> bool {
        self.admin || client.owner.as_deref() == Some(self.name.as_str())
    }
}

/// Why a portal action was not done.
#[derive(Debug, thiserror::Error)]
pub enum PortalError {
    /// No such application, or not this user's: the same answer (404).
    #[error("no such application")]
    NotFound,
    /// What the user entered cannot be used; the text says why, for the form (400).
    #[error("{0}")]
    Refused(Cow<'static, str>),
    /// The store or another part failed (its cause is logged, not shown).
    #[error(transparent)]
    Failed(OAuthError),
}

impl From<OAuthError> for PortalError {
    /// A refusal of the client rules or the policy is the user's to fix; anything else failed.
    fn from(err: OAuthError) -> Self {
        match err.code {
            ErrorCode::InvalidClientMetadata | ErrorCode::InvalidRedirectUri => {
                Self::Refused(err.description)
            }
            _ => Self::Failed(err),
        }
    }
}

impl From<StoreError> for PortalError {
    fn from(err: StoreError) -> Self {
        Self::Failed(OAuthError::from(err))
    }
}

fn refused(text: impl Into<Cow<'static, str>>) -> PortalError {
    PortalError::Refused(text.into())
}

/// The row changed (or went) between the read and the write: nothing was written.
fn changed_meanwhile() -> PortalError {
    refused("The application was changed or deleted meanwhile. Reload the page and try again.")
}

/// A new application, as the create form gives it.
#[derive(Debug, Clone, Default)]
pub struct NewApplication {
    pub name: String,
    pub public: bool,
    pub grant_types: BTreeSet<GrantType>,
    pub scopes: BTreeSet<String>,
    pub redirect_uris: Vec<String>,
}

/// What the edit form may change.
#[derive(Debug, Clone, Default)]
pub struct ApplicationEdit {
    pub name: String,
    pub scopes: BTreeSet<String>,
    pub redirect_uris: Vec<String>,
}

/// A test token, shown once, and the command that gets another.
#[derive(Debug)]
pub struct TestToken {
    pub access_token: SecretString,
    pub expires_in: u64,
    pub scope: String,
    pub curl: SecretString,
}

/// What the portal needs; built once at startup.
pub struct PortalParts {
    pub settings: PortalSettings,
    pub service: Arc<TokenService>,
    pub registration: Arc<RegistrationService>,
    pub registrations: Arc<dyn RegistrationStore>,
    pub directory: Arc<dyn Directory>,
    pub changes: ClientChangeMetrics,
}

pub struct PortalService {
    parts: PortalParts,
}

impl PortalService {
    pub fn new(parts: PortalParts) -> Self {
        Self { parts }
    }

    pub fn settings(&self) -> &PortalSettings {
        &self.parts.settings
    }

    /// The user `name` as the portal knows them: `None` when unknown, disabled or without a
    /// portal role.
    pub async fn portal_user(&self, name: &str) -> Result<Option<PortalUser>, PortalError> {
        let user = match self.parts.service.users.find_user(name).await? {
            Some(user) if !user.disabled => user,
            _ => return Ok(None),
        };
        let admin = user.roles.contains(&Role::Admin);
        Ok(
            (admin || user.roles.contains(&Role::Developer)).then_some(PortalUser {
                name: user.name,
                admin,
            }),
        )
    }

    /// The applications `user` manages, by name.
    pub async fn applications(&self, user: &PortalUser) -> Result<Vec<Arc<Client>>, PortalError> {
        let mut clients: Vec<Arc<Client>> = self
            .parts
            .service
            .clients
            .list_clients()
            .await?
            .into_iter()
            .filter(|client| user.manages(client))
            .collect();
        clients.sort_by(|a, b| {
            a.display_name()
                .to_lowercase()
                .cmp(&b.display_name().to_lowercase())
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(clients)
    }

    /// The application `id`, if `user` manages it, from this node's copy of the clients
    /// table. An unknown id does not make the node re-read the table (anyone signed in could
    /// force full re-reads so): one made on another node shows within `reload_interval`.
    pub async fn application(
        &self,
        user: &PortalUser,
        id: &str,
    ) -> Result<Arc<Client>, PortalError> {
        self.parts
            .service
            .clients
            .find_client(id)
            .await?
            .filter(|client| user.manages(client))
            .ok_or(PortalError::NotFound)
    }

    /// The application `id`, if `user` manages it, as the clients table holds it now: for a
    /// change that writes back what it read (the whole row, or the secret as the previous
    /// one), so a change another node made since this one last read the table (say a new
    /// secret) is not undone.
    async fn current_application(
        &self,
        user: &PortalUser,
        id: &str,
    ) -> Result<Arc<Client>, PortalError> {
        // Checked on this node's copy first: only a user who manages the application makes
        // the node re-read the table.
        self.application(user, id).await?;
        self.parts.service.clients.refresh().await?;
        self.application(user, id).await
    }

    /// Creates an application owned by `user`; returns it and its secret (none for a public
    /// one), to be shown once.
    pub async fn create(
        &self,
        user: &PortalUser,
        new: NewApplication,
        origin: &Origin,
    ) -> Result<(Client, Option<String>), PortalError> {
        let settings = &self.parts.settings;
        if new.name.trim().is_empty() {
            return Err(refused("Give the application a name."));
        }
        if new.grant_types.is_empty() {
            return Err(refused("Choose at least one grant type."));
        }
        if !user.admin {
            let owned = self.applications(user).await?.len();
            if owned >= MAX_APPLICATIONS_PER_DEVELOPER {
                return Err(refused(format!(
                    "You have {owned} applications, the most a developer may have. Delete one, \
                     or ask an administrator."
                )));
            }
        }
        let code_flow = new.grant_types.contains(&GrantType::AuthorizationCode);
        let metadata = ClientMetadataRequest {
            redirect_uris: Some(if code_flow {
                new.redirect_uris
            } else {
                Vec::new()
            }),
            token_endpoint_auth_method: Some(
                if new.public {
                    "none"
                } else {
                    "client_secret_basic"
                }
                .to_owned(),
            ),
            grant_types: Some(
                new.grant_types
                    .iter()
                    .map(|grant| grant.as_str().to_owned())
                    .collect(),
            ),
            response_types: None,
            client_name: Some(new.name.trim().to_owned()),
            scope: Some(new.scopes.into_iter().collect::<Vec<_>>().join(" ")),
            client_id: None,
            client_secret: None,
        };
        let how = OwnedRegistration {
            policy: ClientPolicy {
                grant_types: &settings.allowed_grant_types,
                scopes: &settings.allowed_scopes,
            },
            audit_mode: AUDIT_MODE,
            via: ClientChangeVia::Portal,
            public_allowed: true,
        };
        Ok(self
            .parts
            .registration
            .register_owned(&metadata, &user.name, how, origin)
            .await?)
    }

    /// Changes the application's name, scopes and redirect URIs. A scope it has may stay even
    /// when `[portal]` no longer offers it; a new one must be offered.
    pub async fn update(
        &self,
        user: &PortalUser,
        id: &str,
        edit: ApplicationEdit,
        origin: &Origin,
    ) -> Result<Arc<Client>, PortalError> {
        let parts = &self.parts;
        let current = self.current_application(user, id).await?;
        if let Some(scope) = edit.scopes.iter().find(|scope| {
            !current.scopes.contains(*scope) && !parts.settings.allowed_scopes.contains(*scope)
        }) {
            return Err(refused(format!("The scope `{scope}` is not offered here.")));
        }
        if edit.name.trim().is_empty() {
            return Err(refused("Give the application a name."));
        }
        let mut fields = fields_of(&current);
        fields.name = Some(edit.name.trim().to_owned());
        fields.scopes = edit.scopes.into_iter().collect();
        if current.grant_types.contains(&GrantType::AuthorizationCode) {
            fields.redirect_uris = edit.redirect_uris;
        } else if !edit.redirect_uris.is_empty() {
            return Err(refused(
                "Redirect URIs are used only by the authorization code grant, which this \
                 application does not have.",
            ));
        }
        let client = checked(current.id.clone(), fields)?;
        let auth_method = match parts.registrations.find_registration(id).await? {
            Some(record) => record.token_endpoint_auth_method,
            None if client.public => "none".to_owned(),
            None => "client_secret_basic".to_owned(),
        };
        if !parts
            .registrations
            .update_registered_client(&client, &auth_method, &current.secret_hash)
            .await?
        {
            return Err(changed_meanwhile());
        }
        parts.registration.refresh_clients().await;
        parts.service.audit().record(
            origin,
            Some(id),
            Some(&user.name),
            Event::ClientRegistrationUpdated {
                grant_types: client
                    .grant_types
                    .iter()
                    .map(|g| g.as_str().to_owned())
                    .collect(),
                scopes: client.scopes.iter().cloned().collect(),
                token_endpoint_auth_method: auth_method,
            },
        );
        parts
            .changes
            .changed(ClientChange::Updated, ClientChangeVia::Portal);
        self.application(user, id).await
    }

    /// A new secret for the application, to be shown once, and for how many seconds the old
    /// one still works: `[portal] secret_overlap`, or 0 (it stops at once) when that is 0 or
    /// the old one is an operator-chosen argon2 secret (client authentication accepts only a
    /// generated previous secret).
    pub async fn regenerate_secret(
        &self,
        user: &PortalUser,
        id: &str,
        origin: &Origin,
    ) -> Result<(String, u64), PortalError> {
        let parts = &self.parts;
        let current = self.current_application(user, id).await?;
        if current.public {
            return Err(refused("A public application has no secret."));
        }
        let fresh = secret::generate_secret();
        let overlap = if secret::kind_of(&current.secret_hash) == Some(SecretHashKind::Sha256) {
            parts.settings.secret_overlap_secs
        } else {
            0
        };
        let previous = (overlap > 0).then(|| PreviousSecret {
            hash: current.secret_hash.clone(),
            until: parts
                .service
                .clock
                .now_secs()
                .saturating_add(i64::try_from(overlap).unwrap_or(i64::MAX)),
        });
        if !parts
            .registrations
            .replace_client_secret(
                id,
                &current.secret_hash,
                &secret::hash_sha256(&fresh),
                previous.as_ref(),
            )
            .await?
        {
            return Err(changed_meanwhile());
        }
        parts.registration.refresh_clients().await;
        parts.service.audit().record(
            origin,
            Some(id),
            Some(&user.name),
            Event::ClientSecretRegenerated {
                previous_valid_until: previous.map(|previous| rfc3339_secs(previous.until)),
            },
        );
        parts
            .changes
            .changed(ClientChange::SecretRegenerated, ClientChangeVia::Portal);
        Ok((fresh, overlap))
    }

    /// Disables the application (no tokens, and its tokens are no longer accepted) or enables
    /// it again. Enabling is an admin's: a developer could otherwise undo an operator's
    /// `client disable` (or an admin's) of their application, and who disabled it is not kept.
    pub async fn set_disabled(
        &self,
        user: &PortalUser,
        id: &str,
        disabled: bool,
        origin: &Origin,
    ) -> Result<(), PortalError> {
        let parts = &self.parts;
        let client = self.application(user, id).await?;
        if !disabled && client.disabled && !user.admin {
            return Err(refused(
                "Only an administrator can enable a disabled application again.",
            ));
        }
        if !parts.directory.set_client_disabled(id, disabled).await? {
            return Err(PortalError::NotFound);
        }
        parts.registration.refresh_clients().await;
        let (event, change) = if disabled {
            (Event::ClientDisabled {}, ClientChange::Disabled)
        } else {
            (Event::ClientEnabled {}, ClientChange::Enabled)
        };
        parts
            .service
            .audit()
            .record(origin, Some(id), Some(&user.name), event);
        parts.changes.changed(change, ClientChangeVia::Portal);
        Ok(())
    }

    /// Deletes the application and ends every token issued to it.
    pub async fn delete(
        &self,
        user: &PortalUser,
        id: &str,
        origin: &Origin,
    ) -> Result<(), PortalError> {
        self.application(user, id).await?;
        self.parts
            .registration
            .remove_client(id, Some(&user.name), ClientChangeVia::Portal, origin)
            .await?;
        Ok(())
    }

    /// The longest test token the application may have: its application-token validity.
    pub fn max_test_token_secs(&self, client: &Client) -> u64 {
        client.application_access_token_validity_secs.unwrap_or(
            self.parts
                .service
                .settings()
                .application_access_token_validity_secs,
        )
    }

    /// Whether the application can have a test token: a confidential one with the
    /// client_credentials grant (the token is that grant's).
    pub fn offers_test_token(client: &Client) -> bool {
        !client.public && client.grant_types.contains(&GrantType::ClientCredentials)
    }

    /// "Generate a token": a client_credentials access token for the application, valid for
    /// `validity_secs` (at most its maximum), given its secret — which also fills in the curl
    /// command shown beside it, as only the secret's digest is stored.
    pub async fn test_token(
        &self,
        user: &PortalUser,
        id: &str,
        client_secret: SecretString,
        validity_secs: u64,
        scope: Option<&str>,
        origin: &Origin,
    ) -> Result<TestToken, PortalError> {
        use secrecy::ExposeSecret as _;
        let service = &self.parts.service;
        let client = self.application(user, id).await?;
        if !Self::offers_test_token(&client) {
            return Err(refused(
                "Test tokens are client_credentials tokens: only a confidential application \
                 with that grant can have one.",
            ));
        }
        if client.disabled {
            return Err(refused("The application is disabled."));
        }
        let max = self.max_test_token_secs(&client);
        if validity_secs == 0 || validity_secs > max {
            return Err(refused(format!(
                "The validity must be between 1 and {max} seconds."
            )));
        }
        let scope = Scope::parse_requested(scope.filter(|scope| !scope.trim().is_empty()))
            .map_err(|err| refused(err.description))?;
        if !scope.allowed_for(&client.scopes) {
            return Err(refused("The application may not have that scope."));
        }
        if !service
            .client_secret_matches(&client, SecretString::from(client_secret.expose_secret()))
            .await?
        {
            return Err(refused("That is not the application's consumer secret."));
        }
        let mut for_test = Client::clone(&client);
        for_test.application_access_token_validity_secs = Some(validity_secs);
        let (tokens, response) = issue::mint(
            service,
            &for_test,
            Subject::Application,
            scope.as_string(),
            None,
        )?;
        let token_id = tokens.access.id.to_uuid_string();
        service.tokens.create_tokens(tokens).await?;
        service.audit().record(
            origin,
            Some(id),
            Some(&user.name),
            Event::PortalTokenIssued {
                token_id,
                scope: response.scope.clone(),
                expires_in: response.expires_in,
            },
        );
        Ok(TestToken {
            access_token: SecretString::from(response.access_token),
            expires_in: response.expires_in,
            curl: token_command(
                &service.issuer,
                &client.id,
                client_secret.expose_secret(),
                &response.scope,
            ),
            scope: response.scope,
        })
    }

    /// The Token API call that gets the application a token, ready to paste into a terminal.
    pub fn token_command(&self, client: &Client, client_secret: &str) -> SecretString {
        token_command(&self.parts.service.issuer, &client.id, client_secret, "")
    }
}

/// `curl` of the token endpoint with the client's `Authorization: Basic` value (RFC 6749
/// §2.3.1: id and secret form-encoded, then base64) and the client_credentials grant,
/// single-quoted for a POSIX shell.
fn token_command(issuer: &str, client_id: &str, client_secret: &str, scope: &str) -> SecretString {
    let encode =
        |value: &str| url::form_urlencoded::byte_serialize(value.as_bytes()).collect::<String>();
    let basic = STANDARD.encode(format!("{}:{}", encode(client_id), encode(client_secret)));
    let mut body = "grant_type=client_credentials".to_owned();
    if !scope.is_empty() && scope != super::scope::DEFAULT_SCOPE {
        body.push_str("&scope=");
        body.push_str(&encode(scope));
    }
    let quote = |text: &str| format!("'{}'", text.replace('\'', r"'\''"));
    SecretString::from(format!(
        "curl -X POST {} -H {} -d {}",
        quote(&format!("{}/token", issuer.trim_end_matches('/'))),
        quote(&format!("Authorization: Basic {basic}")),
        quote(&body),
    ))
}

/// The fields a client was made from, to be changed and checked again.
fn fields_of(client: &Client) -> ClientFields {
    let seconds = |value: Option<u64>| value.and_then(|secs| i64::try_from(secs).ok());
    ClientFields {
        secret_hash: client.secret_hash.clone(),
        public: client.public,
        redirect_uris: client
            .redirect_uris
            .iter()
            .map(|uri| uri.as_str().to_owned())
            .collect(),
        require_consent: client.require_consent,
        name: client.name.clone(),
        owner: client.owner.clone(),
        grant_types: client
            .grant_types
            .iter()
            .map(|grant| grant.as_str().to_owned())
            .collect(),
        scopes: client.scopes.iter().cloned().collect(),
        access_token_validity_period: seconds(client.access_token_validity_secs),
        application_access_token_validity_period: seconds(
            client.application_access_token_validity_secs,
        ),
        refresh_token_validity_period: seconds(client.refresh_token_validity_secs),
        introspect: client.introspect,
        token_format: client.token_format.map(|format| format.as_str().to_owned()),
        audience: client.audience.clone(),
        disabled: client.disabled,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret as _;

    #[test]
    fn the_token_command_carries_the_basic_value_and_quotes_for_the_shell() {
        let command = token_command("https://id.example:8243/", "app", "s3cr:t", "read write");
        let expected_basic = STANDARD.encode("app:s3cr%3At");
        assert_eq!(
            command.expose_secret(),
            &format!(
                "curl -X POST 'https://id.example:8243/token' -H 'Authorization: Basic \
                 {expected_basic}' -d 'grant_type=client_credentials&scope=read+write'"
            )
        );
        let quoted = token_command("https://it's.example", "a", "b", "default");
        assert!(quoted
            .expose_secret()
            .starts_with(r"curl -X POST 'https://it'\''s.example/token'"));
    }

    #[test]
    fn a_developer_manages_only_their_own_applications_and_an_admin_all() {
        let client = |owner: Option<&str>| {
            let mut fields = fields_of(
                &Client::check(
                    "c".into(),
                    ClientFields {
                        secret_hash: secret::hash_sha256("s"),
                        public: false,
                        redirect_uris: Vec::new(),
                        require_consent: false,
                        name: None,
                        owner: None,
                        grant_types: vec!["client_credentials".into()],
                        scopes: Vec::new(),
                        access_token_validity_period: None,
                        application_access_token_validity_period: None,
                        refresh_token_validity_period: None,
                        introspect: false,
                        token_format: None,
                        audience: None,
                        disabled: false,
                    },
                )
                .0,
            );
            fields.owner = owner.map(str::to_owned);
            Client::check("c".into(), fields).0
        };
        let dev = PortalUser {
            name: "dev".into(),
            admin: false,
        };
        let admin = PortalUser {
            name: "root".into(),
            admin: true,
        };
        assert!(dev.manages(&client(Some("dev"))));
        assert!(!dev.manages(&client(Some("other"))));
        assert!(!dev.manages(&client(None)));
        assert!(admin.manages(&client(None)));
        assert!(admin.manages(&client(Some("dev"))));
    }
}
