//! How the passes get their row groups and work on them: the next row group from the source
//! (stopping at a signal, timing the wait), and [`InFlight`], the row groups on the rayon pool
//! whose results come back in input order.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::Instant;

use tokio::sync::oneshot;

use crate::source::RowGroup;
use crate::{Error, Result};

use super::spec::JobSpec;
use super::tally::Counters;

/// Fails when a signal asked the job to stop.
fn check_interrupted(spec: &JobSpec) -> Result<()> {
    if spec.interrupted.load(Ordering::Relaxed) {
        return Err(Error::Interrupted("signal"));
    }
    Ok(())
}

/// The next row group of a pass, `None` at the end; stops at a signal and counts the time
/// spent waiting for storage.
pub(super) async fn next_group(
    spec: &JobSpec,
    groups: &mut tokio::sync::mpsc::Receiver<Result<RowGroup>>,
    c: &mut Counters,
) -> Result<Option<RowGroup>> {
    check_interrupted(spec)?;
    let t = Instant::now();
    let group = groups.recv().await.transpose()?;
    c.timers.read_wait += t.elapsed();
    Ok(group)
}

/// Row groups being worked on by the rayon pool (one thread per core). Work inside a row group
/// is sequential unless the job has fewer row groups than workers: column-parallel loops nested
/// in it let a thread waiting on a stolen column pick up another whole row group, which left
/// one core idle for stretches of up to a second (perf timeline, 2M orders rows: ~125% CPU for
/// 0.8 s, then ~190%; median wall 2.69 → 2.51 s).
/// Results come back in the order the work was started; at most one row group per pool thread
/// is in flight.
pub(super) struct InFlight<T> {
    queue: VecDeque<oneshot::Receiver<Result<T>>>,
    pub(super) workers: usize,
}

impl<T: Send + 'static> InFlight<T> {
    /// Nothing in flight, room for one row group per pool thread.
    pub(super) fn new() -> Self {
        InFlight {
            queue: VecDeque::new(),
            workers: rayon::current_num_threads().max(1),
        }
    }

    /// Runs `work` on the pool. A panic becomes an internal error.
    pub(super) fn start(&mut self, work: impl FnOnce() -> Result<T> + Send + 'static) {
        let (tx, rx) = oneshot::channel();
        rayon::spawn(move || {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work))
                .unwrap_or_else(|_| Err(Error::Internal("a row group worker panicked".into())));
            let _ = tx.send(result);
        });
        self.queue.push_back(rx);
    }

    /// True when every worker is busy.
    pub(super) fn is_full(&self) -> bool {
        self.queue.len() >= self.workers
    }

    /// When every worker is busy, waits for the oldest row group and returns its result, so
    /// that the caller can start the next one before handling it; `None` while one is free.
    pub(super) async fn wait_for_worker(&mut self) -> Result<Option<T>> {
        if !self.is_full() {
            return Ok(None);
        }
        self.pop().await
    }

    /// The oldest result while any work is left (draining at the end of a pass).
    pub(super) async fn next(&mut self, spec: &JobSpec) -> Result<Option<T>> {
        check_interrupted(spec)?;
        self.pop().await
    }

    async fn pop(&mut self) -> Result<Option<T>> {
        match self.queue.pop_front() {
            Some(rx) => rx
                .await
                .map_err(|_| Error::Internal("a row group worker stopped".into()))?
                .map(Some),
            None => Ok(None),
        }
    }
}
