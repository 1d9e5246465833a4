//! `tgload`: closed-loop HTTPS load generator for tokengate's endpoints (`POST /token`,
//! `POST /introspect`, a cheap `GET` as the ceiling).
//!
//! Model: C keep-alive HTTP/1.1 connections, each with exactly one request in flight (closed
//! loop, so latency percentiles are at saturation and grow with C). Before the clock starts,
//! every connection is opened and sends one untimed request, so TLS handshakes and the first
//! accept are not measured. In the `refresh` scenario that first request is a password grant
//! whose refresh token starts the connection's own chain: the server rotates refresh tokens,
//! so each connection always sends the newest token it received. A failed refresh breaks the
//! chain; it is counted as an error and the connection re-seeds with an untimed password grant.
//! In the `introspect` scenario one access token is obtained (client_credentials grant of the
//! token client) before any connection is set up, and every request introspects it.
//! Requests still in flight at the deadline are dropped and not counted.

mod args;

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use hyper::header::HeaderValue;
use hyper::{StatusCode, Uri};
use serde_json::{json, Value};
use tokio::task::JoinSet;
use tokio::time::{sleep_until, timeout_at, Instant};

/// Pause before a seeding password grant refused with 503 is sent again.
const SEED_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(50);

use args::{Args, Scenario, USAGE};
use tgload::client::{basic_auth, form_urlencode, path_uri, Call, Conn, Endpoint};
use tgload::stats::Stats;

/// Bound on opening all connections and their first request; then the run starts anyway.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Pause after a failed connect/seed, so a dead server does not turn workers into busy loops.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

fn main() -> ExitCode {
    let args = match args::parse(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("tgload: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("tgload: cannot start runtime: {e}");
            return ExitCode::from(3);
        }
    };
    let code = match runtime.block_on(run(args)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tgload: {e}");
            ExitCode::from(3)
        }
    };
    // Connection tasks of dropped connections may still be around; do not wait for them.
    runtime.shutdown_timeout(Duration::from_secs(1));
    code
}

async fn run(args: Args) -> Result<ExitCode, String> {
    let endpoint = Arc::new(Endpoint::new(&args.target, &args.trust)?);

    let setup_started = Instant::now();
    let setup_deadline = setup_started + SETUP_TIMEOUT;
    let introspected = match args.scenario {
        Scenario::Introspect => {
            match timeout_at(setup_deadline, obtain_token(&endpoint, &args)).await {
                Ok(Ok(token)) => Some(token),
                Ok(Err(e)) => {
                    eprintln!("tgload: no token to introspect: {e}");
                    return Ok(ExitCode::from(3));
                }
                Err(_) => {
                    eprintln!("tgload: no token to introspect: timed out");
                    return Ok(ExitCode::from(3));
                }
            }
        }
        _ => None,
    };
    let plan = Arc::new(Plan::new(&args, introspected.as_deref())?);

    let mut tasks = JoinSet::new();
    for _ in 0..args.concurrency {
        let mut worker = Worker::new(endpoint.clone(), plan.clone())?;
        tasks.spawn(async move {
            worker.setup(setup_deadline).await;
            worker
        });
    }
    let mut workers = Vec::with_capacity(args.concurrency);
    while let Some(joined) = tasks.join_next().await {
        workers.push(joined.map_err(|e| format!("setup task failed: {e}"))?);
    }
    let setup_time = setup_started.elapsed();
    if workers.iter().all(|w| w.conn.is_none()) {
        let why = workers
            .iter()
            .find_map(|w| w.stats.first_error.clone())
            .unwrap_or_default();
        eprintln!("tgload: no connection could be set up: {why}");
        return Ok(ExitCode::from(3));
    }

    let measure_from = Instant::now() + args.warmup;
    let end = measure_from + args.duration;
    let mut tasks = JoinSet::new();
    for worker in workers {
        tasks.spawn(worker.run(measure_from, end));
    }
    let mut total = Stats::new()?;
    while let Some(joined) = tasks.join_next().await {
        total.merge(joined.map_err(|e| format!("load task failed: {e}"))?)?;
    }

    report(&args, &total, setup_time);
    Ok(ExitCode::SUCCESS)
}

