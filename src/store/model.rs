//! What the stores hold: users, clients, and token records (digests only, never tokens).

use std::collections::BTreeSet;

use crate::config::TokenFormat;
use crate::crypto::token::{SecretDigest, TokenId};

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
