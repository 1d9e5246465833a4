//! Proof Key for Code Exchange (RFC 7636), S256 only: the syntax of a challenge and a verifier,
//! and the check that binds a token request to the authorization request that got the code.
//! Plain functions, so the property tests and the fuzz target can call them directly.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq as _;

/// The only method accepted: `plain` sends the verifier itself through the browser, which is
/// what PKCE exists to avoid (RFC 7636 §7.2; OAuth 2.1 §4.1.1 requires S256 where it can work).
pub const S256: &str = "S256";

/// RFC 7636 §4.1: `unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~"`.
fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// RFC 7636 §4.1: `code-verifier = 43*128unreserved`.
pub fn is_valid_verifier(verifier: &str) -> bool {
    (43..=128).contains(&verifier.len()) && verifier.bytes().all(is_unreserved)
}

/// RFC 7636 §4.2: an S256 challenge is BASE64URL(SHA256(verifier)) without padding: exactly 43
/// characters of the base64url alphabet.
pub fn is_valid_s256_challenge(challenge: &str) -> bool {
    challenge.len() == 43
        && challenge
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// RFC 7636 §4.2: `BASE64URL-ENCODE(SHA256(ASCII(code_verifier)))`.
pub fn s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// RFC 7636 §4.6: whether `verifier` is the one `challenge` was made from, compared in
/// constant time.
pub fn verifier_matches(verifier: &str, challenge: &str) -> bool {
    is_valid_verifier(verifier)
        && bool::from(
            s256_challenge(verifier)
                .as_bytes()
                .ct_eq(challenge.as_bytes()),
        )
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// RFC 7636 Appendix B.
    const VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn the_rfc_7636_example_verifies() {
        assert_eq!(s256_challenge(VERIFIER), CHALLENGE);
        assert!(is_valid_s256_challenge(CHALLENGE));
        assert!(verifier_matches(VERIFIER, CHALLENGE));
        assert!(!verifier_matches(&VERIFIER.replace('d', "e"), CHALLENGE));
    }

    #[test]
    fn a_verifier_is_43_to_128_unreserved_characters() {
        assert!(is_valid_verifier(&"a".repeat(43)));
        assert!(is_valid_verifier(&"~._-".repeat(32)));
        assert!(!is_valid_verifier(&"a".repeat(42)));
        assert!(!is_valid_verifier(&"a".repeat(129)));
        assert!(!is_valid_verifier(&format!("{}+", "a".repeat(43))));
        assert!(!is_valid_verifier(&format!("{}=", "a".repeat(43))));
        // The plain method's "challenge = verifier" must not verify against itself.
        assert!(!verifier_matches(VERIFIER, VERIFIER));
    }

    proptest! {
        #[test]
        fn every_valid_verifier_matches_its_own_challenge_only(
            verifier in "[A-Za-z0-9._~-]{43,128}",
            other in "[A-Za-z0-9._~-]{43,128}",
        ) {
            let challenge = s256_challenge(&verifier);
            prop_assert!(is_valid_s256_challenge(&challenge));
            prop_assert!(verifier_matches(&verifier, &challenge));
            prop_assert_eq!(verifier_matches(&other, &challenge), other == verifier);
        }
    }
}
