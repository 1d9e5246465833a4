//! The token endpoint (RFC 6749 §3.2): the steps every grant shares, then dispatch.
//!
//! Client authentication, the grant-type checks and the mapping of unknown types to
//! `unsupported_grant_type` happen here, once. A new grant is a new file in `grants/` and one
//! line in [`TokenService::exchange`].

use std::net::IpAddr;
use std::sync::Arc;

use secrecy::SecretString;

use super::client_auth::{presented_client, ClientAuthenticator, PresentedClient};
use super::error::{ErrorCode, OAuthError};
use super::grants::{self, Grant, Issued};
use super::params::{AuthorizationHeader, FormParams};
use super::wire::TokenResponse;
use crate::abuse::client_failures::{ClientAuthFailures, ClientAuthPolicy};
use crate::abuse::rate_limit::{bucket_key, Limiter};
use crate::audit::{Audit, Event, Origin};
use crate::clock::Clock;
use crate::config::OAuthSettings;
use crate::crypto::jwk::KeyRing;
use crate::crypto::password::PasswordHasher;
use crate::crypto::token::TokenId;
use crate::live::Live;
use crate::metrics::GrantMetrics;
use crate::store::model::{Client, GrantType};
use crate::store::{ClientStore, LockoutPolicy, LockoutStore, TokenStore, UserStore};

/// A parsed token request: what the HTTP layer extracted, in protocol terms.
#[derive(Debug)]
pub struct TokenRequest {
    pub authorization: Option<AuthorizationHeader>,
    pub form: FormParams,
    /// The client's address (after trusted proxies); `None` only when the transport has none.
    pub client_ip: Option<IpAddr>,
    /// The request's id (`X-Request-Id`), for its audit events.
    pub request_id: Option<String>,
}

impl TokenRequest {
    /// Where the request came from, for its audit events.
    pub fn origin(&self) -> Origin {
        Origin {
            request_id: self.request_id.clone(),
            ip: self.client_ip,
        }
    }
}

/// What one request to an endpoint was about, for its log line and metrics.
#[derive(Debug, Default)]
pub struct ExchangeSummary {
    /// The client id presented (claimed, until `authenticated`).
    pub client_id: Option<String>,
    pub grant_type: Option<String>,
    /// `client_id` passed client authentication.
    pub authenticated: bool,
}

impl ExchangeSummary {
    /// The authenticated client's id, if authentication succeeded.
    pub fn authenticated_client(self) -> Option<String> {
        self.client_id.filter(|_| self.authenticated)
    }
}

/// The stores and services every endpoint of the protocol layer works with.
pub struct ServiceParts {
    /// Lifetimes, grace period and token format; replaced by a reload (SIGHUP).
    pub settings: Live<OAuthSettings>,
    /// The issuer URL (`iss`), settled at startup.
    pub issuer: String,
    pub clients: Arc<dyn ClientStore>,
    pub users: Arc<dyn UserStore>,
    pub tokens: Arc<dyn TokenStore>,
    pub lockouts: Arc<dyn LockoutStore>,
    /// `None`: no account lockout. Replaced by a reload.
    pub lockout_policy: Live<Option<LockoutPolicy>>,
    /// Requests per authenticated client (its rate replaced by a reload); `None` is unlimited.
    pub client_limiter: Option<Limiter<String>>,
    /// Wrong client secrets per (client, address) that lock the pair; `None` is unlimited.
    /// Replaced by a reload.
    pub client_auth_lockout: Live<Option<ClientAuthPolicy>>,
    pub keys: Arc<KeyRing>,
    pub hasher: PasswordHasher,
    pub clock: Arc<dyn Clock>,
    /// Lockouts and refresh-token reuse, counted by the grants.
    pub metrics: GrantMetrics,
    /// The audit trail: every endpoint's security events.
    pub audit: Audit,
}

/// Everything the grants need, shared by all requests.
pub struct TokenService {
    settings: Live<OAuthSettings>,
    pub issuer: String,
    pub clients: Arc<dyn ClientStore>,
    pub users: Arc<dyn UserStore>,
    pub tokens: Arc<dyn TokenStore>,
    pub lockouts: Arc<dyn LockoutStore>,
    lockout_policy: Live<Option<LockoutPolicy>>,
    pub keys: Arc<KeyRing>,
    pub hasher: PasswordHasher,
    pub clock: Arc<dyn Clock>,
    client_auth: ClientAuthenticator,
    client_limiter: Option<Limiter<String>>,
    metrics: GrantMetrics,
    audit: Audit,
}

