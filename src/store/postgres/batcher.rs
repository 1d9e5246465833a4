//! Coalescing concurrent calls into batches: a dispatcher task takes every job waiting in its
//! queue (up to a maximum) and hands them to a [`Run`] as one batch, normally one batch at a
//! time. While a batch waits on the database, new jobs pile up in the queue and leave together
//! as the next batch: the busier the node, the larger the batches, with no timer adding latency
//! when it is idle. When the previous batch held several jobs, the dispatcher first yields to
//! the node's other ready tasks (at most [`GATHER_YIELDS`] times, until one brings no job), so
//! requests about to queue a job join the batch instead of starting the next one. A batch
//! that takes unusually long (a row lock another session holds, a database that stopped
//! answering) does not hold up the jobs behind it: after [`STALL`] the next batch may start
//! beside it, up to a few at once.
//!
//! A job carries its own reply channel; the runner answers every job of its batch. A caller
//! that goes away does not take its job back, but a runner may leave out the jobs whose
//! callers are gone when their round starts (the token writes do, see `group_commit`).

use std::future::Future;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::store::StoreError;

/// What runs one batch and answers each of its jobs.
pub(super) trait Run: Send + Sync + 'static {
    type Job: Send + 'static;

    fn run(self: Arc<Self>, jobs: Vec<Self::Job>) -> impl Future<Output = ()> + Send;

    /// Called once no batch runs any more and none will (the store closes): gives back what
    /// the runner kept between batches.
    fn stop(&self) {}
}

enum Message<J> {
    Job(J),
    /// Stop taking jobs, finish those accepted, then answer.
    Close(oneshot::Sender<()>),
}

/// The shape of the batches.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Most jobs in one batch.
    pub(super) max_jobs: usize,
    /// Batches running at once...
    pub(super) in_flight: usize,
    /// ...and at most, while those take longer than [`STALL`].
    pub(super) most_in_flight: usize,
    /// Jobs allowed to wait before callers wait for queue space.
    pub(super) queue: usize,
}

/// A queue of jobs and the dispatcher draining it, started on first use (inside the runtime
/// that will serve the calls).
pub(super) struct Batcher<R: Run> {
    runner: Arc<R>,
    limits: Limits,
    queue: OnceLock<mpsc::Sender<Message<R::Job>>>,
}

/// How long the batches in flight may run before the next one starts beside them: well above
/// a batch's usual time (a few ms, a WAL flush included), well below the 3 s a statement may
/// wait for a row lock.
pub(super) const STALL: Duration = Duration::from_millis(50);

/// How many times the dispatcher lets the node's other ready tasks run before it sends a batch,
/// while the previous batch held more than one job; it stops at the first yield that brought
/// no job. Two nodes on the 2 cores of `bench/cluster.sh`: +16–20 % refresh grants
/// (BENCHMARKS.md, 2026-12-07 18:00).
const GATHER_YIELDS: usize = 8;

pub(super) fn closed() -> StoreError {
    StoreError::Unavailable("the token store is closed".into())
}

impl<R: Run> Batcher<R> {
    pub(super) fn new(runner: R, limits: Limits) -> Self {
        Self {
            runner: Arc::new(runner),
            limits,
            queue: OnceLock::new(),
        }
    }

    fn queue(&self) -> &mpsc::Sender<Message<R::Job>> {
        self.queue.get_or_init(|| {
            let (queue, jobs) = mpsc::channel(self.limits.queue.max(1));
            tokio::spawn(dispatch(self.runner.clone(), jobs, self.limits));
            queue
        })
    }

    /// Queues `job`; the runner answers through the reply channel inside it.
    pub(super) async fn submit(&self, job: R::Job) -> Result<(), StoreError> {
        self.queue()
            .send(Message::Job(job))
            .await
            .map_err(|_| closed())
    }

    /// Refuses new jobs, and returns once every job accepted before has been run.
    pub(super) async fn close(&self) {
        let Some(queue) = self.queue.get() else {
            // Never used: nothing to finish. Later jobs find the pool closed.
            return;
        };
        let (done, finished) = oneshot::channel();
        if queue.send(Message::Close(done)).await.is_ok() {
            let _ = finished.await;
        }
    }
}

async fn dispatch<R: Run>(
    runner: Arc<R>,
    mut queue: mpsc::Receiver<Message<R::Job>>,
    limits: Limits,
) {
    let in_flight = limits.in_flight.max(1);
    let extra_in_flight = limits.most_in_flight.saturating_sub(in_flight);
    let slots = Arc::new(Semaphore::new(in_flight));
    let extra = Arc::new(Semaphore::new(extra_in_flight));
    let mut closers = Vec::new();
    let mut last_batch = 0;
    while closers.is_empty() {
        let Some(first) = queue.recv().await else {
            break; // the store is gone
        };
        let slot = match slots.clone().try_acquire_owned() {
            Ok(slot) => Ok(slot),
            Err(_) => {
                tokio::select! {
                    slot = slots.clone().acquire_owned() => slot,
                    () = tokio::time::sleep(STALL) => tokio::select! {
                        slot = slots.clone().acquire_owned() => slot,
                        slot = extra.clone().acquire_owned() => slot,
                    },
                }
            }
        };
        // The semaphores are never closed.
        let Ok(slot) = slot else {
            break;
        };
        let mut jobs = Vec::new();
        let mut next = Some(first);
        // After a batch of several jobs, the node is busy: let the tasks that are ready run
        // (a few yields, no timer) so the jobs they are about to queue join this batch.
        let mut yields = if last_batch > 1 { GATHER_YIELDS } else { 0 };
        loop {
            while let Some(message) = next.take() {
                match message {
                    Message::Job(job) => jobs.push(job),
                    Message::Close(done) => closers.push(done),
                }
                if jobs.len() < limits.max_jobs {
                    next = queue.try_recv().ok();
                }
            }
            if yields == 0 || !closers.is_empty() || jobs.len() >= limits.max_jobs {
                break;
            }
            yields -= 1;
            tokio::task::yield_now().await;
            next = queue.try_recv().ok();
            if next.is_none() {
                break; // nothing came: the others were not about to queue
            }
        }
        last_batch = jobs.len();
        if !jobs.is_empty() {
            let runner = runner.clone();
            tokio::spawn(async move {
                runner.run(jobs).await;
                drop(slot);
            });
        }
    }
    // Jobs accepted before the close still run; later ones are refused by the closed queue.
    queue.close();
    let mut rest = Vec::new();
    while let Some(message) = queue.recv().await {
        match message {
            Message::Job(job) => rest.push(job),
            Message::Close(done) => closers.push(done),
        }
    }
    while !rest.is_empty() {
        let batch: Vec<R::Job> = rest.drain(..rest.len().min(limits.max_jobs)).collect();
        runner.clone().run(batch).await;
    }
    // Every batch in flight has ended once all the slots are free again.
    let _ = extra
        .acquire_many(u32::try_from(extra_in_flight).unwrap_or(u32::MAX))
        .await;
    let _ = slots
        .acquire_many(u32::try_from(in_flight).unwrap_or(u32::MAX))
        .await;
    runner.stop();
    for done in closers {
        let _ = done.send(());
    }
}
