//! `POST /introspect` (RFC 7662).

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse as _, Response};
use axum::Json;

use super::error::ApiError;
use super::extract::TokenForm;
use super::AppState;
use crate::oauth::introspection;

pub async fn introspect(
    State(state): State<AppState>,
    TokenForm(request): TokenForm,
) -> Result<Response, ApiError> {
    let body = introspection::introspect(&state.token_service, request).await?;
    let mut response = Json(body).into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
