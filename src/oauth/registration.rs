//! Dynamic client registration (RFC 7591) and its management protocol (RFC 7592): an app
//! registers itself at `POST /register` and reads, replaces or deletes its registration at
//! `/register/{client_id}` with the registration access token it was given, bound to it alone.
//!
//! Registered clients live in the clients table (`[stores] clients = "sql"`), checked by the
//! same `Client::check` as every other client, and get only what `[registration]` allows.
//! Secrets, initial access tokens and registration access tokens are stored as SHA-256 digests:
//! the client secret is shown once, in the answer that creates it, and never again (GET does
//! not return it; RFC 7592 §2.1 leaves that to the server). The registration access token
//! is answered back as presented, so GET and PUT can name it as RFC 7592 §3 asks.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret as _, SecretString};

use super::error::{ErrorCode, OAuthError};
use super::scope::DEFAULT_SCOPE;
use super::wire::{ClientInformationResponse, ClientMetadataRequest};
use crate::audit::{Audit, Event, Origin};
use crate::clock::Clock;
use crate::crypto::secret;
use crate::crypto::token::{SecretDigest, TokenId};
use crate::metrics::{ClientChange, ClientChangeMetrics, ClientChangeVia};
use crate::store::model::{Client, ClientFields, GrantType, RegistrationRecord};
use crate::store::{ClientStore, Registration, RegistrationStore, SubjectKind, TokenStore};

/// `[registration] mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationMode {
    /// No registration endpoint (404).
    Off,
    /// `POST /register` needs `Authorization: Bearer` with an initial access token from
    /// `tokengate registration token create` (RFC 7591 §3).
    InitialAccessToken,
    /// Anyone may register.
    Open,
}

impl RegistrationMode {
    pub const NAMES: [&'static str; 3] = ["off", "initial_access_token", "open"];

    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "off" => Some(Self::Off),
            "initial_access_token" => Some(Self::InitialAccessToken),
            "open" => Some(Self::Open),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Off => "off",
            Self::InitialAccessToken => "initial_access_token",
            Self::Open => "open",
        }
    }
}

/// `[registration]`: whether apps may register themselves, and what they may get.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationSettings {
    pub mode: RegistrationMode,
    pub allowed_grant_types: BTreeSet<GrantType>,
    /// Scopes a registered client may ask for besides `default`.
    pub allowed_scopes: BTreeSet<String>,
    /// `POST /client-registration/v0.17/register` (see `oauth::wso2_registration`), whatever
    /// `mode` is: it is authenticated by a developer's own credentials.
    pub wso2_compat: bool,
}

impl Default for RegistrationSettings {
    fn default() -> Self {
        Self {
            mode: RegistrationMode::Off,
            allowed_grant_types: [GrantType::AuthorizationCode, GrantType::RefreshToken].into(),
            allowed_scopes: BTreeSet::new(),
            wso2_compat: false,
        }
    }
}

/// RFC 7591 §2: the token endpoint authentication methods a client may register.
const NONE: &str = "none";
const BASIC: &str = "client_secret_basic";
const POST: &str = "client_secret_post";
/// RFC 7591 §2: `response_types`; OAuth 2.1 has the code flow only.
const CODE: &str = "code";

fn invalid_metadata(description: impl Into<std::borrow::Cow<'static, str>>) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidClientMetadata, description)
}

fn invalid_token(description: &'static str) -> OAuthError {
    OAuthError::new(ErrorCode::InvalidToken, description)
}

/// The bearer token of an `Authorization` header value (RFC 6750 §2.1); `Ok(None)` without
/// the header. Any other scheme, or no token after `Bearer`, is `invalid_token`.
pub fn bearer_token(header: Option<&[u8]>) -> Result<Option<SecretString>, OAuthError> {
    let Some(value) = header else {
        return Ok(None);
    };
    let value = std::str::from_utf8(value)
        .map_err(|_| invalid_token("the Authorization header is not UTF-8"))?
        .trim();
    let (scheme, token) = value.split_once(' ').unwrap_or((value, ""));
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(invalid_token("expected Authorization: Bearer <token>"));
    }
    Ok(Some(SecretString::from(token.to_owned())))
}

