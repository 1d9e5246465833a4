//! RFC 6749 §4.3: Resource Owner Password Credentials Grant.
//!
//! Deprecated by RFC 9700 §2.4 because the client sees the user's password; kept because the
//! applications tokengate serves depend on it, and enabled per client only. An unknown or
//! disabled user is verified against a dummy hash, so every failure costs the same time and
//! gives the same answer.

use std::sync::Arc;

use secrecy::SecretString;
use tokio::sync::oneshot;

use super::{required, required_secret, Grant, Issued};
use crate::abuse::rate_limit::bucket_key;
use crate::audit::{rfc3339_secs, Audit, Event, LoginFailure, Origin};
use crate::crypto::password::{self, PasswordHasher};
use crate::metrics::GrantMetrics;
use crate::oauth::error::OAuthError;
use crate::oauth::issue;
use crate::oauth::params::FormParams;
use crate::oauth::scope::Scope;
use crate::oauth::token::TokenService;
use crate::store::model::{Client, GrantType, User};
use crate::store::{Attempt, AttemptStep, LockoutPolicy, LockoutStore, UserStore, ALL_SOURCES};

pub struct PasswordGrant {
    /// The request's id and the client's address: failed logins are counted per user name
    /// and address, and audited with both.
    pub origin: Origin,
}

/// Longer names cannot belong to a user (the CLI allows 255 characters) and are not tracked,
/// so junk names cannot bloat the failure table.
const MAX_TRACKED_NAME: usize = 1024;

#[derive(Debug, thiserror::Error)]
#[error("the account's lockout allowance is taken by checks in flight")]
struct AttemptsInFlight;

/// How long an attempt over the allowance waits for the checks in flight, and how often it
/// looks again.
const BUSY_WAIT_LIMIT: std::time::Duration = std::time::Duration::from_secs(3);
const BUSY_POLL: std::time::Duration = std::time::Duration::from_millis(20);

fn invalid_credentials() -> OAuthError {
    OAuthError::invalid_grant("invalid username or password")
}

pub struct PasswordParams {
    username: String,
    password: SecretString,
    scope: Option<String>,
}

impl Grant for PasswordGrant {
    type Params = PasswordParams;
    const GRANT_TYPE: GrantType = GrantType::Password;

    fn parse(form: &FormParams) -> Result<PasswordParams, OAuthError> {
        Ok(PasswordParams {
            username: required(form, "username")?.to_owned(),
            password: required_secret(form, "password")?,
            scope: form.get("scope").map(str::to_owned),
        })
    }

    async fn issue(
        &self,
        service: &TokenService,
        client: &Client,
        params: PasswordParams,
    ) -> Result<Issued, OAuthError> {
        // Checked before the password so a bad request costs no argon2 work.
        let scope = Scope::parse_requested(params.scope.as_deref())?;
        if !scope.allowed_for(&client.scopes) {
            return Err(OAuthError::invalid_scope(
                "the requested scope is not allowed for this client",
            ));
        }
        // Before the user is read: a mark written from here on covers this grant.
        let started_ms = service.clock.now_ms();
        let checked = check_login(
            service,
            &client.id,
            &self.origin,
            &params.username,
            params.password,
            LoginChannel::PasswordGrant,
        )
        .await?;
        if !checked {
            return Err(invalid_credentials());
        }
        let (tokens, response) = issue::mint_new_user_grant(
            service,
            client,
            params.username,
            scope.as_string(),
            started_ms,
        )?;
        let issued = Issued::new(&tokens, response);
        service.tokens.create_tokens(tokens).await?;
        Ok(issued)
    }
}

