//! `POST /revoke` (RFC 7009).

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};

use super::error::ApiError;
use super::extract::TokenForm;
use super::measure::RequestFacts;
use super::AppState;
use crate::metrics::GrantLabel;
use crate::oauth::revocation;
use crate::oauth::token::ExchangeSummary;

pub async fn revoke(State(state): State<AppState>, TokenForm(request): TokenForm) -> Response {
    let mut summary = ExchangeSummary::default();
    let outcome = revocation::revoke(&state.token_service, request, &mut summary).await;
    let mut response = match outcome {
        Ok(()) => {
            // RFC 7009 §2.2: 200, and the body (empty here) is ignored by the client.
            let mut response = StatusCode::OK.into_response();
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
