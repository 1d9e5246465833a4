//! One module per grant type, each implementing [`Grant`].

pub mod client_credentials;
pub mod password;
pub mod refresh_token;

use std::future::Future;

use secrecy::SecretString;

use super::error::OAuthError;
use super::params::FormParams;
use super::token::TokenService;
use super::wire::TokenResponse;
use crate::store::model::{Client, GrantType};

/// The contract every grant implements: parse its parameters, then issue tokens.
pub trait Grant {
    /// The grant's own typed parameters.
    type Params;

    const GRANT_TYPE: GrantType;

    /// Reads the grant's parameters from the form; missing ones are `invalid_request`.
    fn parse(form: &FormParams) -> Result<Self::Params, OAuthError>;

    /// Runs the grant for an authenticated client that is allowed to use it.
    fn issue(
        &self,
        service: &TokenService,
        client: &Client,
        params: Self::Params,
    ) -> impl Future<Output = Result<TokenResponse, OAuthError>> + Send;
}

pub(crate) fn required<'a>(form: &'a FormParams, name: &str) -> Result<&'a str, OAuthError> {
    form.get(name)
        .ok_or_else(|| OAuthError::invalid_request(format!("missing parameter: {name}")))
}

pub(crate) fn required_secret(form: &FormParams, name: &str) -> Result<SecretString, OAuthError> {
    required(form, name).map(|value| SecretString::from(value.to_owned()))
}
