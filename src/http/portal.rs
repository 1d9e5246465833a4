//! The developer portal's pages (`/portal/…`, `[portal] enabled`): sign in, list, create,
//! change, disable and delete applications, regenerate a secret, generate a test token. The
//! decisions are `oauth::portal`'s; this file reads forms and renders pages (askama templates
//! `portal_*.html`, no JavaScript), with the login page's session, CSRF check, rate limit and
//! headers (`pages.rs`).
//!
//! Every form posts with the CSRF value; every change answers with a redirect to a page (so a
//! reload does not post again), except those that show a secret or a token once. An
//! application the user does not manage is answered as one that does not exist: 404.

use std::future::Future;
use std::sync::Arc;

use askama::Template;
use axum::extract::{Extension, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use secrecy::{ExposeSecret as _, SecretString};

use super::authorize::LoginPage;
use super::error::ApiError;
use super::extract::TokenForm;
use super::pages::{
    busy, check_page_login, cookie, counted_as, csrf_cookie, csrf_matches, end_session, html,
    message, origin_of, redirect, session_user, set_cookie, start_session, too_many_requests,
    unreadable_form, with_csrf_value, Brand, SessionNotEnded, StoreUnavailable, SESSION_COOKIE,
};
use super::request_id::RequestId;
use super::{take_from_ip_limit, AppState, ClientIp};
use crate::audit::Origin;
use crate::metrics::Outcome;
use crate::oauth::params::FormParams;
use crate::oauth::portal::{
    ApplicationEdit, NewApplication, PortalError, PortalService, PortalUser, TestToken,
};
use crate::oauth::ErrorCode;
use crate::oauth::OAuthError;
use crate::store::model::{Client, GrantType};

/// What every portal page shows of an application.
struct AppView {
    id: String,
    name: String,
    kind: &'static str,
    status: &'static str,
    /// The owner's name, or who manages a client the CLI made.
    owner: String,
}

impl AppView {
    fn of(client: &Client) -> Self {
        Self {
            id: client.id.clone(),
            name: client.display_name().to_owned(),
            kind: if client.public {
                "Public"
            } else {
                "Confidential"
            },
            status: if client.disabled {
                "Disabled"
            } else {
                "Active"
            },
            owner: client
                .owner
                .clone()
                .unwrap_or_else(|| "(made by an operator)".to_owned()),
        }
    }
}

#[derive(Template)]
#[template(path = "portal_home.html")]
struct HomePage<'a> {
    brand: Brand<'a>,
    user: &'a PortalUser,
    csrf_token: &'a str,
    notice: Option<&'static str>,
    apps: Vec<AppView>,
}

#[derive(Template)]
#[template(path = "portal_new.html")]
struct NewPage<'a> {
    brand: Brand<'a>,
    user: &'a PortalUser,
    csrf_token: &'a str,
    error: Option<&'a str>,
    name: &'a str,
    public: bool,
    grants: Vec<(&'static str, bool)>,
    scopes: Vec<(&'a str, bool)>,
    redirect_uris: &'a str,
}

#[derive(Template)]
#[template(path = "portal_app.html")]
struct AppPage<'a> {
    brand: Brand<'a>,
    user: &'a PortalUser,
    csrf_token: &'a str,
    notice: Option<&'static str>,
    error: Option<&'a str>,
    app: AppView,
    grant_types: String,
    scope_list: String,
    name: &'a str,
    scopes: Vec<(&'a str, bool)>,
    code_flow: bool,
    redirect_uris: String,
    public: bool,
    disabled: bool,
    overlap_secs: u64,
    offers_test_token: bool,
    max_validity: u64,
}

/// A secret or a token, shown this once.
#[derive(Template)]
#[template(path = "portal_shown_once.html")]
struct ShownOncePage<'a> {
    brand: Brand<'a>,
    user: &'a PortalUser,
    csrf_token: &'a str,
    heading: &'a str,
    lead: &'a str,
    app_name: &'a str,
    app_id: &'a str,
    client_secret: Option<&'a str>,
    access_token: Option<&'a str>,
    expires_in: u64,
    scope: &'a str,
    curl: Option<&'a str>,
}

#[derive(Template)]
#[template(path = "portal_delete.html")]
struct DeletePage<'a> {
    brand: Brand<'a>,
    user: &'a PortalUser,
    csrf_token: &'a str,
    app_name: &'a str,
    app_id: &'a str,
}

