//! One background thread for the simulator's work that nothing in the simulated cluster waits
//! for: freeing old object versions, and the invariant recorder's bookkeeping. The simulation
//! runs on one thread (a current-thread runtime, for virtual time); this puts a second core
//! to use without touching the order of anything the cluster sees.
//!
//! Jobs run one at a time, in the order they were submitted, so a sequence of jobs (the
//! recorder's events) sees them in order; [`wait`] returns once every job submitted before it
//! has run. The worker polls its queue, sleeping up to [`MAX_IDLE`] when it is empty, so that
//! submitting a job never costs the simulation a system call to wake it.

use std::sync::mpsc::{self, Receiver, Sender, TryRecvError};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

type Job = Box<dyn FnOnce() + Send>;

/// The longest the worker sleeps between two looks at an empty queue.
const MAX_IDLE: Duration = Duration::from_millis(2);
/// The first sleep after the queue ran empty.
const MIN_IDLE: Duration = Duration::from_micros(20);
/// [`wait`] gives up (and says so in the log) after this long.
const WAIT_LIMIT: Duration = Duration::from_secs(60);

static QUEUE: OnceLock<Mutex<Option<Sender<Job>>>> = OnceLock::new();

fn queue() -> &'static Mutex<Option<Sender<Job>>> {
    QUEUE.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        let started = std::thread::Builder::new()
            .name("theseus-sim-offload".into())
            .spawn(move || work(rx));
        // Without the thread, jobs run where they are submitted.
        Mutex::new(started.ok().map(|_| tx))
    })
}

fn work(rx: Receiver<Job>) {
    let mut idle = MIN_IDLE;
    loop {
        match rx.try_recv() {
            Ok(job) => {
                // A panicking job must not take the queue down with it.
                let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                idle = MIN_IDLE;
            }
            Err(TryRecvError::Empty) => {
                std::thread::sleep(idle);
                idle = (idle * 2).min(MAX_IDLE);
            }
            Err(TryRecvError::Disconnected) => return,
        }
    }
}

/// Runs `job` on the background thread, after every job submitted before it (or here, now,
/// if that thread could not be started).
pub fn run(job: impl FnOnce() + Send + 'static) {
    let job: Job = Box::new(job);
    let left = SENDER.with(|tx| match tx {
        Some(tx) => tx.send(job).err().map(|mpsc::SendError(job)| job),
        None => Some(job),
    });
    if let Some(job) = left {
        job();
    }
}

thread_local! {
    /// This thread's handle on the queue (saves a lock per job).
    static SENDER: Option<Sender<Job>> =
        queue().lock().unwrap_or_else(|p| p.into_inner()).clone();
}

/// Frees `value` on the background thread.
pub fn drop_later<T: Send + 'static>(value: T) {
    run(move || drop(value));
}

/// Blocks until every job submitted before this call has run.
pub fn wait() {
    let (tx, rx) = mpsc::channel::<()>();
    run(move || {
        let _ = tx.send(());
    });
    if rx.recv_timeout(WAIT_LIMIT).is_err() {
        tracing::warn!(
            "the simulator's background thread did not finish its queue within {} s",
            WAIT_LIMIT.as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn jobs_run_in_order_and_wait_sees_them_done() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        for i in 0..1000 {
            let seen = seen.clone();
            run(move || seen.lock().unwrap().push(i));
        }
        wait();
        let seen = seen.lock().unwrap();
        assert_eq!(*seen, (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn a_panicking_job_does_not_stop_the_queue() {
        run(|| panic!("a job that fails"));
        let ran = Arc::new(AtomicUsize::new(0));
        let r = ran.clone();
        run(move || {
            r.fetch_add(1, Ordering::SeqCst);
        });
        wait();
        assert_eq!(ran.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn drop_later_frees_the_value() {
        let v = Arc::new(5);
        drop_later(v.clone());
        wait();
        assert_eq!(Arc::strong_count(&v), 1);
    }
}
