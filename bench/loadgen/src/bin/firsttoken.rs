//! `firsttoken`: how long a server takes from being spawned to serving its first token.
//!
//! Spawns the server command given after `--`, then tries a client_credentials grant on a
//! fresh connection every `--interval-ms` until one answers 200 with an `access_token`; the
//! time from just before the spawn to the end of that response is one run. Then the server
//! gets SIGTERM (through kill(1): this crate has no unsafe code and no libc), is waited for,
//! and the next run starts. Prints one JSON line on stdout.

use std::fs::OpenOptions;
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::net::TcpStream;

use tgload::client::{basic_auth, path_uri, Call, Endpoint};
use tgload::target::{parse_target, TlsTrust};

const USAGE: &str = "\
Usage: firsttoken --url https://127.0.0.1:PORT/token (--insecure | --cacert FILE) [options]
                  -- SERVER_COMMAND [ARGS...]
Runs SERVER_COMMAND (which must listen on the URL's port) and measures the time from spawning
it to the first client_credentials token it serves. One JSON line on stdout.

  --url URL            token endpoint of the server to be started; loopback only
  --runs N             starts to measure, one after the other (default 5)
  --interval-ms MS     pause between attempts (default 1); every attempt opens a new
                       connection
  --timeout SECS       give up on a run after this long (default 30)
  --client-id ID       HTTP Basic client id (default bench-client)
  --client-secret S    its secret (default bench-secret)
  --server-log FILE    append the server's stdout and stderr there (default: discarded)
  --pid-file FILE      the running server's pid is written there (emptied once it is
                       stopped), so a caller can stop it if firsttoken itself is killed
  --insecure           accept any server certificate (self-signed servers)
  --cacert FILE        trust the PEM certificate(s) in FILE instead
";

struct Args {
    url: String,
    runs: usize,
    interval: Duration,
    timeout: Duration,
    client_id: String,
    client_secret: String,
    server_log: Option<String>,
    pid_file: Option<String>,
    trust: TlsTrust,
    command: Vec<String>,
}

fn parse(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut url = None;
    let mut runs = 5usize;
    let mut interval_ms = 1u64;
    let mut timeout_s = 30u64;
    let mut client_id = "bench-client".to_owned();
    let mut client_secret = "bench-secret".to_owned();
    let mut server_log = None;
    let mut pid_file = None;
    let mut insecure = false;
    let mut cacert = None;
    let mut command = Vec::new();
    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        let number = |s: String| {
            s.parse::<u64>()
                .map_err(|_| format!("{flag} needs a whole number, got {s:?}"))
        };
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--url" => url = Some(value()?),
            "--runs" => runs = usize::try_from(number(value()?)?).map_err(|e| e.to_string())?,
            "--interval-ms" => interval_ms = number(value()?)?,
            "--timeout" => timeout_s = number(value()?)?,
            "--client-id" => client_id = value()?,
            "--client-secret" => client_secret = value()?,
            "--server-log" => server_log = Some(value()?),
            "--pid-file" => pid_file = Some(value()?),
            "--insecure" => insecure = true,
            "--cacert" => cacert = Some(value()?.into()),
            "--" => {
                command = it.by_ref().collect();
                break;
            }
            other => return Err(format!("unknown flag {other:?}")),
        }
    }
    if command.is_empty() {
        return Err("the server command goes after --".into());
    }
    if !(1..=50).contains(&runs) || !(1..=300).contains(&timeout_s) || interval_ms > 1000 {
        return Err("need 1 <= runs <= 50, 1 <= timeout <= 300, interval-ms <= 1000".into());
    }
    Ok(Some(Args {
        url: url.ok_or("--url is required")?,
        runs,
        interval: Duration::from_millis(interval_ms),
        timeout: Duration::from_secs(timeout_s),
        client_id,
        client_secret,
        server_log,
        pid_file,
        trust: TlsTrust::from_flags(insecure, cacert)?,
        command,
    }))
}

