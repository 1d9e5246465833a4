//! Finding a presented token, opaque or JWT, for revocation and introspection.

use secrecy::SecretString;

use super::error::OAuthError;
use super::params::FormParams;
use super::token::TokenService;
use crate::crypto::jwk::{self, JwtAccessToken};
use crate::crypto::token::{PresentedToken, SecretDigest, TokenId};
use crate::store::model::{RefreshTokenRecord, TokenRecord};

/// What a presented token turned out to be.
pub enum FoundToken {
    Access(TokenRecord),
    /// A JWT access token we issued (its digest matched its record), and that record.
    JwtAccess(JwtAccessToken, TokenRecord),
    Refresh(RefreshTokenRecord),
    /// Not a token of ours (unknown, malformed, forged, or not the very token recorded).
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

/// The token a revocation or introspection request presents (`token`, `token_type_hint`),
/// looked up.
pub async fn find_presented_token(
    service: &TokenService,
    form: &FormParams,
) -> Result<FoundToken, OAuthError> {
    let token = form
        .get("token")
        .map(|t| SecretString::from(t.to_owned()))
        .ok_or_else(|| OAuthError::invalid_request("missing parameter: token"))?;
    find_token(service, &token, Hint::parse(form.get("token_type_hint"))).await
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
    // Bound the work an arbitrary string can cause.
    if value.len() > 8192 || value.matches('.').count() != 2 {
        return Ok(FoundToken::Unknown);
    }
    let Some(jwt) = jwk::read_access_token(value) else {
        return Ok(FoundToken::Unknown);
    };
    let Some(id) = uuid::Uuid::parse_str(&jwt.claims.jti)
        .ok()
        .map(|uuid| TokenId(uuid.into_bytes()))
    else {
        return Ok(FoundToken::Unknown);
    };
    // The digest of the whole token, recorded at issuance, is what makes the claims
    // trustworthy: no signature check is needed, so a token signed on another node (with a
    // key this node does not hold) is found as well.
    match service.tokens.find_access_token(&id).await? {
        Some(record)
            if record
                .secret_digest
                .matches(&SecretDigest::of(value.as_bytes())) =>
        {
            Ok(FoundToken::JwtAccess(jwt, record))
        }
        _ => Ok(FoundToken::Unknown),
    }
}
