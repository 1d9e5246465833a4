//! The storage contract: what every token database promises, written once per case and run on
//! SQLite always and on PostgreSQL when TOKENGATE_TEST_DATABASE_URL is set (each case in a
//! database of its own; without the variable each prints its own `skipped:` line). The stores
//! are opened through the library, as the server opens them; no HTTP. A new backend passes
//! this suite or it is not done.

use std::sync::Arc;
use std::time::Duration;
use tempfile::TempDir;

use tokengate::abuse::rate_limit::{Rate, Take};
use tokengate::config::{Settings, SqliteSynchronous, TokenFormat, TokenStoreSettings};
use tokengate::crypto::secret;
use tokengate::crypto::token::{SecretDigest, TokenId};
use tokengate::store::directory::{ClientRow, SqlClientStore};
use tokengate::store::measured::Unobserved;
use tokengate::store::model::{
    AuthorizationCodeRecord, Client, ConsentRecord, GrantType, InitialAccessTokenRecord,
    LoginSessionRecord, NewTokens, PreviousSecret, RefreshTokenRecord, RegistrationRecord, Role,
    TokenRecord, User,
};
use tokengate::store::redirect_uri::RedirectUri;
use tokengate::store::{
    open_database, Attempt, AttemptStep, ClientStore, DatabaseStores, LockoutPolicy,
    PresentedRotation, PublicKey, PurgeLimits, PurgedRows, Redemption, Registration, Rotation,
    StoreError, SubjectKind, Successor,
};

use crate::helpers::{postgres_settings, test_settings, TestDatabase};

/// Each case once, as a test per backend: `store_contract::sqlite::<case>` and
/// `store_contract::postgres::<case>`.
macro_rules! contract {
    ($($case:ident),+ $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Backend::sqlite().await).await;
                }
            )+
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    let Some(backend) = super::Backend::postgres(stringify!($case)).await else {
                        return;
                    };
                    super::$case(backend).await;
                }
            )+
        }
    };
}

contract!(
    what_is_not_there_is_not_found,
    created_tokens_are_found_as_they_were_stored,
    a_closed_store_refuses_work_and_reopened_has_every_token,
    of_sixteen_concurrent_rotations_exactly_one_wins,
    a_presented_token_is_read_judged_and_rotated_in_one_call,
    a_successor_that_panics_leaves_the_token_and_the_store_working,
    of_sixteen_concurrent_presentations_exactly_one_rotates,
    concurrent_writes_to_one_row_have_one_winner_and_leave_the_other_writes_alone,
    a_write_the_database_refuses_fails_without_undoing_the_others,
    a_write_waiting_for_a_row_lock_does_not_hold_up_the_others,
    an_access_token_is_revoked_once,
    a_revoked_family_reads_revoked_in_every_token_and_cannot_rotate,
    subject_marks_end_the_grants_started_before_them,
    purge_counts_exactly_the_tokens_it_deletes,
    purge_keeps_the_revocations_still_needed,
    purge_drops_only_finished_lockout_rows,
    failures_from_one_address_lock_the_name_for_that_address,
    checks_in_flight_use_up_the_allowance_until_they_end,
    concurrent_attempts_get_no_more_checks_than_the_allowance,
    failures_from_every_address_lock_the_name_everywhere,
    each_every_address_row_counts_and_locks_on_its_own,
    clearing_failures_forgets_every_address_and_lock,
    users_are_added_edited_and_removed,
    clients_are_added_edited_and_removed_and_each_change_moves_the_revision,
    shared_rate_limits_and_published_keys_live_on_postgres_only,
    an_authorization_code_is_stored_as_its_digest_and_found_as_it_was_stored,
    an_authorization_code_is_redeemed_once_and_records_the_family_of_its_tokens,
    of_sixteen_concurrent_redemptions_of_a_code_exactly_one_wins,
    an_expired_code_cannot_be_redeemed_and_is_purged,
    a_login_session_names_its_user_until_it_expires_ends_or_a_mark_covers_it,
    a_consent_is_kept_per_user_and_client_until_a_mark_of_either_covers_it,
    a_registration_stores_the_client_and_the_digest_of_its_token_together,
    an_initial_token_is_spent_one_use_per_registration_until_none_is_left,
    initial_tokens_used_up_or_expired_are_purged,
    of_sixteen_concurrent_registrations_with_a_one_use_initial_token_exactly_one_wins,
    a_registered_client_is_updated_and_deleted_with_its_registration,
    a_replaced_client_secret_keeps_the_previous_one_beside_it_until_cleared,
);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sqlite,
    Postgres,
}

/// One backend's stores, with what keeps its database alive (dropped after the stores).
struct Backend {
    kind: Kind,
    settings: Settings,
    stores: DatabaseStores,
    _home: TempDir,
    _database: Option<TestDatabase>,
}

impl Backend {
    async fn sqlite() -> Self {
        let home = tempfile::tempdir().unwrap();
        let mut settings = test_settings(home.path());
        settings.stores.tokens = TokenStoreSettings::Sqlite {
            path: home.path().join("data/tokens.db"),
            synchronous: SqliteSynchronous::Normal,
        };
        let stores = open_database(&settings.stores.tokens, Arc::new(Unobserved))
            .await
            .unwrap();
        Self {
            kind: Kind::Sqlite,
            settings,
            stores,
            _home: home,
            _database: None,
        }
    }

    async fn postgres(case: &str) -> Option<Self> {
        let database = TestDatabase::create(case).await?;
        let home = tempfile::tempdir().unwrap();
        let mut settings = postgres_settings(home.path(), &database);
        if let TokenStoreSettings::Postgres(postgres) = &mut settings.stores.tokens {
            // Enough for the concurrent rotations to reach the database at once.
            postgres.max_connections = 8;
        }
        let stores = open_database(&settings.stores.tokens, Arc::new(Unobserved))
            .await
            .unwrap();
        Some(Self {
            kind: Kind::Postgres,
            settings,
            stores,
            _home: home,
            _database: Some(database),
        })
    }

    async fn access(&self, tokens: &NewTokens) -> Option<TokenRecord> {
        self.stores
            .tokens
            .find_access_token(&tokens.access.id)
            .await
            .unwrap()
    }

    async fn refresh(&self, tokens: &NewTokens) -> Option<RefreshTokenRecord> {
        let id = tokens.refresh.as_ref().unwrap().token.id;
        self.stores.tokens.find_refresh_token(&id).await.unwrap()
    }

    /// `revoked_at` of the grant's access and refresh tokens as read now.
    async fn revoked(&self, tokens: &NewTokens) -> (Option<i64>, Option<i64>) {
        let access = self.access(tokens).await.unwrap().revoked_at;
        let refresh = self.refresh(tokens).await.unwrap().token.revoked_at;
        (access, refresh)
    }

    async fn create(&self, tokens: &NewTokens) {
        self.stores
            .tokens
            .create_tokens(tokens.clone())
            .await
            .unwrap();
    }

    async fn rotate(&self, old: &NewTokens, now: i64, new: &NewTokens) -> Rotation {
        let id = old.refresh.as_ref().unwrap().token.id;
        self.stores
            .tokens
            .rotate_refresh_token(&id, now, new.clone())
            .await
            .unwrap()
    }

    /// How many of the rows of `grants` are stored.
    async fn stored_rows(&self, grants: &[NewTokens]) -> u64 {
        let mut rows = 0;
        for grant in grants {
            rows += u64::from(self.access(grant).await.is_some());
            if grant.refresh.is_some() {
                rows += u64::from(self.refresh(grant).await.is_some());
            }
        }
        rows
    }

    /// The rows one purge batch deleted, in all and per table.
    async fn purge(&self, limits: PurgeLimits) -> PurgedRows {
        self.stores.tokens.purge(limits).await.unwrap()
    }

    async fn attempt(
        &self,
        user: &str,
        source: &str,
        step: AttemptStep,
        now: i64,
        policy: LockoutPolicy,
    ) -> Attempt {
        self.stores
            .lockouts
            .attempt(user, source, step, now, policy)
            .await
            .unwrap()
    }

    /// A whole wrong-password attempt: `Begin`, then `Failed` if it was allowed.
    async fn fail(&self, user: &str, source: &str, now: i64, policy: LockoutPolicy) -> Attempt {
        match self
            .attempt(user, source, AttemptStep::Begin, now, policy)
            .await
        {
            Attempt::Allowed => {
                self.attempt(user, source, AttemptStep::Failed, now, policy)
                    .await
            }
            refused => refused,
        }
    }
}

/// Seconds; tokens are minted at this time and after.
const NOW: i64 = 1_800_000_000;

fn ms(secs: i64) -> i64 {
    secs * 1000
}

/// The tokens of one grant started at `started`: an access token and, with `refresh`, the
/// refresh token whose id is the family id (else the access token's own id is).
fn grant(
    client: &str,
    user: Option<&str>,
    started: i64,
    expires_at: i64,
    refresh: bool,
) -> NewTokens {
    let refresh_id = TokenId::new(ms(started));
    let access_id = TokenId::new(ms(started));
    let family_id = if refresh { refresh_id } else { access_id };
    let record = |id: TokenId| TokenRecord {
        id,
        secret_digest: SecretDigest::of(&id.0),
        client_id: client.to_owned(),
        username: user.map(str::to_owned),
        scope: "read write".into(),
        family_id,
        issued_at: started,
        expires_at,
        revoked_at: None,
    };
    NewTokens {
        access: record(access_id),
        refresh: refresh.then(|| RefreshTokenRecord {
            token: record(refresh_id),
            spent_at: None,
            replaced_by: None,
        }),
    }
}

/// What a rotation of `old` at `now` records: new tokens of the same grant.
fn successor(old: &NewTokens, now: i64) -> NewTokens {
    let old = &old.refresh.as_ref().unwrap().token;
    let mut next = grant(
        &old.client_id,
        old.username.as_deref(),
        now,
        now + 3600,
        true,
    );
    next.access.family_id = old.family_id;
    if let Some(refresh) = next.refresh.as_mut() {
        refresh.token.family_id = old.family_id;
    }
    next
}

fn family(tokens: &NewTokens) -> TokenId {
    tokens.access.family_id
}

fn refresh_id(tokens: &NewTokens) -> TokenId {
    tokens.refresh.as_ref().unwrap().token.id
}

fn limits(expired_before: i64, failures_before: i64, now: i64, batch: u32) -> PurgeLimits {
    PurgeLimits {
        expired_before,
        failures_before,
        buckets_full_before_ms: 0,
        now,
        batch,
    }
}

fn user(name: &str, password: &str) -> User {
    User {
        name: name.into(),
        password_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$hash-of-{password}"),
        disabled: false,
        roles: Default::default(),
    }
}

