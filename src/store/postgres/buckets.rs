//! The shared rate-limit buckets on PostgreSQL, taken from in batches: the takes concurrent
//! requests make are counted per bucket and sent as one statement, which refills each bucket
//! once, takes as many tokens as it holds (up to the count) and returns how many it took. The
//! takes of one bucket are then answered in the order they came: the first ones allowed, the
//! rest refused with what the bucket still holds. That is what the same takes one after the
//! other would have said, at one row update per bucket per batch instead of one per request:
//! under load every request of a client hits the same two rows (its address and its client
//! id), which one-statement-per-take would serialise on their row locks.
//!
//! A bucket's row is locked first (`SELECT … FOR UPDATE`, which reads its latest version, in
//! key order so that batches of several nodes never deadlock), then updated from what was
//! read; a bucket that does not exist yet is inserted full minus the takes. A bucket another
//! node creates after the statement began is neither visible to it nor insertable by it: its
//! takes go again in a statement of their own.

use std::collections::HashMap;
use std::sync::Arc;

use sqlx::postgres::PgPool;
use sqlx::Row as _;
use tokio::sync::oneshot;

use super::batcher::Run;
use super::{bounded, StoreError};
use crate::abuse::rate_limit::{Rate, Take};

/// One take from the bucket `key` and where its verdict goes.
pub(super) struct TakeJob {
    pub(super) key: String,
    pub(super) rate: Rate,
    pub(super) now_ms: i64,
    pub(super) reply: oneshot::Sender<Result<Take, StoreError>>,
}

/// `$1` keys, `$2` takes per key, `$3` now (ms), `$4` burst, `$5` rate per second. Returns, per
/// key it reached, the tokens taken and those left. The refill never goes back in time, whatever
/// the nodes' clocks say, and `full_at_ms` is when the bucket is full again (after which the
/// janitor may drop the row).
const TAKE_SQL: &str = "\
    WITH k AS ( \
      SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int8[], $4::float8[], $5::float8[]) \
        AS k(key, takes, now_ms, burst, per_second) \
    ), counted AS ( \
      SELECT k.key, k.takes, k.burst, k.per_second, r.stamp, r.refilled, \
             LEAST(k.takes, FLOOR(r.refilled))::int8 AS taken \
      FROM (SELECT * FROM k ORDER BY k.key) AS k \
      CROSS JOIN LATERAL ( \
        SELECT b.tokens, b.updated_ms FROM rate_buckets b WHERE b.key = k.key \
        OFFSET 0 FOR UPDATE) AS old \
      CROSS JOIN LATERAL ( \
        SELECT GREATEST(old.updated_ms, k.now_ms) AS stamp, \
               GREATEST(0, LEAST(k.burst, old.tokens + \
                 GREATEST(k.now_ms - old.updated_ms, 0) * k.per_second / 1000.0)) AS refilled \
      ) AS r \
    ), taken AS ( \
      UPDATE rate_buckets b SET tokens = c.refilled - c.taken, updated_ms = c.stamp, \
        allowed = c.taken = c.takes, \
        full_at_ms = c.stamp + \
          CEIL((c.burst - (c.refilled - c.taken)) * 1000.0 / c.per_second)::int8 \
      FROM counted c WHERE b.key = c.key \
      RETURNING b.key, c.taken, b.tokens \
    ), fresh AS ( \
      INSERT INTO rate_buckets (key, tokens, updated_ms, allowed, full_at_ms) \
      SELECT k.key, k.burst - n.taken, k.now_ms, n.taken = k.takes, \
             k.now_ms + CEIL(n.taken * 1000.0 / k.per_second)::int8 \
      FROM k, LATERAL (SELECT LEAST(k.takes, FLOOR(k.burst))::int8 AS taken) AS n \
      ON CONFLICT (key) DO NOTHING \
      RETURNING key, tokens \
    ) \
    SELECT key, taken, tokens FROM taken \
    UNION ALL \
    SELECT f.key, LEAST(k.takes, FLOOR(k.burst))::int8, f.tokens \
    FROM fresh f JOIN k ON k.key = f.key";

/// The takes of one bucket in a batch, in the order they came.
struct Bucket {
    key: String,
    rate: Rate,
    now_ms: i64,
    replies: Vec<oneshot::Sender<Result<Take, StoreError>>>,
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
}

/// Statements one batch may need: a bucket created by another node meanwhile takes another.
const ATTEMPTS: usize = 3;

async fn take_all(
    pool: &PgPool,
    buckets: &[Bucket],
) -> Result<HashMap<String, (i64, f64)>, StoreError> {
    let mut keys = Vec::with_capacity(buckets.len());
    let mut takes = Vec::with_capacity(buckets.len());
    let mut now_ms = Vec::with_capacity(buckets.len());
    let mut burst = Vec::with_capacity(buckets.len());
    let mut per_second = Vec::with_capacity(buckets.len());
    for bucket in buckets {
        keys.push(bucket.key.as_str());
        takes.push(i64::try_from(bucket.replies.len()).unwrap_or(i64::MAX));
        now_ms.push(bucket.now_ms);
        burst.push(bucket.rate.burst);
        per_second.push(bucket.rate.per_second);
    }
    let rows = bounded(async {
        sqlx::query(TAKE_SQL)
            .bind(keys)
            .bind(takes)
            .bind(now_ms)
            .bind(burst)
            .bind(per_second)
            .fetch_all(pool)
            .await
            .map_err(super::backend)
    })
    .await?;
    let mut reached = HashMap::with_capacity(rows.len());
    for row in rows {
        let key: String = row.try_get("key").map_err(super::backend)?;
        let taken: i64 = row.try_get("taken").map_err(super::backend)?;
        let tokens: f64 = row.try_get("tokens").map_err(super::backend)?;
        reached.insert(key, (taken, tokens));
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
    pub(super) pool: PgPool,
}

impl Run for BucketTakes {
    type Job = TakeJob;

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
            let mut reached = match take_all(&self.pool, &pending).await {
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
                    Some((taken, left)) => bucket.answer(taken, left),
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
            let takes = i64::try_from(bucket.replies.len()).unwrap_or(i64::MAX);
            bucket.answer(takes, 0.0);
        }
    }
}
