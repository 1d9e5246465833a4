//! One accepted connection: TLS handshake, HTTP/1.1 or HTTP/2, and a watchdog that closes it
//! when it is idle or the server shuts down.
//!
//! hyper's own header-read timeout only starts once an HTTP/1 connection exists: a client that
//! completes the TLS handshake and then stays silent (or idles between HTTP/2 requests) would
//! otherwise hold its connection slot for ever. The watchdog gives every connection
//! `first_request_timeout` to start a request and `keep_alive_timeout` of idleness between
//! requests, then shuts it down gracefully, and drops it if it does not finish within
//! `IDLE_CLOSE_GRACE`.
//!
//! At shutdown every connection accepted before it gets its request answered: one in flight
//! finishes; one that has not sent its first request yet (even one still in its TLS handshake)
//! is served that request if it starts within `first_request_timeout`; an HTTP/1 keep-alive
//! connection between two requests is served its next one if it starts within
//! [`SHUTDOWN_IDLE_WAIT`]. HTTP/1 answers carry `Connection: close` and the connection closes
//! after them; HTTP/2 gets a graceful GOAWAY that lets the streams in flight finish.
//! `shutdown_grace_period` bounds it all.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::response::Response;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use prometheus_client::metrics::counter::Counter;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::TlsAcceptor;
use tower::{Service, ServiceExt as _};

/// How long an idle connection told to close may take to go.
const IDLE_CLOSE_GRACE: Duration = Duration::from_secs(5);
const WATCHDOG_TICK: Duration = Duration::from_millis(250);
/// How long an idle HTTP/1 keep-alive connection may take to send its next request once the
/// server stops. Closing it at once races a client that is just sending one (it would read a
/// reset, and a POST is not retried); a busy client sends within milliseconds and gets its
/// answer with `Connection: close`, while one idle this long is unlikely to send right now.
/// HTTP/2 needs no wait: its GOAWAY tells the client which streams were taken.
pub const SHUTDOWN_IDLE_WAIT: Duration = Duration::from_secs(2);

/// Limits applied to every connection.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    pub tls_handshake_timeout: Duration,
    pub first_request_timeout: Duration,
    pub keep_alive_timeout: Duration,
    /// How long requests in flight at shutdown may take to finish.
    pub shutdown_grace_period: Duration,
}

/// Requests in flight on one connection, and when the last one ended.
struct Activity {
    started: Instant,
    in_flight: AtomicUsize,
    requests: AtomicUsize,
    last_done_ms: AtomicU64,
    /// Its requests came over HTTP/2.
    http2: AtomicBool,
}

impl Activity {
    fn new() -> Self {
        Self {
            started: Instant::now(),
            in_flight: AtomicUsize::new(0),
            requests: AtomicUsize::new(0),
            last_done_ms: AtomicU64::new(0),
            http2: AtomicBool::new(false),
        }
    }