fn client(id: &str) -> Client {
    Client {
        id: id.into(),
        secret_hash: secret::hash_sha256("a secret"),
        grant_types: [
            GrantType::Password,
            GrantType::RefreshToken,
            GrantType::AuthorizationCode,
        ]
        .into(),
        scopes: ["read".to_owned(), "write".to_owned()].into(),
        access_token_validity_secs: Some(600),
        application_access_token_validity_secs: None,
        refresh_token_validity_secs: Some(86_400),
        introspect: true,
        token_format: Some(TokenFormat::Jwt),
        audience: Some("https://api.example".into()),
        disabled: false,
        public: false,
        redirect_uris: vec![RedirectUri::parse("https://app.example/cb").unwrap()],
        require_consent: false,
        name: Some("The App".into()),
        owner: Some("alice".into()),
        previous_secret: None,
    }
}

async fn what_is_not_there_is_not_found(b: Backend) {
    let unknown = TokenId::new(ms(NOW));
    let tokens = &b.stores.tokens;
    assert_eq!(tokens.find_access_token(&unknown).await.unwrap(), None);
    assert_eq!(tokens.find_refresh_token(&unknown).await.unwrap(), None);
    assert!(!tokens.revoke_access_token(&unknown, NOW).await.unwrap());

    // Rotating an unknown token writes nothing, not even the new tokens.
    let new = grant("app", Some("alice"), NOW, NOW + 3600, true);
    let rotation = tokens
        .rotate_refresh_token(&unknown, NOW, new.clone())
        .await
        .unwrap();
    assert_eq!(rotation, Rotation::AlreadySpent);
    assert_eq!(b.access(&new).await, None);
    assert_eq!(b.refresh(&new).await, None);

    assert!(!b.stores.lockouts.clear_failures("nobody").await.unwrap());

    let directory = &b.stores.directory;
    assert_eq!(directory.find_user("nobody").await.unwrap(), None);
    assert!(directory.list_users().await.unwrap().is_empty());
    assert!(!directory.remove_user("nobody").await.unwrap());
    assert!(!directory.set_user_password("nobody", "$x").await.unwrap());
    assert!(!directory.set_user_disabled("nobody", true).await.unwrap());
    assert!(directory.list_clients().await.unwrap().is_empty());
    assert!(!directory.client_exists("nobody").await.unwrap());
    assert!(!directory.remove_client("nobody").await.unwrap());
    assert!(!directory.set_client_disabled("nobody", true).await.unwrap());
}

async fn created_tokens_are_found_as_they_were_stored(b: Backend) {
    let password = grant("app", Some("alice"), NOW, NOW + 3600, true);
    let application = grant("service", None, NOW, NOW + 60, false);
    // Reads do not judge expiry (the protocol does); the janitor deletes the row later.
    let expired = grant("app", Some("bob"), NOW - 7200, NOW - 3600, true);
    for tokens in [&password, &application, &expired] {
        b.create(tokens).await;
    }

    assert_eq!(b.access(&password).await, Some(password.access.clone()));
    assert_eq!(b.refresh(&password).await, password.refresh.clone());
    assert_eq!(
        b.access(&application).await,
        Some(application.access.clone())
    );
    assert_eq!(b.access(&expired).await, Some(expired.access.clone()));
    assert_eq!(b.refresh(&expired).await, expired.refresh.clone());
    let stored = b.refresh(&expired).await.unwrap().token;
    assert_eq!(
        (stored.issued_at, stored.expires_at),
        (NOW - 7200, NOW - 3600)
    );

    // Each kind is looked up in its own table.
    let tokens = &b.stores.tokens;
    assert_eq!(
        tokens
            .find_refresh_token(&application.access.id)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        tokens
            .find_access_token(&refresh_id(&password))
            .await
            .unwrap(),
        None
    );
}

async fn a_closed_store_refuses_work_and_reopened_has_every_token(mut b: Backend) {
    b.stores.tokens.ping().await.unwrap();
    let tokens = grant("app", Some("alice"), NOW, NOW + 3600, true);
    b.create(&tokens).await;

    b.stores.tokens.close().await;

    assert!(b.stores.tokens.ping().await.is_err());
    let refused = b
        .stores
        .tokens
        .create_tokens(grant("app", Some("alice"), NOW, NOW + 3600, true))
        .await;
    assert!(
        matches!(refused, Err(StoreError::Unavailable(_))),
        "{refused:?}"
    );

    b.stores = open_database(&b.settings.stores.tokens, Arc::new(Unobserved))
        .await
        .unwrap();
    b.stores.tokens.ping().await.unwrap();
    assert_eq!(b.access(&tokens).await, Some(tokens.access.clone()));
    assert_eq!(b.refresh(&tokens).await, tokens.refresh.clone());
}

async fn of_sixteen_concurrent_rotations_exactly_one_wins(b: Backend) {
    let first = grant("app", Some("alice"), NOW, NOW + 86_400, true);
    b.create(&first).await;
    let old = refresh_id(&first);
    let candidates: Vec<NewTokens> = (0..16).map(|_| successor(&first, NOW + 10)).collect();

    let rotations = candidates.iter().map(|new| {
        let (tokens, new) = (b.stores.tokens.clone(), new.clone());
        tokio::spawn(async move { tokens.rotate_refresh_token(&old, NOW + 10, new).await })
    });
    let outcomes: Vec<Rotation> = futures::future::join_all(rotations)
        .await
        .into_iter()
        .map(|joined| joined.unwrap().unwrap())
        .collect();

    let winners: Vec<usize> = (0..outcomes.len())
        .filter(|i| outcomes[*i] == Rotation::Rotated)
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    assert_eq!(
        outcomes
            .iter()
            .filter(|o| **o == Rotation::AlreadySpent)
            .count(),
        15
    );
    let winner = &candidates[winners[0]];
    let spent = b.refresh(&first).await.unwrap();
    assert_eq!(spent.spent_at, Some(NOW + 10));
    assert_eq!(spent.replaced_by, Some(refresh_id(winner)));
    assert_eq!(spent.token.revoked_at, None);
    assert_eq!(b.access(winner).await, Some(winner.access.clone()));
    assert_eq!(b.refresh(winner).await, winner.refresh.clone());
    for (i, loser) in candidates.iter().enumerate() {
        if i != winners[0] {
            assert_eq!(b.access(loser).await, None, "a losing rotation wrote");
            assert_eq!(b.refresh(loser).await, None, "a losing rotation wrote");
        }
    }

    // The spent token stays spent; its successor rotates in turn.
    let again = successor(&first, NOW + 20);
    assert_eq!(
        b.rotate(&first, NOW + 20, &again).await,
        Rotation::AlreadySpent
    );
    assert_eq!(b.access(&again).await, None);
    let next = successor(winner, NOW + 30);
    assert_eq!(b.rotate(winner, NOW + 30, &next).await, Rotation::Rotated);
    assert_eq!(b.refresh(winner).await.unwrap().spent_at, Some(NOW + 30));
    assert_eq!(b.refresh(&next).await, next.refresh.clone());
}

/// A successor that records `new` for any token it is shown, and counts its calls.
fn recording(new: &NewTokens, calls: &Arc<std::sync::atomic::AtomicUsize>) -> Successor {
    let (new, calls) = (new.clone(), calls.clone());
    Box::new(move |_old: &RefreshTokenRecord| {
        calls.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Some(new)
    })
}

async fn a_presented_token_is_read_judged_and_rotated_in_one_call(b: Backend) {
    let store = &b.stores.tokens;
    let first = grant("app", Some("alice"), NOW, NOW + 86_400, true);
    b.create(&first).await;
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let called = || calls.load(std::sync::atomic::Ordering::SeqCst);

    // Unknown: the successor is not asked.
    let nothing = successor(&first, NOW + 1);
    let unknown = TokenId::new(ms(NOW));
    let outcome = store
        .rotate_presented(&unknown, NOW + 1, recording(&nothing, &calls))
        .await
        .unwrap();
    assert!(matches!(outcome, PresentedRotation::Unknown), "{outcome:?}");
    assert_eq!(called(), 0);

    // Declined: the token is handed over as stored, and nothing is written.
    let seen = Arc::new(std::sync::Mutex::new(None));
    let seen_by_successor = seen.clone();
    let declining: Successor = Box::new(move |old: &RefreshTokenRecord| {
        *seen_by_successor.lock().unwrap() = Some(old.clone());
        None
    });
    let outcome = store
        .rotate_presented(&refresh_id(&first), NOW + 1, declining)
        .await
        .unwrap();
    let stored = b.refresh(&first).await.unwrap();
    assert_eq!(stored, first.refresh.clone().unwrap());
    assert_eq!(seen.lock().unwrap().as_ref(), Some(&stored));
    match outcome {
        PresentedRotation::Kept(kept) => assert_eq!(kept, stored),
        other => panic!("expected Kept, got {other:?}"),
    }

    // Accepted: the token is spent, replaced by the successor's tokens, all in one call.
    let second = successor(&first, NOW + 2);
    let outcome = store
        .rotate_presented(&refresh_id(&first), NOW + 2, recording(&second, &calls))
        .await
        .unwrap();
    match outcome {
        PresentedRotation::Rotated { old, new } => {
            assert_eq!(old, stored, "the token as it was before the rotation");
            assert_eq!(new.access, second.access);
            assert_eq!(new.refresh, second.refresh);
        }
        other => panic!("expected Rotated, got {other:?}"),
    }
    assert_eq!(called(), 1);
    let spent = b.refresh(&first).await.unwrap();
    assert_eq!(spent.spent_at, Some(NOW + 2));
    assert_eq!(spent.replaced_by, Some(refresh_id(&second)));
    assert_eq!(b.access(&second).await, Some(second.access.clone()));
    assert_eq!(b.refresh(&second).await, second.refresh.clone());

    // Spent: kept as it is, without asking the successor.
    let third = successor(&first, NOW + 3);
    let outcome = store
        .rotate_presented(&refresh_id(&first), NOW + 3, recording(&third, &calls))
        .await
        .unwrap();
    match outcome {
        PresentedRotation::Kept(kept) => assert_eq!(kept, spent),
        other => panic!("expected Kept, got {other:?}"),
    }
    assert_eq!(called(), 1);
    assert_eq!(b.access(&third).await, None);

    // Revoked (its grant): kept, read as revoked, without asking the successor.
    assert!(store
        .revoke_family(&family(&second), NOW + 4)
        .await
        .unwrap());
    let fourth = successor(&second, NOW + 5);
    let outcome = store
        .rotate_presented(&refresh_id(&second), NOW + 5, recording(&fourth, &calls))
        .await
        .unwrap();
    match outcome {
        PresentedRotation::Kept(kept) => {
            assert_eq!(kept.token.revoked_at, Some(NOW + 4));
            assert_eq!(kept.spent_at, None);
        }
        other => panic!("expected Kept, got {other:?}"),
    }
    assert_eq!(called(), 1);
    assert_eq!(b.access(&fourth).await, None);
    assert_eq!(b.refresh(&second).await.unwrap().spent_at, None);

    // Covered by a not-before mark of its user, or of its client: kept, read as revoked,
    // without asking the successor (the spend that follows a read relies on this).
    for (kind, name, user, client) in [
        (SubjectKind::User, "bob", Some("bob"), "app"),
        (SubjectKind::Client, "other-app", Some("carol"), "other-app"),
    ] {
        let marked = grant(client, user, NOW, NOW + 86_400, true);
        b.create(&marked).await;
        store
            .revoke_subject(kind, name, ms(NOW + 10), NOW + 6)
            .await
            .unwrap();
        let next = successor(&marked, NOW + 7);
        let outcome = store
            .rotate_presented(&refresh_id(&marked), NOW + 7, recording(&next, &calls))
            .await
            .unwrap();
        match outcome {
            PresentedRotation::Kept(kept) => {
                assert_eq!(kept.token.revoked_at, Some(NOW + 6), "{name}");
                assert_eq!(kept.spent_at, None, "{name}");
            }
            other => panic!("expected Kept for {name}, got {other:?}"),
        }
        assert_eq!(called(), 1, "{name}");
        assert_eq!(b.access(&next).await, None, "{name}");
    }
}

