//! Minting token pairs: lifetimes from the settings or the client's override, records for the
//! store (digests only) and the RFC 6749 §5.1 response (the only place the tokens appear).

use secrecy::ExposeSecret as _;

use super::token::TokenService;
use super::wire::TokenResponse;
use crate::crypto::token::{MintedToken, TokenId};
use crate::store::model::{Client, NewTokens, RefreshTokenRecord, TokenRecord};

/// Whether and how a refresh token is issued alongside the access token.
pub struct RefreshPlan {
    scope: String,
    /// `None` starts a new family rooted at the new refresh token.
    family_id: Option<TokenId>,
}

impl RefreshPlan {
    pub fn new_family(scope: String) -> Self {
        Self {
            scope,
            family_id: None,
        }
    }

    pub fn continue_family(scope: String, family_id: TokenId) -> Self {
        Self {
            scope,
            family_id: Some(family_id),
        }
    }
}

fn secs_i64(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// Mints an access token (and a refresh token if planned) for `client`.
pub fn mint(
    service: &TokenService,
    client: &Client,
    username: Option<String>,
    access_scope: String,
    refresh: Option<RefreshPlan>,
) -> (NewTokens, TokenResponse) {
    let now_ms = service.clock.now_ms();
    let now = now_ms.div_euclid(1000);
    let access_validity = client
        .access_token_validity_secs
        .unwrap_or(service.settings.access_token_validity_secs);
    let refresh_validity = client
        .refresh_token_validity_secs
        .unwrap_or(service.settings.refresh_token_validity_secs);

    let access = MintedToken::new(now_ms);
    let refresh_minted = refresh.map(|plan| (MintedToken::new(now_ms), plan));
    let family_id = match &refresh_minted {
        Some((minted, plan)) => plan.family_id.unwrap_or(minted.id),
        None => access.id,
    };
    let record = |minted: &MintedToken, scope: &str, validity: u64| TokenRecord {
        id: minted.id,
        secret_digest: minted.digest,
        client_id: client.id.clone(),
        username: username.clone(),
        scope: scope.to_owned(),
        family_id,
        issued_at: now,
        expires_at: now.saturating_add(secs_i64(validity)),
        revoked_at: None,
    };
    let access_record = record(&access, &access_scope, access_validity);
    let refresh_record = refresh_minted
        .as_ref()
        .map(|(minted, plan)| RefreshTokenRecord {
            token: record(minted, &plan.scope, refresh_validity),
            spent_at: None,
            replaced_by: None,
        });
    let response = TokenResponse {
        access_token: access.value.expose_secret().to_owned(),
        token_type: "Bearer",
        expires_in: access_validity,
        refresh_token: refresh_minted
            .as_ref()
            .map(|(minted, _)| minted.value.expose_secret().to_owned()),
        scope: access_scope,
    };
    (
        NewTokens {
            access: access_record,
            refresh: refresh_record,
        },
        response,
    )
}
