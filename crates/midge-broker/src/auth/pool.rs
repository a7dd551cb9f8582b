//! The threads that compute password hashes: at most one hash per core at a time, and a
//! bounded queue in front of them.
//!
//! A PBKDF2 check costs tens to hundreds of milliseconds of CPU by design. Run on the async
//! threads it would stall every connection; run on tokio's blocking pool, one task per
//! CONNECT, a flood of logins would start hundreds of threads that all hash at once and
//! starve the broker. Here the work is bounded twice: `workers` threads (one per core) take
//! jobs from one FIFO queue, and a job only enters the queue with one of `workers + queue`
//! slots; a CONNECT that finds none waits for one (FIFO too), costing nothing meanwhile.
//! Who gets into the queue, and when, is decided before it ([`super::turns`], the failure
//! delay), so that one address cannot fill it.
use std::collections::VecDeque;
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

/// The queue's length beyond the jobs being computed, per worker: one job waits ready for
/// each worker, so a worker never idles while a CONNECT is on its way to the queue.
const QUEUED_PER_WORKER: usize = 1;

/// Why a job did not run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PoolError {
    /// No worker thread could be started, or the job panicked.
    #[error("the password hashing threads are not available")]
    Unavailable,
    /// No slot came free before the deadline.
    #[error("the password hashing threads are busy")]
    Busy,
}

/// A job, and the slot it holds until it is done.
struct Job {
    run: Box<dyn FnOnce() + Send>,
    _slot: OwnedSemaphorePermit,
}

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Threads started (they stay until the pool is dropped).
    threads: usize,
    /// Threads waiting for a job.
    idle: usize,
    /// Jobs being computed now, and the most there ever were (for tests and debugging).
    running: usize,
    peak_running: usize,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    work: Condvar,
}

/// A fixed set of hashing threads with a bounded FIFO queue.
pub struct HashPool {
    shared: Arc<Shared>,
    /// Slots for jobs queued or running: `workers + queue` of them.
    slots: Arc<Semaphore>,
    workers: usize,
}

impl std::fmt::Debug for HashPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.shared.state.lock();
        f.debug_struct("HashPool")
            .field("workers", &self.workers)
            .field("running", &s.running)
            .field("queued", &s.jobs.len())
            .finish()
    }
}

impl HashPool {
    /// One worker per core (as the OS reports them), each with one job queued ahead.
    pub fn per_core() -> HashPool {
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        HashPool::new(cores, cores * QUEUED_PER_WORKER)
    }

    /// `workers` threads (at least one), started as jobs come, and room for `queue` jobs
    /// waiting for them.
    pub fn new(workers: usize, queue: usize) -> HashPool {
        let workers = workers.max(1);
        HashPool {
            shared: Arc::new(Shared { state: Mutex::new(State::default()), work: Condvar::new() }),
            slots: Arc::new(Semaphore::new(workers + queue)),
            workers,
        }
    }

    /// Runs `f` on a worker and returns its result. Waits (asynchronously, in FIFO order)
    /// while the queue is full. Dropping the future before the job starts cancels it.
    pub async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        self.run_queued_by(None, f).await
    }

    /// [`HashPool::run`], if the job gets into the queue before `deadline`: else
    /// [`PoolError::Busy`], and the job never runs.
    pub async fn run_queued_by<T: Send + 'static>(
        &self,
        deadline: Option<tokio::time::Instant>,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, PoolError> {
        let acquire = self.slots.clone().acquire_owned();
        let slot = match deadline {
            Some(at) => tokio::time::timeout_at(at, acquire).await.map_err(|_| PoolError::Busy)?,
            None => acquire.await,
        };
        // The semaphore is never closed: acquiring fails only if it were.
        let slot = slot.map_err(|_| PoolError::Unavailable)?;
        let (tx, rx) = oneshot::channel();
        let run = Box::new(move || {
            // The CONNECT gave up waiting (timeout, shutdown): no CPU for nobody.
            if !tx.is_closed() {
                let _ = tx.send(f());
            }
        });
        self.push(Job { run, _slot: slot })?;
        rx.await.map_err(|_| PoolError::Unavailable)
    }

    fn push(&self, job: Job) -> Result<(), PoolError> {
        let mut s = self.shared.state.lock();
        s.jobs.push_back(job);
        if s.jobs.len() > s.idle && s.threads < self.workers {
            let shared = self.shared.clone();
            let started = std::thread::Builder::new().name("midge-hash".into()).spawn(move || work(&shared));
            match started {
                Ok(_) => s.threads += 1,
                Err(e) if s.threads == 0 => {
                    tracing::error!("Cannot start a password hashing thread: {e}.");
                    s.jobs.pop_back();
                    return Err(PoolError::Unavailable);
                }
                // The threads already there will get to it.
                Err(e) => tracing::warn!("Cannot start another password hashing thread: {e}."),
            }
        }
        drop(s);
        self.shared.work.notify_one();
        Ok(())
    }

    /// Jobs computed now, and the most computed at once so far.
    pub fn running(&self) -> (usize, usize) {
        let s = self.shared.state.lock();
        (s.running, s.peak_running)
    }

    /// The number of worker threads it may use.
    pub fn workers(&self) -> usize {
        self.workers
    }
}