async fn a_successor_that_panics_leaves_the_token_and_the_store_working(b: Backend) {
    let store = &b.stores.tokens;
    let first = grant("app", Some("alice"), NOW, NOW + 86_400, true);
    b.create(&first).await;
    let panicking: Successor = Box::new(|_old: &RefreshTokenRecord| panic!("a successor's bug"));

    let outcome = store
        .rotate_presented(&refresh_id(&first), NOW + 1, panicking)
        .await
        .unwrap();

    match outcome {
        PresentedRotation::Kept(kept) => assert_eq!(kept.spent_at, None),
        other => panic!("expected Kept, got {other:?}"),
    }
    // The store still reads and writes (on SQLite the panic ran on its writer thread).
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let second = successor(&first, NOW + 2);
    let outcome = store
        .rotate_presented(&refresh_id(&first), NOW + 2, recording(&second, &calls))
        .await
        .unwrap();
    assert!(
        matches!(outcome, PresentedRotation::Rotated { .. }),
        "{outcome:?}"
    );
    assert_eq!(b.refresh(&second).await, second.refresh.clone());
}

async fn of_sixteen_concurrent_presentations_exactly_one_rotates(b: Backend) {
    let first = grant("app", Some("alice"), NOW, NOW + 86_400, true);
    b.create(&first).await;
    let old = refresh_id(&first);
    let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let candidates: Vec<NewTokens> = (0..16).map(|_| successor(&first, NOW + 10)).collect();

    let rotations = candidates.iter().map(|new| {
        let (tokens, successor) = (b.stores.tokens.clone(), recording(new, &calls));
        tokio::spawn(async move { tokens.rotate_presented(&old, NOW + 10, successor).await })
    });
    let outcomes: Vec<PresentedRotation> = futures::future::join_all(rotations)
        .await
        .into_iter()
        .map(|joined| joined.unwrap().unwrap())
        .collect();

    let winners: Vec<&NewTokens> = outcomes
        .iter()
        .filter_map(|outcome| match outcome {
            PresentedRotation::Rotated { new, .. } => Some(&**new),
            _ => None,
        })
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let kept = outcomes
        .iter()
        .filter(
            |outcome| matches!(outcome, PresentedRotation::Kept(k) if k.spent_at == Some(NOW + 10)),
        )
        .count();
    assert_eq!(kept, 15, "the others see the token spent: {outcomes:?}");
    let winner = winners[0];
    let spent = b.refresh(&first).await.unwrap();
    assert_eq!(spent.replaced_by, Some(refresh_id(winner)));
    // SQLite reads and writes in one job, so only the winner's successor ran; PostgreSQL
    // reads first (the default method), so every call that read the token live asked its own.
    let asked = calls.load(std::sync::atomic::Ordering::SeqCst);
    match b.kind {
        Kind::Sqlite => assert_eq!(asked, 1),
        Kind::Postgres => assert!((1..=16).contains(&asked), "{asked}"),
    }
    for loser in candidates
        .iter()
        .filter(|c| refresh_id(c) != refresh_id(winner))
    {
        assert_eq!(b.access(loser).await, None, "a losing rotation wrote");
        assert_eq!(b.refresh(loser).await, None, "a losing rotation wrote");
    }
}

/// The stores may commit concurrent writes together (a group commit): writes to one row that
/// arrive together are still judged one after the other, and the other writes of the moment
/// are unaffected.
async fn concurrent_writes_to_one_row_have_one_winner_and_leave_the_other_writes_alone(b: Backend) {
    let shared = grant("app", Some("alice"), NOW, NOW + 86_400, true);
    let others: Vec<NewTokens> = (0..8)
        .map(|_| grant("app", Some("bob"), NOW, NOW + 86_400, true))
        .collect();
    let revoked = grant("app", Some("carol"), NOW, NOW + 3600, true);
    for tokens in std::iter::once(&shared).chain(&others).chain([&revoked]) {
        b.create(tokens).await;
    }
    let contenders: Vec<NewTokens> = (0..12).map(|_| successor(&shared, NOW + 10)).collect();
    let successors: Vec<NewTokens> = others.iter().map(|o| successor(o, NOW + 10)).collect();
    let created: Vec<NewTokens> = (0..8)
        .map(|_| grant("service", None, NOW + 10, NOW + 3600, false))
        .collect();

    let store = &b.stores.tokens;
    let spawn_rotation = |old: TokenId, new: &NewTokens| {
        let (store, new) = (store.clone(), new.clone());
        tokio::spawn(async move { store.rotate_refresh_token(&old, NOW + 10, new).await })
    };
    let shared_rotations: Vec<_> = contenders
        .iter()
        .map(|new| spawn_rotation(refresh_id(&shared), new))
        .collect();
    let other_rotations: Vec<_> = others
        .iter()
        .zip(&successors)
        .map(|(old, new)| spawn_rotation(refresh_id(old), new))
        .collect();
    let creations: Vec<_> = created
        .iter()
        .map(|tokens| {
            let (store, tokens) = (store.clone(), tokens.clone());
            tokio::spawn(async move { store.create_tokens(tokens).await })
        })
        .collect();
    let access_revocations: Vec<_> = (0..6)
        .map(|n| {
            let (store, id) = (store.clone(), revoked.access.id);
            tokio::spawn(async move { store.revoke_access_token(&id, NOW + 11 + n).await })
        })
        .collect();
    let family_revocations: Vec<_> = (0..6)
        .map(|_| {
            let (store, id) = (store.clone(), family(&revoked));
            tokio::spawn(async move { store.revoke_family(&id, NOW + 12).await })
        })
        .collect();

    let outcomes = |joined: Vec<Result<Result<Rotation, StoreError>, _>>| -> Vec<Rotation> {
        joined.into_iter().map(|j| j.unwrap().unwrap()).collect()
    };
    let shared_outcomes = outcomes(futures::future::join_all(shared_rotations).await);
    let other_outcomes = outcomes(futures::future::join_all(other_rotations).await);
    for created in futures::future::join_all(creations).await {
        created.unwrap().unwrap();
    }
    let revoked_access: Vec<bool> = futures::future::join_all(access_revocations)
        .await
        .into_iter()
        .map(|j| j.unwrap().unwrap())
        .collect();
    let revoked_family: Vec<bool> = futures::future::join_all(family_revocations)
        .await
        .into_iter()
        .map(|j| j.unwrap().unwrap())
        .collect();

    let winners: Vec<&NewTokens> = contenders
        .iter()
        .zip(&shared_outcomes)
        .filter(|(_, outcome)| **outcome == Rotation::Rotated)
        .map(|(new, _)| new)
        .collect();
    assert_eq!(winners.len(), 1, "{shared_outcomes:?}");
    assert_eq!(
        b.refresh(&shared).await.unwrap().replaced_by,
        Some(refresh_id(winners[0]))
    );
    for new in &contenders {
        let won = std::ptr::eq(new, winners[0]);
        assert_eq!(
            b.access(new).await.is_some(),
            won,
            "a losing rotation wrote"
        );
        assert_eq!(
            b.refresh(new).await.is_some(),
            won,
            "a losing rotation wrote"
        );
    }
    assert_eq!(other_outcomes, vec![Rotation::Rotated; others.len()]);
    assert_eq!(
        b.stored_rows(&successors).await,
        2 * successors.len() as u64
    );
    assert_eq!(b.stored_rows(&created).await, created.len() as u64);
    assert_eq!(
        revoked_access.iter().filter(|r| **r).count(),
        1,
        "{revoked_access:?}"
    );
    assert_eq!(
        revoked_family.iter().filter(|r| **r).count(),
        1,
        "{revoked_family:?}"
    );
    let (access, refresh) = b.revoked(&revoked).await;
    assert!(access.is_some_and(|at| (NOW + 11..NOW + 17).contains(&at)));
    assert_eq!(refresh, Some(NOW + 12));
}

/// A write the database refuses (here: a token id that is already stored) fails; every write
/// reported done is stored and none reported failed is. PostgreSQL retries the other writes
/// of a refused batch one by one, so there they all succeed; SQLite reports the failure of its
/// batch to each write in it.
async fn a_write_the_database_refuses_fails_without_undoing_the_others(b: Backend) {
    let existing = grant("app", Some("alice"), NOW, NOW + 3600, true);
    b.create(&existing).await;
    let rotated: Vec<NewTokens> = (0..4)
        .map(|_| grant("app", Some("bob"), NOW, NOW + 3600, true))
        .collect();
    for tokens in &rotated {
        b.create(tokens).await;
    }
    let successors: Vec<NewTokens> = rotated.iter().map(|o| successor(o, NOW + 5)).collect();
    let created: Vec<NewTokens> = (0..16)
        .map(|_| grant("app", Some("carol"), NOW + 5, NOW + 3600, true))
        .collect();

    let store = &b.stores.tokens;
    let create = |tokens: &NewTokens| {
        let (store, tokens) = (store.clone(), tokens.clone());
        tokio::spawn(async move { store.create_tokens(tokens).await })
    };
    // The refused write among others, so that it shares a batch with some: the first writes
    // leave at once, the ones after them wait together for the next commit.
    let mut creations: Vec<_> = created.iter().take(8).map(create).collect();
    let duplicate = create(&existing);
    creations.extend(created.iter().skip(8).map(create));
    let rotations: Vec<_> = rotated
        .iter()
        .zip(&successors)
        .map(|(old, new)| {
            let (store, old, new) = (store.clone(), refresh_id(old), new.clone());
            tokio::spawn(async move { store.rotate_refresh_token(&old, NOW + 5, new).await })
        })
        .collect();

    assert!(duplicate.await.unwrap().is_err());
    for (tokens, done) in created
        .iter()
        .zip(futures::future::join_all(creations).await)
    {
        let done = done.unwrap();
        let stored = b.stored_rows(std::slice::from_ref(tokens)).await;
        assert_eq!(stored, if done.is_ok() { 2 } else { 0 }, "{done:?}");
        if b.kind == Kind::Postgres {
            assert!(done.is_ok(), "{done:?}");
        }
    }
    for (new, done) in successors
        .iter()
        .zip(futures::future::join_all(rotations).await)
    {
        let done = done.unwrap();
        let stored = b.stored_rows(std::slice::from_ref(new)).await;
        assert_eq!(
            stored,
            if matches!(done, Ok(Rotation::Rotated)) {
                2
            } else {
                0
            },
            "{done:?}"
        );
        if b.kind == Kind::Postgres {
            assert_eq!(done.unwrap(), Rotation::Rotated);
        }
    }
    // The refused write changed nothing.
    assert_eq!(b.access(&existing).await, Some(existing.access.clone()));
}

