//! `POST /introspect` (RFC 7662).

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse as _, Response};
use axum::Json;

use super::error::ApiError;
use super::extract::TokenForm;
use super::measure::RequestFacts;
use super::AppState;
use crate::metrics::GrantLabel;
use crate::oauth::introspection;
use crate::oauth::token::ExchangeSummary;

pub async fn introspect(State(state): State<AppState>, TokenForm(request): TokenForm) -> Response {
    let mut summary = ExchangeSummary::default();
    let outcome = introspection::introspect(&state.token_service, request, &mut summary).await;
    let mut response = match outcome {
        Ok(body) => {
            let mut response = Json(body).into_response();
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(err) => ApiError::from(err).into_response(),
    };
    response.extensions_mut().insert(RequestFacts {
        grant_type: GrantLabel::None,
        client_id: summary.authenticated_client(),
    });
    response
}
