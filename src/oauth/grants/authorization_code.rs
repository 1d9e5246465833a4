//! RFC 6749 §4.1.3–4.1.4: Authorization Code Grant, with PKCE (RFC 7636 §4.5–4.6, S256 only).
//!
//! The code came from `/authorize` (`oauth/authorize.rs`) and is stored as its SHA-256 only,
//! bound to the client, the redirect URI, the PKCE challenge, the user and the scope. It works
//! once: redeeming it and recording the tokens is one conditional write, so of two concurrent
//! redemptions exactly one succeeds. A code presented again revokes every token issued from it
//! (§4.1.2: "SHOULD revoke (when possible) all tokens previously issued based on that
//! authorization code"). Public clients may use this grant: PKCE, not a secret, proves that the
//! token request comes from the app that started the flow.

use secrecy::{ExposeSecret as _, SecretString};

use super::{required, required_secret, Grant, Issued};
use crate::audit::{Event, Origin, RevokedBy};
use crate::crypto::token::SecretDigest;
use crate::oauth::error::OAuthError;
use crate::oauth::issue;
use crate::oauth::params::FormParams;
use crate::oauth::pkce;
use crate::oauth::scope::Scope;
use crate::oauth::token::TokenService;
use crate::store::model::{AuthorizationCodeRecord, Client, GrantType};
use crate::store::Redemption;

pub struct AuthorizationCodeGrant {
    /// The request's id and the client's address, for the audit trail.
    pub origin: Origin,
}

pub struct AuthorizationCodeParams {
    code: SecretString,
    redirect_uri: Option<String>,
    code_verifier: SecretString,
}

/// One answer for unknown, expired, used and foreign codes, a wrong redirect URI and a wrong
/// verifier: the client learns nothing it could use to probe codes.
fn rejected() -> OAuthError {
    OAuthError::invalid_grant("the authorization code is invalid, expired or already used")
}

impl Grant for AuthorizationCodeGrant {
    type Params = AuthorizationCodeParams;
    const GRANT_TYPE: GrantType = GrantType::AuthorizationCode;
    /// OAuth 2.1 §4.1: the grant for native and browser apps, which cannot keep a secret.
    const FOR_PUBLIC_CLIENTS: bool = true;

    fn parse(form: &FormParams) -> Result<AuthorizationCodeParams, OAuthError> {
        let code = required_secret(form, "code")?;
        let code_verifier = required(form, "code_verifier")?;
        // RFC 7636 §4.1: a malformed verifier is a malformed request, whatever the code.
        if !pkce::is_valid_verifier(code_verifier) {
            return Err(OAuthError::invalid_request(
                "code_verifier must be 43 to 128 characters of A-Z a-z 0-9 - . _ ~",
            ));
        }
        Ok(AuthorizationCodeParams {
            code,
            redirect_uri: form.get("redirect_uri").map(str::to_owned),
            code_verifier: SecretString::from(code_verifier.to_owned()),
        })
    }

