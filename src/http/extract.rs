//! Extractors whose rejections are [`ApiError`]s, so malformed input always gets RFC JSON and
//! never a framework's plain-text answer.

use axum::extract::{FromRequest, Request};
use axum::http::{header, HeaderMap};
use http_body_util::{BodyExt as _, LengthLimitError, Limited};

use super::error::ApiError;
use super::request_id::RequestId;
use super::{AppState, ClientIp};
use crate::oauth::params::{parse_authorization, parse_form, AuthorizationHeader};
use crate::oauth::{OAuthError, TokenRequest};

/// A token-endpoint style request: form body plus optional `Authorization` header.
pub struct TokenForm(pub TokenRequest);

fn is_form_urlencoded(headers: &HeaderMap) -> bool {
    let Some(value) = headers.get(header::CONTENT_TYPE) else {
        return false;
    };
    let Ok(value) = value.to_str() else {
        return false;
    };
    let mut parts = value.split(';');
    let essence = parts.next().unwrap_or_default().trim();
    if !essence.eq_ignore_ascii_case("application/x-www-form-urlencoded") {
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
        let declared_length = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<u64>().ok());
        if declared_length.is_some_and(|length| length > limit as u64) {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        let authorization = authorization(headers)?;
        let client_ip = request
            .extensions()
            .get::<ClientIp>()
            .map(|ClientIp(ip)| *ip);
        let request_id = request
            .extensions()
            .get::<RequestId>()
            .map(|RequestId(id)| id.clone());
        let body = Limited::new(request.into_body(), limit);
        let collected = tokio::time::timeout(state.limits.request_timeout, body.collect())
            .await
            .map_err(|_| ApiError::BodyTimeout)?;
        let bytes = match collected {
            Ok(collected) => collected.to_bytes(),
            Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => {
                return Err(ApiError::PayloadTooLarge { limit })
            }
            Err(_) => return Err(OAuthError::invalid_request("the body could not be read").into()),
        };
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