/// PostgreSQL: a write that waits for a row lock another session holds (up to the 3 s lock
/// limit) does not make the writes after it wait too. (SQLite has no row locks: a writer from
/// another process holds the whole database.)
async fn a_write_waiting_for_a_row_lock_does_not_hold_up_the_others(b: Backend) {
    let Some(database) = &b._database else {
        return;
    };
    let locked = grant("app", Some("alice"), NOW, NOW + 3600, true);
    b.create(&locked).await;
    let pool = sqlx::PgPool::connect(&database.url).await.unwrap();
    let mut blocker = pool.begin().await.unwrap();
    sqlx::query("SELECT id FROM refresh_tokens WHERE id = $1 FOR UPDATE")
        .bind(refresh_id(&locked).0.as_slice())
        .execute(&mut *blocker)
        .await
        .unwrap();

    let waiting = {
        let (store, old, new) = (
            b.stores.tokens.clone(),
            refresh_id(&locked),
            successor(&locked, NOW + 1),
        );
        tokio::spawn(async move { store.rotate_refresh_token(&old, NOW + 1, new).await })
    };
    // Until the rotation waits for the lock.
    let mut waits = false;
    for _ in 0..200 {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock'",
        )
        .fetch_one(&pool)
        .await
        .unwrap();
        if waiting > 0 {
            waits = true;
            break;
        }
        tokio::task::yield_now().await;
    }
    assert!(waits, "the rotation never waited for the lock");
    let started = std::time::Instant::now();
    let other = grant("app", Some("bob"), NOW + 1, NOW + 3600, true);
    b.create(&other).await;
    let took = started.elapsed();
    blocker.rollback().await.unwrap();

    assert!(took < std::time::Duration::from_secs(1), "{took:?}");
    assert_eq!(b.access(&other).await, Some(other.access.clone()));
    // The lock went within its 3 s: the waiting rotation went ahead.
    assert_eq!(waiting.await.unwrap().unwrap(), Rotation::Rotated);
    pool.close().await;
}

async fn an_access_token_is_revoked_once(b: Backend) {
    let tokens = grant("app", Some("alice"), NOW, NOW + 3600, true);
    b.create(&tokens).await;

    let store = &b.stores.tokens;
    assert!(store
        .revoke_access_token(&tokens.access.id, NOW + 5)
        .await
        .unwrap());
    assert!(!store
        .revoke_access_token(&tokens.access.id, NOW + 6)
        .await
        .unwrap());

    assert_eq!(b.revoked(&tokens).await, (Some(NOW + 5), None));
    // The grant goes on: only the access token was revoked.
    let next = successor(&tokens, NOW + 7);
    assert_eq!(b.rotate(&tokens, NOW + 7, &next).await, Rotation::Rotated);
}

async fn a_revoked_family_reads_revoked_in_every_token_and_cannot_rotate(b: Backend) {
    let first = grant("app", Some("alice"), NOW, NOW + 3600, true);
    let other = grant("app", Some("alice"), NOW, NOW + 3600, true);
    b.create(&first).await;
    b.create(&other).await;
    let store = &b.stores.tokens;
    assert!(store
        .revoke_access_token(&first.access.id, NOW + 1)
        .await
        .unwrap());
    let second = successor(&first, NOW + 2);
    assert_eq!(b.rotate(&first, NOW + 2, &second).await, Rotation::Rotated);

    assert!(store.revoke_family(&family(&first), NOW + 3).await.unwrap());
    assert!(!store.revoke_family(&family(&first), NOW + 4).await.unwrap());

    // A token's own revocation comes first; every other token of the grant reads as revoked
    // by the family's, whether spent, live, or issued by a rotation.
    assert_eq!(b.revoked(&first).await, (Some(NOW + 1), Some(NOW + 3)));
    assert_eq!(b.revoked(&second).await, (Some(NOW + 3), Some(NOW + 3)));
    assert_eq!(b.revoked(&other).await, (None, None));

    let third = successor(&second, NOW + 5);
    assert_eq!(
        b.rotate(&second, NOW + 5, &third).await,
        Rotation::AlreadySpent
    );
    assert_eq!(b.refresh(&second).await.unwrap().spent_at, None);
    assert_eq!(b.access(&third).await, None);
    let next = successor(&other, NOW + 6);
    assert_eq!(b.rotate(&other, NOW + 6, &next).await, Rotation::Rotated);
}

async fn subject_marks_end_the_grants_started_before_them(b: Backend) {
    let mark = NOW + 100;
    let alice_before = grant("app", Some("alice"), NOW, NOW + 3600, true);
    let alice_between = grant("app", Some("alice"), NOW + 50, NOW + 3600, true);
    // Started in the mark's very millisecond: not covered.
    let alice_at_mark = grant("app", Some("alice"), mark, NOW + 3600, true);
    let bob_before = grant("app", Some("bob"), NOW, NOW + 3600, true);
    let service_before = grant("service", None, NOW, NOW + 3600, false);
    let other_before = grant("other", Some("bob"), NOW, NOW + 3600, true);
    for tokens in [
        &alice_before,
        &alice_between,
        &alice_at_mark,
        &bob_before,
        &service_before,
        &other_before,
    ] {
        b.create(tokens).await;
    }
    let store = &b.stores.tokens;

    store
        .revoke_subject(SubjectKind::User, "alice", ms(mark), NOW + 60)
        .await
        .unwrap();

    assert_eq!(
        b.revoked(&alice_before).await,
        (Some(NOW + 60), Some(NOW + 60))
    );
    assert_eq!(
        b.revoked(&alice_between).await,
        (Some(NOW + 60), Some(NOW + 60))
    );
    assert_eq!(b.revoked(&alice_at_mark).await, (None, None));
    assert_eq!(b.revoked(&bob_before).await, (None, None));
    // A token an old grant issues after the mark (a rotation racing it) is covered too.
    let late = successor(&alice_before, NOW + 200);
    b.create(&late).await;
    assert_eq!(b.revoked(&late).await, (Some(NOW + 60), Some(NOW + 60)));
    let next = successor(&alice_before, NOW + 201);
    assert_eq!(
        b.rotate(&alice_before, NOW + 201, &next).await,
        Rotation::AlreadySpent
    );
    assert_eq!(b.access(&next).await, None);

    // A later call with an earlier time never moves the mark back.
    store
        .revoke_subject(SubjectKind::User, "alice", ms(NOW + 10), NOW + 70)
        .await
        .unwrap();
    assert_eq!(
        b.revoked(&alice_between).await,
        (Some(NOW + 60), Some(NOW + 60))
    );
    // One with a later time moves it forward.
    store
        .revoke_subject(SubjectKind::User, "alice", ms(NOW + 300), NOW + 80)
        .await
        .unwrap();
    assert_eq!(
        b.revoked(&alice_at_mark).await,
        (Some(NOW + 80), Some(NOW + 80))
    );
    let after_marks = grant("app", Some("alice"), NOW + 300, NOW + 3600, true);
    b.create(&after_marks).await;
    assert_eq!(b.revoked(&after_marks).await, (None, None));

    // A client's mark covers its tokens whoever the user, and no other client's.
    store
        .revoke_subject(SubjectKind::Client, "service", ms(mark), NOW + 90)
        .await
        .unwrap();
    store
        .revoke_subject(SubjectKind::Client, "other", ms(mark), NOW + 91)
        .await
        .unwrap();
    assert_eq!(
        b.access(&service_before).await.unwrap().revoked_at,
        Some(NOW + 90)
    );
    assert_eq!(
        b.revoked(&other_before).await,
        (Some(NOW + 91), Some(NOW + 91))
    );
    assert_eq!(b.revoked(&bob_before).await, (None, None));
    let next = successor(&other_before, NOW + 202);
    assert_eq!(
        b.rotate(&other_before, NOW + 202, &next).await,
        Rotation::AlreadySpent
    );
}

async fn purge_counts_exactly_the_tokens_it_deletes(b: Backend) {
    let cut = NOW - 100;
    let mut expired = Vec::new();
    for _ in 0..5 {
        expired.push(grant("service", None, NOW - 1000, NOW - 500, false));
    }
    for _ in 0..3 {
        expired.push(grant("app", Some("alice"), NOW - 1000, NOW - 500, true));
    }
    // Expiring at the cut itself is not expired before it.
    let at_cut = grant("app", Some("alice"), NOW - 200, cut, true);
    let live = [
        grant("app", Some("alice"), NOW, NOW + 3600, true),
        grant("service", None, NOW, NOW + 3600, false),
    ];
    for tokens in expired.iter().chain([&at_cut]).chain(&live) {
        b.create(tokens).await;
    }
    let mut known = expired.clone();
    known.push(at_cut.clone());
    known.extend(live.iter().cloned());

    // Small batches: every call says exactly how many rows it took away.
    let (mut total, mut access) = (0, 0);
    for _ in 0..50 {
        let before = b.stored_rows(&known).await;
        let deleted = b.purge(limits(cut, 0, NOW, 2)).await;
        let after = b.stored_rows(&known).await;
        assert_eq!(
            deleted.total(),
            before - after,
            "purge reported {deleted:?}"
        );
        assert!(deleted.access_tokens <= 2 && deleted.refresh_tokens <= 2);
        access += deleted.access_tokens;
        total += deleted.total();
        if deleted.total() == 0 {
            break;
        }
    }

    assert_eq!(total, 8 + 3);
    assert_eq!(access, 8, "every expired grant has one access token");
    assert_eq!(b.stored_rows(&expired).await, 0);
    assert_eq!(b.stored_rows(&[at_cut]).await, 2);
    assert_eq!(b.stored_rows(&live).await, 3);
    assert_eq!(
        b.purge(limits(cut, 0, NOW, 1000)).await,
        PurgedRows::default()
    );
}