    async fn issue(
        &self,
        service: &TokenService,
        client: &Client,
        params: AuthorizationCodeParams,
    ) -> Result<Issued, OAuthError> {
        let now = service.clock.now_secs();
        let digest = SecretDigest::of(params.code.expose_secret().as_bytes());
        let Some(code) = service.tokens.find_authorization_code(&digest).await? else {
            return Err(rejected());
        };
        // §4.1.3: "ensure that the authorization code was issued to the authenticated
        // confidential client, or if the client is public, ensure that the code was issued to
        // "client_id" in the request". Another client's code is not reuse: it is left alone.
        if code.client_id != client.id {
            tracing::warn!(client_id = ?crate::telemetry::cut(&client.id), "authorization code presented by another client");
            return Err(rejected());
        }
        // The verifier first: someone who saw a redeemed code but does not hold its verifier
        // (what PKCE guards against) must not be able to revoke the user's tokens with it.
        if !pkce::verifier_matches(params.code_verifier.expose_secret(), &code.code_challenge) {
            return Err(OAuthError::invalid_grant(
                "the code_verifier does not match the code_challenge",
            ));
        }
        // Reuse is judged before anything else, so no other answer can mask it.
        if code.redeemed_at.is_some() {
            return Err(reuse(service, client, &code, now, &self.origin).await);
        }
        if code.expires_at <= now {
            return Err(rejected());
        }
        check_redirect_uri(&code, params.redirect_uri.as_deref(), client)?;
        // The user may have been removed or disabled since logging in.
        match service.users.find_user(&code.username).await? {
            Some(user) if !user.disabled => {}
            _ => return Err(rejected()),
        }
        let scope = Scope::parse(&code.scope)?;
        if !scope.allowed_for(&client.scopes) {
            return Err(OAuthError::invalid_scope(
                "the scope is no longer allowed for this client",
            ));
        }
        // The grant started when the code was issued (the user had just signed in): a
        // not-before mark written since (`user revoke-tokens`, a password change) covers the
        // tokens this code gives, as it covers a password grant's that was checking then.
        let (tokens, response) = issue::mint_new_user_grant(
            service,
            client,
            code.username.clone(),
            scope.as_string(),
            code.issued_at.saturating_mul(1000),
        )?;
        let issued = Issued::new(&tokens, response);
        let access_id = tokens.access.id;
        match service
            .tokens
            .redeem_authorization_code(&digest, now, tokens)
            .await?
        {
            // The tokens' grant starts at the code's time, so a not-before mark made since
            // (`user revoke-tokens`, `client revoke-tokens`) already covers them: the code was
            // revoked with them, and dead tokens are not handed out.
            Redemption::Redeemed => match service.tokens.find_access_token(&access_id).await? {
                Some(access) if access.revoked_at.is_none() => Ok(issued),
                _ => Err(rejected()),
            },
            // Another request redeemed it between our read and our write (or it just expired).
            Redemption::Refused => match service.tokens.find_authorization_code(&digest).await? {
                Some(now_used) if now_used.redeemed_at.is_some() => {
                    Err(reuse(service, client, &now_used, now, &self.origin).await)
                }
                _ => Err(rejected()),
            },
        }
    }
}

/// RFC 6749 §4.1.3: "ensure that the "redirect_uri" parameter is present if the
/// "redirect_uri" parameter was included in the initial authorization request, and if
/// included ensure that their values are identical". Without one in the authorization request
/// (a client with a single registered URI may leave it out), one given here must be registered.
fn check_redirect_uri(
    code: &AuthorizationCodeRecord,
    presented: Option<&str>,
    client: &Client,
) -> Result<(), OAuthError> {
    let matches = match (&code.redirect_uri, presented) {
        (Some(bound), Some(presented)) => bound == presented,
        (Some(_), None) => false,
        (None, Some(presented)) => client
            .redirect_uris
            .iter()
            .any(|uri| uri.matches(presented)),
        (None, None) => true,
    };
    if matches {
        Ok(())
    } else {
        Err(OAuthError::invalid_grant(
            "redirect_uri does not match the authorization request",
        ))
    }
}

/// A redeemed code presented again: someone else may hold it (RFC 6749 §10.5, RFC 9700
/// §4.5), so every token issued from it is revoked; the answer is the same refusal.
async fn reuse(
    service: &TokenService,
    client: &Client,
    code: &AuthorizationCodeRecord,
    now: i64,
    origin: &Origin,
) -> OAuthError {
    let grant_id = code.family_id.map(|family| family.to_uuid_string());
    service.metrics().authorization_code_reuse_detected();
    service.audit().record(
        origin,
        Some(client.id.as_str()),
        Some(code.username.as_str()),
        Event::AuthorizationCodeReuseDetected {
            grant_id: grant_id.clone(),
        },
    );
    tracing::warn!(
        target: "audit",
        client_id = ?crate::telemetry::cut(&client.id),
        username = ?crate::telemetry::cut(&code.username),
        family = grant_id.as_deref().unwrap_or("-"),
        "authorization code reuse detected: every token issued from it is revoked"
    );
    if let (Some(family), Some(grant_id)) = (code.family_id, grant_id) {
        match service.revoke_grant(&family, now).await {
            Ok(true) => service.audit().record(
                origin,
                Some(client.id.as_str()),
                Some(code.username.as_str()),
                Event::GrantRevoked {
                    grant_id,
                    by: RevokedBy::ReuseDetection,
                },
            ),
            Ok(false) => {}
            // The refusal stands; the revocation failing is the store's failure to report.
            Err(err) => return err,
        }
    }
    rejected()
}
