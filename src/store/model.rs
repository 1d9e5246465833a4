//! What the stores hold: users, clients, and token records (digests only, never tokens).

use std::collections::BTreeSet;

use super::redirect_uri::RedirectUri;
use crate::crypto::token::{SecretDigest, TokenId};
use crate::crypto::{password, secret};

/// How access tokens are represented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenFormat {
    /// `<id>.<secret>`, checked against the store.
    Opaque,
    /// RFC 9068 JWT, verifiable by resource servers with the published keys.
    Jwt,
}

impl TokenFormat {
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "opaque" => Some(Self::Opaque),
            "jwt" => Some(Self::Jwt),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Opaque => "opaque",
            Self::Jwt => "jwt",
        }
    }
}

/// A resource owner from the user store (also a `users` row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    /// argon2 PHC string.
    pub password_hash: String,
    pub disabled: bool,
    /// What the user may do in the developer portal (nothing when empty).
    pub roles: BTreeSet<Role>,
}

/// A user's role in the developer portal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// May sign in to the portal and manage the applications they own.
    Developer,
    /// Sees and manages every application.
    Admin,
}

impl Role {
    pub const ALL: [Role; 2] = [Role::Developer, Role::Admin];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Developer => "developer",
            Self::Admin => "admin",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|role| role.as_str() == name)
    }

    /// The roles of a space-separated list, and the words that are no role.
    pub fn parse_list<'a>(
        words: impl IntoIterator<Item = &'a str>,
    ) -> (BTreeSet<Role>, Vec<String>) {
        let mut roles = BTreeSet::new();
        let mut unknown = Vec::new();
        for word in words {
            match Self::parse(word) {
                Some(role) => {
                    roles.insert(role);
                }
                None => unknown.push(word.to_owned()),
            }
        }
        (roles, unknown)
    }

    /// `roles` space-separated, as stored.
    pub fn join(roles: &BTreeSet<Role>) -> String {
        roles
            .iter()
            .map(|role| role.as_str())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Grant types a client may be allowed to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GrantType {
    Password,
    RefreshToken,
    ClientCredentials,
    AuthorizationCode,
}

impl GrantType {
    pub const ALL: [GrantType; 4] = [
        GrantType::Password,
        GrantType::RefreshToken,
        GrantType::ClientCredentials,
        GrantType::AuthorizationCode,
    ];

    /// The grants a public client (no secret) may use: those where the user takes part, so
    /// that a client that cannot keep a secret gets nothing without one (OAuth 2.1 §2.1).
    pub const FOR_PUBLIC_CLIENTS: [GrantType; 2] =
        [GrantType::AuthorizationCode, GrantType::RefreshToken];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::RefreshToken => "refresh_token",
            Self::ClientCredentials => "client_credentials",
            Self::AuthorizationCode => "authorization_code",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|grant| grant.as_str() == name)
    }
}

/// RFC 6749 §3.3: `scope-token = 1*( %x21 / %x23-5B / %x5D-7E )`. Here so that a client's
/// listed scopes are checked without the protocol layer; `oauth::scope` parses requests with it.
pub fn is_scope_token(token: &str) -> bool {
    !token.is_empty()
        && token
            .bytes()
            .all(|b| b == 0x21 || (0x23..=0x5B).contains(&b) || (0x5D..=0x7E).contains(&b))
}

/// A registered application (an OAuth client) from the client store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Client {
    pub id: String,
    /// `$sha256$…` for generated secrets, `$argon2id$…` for operator-chosen ones; empty for a
    /// public client.
    pub secret_hash: String,
    /// RFC 6749 §2.1: a public client (a native or browser app) has no secret and
    /// authenticates by `client_id` alone (token endpoint auth method `none`).
    pub public: bool,
    /// Where the authorization endpoint may send the user back (RFC 6749 §3.1.2).
    pub redirect_uris: Vec<RedirectUri>,
    /// A third-party app: the user is asked to consent to the scopes.
    pub require_consent: bool,
    /// What the login page calls the app; its id when `None`.
    pub name: Option<String>,
    /// The user who manages it in the developer portal; `None`: admins only (made by the CLI).
    pub owner: Option<String>,
    pub grant_types: BTreeSet<GrantType>,
    /// Scopes the client may request besides `default`.
    pub scopes: BTreeSet<String>,
    pub access_token_validity_secs: Option<u64>,
    /// For application tokens (client_credentials grant).
    pub application_access_token_validity_secs: Option<u64>,
    pub refresh_token_validity_secs: Option<u64>,
    /// May call the introspection endpoint (RFC 7662): a resource server.
    pub introspect: bool,
    /// Overrides `[oauth] token_format` for this client's access tokens.
    pub token_format: Option<TokenFormat>,
    /// `aud` of this client's JWT access tokens; else `[oauth] default_audience`.
    pub audience: Option<String>,
    pub disabled: bool,
    /// The secret the current one replaced, while it still authenticates (database clients
    /// only: a clients file never has one; [`Client::check`] gives `None`).
    pub previous_secret: Option<PreviousSecret>,
}

