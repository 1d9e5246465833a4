//! The shared rate-limit buckets on PostgreSQL, taken from in batches, with tokens a node
//! takes ahead of time while a bucket is far from empty.
//!
//! Batches: the takes concurrent requests make are counted per bucket and sent as one
//! statement, which refills each bucket once, takes as many tokens as it holds (up to the
//! count) and returns how many it took. The takes of one bucket are then answered in the order
//! they came: the first ones allowed, the rest refused with what the bucket still holds. That
//! is what the same takes one after the other would have said, at one row update per bucket
//! per batch instead of one per request: under load every request of a client hits the same
//! two rows (its address and its client id), which one statement per take would serialise on
//! their row locks.
//!
//! Leases: a statement that leaves a bucket with plenty of tokens also takes some more for the
//! node (at most an eighth of what is left, and what the bucket refills in a tenth of a
//! second), which the node then hands out without asking the database, for at most
//! [`LEASE_MS`]. A busy key thus costs the database a statement per few dozen requests instead
//! of one per batch. The cluster still never allows more than the bucket gives: leased tokens
//! are taken from it when leased, and those a node does not use in time are lost (the bucket
//! refills meanwhile), so the cluster may refuse a key a little early for a moment after its
//! traffic moved to another node, never late. Near the limit (fewer than [`LEASE_FROM`] tokens
//! left) nothing is leased and every take is decided by the database, one after the other.
//!
//! A bucket's row is locked first (`SELECT … FOR UPDATE`, which reads its latest version, in
//! key order so that batches of several nodes never deadlock), then updated from what was
//! read; a bucket that does not exist yet is inserted full minus the takes. A bucket another
//! node creates after the statement began is neither visible to it nor insertable by it: its
//! takes go again in a statement of their own.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use sqlx::Row as _;
use tokio::sync::oneshot;

use super::batcher::Run;
use super::kept::Kept;
use super::{bounded, StoreError};
use crate::abuse::rate_limit::{Rate, Take};

/// How long leased tokens may be handed out (ms of the callers' clock).
const LEASE_MS: i64 = 1000;
/// Tokens must be left in a bucket, after the batch's takes, for any to be leased.
const LEASE_FROM: i64 = 64;
/// A lease holds at most what the bucket refills in this time (so that tokens a node leases
/// and does not use cost the cluster no more than that)...
const LEASE_REFILL_SECS: f64 = 0.1;
/// ...and at most this many.
const MAX_LEASE: i64 = 256;
/// Keys with a lease held at once; past this, no new lease is made until some expire.
const MAX_LEASES: usize = 100_000;

/// One take from the bucket `key` and where its verdict goes.
pub(super) struct TakeJob {
    pub(super) key: String,
    pub(super) rate: Rate,
    pub(super) now_ms: i64,
    pub(super) reply: oneshot::Sender<Result<Take, StoreError>>,
}

/// Tokens leased to this node, per key.
#[derive(Default)]
pub(super) struct Leases {
    held: Mutex<HashMap<String, Lease>>,
}

struct Lease {
    tokens: i64,
    granted_ms: i64,
}

impl Lease {
    fn valid_at(&self, now_ms: i64) -> bool {
        now_ms >= self.granted_ms && now_ms < self.granted_ms.saturating_add(LEASE_MS)
    }
}

impl Leases {
    /// Takes one leased token of `key`, if the node holds one.
    pub(super) fn take(&self, key: &str, now_ms: i64) -> bool {
        let Ok(mut held) = self.held.lock() else {
            return false;
        };
        match held.get_mut(key) {
            Some(lease) if lease.tokens >= 1 && lease.valid_at(now_ms) => {
                lease.tokens -= 1;
                true
            }
            Some(_) => {
                held.remove(key);
                false
            }
            None => false,
        }
    }

    fn grant(&self, key: &str, tokens: i64, now_ms: i64) {
        if tokens < 1 {
            return;
        }
        let Ok(mut held) = self.held.lock() else {
            return;
        };
        if held.len() >= MAX_LEASES && !held.contains_key(key) {
            held.retain(|_, lease| lease.tokens >= 1 && lease.valid_at(now_ms));
            if held.len() >= MAX_LEASES {
                return; // those tokens are lost: the cluster is stricter, never looser
            }
        }
        let lease = held.entry(key.to_owned()).or_insert(Lease {
            tokens: 0,
            granted_ms: now_ms,
        });
        if !lease.valid_at(now_ms) {
            lease.tokens = 0;
        }
        lease.tokens = lease.tokens.saturating_add(tokens);
        lease.granted_ms = now_ms;
    }
}

