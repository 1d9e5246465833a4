//! `GET /authorize`, `POST /authorize` (the login form), `POST /authorize/consent` (the consent
//! screen's answer), `GET /authorize/logo` and `GET /logout`: the browser side of the
//! authorization code flow. The decisions are `oauth::authorize`'s; this file renders them
//! as HTML (askama templates in `templates/`, escaped by default, no JavaScript) or as
//! redirects. These answers are HTML for people, not RFC 6749 JSON, so they are built here
//! rather than by `ApiError`.
//!
//! The pages share `pages.rs` (branding, headers, cookies, CSRF).

use askama::Template;
use axum::extract::{Extension, RawQuery, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};
use secrecy::SecretString;

use super::error::ApiError;
use super::extract::TokenForm;
use super::pages::{
    busy, check_page_login, cookie, counted_as, csrf_cookie, csrf_matches, end_session,
    form_without_csrf_cookie, html, message, origin_of, redirect, session_user, set_cookie,
    start_session, too_many_requests, unreadable_form, with_csrf_value, Brand, SessionNotEnded,
    StoreUnavailable, LOGO_CSP, SESSION_COOKIE,
};
use super::request_id::RequestId;
use super::{AppState, ClientIp};
use crate::audit::{Event, Origin};
use crate::metrics::Outcome;
use crate::oauth::authorize::{self, AuthorizationRequest, AuthorizeError, Prompt};
use crate::oauth::params::parse_form;
use crate::oauth::token::TokenRequest;

#[derive(Template)]
#[template(path = "login.html")]
pub(super) struct LoginPage<'a> {
    pub(super) brand: Brand<'a>,
    pub(super) client_name: &'a str,
    /// Where the form posts: `/authorize`, or `/portal/login`.
    pub(super) action: &'a str,
    pub(super) fields: Vec<(&'static str, String)>,
    pub(super) csrf_token: &'a str,
    pub(super) username: &'a str,
    pub(super) error: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "consent.html")]
struct ConsentPage<'a> {
    brand: Brand<'a>,
    client_name: &'a str,
    username: &'a str,
    /// Each requested scope: its description, and its name when the description is not it.
    scopes: Vec<(&'a str, Option<&'a str>)>,
    fields: Vec<(&'static str, String)>,
    csrf_token: &'a str,
    /// `/authorize` with this request and `prompt=login`: sign in as someone else.
    switch_user: String,
    error: Option<&'a str>,
}

fn refused(state: &AppState, err: AuthorizeError) -> Response {
    match err {
        AuthorizeError::NotRedirected(why) => counted_as(
            message(
                state,
                StatusCode::BAD_REQUEST,
                "This sign-in link is not valid",
                why,
            ),
            Outcome::InvalidRequest,
        ),
        AuthorizeError::Redirected(answer) => {
            let outcome = match answer.error {
                "invalid_scope" => Outcome::InvalidScope,
                "unauthorized_client" => Outcome::UnauthorizedClient,
                "access_denied" | "login_required" | "consent_required" => Outcome::AccessDenied,
                _ => Outcome::InvalidRequest,
            };
            counted_as(
                redirect(state, &answer.url(&state.token_service.issuer)),
                outcome,
            )
        }
    }
}

/// The login form for `request`, with a CSRF value (the browser's, or a new one set now).
fn login_form(
    state: &AppState,
    headers: &HeaderMap,
    request: &AuthorizationRequest,
    status: StatusCode,
    username: &str,
    error: Option<&str>,
) -> Response {
    with_csrf_value(headers, |csrf| {
        html(
            status,
            LoginPage {
                brand: state.login_pages.brand(),
                client_name: request.client.display_name(),
                action: "/authorize",
                fields: request.form_fields(),
                csrf_token: csrf,
                username,
                error,
            }
            .render(),
        )
    })
}

/// The consent screen: may `request`'s client have `username`'s account, with these scopes?
fn consent_form(
    state: &AppState,
    headers: &HeaderMap,
    request: &AuthorizationRequest,
    status: StatusCode,
    username: &str,
    error: Option<&str>,
) -> Response {
    let pages = &state.login_pages;
    let scopes = request
        .scope
        .tokens()
        .map(
            |scope| match pages.scope_descriptions.get(scope).map(String::as_str) {
                Some(description) => (description, Some(scope)),
                None => (scope, None),
            },
        )
        .collect();
    let mut fields = request.form_fields();
    fields.push(("consent_user", username.to_owned()));
    let mut switch = request.form_fields();
    switch.retain(|(name, _)| *name != "prompt");
    let switch: Vec<(&str, &str)> = switch
        .iter()
        .map(|(name, value)| (*name, value.as_str()))
        .chain([("prompt", "login")])
        .collect();
    let switch_user = authorize::redirect_url("/authorize", &switch);
    with_csrf_value(headers, |csrf| {
        html(
            status,
            ConsentPage {
                brand: pages.brand(),
                client_name: request.client.display_name(),
                username,
                scopes,
                fields,
                csrf_token: csrf,
                switch_user,
                error,
            }
            .render(),
        )
    })
}