/// A secret replaced by a new one that still authenticates until `until` (Unix seconds):
/// `[portal] secret_overlap`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviousSecret {
    pub hash: String,
    pub until: i64,
}

/// Whether `phc` is a client secret hash tokengate can check: a well-formed `$sha256$` or
/// `$argon2id$` PHC string.
pub fn is_secret_hash(phc: &str) -> bool {
    match secret::kind_of(phc) {
        Some(secret::SecretHashKind::Sha256) => secret::parse_sha256(phc).is_some(),
        Some(secret::SecretHashKind::Argon2) => password::check_phc(phc).is_ok(),
        None => false,
    }
}

/// A client as an operator writes it (a clients file entry, a `clients` row), before it is
/// checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFields {
    /// Empty for a public client.
    pub secret_hash: String,
    pub public: bool,
    pub redirect_uris: Vec<String>,
    pub require_consent: bool,
    pub name: Option<String>,
    pub owner: Option<String>,
    pub grant_types: Vec<String>,
    pub scopes: Vec<String>,
    pub access_token_validity_period: Option<i64>,
    pub application_access_token_validity_period: Option<i64>,
    pub refresh_token_validity_period: Option<i64>,
    pub introspect: bool,
    pub token_format: Option<String>,
    pub audience: Option<String>,
    pub disabled: bool,
}

impl Client {
    /// What people are shown: the client's name, else its id.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.id)
    }

    /// The one set of rules for a client, whichever store holds it: the client, and every
    /// problem as (field, message). A field with a problem is left out (or empty).
    pub fn check(id: String, fields: ClientFields) -> (Client, Vec<(&'static str, String)>) {
        let mut problems: Vec<(&'static str, String)> = Vec::new();
        let hash_ok = if fields.public {
            fields.secret_hash.is_empty()
        } else {
            is_secret_hash(&fields.secret_hash)
        };
        if !hash_ok && fields.public {
            problems.push(("secret_hash", "a public client has no secret".into()));
        } else if !hash_ok && fields.secret_hash.is_empty() {
            problems.push((
                "secret_hash",
                "missing: a confidential client needs one (or set `public = true`)".into(),
            ));
        } else if !hash_ok {
            problems.push((
                "secret_hash",
                "must be a $sha256$ or $argon2id$ PHC string (see `tokengate client add`)".into(),
            ));
        }
        let mut grant_types = BTreeSet::new();
        for name in &fields.grant_types {
            match GrantType::parse(name) {
                Some(grant) => {
                    grant_types.insert(grant);
                }
                None => problems.push(("grant_types", format!("unknown grant type `{name}`"))),
            }
        }
        if fields.public {
            for grant in &grant_types {
                if !GrantType::FOR_PUBLIC_CLIENTS.contains(grant) {
                    problems.push((
                        "grant_types",
                        format!(
                            "a public client may use only authorization_code and refresh_token, \
                             not {}",
                            grant.as_str()
                        ),
                    ));
                }
            }
            if fields.introspect {
                problems.push(("introspect", "a public client cannot introspect".into()));
            }
        }
        if let Some(owner) = &fields.owner {
            if owner.is_empty() || owner.len() > 255 || owner.chars().any(char::is_control) {
                problems.push(("owner", "must be a user name (1 to 255 characters)".into()));
            }
        }
        if let Some(name) = &fields.name {
            if name.trim().is_empty()
                || name.chars().count() > 100
                || name.chars().any(char::is_control)
            {
                problems.push(("name", "must be 1 to 100 printable characters".into()));
            }
        }
        let mut redirect_uris = Vec::new();
        for uri in &fields.redirect_uris {
            match RedirectUri::parse(uri) {
                Ok(uri) => redirect_uris.push(uri),
                Err(why) => problems.push(("redirect_uris", format!("`{uri}` {why}"))),
            }
        }
        let has_code_grant = grant_types.contains(&GrantType::AuthorizationCode);
        if has_code_grant && fields.redirect_uris.is_empty() {
            problems.push((
                "redirect_uris",
                "a client with the authorization_code grant needs at least one".into(),
            ));
        }
        // Said rather than ignored: an operator who sets them expects the login page.
        if !has_code_grant && !fields.redirect_uris.is_empty() {
            problems.push((
                "redirect_uris",
                "are used only by the authorization_code grant: add it, or leave them out".into(),
            ));
        }
        if !has_code_grant && fields.require_consent {
            problems.push((
                "require_consent",
                "applies only to the authorization_code grant: add it, or leave it out".into(),
            ));
        }
        for scope in &fields.scopes {
            // An empty entry is let through, as ever: it names nothing a request could ask for.
            if !scope.is_empty() && !is_scope_token(scope) {
                problems.push(("scopes", format!("`{scope}` is not a scope token")));
            }
        }
        let mut validity = |field: &'static str, value: Option<i64>| match value {
            Some(secs) if secs < 1 || secs > i64::from(u32::MAX) => {
                problems.push((field, "must be between 1 and 4294967295 seconds".into()));
                None
            }
            other => other.and_then(|secs| u64::try_from(secs).ok()),
        };
        let access_token_validity_secs = validity(
            "access_token_validity_period",
            fields.access_token_validity_period,
        );
        let application_access_token_validity_secs = validity(
            "application_access_token_validity_period",
            fields.application_access_token_validity_period,
        );
        let refresh_token_validity_secs = validity(
            "refresh_token_validity_period",
            fields.refresh_token_validity_period,
        );
        let token_format = match fields.token_format.as_deref() {
            None => None,
            Some(name) => {
                let format = TokenFormat::parse(name);
                if format.is_none() {
                    problems.push(("token_format", "must be \"opaque\" or \"jwt\"".into()));
                }
                format
            }
        };
        if fields.audience.as_deref().is_some_and(str::is_empty) {
            problems.push(("audience", "must not be empty".into()));
        }
        let client = Client {
            id,
            secret_hash: fields.secret_hash,
            public: fields.public,
            redirect_uris,
            require_consent: fields.require_consent,
            name: fields.name,
            owner: fields.owner,
            grant_types,
            scopes: fields.scopes.into_iter().collect(),
            access_token_validity_secs,
            application_access_token_validity_secs,
            refresh_token_validity_secs,
            introspect: fields.introspect,
            token_format,
            audience: fields.audience,
            disabled: fields.disabled,
            previous_secret: None,
        };
        (client, problems)
    }
}

