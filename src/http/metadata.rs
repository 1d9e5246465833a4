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
use crate::oauth::scope::DEFAULT_SCOPE;
use crate::store::model::GrantType;

const CLIENT_AUTH_METHODS: [&str; 2] = ["client_secret_basic", "client_secret_post"];

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
    let document = json!({
        "issuer": service.issuer,
        "token_endpoint": format!("{issuer}/token"),
        "revocation_endpoint": format!("{issuer}/revoke"),
        "introspection_endpoint": format!("{issuer}/introspect"),
        "jwks_uri": format!("{issuer}/jwks"),
        "grant_types_supported": grant_types,
        // RFC 8414 §2 requires the field; there is no authorization endpoint, so none.
        "response_types_supported": [],
        "scopes_supported": scopes,
        "token_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
        "revocation_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
        "introspection_endpoint_auth_methods_supported": CLIENT_AUTH_METHODS,
        "access_token_signing_alg_values_supported": [service.settings().jwt_algorithm.as_str()],
    });
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