/// What a way of registering lets clients have: `[registration]`'s lists, or `[portal]`'s.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientPolicy<'a> {
    pub(crate) grant_types: &'a BTreeSet<GrantType>,
    /// Scopes besides `default`.
    pub(crate) scopes: &'a BTreeSet<String>,
}

impl RegistrationSettings {
    fn policy(&self) -> ClientPolicy<'_> {
        ClientPolicy {
            grant_types: &self.allowed_grant_types,
            scopes: &self.allowed_scopes,
        }
    }
}

/// How a client owned by a user came to be (see [`RegistrationService::register_owned`]).
#[derive(Debug, Clone, Copy)]
pub(crate) struct OwnedRegistration<'a> {
    pub(crate) policy: ClientPolicy<'a>,
    /// The audit trail's `mode` of `client_registered`.
    pub(crate) audit_mode: &'static str,
    pub(crate) via: ClientChangeVia,
    pub(crate) public_allowed: bool,
}

/// What the request asked for, checked against the policy (not yet against the client rules).
#[derive(Debug)]
struct Requested {
    fields: ClientFields,
    auth_method: &'static str,
}

/// RFC 7591 §2 metadata against `[registration]`: defaults filled in (`grant_types`
/// `authorization_code`, `response_types` `code`, `client_secret_basic`), anything the policy
/// does not allow refused with `invalid_client_metadata`.
fn requested(
    metadata: &ClientMetadataRequest,
    policy: ClientPolicy<'_>,
) -> Result<Requested, OAuthError> {
    let auth_method = match metadata.token_endpoint_auth_method.as_deref() {
        None | Some(BASIC) => BASIC,
        Some(POST) => POST,
        Some(NONE) => NONE,
        Some(_) => {
            return Err(invalid_metadata(
                "token_endpoint_auth_method must be none, client_secret_basic or \
                 client_secret_post",
            ))
        }
    };
    let names = metadata
        .grant_types
        .clone()
        .unwrap_or_else(|| vec![GrantType::AuthorizationCode.as_str().to_owned()]);
    let mut grants = BTreeSet::new();
    for name in &names {
        let grant = GrantType::parse(name)
            .ok_or_else(|| invalid_metadata(format!("unsupported grant type `{name}`")))?;
        if !policy.grant_types.contains(&grant) {
            return Err(invalid_metadata(format!(
                "grant type `{name}` is not allowed for registered clients"
            )));
        }
        grants.insert(grant);
    }
    if grants.is_empty() {
        return Err(invalid_metadata("grant_types must name at least one grant"));
    }
    let code_flow = grants.contains(&GrantType::AuthorizationCode);
    // RFC 7591 §2.1: response_types and grant_types must agree.
    if let Some(response_types) = &metadata.response_types {
        if let Some(other) = response_types.iter().find(|t| t.as_str() != CODE) {
            return Err(invalid_metadata(format!(
                "unsupported response type `{other}`: only `code`"
            )));
        }
        if code_flow != response_types.iter().any(|t| t == CODE) {
            return Err(invalid_metadata(
                "response_types `code` goes with grant_types `authorization_code`, and only with it",
            ));
        }
    }
    let mut scopes = Vec::new();
    for scope in metadata.scope.as_deref().unwrap_or("").split_whitespace() {
        if scope == DEFAULT_SCOPE {
            continue;
        }
        if !policy.scopes.contains(scope) {
            return Err(invalid_metadata(format!(
                "scope `{scope}` is not allowed for registered clients"
            )));
        }
        scopes.push(scope.to_owned());
    }
    Ok(Requested {
        fields: ClientFields {
            secret_hash: String::new(),
            public: auth_method == NONE,
            redirect_uris: metadata.redirect_uris.clone().unwrap_or_default(),
            // Anyone who may register could pose as any app: users see whom they authorise
            // (a client without the code grant has no users to ask).
            require_consent: grants.contains(&GrantType::AuthorizationCode),
            name: metadata.client_name.clone(),
            // Registered by a program, not by a person of the portal.
            owner: None,
            grant_types: grants.iter().map(|g| g.as_str().to_owned()).collect(),
            scopes,
            access_token_validity_period: None,
            application_access_token_validity_period: None,
            refresh_token_validity_period: None,
            introspect: false,
            token_format: None,
            audience: None,
            disabled: false,
        },
        auth_method,
    })
}

