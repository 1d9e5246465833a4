//! `POST /token` (RFC 6749 §3.2).

use std::time::Instant;

use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse as _, Response};
use axum::Json;

use super::error::ApiError;
use super::extract::TokenForm;
use super::measure::{grant_label, RequestFacts};
use super::AppState;
use crate::oauth::token::ExchangeSummary;

pub async fn token(
    State(state): State<AppState>,
    request: Result<TokenForm, ApiError>,
) -> Response {
    let started = Instant::now();
    let mut summary = ExchangeSummary::default();
    let outcome = match request {
        Ok(TokenForm(request)) => state
            .token_service
            .exchange(request, &mut summary)
            .await
            .map_err(ApiError::from),
        Err(rejection) => Err(rejection),
    };
    let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
    // The claimed id, before authentication: anything a client sent.
    let client_id = crate::telemetry::cut(summary.client_id.as_deref().unwrap_or("-"));
    let grant_type = crate::telemetry::cut(summary.grant_type.as_deref().unwrap_or("-"));
    match &outcome {
        Ok(_) => tracing::info!(
            client_id = ?client_id,
            grant_type = ?grant_type,
            outcome = "issued",
            latency_ms,
            "token request"
        ),
        Err(err) => tracing::info!(
            client_id = ?client_id,
            grant_type = ?grant_type,
            outcome = err.code(),
            latency_ms,
            "token request"
        ),
    }
    let facts = RequestFacts {
        grant_type: grant_label(summary.grant_type.as_deref()),
        client_id: summary.authenticated_client(),
    };
    let response = match outcome {
        Ok(body) => {
            let mut response = Json(body).into_response();
            // RFC 6749 §5.1: responses carrying tokens must not be cached.
            let headers = response.headers_mut();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            response
        }
        Err(err) => err.into_response(),
    };
    facts.attach(response)
}