impl TokenService {
    pub fn new(parts: ServiceParts) -> Self {
        let client_auth = ClientAuthenticator::new(
            parts.clients.clone(),
            parts.hasher.clone(),
            parts.clock.clone(),
            Some(ClientAuthFailures::live(parts.client_auth_lockout)),
            parts.audit.clone(),
        );
        Self {
            settings: parts.settings,
            issuer: parts.issuer,
            clients: parts.clients,
            users: parts.users,
            tokens: parts.tokens,
            lockouts: parts.lockouts,
            lockout_policy: parts.lockout_policy,
            keys: parts.keys,
            hasher: parts.hasher,
            clock: parts.clock,
            client_auth,
            client_limiter: parts.client_limiter,
            metrics: parts.metrics,
            audit: parts.audit,
        }
    }

    /// The audit trail, for the grants and endpoints to record their events.
    pub fn audit(&self) -> &Audit {
        &self.audit
    }

    /// The OAuth settings now (a reload replaces them): take one snapshot per request.
    pub fn settings(&self) -> Arc<OAuthSettings> {
        self.settings.get()
    }

    /// The account lockout policy now; `None` when lockout is off.
    pub fn lockout_policy(&self) -> Option<LockoutPolicy> {
        self.lockout_policy.load()
    }

    /// The grants' security-event counters.
    pub fn metrics(&self) -> &GrantMetrics {
        &self.metrics
    }

    /// Authenticates the client of a request to any endpoint (token, revocation,
    /// introspection), then takes from its rate limit.
    pub async fn authenticate_client(
        &self,
        request: &TokenRequest,
        summary: &mut ExchangeSummary,
    ) -> Result<Arc<Client>, OAuthError> {
        let presented = presented_client(request.authorization.clone(), &request.form)?;
        summary.client_id = presented.claimed_id().map(str::to_owned);
        let client = self.authenticate(presented, &request.origin()).await?;
        summary.authenticated = true;
        Ok(client)
    }

    async fn authenticate(
        &self,
        presented: PresentedClient,
        origin: &Origin,
    ) -> Result<Arc<Client>, OAuthError> {
        let client = self.client_auth.authenticate(presented, origin).await?;
        if let Some(limiter) = &self.client_limiter {
            // A public client is "authenticated" by its id alone, which anyone can send: its
            // bucket is per address too, or strangers could use up every user's allowance.
            let bucket = match (client.public, origin.ip) {
                (true, Some(ip)) => format!("{} {}", client.id, bucket_key(ip)),
                _ => client.id.clone(),
            };
            if let Err(retry) = limiter.check(&bucket, self.clock.now_ms()).await {
                self.audit.record(
                    origin,
                    Some(client.id.as_str()),
                    None,
                    Event::RateLimited { bucket: "client" },
                );
                return Err(OAuthError::rate_limited(retry));
            }
        }
        Ok(client)
    }

    /// The longest an access token issued now can live, over the settings and every client's
    /// overrides: a signing key stays published this long after it is retired.
    pub async fn max_access_token_validity_secs(&self) -> Result<i64, OAuthError> {
        max_access_token_validity_secs(&self.settings(), self.clients.as_ref()).await
    }

    /// RFC 7009 §2.1 / RFC 9700 §4.14.2: revokes every token of a grant. The revocation is
    /// kept until no token issued before it is stored, whatever lifetimes are configured
    /// later. `Ok(false)` if it was already revoked.
    pub async fn revoke_grant(&self, family_id: &TokenId, now: i64) -> Result<bool, OAuthError> {
        Ok(self.tokens.revoke_family(family_id, now).await?)
    }

    /// Whether `secret` is the client's secret (see `client_auth`).
    pub async fn client_secret_matches(
        &self,
        client: &Client,
        secret: SecretString,
    ) -> Result<bool, OAuthError> {
        self.client_auth.secret_matches(client, secret).await
    }

