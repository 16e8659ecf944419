//! A dedicated OS thread that owns tch state (models, optimizers) and runs jobs for an actor.
//!
//! Why: `Tensor` is Send but not Sync, and a training step blocks for seconds; neither belongs on a tokio worker.
//! The actor awaits each job's result; if the thread panics, the await fails with the panic message, the actor
//! returns an error, and its supervisor sees an ordinary child failure — exactly what a crashed GPU job should look
//! like to the supervision tree.

use std::sync::mpsc;
use std::thread::JoinHandle;

use tokio::sync::oneshot;

type Envelope<J, R> = (J, oneshot::Sender<R>);

pub struct Worker<J: Send + 'static, R: Send + 'static> {
    name: String,
    jobs: Option<mpsc::Sender<Envelope<J, R>>>,
    thread: Option<JoinHandle<()>>,
}

impl<J: Send + 'static, R: Send + 'static> Worker<J, R> {
    /// Starts the thread: `init` builds the thread's state there (so tch objects are born on it), `run` handles
    /// one job at a time.
    pub fn spawn<S, I, F>(name: &str, threads: i32, init: I, mut run: F) -> std::io::Result<Self>
    where
        I: FnOnce() -> S + Send + 'static,
        F: FnMut(&mut S, J) -> R + Send + 'static,
    {
        let (tx, rx) = mpsc::channel::<Envelope<J, R>>();
        let thread = std::thread::Builder::new().name(name.to_string()).spawn(move || {
            tch::set_num_threads(threads);
            let mut state = init();
            while let Ok((job, reply)) = rx.recv() {
                let out = run(&mut state, job);
                let _ = reply.send(out);
            }
        })?;
        Ok(Self { name: name.to_string(), jobs: Some(tx), thread: Some(thread) })
    }

    /// Runs one job; `Err` carries the reason the thread died (its panic message).
    pub async fn run(&mut self, job: J) -> Result<R, String> {
        if let Some(answer) = self.submit(job) {
            if let Ok(out) = answer.await {
                return Ok(out);
            }
        }
        Err(self.death_reason())
    }

    /// Queues one job and returns at once: the receiver yields its result, or an error if the thread died before
    /// answering (then [`Worker::death_reason`] says why). `None`: the thread is already gone.
    pub fn submit(&self, job: J) -> Option<oneshot::Receiver<R>> {
        queue(self.jobs.as_ref()?, job)
    }

    /// A handle that queues jobs from elsewhere (another task or thread), in the same order as [`Worker::submit`].
    pub fn submitter(&self) -> Option<Submitter<J, R>> {
        self.jobs.clone().map(|jobs| Submitter { jobs })
    }

    /// Why the thread is gone (its panic message, joined): call once a job's answer did not come.
    pub fn death_reason(&mut self) -> String {
        self.jobs = None;
        let Some(thread) = self.thread.take() else {
            return format!("worker thread {} is gone", self.name);
        };
        match thread.join() {
            Ok(()) => format!("worker thread {} stopped", self.name),
            Err(payload) => {
                let msg = payload
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_else(|| "unknown panic".into());
                format!("worker thread {} panicked: {msg}", self.name)
            }
        }
    }
}

/// Queues jobs for a [`Worker`]'s thread from anywhere; cheap to clone. It keeps the thread's queue open: the thread
/// ends once the worker and every submitter are dropped.
pub struct Submitter<J, R> {
    jobs: mpsc::Sender<Envelope<J, R>>,
}

impl<J, R> Clone for Submitter<J, R> {
    fn clone(&self) -> Self {
        Self { jobs: self.jobs.clone() }
    }
}

impl<J: Send + 'static, R: Send + 'static> Submitter<J, R> {
    /// Like [`Worker::submit`]: `None` when the thread is gone.
    pub fn submit(&self, job: J) -> Option<oneshot::Receiver<R>> {
        queue(&self.jobs, job)
    }
}

/// Queues `job` with a channel for its answer; `None` when the thread is gone.
fn queue<J, R>(jobs: &mpsc::Sender<Envelope<J, R>>, job: J) -> Option<oneshot::Receiver<R>> {
    let (tx, rx) = oneshot::channel();
    jobs.send((job, tx)).ok()?;
    Some(rx)
}

impl<J: Send + 'static, R: Send + 'static> Drop for Worker<J, R> {
    fn drop(&mut self) {
        // Closing the channel ends the thread after its current job; we do not join (a job may take minutes).
        self.jobs = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_jobs_and_reports_panics() {
        let mut w = Worker::spawn(
            "t",
            1,
            || 10u32,
            |s: &mut u32, j: u32| {
                if j == 0 {
                    panic!("boom at zero");
                }
                *s += j;
                *s
            },
        )
        .unwrap();
        assert_eq!(w.run(5).await, Ok(15));
        assert_eq!(w.run(1).await, Ok(16));
        let err = w.run(0).await.unwrap_err();
        assert!(err.contains("boom at zero"), "{err}");
        assert!(w.run(1).await.is_err(), "a dead worker stays dead");
    }

    #[tokio::test]
    async fn submitted_jobs_run_in_order_without_waiting() {
        let mut w = Worker::spawn("t", 1, Vec::new, |seen: &mut Vec<u32>, j: u32| {
            seen.push(j);
            if j == 9 {
                panic!("boom at nine");
            }
            seen.clone()
        })
        .unwrap();
        let first = w.submit(1).unwrap();
        let second = w.submit(2).unwrap();
        assert_eq!(second.await.unwrap(), vec![1, 2], "jobs run in the order they were queued");
        assert_eq!(first.await.unwrap(), vec![1]);
        let dead = w.submit(9).unwrap();
        assert!(dead.await.is_err(), "the answer of a job that killed the thread never comes");
        assert!(w.death_reason().contains("boom at nine"));
        assert!(w.submit(3).is_none(), "a dead worker takes no job");
    }
}
