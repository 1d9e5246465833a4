//! Command-line flags of `tgload`. Hand-rolled (no clap) to keep the build small; every
//! value is checked here, so the rest of the program works with trusted settings.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

/// Upper bound on measured + warm-up time of one call: the tool must stop by itself.
const MAX_LOAD_SECS: u64 = 60;
const MAX_CONCURRENCY: usize = 1024;

pub const USAGE: &str = "\
Usage: tgload --url https://127.0.0.1:PORT/token --scenario password|refresh|invalid
              (--insecure | --cacert FILE) [options]
Closed-loop HTTPS load on an OAuth2 token endpoint: C keep-alive HTTP/1.1 connections,
one request in flight on each. Prints one JSON line on stdout, a summary on stderr.

  --url URL            token endpoint; loopback only (127.0.0.0/8, ::1, localhost)
  --scenario S         password: grant_type=password (expects 200 + access_token)
                       refresh:  refresh_token chain per connection, rotated tokens
                       invalid:  password grant with a wrong password (expects 400/401 + error)
  --duration SECS      measured time (default 20)
  --warmup SECS        load before the measured window, not recorded (default 0);
                       duration + warmup <= 60
  --concurrency C      connections (default 32, at most 1024)
  --threads N          runtime worker threads (default 2)
  --client-id ID       HTTP Basic client id (default bench-client)
  --client-secret S    HTTP Basic client secret (default bench-secret)
  --username U         resource owner (default alice)
  --password P         resource owner's password (default alice-password);
                       the invalid scenario sends P + \"-wrong\"
  --insecure           accept any server certificate (self-signed servers)
  --cacert FILE        trust the PEM certificate(s) in FILE instead
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    Password,
    Refresh,
    Invalid,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Password => "password",
            Scenario::Refresh => "refresh",
            Scenario::Invalid => "invalid",
        }
    }
}

#[derive(Debug)]
pub enum TlsTrust {
    /// Any certificate; the handshake signature is still checked against it.
    Insecure,
    CaFile(PathBuf),
}

#[derive(Debug)]
pub struct Target {
    /// Resolved address; always a loopback address.
    pub addr: SocketAddr,
    /// Host as TLS SNI / certificate name (no brackets around IPv6).
    pub host: String,
    /// `host:port` as written in the URL, for the Host header.
    pub authority: String,
    pub path: String,
}

#[derive(Debug)]
pub struct Args {
    pub target: Target,
    pub scenario: Scenario,
    pub duration: Duration,
    pub warmup: Duration,
    pub concurrency: usize,
    pub threads: usize,
    pub client_id: String,
    pub client_secret: String,
    pub username: String,
    pub password: String,
    pub trust: TlsTrust,
}