async fn purge_keeps_the_revocations_still_needed(b: Backend) {
    // The oldest stored token was issued at NOW - 200.
    let oldest = grant("app", Some("alice"), NOW - 200, NOW + 3600, true);
    let live = grant("app", Some("alice"), NOW, NOW + 3600, true);
    let carol = grant("app", Some("carol"), NOW, NOW + 3600, true);
    for tokens in [&oldest, &live, &carol] {
        b.create(tokens).await;
    }
    let store = &b.stores.tokens;
    // A grant whose tokens are all gone, revoked before any stored token was issued.
    let gone = TokenId::new(ms(NOW - 2000));
    assert!(store.revoke_family(&gone, NOW - 600).await.unwrap());
    // Older than the oldest stored token, but by less than the clock-skew allowance (300 s).
    let within_slack = TokenId::new(ms(NOW - 1900));
    assert!(store.revoke_family(&within_slack, NOW - 400).await.unwrap());
    // Revoked after the oldest stored token was issued: it may still cover it.
    assert!(store
        .revoke_family(&family(&oldest), NOW - 150)
        .await
        .unwrap());
    assert!(store.revoke_family(&family(&live), NOW + 1).await.unwrap());
    store
        .revoke_subject(SubjectKind::User, "carol", ms(NOW + 2), NOW + 2)
        .await
        .unwrap();

    // Expiry bound and lifetimes do not decide: the oldest stored token does.
    let deleted = b.purge(limits(NOW, NOW, NOW + 10_000, 1000)).await;

    assert_eq!(
        deleted,
        PurgedRows {
            revoked_families: 1,
            ..PurgedRows::default()
        }
    );
    assert_eq!(
        b.purge(limits(NOW, NOW, NOW + 10_000, 1000)).await.total(),
        0
    );
    assert_eq!(b.revoked(&oldest).await, (Some(NOW - 150), Some(NOW - 150)));
    assert_eq!(b.revoked(&live).await, (Some(NOW + 1), Some(NOW + 1)));
    // Not-before marks are never purged.
    assert_eq!(b.revoked(&carol).await, (Some(NOW + 2), Some(NOW + 2)));
    assert!(!store.revoke_family(&family(&live), NOW + 3).await.unwrap());
    assert!(
        store.revoke_family(&gone, NOW + 3).await.unwrap(),
        "the revocation no token needed was kept"
    );
    assert!(
        !store.revoke_family(&within_slack, NOW + 3).await.unwrap(),
        "a revocation within the clock-skew allowance was dropped"
    );
}

async fn purge_drops_only_finished_lockout_rows(b: Backend) {
    let lock_long = LockoutPolicy {
        max_failures: 1,
        max_failures_per_user: 5,
        window_secs: 60,
        lock_secs: 10_000,
    };
    let lenient = LockoutPolicy {
        max_failures: 3,
        ..lock_long
    };
    let per_address = LockoutPolicy {
        max_failures: 2,
        max_failures_per_user: 0,
        ..lock_long
    };
    // dora: her address's row holds a lock until NOW + 9000; her every-address row only a
    // failure of a finished window.
    assert_eq!(
        b.fail("dora", "10.0.0.1", NOW - 1000, lock_long).await,
        Attempt::LockedNow {
            until: NOW + 9000,
            everywhere: false
        }
    );
    // erin: two rows of a finished window, no lock.
    assert_eq!(
        b.fail("erin", "10.0.0.2", NOW - 1000, lenient).await,
        Attempt::Allowed
    );
    // fay: one row, of a window still running.
    assert_eq!(
        b.fail("fay", "10.0.0.3", NOW - 10, per_address).await,
        Attempt::Allowed
    );

    let deleted = b.purge(limits(0, NOW - 60, NOW, 1000)).await;

    assert_eq!(
        deleted,
        PurgedRows {
            login_failures: 3,
            ..PurgedRows::default()
        }
    );
    assert_eq!(b.purge(limits(0, NOW - 60, NOW, 1000)).await.total(), 0);
    assert_eq!(
        b.attempt("dora", "10.0.0.1", AttemptStep::Begin, NOW, lock_long)
            .await,
        Attempt::Locked { until: NOW + 9000 }
    );
    // fay's first failure was kept: the second locks.
    assert_eq!(
        b.fail("fay", "10.0.0.3", NOW, per_address).await,
        Attempt::LockedNow {
            until: NOW + 10_000,
            everywhere: false
        }
    );
}

const PER_ADDRESS: LockoutPolicy = LockoutPolicy {
    max_failures: 2,
    max_failures_per_user: 0,
    window_secs: 100,
    lock_secs: 50,
};

async fn failures_from_one_address_lock_the_name_for_that_address(b: Backend) {
    let (a, other) = ("192.0.2.1", "192.0.2.2");
    assert_eq!(b.fail("alice", a, NOW, PER_ADDRESS).await, Attempt::Allowed);
    assert_eq!(
        b.fail("alice", a, NOW + 1, PER_ADDRESS).await,
        Attempt::LockedNow {
            until: NOW + 51,
            everywhere: false
        }
    );

    let begin = |user: &'static str, source: &'static str, now: i64| {
        b.attempt(user, source, AttemptStep::Begin, now, PER_ADDRESS)
    };
    assert_eq!(
        begin("alice", a, NOW + 2).await,
        Attempt::Locked { until: NOW + 51 }
    );
    assert_eq!(begin("alice", other, NOW + 2).await, Attempt::Allowed);
    assert_eq!(
        b.attempt("alice", other, AttemptStep::Succeeded, NOW + 2, PER_ADDRESS)
            .await,
        Attempt::Allowed
    );
    assert_eq!(begin("bob", a, NOW + 2).await, Attempt::Allowed);
    assert_eq!(
        b.attempt("bob", a, AttemptStep::Abandoned, NOW + 2, PER_ADDRESS)
            .await,
        Attempt::Allowed
    );
    // The lock ends on time; a success forgets the address's failures.
    assert_eq!(begin("alice", a, NOW + 51).await, Attempt::Allowed);
    assert_eq!(
        b.attempt("alice", a, AttemptStep::Succeeded, NOW + 51, PER_ADDRESS)
            .await,
        Attempt::Allowed
    );
    assert_eq!(
        b.fail("alice", a, NOW + 52, PER_ADDRESS).await,
        Attempt::Allowed
    );
    // Failures of an elapsed window no longer count.
    assert_eq!(
        b.fail("alice", a, NOW + 200, PER_ADDRESS).await,
        Attempt::Allowed
    );
    assert_eq!(
        b.fail("alice", a, NOW + 201, PER_ADDRESS).await,
        Attempt::LockedNow {
            until: NOW + 251,
            everywhere: false
        }
    );
}

async fn checks_in_flight_use_up_the_allowance_until_they_end(b: Backend) {
    let a = "192.0.2.1";
    let step = |step: AttemptStep| b.attempt("alice", a, step, NOW, PER_ADDRESS);
    assert_eq!(step(AttemptStep::Begin).await, Attempt::Allowed);
    assert_eq!(step(AttemptStep::Begin).await, Attempt::Allowed);
    assert_eq!(step(AttemptStep::Begin).await, Attempt::Busy);

    // An abandoned check gives its slot back without counting as a failure.
    assert_eq!(step(AttemptStep::Abandoned).await, Attempt::Allowed);
    assert_eq!(step(AttemptStep::Begin).await, Attempt::Allowed);
    assert_eq!(step(AttemptStep::Failed).await, Attempt::Allowed);
    assert_eq!(step(AttemptStep::Abandoned).await, Attempt::Allowed);
    // One failure and no check in flight: one more check.
    assert_eq!(step(AttemptStep::Begin).await, Attempt::Allowed);
    assert_eq!(step(AttemptStep::Begin).await, Attempt::Busy);
}

async fn concurrent_attempts_get_no_more_checks_than_the_allowance(b: Backend) {
    let policy = LockoutPolicy {
        max_failures: 3,
        max_failures_per_user: 4,
        ..PER_ADDRESS
    };
    // Sixteen attempts at once, from two addresses: each row's allowance holds.
    let begins = (0..16).map(|i| {
        let lockouts = b.stores.lockouts.clone();
        let source = if i % 2 == 0 { "192.0.2.1" } else { "192.0.2.2" };
        tokio::spawn(async move {
            lockouts
                .attempt("alice", source, AttemptStep::Begin, NOW, policy)
                .await
        })
    });
    let verdicts: Vec<Attempt> = futures::future::join_all(begins)
        .await
        .into_iter()
        .map(|joined| joined.unwrap().unwrap())
        .collect();

    let allowed = verdicts.iter().filter(|v| **v == Attempt::Allowed).count();
    let busy = verdicts.iter().filter(|v| **v == Attempt::Busy).count();
    assert_eq!((allowed, busy), (4, 12), "{verdicts:?}");
}

async fn failures_from_every_address_lock_the_name_everywhere(b: Backend) {
    let policy = LockoutPolicy {
        max_failures: 2,
        max_failures_per_user: 3,
        window_secs: 100,
        lock_secs: 50,
    };
    assert_eq!(
        b.fail("alice", "192.0.2.1", NOW, policy).await,
        Attempt::Allowed
    );
    // A success forgets its own address's failures, not every address's.
    assert_eq!(
        b.attempt("alice", "192.0.2.1", AttemptStep::Begin, NOW, policy)
            .await,
        Attempt::Allowed
    );
    assert_eq!(
        b.attempt("alice", "192.0.2.1", AttemptStep::Succeeded, NOW, policy)
            .await,
        Attempt::Allowed
    );
    assert_eq!(
        b.fail("alice", "192.0.2.1", NOW + 1, policy).await,
        Attempt::Allowed
    );
    assert_eq!(
        b.fail("alice", "192.0.2.2", NOW + 2, policy).await,
        Attempt::LockedNow {
            until: NOW + 52,
            everywhere: true
        }
    );

    assert_eq!(
        b.attempt("alice", "192.0.2.9", AttemptStep::Begin, NOW + 3, policy)
            .await,
        Attempt::Locked { until: NOW + 52 }
    );
    assert_eq!(
        b.attempt("bob", "192.0.2.9", AttemptStep::Begin, NOW + 3, policy)
            .await,
        Attempt::Allowed
    );
}

