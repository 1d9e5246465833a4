//! Finding a presented token, opaque or JWT, for revocation and introspection.

use secrecy::SecretString;

use super::error::OAuthError;
use super::token::TokenService;
use crate::crypto::jwk::VerifiedAccessToken;
use crate::crypto::token::{PresentedToken, SecretDigest, TokenId};
use crate::store::model::{RefreshTokenRecord, TokenRecord};

/// What a presented token turned out to be.
pub enum FoundToken {
    Access(TokenRecord),
    /// A JWT access token with a valid signature, and its record (for revocation).
    JwtAccess(VerifiedAccessToken, TokenRecord),
    Refresh(RefreshTokenRecord),
    /// Not a token of ours (unknown, malformed, forged or signed by an unpublished key).
    Unknown,
}

/// RFC 7009 §2.1 / RFC 7662 §2.1 `token_type_hint`: where to look first. Any other value is
/// ignored (RFC 7009 §2.1: "An invalid token type hint value is ignored").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hint {
    AccessToken,
    RefreshToken,
    None,
}

impl Hint {
    pub fn parse(raw: Option<&str>) -> Self {
        match raw {
            Some("access_token") => Self::AccessToken,
            Some("refresh_token") => Self::RefreshToken,
            _ => Self::None,
        }
    }
}

/// Looks the token up in every table, the hinted one first. Digests are compared in constant
/// time; a token whose secret half does not match its id is `Unknown`.
pub async fn find_token(
    service: &TokenService,
    token: &SecretString,
    hint: Hint,
) -> Result<FoundToken, OAuthError> {
    let Some(presented) = PresentedToken::parse(token) else {
        return find_jwt(service, token).await;
    };
    let refresh_first = hint == Hint::RefreshToken;
    for look_in_refresh in [refresh_first, !refresh_first] {
        if look_in_refresh {
            if let Some(record) = service.tokens.find_refresh_token(&presented.id).await? {
                if record.token.secret_digest.matches(&presented.digest) {
                    return Ok(FoundToken::Refresh(record));
                }
            }
        } else if let Some(record) = service.tokens.find_access_token(&presented.id).await? {
            if record.secret_digest.matches(&presented.digest) {
                return Ok(FoundToken::Access(record));
            }
        }
    }
    Ok(FoundToken::Unknown)
}

async fn find_jwt(service: &TokenService, token: &SecretString) -> Result<FoundToken, OAuthError> {
    let value = secrecy::ExposeSecret::expose_secret(token);
    // Bound the work an arbitrary string can cause before any signature check.
    if value.len() > 8192 || value.matches('.').count() != 2 {
        return Ok(FoundToken::Unknown);
    }
    let now = service.clock.now_secs();
    let max_validity = service.max_access_token_validity_secs().await?;
    let Some(verified) = service.keys.keys().verify(value, now, max_validity) else {
        return Ok(FoundToken::Unknown);
    };
    let Some(id) = uuid::Uuid::parse_str(&verified.claims.jti)
        .ok()
        .map(|uuid| TokenId(uuid.into_bytes()))
    else {
        return Ok(FoundToken::Unknown);
    };
    match service.tokens.find_access_token(&id).await? {
        Some(record)
            if record
                .secret_digest
                .matches(&SecretDigest::of(value.as_bytes())) =>
        {
            Ok(FoundToken::JwtAccess(verified, record))
        }
        _ => Ok(FoundToken::Unknown),
    }
}