/// What a redirect after a change says on the page it lands on (`?done=…`): fixed texts, so
/// nothing of the URL is echoed.
fn notice(query: Option<&str>) -> Option<&'static str> {
    match query?.strip_prefix("done=")? {
        "created" => Some("The application was created."),
        "saved" => Some("Saved."),
        "disabled" => Some("The application is disabled."),
        "enabled" => Some("The application is enabled."),
        "deleted" => Some("The application was deleted and its tokens revoked."),
        _ => None,
    }
}

/// The portal's sign-in form (the login page's, posting to `/portal/login`).
fn login_page(
    state: &AppState,
    headers: &HeaderMap,
    status: StatusCode,
    username: &str,
    error: Option<&str>,
) -> Response {
    with_csrf_value(headers, |csrf| {
        html(
            status,
            LoginPage {
                brand: state.login_pages.brand(),
                client_name: "the developer portal",
                action: "/portal/login",
                fields: Vec::new(),
                csrf_token: csrf,
                username,
                error,
            }
            .render(),
        )
    })
}

fn no_portal_role(state: &AppState) -> Response {
    counted_as(
        message(
            state,
            StatusCode::FORBIDDEN,
            "No access to the developer portal",
            "Your account has no developer role. Ask an administrator for one.",
        ),
        Outcome::AccessDenied,
    )
}

fn not_found(state: &AppState) -> Response {
    message(
        state,
        StatusCode::NOT_FOUND,
        "No such application",
        "There is no application with this consumer key among yours.",
    )
}

/// The one place a [`PortalError`] becomes a page; `Refused` is shown by `on_refusal`
/// (the form it came from, with its text).
fn portal_error(
    state: &AppState,
    err: PortalError,
    on_refusal: impl FnOnce(&str) -> Response,
) -> Response {
    match err {
        PortalError::NotFound => not_found(state),
        PortalError::Refused(text) => counted_as(on_refusal(&text), Outcome::InvalidRequest),
        PortalError::Failed(err) if err.code == ErrorCode::TemporarilyUnavailable => {
            tracing::warn!(error = %err, "a portal action could not be done");
            counted_as(busy(state), Outcome::Overloaded)
        }
        PortalError::Failed(err) => {
            tracing::error!(error = %err, "a portal action failed");
            message(
                state,
                StatusCode::INTERNAL_SERVER_ERROR,
                "Something went wrong",
                "That could not be done. Please try again.",
            )
        }
    }
}

/// The portal user of the browser's login session, or the page to answer instead: the sign-in
/// form, "no access" without a portal role, or "busy". A request with a session cookie costs
/// store reads: it takes from the per-IP rate limit.
async fn signed_in(
    state: &AppState,
    headers: &HeaderMap,
    origin: &Origin,
) -> Result<PortalUser, Response> {
    if cookie(headers, SESSION_COOKIE).is_none() {
        return Err(login_page(state, headers, StatusCode::OK, "", None));
    }
    if let Err(retry) = take_from_ip_limit(state, origin).await {
        return Err(too_many_requests(state, retry));
    }
    let name = match session_user(state, headers).await {
        Ok(Some(name)) => name,
        Ok(None) => return Err(login_page(state, headers, StatusCode::OK, "", None)),
        Err(StoreUnavailable) => return Err(busy(state)),
    };
    match state.portal.portal_user(&name).await {
        Ok(Some(user)) => Ok(user),
        Ok(None) => Err(no_portal_role(state)),
        Err(err) => Err(portal_error(state, err, |_| busy(state))),
    }
}

/// A portal form posted without our CSRF cookie (from another site, or cookies blocked); no
/// new cookie is set, so a cross-site post cannot replace the one of the page the user has open.
fn portal_form_without_csrf_cookie(state: &AppState) -> Response {
    tracing::info!("a portal form came without its CSRF cookie");
    counted_as(
        message(
            state,
            StatusCode::FORBIDDEN,
            "This form has expired",
            "Open the developer portal again and repeat. (Cookies must be allowed for this site.)",
        ),
        Outcome::AccessDenied,
    )
}