    /// RFC 6749 §3.2: authenticates the client and runs the requested grant.
    pub async fn exchange(
        &self,
        request: TokenRequest,
        summary: &mut ExchangeSummary,
    ) -> Result<TokenResponse, OAuthError> {
        let origin = request.origin();
        let form = request.form;
        // Noted first, so that a request refused for its credentials is still told by grant.
        summary.grant_type = form.get("grant_type").map(str::to_owned);
        let presented = presented_client(request.authorization, &form)?;
        summary.client_id = presented.claimed_id().map(str::to_owned);
        let grant_type = form
            .get("grant_type")
            .ok_or_else(|| OAuthError::invalid_request("missing parameter: grant_type"))?;
        let client = self.authenticate(presented, &origin).await?;
        summary.authenticated = true;
        let Some(grant) = GrantType::parse(grant_type) else {
            return Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                "this grant type is not supported",
            ));
        };
        if !client.grant_types.contains(&grant) || (client.public && !grant_allows_public(grant)) {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "this client is not allowed to use this grant type",
            ));
        }
        let issued = match grant {
            GrantType::Password => {
                let grant = grants::password::PasswordGrant {
                    origin: origin.clone(),
                };
                run(&grant, self, &client, &form).await
            }
            GrantType::RefreshToken => {
                let grant = grants::refresh_token::RefreshTokenGrant {
                    origin: origin.clone(),
                };
                run(&grant, self, &client, &form).await
            }
            GrantType::ClientCredentials => {
                run(
                    &grants::client_credentials::ClientCredentialsGrant,
                    self,
                    &client,
                    &form,
                )
                .await
            }
            GrantType::AuthorizationCode => {
                let grant = grants::authorization_code::AuthorizationCodeGrant {
                    origin: origin.clone(),
                };
                run(&grant, self, &client, &form).await
            }
        }?;
        // Recorded once here for every grant, after the tokens are stored.
        let tokens = issued.tokens;
        // An application token's subject is the client, as its JWT `sub` says.
        let subject = tokens.subject.as_deref().unwrap_or(client.id.as_str());
        self.audit.record(
            &origin,
            Some(client.id.as_str()),
            Some(subject),
            Event::TokenIssued {
                grant_type: grant.as_str(),
                scope: tokens.scope,
                token_id: tokens.token_id,
                refresh_token_id: tokens.refresh_token_id,
                grant_id: tokens.grant_id,
            },
        );
        Ok(issued.response)
    }
}

/// The longest an access token issued now can live, over `settings` and every client's
/// overrides.
pub async fn max_access_token_validity_secs(
    settings: &OAuthSettings,
    clients: &dyn ClientStore,
) -> Result<i64, OAuthError> {
    let clients = clients.list_clients().await?;
    let access = clients
        .iter()
        .flat_map(|c| {
            [
                c.access_token_validity_secs,
                c.application_access_token_validity_secs,
            ]
        })
        .flatten()
        .chain([
            settings.access_token_validity_secs,
            settings.application_access_token_validity_secs,
        ])
        .max()
        .unwrap_or(0);
    Ok(i64::try_from(access).unwrap_or(i64::MAX))
}

/// Whether a public client (authenticated by its id alone) may use `grant`: the grant's own
/// [`Grant::FOR_PUBLIC_CLIENTS`].
fn grant_allows_public(grant: GrantType) -> bool {
    match grant {
        GrantType::Password => grants::password::PasswordGrant::FOR_PUBLIC_CLIENTS,
        GrantType::RefreshToken => grants::refresh_token::RefreshTokenGrant::FOR_PUBLIC_CLIENTS,
        GrantType::ClientCredentials => {
            grants::client_credentials::ClientCredentialsGrant::FOR_PUBLIC_CLIENTS
        }
        GrantType::AuthorizationCode => {
            grants::authorization_code::AuthorizationCodeGrant::FOR_PUBLIC_CLIENTS
        }
    }
}

async fn run<G: Grant>(
    grant: &G,
    service: &TokenService,
    client: &Client,
    form: &FormParams,
) -> Result<Issued, OAuthError> {
    let params = G::parse(form)?;
    grant.issue(service, client, params).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The registration rule (`Client::check`) and the grants' own hooks say the same.
    #[test]
    fn the_grants_open_to_public_clients_are_the_ones_a_public_client_may_register() {
        for grant in GrantType::ALL {
            assert_eq!(
                grant_allows_public(grant),
                GrantType::FOR_PUBLIC_CLIENTS.contains(&grant),
                "{}",
                grant.as_str()
            );
        }
    }
}
