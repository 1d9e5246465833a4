//! `OAuthError`: an RFC 6749 §5.2 error code, a description safe to show the client, and a
//! private cause that goes to the log and never into a response.

use std::borrow::Cow;
use std::fmt;

/// RFC 6749 §5.2 error codes, plus the two the token endpoint needs for its own failures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    InvalidRequest,
    InvalidClient,
    InvalidGrant,
    UnauthorizedClient,
    UnsupportedGrantType,
    InvalidScope,
    /// RFC 6749 §4.1.2.1; an authenticated client asked for something it may not do (403).
    AccessDenied,
    /// RFC 6749 §4.1.2.1; used for internal failures, whose cause is only logged.
    ServerError,
    /// RFC 6749 §4.1.2.1; overload or store outage, answered with 503 and `Retry-After`.
    TemporarilyUnavailable,
    /// RFC 7591 §3.2.2: a redirect URI is not one the server accepts.
    InvalidRedirectUri,
    /// RFC 7591 §3.2.2: other client metadata is invalid or not allowed.
    InvalidClientMetadata,
    /// RFC 6750 §3.1: a bearer token (initial or registration access token) that is missing,
    /// unknown, expired or not this client's: 401 with `WWW-Authenticate: Bearer`.
    InvalidToken,
    /// A rate limit was hit: 429 and `Retry-After`. Our own code: `slow_down` (RFC 8628 §3.5)
    /// tells a device-flow client to poll less often, which is not what this means.
    RateLimited,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::AccessDenied => "access_denied",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::InvalidRedirectUri => "invalid_redirect_uri",
            Self::InvalidClientMetadata => "invalid_client_metadata",
            Self::InvalidToken => "invalid_token",
            Self::RateLimited => "rate_limited",
        }
    }
}

/// A failed protocol step.
#[derive(Debug, thiserror::Error)]
pub struct OAuthError {
    pub code: ErrorCode,
    pub description: Cow<'static, str>,
    /// Seconds for `Retry-After` on 429/503; `None` means the default.
    pub retry_after_secs: Option<u64>,
    #[source]
    pub source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl fmt::Display for OAuthError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.description)
    }
}

impl OAuthError {
    pub fn new(code: ErrorCode, description: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            description: description.into(),
            retry_after_secs: None,
            source: None,
        }
    }

    pub fn invalid_request(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidRequest, description)
    }

    pub fn invalid_client() -> Self {
        Self::new(ErrorCode::InvalidClient, "client authentication failed")
    }

    pub fn invalid_grant(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidGrant, description)
    }

    pub fn invalid_scope(description: impl Into<Cow<'static, str>>) -> Self {
        Self::new(ErrorCode::InvalidScope, description)
    }

    pub fn rate_limited(retry_after_secs: u64) -> Self {
        Self {
            retry_after_secs: Some(retry_after_secs),
            ..Self::new(ErrorCode::RateLimited, "too many requests; retry later")
        }
    }

    pub fn server_error(source: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self {
            source: Some(Box::new(source)),
            ..Self::new(ErrorCode::ServerError, "internal error")
        }
    }

    pub fn unavailable(
        description: impl Into<Cow<'static, str>>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            source: Some(Box::new(source)),
            ..Self::new(ErrorCode::TemporarilyUnavailable, description)
        }
    }
}

impl From<crate::store::StoreError> for OAuthError {
    fn from(err: crate::store::StoreError) -> Self {
        match err {
            crate::store::StoreError::Unavailable(_) => {
                Self::unavailable("the token store is unavailable; retry later", err)
            }
            other => Self::server_error(other),
        }
    }
}

impl From<crate::crypto::password::HashError> for OAuthError {
    fn from(err: crate::crypto::password::HashError) -> Self {
        use crate::crypto::password::HashError;
        match err {
            HashError::Overloaded | HashError::WorkersGone => {
                Self::unavailable("too many requests are waiting; retry later", err)
            }
            other => Self::server_error(other),
        }
    }
}