/// The client the fields describe, by the rules every client follows; a redirect URI problem
/// is `invalid_redirect_uri`, any other `invalid_client_metadata` (RFC 7591 §3.2.2).
pub(crate) fn checked(id: String, fields: ClientFields) -> Result<Client, OAuthError> {
    let (client, problems) = Client::check(id, fields);
    let field_name = |field: &str| {
        match field {
            "name" => "client_name",
            "scopes" => "scope",
            other => other,
        }
        .to_owned()
    };
    if let Some((_, message)) = problems.iter().find(|(field, _)| *field == "redirect_uris") {
        return Err(OAuthError::new(
            ErrorCode::InvalidRedirectUri,
            format!("redirect_uris: {message}"),
        ));
    }
    match problems.first() {
        Some((field, message)) => Err(invalid_metadata(format!(
            "{}: {message}",
            field_name(field)
        ))),
        None => Ok(client),
    }
}

/// Parses a JSON body as RFC 7591 §2 metadata (members the server does not know are ignored,
/// as §2 asks).
pub fn parse_metadata(body: &[u8]) -> Result<ClientMetadataRequest, OAuthError> {
    serde_json::from_slice(body)
        .map_err(|err| invalid_metadata(format!("the body is not client metadata: {err}")))
}

/// What the endpoints need; built once at startup.
pub struct RegistrationParts {
    pub settings: RegistrationSettings,
    pub issuer: String,
    pub store: Arc<dyn RegistrationStore>,
    pub clients: Arc<dyn ClientStore>,
    pub tokens: Arc<dyn TokenStore>,
    pub clock: Arc<dyn Clock>,
    pub audit: Audit,
    /// How long other nodes may go on using a client this node changed (`stores.reload_interval`).
    pub reload_interval: Duration,
    pub changes: ClientChangeMetrics,
}

/// RFC 7591 and RFC 7592, behind the HTTP layer.
pub struct RegistrationService {
    parts: RegistrationParts,
}

impl RegistrationService {
    pub fn new(parts: RegistrationParts) -> Self {
        Self { parts }
    }

    pub fn mode(&self) -> RegistrationMode {
        self.parts.settings.mode
    }

    /// `[registration] wso2_compat`.
    pub fn wso2_compat(&self) -> bool {
        self.parts.settings.wso2_compat
    }

    /// RFC 7591 §3: registers the client the metadata describes. `authorization` is the
    /// request's `Authorization` header value.
    pub async fn register(
        &self,
        authorization: Option<&[u8]>,
        body: &[u8],
        origin: &Origin,
    ) -> Result<ClientInformationResponse, OAuthError> {
        let parts = &self.parts;
        let now_ms = parts.clock.now_ms();
        let now = parts.clock.now_secs();
        let initial = match parts.settings.mode {
            RegistrationMode::Off => {
                return Err(OAuthError::new(
                    ErrorCode::AccessDenied,
                    "client registration is off",
                ))
            }
            RegistrationMode::Open => None,
            RegistrationMode::InitialAccessToken => {
                let token = bearer_token(authorization)?
                    .ok_or_else(|| invalid_token("an initial access token is required"))?;
                let digest = SecretDigest::of(token.expose_secret().as_bytes());
                if !parts.store.initial_token_usable(&digest, now).await? {
                    return Err(invalid_token(
                        "the initial access token is unknown, expired or used up",
                    ));
                }
                Some(digest)
            }
        };
        let metadata = parse_metadata(body)?;
        let requested = requested(&metadata, parts.settings.policy())?;
        let mut fields = requested.fields;
        let client_secret = (!fields.public).then(secret::generate_secret);
        fields.secret_hash = client_secret
            .as_deref()
            .map(secret::hash_sha256)
            .unwrap_or_default();
        let client = checked(TokenId::new(now_ms).to_uuid_string(), fields)?;
        let registration_token = self
            .store_new_client(&client, requested.auth_method, initial.as_ref(), now)
            .await?;
        parts.audit.record(
            origin,
            Some(&client.id),
            None,
            Event::ClientRegistered {
                grant_types: grant_names(&client),
                scopes: client.scopes.iter().cloned().collect(),
                token_endpoint_auth_method: requested.auth_method.to_owned(),
                mode: parts.settings.mode.as_str(),
            },
        );
        parts
            .changes
            .changed(ClientChange::Registered, ClientChangeVia::Register);
        Ok(self.information(
            &client,
            requested.auth_method,
            now,
            client_secret,
            registration_token,
        ))
    }