/// What is stored about every token, access or refresh.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRecord {
    pub id: TokenId,
    pub secret_digest: SecretDigest,
    pub client_id: String,
    pub username: Option<String>,
    pub scope: String,
    /// The id of the first refresh token of the grant this token descends from (or the access
    /// token's own id when the grant issued no refresh token).
    pub family_id: TokenId,
    pub issued_at: i64,
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

/// An access token is a plain [`TokenRecord`].
pub type AccessTokenRecord = TokenRecord;

/// A refresh token: a [`TokenRecord`] plus its rotation state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshTokenRecord {
    pub token: TokenRecord,
    /// Set when the token was redeemed under rotation; a spent token is never accepted again.
    pub spent_at: Option<i64>,
    /// The refresh token that replaced this one on rotation.
    pub replaced_by: Option<TokenId>,
}

/// An authorization code (RFC 6749 §4.1.2) as stored: only the SHA-256 of the code, and what it
/// is bound to (RFC 7636 §4.4: the PKCE challenge).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationCodeRecord {
    /// SHA-256 of the code; the row's key (the code is 256 random bits, so its digest reveals
    /// nothing and cannot be guessed).
    pub digest: SecretDigest,
    pub client_id: String,
    /// The `redirect_uri` of the authorization request, when it had one: the token request
    /// must repeat it (§4.1.3).
    pub redirect_uri: Option<String>,
    /// The S256 `code_challenge` (base64url of SHA-256 of the verifier).
    pub code_challenge: String,
    pub username: String,
    pub scope: String,
    pub issued_at: i64,
    pub expires_at: i64,
    /// When the code was redeemed; `None` while it is unused.
    pub redeemed_at: Option<i64>,
    /// The family of the tokens issued from the code, so that presenting it again revokes them.
    pub family_id: Option<TokenId>,
}

/// A login session of the hosted login page as stored: the SHA-256 of its id only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoginSessionRecord {
    pub digest: SecretDigest,
    pub username: String,
    /// A time-ordered id of the login's time: a user's not-before mark later than this ends
    /// the session, as it ends the user's tokens.
    pub started: TokenId,
    pub expires_at: i64,
}

