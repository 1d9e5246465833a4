//! Everything a client controls on /token before any lookup: the form body, the Authorization
//! header, the scope string and the token format. None of them may panic, whatever the bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tokengate::crypto::token::PresentedToken;
use tokengate::oauth::params::{parse_authorization, parse_form};
use tokengate::oauth::scope::Scope;

fuzz_target!(|data: &[u8]| {
    let _ = parse_authorization(data);
    if let Ok(form) = parse_form(data) {
        if let Some(scope) = form.get("scope") {
            let _ = Scope::parse(scope);
        }
        if let Some(token) = form.get("refresh_token") {
            let _ = PresentedToken::parse(&secrecy::SecretString::from(token.to_owned()));
        }
    }
});