/// `$1` keys, `$2` takes per key, `$3` now (ms), `$4` burst, `$5` rate per second, `$6` most
/// tokens to lease per key. Returns, per key it reached, the tokens taken, leased and left. The
/// refill never goes back in time, whatever the nodes' clocks say, and `full_at_ms` is when the
/// bucket is full again (after which the janitor may drop the row).
static TAKE_SQL: LazyLock<String> = LazyLock::new(|| {
    let lease = |left: &str| {
        format!(
            "CASE WHEN {left} >= {LEASE_FROM} THEN LEAST(k.lease, FLOOR(({left}) / 8))::int8 \
             ELSE 0 END"
        )
    };
    format!(
        "WITH k AS ( \
           SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::float8[], \
                                $5::float8[], $6::int8[]) \
             AS k(key, takes, now_ms, burst, per_second, lease) \
         ), counted AS ( \
           SELECT k.key, k.takes, k.burst, k.per_second, r.stamp, r.refilled, t.taken, \
                  {} AS leased \
           FROM (SELECT * FROM k ORDER BY k.key) AS k \
           CROSS JOIN LATERAL ( \
             SELECT b.tokens, b.updated_ms FROM rate_buckets b WHERE b.key = k.key \
             OFFSET 0 FOR UPDATE) AS old \
           CROSS JOIN LATERAL ( \
             SELECT GREATEST(old.updated_ms, k.now_ms) AS stamp, \
                    GREATEST(0, LEAST(k.burst, old.tokens + \
                      GREATEST(k.now_ms - old.updated_ms, 0) * k.per_second / 1000.0)) \
                      AS refilled \
           ) AS r \
           CROSS JOIN LATERAL (SELECT LEAST(k.takes, FLOOR(r.refilled))::int8 AS taken) AS t \
         ), taken AS ( \
           UPDATE rate_buckets b SET tokens = c.refilled - c.taken - c.leased, \
             updated_ms = c.stamp, allowed = c.taken = c.takes, \
             full_at_ms = c.stamp + CEIL((c.burst - (c.refilled - c.taken - c.leased)) \
                                         * 1000.0 / c.per_second)::int8 \
           FROM counted c WHERE b.key = c.key \
           RETURNING b.key, c.taken, c.leased, b.tokens \
         ), fresh AS ( \
           INSERT INTO rate_buckets (key, tokens, updated_ms, allowed, full_at_ms) \
           SELECT n.key, n.burst - n.taken - n.leased, n.now_ms, n.taken = n.takes, \
                  n.now_ms + CEIL((n.taken + n.leased) * 1000.0 / n.per_second)::int8 \
           FROM (SELECT k.*, t.taken, {} AS leased \
                 FROM k CROSS JOIN LATERAL \
                   (SELECT LEAST(k.takes, FLOOR(k.burst))::int8 AS taken) AS t) AS n \
           ON CONFLICT (key) DO NOTHING \
           RETURNING key, tokens \
         ) \
         SELECT key, taken, leased, tokens FROM taken \
         UNION ALL \
         SELECT f.key, LEAST(k.takes, FLOOR(k.burst))::int8, \
                (k.burst - LEAST(k.takes, FLOOR(k.burst)) - f.tokens)::int8, f.tokens \
         FROM fresh f JOIN k ON k.key = f.key",
        lease("r.refilled - t.taken"),
        lease("k.burst - t.taken"),
    )
});

/// The takes of one bucket in a batch, in the order they came.
struct Bucket {
    key: String,
    rate: Rate,
    now_ms: i64,
    replies: Vec<oneshot::Sender<Result<Take, StoreError>>>,
}

/// What a statement did to one bucket.
struct Reached {
    taken: i64,
    leased: i64,
    left: f64,
}

impl Bucket {
    /// The first `taken` takes are allowed, the others refused: the bucket holds `left` (< 1).
    fn answer(self, taken: i64, left: f64) {
        let taken = usize::try_from(taken).unwrap_or(0);
        for (n, reply) in self.replies.into_iter().enumerate() {
            let verdict = if n < taken {
                Take::Allowed
            } else {
                Take::Refused { tokens: left }
            };
            let _ = reply.send(Ok(verdict));
        }
    }

    fn takes(&self) -> i64 {
        i64::try_from(self.replies.len()).unwrap_or(i64::MAX)
    }
}

