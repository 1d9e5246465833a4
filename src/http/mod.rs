//! The HTTP layer (axum): extract, call `oauth::`, render. Routes are registered here only.

pub mod error;
pub mod extract;
pub mod health;
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
        .route("/health", get(health::health).fallback(only_get))
        .fallback(not_found)
        .with_state(state)
}
