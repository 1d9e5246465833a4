//! RFC 6749 §4.4: Client Credentials Grant — an application token for the client itself.
//!
//! §4.4.3: no refresh token is issued. The token's lifetime is the application token validity
//! (`application_access_token_default_validity_period`, or the client's override).

use super::{Grant, Issued};
use crate::oauth::error::OAuthError;
use crate::oauth::issue::{self, Subject};
use crate::oauth::params::FormParams;
use crate::oauth::scope::Scope;
use crate::oauth::token::TokenService;
use crate::store::model::{Client, GrantType};

pub struct ClientCredentialsGrant;

pub struct ClientCredentialsParams {
    scope: Option<String>,
}

impl Grant for ClientCredentialsGrant {
    type Params = ClientCredentialsParams;
    const GRANT_TYPE: GrantType = GrantType::ClientCredentials;

    fn parse(form: &FormParams) -> Result<ClientCredentialsParams, OAuthError> {
        Ok(ClientCredentialsParams {
            scope: form.get("scope").map(str::to_owned),
        })
    }

    async fn issue(
        &self,
        service: &TokenService,
        client: &Client,
        params: ClientCredentialsParams,
    ) -> Result<Issued, OAuthError> {
        let scope = Scope::parse_requested(params.scope.as_deref())?;
        if !scope.allowed_for(&client.scopes) {
            return Err(OAuthError::invalid_scope(
                "the requested scope is not allowed for this client",
            ));
        }
        let (tokens, response) = issue::mint(
            service,
            client,
            Subject::Application,
            scope.as_string(),
            None,
        )?;
        let issued = Issued::new(&tokens, response);
        service.tokens.create_tokens(tokens).await?;
        Ok(issued)
    }
}