    /// Adds `client` with a new registration access token (returned) in one transaction,
    /// spending one use of `initial` when given, and makes it usable on this node at once.
    async fn store_new_client(
        &self,
        client: &Client,
        auth_method: &str,
        initial: Option<&SecretDigest>,
        now: i64,
    ) -> Result<String, OAuthError> {
        let registration_token = secret::generate_secret();
        let registration = RegistrationRecord {
            token: SecretDigest::of(registration_token.as_bytes()),
            token_endpoint_auth_method: auth_method.to_owned(),
            registered_at: now,
        };
        match self
            .parts
            .store
            .register_client(client, &registration, initial, now)
            .await?
        {
            Registration::Registered => {}
            Registration::InitialTokenRefused => {
                return Err(invalid_token(
                    "the initial access token is unknown, expired or used up",
                ))
            }
            Registration::IdTaken => {
                return Err(OAuthError::server_error(RegistrationFailed(
                    "a new client id was taken",
                )))
            }
        }
        self.refresh_clients().await;
        Ok(registration_token)
    }

    /// Registers a client that `owner` asked for through another way than RFC 7591 (WSO2's
    /// registration API, the developer portal): `metadata` is checked by `how`'s policy and
    /// the client rules, and the client stored as RFC 7591's are (with a registration access
    /// token nobody is given, so RFC 7592 cannot manage it). Returns the client and its
    /// secret (none for a public client), to be shown once; audited as `client_registered`.
    pub(crate) async fn register_owned(
        &self,
        metadata: &ClientMetadataRequest,
        owner: &str,
        how: OwnedRegistration<'_>,
        origin: &Origin,
    ) -> Result<(Client, Option<String>), OAuthError> {
        let parts = &self.parts;
        let now_ms = parts.clock.now_ms();
        let now = parts.clock.now_secs();
        let requested = requested(metadata, how.policy)?;
        if requested.fields.public && !how.public_allowed {
            return Err(invalid_metadata(
                "only confidential clients are registered here",
            ));
        }
        let mut fields = requested.fields;
        fields.owner = Some(owner.to_owned());
        let client_secret = (!fields.public).then(secret::generate_secret);
        fields.secret_hash = client_secret
            .as_deref()
            .map(secret::hash_sha256)
            .unwrap_or_default();
        let client = checked(TokenId::new(now_ms).to_uuid_string(), fields)?;
        self.store_new_client(&client, requested.auth_method, None, now)
            .await?;
        parts.audit.record(
            origin,
            Some(&client.id),
            Some(owner),
            Event::ClientRegistered {
                grant_types: grant_names(&client),
                scopes: client.scopes.iter().cloned().collect(),
                token_endpoint_auth_method: requested.auth_method.to_owned(),
                mode: how.audit_mode,
            },
        );
        parts.changes.changed(ClientChange::Registered, how.via);
        Ok((client, client_secret))
    }

