//! `ApiError`: the one place where failures become HTTP responses.
//!
//! Every error body is RFC 6749 §5.2 JSON. Internal causes are logged here and never sent.
//! Every error response carries `Cache-Control: no-store` and `Pragma: no-cache` (RFC 6749
//! §5.1 asks it of token responses; marking every error is simpler than deciding per path).

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;

use crate::metrics::Outcome;
use crate::oauth::wire::ErrorBody;
use crate::oauth::{ErrorCode, OAuthError};

/// Seconds a client is told to wait after a 503.
const RETRY_AFTER_SECS: &str = "1";
/// Realm of the `WWW-Authenticate: Basic` challenge on 401.
pub const REALM: &str = "tokengate";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    OAuth(#[from] OAuthError),
    #[error("no such endpoint")]
    NotFound,
    #[error("method not allowed")]
    MethodNotAllowed { allow: &'static str },
    #[error("request body larger than {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("the request body was not received in time")]
    BodyTimeout,
    #[error("not ready: {0}")]
    NotReady(String),
    /// The shutdown drain: unready on purpose, so load balancers take the node out.
    #[error("shutting down")]
    Draining,
}

impl ApiError {
    fn status(&self) -> StatusCode {
        match self {
            Self::OAuth(err) => match err.code {
                ErrorCode::InvalidClient | ErrorCode::InvalidToken => StatusCode::UNAUTHORIZED,
                ErrorCode::AccessDenied => StatusCode::FORBIDDEN,
                ErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
                ErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
                ErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::BAD_REQUEST,
            },
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::NotReady(_) | Self::Draining => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// The RFC 6749 error code this failure is reported as.
    pub fn code(&self) -> &'static str {
        match self {
            Self::OAuth(err) => err.code.as_str(),
            Self::NotFound => "not_found",
            Self::MethodNotAllowed { .. } | Self::PayloadTooLarge { .. } | Self::BodyTimeout => {
                "invalid_request"
            }
            Self::NotReady(_) | Self::Draining => "temporarily_unavailable",
        }
    }

    /// The `outcome` label of the request metrics: the code, with the server's own refusals
    /// told apart (a saturated hashing pool or verification gate is `overloaded`, a store that
    /// does not answer `unavailable`).
    pub fn outcome(&self) -> Outcome {
        match self {
            Self::OAuth(err) => match err.code {
                ErrorCode::InvalidRequest => Outcome::InvalidRequest,
                ErrorCode::InvalidClient => Outcome::InvalidClient,
                ErrorCode::InvalidGrant => Outcome::InvalidGrant,
                ErrorCode::UnauthorizedClient => Outcome::UnauthorizedClient,
                ErrorCode::UnsupportedGrantType => Outcome::UnsupportedGrantType,
                ErrorCode::InvalidScope => Outcome::InvalidScope,
                ErrorCode::AccessDenied => Outcome::AccessDenied,
                ErrorCode::ServerError => Outcome::ServerError,
                ErrorCode::RateLimited => Outcome::RateLimited,
                ErrorCode::InvalidRedirectUri => Outcome::InvalidRedirectUri,
                ErrorCode::InvalidClientMetadata => Outcome::InvalidClientMetadata,
                ErrorCode::InvalidToken => Outcome::InvalidToken,
                ErrorCode::TemporarilyUnavailable => {
                    let store_down = err
                        .source
                        .as_ref()
                        .is_some_and(|source| source.is::<crate::store::StoreError>());
                    if store_down {
                        Outcome::Unavailable
                    } else {
                        Outcome::Overloaded
                    }
                }
            },
            Self::NotFound => Outcome::NotFound,
            Self::MethodNotAllowed { .. } | Self::PayloadTooLarge { .. } | Self::BodyTimeout => {
                Outcome::InvalidRequest
            }
            Self::NotReady(_) | Self::Draining => Outcome::Unavailable,
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.status();
        let description = match &self {
            Self::OAuth(err) => {
                if let Some(source) = &err.source {
                    if err.code == ErrorCode::ServerError {
                        tracing::error!(error = %source, "request failed");
                    } else {
                        tracing::warn!(error = %source, code = err.code.as_str(), "request refused");
                    }
                }
                err.description.to_string()
            }
            Self::NotReady(cause) => {
                tracing::warn!(cause = %cause, "not ready");
                "the server is not ready; retry later".to_owned()
            }
            // Every health check of the drain would otherwise log a warning.
            Self::Draining => {
                tracing::debug!("not ready: shutting down");
                "the server is shutting down".to_owned()
            }
            other => other.to_string(),
        };
        let body = ErrorBody {
            error: self.code(),
            error_description: &description,
        };
        let mut response = (status, Json(body)).into_response();
        // For the request metrics (`measure.rs`), which count every answer in one place.
        response.extensions_mut().insert(self.outcome());
        let headers = response.headers_mut();
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
        match &self {
            // RFC 6750 §3: a bearer token was missing or refused.
            Self::OAuth(err) if err.code == ErrorCode::InvalidToken => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"tokengate\", error=\"invalid_token\""),
                );
            }
            // RFC 9110 §15.5.2: a 401 always names the scheme to use; RFC 6749 §2.3.1: Basic.
            _ if status == StatusCode::UNAUTHORIZED => {
                headers.insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"tokengate\""),
                );
            }
            _ if status == StatusCode::SERVICE_UNAVAILABLE
                || status == StatusCode::TOO_MANY_REQUESTS =>
            {
                let seconds = match &self {
                    Self::OAuth(err) => err.retry_after_secs,
                    _ => None,
                };
                let value = seconds
                    .and_then(|s| HeaderValue::from_str(&s.to_string()).ok())
                    .unwrap_or(HeaderValue::from_static(RETRY_AFTER_SECS));
                headers.insert(header::RETRY_AFTER, value);
            }
            Self::MethodNotAllowed { allow } => {
                headers.insert(header::ALLOW, HeaderValue::from_static(allow));
            }
            _ => {}
        }
        response
    }
}
