//! `GET /authorize`, `POST /authorize` (the login form) and `GET /logout`: the browser side of
//! the authorization code flow. The decisions are `oauth::authorize`'s; this file renders them
//! as HTML (askama templates in `templates/`, escaped by default, no JavaScript) or as
//! redirects. These answers are HTML for people, not RFC 6749 JSON, so they are built here
//! rather than by `ApiError`.
//!
//! Every answer carries `Content-Security-Policy`, `X-Frame-Options: DENY` (no clickjacking of
//! the form), `Cache-Control: no-store` and `Referrer-Policy: no-referrer` (the code and the
//! state must not leak through a `Referer`).

use askama::Template;
use axum::extract::{Extension, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use rand::rngs::OsRng;
use rand::RngCore as _;
use secrecy::{ExposeSecret as _, SecretString};
use subtle::ConstantTimeEq as _;

use super::error::ApiError;
use super::extract::TokenForm;
use super::request_id::RequestId;
use super::{AppState, ClientIp};
use crate::audit::{Event, Origin};
use crate::oauth::authorize::{self, AuthorizationRequest, AuthorizeError, Prompt};
use crate::oauth::grants::password::check_login;
use crate::oauth::params::parse_form;
use crate::oauth::ErrorCode;

/// The login session (`__Host-`: Secure, path `/`, no `Domain`, so no other host can set it).
const SESSION_COOKIE: &str = "__Host-tokengate-session";
/// The CSRF value the login form must repeat (double submit; `__Host-` keeps a sibling host
/// from planting one).
const CSRF_COOKIE: &str = "__Host-tokengate-csrf";

/// No scripts, no plugins, no framing, no `<base>`; the page's own inline style only. No
/// `form-action`: browsers apply it to the redirect that follows the form, which goes to the
/// app's redirect URI.
const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'; \
                   base-uri 'none'";

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    client_name: &'a str,
    fields: Vec<(&'static str, String)>,
    csrf_token: &'a str,
    username: &'a str,
    error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    title: &'a str,
    message: &'a str,
    is_error: bool,
}

fn secure_headers(response: &mut Response) {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
}

fn html(status: StatusCode, rendered: Result<String, askama::Error>) -> Response {
    let mut response = match rendered {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(err) => {
            tracing::error!(error = %err, "a login page did not render");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response()
        }
    };
    secure_headers(&mut response);
    response
}

fn message(status: StatusCode, title: &str, text: &str) -> Response {
    let is_error = !status.is_success();
    html(
        status,
        MessagePage {
            title,
            message: text,
            is_error,
        }
        .render(),
    )
}

/// A 303 to `url` (the client's redirect URI with the answer in its query).
fn redirect(url: &str) -> Response {
    let Ok(location) = HeaderValue::from_bytes(url.as_bytes()) else {
        return message(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Something went wrong",
            "The application's address cannot be used.",
        );
    };
    let mut response = StatusCode::SEE_OTHER.into_response();
    response.headers_mut().insert(header::LOCATION, location);
    secure_headers(&mut response);
    response
}

fn refused(state: &AppState, err: AuthorizeError) -> Response {
    match err {
        AuthorizeError::NotRedirected(why) => message(
            StatusCode::BAD_REQUEST,
            "This sign-in link is not valid",
            why,
        ),
        AuthorizeError::Redirected(answer) => redirect(&answer.url(&state.token_service.issuer)),
    }
}

/// The value of cookie `name` in the request, if sent once.
fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

fn set_cookie(response: &mut Response, name: &str, value: &str, max_age: Option<i64>) {
    let mut text = format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax");
    if let Some(secs) = max_age {
        text.push_str(&format!("; Max-Age={secs}"));
    }
    if let Ok(value) = HeaderValue::from_str(&text) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

fn random_value() -> String {
    let mut bytes = [0u8; 32];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A CSRF cookie value we could have set: 43 base64url characters.
fn csrf_cookie(headers: &HeaderMap) -> Option<String> {
    cookie(headers, CSRF_COOKIE).filter(|value| {
        value.len() == 43
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// The login form for `request`, with a CSRF value (the browser's, or a new one set now).
fn login_form(
    headers: &HeaderMap,
    request: &AuthorizationRequest,
    status: StatusCode,
    username: &str,
    error: Option<&str>,
) -> Response {
    let (csrf, is_new) = match csrf_cookie(headers) {
        Some(value) => (value, false),
        None => (random_value(), true),
    };
    let mut response = html(
        status,
        LoginPage {
            client_name: request.client.name.as_deref().unwrap_or(&request.client.id),
            fields: request.form_fields(),
            csrf_token: &csrf,
            username,
            error,
        }
        .render(),
    );
    if is_new {
        set_cookie(&mut response, CSRF_COOKIE, &csrf, None);
    }
    response
}

/// The user of the browser's live login session, if any (and still allowed to log in). A
/// store that cannot answer counts as no session: the form is shown.
async fn session_user(state: &AppState, headers: &HeaderMap) -> Option<String> {
    let id = SecretString::from(cookie(headers, SESSION_COOKIE)?);
    let username = match state.login_sessions.user(&id).await {
        Ok(found) => found?,
        Err(err) => {
            tracing::warn!(error = %err, "a login session could not be looked up");
            return None;
        }
    };
    match state.token_service.users.find_user(&username).await {
        Ok(Some(user)) if !user.disabled => Some(username),
        _ => None,
    }
}

/// Where a request came from, for its audit events.
fn origin_of(ip: Option<Extension<ClientIp>>, id: Option<Extension<RequestId>>) -> Origin {
    Origin {
        request_id: id.map(|Extension(RequestId(id))| id),
        ip: ip.map(|Extension(ClientIp(ip))| ip),
    }
}

/// Hands a code for `username` to the client; `login` says how the user was known (`form`,
/// `session`), for the audit trail.
async fn answer_with_code(
    state: &AppState,
    request: &AuthorizationRequest,
    username: &str,
    origin: &Origin,
    login: &'static str,
) -> Response {
    match authorize::issue_code(&state.token_service, request, username).await {
        Ok(url) => {
            state.token_service.audit().record(
                origin,
                Some(request.client.id.as_str()),
                Some(username),
                Event::AuthorizationCodeIssued {
                    scope: request.scope.as_string(),
                    login,
                },
            );
            redirect(&url)
        }
        Err(err) => {
            tracing::warn!(error = %err, "an authorization code could not be stored");
            message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Please try again",
                "The sign-in service is busy or unavailable; please try again in a moment.",
            )
        }
    }
}

/// RFC 6749 §4.1.1: the authorization request.
pub async fn authorize(
    State(state): State<AppState>,
    ip: Option<Extension<ClientIp>>,
    request_id: Option<Extension<RequestId>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let params = match parse_form(query.unwrap_or_default().as_bytes()) {
        Ok(params) => params,
        Err(_) => {
            return message(
                StatusCode::BAD_REQUEST,
                "This sign-in link is not valid",
                "The request is malformed (a parameter is repeated or not UTF-8).",
            )
        }
    };
    let request = match authorize::check(&state.token_service, &params).await {
        Ok(request) => request,
        Err(err) => return refused(&state, err),
    };
    let origin = origin_of(ip, request_id);
    let user = match request.prompt {
        Prompt::Login => None,
        Prompt::Default | Prompt::None => {
            // A session cookie costs a store read, and a valid one a code row and an audit
            // line: such requests take from the per-IP rate limit (showing the form does not).
            if cookie(&headers, SESSION_COOKIE).is_some() {
                if let Err(retry) = super::take_from_ip_limit(&state, &origin).await {
                    return too_many_requests(retry);
                }
            }
            session_user(&state, &headers).await
        }
    };
    match (user, request.prompt) {
        (Some(user), _) => answer_with_code(&state, &request, &user, &origin, "session").await,
        (None, Prompt::None) => refused(
            &state,
            request.error("login_required", "the user is not logged in"),
        ),
        (None, _) => login_form(&headers, &request, StatusCode::OK, "", None),
    }
}

/// The login form's answer: the same authorization request in hidden fields, the CSRF value,
/// and the credentials, checked as the password grant checks them (lockout, rate limit per
/// address, the argon2 pool, one answer whether or not the user exists).
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<TokenForm, ApiError>,
) -> Response {
    let TokenForm(posted) = match form {
        Ok(form) => form,
        Err(_) => {
            return message(
                StatusCode::BAD_REQUEST,
                "This sign-in form is not valid",
                "The form could not be read. Go back to the application and start again.",
            )
        }
    };
    let origin = posted.origin();
    if let Err(retry) = super::take_from_ip_limit(&state, &origin).await {
        return too_many_requests(retry);
    }
    let service = &state.token_service;
    let request = match authorize::check(service, &posted.form).await {
        Ok(request) => request,
        Err(err) => return refused(&state, err),
    };
    let username = posted.form.get("username").unwrap_or_default();
    let csrf_ok = match (csrf_cookie(&headers), posted.form.get("csrf_token")) {
        (Some(cookie), Some(field)) => bool::from(cookie.as_bytes().ct_eq(field.as_bytes())),
        _ => false,
    };
    if !csrf_ok {
        // The browser's own CSRF cookie is kept when it has one: a cross-site post (which
        // cannot know it) must not replace it and break the form the user has open.
        return login_form(
            &headers,
            &request,
            StatusCode::FORBIDDEN,
            username,
            Some("This form has expired. Please sign in again."),
        );
    }
    let (Some(password), false) = (posted.form.get("password"), username.is_empty()) else {
        return login_form(
            &headers,
            &request,
            StatusCode::BAD_REQUEST,
            username,
            Some("Enter your username and password."),
        );
    };
    let password = SecretString::from(password.to_owned());
    match check_login(service, &request.client.id, &origin, username, password).await {
        Ok(true) => {
            let mut response = answer_with_code(&state, &request, username, &origin, "form").await;
            if response.status() != StatusCode::SEE_OTHER {
                return response;
            }
            // A new sign-in replaces the browser's session (say after prompt=login, or as
            // another user): the old one must not stay valid beside it.
            if let Some(old) = cookie(&headers, SESSION_COOKIE) {
                if let Err(err) = state.login_sessions.end(&SecretString::from(old)).await {
                    tracing::warn!(error = %err, "the replaced login session could not be ended");
                }
            }
            // The code is out; a session that cannot be stored only means the form next time.
            match state.login_sessions.start(username).await {
                Ok(session) => set_cookie(
                    &mut response,
                    SESSION_COOKIE,
                    session.expose_secret(),
                    Some(state.login_sessions.lifetime_secs()),
                ),
                Err(err) => tracing::warn!(error = %err, "a login session could not be stored"),
            }
            response
        }
        Ok(false) => login_form(
            &headers,
            &request,
            StatusCode::OK,
            username,
            Some("Invalid username or password."),
        ),
        Err(err) if err.code == ErrorCode::TemporarilyUnavailable => message(
            StatusCode::SERVICE_UNAVAILABLE,
            "Please try again",
            "The sign-in service is busy; please try again in a moment.",
        ),
        Err(err) => {
            tracing::warn!(error = %err, "a login could not be checked");
            message(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Your sign-in could not be checked. Please try again.",
            )
        }
    }
}

/// The per-IP rate limit's answer to a person: a page, with `Retry-After`.
fn too_many_requests(retry_after_secs: u64) -> Response {
    let mut response = message(
        StatusCode::TOO_MANY_REQUESTS,
        "Too many attempts",
        "Too many sign-in attempts from your network. Please wait a moment and try again.",
    );
    if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// Ends the browser's login session: the next authorization asks for the password again.
pub async fn logout(
    State(state): State<AppState>,
    ip: Option<Extension<ClientIp>>,
    request_id: Option<Extension<RequestId>>,
    headers: HeaderMap,
) -> Response {
    if let Some(id) = cookie(&headers, SESSION_COOKIE) {
        // Each costs a store write: taken from the per-IP rate limit.
        let origin = origin_of(ip, request_id);
        if let Err(retry) = super::take_from_ip_limit(&state, &origin).await {
            return too_many_requests(retry);
        }
        if let Err(err) = state.login_sessions.end(&SecretString::from(id)).await {
            tracing::warn!(error = %err, "a login session could not be ended");
            return message(
                StatusCode::SERVICE_UNAVAILABLE,
                "Please try again",
                "You could not be signed out just now; please try again in a moment.",
            );
        }
    }
    let mut response = message(
        StatusCode::OK,
        "Signed out",
        "You are signed out. You can close this window.",
    );
    set_cookie(&mut response, SESSION_COOKIE, "", Some(0));
    response
}