    /// `[registration]`'s lists, for another way of registering that follows them.
    pub(crate) fn registration_policy(&self) -> ClientPolicy<'_> {
        self.parts.settings.policy()
    }

    /// RFC 7592 §2.1: the client's registration as it stands (without its secret).
    pub async fn read(
        &self,
        client_id: &str,
        authorization: Option<&[u8]>,
    ) -> Result<ClientInformationResponse, OAuthError> {
        let (client, record, token) = self.authorized(client_id, authorization).await?;
        Ok(self.information(
            &client,
            &record.token_endpoint_auth_method,
            record.registered_at,
            None,
            token.expose_secret().to_owned(),
        ))
    }

    /// RFC 7592 §2.2: replaces the client's metadata, by the same rules as a registration. A
    /// confidential client keeps its secret; one that becomes confidential gets a new secret,
    /// shown in this answer only.
    pub async fn update(
        &self,
        client_id: &str,
        authorization: Option<&[u8]>,
        body: &[u8],
        origin: &Origin,
    ) -> Result<ClientInformationResponse, OAuthError> {
        let parts = &self.parts;
        let (current, record, token) = self.authorized(client_id, authorization).await?;
        let metadata = parse_metadata(body)?;
        if metadata
            .client_id
            .as_deref()
            .is_some_and(|id| id != client_id)
        {
            return Err(invalid_metadata("client_id is not the client's"));
        }
        if let Some(presented) = &metadata.client_secret {
            // The secret it had until a regeneration is still its own during the overlap.
            let now = parts.clock.now_secs();
            let previous_matches = current.previous_secret.as_ref().is_some_and(|previous| {
                now < previous.until && secret::verify_sha256(&previous.hash, presented)
            });
            if current.public
                || !(secret::verify_sha256(&current.secret_hash, presented) || previous_matches)
            {
                return Err(invalid_metadata("client_secret is not the client's"));
            }
        }
        let requested = requested(&metadata, parts.settings.policy())?;
        let mut fields = requested.fields;
        fields.disabled = current.disabled;
        let mut client_secret = None;
        if !fields.public {
            if current.public {
                let fresh = secret::generate_secret();
                fields.secret_hash = secret::hash_sha256(&fresh);
                client_secret = Some(fresh);
            } else {
                fields.secret_hash = current.secret_hash.clone();
            }
        }
        let client = checked(client_id.to_owned(), fields)?;
        if !parts
            .store
            .update_registered_client(&client, requested.auth_method, &current.secret_hash)
            .await?
        {
            // Gone, or its secret changed since this node read it (say in the portal).
            return Err(invalid_token(
                "the client no longer exists, or changed meanwhile: read it again",
            ));
        }
        self.refresh_clients().await;
        parts.audit.record(
            origin,
            Some(client_id),
            None,
            Event::ClientRegistrationUpdated {
                grant_types: grant_names(&client),
                scopes: client.scopes.iter().cloned().collect(),
                token_endpoint_auth_method: requested.auth_method.to_owned(),
            },
        );
        parts
            .changes
            .changed(ClientChange::Updated, ClientChangeVia::Register);
        Ok(self.information(
            &client,
            requested.auth_method,
            record.registered_at,
            client_secret,
            token.expose_secret().to_owned(),
        ))
    }

    /// RFC 7592 §2.3: deletes the client and ends every token issued to it.
    pub async fn delete(
        &self,
        client_id: &str,
        authorization: Option<&[u8]>,
        origin: &Origin,
    ) -> Result<(), OAuthError> {
        self.authorized(client_id, authorization).await?;
        self.remove_client(client_id, None, ClientChangeVia::Register, origin)
            .await
    }

    /// Deletes the client and ends every token issued to it; `by` is the user who asked (the
    /// portal), for the audit trail. The not-before mark lies one reload interval ahead (as
    /// `client remove` sets it): other nodes hold the client until they re-read the table,
    /// and tokens they issue meanwhile are ended too.
    pub(crate) async fn remove_client(
        &self,
        client_id: &str,
        by: Option<&str>,
        via: ClientChangeVia,
        origin: &Origin,
    ) -> Result<(), OAuthError> {
        let parts = &self.parts;
        let now_ms = parts.clock.now_ms();
        let ahead_ms = i64::try_from(parts.reload_interval.as_millis())
            .unwrap_or(i64::MAX)
            .saturating_add(1000);
        // The client first: if the caller goes away before the mark is written, its tokens
        // already stop working (a token of a client that does not exist is not accepted).
        parts.store.delete_registered_client(client_id).await?;
        parts
            .tokens
            .revoke_subject(
                SubjectKind::Client,
                client_id,
                now_ms.saturating_add(ahead_ms),
                parts.clock.now_secs(),
            )
            .await?;
        self.refresh_clients().await;
        parts.audit.record(
            origin,
            Some(client_id),
            by,
            Event::ClientRegistrationDeleted {},
        );
        parts.changes.changed(ClientChange::Deleted, via);
        Ok(())
    }

    /// The client whose registration access token `authorization` carries: any other token,
    /// or none, is `invalid_token` (RFC 7592 §2: a token is bound to its client alone).
    async fn authorized(
        &self,
        client_id: &str,
        authorization: Option<&[u8]>,
    ) -> Result<(Arc<Client>, RegistrationRecord, SecretString), OAuthError> {
        let parts = &self.parts;
        let refused =
            || invalid_token("the registration access token is not valid for this client");
        let token = bearer_token(authorization)?.ok_or_else(refused)?;
        let record = parts
            .store
            .find_registration(client_id)
            .await?
            .ok_or_else(refused)?;
        if !record
            .token
            .matches(&SecretDigest::of(token.expose_secret().as_bytes()))
        {
            return Err(refused());
        }
        let client = match parts.clients.find_client(client_id).await? {
            Some(client) => client,
            // Registered on another node since this one last read the table.
            None => {
                parts.clients.refresh().await?;
                parts
                    .clients
                    .find_client(client_id)
                    .await?
                    .ok_or_else(refused)?
            }
        };
        Ok((client, record, token))
    }

    /// Makes this node's change visible to its own next request at once (others re-read the
    /// table within `reload_interval`). The change is committed: a failed re-read is logged,
    /// not reported to the client, which would retry a change that was made.
    pub(crate) async fn refresh_clients(&self) {
        if let Err(err) = self.parts.clients.refresh().await {
            tracing::warn!(error = %err, "cannot re-read the clients after a registration change; they show within the reload interval");
        }
    }

    /// RFC 7591 §3.2.1 with RFC 7592 §3's registration access token and URI.
    fn information(
        &self,
        client: &Client,
        auth_method: &str,
        issued_at: i64,
        client_secret: Option<String>,
        registration_access_token: String,
    ) -> ClientInformationResponse {
        let issuer = self.parts.issuer.trim_end_matches('/');
        let scope = (!client.scopes.is_empty())
            .then(|| client.scopes.iter().cloned().collect::<Vec<_>>().join(" "));
        ClientInformationResponse {
            registration_client_uri: format!("{issuer}/register/{}", client.id),
            client_id: client.id.clone(),
            // RFC 7591 §3.2.1: 0, the secret does not expire.
            client_secret_expires_at: client_secret.as_ref().map(|_| 0),
            client_secret,
            client_id_issued_at: issued_at,
            registration_access_token,
            redirect_uris: client
                .redirect_uris
                .iter()
                .map(|uri| uri.as_str().to_owned())
                .collect(),
            token_endpoint_auth_method: auth_method.to_owned(),
            grant_types: client.grant_types.iter().map(|g| g.as_str()).collect(),
            response_types: if client.grant_types.contains(&GrantType::AuthorizationCode) {
                vec![CODE]
            } else {
                Vec::new()
            },
            client_name: client.name.clone(),
            scope,
        }
    }
}