/// Hands a code for `username` to the client; `login` says how the user was known (`form`,
/// `session`, `consent`), for the audit trail.
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
            redirect(state, &url)
        }
        Err(err) => {
            tracing::warn!(error = %err, "an authorization code could not be stored");
            busy(state)
        }
    }
}

/// The user is known: a code for the client, or first the consent screen when the client
/// needs the user's consent and does not have it (`prompt=none`: `consent_required`).
async fn continue_as(
    state: &AppState,
    headers: &HeaderMap,
    request: &AuthorizationRequest,
    username: &str,
    origin: &Origin,
    login: &'static str,
) -> Response {
    match authorize::needs_consent(&state.token_service, request, username).await {
        Ok(false) => answer_with_code(state, request, username, origin, login).await,
        Ok(true) if request.prompt == Prompt::None => refused(
            state,
            request.error(
                "consent_required",
                "the user has not allowed this application",
            ),
        ),
        Ok(true) => consent_form(state, headers, request, StatusCode::OK, username, None),
        Err(err) => {
            tracing::warn!(error = %err, "a consent could not be looked up");
            busy(state)
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
            return counted_as(
                message(
                    &state,
                    StatusCode::BAD_REQUEST,
                    "This sign-in link is not valid",
                    "The request is malformed (a parameter is repeated or not UTF-8).",
                ),
                Outcome::InvalidRequest,
            )
        }
    };
    let request = match authorize::check(&state.token_service, &params).await {
        Ok(request) => request,
        Err(err) => return refused(&state, err),
    };
    let origin = origin_of(ip, request_id);
    let user = if request.prompt.forces_login() {
        None
    } else {
        // A session cookie costs a store read, and a valid one a code row and an audit
        // line: such requests take from the per-IP rate limit (showing the form does not).
        if cookie(&headers, SESSION_COOKIE).is_some() {
            if let Err(retry) = super::take_from_ip_limit(&state, &origin).await {
                return too_many_requests(&state, retry);
            }
        }
        match session_user(&state, &headers).await {
            Ok(user) => user,
            // Not "logged out": the app is told to try again (prompt=none would otherwise get
            // login_required for every signed-in user during a store outage).
            Err(StoreUnavailable) => {
                return refused(
                    &state,
                    request.error(
                        "temporarily_unavailable",
                        "the sign-in service cannot reach its store; try again shortly",
                    ),
                )
            }
        }
    };
    match (user, request.prompt) {
        (Some(user), _) => continue_as(&state, &headers, &request, &user, &origin, "session").await,
        (None, Prompt::None) => refused(
            &state,
            request.error("login_required", "the user is not logged in"),
        ),
        (None, _) => login_form(&state, &headers, &request, StatusCode::OK, "", None),
    }
}

