//! The HTTP layer (axum): extract, call `oauth::`, render. Routes are registered here only.

pub mod error;
pub mod extract;
pub mod health;
pub mod introspect;
pub mod metadata;
pub mod revoke;
pub mod token;

use std::sync::Arc;
use std::time::Duration;

use axum::routing::{get, post};
use axum::Router;

use crate::oauth::TokenService;
use error::ApiError;

/// Request limits the extractors enforce.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
}

/// Shared by every handler.
#[derive(Clone)]
pub struct AppState {
    pub token_service: Arc<TokenService>,
    pub limits: HttpLimits,
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn only_post() -> ApiError {
    ApiError::MethodNotAllowed { allow: "POST" }
}

async fn only_get() -> ApiError {
    ApiError::MethodNotAllowed { allow: "GET, HEAD" }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/token", post(token::token).fallback(only_post))
        .route("/revoke", post(revoke::revoke).fallback(only_post))
        .route(
            "/introspect",
            post(introspect::introspect).fallback(only_post),
        )
        .route(
            "/.well-known/oauth-authorization-server",
            get(metadata::authorization_server).fallback(only_get),
        )
        .route("/jwks", get(metadata::jwks).fallback(only_get))
        .route("/health", get(health::health).fallback(only_get))
        .fallback(not_found)
        .with_state(state)
}