/// A portal form whose CSRF value is not the browser's cookie (a stale page, or a forgery).
fn csrf_value_mismatch(state: &AppState) -> Response {
    tracing::info!("a portal form was refused: its CSRF value does not match the cookie");
    counted_as(
        message(
            state,
            StatusCode::FORBIDDEN,
            "This form has expired",
            "Go back, reload the page and try again.",
        ),
        Outcome::AccessDenied,
    )
}

/// A posted portal form: read, CSRF-checked, from a signed-in portal user. `Err` is the page
/// to answer instead.
async fn posted_by(
    state: &AppState,
    headers: &HeaderMap,
    form: Result<TokenForm, ApiError>,
) -> Result<(PortalUser, FormParams, Origin, String), Response> {
    let Ok(TokenForm(posted)) = form else {
        return Err(unreadable_form(state));
    };
    let origin = posted.origin();
    let Some(csrf) = csrf_cookie(headers) else {
        return Err(portal_form_without_csrf_cookie(state));
    };
    if !csrf_matches(headers, &posted.form) {
        return Err(csrf_value_mismatch(state));
    }
    let user = signed_in(state, headers, &origin).await?;
    Ok((user, posted.form, origin, csrf))
}

/// Runs a portal change in a task of its own: a browser that goes away drops this handler at
/// its next await, and the change must not be left half-done (written, but not re-read, audited
/// or counted; a new secret stored but never shown is at least audited).
async fn detached<T, F>(
    state: &AppState,
    change: impl FnOnce(Arc<PortalService>) -> F,
) -> Result<T, PortalError>
where
    T: Send + 'static,
    F: Future<Output = Result<T, PortalError>> + Send + 'static,
{
    let task = tokio::spawn(crate::telemetry::in_current_request(change(
        state.portal.clone(),
    )));
    task.await
        .map_err(|err| PortalError::Failed(OAuthError::server_error(err)))?
}

/// `GET /portal`: the portal lives at `/portal/`.
pub async fn to_home(State(state): State<AppState>) -> Response {
    redirect(&state, "/portal/")
}

/// `GET /portal/`: the user's applications (an admin's: all), or the sign-in form.
pub async fn home(
    State(state): State<AppState>,
    ip: Option<Extension<ClientIp>>,
    request_id: Option<Extension<RequestId>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let origin = origin_of(ip, request_id);
    let user = match signed_in(&state, &headers, &origin).await {
        Ok(user) => user,
        Err(page) => return page,
    };
    let apps = match state.portal.applications(&user).await {
        Ok(apps) => apps,
        Err(err) => return portal_error(&state, err, |_| busy(&state)),
    };
    let notice = notice(query.as_deref());
    with_csrf_value(&headers, |csrf| {
        html(
            StatusCode::OK,
            HomePage {
                brand: state.login_pages.wide_brand(),
                user: &user,
                csrf_token: csrf,
                notice,
                apps: apps.iter().map(|client| AppView::of(client)).collect(),
            }
            .render(),
        )
    })
}

/// `POST /portal/login`: the sign-in form, checked as the login page checks it (lockout,
/// per-address rate limit, its share of the argon2 pool, known devices). Only a developer or
/// an admin gets a session here.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<TokenForm, ApiError>,
) -> Response {
    let Ok(TokenForm(posted)) = form else {
        return unreadable_form(&state);
    };
    let origin = posted.origin();
    if let Err(retry) = take_from_ip_limit(&state, &origin).await {
        return too_many_requests(&state, retry);
    }
    if csrf_cookie(&headers).is_none() {
        return portal_form_without_csrf_cookie(&state);
    }
    let username = posted.form.get("username").unwrap_or_default();
    if !csrf_matches(&headers, &posted.form) {
        return counted_as(
            login_page(
                &state,
                &headers,
                StatusCode::FORBIDDEN,
                username,
                Some("This form has expired. Please sign in again."),
            ),
            Outcome::AccessDenied,
        );
    }
    let (Some(password), false) = (posted.form.get("password"), username.is_empty()) else {
        return counted_as(
            login_page(
                &state,
                &headers,
                StatusCode::BAD_REQUEST,
                username,
                Some("Enter your username and password."),
            ),
            Outcome::InvalidRequest,
        );
    };
    let password = SecretString::from(password.to_owned());
    // The role first: the portal must not become a way to guess (and learn) the passwords of
    // users who have no business here, or to drive their lockout.
    let may_sign_in = match state.portal.portal_user(username).await {
        Ok(user) => user.is_some(),
        Err(err) => return portal_error(&state, err, |_| busy(&state)),
    };
    match check_page_login(
        &state,
        &headers,
        &origin,
        "",
        username,
        password,
        may_sign_in,
    )
    .await
    {
        Ok(true) => {
            let mut response = redirect(&state, "/portal/");
            start_session(&state, &headers, username, &mut response).await;
            response
        }
        Ok(false) => counted_as(
            login_page(
                &state,
                &headers,
                StatusCode::OK,
                username,
                Some("Invalid username or password."),
            ),
            Outcome::InvalidGrant,
        ),
        Err(page) => page,
    }
}

