//! Pure parsers for what arrives on the wire: the form body and the HTTP Basic header.
//! No I/O and no framework types, so unit tests, property tests and fuzzers can call them.

use std::collections::{BTreeMap, BTreeSet};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use percent_encoding::percent_decode;
use secrecy::SecretString;

/// Why a request could not be parsed; every variant is an `invalid_request`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParamError {
    #[error("parameter `{}` is repeated", printable(.0))]
    Repeated(String),
    #[error("the request body is not valid UTF-8 after percent-decoding")]
    NotUtf8,
    #[error("a parameter name is empty")]
    EmptyName,
    /// No protocol value holds one, PostgreSQL text cannot store one, and C-based tools that
    /// read logs or files stop at one.
    #[error("a parameter contains a NUL byte")]
    Nul,
    #[error("the Authorization header is not valid Basic credentials: {0}")]
    MalformedBasic(&'static str),
}

/// RFC 6749 §5.2 allows only %x20-21 / %x23-5B / %x5D-7E in `error_description`; anything
/// else from the request is replaced before it is echoed.
fn printable(text: &str) -> String {
    text.chars()
        .take(64)
        .map(|c| match c {
            ' ' | '!' | '#'..='[' | ']'..='~' => c,
            _ => '?',
        })
        .collect()
}

/// Decoded `application/x-www-form-urlencoded` parameters.
///
/// RFC 6749 §3.1/§3.2: parameters sent without a value are treated as omitted, and no parameter
/// may appear more than once.
#[derive(Default, Clone, PartialEq, Eq)]
pub struct FormParams {
    values: BTreeMap<String, String>,
}

/// Names only: values include passwords and secrets.
impl std::fmt::Debug for FormParams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_set().entries(self.values.keys()).finish()
    }
}

impl FormParams {
    pub fn get(&self, name: &str) -> Option<&str> {
        self.values.get(name).map(String::as_str)
    }

    pub fn contains(&self, name: &str) -> bool {
        self.values.contains_key(name)
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }
}

/// One name or value of a form body: `+` is a space, `%XX` a byte, and the bytes must be UTF-8
/// without NUL.
fn decode_component(raw: &[u8]) -> Result<String, ParamError> {
    let plus_as_space: Vec<u8> = raw
        .iter()
        .map(|&byte| if byte == b'+' { b' ' } else { byte })
        .collect();
    let bytes: Vec<u8> = percent_decode(&plus_as_space).collect();
    if bytes.contains(&0) {
        return Err(ParamError::Nul);
    }
    String::from_utf8(bytes).map_err(|_| ParamError::NotUtf8)
}

/// Parses a form body (WHATWG `application/x-www-form-urlencoded`, strict about UTF-8).
pub fn parse_form(body: &[u8]) -> Result<FormParams, ParamError> {
    let mut values = BTreeMap::new();
    // A set, not a list: a body of thousands of distinct empty names made the repeat check
    // quadratic.
    let mut seen_empty = BTreeSet::new();
    for pair in body.split(|&byte| byte == b'&') {
        if pair.is_empty() {
            continue;
        }
        let mut halves = pair.splitn(2, |&byte| byte == b'=');
        let raw_name = halves.next().unwrap_or_default();
        let raw_value = halves.next().unwrap_or_default();
        let name = decode_component(raw_name)?;
        let value = decode_component(raw_value)?;
        if name.is_empty() {
            return Err(ParamError::EmptyName);
        }
        if values.contains_key(&name) || seen_empty.contains(&name) {
            return Err(ParamError::Repeated(name));
        }
        if value.is_empty() {
            seen_empty.insert(name);
        } else {
            values.insert(name, value);
        }
    }
    Ok(FormParams { values })
}

/// Client credentials from an `Authorization: Basic` header (RFC 6749 §2.3.1, RFC 7617).
#[derive(Clone)]
pub struct BasicCredentials {
    pub client_id: String,
    pub client_secret: SecretString,
}

impl std::fmt::Debug for BasicCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicCredentials")
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

/// The outcome of reading an `Authorization` header on the token endpoint.
#[derive(Debug, Clone)]
pub enum AuthorizationHeader {
    Basic(BasicCredentials),
    /// A scheme other than Basic: the client did not authenticate in a way we accept.
    OtherScheme,
}

