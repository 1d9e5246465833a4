//! What every page for people shares (the hosted login page of `/authorize` and the developer
//! portal of `/portal/`): the branding (`[login] title` and `logo`), the security headers,
//! the login session and CSRF cookies, and the message pages. Pages are askama templates in
//! `templates/`, escaped by default, with no JavaScript.
//!
//! Every page carries `Content-Security-Policy`, `X-Frame-Options: DENY` (no clickjacking of
//! a form), `Cache-Control: no-store` and `Referrer-Policy: no-referrer` (a code, a state or a
//! secret must not leak through a `Referer`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use askama::Template;
use axum::body::Bytes;
use axum::extract::Extension;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};
use secrecy::{ExposeSecret as _, SecretString};
use subtle::ConstantTimeEq as _;

use super::request_id::RequestId;
use super::{AppState, ClientIp};
use crate::audit::{Event, Origin};
use crate::config::LoginSettings;
use crate::crypto::secret::generate_secret;
use crate::metrics::Outcome;
use crate::oauth::grants::password::{check_login, LoginChannel};
use crate::oauth::login_session::KNOWN_DEVICE_SECS;
use crate::oauth::ErrorCode;

/// The login session (`__Host-`: Secure, path `/`, no `Domain`, so no other host can set it).
pub(super) const SESSION_COOKIE: &str = "__Host-tokengate-session";
/// A browser that signed in before (see `oauth::login_session`): the lockout counts its logins
/// apart from guessers'.
pub(super) const DEVICE_COOKIE: &str = "__Host-tokengate-device";
/// The CSRF value the login form must repeat (double submit; `__Host-` keeps a sibling host
/// from planting one).
pub(super) const CSRF_COOKIE: &str = "__Host-tokengate-csrf";

/// No scripts, no plugins, no framing, no `<base>`; the page's own inline style and the logo
/// only. No `form-action`: browsers apply it to the redirect that follows the form, which goes
/// to the app's redirect URI.
pub(super) const CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; img-src 'self'; \
                   frame-ancestors 'none'; base-uri 'none'";

/// The logo's own answer: an SVG opened by itself runs no script and loads nothing.
pub(super) const LOGO_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'; sandbox";

/// What every page shows around its content (`[login] title` and `logo`), and what the consent
/// screen says for each scope. Built once at start.
pub struct LoginPages {
    title: String,
    pub(super) logo: Option<(&'static str, Bytes)>,
    pub(super) scope_descriptions: BTreeMap<String, String>,
}

impl LoginPages {
    /// Reads the logo file, if one is configured (the config check already saw it there).
    pub fn load(settings: &LoginSettings) -> Result<Self, (PathBuf, std::io::Error)> {
        let logo = match &settings.logo {
            Some(file) => {
                let bytes = std::fs::read(&file.path).map_err(|err| (file.path.clone(), err))?;
                Some((file.content_type, Bytes::from(bytes)))
            }
            None => None,
        };
        Ok(Self {
            title: settings.title.clone(),
            logo,
            scope_descriptions: settings.scope_descriptions.clone(),
        })
    }

    pub(super) fn brand(&self) -> Brand<'_> {
        Brand {
            title: &self.title,
            has_logo: self.logo.is_some(),
            wide: false,
        }
    }

    /// [`LoginPages::brand`] for the portal's wider pages.
    pub(super) fn wide_brand(&self) -> Brand<'_> {
        Brand {
            wide: true,
            ..self.brand()
        }
    }
}

/// The part of every page that `base.html` renders.
pub(super) struct Brand<'a> {
    pub(super) title: &'a str,
    pub(super) has_logo: bool,
    /// A page with tables and commands (the portal): a wider card.
    pub(super) wide: bool,
}

#[derive(Template)]
#[template(path = "message.html")]
pub(super) struct MessagePage<'a> {
    brand: Brand<'a>,
    title: &'a str,
    message: &'a str,
    is_error: bool,
}