    fn elapsed_ms(&self) -> u64 {
        u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the connection has been idle longer than its limit.
    fn idle_too_long(&self, limits: &ConnectionLimits) -> bool {
        if self.in_flight.load(Ordering::Acquire) > 0 {
            return false;
        }
        let now = self.elapsed_ms();
        let (since, limit) = if self.requests.load(Ordering::Acquire) == 0 {
            (0, limits.first_request_timeout)
        } else {
            (
                self.last_done_ms.load(Ordering::Acquire),
                limits.keep_alive_timeout,
            )
        };
        now.saturating_sub(since) > u64::try_from(limit.as_millis()).unwrap_or(u64::MAX)
    }
}

/// Marks a request in flight for as long as it lives.
struct InFlight(Arc<Activity>);

impl InFlight {
    fn begin(activity: &Arc<Activity>) -> Self {
        activity.requests.fetch_add(1, Ordering::AcqRel);
        activity.in_flight.fetch_add(1, Ordering::AcqRel);
        Self(activity.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0
            .last_done_ms
            .store(self.0.elapsed_ms(), Ordering::Release);
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// The router, counting requests for the watchdog.
#[derive(Clone)]
struct Tracked {
    router: axum::Router,
    activity: Arc<Activity>,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
}

impl Service<Request<Incoming>> for Tracked {
    type Response = Response;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, mut request: Request<Incoming>) -> Self::Future {
        let in_flight = InFlight::begin(&self.activity);
        request
            .extensions_mut()
            .insert(axum::extract::ConnectInfo(self.peer));
        let router = self.router.clone();
        let shutdown = self.shutdown.clone();
        let http1 = request.version() < hyper::Version::HTTP_2;
        if !http1 {
            self.activity.http2.store(true, Ordering::Release);
        }
        Box::pin(async move {
            let mut response = router.oneshot(request.map(Body::new)).await;
            // Once shutdown has begun this is the connection's last HTTP/1 exchange: say so,
            // and hyper closes the connection after the answer (RFC 9112 §9.6).
            if http1 && *shutdown.borrow() {
                if let Ok(response) = &mut response {
                    response.headers_mut().insert(
                        hyper::header::CONNECTION,
                        hyper::header::HeaderValue::from_static("close"),
                    );
                }
            }
            drop(in_flight);
            response
        })
    }
}

/// The TLS side of every connection: the acceptor, and the count of handshakes that fail
/// (`tokengate_tls_handshake_failures_total`).
#[derive(Clone)]
pub struct Handshake {
    pub acceptor: TlsAcceptor,
    pub failures: Counter,
}

/// Serves one TCP connection to the end.
pub async fn serve(
    tcp: TcpStream,
    peer: SocketAddr,
    handshake: Handshake,
    router: axum::Router,
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let accept = handshake.acceptor.accept(tcp);
    let tls = match tokio::time::timeout(limits.tls_handshake_timeout, accept).await {
        Ok(Ok(tls)) => tls,
        Ok(Err(err)) => {
            handshake.failures.inc();
            tracing::debug!(peer = %peer, error = %err, "TLS handshake failed");
            return;
        }
        Err(_) => {
            handshake.failures.inc();
            tracing::debug!(peer = %peer, "TLS handshake timed out");
            return;
        }
    };
    let activity = Arc::new(Activity::new());
    let service = TowerToHyperService::new(Tracked {
        router,
        activity: activity.clone(),
        peer,
        shutdown: shutdown.clone(),
    });
    let connection = builder.serve_connection(TokioIo::new(tls), service);
    let mut connection = std::pin::pin!(connection);
    let mut ticker = tokio::time::interval(WATCHDOG_TICK);
    // When the connection is dropped whatever it is doing.
    let mut close_by: Option<tokio::time::Instant> = None;
    // graceful_shutdown() has been called.
    let mut closing = false;
    // The server is shutting down: answer the request in flight or the next one, then close.
    let mut stopping = false;
    // Requests begun when the stop came, and when it came.
    let mut requests_at_stop = 0;
    let mut stopped_at = tokio::time::Instant::now();
    loop {
        let forced_close = async {
            match close_by {
                Some(deadline) => tokio::time::sleep_until(deadline).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(err) = result {
                    tracing::debug!(peer = %peer, error = %err, "connection ended with an error");
                }
                return;
            }
            changed = shutdown.changed(), if !stopping => {
                // A dropped sender also means the server is going away.
                let _ = changed;
                stopping = true;
                stopped_at = tokio::time::Instant::now();
                requests_at_stop = activity.requests.load(Ordering::Acquire);
                let deadline = stopped_at + limits.shutdown_grace_period;
                close_by = Some(close_by.map_or(deadline, |earlier| earlier.min(deadline)));
                // A connection that has not sent its first request yet, or an idle HTTP/1 one,
                // keeps waiting for its next: hyper's graceful shutdown would close it
                // unanswered.
                let waits = requests_at_stop == 0
                    || (activity.in_flight.load(Ordering::Acquire) == 0
                        && !activity.http2.load(Ordering::Acquire));
                if !closing && !waits {
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                }
            }
            _ = ticker.tick(), if !closing => {
                let requests = activity.requests.load(Ordering::Acquire);
                let idle_since_stop = requests_at_stop > 0
                    && requests == requests_at_stop
                    && stopped_at.elapsed() > SHUTDOWN_IDLE_WAIT;
                if stopping && (requests > requests_at_stop || idle_since_stop) {
                    // The request awaited has arrived: it finishes (HTTP/1: its answer says
                    // `Connection: close`; HTTP/2: GOAWAY), nothing more. Or it did not come.
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                } else if activity.idle_too_long(&limits) {
                    tracing::debug!(peer = %peer, "closing an idle connection");
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                    let deadline = tokio::time::Instant::now() + IDLE_CLOSE_GRACE;
                    close_by = Some(close_by.map_or(deadline, |earlier| earlier.min(deadline)));
                }
            }
            () = forced_close => {
                tracing::debug!(peer = %peer, "connection did not close in time; dropped");
                return;
            }
        }
    }
}