async fn clearing_failures_forgets_every_address_and_lock(b: Backend) {
    let policy = LockoutPolicy {
        max_failures: 1,
        max_failures_per_user: 2,
        window_secs: 100,
        lock_secs: 50,
    };
    assert!(matches!(
        b.fail("alice", "192.0.2.1", NOW, policy).await,
        Attempt::LockedNow { .. }
    ));
    assert!(matches!(
        b.fail("alice", "192.0.2.2", NOW, policy).await,
        Attempt::LockedNow {
            everywhere: true,
            ..
        }
    ));
    assert!(matches!(
        b.fail("bob", "192.0.2.1", NOW, policy).await,
        Attempt::LockedNow { .. }
    ));

    assert!(b.stores.lockouts.clear_failures("alice").await.unwrap());
    assert!(!b.stores.lockouts.clear_failures("alice").await.unwrap());

    for source in ["192.0.2.1", "192.0.2.2"] {
        assert_eq!(
            b.attempt("alice", source, AttemptStep::Begin, NOW + 1, policy)
                .await,
            Attempt::Allowed
        );
    }
    assert_eq!(
        b.attempt("bob", "192.0.2.1", AttemptStep::Begin, NOW + 1, policy)
            .await,
        Attempt::Locked { until: NOW + 50 }
    );
}

async fn users_are_added_edited_and_removed(b: Backend) {
    let directory = &b.stores.directory;
    let alice = User {
        roles: [Role::Developer].into(),
        ..user("alice", "one")
    };
    let bob = User {
        disabled: true,
        ..user("bob", "two")
    };
    assert!(directory.add_user(&bob, NOW).await.unwrap());
    assert!(directory.add_user(&alice, NOW).await.unwrap());
    // A taken name is refused and the user kept as they were.
    assert!(!directory
        .add_user(&user("alice", "three"), NOW)
        .await
        .unwrap());
    assert_eq!(
        directory.find_user("alice").await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        directory.list_users().await.unwrap(),
        vec![alice.clone(), bob.clone()]
    );

    let rehashed = user("alice", "four").password_hash;
    assert!(directory
        .set_user_password("alice", &rehashed)
        .await
        .unwrap());
    assert!(directory.set_user_disabled("alice", true).await.unwrap());
    assert!(directory.set_user_disabled("bob", false).await.unwrap());
    assert_eq!(
        directory.find_user("alice").await.unwrap(),
        Some(User {
            password_hash: rehashed,
            disabled: true,
            ..alice
        })
    );
    assert!(!directory.find_user("bob").await.unwrap().unwrap().disabled);
    // Roles are replaced whole; none is a valid answer.
    let both = [Role::Admin, Role::Developer].into();
    assert!(directory.set_user_roles("bob", &both).await.unwrap());
    assert_eq!(
        directory.find_user("bob").await.unwrap().unwrap().roles,
        both
    );
    assert!(directory
        .set_user_roles("bob", &Default::default())
        .await
        .unwrap());
    assert!(directory
        .find_user("bob")
        .await
        .unwrap()
        .unwrap()
        .roles
        .is_empty());
    assert!(!directory.set_user_roles("nobody", &both).await.unwrap());

    assert!(directory.remove_user("alice").await.unwrap());
    assert!(!directory.remove_user("alice").await.unwrap());
    assert_eq!(directory.find_user("alice").await.unwrap(), None);
    assert!(!directory.set_user_disabled("alice", false).await.unwrap());
    assert_eq!(
        directory.list_users().await.unwrap(),
        vec![User {
            disabled: false,
            ..bob
        }]
    );
}

async fn clients_are_added_edited_and_removed_and_each_change_moves_the_revision(b: Backend) {
    let directory = &b.stores.directory;
    let revision = || directory.clients_revision();
    let app = client("app");
    let service = Client {
        grant_types: [GrantType::ClientCredentials].into(),
        scopes: Default::default(),
        access_token_validity_secs: None,
        refresh_token_validity_secs: None,
        application_access_token_validity_secs: Some(300),
        introspect: false,
        token_format: None,
        audience: None,
        ..client("service")
    };
    let start = revision().await.unwrap();

    assert!(directory.add_client(&service, NOW).await.unwrap());
    let added = revision().await.unwrap();
    assert!(added > start, "{start} -> {added}");
    assert!(directory.add_client(&app, NOW).await.unwrap());
    let both = revision().await.unwrap();
    assert!(both > added, "{added} -> {both}");
    assert!(!directory.add_client(&client("app"), NOW).await.unwrap());
    assert!(directory.client_exists("app").await.unwrap());
    assert_eq!(
        directory.list_clients().await.unwrap(),
        vec![
            ClientRow::from_client(&app),
            ClientRow::from_client(&service)
        ]
    );
    let rows = directory.list_clients().await.unwrap();
    assert_eq!(rows[0].clone().into_client().unwrap(), app);

    assert!(directory.set_client_disabled("app", true).await.unwrap());
    let disabled = revision().await.unwrap();
    assert!(disabled > both, "{both} -> {disabled}");
    assert!(directory.list_clients().await.unwrap()[0].disabled);
    assert!(directory.set_client_disabled("app", false).await.unwrap());
    let enabled = revision().await.unwrap();
    assert!(enabled > disabled, "{disabled} -> {enabled}");
    assert!(!directory.list_clients().await.unwrap()[0].disabled);

    assert!(directory.remove_client("app").await.unwrap());
    let removed = revision().await.unwrap();
    assert!(removed > enabled, "{enabled} -> {removed}");
    assert!(!directory.remove_client("app").await.unwrap());
    assert!(!directory.client_exists("app").await.unwrap());
    assert_eq!(
        directory.list_clients().await.unwrap(),
        vec![ClientRow::from_client(&service)]
    );
}

async fn shared_rate_limits_and_published_keys_live_on_postgres_only(b: Backend) {
    let (Some(buckets), Some(keys)) = (&b.stores.rate_limits, &b.stores.published_keys) else {
        // One node per SQLite database: its own memory holds both.
        assert_eq!(b.kind, Kind::Sqlite);
        assert!(b.stores.rate_limits.is_none());
        assert!(b.stores.published_keys.is_none());
        return;
    };
    assert_eq!(b.kind, Kind::Postgres);
    let rate = Rate {
        per_second: 1.0,
        burst: 2.0,
    };
    let t = ms(NOW);
    // A new bucket starts full; an empty one refills at the rate.
    assert_eq!(buckets.take("ip:a", rate, t).await.unwrap(), Take::Allowed);
    assert_eq!(buckets.take("ip:a", rate, t).await.unwrap(), Take::Allowed);
    let refused = buckets.take("ip:a", rate, t + 10).await.unwrap();
    assert!(
        matches!(refused, Take::Refused { tokens } if tokens < 1.0),
        "{refused:?}"
    );
    assert_eq!(
        buckets.take("ip:b", rate, t + 10).await.unwrap(),
        Take::Allowed
    );
    assert_eq!(
        buckets.take("ip:a", rate, t + 1010).await.unwrap(),
        Take::Allowed
    );

    let key = |kid: &str, jwk: &str| PublicKey {
        kid: kid.into(),
        jwk: jwk.into(),
    };
    keys.publish_keys(
        &[key("k2", "{\"two\":1}"), key("k1", "{\"one\":1}")],
        NOW + 100,
    )
    .await
    .unwrap();
    // Publishing again never shortens what was promised, and replaces the JWK text.
    keys.publish_keys(&[key("k1", "{\"one\":2}")], NOW + 50)
        .await
        .unwrap();
    assert_eq!(
        keys.published_keys(NOW + 100).await.unwrap(),
        vec![key("k1", "{\"one\":2}"), key("k2", "{\"two\":1}")]
    );
    assert!(keys.published_keys(NOW + 101).await.unwrap().is_empty());

    // Full buckets and keys past their promise are purged, and counted.
    let deleted = b
        .purge(PurgeLimits {
            buckets_full_before_ms: t + 10_000,
            ..limits(0, 0, NOW + 101, 1000)
        })
        .await;
    assert_eq!(
        deleted,
        PurgedRows {
            rate_buckets: 2,
            published_keys: 2,
            ..PurgedRows::default()
        }
    );
    assert_eq!(
        buckets.take("ip:a", rate, t + 10_000).await.unwrap(),
        Take::Allowed
    );
}

/// A code for alice at `app`, issued at NOW, living 60 s; `secret` makes its digest.
fn code(secret: &str) -> AuthorizationCodeRecord {
    AuthorizationCodeRecord {
        digest: SecretDigest::of(secret.as_bytes()),
        client_id: "app".into(),
        redirect_uri: Some("com.example.app:/cb".into()),
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
        username: "alice".into(),
        scope: "read".into(),
        issued_at: NOW,
        expires_at: NOW + 60,
        redeemed_at: None,
        family_id: None,
    }
}

async fn an_authorization_code_is_stored_as_its_digest_and_found_as_it_was_stored(b: Backend) {
    let store = &b.stores.tokens;
    let without_uri = AuthorizationCodeRecord {
        redirect_uri: None,
        ..code("second")
    };
    store
        .create_authorization_code(code("first"))
        .await
        .unwrap();
    store
        .create_authorization_code(without_uri.clone())
        .await
        .unwrap();

    assert_eq!(
        store
            .find_authorization_code(&SecretDigest::of(b"first"))
            .await
            .unwrap(),
        Some(code("first"))
    );
    assert_eq!(
        store
            .find_authorization_code(&SecretDigest::of(b"second"))
            .await
            .unwrap(),
        Some(without_uri)
    );
    assert_eq!(
        store
            .find_authorization_code(&SecretDigest::of(b"never issued"))
            .await
            .unwrap(),
        None
    );
}

async fn an_authorization_code_is_redeemed_once_and_records_the_family_of_its_tokens(b: Backend) {
    let store = &b.stores.tokens;
    store.create_authorization_code(code("c")).await.unwrap();
    let digest = SecretDigest::of(b"c");
    let tokens = grant("app", Some("alice"), NOW + 5, NOW + 3600, true);
    let again = grant("app", Some("alice"), NOW + 6, NOW + 3600, true);

    let first = store
        .redeem_authorization_code(&digest, NOW + 5, tokens.clone())
        .await
        .unwrap();
    let second = store
        .redeem_authorization_code(&digest, NOW + 6, again.clone())
        .await
        .unwrap();

    assert_eq!(first, Redemption::Redeemed);
    assert_eq!(second, Redemption::Refused);
    let redeemed = store
        .find_authorization_code(&digest)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(redeemed.redeemed_at, Some(NOW + 5));
    assert_eq!(redeemed.family_id, Some(tokens.access.family_id));
    assert_eq!(b.access(&tokens).await, Some(tokens.access.clone()));
    assert_eq!(b.refresh(&tokens).await, tokens.refresh.clone());
    assert_eq!(b.access(&again).await, None, "a refused redemption wrote");
    assert_eq!(b.refresh(&again).await, None, "a refused redemption wrote");
    // The family recorded on the code is what reuse detection revokes.
    assert!(store
        .revoke_family(&redeemed.family_id.unwrap(), NOW + 7)
        .await
        .unwrap());
    assert!(b.access(&tokens).await.unwrap().revoked_at.is_some());
}