/// What the login and consent forms both start with: the form read, the per-IP rate limit
/// taken (each post can cost argon2 work or a store write), and the authorization request it
/// carries in hidden fields checked again. `Err` is the answer to send instead.
async fn read_posted_request(
    state: &AppState,
    form: Result<TokenForm, ApiError>,
) -> Result<(TokenRequest, Origin, AuthorizationRequest), Response> {
    let Ok(TokenForm(posted)) = form else {
        return Err(unreadable_form(state));
    };
    let origin = posted.origin();
    if let Err(retry) = super::take_from_ip_limit(state, &origin).await {
        return Err(too_many_requests(state, retry));
    }
    match authorize::check(&state.token_service, &posted.form).await {
        Ok(request) => Ok((posted, origin, request)),
        Err(err) => Err(refused(state, err)),
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
    let (posted, origin, request) = match read_posted_request(&state, form).await {
        Ok(read) => read,
        Err(answer) => return answer,
    };
    let username = posted.form.get("username").unwrap_or_default();
    if csrf_cookie(&headers).is_none() {
        return form_without_csrf_cookie(&state);
    }
    if !csrf_matches(&headers, &posted.form) {
        // The browser's own CSRF cookie is kept when it has one: a cross-site post (which
        // cannot know it) must not replace it and break the form the user has open.
        tracing::info!("a login form was refused: its CSRF value does not match the cookie");
        return counted_as(
            login_form(
                &state,
                &headers,
                &request,
                StatusCode::FORBIDDEN,
                username,
                Some("This form has expired. Please sign in again."),
            ),
            Outcome::AccessDenied,
        );
    }
    let (Some(password), false) = (posted.form.get("password"), username.is_empty()) else {
        return counted_as(
            login_form(
                &state,
                &headers,
                &request,
                StatusCode::BAD_REQUEST,
                username,
                Some("Enter your username and password."),
            ),
            Outcome::InvalidRequest,
        );
    };
    let password = SecretString::from(password.to_owned());
    match check_page_login(
        &state,
        &headers,
        &origin,
        &request.client.id,
        username,
        password,
        true,
    )
    .await
    {
        Ok(true) => {
            let mut response =
                continue_as(&state, &headers, &request, username, &origin, "form").await;
            // A code (303) or the consent screen (200): the user is signed in either way.
            if !matches!(response.status(), StatusCode::SEE_OTHER | StatusCode::OK) {
                return response;
            }
            start_session(&state, &headers, username, &mut response).await;
            response
        }
        Ok(false) => counted_as(
            login_form(
                &state,
                &headers,
                &request,
                StatusCode::OK,
                username,
                Some("Invalid username or password."),
            ),
            Outcome::InvalidGrant,
        ),
        Err(page) => page,
    }
}

/// The consent screen's answer (`decision`: `allow` or `deny`), for the user of the browser's
/// login session; the authorization request rides along in hidden fields, as on the login
/// form, with the same CSRF check.
pub async fn consent(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<TokenForm, ApiError>,
) -> Response {
    let (posted, origin, request) = match read_posted_request(&state, form).await {
        Ok(read) => read,
        Err(answer) => return answer,
    };
    let service = &state.token_service;
    let Ok(found) = session_user(&state, &headers).await else {
        return busy(&state);
    };
    let Some(username) = found else {
        // The session ended (logout, expiry, revoke-tokens) while the screen was open.
        return login_form(
            &state,
            &headers,
            &request,
            StatusCode::OK,
            "",
            Some("Your session has ended. Please sign in again."),
        );
    };
    if csrf_cookie(&headers).is_none() {
        return form_without_csrf_cookie(&state);
    }
    if !csrf_matches(&headers, &posted.form) {
        tracing::info!("a consent form was refused: its CSRF value does not match the cookie");
        return counted_as(
            consent_form(
                &state,
                &headers,
                &request,
                StatusCode::FORBIDDEN,
                &username,
                Some("This form has expired. Please answer again."),
            ),
            Outcome::AccessDenied,
        );
    }
    // The screen was shown to another user than the session's now (a sign-in in another
    // tab): that user has not seen the question.
    if posted.form.get("consent_user") != Some(username.as_str()) {
        return consent_form(
            &state,
            &headers,
            &request,
            StatusCode::OK,
            &username,
            Some("You are signed in as another user now. Please answer again."),
        );
    }
    let scope = request.scope.as_string();
    let client_id = Some(request.client.id.as_str());
    match posted.form.get("decision") {
        Some("allow") => {
            if let Err(err) = authorize::record_consent(service, &request, &username).await {
                tracing::warn!(error = %err, "a consent could not be stored");
                return busy(&state);
            }
            service.audit().record(
                &origin,
                client_id,
                Some(&username),
                Event::ConsentGiven { scope },
            );
            answer_with_code(&state, &request, &username, &origin, "consent").await
        }
        Some("deny") => {
            service.audit().record(
                &origin,
                client_id,
                Some(&username),
                Event::ConsentDenied { scope },
            );
            refused(
                &state,
                request.error("access_denied", "the user denied the request"),
            )
        }
        _ => counted_as(
            consent_form(
                &state,
                &headers,
                &request,
                StatusCode::BAD_REQUEST,
                &username,
                Some("Choose Allow or Deny."),
            ),
            Outcome::InvalidRequest,
        ),
    }
}

/// `[login] logo`, cacheable for an hour; 404 when none is configured.
pub async fn logo(State(state): State<AppState>) -> Response {
    let Some((content_type, bytes)) = &state.login_pages.logo else {
        return StatusCode::NOT_FOUND.into_response();
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, *content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
            (header::CONTENT_SECURITY_POLICY, LOGO_CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        bytes.clone(),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// Ends the browser's login session: the next authorization asks for the password again.
pub async fn logout(
    State(state): State<AppState>,
    ip: Option<Extension<ClientIp>>,
    request_id: Option<Extension<RequestId>>,
    headers: HeaderMap,
) -> Response {
    match end_session(&state, &headers, &origin_of(ip, request_id)).await {
        Ok(()) => {}
        Err(SessionNotEnded::RateLimited(retry)) => return too_many_requests(&state, retry),
        Err(SessionNotEnded::StoreFailed) => {
            return message(
                &state,
                StatusCode::SERVICE_UNAVAILABLE,
                "Please try again",
                "You could not be signed out just now; please try again in a moment.",
            )
        }
    }
    let mut response = message(
        &state,
        StatusCode::OK,
        "Signed out",
        "You are signed out. You can close this window.",
    );
    set_cookie(&mut response, SESSION_COOKIE, "", Some(0));
    response
}