/// Checks `username`'s `password` for a login through the client `client_id`: the account
/// lockout, the bounded argon2 pool (a dummy hash for unknown and disabled users) and the
/// audit trail, as one attempt. Shared by the password grant and the hosted login page.
/// `Ok(false)` for a wrong password, an unknown or disabled user and a locked account alike.
///
/// `channel` says where the password came from (see [`LoginChannel`]). An empty `client_id`
/// is a login without a client (audited with none).
pub async fn check_login(
    service: &TokenService,
    client_id: &str,
    origin: &Origin,
    username: &str,
    password: SecretString,
    channel: LoginChannel,
) -> Result<bool, OAuthError> {
    let policy = service
        .lockout_policy()
        .filter(|_| username.len() <= MAX_TRACKED_NAME);
    let (every_address, known_device) = match channel {
        LoginChannel::PasswordGrant => (ALL_SOURCES, None),
        LoginChannel::LoginPage { known_device } => (LOGIN_PAGE_EVERY_ADDRESS, known_device),
    };
    let (source, policy) = match known_device {
        Some(device) => (
            device,
            policy.map(|policy| LockoutPolicy {
                max_failures_per_user: 0,
                ..policy
            }),
        ),
        None => (
            origin.ip.map_or_else(
                || UNKNOWN_SOURCE.to_owned(),
                |ip| bucket_key(ip).to_string(),
            ),
            policy,
        ),
    };
    let attempt = LoginAttempt {
        lockouts: service.lockouts.clone(),
        users: service.users.clone(),
        hasher: service.hasher.clone(),
        policy,
        username: username.to_owned(),
        source,
        every_address,
        now: service.clock.now_secs(),
        metrics: service.metrics().clone(),
        audit: service.audit().clone(),
        origin: origin.clone(),
        client_id: client_id.to_owned(),
    };
    // The attempt runs in a task of its own that this request cannot cancel: a client that
    // disconnects drops this future at any await, and the lockout slot the attempt takes
    // must still be given back (else the account answers 503 for the whole window).
    let (reply, answer) = oneshot::channel();
    tokio::spawn(crate::telemetry::in_current_request(
        attempt.run(password, reply),
    ));
    answer
        .await
        .map_err(|_| OAuthError::server_error(AttemptLost))?
}

/// Where a password is checked, for the lockout.
#[derive(Debug)]
pub enum LoginChannel {
    /// `grant_type=password`: only a client that authenticated (a confidential client with its
    /// secret) can send these.
    PasswordGrant,
    /// The hosted login page: anyone can post it. Its failures count per address as the
    /// grant's do (one guess budget per address), but every address's together are counted in
    /// a row of their own: guessers on the page can lock the name on the page, never for the
    /// password grant's apps.
    LoginPage {
        /// This browser's known-device name for the user (see `login_session`): its attempts
        /// are counted per device instead of per address, and no lock of the name everywhere
        /// applies to them, so the user's own browser keeps working.
        known_device: Option<String>,
    },
}

/// The login page's row of every address's failures (beside `ALL_SOURCES`, the grant's).
const LOGIN_PAGE_EVERY_ADDRESS: &str = "login-page";

#[derive(Debug, thiserror::Error)]
#[error("the login attempt ended without an answer")]
struct AttemptLost;

#[derive(Debug, thiserror::Error)]
#[error("the client went away before its login was checked")]
struct RequesterGone;

/// The lockout `source` of a request without a client address (never over TCP).
const UNKNOWN_SOURCE: &str = "-";

/// One password check with its lockout steps, owned by a task of its own (see `issue`).
struct LoginAttempt {
    lockouts: Arc<dyn LockoutStore>,
    users: Arc<dyn UserStore>,
    hasher: PasswordHasher,
    policy: Option<LockoutPolicy>,
    username: String,
    /// The client's address (its rate-limit bucket) as text, or the known device.
    source: String,
    /// The row of every address's failures this channel counts in.
    every_address: &'static str,
    now: i64,
    metrics: GrantMetrics,
    audit: Audit,
    origin: Origin,
    client_id: String,
}

type Checked = Result<bool, OAuthError>;

impl LoginAttempt {
    async fn run(self, password: SecretString, mut reply: oneshot::Sender<Checked>) {
        let checked = self.check(password, &mut reply).await;
        // The requester may be gone; the attempt has ended either way.
        let _ = reply.send(checked);
    }

