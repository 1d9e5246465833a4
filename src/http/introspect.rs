//! `POST /introspect` (RFC 7662).

use axum::extract::State;
use axum::response::{IntoResponse as _, Response};
use axum::Json;

use super::error::ApiError;
use super::extract::TokenForm;
use super::measure::answer_without_grant;
use super::AppState;
use crate::oauth::introspection;
use crate::oauth::token::ExchangeSummary;

pub async fn introspect(State(state): State<AppState>, TokenForm(request): TokenForm) -> Response {
    let mut summary = ExchangeSummary::default();
    let outcome = introspection::introspect(&state.token_service, request, &mut summary).await;
    answer_without_grant(
        outcome
            .map(|body| Json(body).into_response())
            .map_err(ApiError::from),
        summary,
    )
}
