//! What the stores hold: users, clients, and token records (digests only, never tokens).

use std::collections::BTreeSet;

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
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct User {
    pub name: String,
    /// argon2 PHC string.
    pub password_hash: String,
    pub disabled: bool,
}

/// Grant types a client may be allowed to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum GrantType {
    Password,
    RefreshToken,
    ClientCredentials,
}

impl GrantType {
    pub const ALL: [GrantType; 3] = [
        GrantType::Password,
        GrantType::RefreshToken,
        GrantType::ClientCredentials,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Password => "password",
            Self::RefreshToken => "refresh_token",
            Self::ClientCredentials => "client_credentials",
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
    /// `$sha256$…` for generated secrets, `$argon2id$…` for operator-chosen ones.
    pub secret_hash: String,
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
}

/// A client as an operator writes it (a clients file entry, a `clients` row), before it is
/// checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientFields {
    pub secret_hash: String,
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
    /// The one set of rules for a client, whichever store holds it: the client, and every
    /// problem as (field, message). A field with a problem is left out (or empty).
    pub fn check(id: String, fields: ClientFields) -> (Client, Vec<(&'static str, String)>) {
        let mut problems: Vec<(&'static str, String)> = Vec::new();
        let hash_ok = match secret::kind_of(&fields.secret_hash) {
            Some(secret::SecretHashKind::Sha256) => {
                secret::parse_sha256(&fields.secret_hash).is_some()
            }
            Some(secret::SecretHashKind::Argon2) => {
                password::check_phc(&fields.secret_hash).is_ok()
            }
            None => false,
        };
        if !hash_ok {
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
            grant_types,
            scopes: fields.scopes.into_iter().collect(),
            access_token_validity_secs,
            application_access_token_validity_secs,
            refresh_token_validity_secs,
            introspect: fields.introspect,
            token_format,
            audience: fields.audience,
            disabled: fields.disabled,
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
}