/// `POST /portal/logout`: ends the browser's login session (a form with the CSRF value, so
/// another site cannot sign the user out). Any session, with or without a portal role.
pub async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<TokenForm, ApiError>,
) -> Response {
    let Ok(TokenForm(posted)) = form else {
        return unreadable_form(&state);
    };
    let origin = posted.origin();
    if csrf_cookie(&headers).is_none() {
        return portal_form_without_csrf_cookie(&state);
    }
    if !csrf_matches(&headers, &posted.form) {
        return csrf_value_mismatch(&state);
    }
    match end_session(&state, &headers, &origin).await {
        Ok(()) => {}
        Err(SessionNotEnded::RateLimited(retry)) => return too_many_requests(&state, retry),
        Err(SessionNotEnded::StoreFailed) => return busy(&state),
    }
    let mut response = redirect(&state, "/portal/");
    set_cookie(&mut response, SESSION_COOKIE, "", Some(0));
    response
}

/// The lines of a textarea, trimmed, empty ones left out.
fn lines(text: Option<&str>) -> Vec<String> {
    text.unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The checkboxes `prefix.{name}` of `names` that were ticked.
fn ticked<'a>(
    form: &FormParams,
    prefix: &str,
    names: impl Iterator<Item = &'a str>,
) -> Vec<&'a str> {
    names
        .filter(|name| form.get(&format!("{prefix}.{name}")).is_some())
        .collect()
}

/// The create form, empty (a confidential application with client_credentials) or as posted
/// with what was wrong.
fn new_page(
    state: &AppState,
    user: &PortalUser,
    csrf: &str,
    posted: Option<(&NewApplication, &str, &str)>,
) -> Response {
    let settings = state.portal.settings();
    let (status, error, name, public, redirect_uris) = match posted {
        Some((new, redirect_uris, error)) => (
            StatusCode::BAD_REQUEST,
            Some(error),
            new.name.as_str(),
            new.public,
            redirect_uris,
        ),
        None => (StatusCode::OK, None, "", false, ""),
    };
    let grants = settings
        .allowed_grant_types
        .iter()
        .map(|grant| {
            let checked = match posted {
                Some((new, _, _)) => new.grant_types.contains(grant),
                None => *grant == GrantType::ClientCredentials,
            };
            (grant.as_str(), checked)
        })
        .collect();
    let scopes = settings
        .allowed_scopes
        .iter()
        .map(|scope| {
            let checked = posted.is_some_and(|(new, _, _)| new.scopes.contains(scope));
            (scope.as_str(), checked)
        })
        .collect();
    html(
        status,
        NewPage {
            brand: state.login_pages.wide_brand(),
            user,
            csrf_token: csrf,
            error,
            name,
            public,
            grants,
            scopes,
            redirect_uris,
        }
        .render(),
    )
}

/// `GET /portal/apps/new`: the create form.
pub async fn new_form(
    State(state): State<AppState>,
    ip: Option<Extension<ClientIp>>,
    request_id: Option<Extension<RequestId>>,
    headers: HeaderMap,
) -> Response {
    let origin = origin_of(ip, request_id);
    let user = match signed_in(&state, &headers, &origin).await {
        Ok(user) => user,
        Err(page) => return page,
    };
    with_csrf_value(&headers, |csrf| new_page(&state, &user, csrf, None))
}