/// Parses an `Authorization` header value.
///
/// RFC 6749 §2.3.1: the client id and secret are form-urlencoded before they are joined with
/// `:` and base64-encoded, so both are decoded after splitting.
pub fn parse_authorization(value: &[u8]) -> Result<AuthorizationHeader, ParamError> {
    let value = std::str::from_utf8(value).map_err(|_| ParamError::MalformedBasic("not UTF-8"))?;
    let value = value.trim();
    let (scheme, rest) = match value.split_once(' ') {
        Some((scheme, rest)) => (scheme, rest.trim_start()),
        None => (value, ""),
    };
    if !scheme.eq_ignore_ascii_case("basic") {
        return Ok(AuthorizationHeader::OtherScheme);
    }
    if rest.is_empty() {
        return Err(ParamError::MalformedBasic("no credentials after `Basic`"));
    }
    let decoded = STANDARD
        .decode(rest)
        .map_err(|_| ParamError::MalformedBasic("invalid base64"))?;
    let decoded =
        String::from_utf8(decoded).map_err(|_| ParamError::MalformedBasic("not UTF-8"))?;
    if decoded.contains('\0') {
        return Err(ParamError::Nul);
    }
    let (raw_id, raw_secret) = decoded.split_once(':').ok_or(ParamError::MalformedBasic(
        "no `:` between client id and secret",
    ))?;
    let not_utf8 = |what: &'static str| {
        move |err| match err {
            ParamError::Nul => ParamError::Nul,
            _ => ParamError::MalformedBasic(what),
        }
    };
    let client_id =
        decode_component(raw_id.as_bytes()).map_err(not_utf8("client id is not UTF-8"))?;
    let client_secret =
        decode_component(raw_secret.as_bytes()).map_err(not_utf8("client secret is not UTF-8"))?;
    if client_id.is_empty() {
        return Err(ParamError::MalformedBasic("empty client id"));
    }
    Ok(AuthorizationHeader::Basic(BasicCredentials {
        client_id,
        client_secret: SecretString::from(client_secret),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use secrecy::ExposeSecret;

    #[test]
    fn form_decodes_plus_and_percent() {
        let form = parse_form(b"grant_type=password&username=a+b&password=p%26%3D%2B").unwrap();
        assert_eq!(form.get("grant_type"), Some("password"));
        assert_eq!(form.get("username"), Some("a b"));
        assert_eq!(form.get("password"), Some("p&=+"));
    }

    #[test]
    fn form_treats_empty_values_as_omitted() {
        let form = parse_form(b"scope=&grant_type=password&&flag").unwrap();
        assert_eq!(form.get("scope"), None);
        assert_eq!(form.get("flag"), None);
        assert_eq!(form.len(), 1);
    }

    #[test]
    fn form_rejects_repeated_parameters_even_if_one_is_empty() {
        assert_eq!(
            parse_form(b"scope=a&scope=b"),
            Err(ParamError::Repeated("scope".into()))
        );
        assert_eq!(
            parse_form(b"scope=&scope=b"),
            Err(ParamError::Repeated("scope".into()))
        );
    }

    #[test]
    fn form_rejects_invalid_utf8_after_decoding() {
        assert_eq!(parse_form(b"username=%C3%28"), Err(ParamError::NotUtf8));
        assert_eq!(parse_form(b"username=\xff"), Err(ParamError::NotUtf8));
        assert_eq!(parse_form(b"username=%C0%AF"), Err(ParamError::NotUtf8));
    }

    #[test]
    fn a_nul_byte_in_a_name_or_value_is_refused() {
        for body in [
            &b"username=a%00b&grant_type=password"[..],
            b"username=a\0b",
            b"user%00name=a",
            b"\0=a",
            b"password=%00",
        ] {
            assert_eq!(parse_form(body), Err(ParamError::Nul), "{body:?}");
        }
    }

    #[test]
    fn a_nul_byte_in_basic_credentials_is_refused() {
        for raw in ["a\0b:secret", "id:se\0cret", "a%00b:secret", "id:s%00"] {
            let header = format!("Basic {}", STANDARD.encode(raw));
            assert_eq!(
                parse_authorization(header.as_bytes()).map(|_| ()),
                Err(ParamError::Nul),
                "{raw:?}"
            );
        }
    }

    #[test]
    fn form_rejects_empty_names() {
        assert_eq!(parse_form(b"=x"), Err(ParamError::EmptyName));
    }

    #[test]
    fn malformed_percent_escapes_pass_through_literally() {
        let form = parse_form(b"password=100%").unwrap();
        assert_eq!(form.get("password"), Some("100%"));
    }

    #[test]
    fn basic_credentials_are_form_decoded_after_base64() {
        // "my%3Aclient:s%C3%A9cret+x" → id "my:client", secret "sécret x"
        let header = format!("Basic {}", STANDARD.encode("my%3Aclient:s%C3%A9cret+x"));
        let AuthorizationHeader::Basic(creds) = parse_authorization(header.as_bytes()).unwrap()
        else {
            panic!("expected Basic")
        };
        assert_eq!(creds.client_id, "my:client");
        assert_eq!(creds.client_secret.expose_secret(), "sécret x");
    }

    #[test]
    fn basic_scheme_is_case_insensitive_and_secret_may_contain_colons() {
        let header = format!("bAsIc {}", STANDARD.encode("id:a:b"));
        let AuthorizationHeader::Basic(creds) = parse_authorization(header.as_bytes()).unwrap()
        else {
            panic!("expected Basic")
        };
        assert_eq!(creds.client_id, "id");
        assert_eq!(creds.client_secret.expose_secret(), "a:b");
    }

    #[test]
    fn malformed_basic_headers_are_errors() {
        for bad in [
            "Basic".to_owned(),
            "Basic !!!notbase64".to_owned(),
            format!("Basic {}", STANDARD.encode("no-colon")),
            format!("Basic {}", STANDARD.encode(":secret")),
            format!("Basic {}", STANDARD.encode([0xff, b':', b'x'])),
        ] {
            assert!(
                matches!(
                    parse_authorization(bad.as_bytes()),
                    Err(ParamError::MalformedBasic(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn other_schemes_are_reported_as_such() {
        assert!(matches!(
            parse_authorization(b"Bearer abc"),
            Ok(AuthorizationHeader::OtherScheme)
        ));
    }
}

#[cfg(test)]
mod properties {
    //! Property tests: no input panics a parser, and well-formed input round-trips.

    use std::collections::BTreeMap;

    use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};
    use proptest::prelude::*;
    use secrecy::ExposeSecret;

    use super::*;
    use crate::oauth::scope::Scope;

    fn encode(text: &str) -> String {
        utf8_percent_encode(text, NON_ALPHANUMERIC).to_string()
    }

    proptest! {
        #[test]
        fn any_body_parses_or_is_refused_without_panicking(body in proptest::collection::vec(any::<u8>(), 0..512)) {
            if let Ok(form) = parse_form(&body) {
                prop_assert!(form.values.keys().all(|name| !name.is_empty()));
                prop_assert!(form.values.values().all(|value| !value.is_empty()));
            }
        }

        #[test]
        fn encoded_forms_round_trip(pairs in proptest::collection::btree_map("\\PC{1,12}", "\\PC{1,24}", 0..8)) {
            let body: Vec<String> = pairs.iter().map(|(k, v)| format!("{}={}", encode(k), encode(v))).collect();
            let form = parse_form(body.join("&").as_bytes()).unwrap();
            let parsed: BTreeMap<String, String> = form.values;
            prop_assert_eq!(parsed, pairs);
        }

        #[test]
        fn no_parsed_name_or_value_holds_a_nul(body in proptest::collection::vec(prop_oneof![Just(b'\0'), Just(b'%'), Just(b'0'), Just(b'='), Just(b'&'), any::<u8>()], 0..64)) {
            match parse_form(&body) {
                Ok(form) => prop_assert!(form.values.iter().all(|(k, v)| !k.contains('\0') && !v.contains('\0'))),
                Err(ParamError::Nul) => prop_assert!(body.contains(&0) || body.windows(3).any(|w| w == b"%00")),
                Err(_) => {}
            }
        }

        #[test]
        fn a_nul_anywhere_in_basic_credentials_is_refused(id in "\\PC{1,10}", secret in "\\PC{0,10}", at in 0usize..20, encoded in any::<bool>()) {
            let mut raw = format!("{}:{}", encode(&id), encode(&secret));
            let nul = if encoded { "%00" } else { "\0" };
            let at = raw.char_indices().map(|(i, _)| i).chain([raw.len()]).nth(at % (raw.chars().count() + 1)).unwrap();
            raw.insert_str(at, nul);
            let header = format!("Basic {}", STANDARD.encode(&raw));
            prop_assert_eq!(parse_authorization(header.as_bytes()).err(), Some(ParamError::Nul), "{:?}", raw);
        }

        #[test]
        fn any_authorization_header_parses_or_is_refused_without_panicking(value in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_authorization(&value);
        }

        #[test]
        fn basic_credentials_round_trip(id in "\\PC{1,20}", secret in "\\PC{0,40}") {
            let raw = format!("{}:{}", encode(&id), encode(&secret));
            let header = format!("Basic {}", STANDARD.encode(raw));
            match parse_authorization(header.as_bytes()).unwrap() {
                AuthorizationHeader::Basic(creds) => {
                    prop_assert_eq!(creds.client_id, id);
                    prop_assert_eq!(creds.client_secret.expose_secret(), secret.as_str());
                }
                AuthorizationHeader::OtherScheme => prop_assert!(false, "not Basic"),
            }
        }

        #[test]
        fn any_scope_string_parses_or_is_invalid_scope(raw in "\\PC{0,64}") {
            if let Err(err) = Scope::parse(&raw) {
                prop_assert_eq!(err.code, crate::oauth::ErrorCode::InvalidScope);
            }
        }
    }
}