pub(super) fn secure_headers(response: &mut Response) {
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

pub(super) fn html(status: StatusCode, rendered: Result<String, askama::Error>) -> Response {
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

pub(super) fn message(state: &AppState, status: StatusCode, title: &str, text: &str) -> Response {
    let is_error = !status.is_success();
    html(
        status,
        MessagePage {
            brand: state.login_pages.brand(),
            title,
            message: text,
            is_error,
        }
        .render(),
    )
}

/// The store (or the password pool) could not answer: try again.
pub(super) fn busy(state: &AppState) -> Response {
    message(
        state,
        StatusCode::SERVICE_UNAVAILABLE,
        "Please try again",
        "The sign-in service is busy or unavailable; please try again in a moment.",
    )
}

/// `response`, counted in the request metrics under `outcome` rather than its status.
pub(super) fn counted_as(mut response: Response, outcome: Outcome) -> Response {
    response.extensions_mut().insert(outcome);
    response
}

/// A 303 to `url` (the client's redirect URI with the answer in its query).
pub(super) fn redirect(state: &AppState, url: &str) -> Response {
    let Ok(location) = HeaderValue::from_bytes(url.as_bytes()) else {
        return message(
            state,
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

/// The value of cookie `name` in the request, if sent once.
pub(super) fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.to_owned())
}

pub(super) fn set_cookie(response: &mut Response, name: &str, value: &str, max_age: Option<i64>) {
    let mut text = format!("{name}={value}; Path=/; Secure; HttpOnly; SameSite=Lax");
    if let Some(secs) = max_age {
        text.push_str(&format!("; Max-Age={secs}"));
    }
    if let Ok(value) = HeaderValue::from_str(&text) {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// A CSRF cookie value we could have set: 43 base64url characters.
pub(super) fn csrf_cookie(headers: &HeaderMap) -> Option<String> {
    cookie(headers, CSRF_COOKIE).filter(|value| {
        value.len() == 43
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    })
}

/// The page `render` makes with the browser's CSRF value, or with a new one, set with it.
pub(super) fn with_csrf_value(
    headers: &HeaderMap,
    render: impl FnOnce(&str) -> Response,
) -> Response {
    if let Some(value) = csrf_cookie(headers) {
        return render(&value);
    }
    let value = generate_secret();
    let mut response = render(&value);
    set_cookie(&mut response, CSRF_COOKIE, &value, None);
    response
}

/// Whether a posted form repeats the browser's CSRF cookie (compared in constant time).
pub(super) fn csrf_matches(headers: &HeaderMap, form: &crate::oauth::params::FormParams) -> bool {
    match (csrf_cookie(headers), form.get("csrf_token")) {
        (Some(cookie), Some(field)) => bool::from(cookie.as_bytes().ct_eq(field.as_bytes())),
        _ => false,
    }
}

/// The session or user store did not answer.
pub(super) struct StoreUnavailable;

/// The user of the browser's live login session, if any (and still allowed to log in).
pub(super) async fn session_user(
    state: &AppState,
    headers: &HeaderMap,
) -> Result<Option<String>, StoreUnavailable> {
    let Some(id) = cookie(headers, SESSION_COOKIE) else {
        return Ok(None);
    };
    let username = match state.login_sessions.user(&SecretString::from(id)).await {
        Ok(Some(username)) => username,
        Ok(None) => return Ok(None),
        Err(err) => {
            tracing::warn!(error = %err, "a login session could not be looked up");
            return Err(StoreUnavailable);
        }
    };
    match state.token_service.users.find_user(&username).await {
        Ok(Some(user)) if !user.disabled => Ok(Some(username)),
        Ok(_) => Ok(None),
        Err(err) => {
            tracing::warn!(error = %err, "a session's user could not be looked up");
            Err(StoreUnavailable)
        }
    }
}

/// Where a request came from, for its audit events.
pub(super) fn origin_of(
    ip: Option<Extension<ClientIp>>,
    id: Option<Extension<RequestId>>,
) -> Origin {
    Origin {
        request_id: id.map(|Extension(RequestId(id))| id),
        ip: ip.map(|Extension(ClientIp(ip))| ip),
    }
}

/// A form posted without our CSRF cookie: from another site (a `SameSite=Lax` cookie is not
/// sent with a cross-site post), or by a browser that keeps no cookies. No new cookie is set:
/// a cross-site post must not replace the one of the form the user has open.
pub(super) fn form_without_csrf_cookie(state: &AppState) -> Response {
    tracing::info!("a login page form came without its CSRF cookie");
    counted_as(
        message(
            state,
            StatusCode::FORBIDDEN,
            "This sign-in form has expired",
            "Go back to the application and start again. (Cookies must be allowed for this site.)",
        ),
        Outcome::AccessDenied,
    )
}

/// A posted form that could not be read (not a form, too large, a repeated field).
pub(super) fn unreadable_form(state: &AppState) -> Response {
    counted_as(
        message(
            state,
            StatusCode::BAD_REQUEST,
            "This sign-in form is not valid",
            "The form could not be read. Go back to the application and start again.",
        ),
        Outcome::InvalidRequest,
    )
}

/// The per-IP rate limit's answer to a person: a page, with `Retry-After`.
pub(super) fn too_many_requests(state: &AppState, retry_after_secs: u64) -> Response {
    let mut response = message(
        state,
        StatusCode::TOO_MANY_REQUESTS,
        "Too many attempts",
        "Too many sign-in attempts from your network. Please wait a moment and try again.",
    );
    if let Ok(value) = HeaderValue::from_str(&retry_after_secs.to_string()) {
        response.headers_mut().insert(header::RETRY_AFTER, value);
    }
    response
}

/// `username` signed in on this browser: a new login session replaces the one it had, and the
/// browser is remembered as a known device, both set as cookies on `response`. The user is in
/// either way: a session that cannot be stored only means the form next time.
pub(super) async fn start_session(
    state: &AppState,
    headers: &HeaderMap,
    username: &str,
    response: &mut Response,
) {
    // A new sign-in replaces the browser's session (say after prompt=login, or as another
    // user): the old one must not stay valid beside it.
    if let Some(old) = cookie(headers, SESSION_COOKIE) {
        if let Err(err) = state.login_sessions.end(&SecretString::from(old)).await {
            tracing::warn!(error = %err, "the replaced login session could not be ended");
        }
    }
    match state.login_sessions.start(username).await {
        Ok(session) => set_cookie(
            response,
            SESSION_COOKIE,
            session.expose_secret(),
            Some(state.login_sessions.lifetime_secs()),
        ),
        Err(err) => tracing::warn!(error = %err, "a login session could not be stored"),
    }
    // Renewed on every sign-in: a device stays known for 90 days after the last one.
    match state.login_sessions.remember_device(username).await {
        Ok(device) => set_cookie(
            response,
            DEVICE_COOKIE,
            device.expose_secret(),
            Some(KNOWN_DEVICE_SECS),
        ),
        Err(err) => tracing::warn!(error = %err, "a known device could not be stored"),
    }
}

/// A sign-in form's password check (the login page's and the portal's): the pages' share of
/// the hashing pool (`login_checks`, held until answered or this request is dropped), the
/// browser's known-device cookie, and the password grant's lockout, argon2 pool and audit
/// (`check_login`). `may_sign_in` false (a user the form does not admit) costs a dummy hash
/// and touches no lockout row. `Err` is the page to answer instead (busy, or a failure).
pub(super) async fn check_page_login(
    state: &AppState,
    headers: &HeaderMap,
    origin: &Origin,
    client_id: &str,
    username: &str,
    password: SecretString,
    may_sign_in: bool,
) -> Result<bool, Response> {
    let Ok(_check_slot) = state.login_checks.clone().try_acquire_owned() else {
        return Err(counted_as(busy(state), Outcome::Overloaded));
    };
    if !may_sign_in {
        // As slow as a real check, so the answer does not tell who is admitted.
        if let Err(err) = state.token_service.hasher.verify_dummy(password).await {
            tracing::warn!(error = %err, "a sign-in's dummy check failed");
        }
        return Ok(false);
    }
    let known_device = match cookie(headers, DEVICE_COOKIE) {
        Some(id) => state
            .login_sessions
            .known_device_of(&SecretString::from(id), username)
            .await
            .unwrap_or_else(|err| {
                tracing::warn!(error = %err, "a known device could not be looked up");
                None
            }),
        None => None,
    };
    match check_login(
        &state.token_service,
        client_id,
        origin,
        username,
        password,
        LoginChannel::LoginPage { known_device },
    )
    .await
    {
        Ok(checked) => Ok(checked),
        Err(err) if err.code == ErrorCode::TemporarilyUnavailable => {
            Err(counted_as(busy(state), Outcome::Overloaded))
        }
        Err(err) => {
            tracing::warn!(error = %err, "a sign-in could not be checked");
            Err(message(
                state,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "Your sign-in could not be checked. Please try again.",
            ))
        }
    }
}

/// Why [`end_session`] did not end the browser's session.
pub(super) enum SessionNotEnded {
    /// Over the per-IP rate limit: retry after these seconds.
    RateLimited(u64),
    /// The session store did not answer.
    StoreFailed,
}

/// Ends the browser's login session, if it sent one (each costs store writes: taken from the
/// per-IP rate limit), and records `logged_out` for its user (a dead session is just dropped).
pub(super) async fn end_session(
    state: &AppState,
    headers: &HeaderMap,
    origin: &Origin,
) -> Result<(), SessionNotEnded> {
    let Some(id) = cookie(headers, SESSION_COOKIE) else {
        return Ok(());
    };
    super::take_from_ip_limit(state, origin)
        .await
        .map_err(SessionNotEnded::RateLimited)?;
    let id = SecretString::from(id);
    let user = state.login_sessions.user(&id).await.ok().flatten();
    match state.login_sessions.end(&id).await {
        Ok(ended) => {
            if let (true, Some(user)) = (ended, user) {
                state
                    .audit
                    .record(origin, None, Some(&user), Event::LoggedOut {});
            }
            Ok(())
        }
        Err(err) => {
            tracing::warn!(error = %err, "a login session could not be ended");
            Err(SessionNotEnded::StoreFailed)
        }
    }
}
