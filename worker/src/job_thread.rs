//! A long-lived thread that answers jobs one for one, in the order they come:
//!
//!   hand(job) -> [thread: answer(job)] -> next_answer()
//!
//! The pipeline's commit thread and the decode helpers are such threads: started once, they
//! keep their allocator heaps from one batch to the next, where a thread started per batch
//! began each with fresh pages. A leaf: it uses nothing else of the crate.

use std::sync::mpsc::{self, Receiver, Sender};

/// The thread's ends: jobs in, answers out. Dropping it closes the job queue, and the thread
/// ends once it has answered what it holds (it is not waited for).
pub struct JobThread<J, A> {
    jobs: Sender<J>,
    answers: Receiver<A>,
}

impl<J: Send + 'static, A: Send + 'static> JobThread<J, A> {
    /// Starts a thread named `name` that answers each job with `answer`. A job is dropped
    /// before its answer is sent, so what it shared is let go of by the time the answer
    /// arrives.
    pub fn start(
        name: String,
        mut answer: impl FnMut(J) -> A + Send + 'static,
    ) -> std::io::Result<JobThread<J, A>> {
        let (jobs, queued) = mpsc::channel::<J>();
        let (answered, answers) = mpsc::channel::<A>();
        std::thread::Builder::new().name(name).spawn(move || {
            for job in queued {
                let out = answer(job);
                if answered.send(out).is_err() {
                    return;
                }
            }
        })?;
        Ok(JobThread { jobs, answers })
    }

    /// Hands a job to the thread; false when the thread has stopped (it panicked).
    pub fn hand(&self, job: J) -> bool {
        self.jobs.send(job).is_ok()
    }

    /// The answer to the oldest job not answered yet, once it is ready; None when the thread
    /// stopped (it panicked) before answering.
    pub fn next_answer(&self) -> Option<A> {
        self.answers.recv().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn answers_come_in_the_order_of_the_jobs_with_the_jobs_let_go_of() {
        let thread = JobThread::start("test-jobs".into(), |(n, _shared): (u32, Arc<()>)| n * 2)
            .expect("start");
        let shared = Arc::new(());
        for n in 1..=3 {
            assert!(thread.hand((n, shared.clone())));
        }
        let answers: Vec<Option<u32>> = (0..3).map(|_| thread.next_answer()).collect();
        assert_eq!(answers, [Some(2), Some(4), Some(6)]);
        assert_eq!(Arc::strong_count(&shared), 1, "every job dropped");
    }

    #[test]
    fn a_thread_that_panicked_refuses_jobs_and_gives_no_answer() {
        let thread = JobThread::start("test-panics".into(), |n: u32| -> u32 {
            assert!(n != 0, "the job panics");
            n
        })
        .expect("start");
        assert!(thread.hand(0));
        assert_eq!(thread.next_answer(), None);
        assert!(!thread.hand(1), "the thread is gone");
    }
}
