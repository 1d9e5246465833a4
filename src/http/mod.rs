//! The HTTP layer (axum): extract, call `oauth::`, render. Routes are registered here only.

pub mod authorize;
pub mod error;
pub mod extract;
pub mod health;
pub mod introspect;
pub mod measure;
pub mod metadata;
pub mod pages;
pub mod portal;
pub mod register;
pub mod request_id;
pub mod revoke;
pub mod token;
pub mod wso2_registration;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{ConnectInfo, Request, State};
use axum::handler::Handler as _;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse as _, Response};
use axum::routing::{get, post};
use axum::Router;
use http_body_util::BodyExt as _;
use ipnet::IpNet;

use crate::abuse::rate_limit::{bucket_key, client_ip, Limiter};
use crate::audit::{Audit, Event, Origin};
use crate::metrics::{Endpoint, TokenEndpointMetrics};
use crate::oauth::login_session::LoginSessions;
use crate::oauth::registration::RegistrationMode;
use crate::oauth::{OAuthError, TokenService};
use error::ApiError;

/// Request limits the extractors enforce.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
}

/// Shared by every handler: one `Arc`, so the clone every extractor and middleware takes is
/// one reference count, not one per field.
#[derive(Clone)]
pub struct AppState(Arc<AppParts>);

impl AppState {
    pub fn new(parts: AppParts) -> Self {
        Self(Arc::new(parts))
    }
}

impl std::ops::Deref for AppState {
    type Target = AppParts;

    fn deref(&self) -> &AppParts {
        &self.0
    }
}

/// What [`AppState`] holds.
pub struct AppParts {
    pub token_service: Arc<TokenService>,
    pub limits: HttpLimits,
    /// Requests per client IP on `/token`, `/revoke` and `/introspect`; `None` is unlimited.
    pub ip_limiter: Option<Arc<Limiter<IpAddr>>>,
    /// Peers whose `X-Forwarded-For` is believed.
    pub trusted_proxies: Arc<[IpNet]>,
    /// What `/health` answers: the shared store probe, and the shutdown drain.
    pub readiness: Arc<health::Readiness>,
    /// Requests per endpoint and outcome, recorded by [`measure`].
    pub metrics: TokenEndpointMetrics,
    /// The audit trail (the per-IP rate limit's refusals; the endpoints record through
    /// `token_service`).
    pub audit: Audit,
    /// The hosted login page's sessions (in the token database).
    pub login_sessions: Arc<LoginSessions>,
    /// The login pages' branding (`[login] title`, `logo`, scope descriptions).
    pub login_pages: Arc<pages::LoginPages>,
    /// The login page's share of the password-hashing pool: anyone can post the form, so it
    /// may fill at most half of the queue, and the password grant's clients keep the rest.
    pub login_checks: Arc<tokio::sync::Semaphore>,
    /// Dynamic client registration (RFC 7591/7592).
    pub registration: Arc<crate::oauth::registration::RegistrationService>,
    /// The developer portal (`[portal]`).
    pub portal: Arc<crate::oauth::portal::PortalService>,
}

/// The client's address as every defence sees it (rate limits, lockout, client
/// authentication): the peer, or the address a trusted proxy forwarded (see
/// [`client_ip`]). Put in the request's extensions once, by [`find_client_ip`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClientIp(pub IpAddr);

