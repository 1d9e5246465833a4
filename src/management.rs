//! The management listener (`[management]`, issue 11): plain HTTP on its own port, by default
//! 127.0.0.1:9000, apart from the token port so that metrics and probes are never exposed with
//! it by accident; HTTPS with a certificate of its own when `[management] cert` and `key` are
//! set (re-read like the token port's, [`crate::tls::reload`]).
//!
//! - `GET /metrics`: every metric of [`crate::metrics`], Prometheus text format 0.0.4;
//! - `GET /health/live`: 200 while the process runs (a liveness probe restarts on anything else);
//! - `GET /health/ready`: 200 once start-up is done and the token store answers, 503 while it
//!   does not and during the shutdown drain: the same shared probe as `/health` on the token
//!   port ([`Readiness`]).
//!
//! It is bound in `Application::build` (a port in use is a startup error) and served from the
//! start of `run_until` until the server has stopped answering token requests, so it reports
//! the drain and the grace period too.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse as _, Response};
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use prometheus_client::registry::Registry;
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};

use crate::abuse::connections::ConnectionsPerIp;
use crate::http::health::Readiness;
use tokio_rustls::TlsAcceptor;

use crate::listener::{self, Bound};

/// The longest a management connection stays open, answered or not (a scraper reconnects).
const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);
/// Connections the management port serves at once; more are closed at once (a scraper and a
/// few probes need a handful).
const MAX_CONNECTIONS: usize = 64;
/// Connections one address may hold open, so that one host opening idle connections cannot
/// take every slot from the probes and scrapers on others.
const MAX_CONNECTIONS_PER_IP: usize = 8;
/// Time to send a request's headers (after the TLS handshake, which gets as long); also
/// bounds a connection that sends nothing. Scrapers and probes send at once.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request in flight at shutdown may take to finish.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);

/// Work to do before each scrape (gauges computed from state that changes with time).
pub type BeforeScrape = Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> + Send + Sync>;

/// What the management routes answer from.
#[derive(Clone)]
pub struct ManagementState {
    registry: Arc<Registry>,
    readiness: Arc<Readiness>,
    before_scrape: Option<BeforeScrape>,
}

impl ManagementState {
    pub fn new(
        registry: Registry,
        readiness: Arc<Readiness>,
        before_scrape: Option<BeforeScrape>,
    ) -> Self {
        Self {
            registry: Arc::new(registry),
            readiness,
            before_scrape,
        }
    }
}

/// The management port, bound and not yet listening (see [`crate::listener`]): shared with
/// the next process during an upgrade, so that starting it does not fail on this port.
pub struct BoundManagement {
    socket: Bound,
    state: ManagementState,
    tls: Option<TlsAcceptor>,
}

/// The listening management listener, not yet serving.
pub struct Management {
    listener: TcpListener,
    local_addr: SocketAddr,
    router: Router,
    /// `Some`: HTTPS (`[management] cert`/`key`).
    tls: Option<TlsAcceptor>,
}

impl BoundManagement {
    /// Starts listening; the error names the address.
    pub fn listen(self) -> Result<Management, (SocketAddr, std::io::Error)> {
        let local_addr = self.socket.local_addr();
        let listener = self
            .socket
            .listen()
            .map_err(|source| (local_addr, source))?;
        Ok(Management {
            listener,
            local_addr,
            router: router(self.state),
            tls: self.tls,
        })
    }
}