impl Drop for HashPool {
    fn drop(&mut self) {
        let mut s = self.shared.state.lock();
        s.closed = true;
        // Waiting jobs are dropped: their futures see the pool gone.
        s.jobs.clear();
        drop(s);
        self.shared.work.notify_all();
    }
}

/// A worker: takes jobs in order until the pool is dropped.
fn work(shared: &Shared) {
    loop {
        let job = {
            let mut s = shared.state.lock();
            loop {
                if s.closed {
                    return;
                }
                if let Some(job) = s.jobs.pop_front() {
                    s.running += 1;
                    s.peak_running = s.peak_running.max(s.running);
                    break job;
                }
                s.idle += 1;
                shared.work.wait(&mut s);
                s.idle -= 1;
            }
        };
        let Job { run, _slot } = job;
        // A panicking job loses its result (its future sees the sender dropped), not the thread.
        let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(run));
        shared.state.lock().running -= 1;
        // The slot is given back only now: queued + running never exceeds the bound.
        drop(_slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    /// A job that holds its worker for `d` and counts how many run at once.
    fn busy(d: Duration, now: Arc<AtomicUsize>, peak: Arc<AtomicUsize>) -> impl FnOnce() -> Instant + Send {
        move || {
            let n = now.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(n, Ordering::SeqCst);
            std::thread::sleep(d); // the job stands for CPU work
            now.fetch_sub(1, Ordering::SeqCst);
            Instant::now()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn never_more_jobs_at_once_than_workers_nor_more_queued_than_the_bound() {
        let pool = Arc::new(HashPool::new(2, 3));
        let (now, peak) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut tasks = Vec::new();
        for _ in 0..12 {
            let (pool, now, peak) = (pool.clone(), now.clone(), peak.clone());
            tasks.push(tokio::spawn(
                async move { pool.run(busy(Duration::from_millis(20), now, peak)).await },
            ));
        }
        // While they run, queued + running holds at most its bound (a worker thread just
        // started may not have taken its job yet): the rest wait for a slot.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut most_held = 0;
        while tasks.iter().any(|t| !t.is_finished()) && Instant::now() < deadline {
            let held = {
                let s = pool.shared.state.lock();
                s.jobs.len() + s.running
            };
            most_held = most_held.max(held);
            assert!(pool.slots.available_permits() <= 5);
            tokio::time::sleep(Duration::from_millis(2)).await; // sampling the queue
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(peak.load(Ordering::SeqCst), 2, "one job per worker at a time");
        assert_eq!(pool.running(), (0, 2));
        assert!(most_held <= 5, "{most_held} jobs queued or running with 2 workers and a queue of 3");
        assert!(pool.shared.state.lock().threads <= 2);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn jobs_run_in_arrival_order_and_cancelled_ones_cost_nothing() {
        let pool = Arc::new(HashPool::new(1, 8));
        let order = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(std::sync::Barrier::new(2));
        // The first job holds the only worker until the others are queued.
        let first = {
            let (pool, gate) = (pool.clone(), gate.clone());
            tokio::spawn(async move {
                pool.run(move || {
                    gate.wait();
                })
                .await
            })
        };
        while pool.running().0 == 0 {
            tokio::task::yield_now().await;
        }
        let mut later = Vec::new();
        for i in 0..4 {
            let (p, order) = (pool.clone(), order.clone());
            later.push(tokio::spawn(async move { p.run(move || order.lock().push(i)).await }));
            // Each is queued before the next is submitted.
            while pool.shared.state.lock().jobs.len() < i + 1 {
                tokio::task::yield_now().await;
            }
        }
        // Job 2 gives up before it starts: it is skipped.
        let gives_up = later.remove(2);
        gives_up.abort();
        assert!(gives_up.await.unwrap_err().is_cancelled());
        gate.wait();
        first.await.unwrap().unwrap();
        for t in later {
            t.await.unwrap().unwrap();
        }
        assert_eq!(*order.lock(), vec![0, 1, 3]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_job_that_finds_no_slot_by_its_deadline_is_busy_and_never_runs() {
        let pool = Arc::new(HashPool::new(1, 0));
        let gate = Arc::new(std::sync::Barrier::new(2));
        let first = {
            let (pool, gate) = (pool.clone(), gate.clone());
            tokio::spawn(async move { pool.run(move || gate.wait()).await })
        };
        while pool.running().0 == 0 {
            tokio::task::yield_now().await;
        }
        let ran = Arc::new(AtomicUsize::new(0));
        let counted = ran.clone();
        let soon = tokio::time::Instant::now() + Duration::from_millis(50);
        let late = pool.run_queued_by(Some(soon), move || counted.fetch_add(1, Ordering::SeqCst)).await;
        assert_eq!(late, Err(PoolError::Busy));
        gate.wait();
        first.await.unwrap().unwrap();
        assert_eq!(pool.run(|| 7).await, Ok(7), "the slot came back");
        assert_eq!(ran.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn a_panicking_job_is_an_error_and_the_worker_goes_on() {
        let pool = HashPool::new(1, 1);
        assert_eq!(pool.run(|| -> u8 { panic!("boom") }).await, Err(PoolError::Unavailable));
        assert_eq!(pool.run(|| 42).await, Ok(42));
    }
}