async fn of_sixteen_concurrent_redemptions_of_a_code_exactly_one_wins(b: Backend) {
    b.stores
        .tokens
        .create_authorization_code(code("raced"))
        .await
        .unwrap();
    let digest = SecretDigest::of(b"raced");
    let candidates: Vec<NewTokens> = (0..16)
        .map(|_| grant("app", Some("alice"), NOW + 1, NOW + 3600, true))
        .collect();

    let redemptions = candidates.iter().map(|new| {
        let (tokens, new) = (b.stores.tokens.clone(), new.clone());
        tokio::spawn(async move {
            tokens
                .redeem_authorization_code(&digest, NOW + 1, new)
                .await
        })
    });
    let outcomes: Vec<Redemption> = futures::future::join_all(redemptions)
        .await
        .into_iter()
        .map(|joined| joined.unwrap().unwrap())
        .collect();

    let winners: Vec<usize> = (0..outcomes.len())
        .filter(|i| outcomes[*i] == Redemption::Redeemed)
        .collect();
    assert_eq!(winners.len(), 1, "{outcomes:?}");
    let winner = &candidates[winners[0]];
    let redeemed = b
        .stores
        .tokens
        .find_authorization_code(&digest)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(redeemed.family_id, Some(winner.access.family_id));
    for (i, candidate) in candidates.iter().enumerate() {
        let stored = b.access(candidate).await;
        if i == winners[0] {
            assert_eq!(stored, Some(candidate.access.clone()));
        } else {
            assert_eq!(stored, None, "a losing redemption wrote");
        }
    }
}

async fn an_expired_code_cannot_be_redeemed_and_is_purged(b: Backend) {
    let store = &b.stores.tokens;
    store.create_authorization_code(code("old")).await.unwrap();
    store.create_authorization_code(code("live")).await.unwrap();
    let late = AuthorizationCodeRecord {
        digest: SecretDigest::of(b"later"),
        expires_at: NOW + 600,
        ..code("later")
    };
    store.create_authorization_code(late).await.unwrap();
    let tokens = grant("app", Some("alice"), NOW + 60, NOW + 3600, true);

    // At its expiry the code is no longer good.
    let outcome = store
        .redeem_authorization_code(&SecretDigest::of(b"old"), NOW + 60, tokens.clone())
        .await
        .unwrap();

    assert_eq!(outcome, Redemption::Refused);
    assert_eq!(b.access(&tokens).await, None);
    // Codes that expired before the cut go (two of them); the later one stays.
    let deleted = b.purge(limits(NOW + 61, 0, NOW + 61, 1000)).await;
    assert_eq!(deleted.authorization_codes, 2, "{deleted:?}");
    assert_eq!(
        store
            .find_authorization_code(&SecretDigest::of(b"old"))
            .await
            .unwrap(),
        None
    );
    assert!(store
        .find_authorization_code(&SecretDigest::of(b"later"))
        .await
        .unwrap()
        .is_some());
}

async fn a_login_session_names_its_user_until_it_expires_ends_or_a_mark_covers_it(b: Backend) {
    let store = &b.stores.tokens;
    let session = |id: &str, user: &str, started_ms: i64| LoginSessionRecord {
        digest: SecretDigest::of(id.as_bytes()),
        username: user.into(),
        started: TokenId::new(started_ms),
        expires_at: NOW + 100,
    };
    let digest = |id: &str| SecretDigest::of(id.as_bytes());
    for record in [
        session("alice-early", "alice", ms(NOW)),
        session("alice-late", "alice", ms(NOW + 20)),
        session("bob", "bob", ms(NOW)),
    ] {
        store.create_login_session(record).await.unwrap();
    }

    // Alive until its expiry.
    assert_eq!(
        store
            .find_login_session(&digest("bob"), NOW + 99)
            .await
            .unwrap()
            .as_deref(),
        Some("bob")
    );
    assert_eq!(
        store
            .find_login_session(&digest("bob"), NOW + 100)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .find_login_session(&digest("never"), NOW)
            .await
            .unwrap(),
        None
    );
    // A not-before mark of alice ends the sessions started before it, not the later one.
    store
        .revoke_subject(SubjectKind::User, "alice", ms(NOW + 10), NOW + 10)
        .await
        .unwrap();
    assert_eq!(
        store
            .find_login_session(&digest("alice-early"), NOW + 30)
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .find_login_session(&digest("alice-late"), NOW + 30)
            .await
            .unwrap()
            .as_deref(),
        Some("alice")
    );
    // Logout.
    assert!(store
        .delete_login_session(&digest("alice-late"))
        .await
        .unwrap());
    assert!(!store
        .delete_login_session(&digest("alice-late"))
        .await
        .unwrap());
    assert_eq!(
        store
            .find_login_session(&digest("alice-late"), NOW + 30)
            .await
            .unwrap(),
        None
    );
    // The janitor takes the expired ones.
    let deleted = b.purge(limits(NOW + 101, 0, NOW + 101, 1000)).await;
    assert_eq!(deleted.login_sessions, 2, "{deleted:?}");
}

async fn a_consent_is_kept_per_user_and_client_until_a_mark_of_either_covers_it(b: Backend) {
    let store = &b.stores.tokens;
    let consent = |user: &str, client: &str, scope: &str, granted_ms: i64| ConsentRecord {
        username: user.into(),
        client_id: client.into(),
        scope: scope.into(),
        granted: TokenId::new(granted_ms),
    };
    let found = |user: &'static str, client: &'static str| async move {
        store.find_consent(user, client).await.unwrap()
    };
    assert_eq!(found("alice", "notes").await, None);
    store
        .save_consent(consent("alice", "notes", "read", ms(NOW)))
        .await
        .unwrap();
    store
        .save_consent(consent("bob", "notes", "read write", ms(NOW)))
        .await
        .unwrap();
    store
        .save_consent(consent("alice", "mail", "read", ms(NOW)))
        .await
        .unwrap();
    assert_eq!(found("alice", "notes").await.as_deref(), Some("read"));
    assert_eq!(found("bob", "notes").await.as_deref(), Some("read write"));
    assert_eq!(found("carol", "notes").await, None);

    // A new answer replaces the old one.
    store
        .save_consent(consent("alice", "notes", "read write", ms(NOW + 5)))
        .await
        .unwrap();
    assert_eq!(found("alice", "notes").await.as_deref(), Some("read write"));

    // alice's mark forgets her consents given before it, not bob's.
    store
        .revoke_subject(SubjectKind::User, "alice", ms(NOW + 10), NOW + 10)
        .await
        .unwrap();
    assert_eq!(found("alice", "notes").await, None);
    assert_eq!(found("alice", "mail").await, None);
    assert_eq!(found("bob", "notes").await.as_deref(), Some("read write"));
    // Given again after the mark, it counts.
    store
        .save_consent(consent("alice", "notes", "read", ms(NOW + 20)))
        .await
        .unwrap();
    assert_eq!(found("alice", "notes").await.as_deref(), Some("read"));

    // The client's mark forgets every user's consent to it, and only to it.
    store
        .revoke_subject(SubjectKind::Client, "notes", ms(NOW + 30), NOW + 30)
        .await
        .unwrap();
    assert_eq!(found("alice", "notes").await, None);
    assert_eq!(found("bob", "notes").await, None);
    store
        .save_consent(consent("bob", "mail", "read", ms(NOW + 40)))
        .await
        .unwrap();
    assert_eq!(found("bob", "mail").await.as_deref(), Some("read"));
}

async fn each_every_address_row_counts_and_locks_on_its_own(b: Backend) {
    let policy = LockoutPolicy {
        max_failures: 5,
        max_failures_per_user: 2,
        window_secs: 100,
        lock_secs: 50,
    };
    let lockouts = &b.stores.lockouts;
    let page = |source: &'static str, step: AttemptStep| {
        lockouts.attempt_counted_in("alice", source, "login-page", step, NOW, policy)
    };
    // Two failures in the page's row lock the name there, everywhere.
    for source in ["192.0.2.1", "192.0.2.2"] {
        assert_eq!(
            page(source, AttemptStep::Begin).await.unwrap(),
            Attempt::Allowed
        );
        page(source, AttemptStep::Failed).await.unwrap();
    }
    assert_eq!(
        page("192.0.2.3", AttemptStep::Begin).await.unwrap(),
        Attempt::Locked { until: NOW + 50 }
    );
    // The default row (the password grant's) knows nothing of them, even at the same address,
    // whose own row both share.
    assert_eq!(
        b.attempt("alice", "192.0.2.3", AttemptStep::Begin, NOW, policy)
            .await,
        Attempt::Allowed
    );
    b.attempt("alice", "192.0.2.3", AttemptStep::Abandoned, NOW, policy)
        .await;
    assert_eq!(
        b.fail("alice", "192.0.2.1", NOW, policy).await,
        Attempt::Allowed
    );
}

/// A registration with `token`'s digest, by client_secret_basic, at NOW.
fn registration(token: &SecretDigest) -> RegistrationRecord {
    RegistrationRecord {
        token: *token,
        token_endpoint_auth_method: "client_secret_basic".into(),
        registered_at: NOW,
    }
}

fn initial(secret: &str, expires_at: i64, uses: u32) -> InitialAccessTokenRecord {
    InitialAccessTokenRecord {
        digest: SecretDigest::of(secret.as_bytes()),
        expires_at,
        uses,
    }
}

async fn a_registration_stores_the_client_and_the_digest_of_its_token_together(b: Backend) {
    let registrations = &b.stores.registrations;
    let token = SecretDigest::of(b"registration token");
    assert_eq!(registrations.find_registration("app").await.unwrap(), None);

    let app = client("app");
    let outcome = registrations
        .register_client(&app, &registration(&token), None, NOW)
        .await
        .unwrap();

    assert_eq!(outcome, Registration::Registered);
    let stored = registrations
        .find_registration("app")
        .await
        .unwrap()
        .unwrap();
    assert!(stored.token.matches(&token));
    assert_eq!(stored.registered_at, NOW);
    assert_eq!(
        b.stores.directory.list_clients().await.unwrap(),
        vec![ClientRow::from_client(&app)]
    );
    // A taken id writes nothing: the first client's token stays.
    let other = SecretDigest::of(b"other token");
    assert_eq!(
        registrations
            .register_client(&client("app"), &registration(&other), None, NOW)
            .await
            .unwrap(),
        Registration::IdTaken
    );
    let stored = registrations
        .find_registration("app")
        .await
        .unwrap()
        .unwrap();
    assert!(stored.token.matches(&token));
    assert_eq!(stored.registered_at, NOW);
}