fn main() -> ExitCode {
    let args = match parse(std::env::args().skip(1)) {
        Ok(Some(args)) => args,
        Ok(None) => {
            print!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("firsttoken: {e}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // One worker thread: the prober should take as little of the machine as it can while
    // the server starts.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("firsttoken: cannot start runtime: {e}");
            return ExitCode::from(3);
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("firsttoken: {e}");
            ExitCode::from(3)
        }
    }
}

/// What one run saw, in ms after the spawn.
struct Run {
    first_token_ms: f64,
    first_connect_ms: f64,
    attempts: u32,
}

async fn run(args: Args) -> Result<(), String> {
    let target = parse_target(&args.url)?;
    let path = path_uri(target.path.as_deref().unwrap_or("/token"))?;
    let endpoint = Endpoint::new(&target, &args.trust)?;
    let basic = basic_auth(&args.client_id, &args.client_secret)?;
    let mut runs = Vec::with_capacity(args.runs);
    for i in 0..args.runs {
        // Something already answering there would be measured instead of the new server.
        if TcpStream::connect(target.addr).await.is_ok() {
            return Err(format!(
                "something already listens on {} before run {}",
                target.addr,
                i + 1
            ));
        }
        let mut child = spawn(&args)?;
        let noted = note_pid(&args, Some(child.id()));
        let result = match noted {
            Ok(()) => probe(&args, &endpoint, target.addr, &path, &basic, &mut child).await,
            Err(e) => Err(e),
        };
        stop(&mut child).await;
        note_pid(&args, None)?;
        let run = result?;
        eprintln!(
            "firsttoken run {}: first token after {:.1} ms (listening after {:.1} ms, {} attempts)",
            i + 1,
            run.first_token_ms,
            run.first_connect_ms,
            run.attempts
        );
        runs.push(run);
    }
    let mut sorted: Vec<f64> = runs.iter().map(|r| r.first_token_ms).collect();
    sorted.sort_by(f64::total_cmp);
    let median = median(&sorted);
    let round1 = |x: f64| (x * 10.0).round() / 10.0;
    let line = json!({
        "tool": concat!("firsttoken ", env!("CARGO_PKG_VERSION")),
        "runs": runs.len(),
        "first_token_ms": runs.iter().map(|r| round1(r.first_token_ms)).collect::<Vec<_>>(),
        "first_connect_ms": runs.iter().map(|r| round1(r.first_connect_ms)).collect::<Vec<_>>(),
        "attempts": runs.iter().map(|r| r.attempts).collect::<Vec<_>>(),
        "min_ms": sorted.first().copied().map(round1),
        "median_ms": median.map(round1),
        "max_ms": sorted.last().copied().map(round1),
    });
    println!("{line}");
    Ok(())
}

/// Writes the server's pid to `--pid-file` (or empties it).
fn note_pid(args: &Args, pid: Option<u32>) -> Result<(), String> {
    let Some(path) = &args.pid_file else {
        return Ok(());
    };
    let text = pid.map(|p| p.to_string()).unwrap_or_default();
    std::fs::write(path, text).map_err(|e| format!("write {path}: {e}"))
}

fn median(sorted: &[f64]) -> Option<f64> {
    let n = sorted.len();
    let mid = sorted.get(n / 2).copied()?;
    if n % 2 == 1 {
        Some(mid)
    } else {
        Some((sorted.get(n / 2 - 1).copied()? + mid) / 2.0)
    }
}

fn spawn(args: &Args) -> Result<Child, String> {
    let (program, rest) = args.command.split_first().ok_or("no server command")?;
    let mut command = Command::new(program);
    command.args(rest).stdin(Stdio::null());
    match &args.server_log {
        Some(path) => {
            let open = || {
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| format!("open {path}: {e}"))
            };
            command.stdout(open()?).stderr(open()?);
        }
        None => {
            command.stdout(Stdio::null()).stderr(Stdio::null());
        }
    }
    command
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))
}

/// Tries until a token comes back. The clock starts right before the spawn, which `spawn`
/// did just before: the few µs in between are noise at this scale.
async fn probe(
    args: &Args,
    endpoint: &Endpoint,
    addr: std::net::SocketAddr,
    path: &hyper::Uri,
    basic: &hyper::header::HeaderValue,
    child: &mut Child,
) -> Result<Run, String> {
    let started = Instant::now();
    let deadline = started + args.timeout;
    let mut attempts = 0u32;
    let mut first_connect = None;
    let mut last_error = String::new();
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the server exited during startup ({status})"));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "no token within {:?} ({attempts} attempts; last: {last_error})",
                args.timeout
            ));
        }
        attempts += 1;
        match TcpStream::connect(addr).await {
            Err(e) => last_error = format!("connect: {e}"),
            Ok(tcp) => {
                first_connect.get_or_insert_with(|| started.elapsed());
                let call = Call {
                    path,
                    basic: Some(basic),
                    form: Some("grant_type=client_credentials".to_owned()),
                };
                let attempt = async {
                    let mut conn = endpoint.handshake(tcp).await?;
                    endpoint.send(&mut conn, call).await
                };
                match tokio::time::timeout(Duration::from_secs(5), attempt).await {
                    Ok(Ok((status, body))) => {
                        let token = serde_json::from_slice::<Value>(&body)
                            .ok()
                            .and_then(|v| v.get("access_token")?.as_str().map(|_| ()));
                        if status.as_u16() == 200 && token.is_some() {
                            let ms = |d: Duration| d.as_secs_f64() * 1000.0;
                            return Ok(Run {
                                first_token_ms: ms(started.elapsed()),
                                first_connect_ms: first_connect.map_or(0.0, ms),
                                attempts,
                            });
                        }
                        let text: String =
                            String::from_utf8_lossy(&body).chars().take(200).collect();
                        last_error = format!("HTTP {}: {text}", status.as_u16());
                    }
                    Ok(Err(e)) => last_error = e,
                    Err(_) => last_error = "request timed out".to_owned(),
                }
            }
        }
        tokio::time::sleep(args.interval).await;
    }
}

/// SIGTERM, up to 10 s for a graceful stop, then SIGKILL.
async fn stop(child: &mut Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .stderr(Stdio::null())
        .status();
    for _ in 0..1000 {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let _ = child.kill();
    let _ = child.wait();
}
