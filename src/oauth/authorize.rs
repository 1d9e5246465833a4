//! The authorization endpoint (RFC 6749 §4.1.1–4.1.2), with PKCE (RFC 7636 §4.3), the `iss`
//! response parameter (RFC 9207) and OAuth 2.1's rules: `response_type=code` only, S256 only,
//! redirect URIs compared exactly (RFC 9700 §4.1.3) except a loopback port (RFC 8252 §7.3).
//!
//! What the HTTP layer (`http/authorize.rs`) shows or redirects is decided here: a request
//! whose client or redirect URI cannot be trusted gets an error page and is never redirected
//! (§4.1.2.1); every other error goes back to the client's redirect URI. Codes are 256 random
//! bits, stored as their SHA-256 only (`TokenStore::create_authorization_code`).

use std::sync::Arc;

use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};

use super::error::OAuthError;
use super::params::FormParams;
use super::pkce;
use super::scope::Scope;
use super::token::TokenService;
use crate::crypto::secret::generate_secret;
use crate::crypto::token::SecretDigest;
use crate::crypto::token::TokenId;
use crate::store::model::{AuthorizationCodeRecord, Client, ConsentRecord, GrantType};

/// The longest `state` echoed back; a client needs far less for its CSRF value.
const MAX_STATE: usize = 2048;

/// `prompt` (OpenID Connect Core §3.1.2.1, as AppAuth and Keycloak send it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prompt {
    /// A live login session is used; else the form is shown.
    Default,
    /// The form is shown even with a session.
    Login,
    /// Never show the form: without a session the answer is `login_required`, and a client
    /// that needs a consent not yet given gets `consent_required`.
    None,
    /// The consent screen is shown even when the user already allowed the client.
    Consent,
    /// `prompt=login consent`: both.
    LoginAndConsent,
}

impl Prompt {
    /// Whether the consent screen is shown even when the user already allowed the client.
    pub fn forces_consent(self) -> bool {
        matches!(self, Self::Consent | Self::LoginAndConsent)
    }

    /// Whether the form is shown even with a live session.
    pub fn forces_login(self) -> bool {
        matches!(self, Self::Login | Self::LoginAndConsent)
    }
}

/// A checked authorization request.
#[derive(Debug, Clone)]
pub struct AuthorizationRequest {
    pub client: Arc<Client>,
    /// Where the answer goes: the request's `redirect_uri`, or the client's only one.
    pub redirect_uri: String,
    /// Whether the request named it (then the token request must repeat it, §4.1.3).
    pub redirect_uri_given: bool,
    pub state: Option<String>,
    pub scope: Scope,
    pub code_challenge: String,
    pub prompt: Prompt,
}

/// Why an authorization request was refused.
#[derive(Debug)]
pub enum AuthorizeError {
    /// §4.1.2.1: the client is unknown or the redirect URI is missing, invalid or not
    /// registered: the user is told, and nothing is redirected (an open redirector otherwise).
    NotRedirected(&'static str),
    /// §4.1.2.1: the error goes back to the client.
    Redirected(Box<ErrorRedirect>),
}

/// An error answer sent to the client's redirect URI.
#[derive(Debug)]
pub struct ErrorRedirect {
    pub redirect_uri: String,
    /// `invalid_request`, `unsupported_response_type`, `invalid_scope`, `login_required`, …
    pub error: &'static str,
    pub description: String,
    pub state: Option<String>,
}

impl AuthorizationRequest {
    /// An error answer for this request.
    pub fn error(&self, error: &'static str, description: impl Into<String>) -> AuthorizeError {
        AuthorizeError::Redirected(Box::new(ErrorRedirect {
            redirect_uri: self.redirect_uri.clone(),
            error,
            description: description.into(),
            state: self.state.clone(),
        }))
    }