    /// Begin (waiting while other checks use the allowance), verify, end: every step that
    /// took a slot is ended here, whatever the requester does.
    async fn check(&self, password: SecretString, reply: &mut oneshot::Sender<Checked>) -> Checked {
        // A check in flight counts against the allowance until it ends, so guesses sent at the
        // same moment cannot get more password checks than the lockout allows. Attempts over
        // the allowance wait for the checks in flight (an honest burst of logins for one
        // account then goes through), and get a 503 only if that takes too long.
        if let Some(policy) = self.policy {
            let mut waited = std::time::Duration::ZERO;
            loop {
                let verdict = self
                    .lockouts
                    .attempt_counted_in(
                        &self.username,
                        &self.source,
                        self.every_address,
                        AttemptStep::Begin,
                        self.now,
                        policy,
                    )
                    .await?;
                match verdict {
                    Attempt::Locked { until } => {
                        // Same answer as a wrong password, and no argon2 work.
                        tracing::warn!(target: "audit", username = ?crate::telemetry::cut(&self.username), client_ip = %self.source, locked_until = until, "login refused: account locked");
                        self.login_failed(LoginFailure::AccountLocked);
                        return Ok(false);
                    }
                    // Nobody is waiting for this answer any more: stop without a slot.
                    Attempt::Busy if reply.is_closed() => {
                        return Err(OAuthError::server_error(RequesterGone))
                    }
                    Attempt::Busy if waited < BUSY_WAIT_LIMIT => {
                        tokio::time::sleep(BUSY_POLL).await;
                        waited += BUSY_POLL;
                    }
                    Attempt::Busy => {
                        return Err(OAuthError::unavailable(
                            "other logins for this account are being checked; retry in a moment",
                            AttemptsInFlight,
                        ));
                    }
                    Attempt::Allowed | Attempt::LockedNow { .. } => break,
                }
            }
        }
        // A user store that fails (a database outage) ends the attempt like a shed check:
        // its lockout slot is given back below, so the account is not left "busy". A requester
        // that goes away stops the check: its queued argon2 job is skipped, so clients that
        // send logins and hang up cannot keep the hashing queue full.
        let checked: Checked = tokio::select! {
            checked = self.verify(password) => checked,
            () = reply.closed() => Err(OAuthError::server_error(RequesterGone)),
        };
        if matches!(checked, Ok(false)) {
            self.login_failed(LoginFailure::InvalidCredentials);
        }
        let Some(policy) = self.policy else {
            return checked;
        };
        let step = match &checked {
            // A guess nobody hears the answer to is not counted (nor is a success unseen).
            _ if reply.is_closed() => AttemptStep::Abandoned,
            Ok(true) => AttemptStep::Succeeded,
            Ok(false) => AttemptStep::Failed,
            Err(_) => AttemptStep::Abandoned,
        };
        let outcome = self.end(step, policy).await?;
        if let Attempt::LockedNow { until, everywhere } = outcome {
            self.metrics.account_locked();
            self.audit.record(
                &self.origin,
                self.client(),
                Some(self.username.as_str()),
                Event::AccountLocked {
                    locked_for: if everywhere { "everywhere" } else { "address" },
                    locked_until: rfc3339_secs(until),
                },
            );
            // Unknown names are counted too, so lockouts do not reveal which names exist.
            if everywhere {
                tracing::warn!(target: "audit", username = ?crate::telemetry::cut(&self.username), locked_until = until, failures = policy.max_failures_per_user, "account locked for every address after repeated failed logins");
            } else {
                tracing::warn!(target: "audit", username = ?crate::telemetry::cut(&self.username), client_ip = %self.source, locked_until = until, failures = policy.max_failures, "account locked for this address after repeated failed logins");
            }
        }
        checked
    }
}

impl LoginAttempt {
    /// The audited client: none for a login without one (`client_id` empty).
    fn client(&self) -> Option<&str> {
        (!self.client_id.is_empty()).then_some(self.client_id.as_str())
    }

    fn login_failed(&self, reason: LoginFailure) {
        self.audit.record(
            &self.origin,
            self.client(),
            Some(self.username.as_str()),
            Event::LoginFailed { reason },
        );
    }

    async fn verify(&self, password: SecretString) -> Checked {
        match self.users.find_user(&self.username).await {
            Ok(Some(user)) if !user.disabled && has_usable_hash(&user) => self
                .hasher
                .verify(&user.password_hash, password)
                .await
                .map_err(OAuthError::from),
            Ok(_) => self
                .hasher
                .verify_dummy(password)
                .await
                .map_err(OAuthError::from),
            Err(err) => Err(OAuthError::from(err)),
        }
    }

    /// Ends the attempt, retrying a failed write a few times: a step that is never written
    /// leaves its slot taken until the failure window ends.
    async fn end(&self, step: AttemptStep, policy: LockoutPolicy) -> Result<Attempt, OAuthError> {
        let mut delay = END_RETRY_FIRST_DELAY;
        let mut tries = 1;
        loop {
            match self
                .lockouts
                .attempt_counted_in(
                    &self.username,
                    &self.source,
                    self.every_address,
                    step,
                    self.now,
                    policy,
                )
                .await
            {
                Ok(outcome) => return Ok(outcome),
                Err(err) if tries >= END_TRIES => return Err(err.into()),
                Err(err) => {
                    tracing::warn!(error = %err, "ending a login attempt failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 4;
                    tries += 1;
                }
            }
        }
    }
}

/// How often ending an attempt is tried, and the first pause between tries (then 4× longer).
const END_TRIES: u32 = 4;
const END_RETRY_FIRST_DELAY: std::time::Duration = std::time::Duration::from_millis(100);

/// Only a users row written by hand can hold a hash that is not an argon2 PHC string (a file
/// is checked when read): nobody can log in with it, and the attempt costs the same as a wrong
/// password.
fn has_usable_hash(user: &User) -> bool {
    let usable = password::check_phc(&user.password_hash).is_ok();
    if !usable {
        tracing::warn!(user = ?crate::telemetry::cut(&user.name), "login refused: the stored password hash is not an argon2 PHC string");
    }
    usable
}
