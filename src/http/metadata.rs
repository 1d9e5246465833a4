//! `GET /.well-known/oauth-authorization-server` (RFC 8414) and `GET /jwks` (RFC 7517),
//! both built from the running configuration so they never drift from it.

use std::collections::BTreeSet;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse as _, Response};
use axum::Json;
use serde_json::json;

use super::error::ApiError;
use super::AppState;
use crate::oauth::registration::RegistrationMode;
use crate::oauth::scope::DEFAULT_SCOPE;
use crate::store::model::GrantType;

const CLIENT_AUTH_METHODS: [&str; 2] = ["client_secret_basic", "client_secret_post"];
/// RFC 8414 §2 / RFC 7591 §2: a public client authenticates by `client_id` alone.
const NONE: &str = "none";

pub async fn authorization_server(State(state): State<AppState>) -> Result<Response, ApiError> {
    let service = &state.token_service;
    let issuer = service.issuer.trim_end_matches('/');
    let clients = service
        .clients
        .list_clients()
        .await
        .map_err(crate::oauth::OAuthError::from)?;
    let scopes: BTreeSet<&str> = clients
        .iter()
        .flat_map(|client| client.scopes.iter().map(String::as_str))
        .chain([DEFAULT_SCOPE])
        .collect();
    let grant_types: Vec<&str> = GrantType::ALL.iter().map(|g| g.as_str()).collect();
    // `none` only once a public client exists: until then no request may omit a secret.
    let mut public_auth_methods = CLIENT_AUTH_METHODS.to_vec();
    if clients
        .iter()
        .any(|client| client.public && !client.disabled)
    {
        public_auth_methods.push(NONE);
    }
    let mut document = json!({
        "issuer": service.issuer,
        "authorization_endpoint": format!("{issuer}/authorize"),
        "token_endpoint": format!("{issuer}/token"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "introspection_endpoint": format!("{issuer}/introspect"),
        "jwks_uri": format!("{issuer}/jwks"),
        "grant_types_supported": grant_types,
        // OAuth 2.1: the code flow only, with PKCE S256 (RFC 7636 §6.2), and `iss` in the
        // authorization response (RFC 9207 §3).
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": [crate::oauth::pkce::S256],
        "authorization_response_iss_parameter_supported": true,
        "scopes_supported": scopes,
        "token_endpoint_auth_methods_supported": public_auth_methods,
        "revocation_endpoint_auth_methods_supported": public_auth_methods,
        "introspection_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
        "access_token_signing_alg_values_supported": [service.settings().jwt_algorithm.as_str()],
    });
    // RFC 8414 §2: only while registration is on (RFC 7591).
    if state.registration.mode() != RegistrationMode::Off {
        if let Some(fields) = document.as_object_mut() {
            fields.insert(
                "registration_endpoint".to_owned(),
                format!("{issuer}/register").into(),
            );
        }
    }
    Ok(cached(Json(document).into_response()))
}

pub async fn jwks(State(state): State<AppState>) -> Result<Response, ApiError> {
    let service = &state.token_service;
    let max_validity = service.max_access_token_validity_secs().await?;
    let document = service.keys.jwks(service.clock.now_secs(), max_validity);
    let mut response = Json(document).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/jwk-set+json"),
    );
    Ok(cached(response))
}

/// Short enough that a rotated-in key is fetched soon; resource servers also refetch on an
/// unknown `kid`.
fn cached(mut response: Response) -> Response {
    response.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=60"),
    );
    response
}
