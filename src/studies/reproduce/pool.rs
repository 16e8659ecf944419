//! The reproduction's worker pool: a fixed number of scoped threads taking jobs from one queue.
//!
//! Why not rayon: every worker needs its own torch state (an assessor with the reference classifier), made once per
//! thread and never shared, and the caller wants one progress line per job as it starts and finishes, on its own
//! thread.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::sync::Mutex;

use super::ReproduceError;

enum Msg<R> {
    Line(String),
    Done(usize, Result<R, ReproduceError>),
}

/// Runs `jobs` on `workers` threads; each thread first makes its own state with `init` (e.g. an assessor: torch
/// tensors are not shared between threads) and then calls `work`. Results come back in job order; the first error
/// stops handing out new jobs.
pub(super) fn parallel<C: Sync, J: Send + Sync, S, R: Send>(
    ctx: &C,
    workers: usize,
    jobs: Vec<J>,
    label: impl Fn(&J) -> String + Sync,
    init: impl Fn(&C) -> Result<S, ReproduceError> + Sync,
    work: impl Fn(&C, &S, &J) -> Result<R, ReproduceError> + Sync,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<R>, ReproduceError> {
    let total = jobs.len();
    let workers = workers.clamp(1, total.max(1));
    let queue: Mutex<VecDeque<(usize, &J)>> = Mutex::new(jobs.iter().enumerate().collect());
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (tx, rx) = mpsc::channel::<Msg<R>>();
    let mut results: Vec<Option<R>> = (0..total).map(|_| None).collect();
    let mut first_error = None;
    std::thread::scope(|scope| {
        for _ in 0..workers {
            let tx = tx.clone();
            let (queue, stop, label, init, work) = (&queue, &stop, &label, &init, &work);
            scope.spawn(move || {
                let state = match init(ctx) {
                    Ok(st) => st,
                    Err(e) => {
                        let _ = tx.send(Msg::Done(usize::MAX, Err(e)));
                        return;
                    }
                };
                loop {
                    if stop.load(std::sync::atomic::Ordering::Relaxed) {
                        return;
                    }
                    let next = queue.lock().ok().and_then(|mut q| q.pop_front());
                    let Some((i, job)) = next else { return };
                    let _ = tx.send(Msg::Line(format!("{}: started", label(job))));
                    let r = work(ctx, &state, job);
                    let _ = tx.send(Msg::Done(i, r));
                }
            });
        }
        drop(tx);
        let mut done = 0usize;
        for msg in rx {
            match msg {
                Msg::Line(l) => progress(&l),
                Msg::Done(i, Ok(r)) => {
                    done += 1;
                    if let Some(slot) = results.get_mut(i) {
                        *slot = Some(r);
                    }
                    progress(&format!("[{done}/{total}] finished {}", jobs.get(i).map(&label).unwrap_or_default()));
                }
                Msg::Done(_, Err(e)) => {
                    stop.store(true, std::sync::atomic::Ordering::Relaxed);
                    first_error.get_or_insert(e);
                }
            }
        }
    });
    if let Some(e) = first_error {
        return Err(e);
    }
    results
        .into_iter()
        .map(|r| r.ok_or_else(|| ReproduceError::Reference("a job ended without a result".into())))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_come_back_in_job_order_and_the_first_error_wins() {
        let mut lines = Vec::new();
        let squares = parallel(
            &10u64,
            3,
            (1..=7u64).collect(),
            |j: &u64| format!("job {j}"),
            |ctx: &u64| Ok(*ctx),
            |_, state: &u64, j: &u64| Ok(state + j * j),
            &mut |l: &str| lines.push(l.to_string()),
        )
        .unwrap();
        assert_eq!(squares, vec![11, 14, 19, 26, 35, 46, 59]);
        assert_eq!(lines.iter().filter(|l| l.ends_with("started")).count(), 7);
        assert!(lines.iter().any(|l| l.starts_with("[7/7] finished job ")), "{lines:?}");

        let failed = parallel(
            &(),
            2,
            vec![1u64, 2, 3],
            |j: &u64| j.to_string(),
            |_| Ok(()),
            |_, _, j: &u64| if *j == 2 { Err(ReproduceError::Preset("job 2".into())) } else { Ok(*j) },
            &mut |_: &str| {},
        );
        assert!(matches!(failed, Err(ReproduceError::Preset(m)) if m == "job 2"));

        let no_state = parallel(
            &(),
            2,
            vec![1u64],
            |j: &u64| j.to_string(),
            |_| Err::<(), _>(ReproduceError::Reference("no reference".into())),
            |_, _, j: &u64| Ok(*j),
            &mut |_: &str| {},
        );
        assert!(matches!(no_state, Err(ReproduceError::Reference(_))));
    }
}
