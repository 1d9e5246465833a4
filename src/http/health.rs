//! `GET /health`: 200 once the server is ready and its token store answers; 503 otherwise.

use axum::extract::State;
use axum::Json;
use serde_json::{json, Value};

use super::error::ApiError;
use super::AppState;

pub async fn health(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    state
        .token_service
        .tokens
        .ping()
        .await
        .map_err(|err| ApiError::NotReady(err.to_string()))?;
    Ok(Json(json!({ "status": "ok", "store": "ok" })))
}
