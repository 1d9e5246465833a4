//! `POST /register` (RFC 7591) and `GET`, `PUT`, `DELETE /register/{client_id}` (RFC 7592):
//! extract, call `oauth::registration`, render (routed only when `[registration] mode` is not
//! `off`). Every answer is `no-store`: it may carry a client secret or a registration access
//! token.

use axum::extract::{Extension, Path, State};
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
use crate::oauth::wire::ClientInformationResponse;

fn origin_of(ip: Option<Extension<ClientIp>>, id: Option<Extension<RequestId>>) -> Origin {
    Origin {
        request_id: id.map(|Extension(RequestId(id))| id),
        ip: ip.map(|Extension(ClientIp(ip))| ip),
    }
}

fn answer(
    outcome: Result<(StatusCode, Option<ClientInformationResponse>), ApiError>,
    client_id: Option<String>,
) -> Response {
    let mut response = match outcome {
        Ok((status, Some(body))) => (status, Json(body)).into_response(),
        Ok((status, None)) => status.into_response(),
        Err(err) => return err.into_response(),
    };
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    RequestFacts {
        grant_type: GrantLabel::None,
        client_id,
    }
    .attach(response)
}

pub async fn register(
    State(state): State<AppState>,
    ip: Option<Extension<ClientIp>>,
    id: Option<Extension<RequestId>>,
    request: RegistrationRequest,
) -> Response {
    let origin = origin_of(ip, id);
    let outcome = state
        .registration
        .register(request.authorization.as_deref(), &request.body, &origin)
        .await
        .map(|information| (StatusCode::CREATED, Some(information)))
        .map_err(ApiError::from);
    let client_id = outcome
        .as_ref()
        .ok()
        .and_then(|(_, body)| body.as_ref().map(|body| body.client_id.clone()));
    answer(outcome, client_id)
}

pub async fn read(
    State(state): State<AppState>,
    Path(client_id): Path<String>,
    request: RegistrationRequest,
) -> Response {
    let outcome = state
        .registration
        .read(&client_id, request.authorization.as_deref())
        .await
        .map(|information| (StatusCode::OK, Some(information)))
        .map_err(ApiError::from);
    let authenticated = outcome.is_ok().then_some(client_id);
    answer(outcome, authenticated)
}

pub async fn update(
    State(state): State<AppState>,
    Path(client_id): Path<String>,
    ip: Option<Extension<ClientIp>>,
    id: Option<Extension<RequestId>>,
    request: RegistrationRequest,
) -> Response {
    let origin = origin_of(ip, id);
    let outcome = state
        .registration
        .update(
            &client_id,
            request.authorization.as_deref(),
            &request.body,
            &origin,
        )
        .await
        .map(|information| (StatusCode::OK, Some(information)))
        .map_err(ApiError::from);
    let authenticated = outcome.is_ok().then_some(client_id);
    answer(outcome, authenticated)
}

pub async fn delete(
    State(state): State<AppState>,
    Path(client_id): Path<String>,
    ip: Option<Extension<ClientIp>>,
    id: Option<Extension<RequestId>>,
    request: RegistrationRequest,
) -> Response {
    let origin = origin_of(ip, id);
    // RFC 7592 §2.3: 204 No Content.
    let outcome = state
        .registration
        .delete(&client_id, request.authorization.as_deref(), &origin)
        .await
        .map(|()| (StatusCode::NO_CONTENT, None))
        .map_err(ApiError::from);
    let authenticated = outcome.is_ok().then_some(client_id);
    answer(outcome, authenticated)
}
