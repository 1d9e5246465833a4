//! Minting tokens: lifetimes from the settings or the client's override, opaque or RFC 9068
//! JWT access tokens, records for the store (digests only) and the RFC 6749 §5.1 response
//! (the only place the tokens appear).

use secrecy::ExposeSecret as _;

use super::error::OAuthError;
use super::token::TokenService;
use super::wire::TokenResponse;
use crate::config::{OAuthSettings, TokenFormat};
use crate::crypto::jwk::AccessTokenClaims;
use crate::crypto::token::{MintedToken, SecretDigest, TokenId};
use crate::store::model::{Client, GrantType, NewTokens, RefreshTokenRecord, TokenRecord};

/// Whether and how a refresh token is issued alongside the access token.
pub struct RefreshPlan {
    scope: String,
    /// `None` starts a new family rooted at the new refresh token.
    family_id: Option<TokenId>,
}

impl RefreshPlan {
    pub fn new_family(scope: String) -> Self {
        Self {
            scope,
            family_id: None,
        }
    }

    pub fn continue_family(scope: String, family_id: TokenId) -> Self {
        Self {
            scope,
            family_id: Some(family_id),
        }
    }
}

/// Who an access token is for: a user (password and refresh grants) or the client itself.
pub enum Subject {
    User(String),
    /// RFC 6749 §4.4: an application token; `sub` is the client.
    Application,
}

fn secs_i64(secs: u64) -> i64 {
    i64::try_from(secs).unwrap_or(i64::MAX)
}

/// RFC 9700 §4.14.2: when the grant rooted at `family_id` stops, with
/// `refresh_token_max_lifetime` set: its start (the family id's mint time, that of the grant's
/// first refresh token) plus the maximum. `None` without a maximum.
pub fn grant_ends_at(settings: &OAuthSettings, family_id: &TokenId) -> Option<i64> {
    grant_end(settings.refresh_token_max_lifetime_secs, family_id)
}

fn grant_end(max_lifetime_secs: u64, family_id: &TokenId) -> Option<i64> {
    (max_lifetime_secs > 0).then(|| {
        family_id
            .minted_at_ms()
            .div_euclid(1000)
            .saturating_add(secs_i64(max_lifetime_secs))
    })
}

/// How long a client's tokens live: its overrides, else the settings (one snapshot).
#[derive(Debug, Clone, Copy)]
struct Lifetimes {
    user_access: u64,
    application_access: u64,
    refresh: u64,
    refresh_max: u64,
}

impl Lifetimes {
    fn of(settings: &OAuthSettings, client: &Client) -> Self {
        Self {
            user_access: client
                .access_token_validity_secs
                .unwrap_or(settings.access_token_validity_secs),
            application_access: client
                .application_access_token_validity_secs
                .unwrap_or(settings.application_access_token_validity_secs),
            refresh: client
                .refresh_token_validity_secs
                .unwrap_or(settings.refresh_token_validity_secs),
            refresh_max: settings.refresh_token_max_lifetime_secs,
        }
    }

    /// An access token's validity: a user's, or an application token's (no user).
    fn access(&self, username: Option<&String>) -> u64 {
        match username {
            Some(_) => self.user_access,
            None => self.application_access,
        }
    }

    /// Rotation slides each refresh token's expiry, but never past the grant's maximum.
    fn refresh_expires_at(&self, now: i64, family_id: &TokenId) -> i64 {
        let expires_at = now.saturating_add(secs_i64(self.refresh));
        match grant_end(self.refresh_max, family_id) {
            Some(ends_at) => expires_at.min(ends_at),
            None => expires_at,
        }
    }
}

/// What every token of one issuance shares: client, user, grant and issue time.
struct Issuance<'a> {
    client_id: &'a str,
    username: &'a Option<String>,
    family_id: TokenId,
    issued_at: i64,
}

impl Issuance<'_> {
    /// The stored record of one token: its id and secret digest, scope and expiry.
    fn record(
        &self,
        (id, secret_digest): (TokenId, SecretDigest),
        scope: String,
        expires_at: i64,
    ) -> TokenRecord {
        TokenRecord {
            id,
            secret_digest,
            client_id: self.client_id.to_owned(),
            username: self.username.clone(),
            scope,
            family_id: self.family_id,
            issued_at: self.issued_at,
            expires_at,
            revoked_at: None,
        }
    }
}

