//! `POST /revoke` (RFC 7009).

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse as _, Response};

use super::error::ApiError;
use super::extract::TokenForm;
use super::measure::answer_without_grant;
use super::AppState;
use crate::oauth::revocation;
use crate::oauth::token::ExchangeSummary;

pub async fn revoke(State(state): State<AppState>, TokenForm(request): TokenForm) -> Response {
    let mut summary = ExchangeSummary::default();
    let outcome = revocation::revoke(&state.token_service, request, &mut summary).await;
    // RFC 7009 §2.2: 200, and the body (empty here) is ignored by the client.
    answer_without_grant(
        outcome
            .map(|()| StatusCode::OK.into_response())
            .map_err(ApiError::from),
        summary,
    )
}