/// Works out the [`ClientIp`] of a request before anything else looks at it.
async fn find_client_ip(
    State(state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    if let Some(ConnectInfo(peer)) = request.extensions().get::<ConnectInfo<SocketAddr>>() {
        // A proxy may add its own X-Forwarded-For line after the client's: read them all,
        // in order, so the rightmost hop is the one the nearest proxy saw.
        let forwarded: Vec<String> = request
            .headers()
            .get_all("x-forwarded-for")
            .iter()
            .map(|value| String::from_utf8_lossy(value.as_bytes()).into_owned())
            .collect();
        let forwarded = (!forwarded.is_empty()).then(|| forwarded.join(","));
        let ip = client_ip(peer.ip(), forwarded.as_deref(), &state.trusted_proxies);
        request.extensions_mut().insert(ClientIp(ip));
    }
    next.run(request).await
}

/// Takes one request of `origin`'s address from the per-IP rate limit: `Err(retry_after_secs)`
/// when it is over its rate (recorded in the audit trail).
pub(crate) async fn take_from_ip_limit(state: &AppState, origin: &Origin) -> Result<(), u64> {
    let (Some(limiter), Some(ip)) = (&state.ip_limiter, origin.ip) else {
        return Ok(());
    };
    let now = state.token_service.clock.now_ms();
    limiter.check(&bucket_key(ip), now).await.inspect_err(|_| {
        state
            .audit
            .record(origin, None, None, Event::RateLimited { bucket: "ip" });
    })
}

/// RFC 6749-style 429 for a client IP over its rate, before any other work on the request.
async fn limit_by_ip(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Result<Response, ApiError> {
    if let Some(ClientIp(ip)) = request.extensions().get::<ClientIp>() {
        let origin = Origin {
            request_id: request
                .extensions()
                .get::<request_id::RequestId>()
                .map(|id| id.0.clone()),
            ip: Some(*ip),
        };
        if let Err(retry) = take_from_ip_limit(&state, &origin).await {
            return Ok(refuse_after_reading(request, &state.limits, retry).await);
        }
    }
    Ok(next.run(request).await)
}

/// The 429 of a client over its rate, once its (small) body is read: a connection left with an
/// unread body is closed after the answer, and clients that had already reused it (HTTP/1.1
/// keep-alive) or were still sending (an HTTP/2 stream reset) report errors instead of the 429.
/// A body too large or too slow gets the answer with `Connection: close` instead.
async fn refuse_after_reading(request: Request, limits: &HttpLimits, retry: u64) -> Response {
    let headers = request.headers();
    // A client waiting for `100 Continue`, or announcing more than a form may hold, is not
    // invited to send a body only to be refused: it gets the answer and the connection ends.
    let skip = headers.contains_key(axum::http::header::EXPECT)
        || headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.parse::<usize>().ok())
            .is_some_and(|length| length > limits.max_body_bytes);
    let read_whole = !skip && {
        let body = http_body_util::Limited::new(request.into_body(), limits.max_body_bytes);
        matches!(
            tokio::time::timeout(limits.request_timeout, body.collect()).await,
            Ok(Ok(_))
        )
    };
    let mut response = ApiError::from(OAuthError::rate_limited(retry)).into_response();
    if !read_whole {
        response.headers_mut().insert(
            axum::http::header::CONNECTION,
            axum::http::HeaderValue::from_static("close"),
        );
    }
    response
}

async fn not_found() -> ApiError {
    ApiError::NotFound
}

async fn only_post() -> ApiError {
    ApiError::MethodNotAllowed { allow: "POST" }
}

async fn only_get_post() -> ApiError {
    ApiError::MethodNotAllowed {
        allow: "GET, HEAD, POST",
    }
}

async fn only_registration_methods() -> ApiError {
    ApiError::MethodNotAllowed {
        allow: "GET, HEAD, PUT, DELETE",
    }
}

async fn only_get() -> ApiError {
    ApiError::MethodNotAllowed { allow: "GET, HEAD" }
}

pub fn router(state: AppState) -> Router {
    // Every endpoint that authenticates clients is limited per client IP.
    let by_ip = || middleware::from_fn_with_state(state.clone(), limit_by_ip);
    // Outermost, so that what the limit refuses is counted too.
    let measured = |endpoint| {
        middleware::from_fn_with_state(
            measure::Measured::new(state.metrics.clone(), endpoint),
            measure::measure,
        )
    };
    // Registration authenticates with bearer tokens; limited per client IP like /token. With
    // `mode = "off"` the paths do not exist (404, counted as `other`).
    let registration = if state.registration.mode() == RegistrationMode::Off {
        Router::new()
    } else {
        Router::new()
            .route(
                "/register",
                post(register::register)
                    .fallback(only_post)
                    .route_layer(by_ip())
                    .route_layer(measured(Endpoint::Register)),
            )
            .route(
                "/register/{client_id}",
                get(register::read)
                    .put(register::update)
                    .delete(register::delete)
                    .fallback(only_registration_methods)
                    .route_layer(by_ip())
                    .route_layer(measured(Endpoint::Register)),
            )
    };
    // WSO2 API Manager's registration, authenticated by a developer's own credentials: its own
    // switch, whatever `mode` is; off, the path does not exist (404).
    let wso2_registration = if state.registration.wso2_compat() {
        Router::new().route(
            "/client-registration/v0.17/register",
            post(wso2_registration::register)
                .fallback(only_post)
                .route_layer(by_ip())
                .route_layer(measured(Endpoint::RegisterWso2)),
        )
    } else {
        Router::new()
    };
    // The developer portal's pages; off, the paths do not exist (404). Its posts take from the
    // per-IP rate limit in the handlers, which answer a person with a page.
    let portal_pages = if state.portal.settings().enabled {
        let page = || measured(Endpoint::Portal);
        Router::new()
            .route("/portal", get(portal::to_home).fallback(only_get))
            .route(
                "/portal/",
                get(portal::home).fallback(only_get).route_layer(page()),
            )
            .route(
                "/portal/login",
                post(portal::login).fallback(only_post).route_layer(page()),
            )
            .route(
                "/portal/logout",
                post(portal::logout).fallback(only_post).route_layer(page()),
            )
            .route(
                "/portal/apps",
                post(portal::create).fallback(only_post).route_layer(page()),
            )
            .route(
                "/portal/apps/new",
                get(portal::new_form).fallback(only_get).route_layer(page()),
            )
            .route(
                "/portal/apps/{id}",
                get(portal::show)
                    .post(portal::update)
                    .fallback(only_get_post)
                    .route_layer(page()),
            )
            .route(
                "/portal/apps/{id}/secret",
                post(portal::regenerate_secret)
                    .fallback(only_post)
                    .route_layer(page()),
            )
            .route(
                "/portal/apps/{id}/status",
                post(portal::set_status)
                    .fallback(only_post)
                    .route_layer(page()),
            )
            .route(
                "/portal/apps/{id}/delete",
                get(portal::confirm_delete)
                    .post(portal::delete)
                    .fallback(only_get_post)
                    .route_layer(page()),
            )
            .route(
                "/portal/apps/{id}/token",
                post(portal::generate_token)
                    .fallback(only_post)
                    .route_layer(page()),
            )
    } else {
        Router::new()
    };
    Router::new()
        .route(
            "/token",
            post(token::token)
                .fallback(only_post)
                .route_layer(by_ip())
                .route_layer(measured(Endpoint::Token)),
        )
        .route(
            "/revoke",
            post(revoke::revoke)
                .fallback(only_post)
                .route_layer(by_ip())
                .route_layer(measured(Endpoint::Revoke)),
        )
        .route(
            "/introspect",
            post(introspect::introspect)
                .fallback(only_post)
                .route_layer(by_ip())
                .route_layer(measured(Endpoint::Introspect)),
        )
        // The login form's posts are password checks: limited per client IP like /token, by
        // the handler, which answers a person with a page.
        .route(
            "/authorize",
            get(authorize::authorize)
                .post(authorize::login)
                .fallback(only_get_post)
                .route_layer(measured(Endpoint::Authorize)),
        )
        .route(
            "/authorize/consent",
            post(authorize::consent)
                .fallback(only_post)
                .route_layer(measured(Endpoint::Authorize)),
        )
        .route("/authorize/logo", get(authorize::logo).fallback(only_get))
        .route(
            "/logout",
            get(authorize::logout)
                .fallback(only_get)
                .route_layer(measured(Endpoint::Logout)),
        )
        .merge(registration)
        .merge(wso2_registration)
        .merge(portal_pages)
        .route(
            "/.well-known/oauth-authorization-server",
            get(metadata::authorization_server).fallback(only_get),
        )
        .route("/jwks", get(metadata::jwks).fallback(only_get))
        .route("/health", get(health::health).fallback(only_get))
        .fallback(not_found.layer(measured(Endpoint::Other)))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            find_client_ip,
        ))
        // Outermost: every answer of the router carries the id, and every line logged for
        // the request carries it (a task-local, `telemetry::in_request`).
        .layer(middleware::from_fn(request_id::request_id))
        .with_state(state)
}