/// Parses `std::env::args()`-style arguments (without the program name).
/// `Err` carries a message for the user; `Ok(None)` means `--help` was asked for.
pub fn parse(mut it: impl Iterator<Item = String>) -> Result<Option<Args>, String> {
    let mut url = None;
    let mut scenario = None;
    let mut duration = 20u64;
    let mut warmup = 0u64;
    let mut concurrency = 32usize;
    let mut threads = 2usize;
    let mut client_id = "bench-client".to_owned();
    let mut client_secret = "bench-secret".to_owned();
    let mut username = "alice".to_owned();
    let mut password = "alice-password".to_owned();
    let mut insecure = false;
    let mut cacert = None;

    while let Some(flag) = it.next() {
        let mut value = || it.next().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "-h" | "--help" => return Ok(None),
            "--url" => url = Some(value()?),
            "--scenario" => {
                scenario = Some(match value()?.as_str() {
                    "password" => Scenario::Password,
                    "refresh" => Scenario::Refresh,
                    "invalid" => Scenario::Invalid,
                    other => return Err(format!("unknown scenario {other:?}")),
                })
            }
            "--duration" => duration = number(&flag, &value()?)?,
            "--warmup" => warmup = number(&flag, &value()?)?,
            "--concurrency" => concurrency = number(&flag, &value()?)?,
            "--threads" => threads = number(&flag, &value()?)?,
            "--client-id" => client_id = value()?,
            "--client-secret" => client_secret = value()?,
            "--username" => username = value()?,
            "--password" => password = value()?,
            "--insecure" => insecure = true,
            "--cacert" => cacert = Some(PathBuf::from(value()?)),
            other => return Err(format!("unknown flag {other:?}")),
        }
    }

    let url = url.ok_or("--url is required")?;
    let scenario = scenario.ok_or("--scenario is required")?;
    if duration == 0 || duration + warmup > MAX_LOAD_SECS {
        return Err(format!(
            "need 1 <= duration and duration + warmup <= {MAX_LOAD_SECS} s"
        ));
    }
    if concurrency == 0 || concurrency > MAX_CONCURRENCY {
        return Err(format!("concurrency must be 1..={MAX_CONCURRENCY}"));
    }
    if threads == 0 {
        return Err("threads must be at least 1".into());
    }
    let trust = match (insecure, cacert) {
        (true, None) => TlsTrust::Insecure,
        (false, Some(path)) => TlsTrust::CaFile(path),
        _ => return Err("give exactly one of --insecure and --cacert FILE".into()),
    };
    Ok(Some(Args {
        target: parse_target(&url)?,
        scenario,
        duration: Duration::from_secs(duration),
        warmup: Duration::from_secs(warmup),
        concurrency,
        threads,
        client_id,
        client_secret,
        username,
        password,
        trust,
    }))
}

fn number<T: std::str::FromStr>(flag: &str, s: &str) -> Result<T, String> {
    s.parse()
        .map_err(|_| format!("{flag} needs a whole number, got {s:?}"))
}

/// Accepts only `https://HOST[:PORT][/path]` whose HOST resolves to loopback addresses only:
/// this tool generates load and must never be pointed at another machine.
fn parse_target(url: &str) -> Result<Target, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad --url {url:?}: {e}"))?;
    if uri.scheme_str() != Some("https") {
        return Err("--url must start with https://".into());
    }
    let authority = uri.authority().ok_or("--url has no host")?;
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(443);
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {host}: {e}"))?
        .collect();
    let addr = *addrs
        .first()
        .ok_or_else(|| format!("{host} resolves to nothing"))?;
    if addrs.iter().any(|a| !a.ip().is_loopback()) {
        return Err(format!(
            "refusing {host}: only loopback targets (127.0.0.0/8, ::1) are allowed"
        ));
    }
    let path = match uri.path_and_query().map(|p| p.as_str()) {
        None | Some("") | Some("/") => "/token".to_owned(),
        Some(p) => p.to_owned(),
    };
    Ok(Target {
        addr,
        host: host.to_owned(),
        authority: authority.as_str().to_owned(),
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Option<Args>, String> {
        parse(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn loopback_url_is_accepted_and_path_defaults_to_token() {
        let a = args(&[
            "--url",
            "https://127.0.0.1:9443",
            "--scenario",
            "refresh",
            "--insecure",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(a.target.path, "/token");
        assert_eq!(a.target.addr.port(), 9443);
        assert_eq!(a.target.authority, "127.0.0.1:9443");
    }

    #[test]
    fn non_loopback_and_plain_http_are_refused() {
        for url in ["https://10.0.0.1:9443/token", "http://127.0.0.1:9443/token"] {
            assert!(args(&["--url", url, "--scenario", "password", "--insecure"]).is_err());
        }
    }

    #[test]
    fn load_time_is_bounded() {
        let base = [
            "--url",
            "https://127.0.0.1:1/token",
            "--scenario",
            "password",
            "--insecure",
        ];
        let mut long = base.to_vec();
        long.extend(["--duration", "50", "--warmup", "11"]);
        assert!(args(&long).is_err());
        let mut zero = base.to_vec();
        zero.extend(["--duration", "0"]);
        assert!(args(&zero).is_err());
    }

    #[test]
    fn exactly_one_trust_mode_is_required() {
        assert!(args(&[
            "--url",
            "https://127.0.0.1:1/token",
            "--scenario",
            "password"
        ])
        .is_err());
    }
}
