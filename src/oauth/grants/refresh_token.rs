//! RFC 6749 §6: Refreshing an Access Token.
//!
//! The refresh token is bound to the client it was issued to. With `renew_refresh_token` the
//! presented token is spent and replaced (RFC 9700 §4.14.2 rotation): marking it spent and
//! recording its successor is one conditional write, so of two concurrent redemptions exactly
//! one succeeds.

use std::collections::BTreeSet;

use secrecy::SecretString;

use super::{required_secret, Grant, Issued};
use crate::audit::{Event, Origin, RevokedBy};
use crate::crypto::token::PresentedToken;
use crate::oauth::error::OAuthError;
use crate::oauth::issue::{self, RefreshPlan, RotationTokens, Subject, SuccessorRecords};
use crate::oauth::params::FormParams;
use crate::oauth::scope::Scope;
use crate::oauth::token::TokenService;
use crate::store::model::{Client, GrantType, RefreshTokenRecord, TokenRecord};
use crate::store::{PresentedRotation, Rotation, Successor};

pub struct RefreshTokenGrant {
    /// The request's id and the client's address, for the audit trail.
    pub origin: Origin,
}

/// Refresh tokens are issued for users only (RFC 6749 §4.4.3: never for client_credentials).
fn subject(username: Option<&String>) -> Subject {
    match username {
        Some(name) => Subject::User(name.clone()),
        None => Subject::Application,
    }
}

pub struct RefreshParams {
    refresh_token: SecretString,
    scope: Option<String>,
}

fn rejected() -> OAuthError {
    // One answer for unknown, expired, spent, revoked and foreign tokens: the client learns
    // nothing it could use to probe other clients' tokens.
    OAuthError::invalid_grant("the refresh token is invalid, expired or revoked")
}

impl Grant for RefreshTokenGrant {
    type Params = RefreshParams;
    const GRANT_TYPE: GrantType = GrantType::RefreshToken;
    /// OAuth 2.1 §4.3.1 / RFC 9700 §4.14.2: a public client's refresh tokens are rotated,
    /// with reuse detection, as everyone's are here.
    const FOR_PUBLIC_CLIENTS: bool = true;

    fn parse(form: &FormParams) -> Result<RefreshParams, OAuthError> {
        Ok(RefreshParams {
            refresh_token: required_secret(form, "refresh_token")?,
            scope: form.get("scope").map(str::to_owned),
        })
    }

    async fn issue(
        &self,
        service: &TokenService,
        client: &Client,
        params: RefreshParams,
    ) -> Result<Issued, OAuthError> {
        let now = service.clock.now_secs();
        let presented = PresentedToken::parse(&params.refresh_token).ok_or_else(rejected)?;
        // A public client's refresh tokens are always rotated (RFC 9700 §4.14.2, OAuth 2.1
        // §4.3.1): with no secret, rotation is what detects a stolen one.
        let rotating = service.settings().renew_refresh_token || client.public;
        // The one-round path, where the store can judge everything: users in memory, and a
        // requested scope parsed here (a malformed one is answered after the token's checks,
        // below, as before), so the store's thread does no work the client sizes.
        let requested = params.scope.as_deref().map(Scope::parse).transpose();
        let one_round = match &requested {
            Ok(requested) if rotating && service.users.holds_users_in_memory() => {
                RotationTokens::mint(service, client).map(|minted| (minted, requested.clone()))
            }
            _ => None,
        };
        let (stored, minted) = match one_round {
            // The usual case in one store round: the store reads the token, `successor`
            // checks it and builds its successor, the store writes both.
            Some(((tokens, records), requested)) => {
                let successor = successor(service, &presented, client, requested, records.clone());
                match service
                    .tokens
                    .rotate_presented(&presented.id, now, successor)
                    .await?
                {
                    PresentedRotation::Rotated { new, .. } => {
                        return Ok(Issued::new(&new, tokens.response(&new)));
                    }
                    // Judged below, where each refusal gets its answer; a token declined only
                    // for a user the directory has to read is rotated below with these tokens.
                    PresentedRotation::Kept(stored) => (stored, Some((tokens, records))),
                    PresentedRotation::Unknown => return Err(rejected()),
                }
            }
            None => {
                let stored = service
                    .tokens
                    .find_refresh_token(&presented.id)
                    .await?
                    .ok_or_else(rejected)?;
                (stored, None)
            }
        };
        let record = &stored.token;
        if !record.secret_digest.matches(&presented.digest) {
            return Err(rejected());
        }
        if record.client_id != client.id {
            tracing::warn!(token_id = %record.id.to_uuid_string(), "refresh token presented by another client");
            return Err(rejected());
        }
        if record.revoked_at.is_some() || record.expires_at <= now {
            return Err(rejected());
        }
        // Reuse is judged before anything else, so no other answer can mask it.
        if stored.spent_at.is_some() {
            return redeem_spent(
                service,
                client,
                &stored,
                params.scope.as_deref(),
                now,
                &self.origin,
            )
            .await;
        }
        check_user(service, record).await?;
        let access_scope = narrowed_scope(record, requested?.as_ref(), &client.scopes)?;
        if rotating {
            match rotate(service, client, &stored, &access_scope, now, minted).await? {
                Some(response) => Ok(response),
                // Another request spent it between our read and our write.
                None => match service.tokens.find_refresh_token(&record.id).await? {
                    Some(now_spent) => {
                        redeem_spent(
                            service,
                            client,
                            &now_spent,
                            params.scope.as_deref(),
                            now,
                            &self.origin,
                        )
                        .await
                    }
                    None => Err(rejected()),
                },
            }
        } else {
            refuse_past_max_lifetime(service, record, now)?;
            let (mut tokens, mut response) = issue::mint(
                service,
                client,
                subject(record.username.as_ref()),
                access_scope.as_string(),
                None,
            )?;
            tokens.access.family_id = record.family_id;
            // Not rotating: the client keeps using the token it sent.
            response.refresh_token =
                Some(secrecy::ExposeSecret::expose_secret(&params.refresh_token).to_owned());
            let issued = Issued::new(&tokens, response);
            service.tokens.create_tokens(tokens).await?;
            Ok(issued)
        }
    }
}