/// `POST /portal/apps`: creates the application and shows its key and secret, once.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<TokenForm, ApiError>,
) -> Response {
    let (user, form, origin, csrf) = match posted_by(&state, &headers, form).await {
        Ok(posted) => posted,
        Err(page) => return page,
    };
    let settings = state.portal.settings();
    let new = NewApplication {
        name: form.get("name").unwrap_or_default().to_owned(),
        public: form.get("type") == Some("public"),
        grant_types: settings
            .allowed_grant_types
            .iter()
            .filter(|grant| form.get(&format!("grant.{}", grant.as_str())).is_some())
            .copied()
            .collect(),
        scopes: ticked(
            &form,
            "scope",
            settings.allowed_scopes.iter().map(String::as_str),
        )
        .into_iter()
        .map(str::to_owned)
        .collect(),
        redirect_uris: lines(form.get("redirect_uris")),
    };
    let (owner, wanted) = (user.clone(), new.clone());
    let created = detached(&state, move |portal| async move {
        portal.create(&owner, wanted, &origin).await
    })
    .await;
    match created {
        Ok((client, secret)) => {
            let curl = secret
                .as_deref()
                .filter(|_| crate::oauth::portal::PortalService::offers_test_token(&client))
                .map(|secret| state.portal.token_command(&client, secret));
            shown_once(
                &state,
                &user,
                &csrf,
                ShownOnce {
                    heading: "Application created",
                    lead: if secret.is_some() {
                        "Copy the consumer secret now: it is not shown again."
                    } else {
                        "A public application has no secret: it uses the authorization code flow with PKCE."
                    },
                    client: &client,
                    client_secret: secret.as_deref(),
                    token: None,
                    curl: curl.as_ref().map(|curl| curl.expose_secret()),
                },
            )
        }
        Err(err) => {
            let redirect_uris = form.get("redirect_uris").unwrap_or_default();
            portal_error(&state, err, |text| {
                new_page(&state, &user, &csrf, Some((&new, redirect_uris, text)))
            })
        }
    }
}

/// What a [`ShownOncePage`] shows.
struct ShownOnce<'a> {
    heading: &'a str,
    lead: &'a str,
    client: &'a Client,
    client_secret: Option<&'a str>,
    token: Option<&'a TestToken>,
    curl: Option<&'a str>,
}

fn shown_once(state: &AppState, user: &PortalUser, csrf: &str, shown: ShownOnce<'_>) -> Response {
    html(
        StatusCode::OK,
        ShownOncePage {
            brand: state.login_pages.wide_brand(),
            user,
            csrf_token: csrf,
            heading: shown.heading,
            lead: shown.lead,
            app_name: shown.client.display_name(),
            app_id: &shown.client.id,
            client_secret: shown.client_secret,
            access_token: shown.token.map(|token| token.access_token.expose_secret()),
            expires_in: shown.token.map_or(0, |token| token.expires_in),
            scope: shown.token.map_or("", |token| token.scope.as_str()),
            curl: shown.curl,
        }
        .render(),
    )
}

