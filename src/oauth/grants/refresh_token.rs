//! RFC 6749 §6: Refreshing an Access Token.
//!
//! The refresh token is bound to the client it was issued to. With `renew_refresh_token` the
//! presented token is spent and replaced (RFC 9700 §4.14.2 rotation): marking it spent and
//! recording its successor is one conditional write, so of two concurrent redemptions exactly
//! one succeeds.

use secrecy::SecretString;

use super::{required_secret, Grant};
use crate::crypto::token::PresentedToken;
use crate::oauth::error::OAuthError;
use crate::oauth::issue::{self, RefreshPlan, Subject};
use crate::oauth::params::FormParams;
use crate::oauth::scope::Scope;
use crate::oauth::token::TokenService;
use crate::oauth::wire::TokenResponse;
use crate::store::model::{Client, GrantType};
use crate::store::Rotation;

pub struct RefreshTokenGrant;

/// Refresh tokens are issued for users only (RFC 6749 §4.4.3: never for client_credentials).
fn subject(username: Option<&String>) -> Subject {
    match username {
        Some(name) => Subject::User(name.clone()),
        None => Subject::Application,
    }
}

pub struct RefreshParams {
    refresh_token: SecretString,
    scope: Option<String>,
}

fn rejected() -> OAuthError {
    // One answer for unknown, expired, spent, revoked and foreign tokens: the client learns
    // nothing it could use to probe other clients' tokens.
    OAuthError::invalid_grant("the refresh token is invalid, expired or revoked")
}

impl Grant for RefreshTokenGrant {
    type Params = RefreshParams;
    const GRANT_TYPE: GrantType = GrantType::RefreshToken;

    fn parse(form: &FormParams) -> Result<RefreshParams, OAuthError> {
        Ok(RefreshParams {
            refresh_token: required_secret(form, "refresh_token")?,
            scope: form.get("scope").map(str::to_owned),
        })
    }

    async fn issue(
        &self,
        service: &TokenService,
        client: &Client,
        params: RefreshParams,
    ) -> Result<TokenResponse, OAuthError> {
        let now = service.clock.now_secs();
        let presented = PresentedToken::parse(&params.refresh_token).ok_or_else(rejected)?;
        let stored = service
            .tokens
            .find_refresh_token(&presented.id)
            .await?
            .ok_or_else(rejected)?;
        let record = &stored.token;
        if !record.secret_digest.matches(&presented.digest) {
            return Err(rejected());
        }
        if record.client_id != client.id {
            tracing::warn!(token_id = %record.id.to_uuid_string(), "refresh token presented by another client");
            return Err(rejected());
        }
        if record.revoked_at.is_some() || stored.spent_at.is_some() || record.expires_at <= now {
            return Err(rejected());
        }
        // The user may have been removed or disabled since the grant.
        if let Some(username) = &record.username {
            match service.users.find_user(username).await? {
                Some(user) if !user.disabled => {}
                _ => return Err(rejected()),
            }
        }
        let granted = Scope::parse(&record.scope)?;
        let access_scope = match params.scope.as_deref() {
            None => granted,
            Some(raw) => {
                let requested = Scope::parse(raw)?;
                if !requested.is_within(&granted) {
                    return Err(OAuthError::invalid_scope(
                        "a refresh may only narrow the originally granted scope",
                    ));
                }
                requested
            }
        };
        if !access_scope.allowed_for(&client.scopes) {
            return Err(OAuthError::invalid_scope(
                "the scope is no longer allowed for this client",
            ));
        }
        if service.settings.renew_refresh_token {
            // RFC 6749 §6: the new refresh token keeps the scope of the one it replaces.
            let plan = RefreshPlan::continue_family(record.scope.clone(), record.family_id);
            let (tokens, response) = issue::mint(
                service,
                client,
                subject(record.username.as_ref()),
                access_scope.as_string(),
                Some(plan),
            )?;
            match service
                .tokens
                .rotate_refresh_token(&record.id, now, tokens)
                .await?
            {
                Rotation::Rotated => Ok(response),
                Rotation::AlreadySpent => Err(rejected()),
            }
        } else {
            let (mut tokens, mut response) = issue::mint(
                service,
                client,
                subject(record.username.as_ref()),
                access_scope.as_string(),
                None,
            )?;
            tokens.access.family_id = record.family_id;
            service.tokens.create_tokens(tokens).await?;
            // Not rotating: the client keeps using the token it sent.
            response.refresh_token =
                Some(secrecy::ExposeSecret::expose_secret(&params.refresh_token).to_owned());
            Ok(response)
        }
    }
}
