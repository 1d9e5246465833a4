//! Command-line flags of `tgload`. Hand-rolled (no clap) to keep the build small; every
//! value is checked here, so the rest of the program works with trusted settings.

use std::path::PathBuf;
use std::time::Duration;

use tgload::target::{parse_target, Target, TlsTrust};

/// Upper bound on measured + warm-up time of one call: the tool must stop by itself.
const MAX_LOAD_SECS: u64 = 60;
const MAX_CONCURRENCY: usize = 1024;

pub const USAGE: &str = "\
Usage: tgload --url https://127.0.0.1:PORT/PATH --scenario SCENARIO
              (--insecure | --cacert FILE) [options]
Closed-loop HTTPS load on one endpoint of an OAuth2 server: C keep-alive HTTP/1.1
connections, one request in flight on each. Prints one JSON line on stdout, a summary on
stderr.

  --url URL            where the timed requests go; loopback only (127.0.0.0/8, ::1,
                       localhost). Without a path: /token, /introspect for introspect,
                       /health for ceiling
  --scenario S         password:   grant_type=password (expects 200 + access_token)
                       refresh:    refresh_token chain per connection, rotated tokens
                       invalid:    password grant with a wrong password (expects 400/401 + error)
                       cc:         grant_type=client_credentials (expects 200 + access_token)
                       introspect: RFC 7662 POST of one live access token, got once before
                                   the load by a client_credentials grant of the token client
                                   (expects 200 + \"active\":true)
                       ceiling:    GET without credentials (expects 200): what TLS + HTTP
                                   cost on this machine
  --duration SECS      measured time (default 20)
  --warmup SECS        load before the measured window, not recorded (default 0);
                       duration + warmup <= 60
  --concurrency C      connections (default 32, at most 1024)
  --threads N          runtime worker threads (default 2)
  --client-id ID       HTTP Basic client id of the requests (default bench-client);
                       for introspect: the resource server that introspects
  --client-secret S    its secret (default bench-secret)
  --token-client-id ID  introspect: the client whose client_credentials token is
                       introspected (default bench-client)
  --token-client-secret S  its secret (default bench-secret)
  --token-path PATH    token endpoint for untimed grants (refresh seeds, the introspected
                       token) on the same host (default /token)
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
    ClientCredentials,
    Introspect,
    Ceiling,
}

impl Scenario {
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Password => "password",
            Scenario::Refresh => "refresh",
            Scenario::Invalid => "invalid",
            Scenario::ClientCredentials => "cc",
            Scenario::Introspect => "introspect",
            Scenario::Ceiling => "ceiling",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "password" => Scenario::Password,
            "refresh" => Scenario::Refresh,
            "invalid" => Scenario::Invalid,
            "cc" => Scenario::ClientCredentials,
            "introspect" => Scenario::Introspect,
            "ceiling" => Scenario::Ceiling,
            _ => return None,
        })
    }

    /// Path of the timed requests when `--url` names none.
    fn default_path(self) -> &'static str {
        match self {
            Scenario::Introspect => "/introspect",
            Scenario::Ceiling => "/health",
            _ => "/token",
        }
    }
}

#[derive(Debug)]
pub struct Args {
    pub target: Target,
    /// Path of the timed requests.
    pub path: String,
    /// Path of untimed token requests (refresh seeds, the token to introspect).
    pub token_path: String,
    pub scenario: Scenario,
    pub duration: Duration,
    pub warmup: Duration,
    pub concurrency: usize,
    pub threads: usize,
    pub client_id: String,
    pub client_secret: String,
    pub token_client_id: String,
    pub token_client_secret: String,
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
    let mut token_client_id = "bench-client".to_owned();
    let mut token_client_secret = "bench-secret".to_owned();
    let mut token_path = "/token".to_owned();
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
                let name = value()?;
                scenario = Some(
                    Scenario::parse(&name).ok_or_else(|| format!("unknown scenario {name:?}"))?,
                );
            }
            "--duration" => duration = number(&flag, &value()?)?,
            "--warmup" => warmup = number(&flag, &value()?)?,
            "--concurrency" => concurrency = number(&flag, &value()?)?,
            "--threads" => threads = number(&flag, &value()?)?,
            "--client-id" => client_id = value()?,
            "--client-secret" => client_secret = value()?,
            "--token-client-id" => token_client_id = value()?,
            "--token-client-secret" => token_client_secret = value()?,
            "--token-path" => token_path = value()?,
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
    if !token_path.starts_with('/') {
        return Err("--token-path must start with /".into());
    }
    let trust = TlsTrust::from_flags(insecure, cacert)?;
    let target = parse_target(&url)?;
    let path = target
        .path
        .clone()
        .unwrap_or_else(|| scenario.default_path().to_owned());
    Ok(Some(Args {
        target,
        path,
        token_path,
        scenario,
        duration: Duration::from_secs(duration),
        warmup: Duration::from_secs(warmup),
        concurrency,
        threads,
        client_id,
        client_secret,
        token_client_id,
        token_client_secret,
        username,
        password,
        trust,
    }))
}

fn number<T: std::str::FromStr>(flag: &str, s: &str) -> Result<T, String> {
    s.parse()
        .map_err(|_| format!("{flag} needs a whole number, got {s:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Result<Option<Args>, String> {
        parse(list.iter().map(|s| s.to_string()))
    }

    #[test]
    fn path_defaults_per_scenario() {
        for (scenario, path) in [
            ("refresh", "/token"),
            ("cc", "/token"),
            ("introspect", "/introspect"),
            ("ceiling", "/health"),
        ] {
            let a = args(&[
                "--url",
                "https://127.0.0.1:9443",
                "--scenario",
                scenario,
                "--insecure",
            ])
            .unwrap()
            .unwrap();
            assert_eq!(a.path, path, "{scenario}");
            assert_eq!(a.token_path, "/token");
            assert_eq!(a.target.addr.port(), 9443);
        }
        let a = args(&[
            "--url",
            "https://127.0.0.1:9443/.well-known/oauth-authorization-server",
            "--scenario",
            "ceiling",
            "--insecure",
        ])
        .unwrap()
        .unwrap();
        assert_eq!(a.path, "/.well-known/oauth-authorization-server");
    }

    #[test]
    fn non_loopback_plain_http_and_unknown_scenarios_are_refused() {
        for url in ["https://10.0.0.1:9443/token", "http://127.0.0.1:9443/token"] {
            assert!(args(&["--url", url, "--scenario", "password", "--insecure"]).is_err());
        }
        assert!(args(&[
            "--url",
            "https://127.0.0.1:1/token",
            "--scenario",
            "nope",
            "--insecure"
        ])
        .is_err());
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
