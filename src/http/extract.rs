//! Extractors whose rejections are [`ApiError`]s, so malformed input always gets RFC JSON and
//! never a framework's plain-text answer.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap, Method};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};

use super::error::ApiError;
use super::request_id::RequestId;
use super::{AppState, ClientIp};
use crate::oauth::params::{parse_authorization, parse_form, AuthorizationHeader};
use crate::oauth::{OAuthError, TokenRequest};

/// A token-endpoint style request: form body plus optional `Authorization` header.
pub struct TokenForm(pub TokenRequest);

fn is_form_urlencoded(headers: &HeaderMap) -> bool {
    has_content_type(headers, "application/x-www-form-urlencoded")
}

/// Whether the body is `essence`, in UTF-8 if a charset is named.
fn has_content_type(headers: &HeaderMap, essence: &str) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let mut parts = value.split(';');
    if !parts
        .next()
        .unwrap_or_default()
        .trim()
        .eq_ignore_ascii_case(essence)
    {
        return false;
    }
    // A charset other than UTF-8 would make our decoding wrong; refuse rather than guess.
    parts.all(|param| match param.split_once('=') {
        Some((name, value)) if name.trim().eq_ignore_ascii_case("charset") => {
            let value = value.trim().trim_matches('"');
            value.eq_ignore_ascii_case("utf-8") || value.eq_ignore_ascii_case("utf8")
        }
        _ => true,
    })
}

fn authorization(headers: &HeaderMap) -> Result<Option<AuthorizationHeader>, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(OAuthError::invalid_request("more than one Authorization header").into());
    }
    parse_authorization(value.as_bytes())
        .map(Some)
        .map_err(|err| OAuthError::invalid_request(err.to_string()).into())
}

impl FromRequest<AppState> for TokenForm {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let limit = state.limits.max_body_bytes;
        let headers = request.headers();
        if !is_form_urlencoded(headers) {
            return Err(OAuthError::invalid_request(
                "the body must be application/x-www-form-urlencoded",
            )
            .into());
        }
        refuse_declared_oversize(headers, limit)?;
        let authorization = authorization(headers)?;
        let client_ip = request
            .extensions()
            .get::<ClientIp>()
            .map(|ClientIp(ip)| *ip);
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(|RequestId(id)| id.clone());
        let bytes = read_body(request, state).await?;
        let form =
            parse_form(&bytes).map_err(|err| OAuthError::invalid_request(err.to_string()))?;
        Ok(Self(TokenRequest {
            authorization,
            form,
            client_ip,
            request_id,
        }))
    }
}

/// A body announced larger than `limit` is refused before it is read.
fn refuse_declared_oversize(headers: &HeaderMap, limit: usize) -> Result<(), ApiError> {
    let declared_length = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.parse::<u64>().ok());
    if declared_length.is_some_and(|length| length > limit as u64) {
        return Err(ApiError::PayloadTooLarge { limit });
    }
    Ok(())
}

/// Reads at most `max_body_bytes` within `request_timeout`.
async fn read_body(request: Request, state: &AppState) -> Result<Bytes, ApiError> {
    let limit = state.limits.max_body_bytes;
    let body = Limited::new(request.into_body(), limit);
    let collected = tokio::time::timeout(state.limits.request_timeout, body.collect())
        .await
        .map_err(|_| ApiError::BodyTimeout)?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
            Err(ApiError::PayloadTooLarge { limit })
        }
        Err(_) => Err(OAuthError::invalid_request("the body could not be read").into()),
    }
}

/// The `Authorization` header value, raw; more than one is `invalid_request`.
fn raw_authorization(headers: &HeaderMap) -> Result<Option<Vec<u8>>, ApiError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let first = values.next().map(|value| value.as_bytes().to_vec());
    if values.next().is_some() {
        return Err(OAuthError::invalid_request("more than one Authorization header").into());
    }
    Ok(first)
}

/// A request of the registration endpoints (RFC 7591/7592): the `Authorization` header as
/// sent (a bearer token, parsed by `oauth::registration`) and, for POST and PUT, a JSON body
/// read within the same limits as the form endpoints.
pub struct RegistrationRequest {
    pub authorization: Option<Vec<u8>>,
    pub body: Bytes,
}

impl FromRequest<AppState> for RegistrationRequest {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let headers = request.headers();
        let authorization = raw_authorization(headers)?;
        let with_body = matches!(*request.method(), Method::POST | Method::PUT);
        if !with_body {
            return Ok(Self {
                authorization,
                body: Bytes::new(),
            });
        }
        // RFC 7591 §3.1: the metadata is sent as JSON.
        if !has_content_type(headers, "application/json") {
            return Err(OAuthError::invalid_request("the body must be application/json").into());
        }
        refuse_declared_oversize(headers, state.limits.max_body_bytes)?;
        let body = read_body(request, state).await?;
        Ok(Self {
            authorization,
            body,
        })
    }
}