/// A user's consent to a client (`require_consent = true` clients): the scopes they allowed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsentRecord {
    pub username: String,
    pub client_id: String,
    /// The scopes allowed, space-separated (RFC 6749 §3.3).
    pub scope: String,
    /// A time-ordered id of when it was given: a not-before mark of the user or the client
    /// later than this makes it forgotten (`user revoke-tokens`).
    pub granted: TokenId,
}

/// An initial access token of dynamic client registration (RFC 7591 §3), as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialAccessTokenRecord {
    /// SHA-256 of the token (256 random bits, so the digest reveals nothing).
    pub digest: SecretDigest,
    pub expires_at: i64,
    /// Registrations it may still authorise.
    pub uses: u32,
}

/// An initial access token as stored, for `registration token list`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitialTokenRow {
    pub digest: SecretDigest,
    pub expires_at: i64,
    pub uses_left: i64,
    pub created_at: i64,
}

/// A client registered through `POST /register`: the digest of its registration access token
/// (RFC 7592 §3), how it authenticates at the token endpoint as it registered it (`none`,
/// `client_secret_basic`, `client_secret_post`) and when it was registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistrationRecord {
    pub token: SecretDigest,
    pub token_endpoint_auth_method: String,
    pub registered_at: i64,
}

/// Tokens to record for one successful grant.
#[derive(Debug, Clone)]
pub struct NewTokens {
    pub access: AccessTokenRecord,
    pub refresh: Option<RefreshTokenRecord>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(scopes: &[&str]) -> ClientFields {
        ClientFields {
            secret_hash: String::new(),
            public: false,
            redirect_uris: Vec::new(),
            require_consent: false,
            name: None,
            owner: None,
            grant_types: vec!["client_credentials".into()],
            scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
            access_token_validity_period: None,
            application_access_token_validity_period: None,
            refresh_token_validity_period: None,
            introspect: false,
            token_format: None,
            audience: None,
            disabled: false,
        }
    }

    #[test]
    fn a_listed_scope_must_be_one_scope_token() {
        let (_, problems) = Client::check("c".into(), fields(&["PRODUCTION", "a b", "caf\u{e9}"]));
        let messages: Vec<&str> = problems
            .iter()
            .filter(|(field, _)| *field == "scopes")
            .map(|(_, message)| message.as_str())
            .collect();
        assert_eq!(
            messages,
            [
                "`a b` is not a scope token",
                "`caf\u{e9}` is not a scope token"
            ]
        );
    }

    fn public(grants: &[&str], redirect_uris: &[&str]) -> ClientFields {
        ClientFields {
            public: true,
            grant_types: grants.iter().map(|s| (*s).to_owned()).collect(),
            redirect_uris: redirect_uris.iter().map(|s| (*s).to_owned()).collect(),
            ..fields(&[])
        }
    }

    fn problems_of(fields: ClientFields) -> Vec<String> {
        let (_, problems) = Client::check("c".into(), fields);
        problems
            .into_iter()
            .map(|(field, message)| format!("{field}: {message}"))
            .collect()
    }

    #[test]
    fn a_public_client_has_no_secret_and_only_the_user_facing_grants() {
        assert_eq!(
            problems_of(public(
                &["authorization_code", "refresh_token"],
                &["com.example.app:/cb"]
            )),
            Vec::<String>::new()
        );
        let problems = problems_of(ClientFields {
            secret_hash: crate::crypto::secret::hash_sha256("s"),
            introspect: true,
            ..public(
                &["authorization_code", "password"],
                &["com.example.app:/cb"],
            )
        });
        assert_eq!(
            problems,
            [
                "secret_hash: a public client has no secret",
                "grant_types: a public client may use only authorization_code and refresh_token, not password",
                "introspect: a public client cannot introspect",
            ]
        );
    }

    #[test]
    fn the_authorization_code_grant_needs_valid_redirect_uris() {
        assert_eq!(
            problems_of(public(&["authorization_code"], &[])),
            ["redirect_uris: a client with the authorization_code grant needs at least one"]
        );
        let problems = problems_of(public(&["authorization_code"], &["http://app.example/cb"]));
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("redirect_uris: `http://app.example/cb` plain http"));
    }

    #[test]
    fn redirect_uris_and_consent_without_the_code_grant_are_reported_not_ignored() {
        let problems = problems_of(ClientFields {
            require_consent: true,
            ..public(&["refresh_token"], &["https://app.example/cb"])
        });
        assert_eq!(
            problems,
            [
                "redirect_uris: are used only by the authorization_code grant: add it, or leave them out",
                "require_consent: applies only to the authorization_code grant: add it, or leave it out",
            ]
        );
    }
}