/// Statements one batch may need: a bucket created by another node meanwhile takes another.
const ATTEMPTS: usize = 3;

async fn take_all(kept: &Kept, buckets: &[Bucket]) -> Result<HashMap<String, Reached>, StoreError> {
    let mut keys = Vec::with_capacity(buckets.len());
    let mut takes = Vec::with_capacity(buckets.len());
    let mut now_ms = Vec::with_capacity(buckets.len());
    let mut burst = Vec::with_capacity(buckets.len());
    let mut per_second = Vec::with_capacity(buckets.len());
    let mut lease = Vec::with_capacity(buckets.len());
    for bucket in buckets {
        keys.push(bucket.key.as_str());
        takes.push(bucket.takes());
        now_ms.push(bucket.now_ms);
        burst.push(bucket.rate.burst);
        per_second.push(bucket.rate.per_second);
        // `as` saturates: a huge rate leases MAX_LEASE, a negative or NaN one nothing.
        lease.push(
            ((bucket.rate.per_second * LEASE_REFILL_SECS).floor() as i64).clamp(0, MAX_LEASE),
        );
    }
    let rows = bounded(async {
        let mut conn = kept.get().await.map_err(super::backend)?;
        let rows = sqlx::query(TAKE_SQL.as_str())
            .bind(keys)
            .bind(takes)
            .bind(now_ms)
            .bind(burst)
            .bind(per_second)
            .bind(lease)
            .fetch_all(&mut *conn)
            .await;
        kept.put(conn, &rows);
        rows.map_err(super::backend)
    })
    .await?;
    let mut reached = HashMap::with_capacity(rows.len());
    for row in rows {
        let key: String = row.try_get("key").map_err(super::backend)?;
        let bucket = Reached {
            taken: row.try_get("taken").map_err(super::backend)?,
            leased: row.try_get("leased").map_err(super::backend)?,
            left: row.try_get("tokens").map_err(super::backend)?,
        };
        reached.insert(key, bucket);
    }
    Ok(reached)
}

/// The failure of a batch, told to each of its takes.
#[derive(Debug, thiserror::Error)]
#[error("the batch of rate-limit takes failed: {0}")]
struct BatchFailed(String);

fn copy(err: &StoreError) -> StoreError {
    match err {
        StoreError::Unavailable(message) => StoreError::Unavailable(message.clone()),
        other => StoreError::Backend(Box::new(BatchFailed(other.to_string()))),
    }
}

/// The shared buckets' runner.
pub(super) struct BucketTakes {
    pub(super) conn: Kept,
    pub(super) leases: Arc<Leases>,
}

impl Run for BucketTakes {
    type Job = TakeJob;

    fn stop(&self) {
        self.conn.release();
    }

    async fn run(self: Arc<Self>, jobs: Vec<TakeJob>) {
        let mut index: HashMap<String, usize> = HashMap::new();
        let mut pending: Vec<Bucket> = Vec::new();
        for job in jobs {
            match index.get(&job.key).and_then(|at| pending.get_mut(*at)) {
                Some(bucket) => {
                    // One statement, one time: the latest of the batch's clocks.
                    bucket.now_ms = bucket.now_ms.max(job.now_ms);
                    bucket.replies.push(job.reply);
                }
                None => {
                    index.insert(job.key.clone(), pending.len());
                    pending.push(Bucket {
                        key: job.key,
                        rate: job.rate,
                        now_ms: job.now_ms,
                        replies: vec![job.reply],
                    });
                }
            }
        }
        for _ in 0..ATTEMPTS {
            let mut reached = match take_all(&self.conn, &pending).await {
                Ok(reached) => reached,
                Err(err) => {
                    for bucket in pending {
                        for reply in bucket.replies {
                            let _ = reply.send(Err(copy(&err)));
                        }
                    }
                    return;
                }
            };
            let mut missed = Vec::new();
            for bucket in pending {
                match reached.remove(&bucket.key) {
                    Some(done) => {
                        self.leases.grant(&bucket.key, done.leased, bucket.now_ms);
                        bucket.answer(done.taken, done.left);
                    }
                    None => missed.push(bucket),
                }
            }
            pending = missed;
            if pending.is_empty() {
                return;
            }
        }
        // Buckets created and re-created under this batch every time: the node's own
        // buckets, which allowed these takes already, decide.
        for bucket in pending {
            tracing::debug!(key = %bucket.key, "shared bucket out of reach; the node's own limit applies");
            let takes = bucket.takes();
            bucket.answer(takes, 0.0);
        }
    }
}