/// The tokens of a refresh-token rotation, minted before the store reads the token they
/// replace, so that reading, checking and writing take one store round (see
/// `TokenStore::rotate_presented`). Their random values stay here for the response; the
/// [`SuccessorRecords`] build their records from the old token on the store's side.
pub struct RotationTokens {
    access: MintedToken,
    refresh: MintedToken,
}

/// What the records of a rotation's new tokens need besides the old token: no secrets.
#[derive(Clone)]
pub struct SuccessorRecords {
    access: (TokenId, SecretDigest),
    refresh: (TokenId, SecretDigest),
    client_id: String,
    lifetimes: Lifetimes,
    now: i64,
}

impl RotationTokens {
    /// `None` when the client's access tokens are JWTs: they are signed once the old token is
    /// read (signing has no place on the store's thread), so such rotations take two rounds.
    pub fn mint(service: &TokenService, client: &Client) -> Option<(Self, SuccessorRecords)> {
        let settings = service.settings();
        if client.token_format.unwrap_or(settings.token_format) != TokenFormat::Opaque {
            return None;
        }
        let now_ms = service.clock.now_ms();
        let (access, refresh) = (MintedToken::new(now_ms), MintedToken::new(now_ms));
        let records = SuccessorRecords {
            access: (access.id, access.digest),
            refresh: (refresh.id, refresh.digest),
            client_id: client.id.clone(),
            lifetimes: Lifetimes::of(&settings, client),
            now: now_ms.div_euclid(1000),
        };
        Some((Self { access, refresh }, records))
    }

    /// The RFC 6749 §5.1 response for the tokens the store recorded.
    pub fn response(self, new: &NewTokens) -> TokenResponse {
        let access = &new.access;
        TokenResponse::bearer(
            self.access.value.expose_secret().to_owned(),
            u64::try_from(access.expires_at.saturating_sub(access.issued_at)).unwrap_or(0),
            Some(self.refresh.value.expose_secret().to_owned()),
            access.scope.clone(),
        )
    }
}

impl SuccessorRecords {
    /// The time of the rotation (seconds).
    pub fn now(&self) -> i64 {
        self.now
    }

    /// `refresh_token_max_lifetime`: whether the grant rooted at `family_id` has ended.
    pub fn grant_ended(&self, family_id: &TokenId) -> bool {
        grant_end(self.lifetimes.refresh_max, family_id).is_some_and(|ends_at| ends_at <= self.now)
    }

    /// The successor of `old`: an access token for `access_scope`, and a refresh token with
    /// `old`'s user, scope and family (RFC 6749 §6).
    pub fn records(self, old: &TokenRecord, access_scope: String) -> NewTokens {
        let access_expires_at = self
            .now
            .saturating_add(secs_i64(self.lifetimes.access(old.username.as_ref())));
        let refresh_expires_at = self.lifetimes.refresh_expires_at(self.now, &old.family_id);
        let issuance = Issuance {
            client_id: &self.client_id,
            username: &old.username,
            family_id: old.family_id,
            issued_at: self.now,
        };
        NewTokens {
            access: issuance.record(self.access, access_scope, access_expires_at),
            refresh: Some(RefreshTokenRecord {
                token: issuance.record(self.refresh, old.scope.clone(), refresh_expires_at),
                spent_at: None,
                replaced_by: None,
            }),
        }
    }
}

/// The `aud` of a client's JWT access tokens.
pub fn audience_of(
    service: &TokenService,
    settings: &OAuthSettings,
    client: Option<&Client>,
) -> String {
    client
        .and_then(|c| c.audience.clone())
        .or_else(|| settings.default_audience.clone())
        .unwrap_or_else(|| service.issuer.clone())
}

/// Mints an access token (and a refresh token if planned) for `client`.
pub fn mint(
    service: &TokenService,
    client: &Client,
    subject: Subject,
    access_scope: String,
    refresh: Option<RefreshPlan>,
) -> Result<(NewTokens, TokenResponse), OAuthError> {
    let now_ms = service.clock.now_ms();
    mint_started_at(service, client, subject, access_scope, refresh, now_ms)
}