    /// The parameters that carry this request through the login form (hidden fields), as the
    /// client sent them; `prompt` is left out (the form's answer is a login), except
    /// `prompt=consent`, which must still show the consent screen after the login.
    pub fn form_fields(&self) -> Vec<(&'static str, String)> {
        let mut fields = vec![
            ("response_type", "code".to_owned()),
            ("client_id", self.client.id.clone()),
            ("code_challenge", self.code_challenge.clone()),
            ("code_challenge_method", pkce::S256.to_owned()),
        ];
        if self.redirect_uri_given {
            fields.push(("redirect_uri", self.redirect_uri.clone()));
        }
        if let Some(state) = &self.state {
            fields.push(("state", state.clone()));
        }
        if !self.scope.as_string().is_empty() {
            fields.push(("scope", self.scope.as_string()));
        }
        if self.prompt.forces_consent() {
            fields.push(("prompt", "consent".to_owned()));
        }
        fields
    }
}

/// RFC 3986 `unreserved` stays as it is in a query value; everything else is percent-encoded.
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// `redirect_uri` with `params` added to its query (RFC 6749 §3.1.2: "MUST retain" the
/// query it already has).
pub fn redirect_url(redirect_uri: &str, params: &[(&str, &str)]) -> String {
    let mut url = redirect_uri.to_owned();
    let mut separator = if redirect_uri.contains('?') { '&' } else { '?' };
    if redirect_uri.ends_with('?') || redirect_uri.ends_with('&') {
        separator = '\0';
    }
    for (name, value) in params {
        if separator != '\0' {
            url.push(separator);
        }
        separator = '&';
        url.push_str(name);
        url.push('=');
        url.extend(utf8_percent_encode(value, QUERY_VALUE));
    }
    url
}

impl ErrorRedirect {
    /// RFC 6749 §4.1.2.1 with RFC 9207's `iss`.
    pub fn url(&self, issuer: &str) -> String {
        let mut params = vec![
            ("error", self.error),
            ("error_description", self.description.as_str()),
        ];
        if let Some(state) = &self.state {
            params.push(("state", state.as_str()));
        }
        params.push(("iss", issuer));
        redirect_url(&self.redirect_uri, &params)
    }
}

/// Checks an authorization request (the query of `GET /authorize`, or the login form's
/// hidden fields). The client and redirect URI first: until both are trusted, nothing is
/// redirected.
pub async fn check(
    service: &TokenService,
    params: &FormParams,
) -> Result<AuthorizationRequest, AuthorizeError> {
    let Some(client_id) = params.get("client_id") else {
        return Err(AuthorizeError::NotRedirected(
            "The request names no application (client_id is missing).",
        ));
    };
    let client = match service.clients.find_client(client_id).await {
        Ok(Some(client)) if !client.disabled => client,
        Ok(_) => {
            return Err(AuthorizeError::NotRedirected(
                "The application that sent you here is not registered.",
            ))
        }
        Err(err) => {
            tracing::warn!(error = %err, "authorization request: the client store failed");
            return Err(AuthorizeError::NotRedirected(
                "The sign-in service is unavailable; please try again in a moment.",
            ));
        }
    };
    let (redirect_uri, redirect_uri_given) = match params.get("redirect_uri") {
        Some(presented)
            if client
                .redirect_uris
                .iter()
                .any(|uri| uri.matches(presented)) =>
        {
            (presented.to_owned(), true)
        }
        Some(_) => {
            return Err(AuthorizeError::NotRedirected(
                "The application sent you here with a redirect URI it has not registered.",
            ))
        }
        None => match client.redirect_uris.as_slice() {
            [only] => (only.as_str().to_owned(), false),
            _ => {
                return Err(AuthorizeError::NotRedirected(
                    "The request does not say where to return (redirect_uri is missing).",
                ))
            }
        },
    };
    let state = params.get("state").map(str::to_owned);
    let error = |error: &'static str, description: &str| {
        AuthorizeError::Redirected(Box::new(ErrorRedirect {
            redirect_uri: redirect_uri.clone(),
            error,
            description: description.to_owned(),
            state: state.clone(),
        }))
    };
    if state.as_ref().is_some_and(|state| state.len() > MAX_STATE) {
        // Not echoed: a state this long would make the redirect as long as the request.
        return Err(AuthorizeError::Redirected(Box::new(ErrorRedirect {
            redirect_uri: redirect_uri.clone(),
            error: "invalid_request",
            description: "state is too long".to_owned(),
            state: None,
        })));
    }
    match params.get("response_type") {
        Some("code") => {}
        None => return Err(error("invalid_request", "missing parameter: response_type")),
        // The implicit grant is gone from OAuth 2.1 (RFC 9700 §2.1.2), and so is every other.
        Some(_) => {
            return Err(error(
                "unsupported_response_type",
                "only response_type=code is supported",
            ))
        }
    }
    if !client.grant_types.contains(&GrantType::AuthorizationCode) {
        return Err(error(
            "unauthorized_client",
            "this client may not use the authorization code grant",
        ));
    }
    // RFC 7636 §4.4.1; OAuth 2.1 §4.1.1: PKCE for every client, S256 only.
    let Some(code_challenge) = params.get("code_challenge") else {
        return Err(error(
            "invalid_request",
            "code_challenge is required (PKCE, RFC 7636)",
        ));
    };
    if params.get("code_challenge_method") != Some(pkce::S256) {
        return Err(error(
            "invalid_request",
            "code_challenge_method must be S256 (plain is not supported)",
        ));
    }
    if !pkce::is_valid_s256_challenge(code_challenge) {
        return Err(error(
            "invalid_request",
            "code_challenge must be 43 base64url characters (BASE64URL(SHA256(verifier)))",
        ));
    }
    let scope = match Scope::parse_requested(params.get("scope")) {
        Ok(scope) if scope.allowed_for(&client.scopes) => scope,
        Ok(_) => {
            return Err(error(
                "invalid_scope",
                "the requested scope is not allowed for this client",
            ))
        }
        Err(err) => return Err(error("invalid_scope", &err.description)),
    };
    // A space-separated list (OpenID Connect Core §3.1.2.1); values this server does not act
    // on (`select_account`: there is one account per session) are ignored, as Keycloak does.
    let words: Vec<&str> = params
        .get("prompt")
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let has = |word: &str| words.contains(&word);
    let prompt = match (has("none"), has("login"), has("consent")) {
        (true, false, false) => Prompt::None,
        (true, _, _) => {
            return Err(error(
                "invalid_request",
                "prompt=none cannot be combined with other values",
            ))
        }
        (false, true, true) => Prompt::LoginAndConsent,
        (false, true, false) => Prompt::Login,
        (false, false, true) => Prompt::Consent,
        (false, false, false) => Prompt::Default,
    };
    Ok(AuthorizationRequest {
        client,
        redirect_uri,
        redirect_uri_given,
        state,
        scope,
        code_challenge: code_challenge.to_owned(),
        prompt,
    })
}