/// What replaces the presented token, decided on the store's side once it has read it: the
/// checks of [`RefreshTokenGrant::issue`] that need nothing but the token and memory, and the
/// records of its successor. Anything it declines (or cannot judge: a user it would have to
/// read) is judged again by `issue`, which gives the answer.
fn successor(
    service: &TokenService,
    presented: &PresentedToken,
    client: &Client,
    requested_scope: Option<Scope>,
    records: SuccessorRecords,
) -> Successor {
    let digest = presented.digest;
    let client_id = client.id.clone();
    let client_scopes = client.scopes.clone();
    let users = service.users.clone();
    Box::new(move |old: &RefreshTokenRecord| {
        let record = &old.token;
        let usable = record.secret_digest.matches(&digest)
            && record.client_id == client_id
            && record.expires_at > records.now()
            && !records.grant_ended(&record.family_id)
            && record
                .username
                .as_ref()
                .is_none_or(|name| users.enabled_in_memory(name) == Some(true));
        if !usable {
            return None;
        }
        let scope = narrowed_scope(record, requested_scope.as_ref(), &client_scopes).ok()?;
        Some(records.records(record, scope.as_string()))
    })
}

/// RFC 6749 §6 rotation: spends `old` and issues its successor in one conditional write,
/// with the tokens `minted` ahead if there are some. `Ok(None)` if `old` was already spent
/// when the write ran.
async fn rotate(
    service: &TokenService,
    client: &Client,
    old: &RefreshTokenRecord,
    access_scope: &Scope,
    now: i64,
    minted: Option<(RotationTokens, SuccessorRecords)>,
) -> Result<Option<Issued>, OAuthError> {
    refuse_past_max_lifetime(service, &old.token, now)?;
    let (tokens, issued) = match minted {
        Some((tokens, records)) => {
            let new = records.records(&old.token, access_scope.as_string());
            let issued = Issued::new(&new, tokens.response(&new));
            (new, issued)
        }
        None => {
            // RFC 6749 §6: the new refresh token keeps the scope of the one it replaces.
            let plan = RefreshPlan::continue_family(old.token.scope.clone(), old.token.family_id);
            let (tokens, response) = issue::mint(
                service,
                client,
                subject(old.token.username.as_ref()),
                access_scope.as_string(),
                Some(plan),
            )?;
            let issued = Issued::new(&tokens, response);
            (tokens, issued)
        }
    };
    match service
        .tokens
        .rotate_refresh_token(&old.token.id, now, tokens)
        .await?
    {
        Rotation::Rotated => Ok(Some(issued)),
        Rotation::AlreadySpent => Ok(None),
    }
}

