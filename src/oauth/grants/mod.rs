//! One module per grant type, each implementing [`Grant`].

pub mod authorization_code;
pub mod client_credentials;
pub mod password;
pub mod refresh_token;

use std::future::Future;

use secrecy::SecretString;

use super::error::OAuthError;
use super::params::FormParams;
use super::token::TokenService;
use super::wire::TokenResponse;
use crate::store::model::{Client, GrantType, NewTokens};

/// What a grant issued: the response (the only place the tokens appear) and, for the audit
/// trail, what the tokens are by id.
pub struct Issued {
    pub response: TokenResponse,
    pub tokens: IssuedTokens,
}

/// The issued tokens without their secrets.
pub struct IssuedTokens {
    /// The user; `None` for an application token.
    pub subject: Option<String>,
    pub scope: String,
    /// The access token's id (its `jti` when a JWT).
    pub token_id: String,
    pub refresh_token_id: Option<String>,
    /// The grant: the refresh-token family (the access token itself without one).
    pub grant_id: String,
}

impl Issued {
    /// Call after the last change to `tokens` (a family id set after minting, say).
    pub fn new(tokens: &NewTokens, response: TokenResponse) -> Self {
        let access = &tokens.access;
        Self {
            response,
            tokens: IssuedTokens {
                subject: access.username.clone(),
                scope: access.scope.clone(),
                token_id: access.id.to_uuid_string(),
                refresh_token_id: tokens
                    .refresh
                    .as_ref()
                    .map(|refresh| refresh.token.id.to_uuid_string()),
                grant_id: access.family_id.to_uuid_string(),
            },
        }
    }
}

/// The contract every grant implements: parse its parameters, then issue tokens.
pub trait Grant {
    /// The grant's own typed parameters.
    type Params;

    const GRANT_TYPE: GrantType;

    /// Whether a public client (no secret, authenticated by `client_id` alone) may use the
    /// grant. Only grants where the user takes part may say yes; `Client::check` refuses the
    /// others in a public client's registration too (`GrantType::FOR_PUBLIC_CLIENTS`).
    const FOR_PUBLIC_CLIENTS: bool = false;

    /// Reads the grant's parameters from the form; missing ones are `invalid_request`.
    fn parse(form: &FormParams) -> Result<Self::Params, OAuthError>;

    /// Runs the grant for an authenticated client that is allowed to use it.
    fn issue(
        &self,
        service: &TokenService,
        client: &Client,
        params: Self::Params,
    ) -> impl Future<Output = Result<Issued, OAuthError>> + Send;
}

pub(crate) fn required<'a>(form: &'a FormParams, name: &str) -> Result<&'a str, OAuthError> {
    form.get(name)
        .ok_or_else(|| OAuthError::invalid_request(format!("missing parameter: {name}")))
}

pub(crate) fn required_secret(form: &FormParams, name: &str) -> Result<SecretString, OAuthError> {
    required(form, name).map(|value| SecretString::from(value.to_owned()))
}