/// Whether `username` must be asked before `request`'s client gets a code: only for clients
/// with `require_consent`, when `prompt=consent` asks, or when the user has not allowed every
/// requested scope yet (or a not-before mark made the answer forgotten).
pub async fn needs_consent(
    service: &TokenService,
    request: &AuthorizationRequest,
    username: &str,
) -> Result<bool, OAuthError> {
    if !request.client.require_consent {
        return Ok(false);
    }
    if request.prompt.forces_consent() {
        return Ok(true);
    }
    let granted = service
        .tokens
        .find_consent(username, &request.client.id)
        .await?;
    Ok(match granted.as_deref().map(Scope::parse) {
        Some(Ok(granted)) => !request.scope.is_within(&granted),
        Some(Err(_)) | None => true,
    })
}

/// Remembers that `username` allowed `request`'s client its scope (added to what they allowed
/// before, while that still counts), until a not-before mark of the user or the client.
pub async fn record_consent(
    service: &TokenService,
    request: &AuthorizationRequest,
    username: &str,
) -> Result<(), OAuthError> {
    let earlier = service
        .tokens
        .find_consent(username, &request.client.id)
        .await?
        .and_then(|scope| Scope::parse(&scope).ok());
    let scope = match earlier {
        Some(earlier) => earlier.union(&request.scope),
        None => request.scope.clone(),
    };
    service
        .tokens
        .save_consent(ConsentRecord {
            username: username.to_owned(),
            client_id: request.client.id.clone(),
            scope: scope.as_string(),
            granted: TokenId::new(service.clock.now_ms()),
        })
        .await?;
    Ok(())
}

/// Issues a code for `username` (logged in) and returns the URL that hands it to the client:
/// `code`, `state` and `iss` (RFC 6749 §4.1.2, RFC 9207).
pub async fn issue_code(
    service: &TokenService,
    request: &AuthorizationRequest,
    username: &str,
) -> Result<String, OAuthError> {
    let code = generate_secret();
    let now = service.clock.now_secs();
    let validity = i64::try_from(service.settings().authorization_code_validity_secs).unwrap_or(60);
    service
        .tokens
        .create_authorization_code(AuthorizationCodeRecord {
            digest: SecretDigest::of(code.as_bytes()),
            client_id: request.client.id.clone(),
            redirect_uri: request
                .redirect_uri_given
                .then(|| request.redirect_uri.clone()),
            code_challenge: request.code_challenge.clone(),
            username: username.to_owned(),
            scope: request.scope.as_string(),
            issued_at: now,
            expires_at: now.saturating_add(validity),
            redeemed_at: None,
            family_id: None,
        })
        .await?;
    let mut params = vec![("code", code.as_str())];
    if let Some(state) = &request.state {
        params.push(("state", state.as_str()));
    }
    params.push(("iss", service.issuer.as_str()));
    Ok(redirect_url(&request.redirect_uri, &params))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_are_added_to_the_query_the_redirect_uri_already_has() {
        assert_eq!(
            redirect_url("com.example.app:/cb", &[("code", "a b"), ("state", "x&y")]),
            "com.example.app:/cb?code=a%20b&state=x%26y"
        );
        assert_eq!(
            redirect_url("https://app.example/cb?tenant=1", &[("code", "c")]),
            "https://app.example/cb?tenant=1&code=c"
        );
        assert_eq!(
            redirect_url(
                "https://app.example/cb?",
                &[("code", "c"), ("iss", "https://i")]
            ),
            "https://app.example/cb?code=c&iss=https%3A%2F%2Fi"
        );
    }
}