/// Untimed: a client_credentials grant of the token client, on a connection of its own.
async fn obtain_token(endpoint: &Endpoint, args: &Args) -> Result<String, String> {
    let mut conn = endpoint.connect().await?;
    let basic = basic_auth(&args.token_client_id, &args.token_client_secret)?;
    let path = path_uri(&args.token_path)?;
    let call = Call {
        path: &path,
        basic: Some(&basic),
        form: Some("grant_type=client_credentials".to_owned()),
    };
    let (status, body) = endpoint.send(&mut conn, call).await?;
    serde_json::from_slice::<Value>(&body)
        .ok()
        .filter(|_| status == StatusCode::OK)
        .and_then(|v| v.get("access_token")?.as_str().map(str::to_owned))
        .ok_or_else(|| {
            format!(
                "client_credentials grant of {}: {}",
                args.token_client_id,
                describe(status, &body)
            )
        })
}

/// What to send and what counts as success, per scenario.
struct Plan {
    scenario: Scenario,
    /// Path of the timed requests.
    path: Uri,
    /// Path of the untimed seeding password grants (refresh).
    token_path: Uri,
    /// Credentials of every request but the ceiling's.
    basic: HeaderValue,
    password_form: String,
    invalid_form: String,
    /// The body of every timed request of the cc and introspect scenarios.
    fixed_form: String,
}

impl Plan {
    fn new(args: &Args, introspected: Option<&str>) -> Result<Self, String> {
        let grant = |password: &str| {
            format!(
                "grant_type=password&username={}&password={}",
                form_urlencode(&args.username),
                form_urlencode(password)
            )
        };
        let fixed_form = match (args.scenario, introspected) {
            (Scenario::ClientCredentials, _) => "grant_type=client_credentials".to_owned(),
            (Scenario::Introspect, Some(token)) => format!("token={}", form_urlencode(token)),
            _ => String::new(),
        };
        Ok(Self {
            scenario: args.scenario,
            path: path_uri(&args.path)?,
            token_path: path_uri(&args.token_path)?,
            basic: basic_auth(&args.client_id, &args.client_secret)?,
            password_form: grant(&args.password),
            invalid_form: grant(&format!("{}-wrong", args.password)),
            fixed_form,
        })
    }

    /// The next timed request; `None` for refresh without a live chain.
    fn timed_call(&self, refresh_token: Option<&str>) -> Option<Call<'_>> {
        let form = match self.scenario {
            Scenario::Ceiling => {
                return Some(Call {
                    path: &self.path,
                    basic: None,
                    form: None,
                })
            }
            Scenario::Password => self.password_form.clone(),
            Scenario::Invalid => self.invalid_form.clone(),
            Scenario::ClientCredentials | Scenario::Introspect => self.fixed_form.clone(),
            Scenario::Refresh => format!(
                "grant_type=refresh_token&refresh_token={}",
                form_urlencode(refresh_token?)
            ),
        };
        Some(Call {
            path: &self.path,
            basic: Some(&self.basic),
            form: Some(form),
        })
    }

    /// Untimed password grant that starts a refresh chain.
    fn seed_call(&self) -> Call<'_> {
        Call {
            path: &self.token_path,
            basic: Some(&self.basic),
            form: Some(self.password_form.clone()),
        }
    }

    /// `Ok(Some(token))` carries the rotated refresh token forward; `Err` says why not ok.
    fn judge(&self, status: StatusCode, body: &[u8]) -> Result<Option<String>, String> {
        let json: Option<Value> = serde_json::from_slice(body).ok();
        let field = |name: &str| json.as_ref()?.get(name)?.as_str().map(str::to_owned);
        let ok = match self.scenario {
            Scenario::Password | Scenario::ClientCredentials => {
                status == StatusCode::OK && field("access_token").is_some()
            }
            Scenario::Refresh if status == StatusCode::OK && field("access_token").is_some() => {
                return field("refresh_token")
                    .map(Some)
                    .ok_or_else(|| "refresh grant returned no refresh_token".to_owned());
            }
            Scenario::Refresh => false,
            // RFC 6749 §5.2: a wrong password is 400 invalid_grant; 401 is tolerated.
            Scenario::Invalid => matches!(status.as_u16(), 400 | 401) && field("error").is_some(),
            // RFC 7662 §2.2: a live token is {"active": true, ...}.
            Scenario::Introspect => {
                status == StatusCode::OK
                    && json.as_ref().and_then(|v| v.get("active")?.as_bool()) == Some(true)
            }
            Scenario::Ceiling => status == StatusCode::OK,
        };
        if ok {
            Ok(None)
        } else {
            Err(describe(status, body))
        }
    }

    /// A seeding password grant must yield a refresh token to start a chain.
    fn seed_token(status: StatusCode, body: &[u8]) -> Result<String, String> {
        serde_json::from_slice::<Value>(body)
            .ok()
            .filter(|_| status == StatusCode::OK)
            .and_then(|v| v.get("refresh_token")?.as_str().map(str::to_owned))
            .ok_or_else(|| format!("seeding password grant: {}", describe(status, body)))
    }
}