impl Management {
    /// Binds `addr` (port 0: the OS chooses); with `tls`, connections are HTTPS.
    pub fn bind(
        addr: SocketAddr,
        state: ManagementState,
        tls: Option<TlsAcceptor>,
    ) -> std::io::Result<BoundManagement> {
        Ok(BoundManagement {
            socket: listener::bind(addr)?,
            state,
            tls,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `stop` changes (or its sender is dropped), then closes the listener (the
    /// connections it still accepts get their requests answered), gives the requests in flight
    /// [`SHUTDOWN_GRACE`] and closes every connection.
    pub async fn serve(self, mut stop: watch::Receiver<bool>) {
        let scheme = if self.tls.is_some() { "HTTPS" } else { "HTTP" };
        tracing::info!(address = %self.local_addr, "management listener ({scheme}: /metrics, /health/live, /health/ready)");
        let connections = Arc::new(Semaphore::new(MAX_CONNECTIONS));
        let per_ip = ConnectionsPerIp::new(MAX_CONNECTIONS_PER_IP, Arc::from([]));
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_READ_TIMEOUT);
        let builder = Arc::new(builder);
        let stopping = AtomicBool::new(false);
        let connection_stop = stop.clone();
        let serve = |tcp: TcpStream, peer: SocketAddr| {
            let Ok(slot) = per_ip.try_acquire(peer.ip()) else {
                tracing::debug!(peer = %peer, "management connections per address reached; closing");
                return;
            };
            let Ok(permit) = connections.clone().try_acquire_owned() else {
                tracing::debug!(peer = %peer, "management connection limit reached; closing");
                return;
            };
            let router = self.router.clone();
            let builder = builder.clone();
            let stop = connection_stop.clone();
            let tls = self.tls.clone();
            let accepted_while_stopping = stopping.load(Ordering::Relaxed);
            tokio::spawn(async move {
                match tls {
                    None => {
                        serve_connection(tcp, router, &builder, stop, accepted_while_stopping).await
                    }
                    Some(acceptor) => {
                        // The handshake counts against the time to send the request.
                        match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(tcp)).await
                        {
                            Ok(Ok(tls)) => {
                                serve_connection(
                                    tls,
                                    router,
                                    &builder,
                                    stop,
                                    accepted_while_stopping,
                                )
                                .await;
                            }
                            Ok(Err(err)) => {
                                tracing::debug!(peer = %peer, error = %err, "management TLS handshake failed");
                            }
                            Err(_) => {
                                tracing::debug!(peer = %peer, "management TLS handshake timed out");
                            }
                        }
                    }
                }
                drop((permit, slot));
            });
        };
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                _ = stop.changed() => break,
            };
            match accepted {
                Ok((tcp, peer)) => serve(tcp, peer),
                // Typically EMFILE: back off briefly instead of spinning.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
        stopping.store(true, Ordering::Relaxed);
        // A probe or scrape the kernel queued here is answered, not reset.
        listener::close(self.listener, serve).await;
        let all = u32::try_from(MAX_CONNECTIONS).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, connections.acquire_many(all)).await;
    }
}

/// Serves one connection (plain or TLS) until it closes, its lifetime ends or `stop` changes.
async fn serve_connection<I>(
    io: I,
    router: Router,
    builder: &hyper::server::conn::http1::Builder,
    mut stop: watch::Receiver<bool>,
    accepted_while_stopping: bool,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service = TowerToHyperService::new(router);
    let connection = builder.serve_connection(TokioIo::new(io), service);
    let mut connection = std::pin::pin!(connection);
    if accepted_while_stopping {
        // Told to shut down before its request arrived, hyper would close it unanswered: it
        // gets the grace to be answered instead.
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
        return;
    }
    tokio::select! {
        _ = connection.as_mut() => {}
        // A client that never reads its answers would keep its slot for ever, and
        // MAX_CONNECTIONS of them would shut out every scrape and probe.
        () = tokio::time::sleep(CONNECTION_LIFETIME) => {}
        _ = stop.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(SHUTDOWN_GRACE, connection).await;
        }
    }
}

fn router(state: ManagementState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health/live", get(live))
        .route("/health/ready", get(ready))
        .with_state(state)
}

async fn metrics(State(state): State<ManagementState>) -> Response {
    if let Some(before_scrape) = &state.before_scrape {
        before_scrape().await;
    }
    match crate::metrics::encode(&state.registry) {
        Ok(text) => {
            let mut response = text.into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(crate::metrics::CONTENT_TYPE),
            );
            response
        }
        Err(err) => {
            tracing::error!(error = %err, "metrics could not be encoded");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

async fn live() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

async fn ready(State(state): State<ManagementState>) -> Response {
    match state.readiness.check().await {
        Ok(()) => Json(json!({ "status": "ok", "store": "ok" })).into_response(),
        Err(cause) => {
            // The cause is logged (at debug while draining: every probe would warn), never sent.
            if state.readiness.is_draining() {
                tracing::debug!("not ready: shutting down");
            } else {
                tracing::warn!(cause = %cause, "not ready");
            }
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({ "status": "unavailable" })),
            )
                .into_response()
        }
    }
}
