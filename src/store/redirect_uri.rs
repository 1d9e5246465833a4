//! A client's registered redirect URIs: the rules for registering one, and how a presented
//! `redirect_uri` is compared with it (RFC 9700 §4.1.3 exact matching, RFC 8252 §7.3 loopback
//! ports). Here, beside [`super::model::Client::check`], so that the clients file, the clients
//! table and the protocol layer share one parser.

use std::fmt;

/// A redirect URI that passed the registration rules of [`RedirectUri::parse`].
#[derive(Clone, PartialEq, Eq)]
pub struct RedirectUri {
    /// Exactly as registered: exact matching compares this text.
    text: String,
    /// `http://127.0.0.1…` or `http://[::1]…`: any port matches (RFC 8252 §7.3).
    loopback: bool,
}

impl fmt::Debug for RedirectUri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.text, f)
    }
}

impl RedirectUri {
    /// RFC 6749 §3.1.2 and RFC 8252 §7: an absolute URI without a fragment; `https` (claimed
    /// HTTPS, web apps), `http` only on the loopback addresses 127.0.0.1 and [::1] (native apps;
    /// `localhost` is refused as RFC 8252 §8.3 advises), or a private-use scheme in
    /// reverse-domain form such as `com.example.app:/callback` (RFC 8252 §7.1). The error says
    /// what is wrong, for the operator.
    pub fn parse(text: &str) -> Result<Self, String> {
        if text.is_empty() || text.len() > 2048 {
            return Err("must be between 1 and 2048 characters".into());
        }
        if text.bytes().any(|b| b <= b' ' || b == 0x7f) {
            return Err("must not contain spaces or control characters".into());
        }
        if text.contains('#') {
            return Err("must not have a fragment (RFC 6749 §3.1.2)".into());
        }
        let url = url::Url::parse(text).map_err(|err| format!("is not an absolute URI ({err})"))?;
        if !url.username().is_empty() || url.password().is_some() {
            return Err("must not hold a user name or password".into());
        }
        let loopback = match url.scheme() {
            "https" => {
                if url.host().is_none() {
                    return Err("an https redirect URI needs a host".into());
                }
                false
            }
            "http" => match url.host() {
                Some(url::Host::Ipv4(ip)) if ip == std::net::Ipv4Addr::LOCALHOST => true,
                Some(url::Host::Ipv6(ip)) if ip == std::net::Ipv6Addr::LOCALHOST => true,
                _ => {
                    return Err("plain http is allowed only for the loopback addresses \
                         http://127.0.0.1 and http://[::1] (RFC 8252 §7.3); use https"
                        .into())
                }
            },
            scheme if scheme.contains('.') => false,
            _ => {
                return Err(
                    "a private-use scheme must be a reverse domain name such as \
                     com.example.app (RFC 8252 §7.1)"
                        .into(),
                )
            }
        };
        Ok(Self {
            text: text.to_owned(),
            loopback,
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `presented` (a request's `redirect_uri`) is this URI. RFC 9700 §4.1.3: the
    /// strings are compared exactly, except that for a loopback URI the port is not compared
    /// (RFC 8252 §7.3: the app picks a free port when it needs one).
    pub fn matches(&self, presented: &str) -> bool {
        if presented == self.text {
            return true;
        }
        if !self.loopback || presented.contains('#') {
            return false;
        }
        // Both as written, with the port (and only the port) taken out.
        match (without_port(&self.text), without_port(presented)) {
            (Some(registered), Some(presented)) => registered == presented,
            _ => false,
        }
    }
}

/// A loopback URI `http://127.0.0.1:PORT/rest` as `http://127.0.0.1/rest` (also `[::1]`), or
/// `None` when `uri` is not written that way.
fn without_port(uri: &str) -> Option<String> {
    let rest = uri.strip_prefix("http://")?;
    let (host, after_host) = if let Some(after) = rest.strip_prefix("[::1]") {
        ("[::1]", after)
    } else if let Some(after) = rest.strip_prefix("127.0.0.1") {
        ("127.0.0.1", after)
    } else {
        return None;
    };
    let tail = match after_host.strip_prefix(':') {
        Some(port_and_rest) => {
            let digits = port_and_rest.bytes().take_while(u8::is_ascii_digit).count();
            let (port, tail) = port_and_rest.split_at(digits);
            if port.is_empty() || port.len() > 5 || port.parse::<u16>().is_err() {
                return None;
            }
            tail
        }
        None => after_host,
    };
    if !(tail.is_empty() || tail.starts_with(['/', '?'])) {
        return None;
    }
    Some(format!("http://{host}{tail}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_accepts_https_loopback_and_private_use_schemes() {
        for good in [
            "https://app.example/callback",
            "http://127.0.0.1/callback",
            "http://127.0.0.1:8400/cb?x=1",
            "http://[::1]/cb",
            "com.example.app:/callback",
            "com.example.app:callback",
        ] {
            assert!(RedirectUri::parse(good).is_ok(), "{good}");
        }
    }

    #[test]
    fn registration_refuses_relative_fragments_plain_http_and_bare_schemes() {
        for (bad, why) in [
            ("/callback", "absolute"),
            ("https://app.example/cb#frag", "fragment"),
            ("http://app.example/cb", "loopback"),
            ("http://localhost:8000/cb", "loopback"),
            ("javascript:alert(1)", "reverse domain"),
            ("myapp:/cb", "reverse domain"),
            ("https://user:pw@app.example/cb", "user name"),
            ("https://app.example/a b", "spaces"),
            ("", "between"),
        ] {
            let err = RedirectUri::parse(bad).unwrap_err();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn matching_is_exact_except_for_a_loopback_port() {
        let https = RedirectUri::parse("https://app.example/cb").unwrap();
        assert!(https.matches("https://app.example/cb"));
        assert!(!https.matches("https://app.example/cb/"));
        assert!(!https.matches("https://app.example/cb?x=1"));
        assert!(!https.matches("https://APP.example/cb"));
        assert!(!https.matches("https://app.example:443/cb"));

        let loopback = RedirectUri::parse("http://127.0.0.1/cb").unwrap();
        assert!(loopback.matches("http://127.0.0.1:51004/cb"));
        assert!(loopback.matches("http://127.0.0.1/cb"));
        assert!(!loopback.matches("http://127.0.0.1:51004/other"));
        assert!(!loopback.matches("http://127.0.0.1:51004/cb#x"));
        assert!(!loopback.matches("http://127.0.0.1:99999/cb"));
        assert!(!loopback.matches("http://127.0.0.1.evil.example/cb"));
        assert!(!loopback.matches("http://[::1]:51004/cb"));
        assert!(!loopback.matches("http://127.0.0.1@evil.example/cb"));

        let with_port = RedirectUri::parse("http://[::1]:8000/cb").unwrap();
        assert!(with_port.matches("http://[::1]:9000/cb"));
        assert!(with_port.matches("http://[::1]/cb"));
    }
}
