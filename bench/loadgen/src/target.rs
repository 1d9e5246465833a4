//! Where the tools send requests, and which server certificates they trust. Shared by
//! `tgload` and `firsttoken`.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

#[derive(Debug)]
pub enum TlsTrust {
    /// Any certificate; the handshake signature is still checked against it.
    Insecure,
    CaFile(PathBuf),
}

impl TlsTrust {
    /// Exactly one of `--insecure` and `--cacert FILE`.
    pub fn from_flags(insecure: bool, cacert: Option<PathBuf>) -> Result<Self, String> {
        match (insecure, cacert) {
            (true, None) => Ok(TlsTrust::Insecure),
            (false, Some(path)) => Ok(TlsTrust::CaFile(path)),
            _ => Err("give exactly one of --insecure and --cacert FILE".into()),
        }
    }
}

#[derive(Debug)]
pub struct Target {
    /// Resolved address; always a loopback address.
    pub addr: SocketAddr,
    /// Host as TLS SNI / certificate name (no brackets around IPv6).
    pub host: String,
    /// `host:port` as written in the URL, for the Host header.
    pub authority: String,
    /// Path (and query) of the URL; `None` when the URL has none (or just `/`).
    pub path: Option<String>,
}

/// Accepts only `https://HOST[:PORT][/path]` whose HOST resolves to loopback addresses only:
/// these tools generate load and must never be pointed at another machine.
pub fn parse_target(url: &str) -> Result<Target, String> {
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
        None | Some("") | Some("/") => None,
        Some(p) => Some(p.to_owned()),
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

    #[test]
    fn loopback_url_is_accepted() {
        let t = parse_target("https://127.0.0.1:9443").unwrap();
        assert_eq!(t.path, None);
        assert_eq!(t.addr.port(), 9443);
        assert_eq!(t.authority, "127.0.0.1:9443");
        let t = parse_target("https://127.0.0.1:9443/.well-known/x").unwrap();
        assert_eq!(t.path.as_deref(), Some("/.well-known/x"));
    }

    #[test]
    fn non_loopback_and_plain_http_are_refused() {
        for url in ["https://10.0.0.1:9443/token", "http://127.0.0.1:9443/token"] {
            assert!(parse_target(url).is_err(), "{url}");
        }
    }

    #[test]
    fn exactly_one_trust_mode_is_required() {
        assert!(TlsTrust::from_flags(false, None).is_err());
        assert!(TlsTrust::from_flags(true, Some(PathBuf::from("x"))).is_err());
        assert!(TlsTrust::from_flags(true, None).is_ok());
    }
}