async fn an_initial_token_is_spent_one_use_per_registration_until_none_is_left(b: Backend) {
    let registrations = &b.stores.registrations;
    registrations
        .create_initial_token(&initial("two uses", NOW + 60, 2), NOW)
        .await
        .unwrap();
    registrations
        .create_initial_token(&initial("expired", NOW + 60, 5), NOW)
        .await
        .unwrap();
    let two = SecretDigest::of(b"two uses");
    let expired = SecretDigest::of(b"expired");
    let unknown = SecretDigest::of(b"unknown");
    let token = SecretDigest::of(b"registration token");
    assert!(registrations.initial_token_usable(&two, NOW).await.unwrap());
    assert!(!registrations
        .initial_token_usable(&unknown, NOW)
        .await
        .unwrap());
    assert!(!registrations
        .initial_token_usable(&expired, NOW + 60)
        .await
        .unwrap());

    for id in ["first", "second"] {
        assert_eq!(
            registrations
                .register_client(&client(id), &registration(&token), Some(&two), NOW + 1)
                .await
                .unwrap(),
            Registration::Registered
        );
    }
    assert_eq!(
        registrations
            .register_client(&client("third"), &registration(&token), Some(&two), NOW + 1)
            .await
            .unwrap(),
        Registration::InitialTokenRefused
    );
    assert!(!registrations
        .initial_token_usable(&two, NOW + 1)
        .await
        .unwrap());
    assert_eq!(
        registrations
            .register_client(
                &client("late"),
                &registration(&token),
                Some(&expired),
                NOW + 60
            )
            .await
            .unwrap(),
        Registration::InitialTokenRefused
    );
    assert_eq!(
        registrations
            .register_client(&client("guess"), &registration(&token), Some(&unknown), NOW)
            .await
            .unwrap(),
        Registration::InitialTokenRefused
    );
    // A refused registration left nothing behind.
    let ids: Vec<String> = b
        .stores
        .directory
        .list_clients()
        .await
        .unwrap()
        .into_iter()
        .map(|row| row.id)
        .collect();
    assert_eq!(ids, ["first", "second"]);
    for id in ["third", "late", "guess"] {
        assert_eq!(registrations.find_registration(id).await.unwrap(), None);
    }
    // A taken id does not spend a use either.
    registrations
        .create_initial_token(&initial("one use", NOW + 60, 1), NOW)
        .await
        .unwrap();
    let one = SecretDigest::of(b"one use");
    assert_eq!(
        registrations
            .register_client(&client("first"), &registration(&token), Some(&one), NOW)
            .await
            .unwrap(),
        Registration::IdTaken
    );
    assert!(registrations.initial_token_usable(&one, NOW).await.unwrap());
}

async fn of_sixteen_concurrent_registrations_with_a_one_use_initial_token_exactly_one_wins(
    b: Backend,
) {
    b.stores
        .registrations
        .create_initial_token(&initial("raced", NOW + 60, 1), NOW)
        .await
        .unwrap();
    let raced = SecretDigest::of(b"raced");

    let registrations = (0..16).map(|i| {
        let store = b.stores.registrations.clone();
        tokio::spawn(async move {
            let token = SecretDigest::of(format!("token {i}").as_bytes());
            store
                .register_client(
                    &client(&format!("app-{i}")),
                    &registration(&token),
                    Some(&raced),
                    NOW,
                )
                .await
        })
    });
    let outcomes: Vec<Registration> = futures::future::join_all(registrations)
        .await
        .into_iter()
        .map(|joined| joined.unwrap().unwrap())
        .collect();

    let winners = outcomes
        .iter()
        .filter(|outcome| **outcome == Registration::Registered)
        .count();
    assert_eq!(winners, 1, "{outcomes:?}");
    assert!(outcomes.iter().all(|outcome| matches!(
        outcome,
        Registration::Registered | Registration::InitialTokenRefused
    )));
    assert_eq!(b.stores.directory.list_clients().await.unwrap().len(), 1);
}

async fn a_registered_client_is_updated_and_deleted_with_its_registration(b: Backend) {
    let registrations = &b.stores.registrations;
    let directory = &b.stores.directory;
    let token = SecretDigest::of(b"registration token");
    registrations
        .register_client(&client("app"), &registration(&token), None, NOW)
        .await
        .unwrap();
    assert!(directory.set_client_disabled("app", true).await.unwrap());
    let before = directory.clients_revision().await.unwrap();
    let changed = Client {
        secret_hash: String::new(),
        public: true,
        grant_types: [GrantType::AuthorizationCode].into(),
        scopes: ["read".to_owned()].into(),
        introspect: false,
        name: Some("Renamed".into()),
        redirect_uris: vec![RedirectUri::parse("http://127.0.0.1/cb").unwrap()],
        ..client("app")
    };

    // Refused while the stored secret is not the one the caller read (another node changed
    // it): nothing is written.
    assert!(!registrations
        .update_registered_client(&changed, "none", "$sha256$not-the-stored-one")
        .await
        .unwrap());
    let stored = directory.list_clients().await.unwrap()[0]
        .secret_hash
        .clone();
    assert!(registrations
        .update_registered_client(&changed, "none", &stored)
        .await
        .unwrap());
    assert!(!registrations
        .update_registered_client(&client("unknown"), "none", "")
        .await
        .unwrap());

    assert!(directory.clients_revision().await.unwrap() > before);
    let stored = registrations
        .find_registration("app")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(stored.token_endpoint_auth_method, "none");
    assert!(stored.token.matches(&token));
    // The operator's `client disable` stands.
    let expected = Client {
        disabled: true,
        ..changed.clone()
    };
    assert_eq!(
        directory.list_clients().await.unwrap(),
        vec![ClientRow::from_client(&expected)]
    );

    assert!(registrations.delete_registered_client("app").await.unwrap());
    assert!(!registrations.delete_registered_client("app").await.unwrap());
    assert!(directory.list_clients().await.unwrap().is_empty());
    assert_eq!(registrations.find_registration("app").await.unwrap(), None);
}

async fn a_replaced_client_secret_keeps_the_previous_one_beside_it_until_cleared(b: Backend) {
    let registrations = &b.stores.registrations;
    let directory = &b.stores.directory;
    let clients = SqlClientStore::open(directory.clone(), Duration::from_secs(3600))
        .await
        .unwrap();
    let app = client("app");
    let new_hash = secret::hash_sha256("the new secret");
    let previous = PreviousSecret {
        hash: app.secret_hash.clone(),
        until: NOW + 600,
    };
    assert!(!registrations
        .replace_client_secret("app", &app.secret_hash, &new_hash, Some(&previous))
        .await
        .unwrap());
    assert!(directory.add_client(&app, NOW).await.unwrap());
    let before = directory.clients_revision().await.unwrap();
    // Not while the stored secret is another than the one read.
    assert!(!registrations
        .replace_client_secret("app", &new_hash, &new_hash, Some(&previous))
        .await
        .unwrap());
    assert_eq!(
        directory.list_clients().await.unwrap(),
        vec![ClientRow::from_client(&app)]
    );

    assert!(registrations
        .replace_client_secret("app", &app.secret_hash, &new_hash, Some(&previous))
        .await
        .unwrap());
    let replaced = directory.clients_revision().await.unwrap();
    assert!(replaced > before, "{before} -> {replaced}");
    let overlapping = Client {
        secret_hash: new_hash.clone(),
        previous_secret: Some(previous.clone()),
        ..app.clone()
    };
    assert_eq!(
        directory.list_clients().await.unwrap(),
        vec![ClientRow::from_client(&overlapping)]
    );
    clients.refresh().await.unwrap();
    assert_eq!(
        *clients.find_client("app").await.unwrap().unwrap(),
        overlapping
    );

    // RFC 7592 updates keep the previous secret while the secret stays, and end it with a new
    // one (whatever the client they are given says about it).
    let renamed = Client {
        name: Some("Renamed".into()),
        previous_secret: None,
        ..overlapping.clone()
    };
    assert!(registrations
        .update_registered_client(&renamed, "client_secret_basic", &new_hash)
        .await
        .unwrap());
    let renamed = Client {
        previous_secret: Some(previous.clone()),
        ..renamed
    };
    assert_eq!(
        directory.list_clients().await.unwrap(),
        vec![ClientRow::from_client(&renamed)]
    );
    let rekeyed = Client {
        secret_hash: secret::hash_sha256("a secret set through RFC 7592"),
        ..renamed.clone()
    };
    assert!(registrations
        .update_registered_client(&rekeyed, "client_secret_basic", &new_hash)
        .await
        .unwrap());
    let rekeyed = Client {
        previous_secret: None,
        ..rekeyed
    };
    assert_eq!(
        directory.list_clients().await.unwrap(),
        vec![ClientRow::from_client(&rekeyed)]
    );

    // `None` clears it.
    assert!(registrations
        .replace_client_secret("app", &rekeyed.secret_hash, &new_hash, Some(&previous))
        .await
        .unwrap());
    let before = directory.clients_revision().await.unwrap();
    assert!(registrations
        .replace_client_secret("app", &new_hash, &new_hash, None)
        .await
        .unwrap());
    let cleared = directory.clients_revision().await.unwrap();
    assert!(cleared > before, "{before} -> {cleared}");
    let without = Client {
        secret_hash: new_hash,
        previous_secret: None,
        ..rekeyed
    };
    assert_eq!(
        directory.list_clients().await.unwrap(),
        vec![ClientRow::from_client(&without)]
    );
    clients.refresh().await.unwrap();
    assert_eq!(*clients.find_client("app").await.unwrap().unwrap(), without);
}

async fn initial_tokens_used_up_or_expired_are_purged(b: Backend) {
    let registrations = &b.stores.registrations;
    for (secret, expires_at) in [("spent", NOW + 600), ("old", NOW + 10), ("live", NOW + 600)] {
        registrations
            .create_initial_token(&initial(secret, expires_at, 1), NOW)
            .await
            .unwrap();
    }
    let token = SecretDigest::of(b"registration token");
    let spent = SecretDigest::of(b"spent");
    assert_eq!(
        registrations
            .register_client(&client("app"), &registration(&token), Some(&spent), NOW + 1)
            .await
            .unwrap(),
        Registration::Registered
    );

    // Act: at NOW + 20, "old" has expired and "spent" has no use left.
    let purged = b.purge(limits(NOW + 20, 0, NOW + 20, 1000)).await;

    // Assert
    assert_eq!(purged.initial_access_tokens, 2, "{purged:?}");
    assert!(registrations
        .initial_token_usable(&SecretDigest::of(b"live"), NOW + 20)
        .await
        .unwrap());
    let again = b.purge(limits(NOW + 20, 0, NOW + 20, 1000)).await;
    assert_eq!(again.initial_access_tokens, 0, "{again:?}");
}
