//! RFC 7662: token introspection, for resource servers (clients marked `introspect = true`).
//!
//! Anything expired, revoked, spent or unknown is `{"active": false}` and nothing more (§2.2).

use super::error::{ErrorCode, OAuthError};
use super::issue::audience_of;
use super::lookup::{find_presented_token, FoundToken};
use super::token::{ExchangeSummary, TokenRequest, TokenService};
use super::wire::IntrospectionResponse;
use crate::store::model::TokenRecord;

pub async fn introspect(
    service: &TokenService,
    request: TokenRequest,
    summary: &mut ExchangeSummary,
) -> Result<IntrospectionResponse, OAuthError> {
    let caller = service.authenticate_client(&request, summary).await?;
    if !caller.introspect {
        return Err(OAuthError::new(
            ErrorCode::AccessDenied,
            "this client may not introspect tokens",
        ));
    }
    let now = service.clock.now_secs();
    let inactive = IntrospectionResponse::default();
    let found = find_presented_token(service, &request.form).await?;
    let owner_ok = match &found {
        FoundToken::Access(record) | FoundToken::JwtAccess(_, record) => {
            owners_enabled(service, record).await?
        }
        FoundToken::Refresh(record) => owners_enabled(service, &record.token).await?,
        FoundToken::Unknown => false,
    };
    if !owner_ok {
        return Ok(inactive);
    }
    Ok(match found {
        FoundToken::Access(record) if is_live(&record, now) => {
            describe(service, &record, "Bearer").await?
        }
        FoundToken::JwtAccess(verified, record) if is_live(&record, now) => {
            let claims = verified.claims;
            IntrospectionResponse {
                active: true,
                scope: Some(claims.scope),
                client_id: Some(claims.client_id),
                username: record.username,
                token_type: Some("Bearer"),
                exp: Some(verified.expires_at),
                iat: Some(verified.issued_at),
                nbf: Some(verified.issued_at),
                sub: Some(claims.sub),
                aud: Some(claims.aud),
                iss: Some(claims.iss),
                jti: Some(claims.jti),
            }
        }
        FoundToken::Refresh(record) if record.spent_at.is_none() && is_live(&record.token, now) => {
            describe(service, &record.token, "refresh_token").await?
        }
        _ => inactive,
    })
}

/// A token stops being active when its client or user is removed or disabled, as the refresh
/// grant already refuses to renew it.
async fn owners_enabled(service: &TokenService, record: &TokenRecord) -> Result<bool, OAuthError> {
    let client_ok = service
        .clients
        .find_client(&record.client_id)
        .await?
        .is_some_and(|client| !client.disabled);
    let user_ok = match &record.username {
        None => true,
        Some(name) => service
            .users
            .find_user(name)
            .await?
            .is_some_and(|user| !user.disabled),
    };
    Ok(client_ok && user_ok)
}

fn is_live(record: &TokenRecord, now: i64) -> bool {
    record.revoked_at.is_none() && record.expires_at > now
}

async fn describe(
    service: &TokenService,
    record: &TokenRecord,
    token_type: &'static str,
) -> Result<IntrospectionResponse, OAuthError> {
    let client = service.clients.find_client(&record.client_id).await?;
    Ok(IntrospectionResponse {
        active: true,
        scope: Some(record.scope.clone()),
        client_id: Some(record.client_id.clone()),
        username: record.username.clone(),
        token_type: Some(token_type),
        exp: Some(record.expires_at),
        iat: Some(record.issued_at),
        nbf: Some(record.issued_at),
        sub: Some(
            record
                .username
                .clone()
                .unwrap_or_else(|| record.client_id.clone()),
        ),
        aud: Some(audience_of(service, &service.settings(), client.as_deref())),
        iss: Some(service.issuer.clone()),
        jti: Some(record.id.to_uuid_string()),
    })
}