/// The application's page, with a notice after a change or the error of a form on it.
fn app_page(
    state: &AppState,
    user: &PortalUser,
    csrf: &str,
    client: &Client,
    notice: Option<&'static str>,
    error: Option<&str>,
) -> Response {
    let settings = state.portal.settings();
    let mut offered: Vec<&str> = settings
        .allowed_scopes
        .iter()
        .chain(client.scopes.iter())
        .map(String::as_str)
        .filter(|scope| !scope.is_empty())
        .collect();
    offered.sort_unstable();
    offered.dedup();
    let scopes = offered
        .into_iter()
        .map(|scope| (scope, client.scopes.contains(scope)))
        .collect();
    let mut scope_list: Vec<&str> = vec![crate::oauth::scope::DEFAULT_SCOPE];
    scope_list.extend(client.scopes.iter().map(String::as_str));
    let status = if error.is_some() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::OK
    };
    html(
        status,
        AppPage {
            brand: state.login_pages.wide_brand(),
            user,
            csrf_token: csrf,
            notice,
            error,
            app: AppView::of(client),
            grant_types: client
                .grant_types
                .iter()
                .map(|grant| grant.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            scope_list: scope_list.join(", "),
            name: client.display_name(),
            scopes,
            code_flow: client.grant_types.contains(&GrantType::AuthorizationCode),
            redirect_uris: client
                .redirect_uris
                .iter()
                .map(|uri| uri.as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            public: client.public,
            disabled: client.disabled,
            overlap_secs: settings.secret_overlap_secs,
            offers_test_token: crate::oauth::portal::PortalService::offers_test_token(client),
            max_validity: state.portal.max_test_token_secs(client),
        }
        .render(),
    )
}

/// `GET /portal/apps/{id}`.
pub async fn show(
    State(state): State<AppState>,
    ip: Option<Extension<ClientIp>>,
    request_id: Option<Extension<RequestId>>,
    Path(id): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    let origin = origin_of(ip, request_id);
    let user = match signed_in(&state, &headers, &origin).await {
        Ok(user) => user,
        Err(page) => return page,
    };
    match state.portal.application(&user, &id).await {
        Ok(client) => with_csrf_value(&headers, |csrf| {
            app_page(&state, &user, csrf, &client, notice(query.as_deref()), None)
        }),
        Err(err) => portal_error(&state, err, |_| not_found(&state)),
    }
}

/// The application's page with `text`, after a refused form on it.
async fn app_page_with_error(
    state: &AppState,
    user: &PortalUser,
    csrf: &str,
    id: &str,
    text: &str,
) -> Response {
    match state.portal.application(user, id).await {
        Ok(client) => counted_as(
            app_page(state, user, csrf, &client, None, Some(text)),
            Outcome::InvalidRequest,
        ),
        Err(err) => portal_error(state, err, |_| not_found(state)),
    }
}

/// A failed change to application `id`: a refusal shown on its page, anything else by
/// [`portal_error`] (someone else's or a gone application is 404).
async fn failed_on_app(
    state: &AppState,
    user: &PortalUser,
    csrf: &str,
    id: &str,
    err: PortalError,
) -> Response {
    match err {
        PortalError::Refused(text) => app_page_with_error(state, user, csrf, id, &text).await,
        err => portal_error(state, err, |_| not_found(state)),
    }
}

/// `POST /portal/apps/{id}`: name, scopes and redirect URIs.
pub async fn update(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    form: Result<TokenForm, ApiError>,
) -> Response {
    let (user, form, origin, csrf) = match posted_by(&state, &headers, form).await {
        Ok(posted) => posted,
        Err(page) => return page,
    };
    let current = match state.portal.application(&user, &id).await {
        Ok(client) => client,
        Err(err) => return portal_error(&state, err, |_| not_found(&state)),
    };
    let settings = state.portal.settings();
    let candidates = settings
        .allowed_scopes
        .iter()
        .chain(current.scopes.iter())
        .map(String::as_str);
    let edit = ApplicationEdit {
        name: form.get("name").unwrap_or_default().to_owned(),
        scopes: ticked(&form, "scope", candidates)
            .into_iter()
            .map(str::to_owned)
            .collect(),
        redirect_uris: lines(form.get("redirect_uris")),
    };
    let (editor, app_id) = (user.clone(), id.clone());
    let updated = detached(&state, move |portal| async move {
        portal.update(&editor, &app_id, edit, &origin).await
    })
    .await;
    match updated {
        Ok(_) => redirect(&state, &format!("/portal/apps/{}?done=saved", current.id)),
        Err(err) => failed_on_app(&state, &user, &csrf, &id, err).await,
    }
}

/// `POST /portal/apps/{id}/secret`: a new secret, shown once.
pub async fn regenerate_secret(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    form: Result<TokenForm, ApiError>,
) -> Response {
    let (user, _, origin, csrf) = match posted_by(&state, &headers, form).await {
        Ok(posted) => posted,
        Err(page) => return page,
    };
    let (owner, app_id) = (user.clone(), id.clone());
    let regenerated = detached(&state, move |portal| async move {
        portal.regenerate_secret(&owner, &app_id, &origin).await
    })
    .await;
    match regenerated {
        Ok((secret, overlap)) => match state.portal.application(&user, &id).await {
            Ok(client) => {
                let curl = crate::oauth::portal::PortalService::offers_test_token(&client)
                    .then(|| state.portal.token_command(&client, &secret));
                let lead = if overlap > 0 {
                    format!(
                        "Copy the new consumer secret now: it is not shown again. The old one \
                         keeps working for {overlap} seconds."
                    )
                } else {
                    "Copy the new consumer secret now: it is not shown again. The old one no \
                     longer works."
                        .to_owned()
                };
                shown_once(
                    &state,
                    &user,
                    &csrf,
                    ShownOnce {
                        heading: "New consumer secret",
                        lead: &lead,
                        client: &client,
                        client_secret: Some(&secret),
                        token: None,
                        curl: curl.as_ref().map(|curl| curl.expose_secret()),
                    },
                )
            }
            Err(err) => portal_error(&state, err, |_| not_found(&state)),
        },
        Err(err) => failed_on_app(&state, &user, &csrf, &id, err).await,
    }
}

/// `POST /portal/apps/{id}/status`: `disabled` `true` or `false`.
pub async fn set_status(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    form: Result<TokenForm, ApiError>,
) -> Response {
    let (user, form, origin, csrf) = match posted_by(&state, &headers, form).await {
        Ok(posted) => posted,
        Err(page) => return page,
    };
    let disabled = match form.get("disabled") {
        Some("true") => true,
        Some("false") => false,
        _ => {
            return app_page_with_error(&state, &user, &csrf, &id, "Choose Disable or Enable.")
                .await
        }
    };
    let (owner, app_id) = (user.clone(), id.clone());
    let changed = detached(&state, move |portal| async move {
        portal
            .set_disabled(&owner, &app_id, disabled, &origin)
            .await
    })
    .await;
    match changed {
        Ok(()) => {
            let done = if disabled { "disabled" } else { "enabled" };
            redirect(&state, &format!("/portal/apps/{id}?done={done}"))
        }
        Err(err) => failed_on_app(&state, &user, &csrf, &id, err).await,
    }
}

/// `GET /portal/apps/{id}/delete`: are you sure?
pub async fn confirm_delete(
    State(state): State<AppState>,
    ip: Option<Extension<ClientIp>>,
    request_id: Option<Extension<RequestId>>,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> Response {
    let origin = origin_of(ip, request_id);
    let user = match signed_in(&state, &headers, &origin).await {
        Ok(user) => user,
        Err(page) => return page,
    };
    match state.portal.application(&user, &id).await {
        Ok(client) => with_csrf_value(&headers, |csrf| {
            html(
                StatusCode::OK,
                DeletePage {
                    brand: state.login_pages.wide_brand(),
                    user: &user,
                    csrf_token: csrf,
                    app_name: client.display_name(),
                    app_id: &client.id,
                }
                .render(),
            )
        }),
        Err(err) => portal_error(&state, err, |_| not_found(&state)),
    }
}

/// `POST /portal/apps/{id}/delete`: deletes it and revokes its tokens.
pub async fn delete(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    form: Result<TokenForm, ApiError>,
) -> Response {
    let (user, _, origin, _) = match posted_by(&state, &headers, form).await {
        Ok(posted) => posted,
        Err(page) => return page,
    };
    let app_id = id.clone();
    let deleted = detached(&state, move |portal| async move {
        portal.delete(&user, &app_id, &origin).await
    })
    .await;
    match deleted {
        Ok(()) => redirect(&state, "/portal/?done=deleted"),
        Err(err) => portal_error(&state, err, |_| not_found(&state)),
    }
}

/// `POST /portal/apps/{id}/token`: "Generate a token", shown once with its curl command.
pub async fn generate_token(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    form: Result<TokenForm, ApiError>,
) -> Response {
    let (user, form, origin, csrf) = match posted_by(&state, &headers, form).await {
        Ok(posted) => posted,
        Err(page) => return page,
    };
    let Some(validity) = form
        .get("validity")
        .and_then(|value| value.trim().parse::<u64>().ok())
    else {
        return app_page_with_error(
            &state,
            &user,
            &csrf,
            &id,
            "The validity must be a number of seconds.",
        )
        .await;
    };
    let secret = SecretString::from(form.get("client_secret").unwrap_or_default().to_owned());
    let (owner, app_id) = (user.clone(), id.clone());
    let scope = form.get("scope").map(str::to_owned);
    let result = detached(&state, move |portal| async move {
        portal
            .test_token(&owner, &app_id, secret, validity, scope.as_deref(), &origin)
            .await
    })
    .await;
    match result {
        Ok(token) => match state.portal.application(&user, &id).await {
            Ok(client) => shown_once(
                &state,
                &user,
                &csrf,
                ShownOnce {
                    heading: "Test token",
                    lead: "Copy the token now: it is not shown again.",
                    client: &client,
                    client_secret: None,
                    token: Some(&token),
                    curl: Some(token.curl.expose_secret()),
                },
            ),
            Err(err) => portal_error(&state, err, |_| not_found(&state)),
        },
        Err(err) => failed_on_app(&state, &user, &csrf, &id, err).await,
    }
}