fn describe(status: StatusCode, body: &[u8]) -> String {
    let text: String = String::from_utf8_lossy(body).chars().take(200).collect();
    format!("HTTP {}: {text}", status.as_u16())
}

/// One connection and its state; owned by one task, so nothing on the hot path is shared
/// except the read-only `Endpoint` and `Plan`.
struct Worker {
    endpoint: Arc<Endpoint>,
    plan: Arc<Plan>,
    conn: Option<Conn>,
    refresh_token: Option<String>,
    stats: Stats,
}

impl Worker {
    fn new(endpoint: Arc<Endpoint>, plan: Arc<Plan>) -> Result<Self, String> {
        Ok(Self {
            endpoint,
            plan,
            conn: None,
            refresh_token: None,
            stats: Stats::new()?,
        })
    }

    /// Untimed: connect and send the first request. A failure is counted as an error and the
    /// worker starts the run unconnected (it reconnects there).
    async fn setup(&mut self, deadline: Instant) {
        let result = timeout_at(deadline, async {
            self.conn = Some(self.endpoint.connect().await?);
            if self.plan.scenario == Scenario::Refresh {
                return self.seed().await;
            }
            let call = self.plan.timed_call(None).ok_or("no request")?;
            let conn = self.conn.as_mut().ok_or("not connected")?;
            let (status, body) = self.endpoint.send(conn, call).await?;
            self.plan.judge(status, &body).map(|_| ())
        })
        .await
        .unwrap_or_else(|_| Err("setup timed out".to_owned()));
        if let Err(e) = result {
            if self.conn.as_ref().is_some_and(|c| c.is_closed()) {
                self.conn = None;
            }
            self.stats.untimed_errors += 1;
            self.stats.note_error(|| format!("setup: {e}"));
        }
    }

    /// Password grant on this connection; its refresh token starts a new chain. A 503 (the
    /// server's hashing queue is full, as under `flood`) is retried after a pause, as a real
    /// client does after Retry-After, and counted in `seed_retries`: seeding is untimed set-up,
    /// not the load being measured. The caller bounds the whole by its deadline.
    async fn seed(&mut self) -> Result<(), String> {
        loop {
            let conn = self.conn.as_mut().ok_or("not connected")?;
            match self.endpoint.send(conn, self.plan.seed_call()).await {
                Ok((status, _)) if status == StatusCode::SERVICE_UNAVAILABLE => {
                    self.stats.seed_retries += 1;
                    tokio::time::sleep(SEED_RETRY_PAUSE).await;
                }
                Ok((status, body)) => {
                    self.refresh_token = Some(Plan::seed_token(status, &body)?);
                    return Ok(());
                }
                Err(e) => {
                    self.conn = None;
                    return Err(e);
                }
            }
        }
    }