/// A spent refresh token was presented again.
///
/// Within `refresh_token_reuse_grace_period` of being spent, the immediate predecessor of the
/// live refresh token is honoured (a mobile app whose response was lost, or two racing
/// requests): its successor is rotated in turn, so the grant still has exactly one live
/// refresh token. Anything else is reuse (RFC 9700 §4.14.2): a stolen token may be in play,
/// so every token of the grant is revoked.
async fn redeem_spent(
    service: &TokenService,
    client: &Client,
    spent: &RefreshTokenRecord,
    requested_scope: Option<&str>,
    now: i64,
    origin: &Origin,
) -> Result<Issued, OAuthError> {
    let grace = i64::try_from(service.settings().refresh_token_reuse_grace_secs).unwrap_or(0);
    let within_grace = spent
        .spent_at
        .is_some_and(|spent_at| grace > 0 && now.saturating_sub(spent_at) <= grace);
    if within_grace {
        if let Some(successor_id) = spent.replaced_by {
            if let Some(successor) = service.tokens.find_refresh_token(&successor_id).await? {
                let live = successor.spent_at.is_none()
                    && successor.token.revoked_at.is_none()
                    && successor.token.expires_at > now;
                if live {
                    check_user(service, &successor.token).await?;
                    let requested = requested_scope.map(Scope::parse).transpose()?;
                    let access_scope =
                        narrowed_scope(&successor.token, requested.as_ref(), &client.scopes)?;
                    if let Some(response) =
                        rotate(service, client, &successor, &access_scope, now, None).await?
                    {
                        tracing::info!(
                            client_id = ?crate::telemetry::cut(&client.id),
                            family = %spent.token.family_id.to_uuid_string(),
                            "spent refresh token honoured within the reuse grace period"
                        );
                        return Ok(response);
                    }
                }
            }
        }
    }
    let revoked = service.revoke_grant(&spent.token.family_id, now).await?;
    service.metrics().refresh_reuse_detected();
    let (audit, subject) = (service.audit(), spent.token.username.as_deref());
    let grant_id = spent.token.family_id.to_uuid_string();
    audit.record(
        origin,
        Some(client.id.as_str()),
        subject,
        Event::RefreshReuseDetected {
            token_id: spent.token.id.to_uuid_string(),
            grant_id: grant_id.clone(),
        },
    );
    if revoked {
        audit.record(
            origin,
            Some(client.id.as_str()),
            subject,
            Event::GrantRevoked {
                grant_id,
                by: RevokedBy::ReuseDetection,
            },
        );
    }
    tracing::warn!(
        target: "audit",
        client_id = ?crate::telemetry::cut(&client.id),
        username = ?crate::telemetry::cut(spent.token.username.as_deref().unwrap_or("-")),
        family = %spent.token.family_id.to_uuid_string(),
        "refresh token reuse detected: every token of the grant is revoked"
    );
    Err(rejected())
}

/// `refresh_token_max_lifetime`: no refresh once the grant is that old, whatever the
/// token's own expiry (it may have been issued before the maximum was configured).
fn refuse_past_max_lifetime(
    service: &TokenService,
    record: &TokenRecord,
    now: i64,
) -> Result<(), OAuthError> {
    match issue::grant_ends_at(&service.settings(), &record.family_id) {
        Some(ends_at) if ends_at <= now => Err(rejected()),
        _ => Ok(()),
    }
}

/// The user may have been removed or disabled since the grant.
async fn check_user(service: &TokenService, record: &TokenRecord) -> Result<(), OAuthError> {
    if let Some(username) = &record.username {
        match service.users.find_user(username).await? {
            Some(user) if !user.disabled => {}
            _ => return Err(rejected()),
        }
    }
    Ok(())
}

/// RFC 6749 §6: the requested scope may only narrow the granted one, and must still be
/// allowed for the client.
fn narrowed_scope(
    record: &TokenRecord,
    requested: Option<&Scope>,
    client_scopes: &BTreeSet<String>,
) -> Result<Scope, OAuthError> {
    let granted = Scope::parse(&record.scope)?;
    let scope = match requested {
        None => granted,
        Some(requested) => {
            if !requested.is_within(&granted) {
                return Err(OAuthError::invalid_scope(
                    "a refresh may only narrow the originally granted scope",
                ));
            }
            requested.clone()
        }
    };
    if !scope.allowed_for(client_scopes) {
        return Err(OAuthError::invalid_scope(
            "the scope is no longer allowed for this client",
        ));
    }
    Ok(scope)
}
