//! RFC 7009: token revocation.
//!
//! §2.2: the answer is 200 whether or not the token was known, valid, already revoked or
//! another client's — a client learns nothing about tokens it does not hold, and a client can
//! only revoke its own tokens. Revoking a refresh token revokes its whole grant (§2.1: "all
//! access tokens based on the same authorization grant").

use super::error::OAuthError;
use super::lookup::{find_presented_token, FoundToken};
use super::token::{ExchangeSummary, TokenRequest, TokenService};
use crate::audit::{Event, RevokedBy};

pub async fn revoke(
    service: &TokenService,
    request: TokenRequest,
    summary: &mut ExchangeSummary,
) -> Result<(), OAuthError> {
    let client = service.authenticate_client(&request, summary).await?;
    let origin = request.origin();
    let now = service.clock.now_secs();
    match find_presented_token(service, &request.form).await? {
        FoundToken::Refresh(record) if record.token.client_id == client.id => {
            if service.revoke_grant(&record.token.family_id, now).await? {
                tracing::info!(target: "audit", client_id = ?crate::telemetry::cut(&client.id), family = %record.token.family_id.to_uuid_string(), "grant revoked");
                service.audit().record(
                    &origin,
                    Some(client.id.as_str()),
                    record.token.username.as_deref(),
                    Event::GrantRevoked {
                        grant_id: record.token.family_id.to_uuid_string(),
                        by: RevokedBy::Client,
                    },
                );
            }
        }
        FoundToken::Access(record) | FoundToken::JwtAccess(_, record)
            if record.client_id == client.id =>
        {
            if service.tokens.revoke_access_token(&record.id, now).await? {
                service.audit().record(
                    &origin,
                    Some(client.id.as_str()),
                    record.username.as_deref(),
                    Event::TokenRevoked {
                        token_id: record.id.to_uuid_string(),
                    },
                );
            }
        }
        FoundToken::Refresh(_) | FoundToken::Access(_) | FoundToken::JwtAccess(..) => {
            tracing::warn!(client_id = ?crate::telemetry::cut(&client.id), "a client tried to revoke another client's token");
        }
        FoundToken::Unknown => {}
    }
    Ok(())
}