fn grant_names(client: &Client) -> Vec<String> {
    client
        .grant_types
        .iter()
        .map(|g| g.as_str().to_owned())
        .collect()
}

/// A registration that cannot be completed for a reason of the server's.
#[derive(Debug, thiserror::Error)]
#[error("registration failed: {0}")]
struct RegistrationFailed(&'static str);

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> RegistrationSettings {
        RegistrationSettings {
            mode: RegistrationMode::Open,
            allowed_grant_types: [
                GrantType::AuthorizationCode,
                GrantType::RefreshToken,
                GrantType::ClientCredentials,
            ]
            .into(),
            allowed_scopes: ["read".to_owned()].into(),
            wso2_compat: false,
        }
    }

    /// The metadata through the policy and the client rules, with a secret hash when
    /// confidential (as `register` adds it).
    fn check(metadata: &ClientMetadataRequest) -> Result<Client, OAuthError> {
        let mut fields = requested(metadata, settings().policy())?.fields;
        if !fields.public {
            fields.secret_hash = secret::hash_sha256("s");
        }
        checked("c".into(), fields)
    }

    fn refused(json: &str) -> (ErrorCode, String) {
        let err = check(&parse_metadata(json.as_bytes()).unwrap()).unwrap_err();
        (err.code, err.description.into_owned())
    }

    #[test]
    fn the_defaults_are_a_confidential_code_flow_client_asking_for_consent() {
        let metadata = parse_metadata(br#"{"redirect_uris":["https://app.example/cb"]}"#).unwrap();
        let requested = requested(&metadata, settings().policy()).unwrap();
        assert_eq!(requested.auth_method, BASIC);
        assert!(!requested.fields.public);
        assert!(requested.fields.require_consent);
        assert_eq!(requested.fields.grant_types, ["authorization_code"]);
    }

    #[test]
    fn what_the_policy_or_the_client_rules_forbid_is_refused_with_the_rfc_code() {
        let cases = [
            (
                r#"{"grant_types":["password"]}"#,
                ErrorCode::InvalidClientMetadata,
            ),
            (
                r#"{"grant_types":["implicit"]}"#,
                ErrorCode::InvalidClientMetadata,
            ),
            (r#"{"grant_types":[]}"#, ErrorCode::InvalidClientMetadata),
            (
                r#"{"grant_types":["client_credentials"],"scope":"admin"}"#,
                ErrorCode::InvalidClientMetadata,
            ),
            (
                r#"{"redirect_uris":["https://a.example/cb"],"response_types":["token"]}"#,
                ErrorCode::InvalidClientMetadata,
            ),
            (
                r#"{"grant_types":["client_credentials"],"response_types":["code"]}"#,
                ErrorCode::InvalidClientMetadata,
            ),
            (
                r#"{"token_endpoint_auth_method":"private_key_jwt"}"#,
                ErrorCode::InvalidClientMetadata,
            ),
            (
                r#"{"token_endpoint_auth_method":"none","grant_types":["client_credentials"]}"#,
                ErrorCode::InvalidClientMetadata,
            ),
            (
                r#"{"redirect_uris":"https://a.example/cb"}"#,
                ErrorCode::InvalidClientMetadata,
            ),
            (
                r#"{"redirect_uris":["http://a.example/cb"]}"#,
                ErrorCode::InvalidRedirectUri,
            ),
            (
                r#"{"redirect_uris":["https://a.example/cb#x"]}"#,
                ErrorCode::InvalidRedirectUri,
            ),
            (r#"{}"#, ErrorCode::InvalidRedirectUri),
        ];
        for (json, code) in cases {
            let metadata = match parse_metadata(json.as_bytes()) {
                Ok(metadata) => metadata,
                Err(err) => {
                    assert_eq!(err.code, code, "{json}");
                    continue;
                }
            };
            let err = check(&metadata).unwrap_err();
            assert_eq!(err.code, code, "{json}: {}", err.description);
        }
        assert_eq!(
            refused(r#"{"grant_types":["client_credentials"],"client_name":""}"#),
            (
                ErrorCode::InvalidClientMetadata,
                "client_name: must be 1 to 100 printable characters".to_owned()
            )
        );
    }

    #[test]
    fn only_a_bearer_token_is_taken() {
        assert!(bearer_token(None).unwrap().is_none());
        let token = bearer_token(Some(b"Bearer abc")).unwrap().unwrap();
        assert_eq!(token.expose_secret(), "abc");
        for value in [&b"Basic abc"[..], b"Bearer", b"Bearer  ", b"abc"] {
            assert_eq!(
                bearer_token(Some(value)).unwrap_err().code,
                ErrorCode::InvalidToken
            );
        }
    }
}
