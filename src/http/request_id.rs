//! `X-Request-Id`: every request gets an id, the client's when it sent a sane one, else a
//! random UUID. It is put in the request's extensions (for the audit events), in a task-local
//! around the request (`telemetry::in_request`: every log line of the request carries
//! `request_id`; a tracing span per request cost ~5 % of a refresh grant's CPU), and in the
//! `X-Request-Id` header of every answer the router gives, errors, 404s, 429s and 503s
//! included.

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;
use std::sync::Arc;

pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The longest client-sent id taken as it is.
pub const MAX_REQUEST_ID_LEN: usize = 128;

/// The request's id, in its extensions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

/// A client's id is kept if it is 1-128 characters of letters, digits and `-_.:+/=@`
/// (UUIDs, ULIDs, base64, `host:counter`): nothing a log or a JSON consumer must escape.
pub fn is_sane(id: &[u8]) -> bool {
    (1..=MAX_REQUEST_ID_LEN).contains(&id.len())
        && id
            .iter()
            .all(|byte| byte.is_ascii_alphanumeric() || b"-_.:+/=@".contains(byte))
}

/// A random (version 4) UUID: unique without a clock.
pub fn generate() -> String {
    let bytes: [u8; 16] = rand::random();
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// The layer (outermost on the router).
pub async fn request_id(mut request: Request, next: Next) -> Response {
    let sent = request
        .headers()
        .get(&X_REQUEST_ID)
        .filter(|value| is_sane(value.as_bytes()))
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned);
    let id = sent.unwrap_or_else(generate);
    let header = HeaderValue::from_str(&id).ok();
    let logged: Arc<str> = Arc::from(id.as_str());
    request.extensions_mut().insert(RequestId(id));
    let mut response = crate::telemetry::in_request(logged, next.run(request)).await;
    if let Some(header) = header {
        response.headers_mut().insert(X_REQUEST_ID.clone(), header);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_id_shapes_are_sane() {
        for id in [
            "0193a4f2-7c1e-7d3a-9b2e-5f6a7b8c9d0e",
            "01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "abc+/=",
            "lb-1:42",
            "a",
        ] {
            assert!(is_sane(id.as_bytes()), "{id}");
        }
    }

    #[test]
    fn empty_long_and_unusual_ids_are_not() {
        let long = "a".repeat(MAX_REQUEST_ID_LEN + 1);
        for id in [
            "",
            long.as_str(),
            "has space",
            "quote\"",
            "new\nline",
            "tab\t",
            "é",
            "{json}",
            "semi;colon",
        ] {
            assert!(!is_sane(id.as_bytes()), "{id:?}");
        }
        assert!(is_sane("a".repeat(MAX_REQUEST_ID_LEN).as_bytes()));
    }

    #[test]
    fn generated_ids_are_sane_and_differ() {
        let (a, b) = (generate(), generate());
        assert!(is_sane(a.as_bytes()) && a.len() == 36, "{a}");
        assert_ne!(a, b);
    }
}
