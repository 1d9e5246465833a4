//! Scopes (RFC 6749 §3.3): a space-separated set of scope tokens.

use std::collections::{BTreeSet, HashSet};

use super::error::OAuthError;
use crate::store::model::is_scope_token;

/// The scope every client may have without listing it, granted when none is requested.
pub const DEFAULT_SCOPE: &str = "default";

/// A non-empty, duplicate-free list of valid scope tokens, in the order first requested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scope {
    tokens: Vec<String>,
}

impl Scope {
    /// Parses a requested scope; `None` (not sent) means the default scope.
    pub fn parse_requested(raw: Option<&str>) -> Result<Self, OAuthError> {
        match raw {
            None => Ok(Self::default_scope()),
            Some(raw) => Self::parse(raw),
        }
    }

    pub fn parse(raw: &str) -> Result<Self, OAuthError> {
        let mut tokens: Vec<String> = Vec::new();
        // Duplicates found through a set: a scan per token made a request of thousands of
        // distinct tokens (a 16 KiB body) cost millions of comparisons.
        let mut seen: HashSet<&str> = HashSet::new();
        // RFC 6749 §3.3 delimits by single spaces; tolerating runs of spaces costs nothing.
        for token in raw.split(' ').filter(|t| !t.is_empty()) {
            if !is_scope_token(token) {
                return Err(OAuthError::invalid_scope(
                    "the scope contains invalid characters",
                ));
            }
            if seen.insert(token) {
                tokens.push(token.to_owned());
            }
        }
        if tokens.is_empty() {
            return Ok(Self::default_scope());
        }
        Ok(Self { tokens })
    }

    pub fn default_scope() -> Self {
        Self {
            tokens: vec![DEFAULT_SCOPE.to_owned()],
        }
    }

    /// True when every token here is allowed for a client whose listed scopes are `allowed`.
    pub fn allowed_for(&self, allowed: &BTreeSet<String>) -> bool {
        self.tokens
            .iter()
            .all(|t| t == DEFAULT_SCOPE || allowed.contains(t))
    }

    /// RFC 6749 §6: a refresh may only ask for scopes the original grant had.
    pub fn is_within(&self, granted: &Scope) -> bool {
        self.tokens.iter().all(|t| granted.tokens.contains(t))
    }

    pub fn as_string(&self) -> String {
        self.tokens.join(" ")
    }

    /// The scope tokens, in the order first requested.
    pub fn tokens(&self) -> impl Iterator<Item = &str> {
        self.tokens.iter().map(String::as_str)
    }

    /// This scope's tokens, then those of `other` not already here.
    pub fn union(&self, other: &Scope) -> Scope {
        let mut tokens = self.tokens.clone();
        for token in &other.tokens {
            if !tokens.contains(token) {
                tokens.push(token.clone());
            }
        }
        Scope { tokens }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_or_blank_scope_is_default() {
        assert_eq!(Scope::parse_requested(None).unwrap().as_string(), "default");
        assert_eq!(Scope::parse("   ").unwrap().as_string(), "default");
    }

    #[test]
    fn a_union_keeps_the_first_order_and_adds_the_new_tokens() {
        let union = Scope::parse("a b")
            .unwrap()
            .union(&Scope::parse("c a").unwrap());
        assert_eq!(union.as_string(), "a b c");
        assert!(Scope::parse("c").unwrap().is_within(&union));
    }

    #[test]
    fn duplicates_are_dropped_and_order_kept() {
        assert_eq!(Scope::parse("b a b").unwrap().as_string(), "b a");
    }

    #[test]
    fn a_body_full_of_distinct_tokens_keeps_each_once_in_order() {
        let tokens: Vec<String> = (0..5000).map(|i| format!("s{i}")).collect();
        let raw = format!("{} {}", tokens.join(" "), tokens.join(" "));
        let parsed = Scope::parse(&raw).unwrap();
        assert!(parsed.tokens().eq(tokens.iter().map(String::as_str)));
    }

    #[test]
    fn invalid_characters_are_invalid_scope() {
        for bad in ["a\"b", "a\\b", "caf\u{e9}", "a\tb"] {
            assert!(Scope::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn default_is_always_allowed_and_others_must_be_listed() {
        let allowed: BTreeSet<String> = ["PRODUCTION".to_owned()].into();
        assert!(Scope::parse("default PRODUCTION")
            .unwrap()
            .allowed_for(&allowed));
        assert!(!Scope::parse("SANDBOX").unwrap().allowed_for(&allowed));
    }

    #[test]
    fn narrowing_is_a_subset_check() {
        let granted = Scope::parse("a b").unwrap();
        assert!(Scope::parse("a").unwrap().is_within(&granted));
        assert!(!Scope::parse("a c").unwrap().is_within(&granted));
    }
}