    async fn run(mut self, measure_from: Instant, end: Instant) -> Stats {
        loop {
            if Instant::now() >= end {
                break;
            }
            if self.conn.as_ref().is_none_or(Conn::is_closed) {
                self.stats.reconnects += 1;
                match timeout_at(end, self.endpoint.connect()).await {
                    Err(_) => break,
                    Ok(Ok(conn)) => self.conn = Some(conn),
                    Ok(Err(e)) => {
                        self.untimed_failure(measure_from, e, end).await;
                        continue;
                    }
                }
            }
            if self.plan.scenario == Scenario::Refresh && self.refresh_token.is_none() {
                self.stats.reseeds += 1;
                match timeout_at(end, self.seed()).await {
                    Err(_) => break,
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => self.untimed_failure(measure_from, e, end).await,
                }
                continue;
            }
            let (Some(conn), Some(call)) = (
                self.conn.as_mut(),
                self.plan.timed_call(self.refresh_token.as_deref()),
            ) else {
                continue;
            };

            let started = Instant::now();
            let Ok(result) = timeout_at(end, self.endpoint.send(conn, call)).await else {
                break; // still in flight at the deadline: not counted
            };
            let finished = Instant::now();
            // Count what completes inside the measured window (warm-up completions are not).
            let counted = finished >= measure_from;
            match result {
                Ok((status, body)) => {
                    let verdict = self.plan.judge(status, &body);
                    if counted {
                        self.stats
                            .response(status.as_u16(), finished - started, verdict.is_ok());
                    }
                    match verdict {
                        Ok(Some(token)) => self.refresh_token = Some(token),
                        Ok(None) => {}
                        Err(e) => {
                            if counted {
                                self.stats.note_error(|| e);
                            }
                            // The presented token is spent or revoked either way: re-seed.
                            self.refresh_token = None;
                        }
                    }
                }
                Err(e) => {
                    if counted {
                        self.stats.transport_failure();
                        self.stats.note_error(|| e);
                    }
                    self.conn = None;
                    // The server may have rotated the token before the connection broke.
                    self.refresh_token = None;
                }
            }
        }
        self.stats
    }

    async fn untimed_failure(&mut self, measure_from: Instant, e: String, end: Instant) {
        if Instant::now() >= measure_from {
            self.stats.untimed_errors += 1;
            self.stats.note_error(|| e);
        }
        sleep_until((Instant::now() + RETRY_PAUSE).min(end)).await;
    }
}

fn report(args: &Args, stats: &Stats, setup_time: Duration) {
    let secs = args.duration.as_secs_f64();
    let round3 = |x: f64| (x * 1000.0).round() / 1000.0;
    let ms = |v: Option<f64>| v.map(round3);
    let status: serde_json::Map<String, Value> = stats
        .status
        .iter()
        .map(|(code, n)| (code.to_string(), json!(n)))
        .collect();
    let line = json!({
        "tool": concat!("tgload ", env!("CARGO_PKG_VERSION")),
        "scenario": args.scenario.name(),
        "path": args.path,
        "concurrency": args.concurrency,
        "threads": args.threads,
        "duration": args.duration.as_secs(),
        "warmup": args.warmup.as_secs(),
        "requests": stats.requests,
        "ok": stats.ok,
        "errors": stats.errors(),
        "req_per_s": round3(stats.requests as f64 / secs),
        "ok_per_s": round3(stats.ok as f64 / secs),
        "p50_ms": ms(stats.quantile_ms(0.50)),
        "p90_ms": ms(stats.quantile_ms(0.90)),
        "p99_ms": ms(stats.quantile_ms(0.99)),
        "max_ms": ms(stats.max_ms()),
        "mean_ms": ms(stats.mean_ms()),
        "status": status,
        "untimed_errors": stats.untimed_errors,
        "reseeds": stats.reseeds,
        "seed_retries": stats.seed_retries,
        "reconnects": stats.reconnects,
        "setup_s": round3(setup_time.as_secs_f64()),
        "first_error": stats.first_error,
    });
    println!("{line}");

    let show = |v: Option<f64>| v.map_or_else(|| "n/a".to_owned(), |x| format!("{x:.2}"));
    eprintln!(
        "tgload {} c={} {}s (+{}s warm-up): {} requests, {} ok, {} errors, {:.1} req/s; \
         latency ms p50 {} p90 {} p99 {} max {}",
        args.scenario.name(),
        args.concurrency,
        args.duration.as_secs(),
        args.warmup.as_secs(),
        stats.requests,
        stats.ok,
        stats.errors(),
        stats.requests as f64 / secs,
        show(stats.quantile_ms(0.50)),
        show(stats.quantile_ms(0.90)),
        show(stats.quantile_ms(0.99)),
        show(stats.max_ms()),
    );
    if let Some(e) = &stats.first_error {
        eprintln!("  first error: {e}");
    }
}
