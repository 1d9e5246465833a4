//! RFC 6749 §4.3: Resource Owner Password Credentials Grant.
//!
//! Deprecated by RFC 9700 §2.4 because the client sees the user's password; kept because the
//! applications tokengate serves depend on it, and enabled per client only. An unknown or
//! disabled user is verified against a dummy hash, so every failure costs the same time and
//! gives the same answer.

use secrecy::SecretString;

use super::{required, required_secret, Grant};
use crate::oauth::error::OAuthError;
use crate::oauth::issue::{self, RefreshPlan, Subject};
use crate::oauth::params::FormParams;
use crate::oauth::scope::Scope;
use crate::oauth::token::TokenService;
use crate::oauth::wire::TokenResponse;
use crate::store::model::{Client, GrantType};
use crate::store::Attempt;

pub struct PasswordGrant;

/// Longer names cannot belong to a user (the CLI allows 255 characters) and are not tracked,
/// so junk names cannot bloat the failure table.
const MAX_TRACKED_NAME: usize = 1024;

fn invalid_credentials() -> OAuthError {
    OAuthError::invalid_grant("invalid username or password")
}

pub struct PasswordParams {
    username: String,
    password: SecretString,
    scope: Option<String>,
}

impl Grant for PasswordGrant {
    type Params = PasswordParams;
    const GRANT_TYPE: GrantType = GrantType::Password;

    fn parse(form: &FormParams) -> Result<PasswordParams, OAuthError> {
        Ok(PasswordParams {
            username: required(form, "username")?.to_owned(),
            password: required_secret(form, "password")?,
            scope: form.get("scope").map(str::to_owned),
        })
    }

    async fn issue(
        &self,
        service: &TokenService,
        client: &Client,
        params: PasswordParams,
    ) -> Result<TokenResponse, OAuthError> {
        // Checked before the password so a bad request costs no argon2 work.
        let scope = Scope::parse_requested(params.scope.as_deref())?;
        if !scope.allowed_for(&client.scopes) {
            return Err(OAuthError::invalid_scope(
                "the requested scope is not allowed for this client",
            ));
        }
        let now = service.clock.now_secs();
        let lockout = service
            .lockout_policy
            .filter(|_| params.username.len() <= MAX_TRACKED_NAME);
        // Every attempt is counted before its password is checked, so attempts sent at the same
        // moment cannot get more guesses than the allowance; a success clears the count.
        let mut locks_if_wrong = None;
        if let Some(policy) = lockout {
            match service
                .lockouts
                .begin_attempt(&params.username, now, policy)
                .await?
            {
                Attempt::Locked { until } => {
                    // Same answer as a wrong password, and no argon2 work on a locked account.
                    tracing::warn!(target: "audit", username = %params.username, locked_until = until, "login refused: account locked");
                    return Err(invalid_credentials());
                }
                Attempt::Allowed { locks_until } => locks_if_wrong = locks_until,
            }
        }
        let user = service.users.find_user(&params.username).await?;
        let verified = match user {
            Some(user) if !user.disabled => {
                service
                    .hasher
                    .verify(&user.password_hash, params.password)
                    .await?
            }
            _ => service.hasher.verify_dummy(params.password).await?,
        };
        if !verified {
            if let (Some(until), Some(policy)) = (locks_if_wrong, lockout) {
                // Unknown names are counted too, so lockouts do not reveal which names exist.
                tracing::warn!(target: "audit", username = %params.username, locked_until = until, failures = policy.max_failures, "account locked after repeated failed logins");
            }
            return Err(invalid_credentials());
        }
        if lockout.is_some() {
            service.lockouts.clear_failures(&params.username).await?;
        }
        let scope = scope.as_string();
        let refresh = client
            .grant_types
            .contains(&GrantType::RefreshToken)
            .then(|| RefreshPlan::new_family(scope.clone()));
        let (tokens, response) = issue::mint(
            service,
            client,
            Subject::User(params.username),
            scope,
            refresh,
        )?;
        service.tokens.create_tokens(tokens).await?;
        Ok(response)
    }
}
