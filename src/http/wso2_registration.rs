//! `POST /client-registration/v0.17/register`: WSO2 API Manager's registration for the
//! product's scripts (`oauth::wso2_registration`), routed only with `[registration]
//! wso2_compat = true`. The answer carries a client secret: `no-store`.

use axum::extract::{Extension, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};
use axum::Json;

use super::error::ApiError;
use super::extract::RegistrationRequest;
use super::measure::RequestFacts;
use super::request_id::RequestId;
use super::{AppState, ClientIp};
use crate::audit::Origin;
use crate::metrics::GrantLabel;
use crate::oauth::{wso2_registration, OAuthError};

pub async fn register(
    State(state): State<AppState>,
    ip: Option<Extension<ClientIp>>,
    id: Option<Extension<RequestId>>,
    request: RegistrationRequest,
) -> Response {
    let origin = Origin {
        request_id: id.map(|Extension(RequestId(id))| id),
        ip: ip.map(|Extension(ClientIp(ip))| ip),
    };
    // A password check anyone can ask for: the login page's share of the hashing pool, held
    // until it is answered.
    let Ok(_check_slot) = state.login_checks.clone().try_acquire_owned() else {
        return ApiError::from(OAuthError::new(
            crate::oauth::ErrorCode::TemporarilyUnavailable,
            "too many password checks at once; retry shortly",
        ))
        .into_response();
    };
    let outcome = wso2_registration::register(
        &state.token_service,
        &state.registration,
        request.authorization.as_deref(),
        &request.body,
        &origin,
    )
    .await;
    match outcome {
        // The product answers 200 (not RFC 7591's 201).
        Ok(body) => {
            let client_id = body.client_id.clone();
            let mut response = (StatusCode::OK, Json(body)).into_response();
            let headers = response.headers_mut();
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            RequestFacts {
                grant_type: GrantLabel::None,
                client_id: Some(client_id),
            }
            .attach(response)
        }
        Err(err) => ApiError::from(err).into_response(),
    }
}
