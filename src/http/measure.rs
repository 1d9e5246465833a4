//! `tokengate_token_requests_total` and `tokengate_request_duration_seconds`, recorded in one
//! place: a layer around `/token`, `/revoke`, `/introspect` and the unknown-path fallback, once
//! the answer is known. The outcome comes from the answer itself ([`ApiError`] leaves its
//! [`Outcome`] in the response's extensions; any success is `ok`), the grant type and client
//! from [`RequestFacts`] the handler leaves there. A request whose client disconnects before
//! the answer is not counted (it got none). Wrong methods (405) are not counted either.
//!
//! [`ApiError`]: super::error::ApiError

use std::time::Instant;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse as _, Response};

use super::error::ApiError;

use crate::metrics::{Endpoint, GrantLabel, Outcome, TokenEndpointMetrics};
use crate::oauth::token::ExchangeSummary;
use crate::store::model::GrantType;

/// What a handler learnt about its request, for the metrics (in the response's extensions).
#[derive(Debug, Clone)]
pub struct RequestFacts {
    pub grant_type: GrantLabel,
    /// The client, once authenticated (`None` before or without it).
    pub client_id: Option<String>,
}

impl RequestFacts {
    /// `response` with these facts attached, for the measuring layer to read.
    pub fn attach(self, mut response: Response) -> Response {
        response.extensions_mut().insert(self);
        response
    }
}

/// The answer of `/revoke` and `/introspect`: `ok` uncacheable (`Cache-Control: no-store`), an
/// error rendered as usual, and no grant type to count under.
pub fn answer_without_grant(
    outcome: Result<Response, ApiError>,
    summary: ExchangeSummary,
) -> Response {
    let response = match outcome {
        Ok(mut response) => {
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(err) => err.into_response(),
    };
    RequestFacts {
        grant_type: GrantLabel::None,
        client_id: summary.authenticated_client(),
    }
    .attach(response)
}

/// The `grant_type` label of a `/token` request's `grant_type` parameter: a known grant, else
/// `other` (also when it is missing), so that labels stay bounded.
pub fn grant_label(grant_type: Option<&str>) -> GrantLabel {
    match grant_type.and_then(GrantType::parse) {
        Some(GrantType::Password) => GrantLabel::Password,
        Some(GrantType::RefreshToken) => GrantLabel::RefreshToken,
        Some(GrantType::ClientCredentials) => GrantLabel::ClientCredentials,
        Some(GrantType::AuthorizationCode) => GrantLabel::AuthorizationCode,
        None => GrantLabel::Other,
    }
}

/// The state of one measuring layer: which endpoint it counts.
#[derive(Clone)]
pub struct Measured {
    metrics: TokenEndpointMetrics,
    endpoint: Endpoint,
}

impl Measured {
    pub fn new(metrics: TokenEndpointMetrics, endpoint: Endpoint) -> Self {
        Self { metrics, endpoint }
    }
}

pub async fn measure(State(measured): State<Measured>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    let extensions = response.extensions();
    let outcome = extensions
        .get::<Outcome>()
        .copied()
        .unwrap_or_else(|| outcome_of_status(response.status()));
    let facts = extensions.get::<RequestFacts>();
    let grant_type = facts.map_or(
        match measured.endpoint {
            Endpoint::Token => GrantLabel::Other,
            Endpoint::Revoke
            | Endpoint::Introspect
            | Endpoint::Authorize
            | Endpoint::Logout
            | Endpoint::Register
            | Endpoint::RegisterWso2
            | Endpoint::Portal
            | Endpoint::Other => GrantLabel::None,
        },
        |facts| facts.grant_type,
    );
    measured.metrics.record(
        measured.endpoint,
        grant_type,
        outcome,
        facts.and_then(|facts| facts.client_id.as_deref()),
        started.elapsed(),
    );
    response
}

/// For an answer that did not say its outcome (not one of ours: every failure of ours is an
/// `ApiError`, which does).
fn outcome_of_status(status: StatusCode) -> Outcome {
    match status {
        // The login pages' redirects: a code, or an error the page counted itself.
        _ if status.is_success() || status.is_redirection() => Outcome::Ok,
        StatusCode::UNAUTHORIZED => Outcome::InvalidClient,
        StatusCode::FORBIDDEN => Outcome::AccessDenied,
        StatusCode::NOT_FOUND => Outcome::NotFound,
        StatusCode::TOO_MANY_REQUESTS => Outcome::RateLimited,
        StatusCode::SERVICE_UNAVAILABLE => Outcome::Unavailable,
        _ if status.is_client_error() => Outcome::InvalidRequest,
        _ => Outcome::ServerError,
    }
}