/// A new grant for a user that began at `started_ms` (see [`mint_started_at`]): an access
/// token for `scope`, and a refresh token starting a new family when the client may refresh.
pub fn mint_new_user_grant(
    service: &TokenService,
    client: &Client,
    username: String,
    scope: String,
    started_ms: i64,
) -> Result<(NewTokens, TokenResponse), OAuthError> {
    let refresh = client
        .grant_types
        .contains(&GrantType::RefreshToken)
        .then(|| RefreshPlan::new_family(scope.clone()));
    mint_started_at(
        service,
        client,
        Subject::User(username),
        scope,
        refresh,
        started_ms,
    )
}

/// [`mint`] for a grant whose checks began at `started_ms`: a new family's id carries that
/// time, so a not-before mark written while the checks ran (say a password change after the
/// old hash was read) covers the grant.
pub fn mint_started_at(
    service: &TokenService,
    client: &Client,
    subject: Subject,
    access_scope: String,
    refresh: Option<RefreshPlan>,
    started_ms: i64,
) -> Result<(NewTokens, TokenResponse), OAuthError> {
    // One snapshot for the whole token pair: a reload meanwhile applies from the next request.
    let settings = service.settings();
    let now_ms = service.clock.now_ms();
    let started_ms = started_ms.min(now_ms);
    let now = now_ms.div_euclid(1000);
    let username = match subject {
        Subject::User(name) => Some(name),
        Subject::Application => None,
    };
    let lifetimes = Lifetimes::of(&settings, client);
    let access_validity = lifetimes.access(username.as_ref());
    let expires_at = now.saturating_add(secs_i64(access_validity));

    // The token that roots a new family is minted at the grant's start (see above).
    let (access_ms, refresh_ms) = match &refresh {
        Some(plan) if plan.family_id.is_none() => (now_ms, started_ms),
        Some(_) => (now_ms, now_ms),
        None => (started_ms, now_ms),
    };
    let access = MintedToken::new(access_ms);
    let refresh_minted = refresh.map(|plan| (MintedToken::new(refresh_ms), plan));
    let family_id = match &refresh_minted {
        Some((minted, plan)) => plan.family_id.unwrap_or(minted.id),
        None => access.id,
    };

    let (access_value, access_digest) = match client.token_format.unwrap_or(settings.token_format) {
        TokenFormat::Opaque => (access.value.expose_secret().to_owned(), access.digest),
        TokenFormat::Jwt => {
            let keys = service.keys.keys();
            let signer = keys
                .signer(settings.jwt_algorithm, now_ms.div_euclid(1000))
                .ok_or_else(|| {
                    OAuthError::server_error(crate::crypto::jwk::KeyError::NoSigningKey(
                        settings.jwt_algorithm.as_str(),
                    ))
                })?;
            let claims = AccessTokenClaims {
                iss: service.issuer.clone(),
                sub: username.clone().unwrap_or_else(|| client.id.clone()),
                aud: audience_of(service, &settings, Some(client)),
                client_id: client.id.clone(),
                scope: access_scope.clone(),
                jti: access.id.to_uuid_string(),
            };
            let jwt = signer
                .sign(claims, now, expires_at)
                .map_err(OAuthError::server_error)?;
            let digest = SecretDigest::of(jwt.as_bytes());
            (jwt, digest)
        }
    };

    let issuance = Issuance {
        client_id: &client.id,
        username: &username,
        family_id,
        issued_at: now,
    };
    let access_record =
        issuance.record((access.id, access_digest), access_scope.clone(), expires_at);
    let refresh_expires_at = lifetimes.refresh_expires_at(now, &family_id);
    let refresh_record = refresh_minted
        .as_ref()
        .map(|(minted, plan)| RefreshTokenRecord {
            token: issuance.record(
                (minted.id, minted.digest),
                plan.scope.clone(),
                refresh_expires_at,
            ),
            spent_at: None,
            replaced_by: None,
        });
    let response = TokenResponse::bearer(
        access_value,
        access_validity,
        refresh_minted
            .as_ref()
            .map(|(minted, _)| minted.value.expose_secret().to_owned()),
        access_scope,
    );
    Ok((
        NewTokens {
            access: access_record,
            refresh: refresh_record,
        },
        response,
    ))
}
