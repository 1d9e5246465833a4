//! `POST /revoke` (RFC 7009).

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};

use super::error::ApiError;
use super::extract::TokenForm;
use super::AppState;
use crate::oauth::revocation;

pub async fn revoke(
    State(state): State<AppState>,
    TokenForm(request): TokenForm,
) -> Result<Response, ApiError> {
    revocation::revoke(&state.token_service, request).await?;
    // RFC 7009 §2.2: 200, and the body (empty here) is ignored by the client.
    let mut response = StatusCode::OK.into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(response)
}
