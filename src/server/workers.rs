//! Threads for the requests that wait on the disk.
//!
//! One thread reads the FUSE device and answers every request whose answer is in the
//! mapped image (metadata never waits for anything but a page of the image). Reads of
//! basedir objects may wait on the disk, so they go to these workers and the request
//! thread moves on; the workers reply themselves (fuser replies may be sent from any
//! thread).

use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex};

type Job = Box<dyn FnOnce() + Send>;

/// A fixed set of worker threads; they exit when the pool is dropped.
#[derive(Debug)]
pub struct Workers {
    queue: Sender<Job>,
}

impl Workers {
    /// Starts `n` workers (at least one). A worker that cannot be spawned is logged and
    /// left out; with none at all, [`run`](Self::run) runs jobs in place.
    pub fn start(n: usize) -> Workers {
        let (queue, jobs) = channel::<Job>();
        let jobs = Arc::new(Mutex::new(jobs));
        for i in 0..n.max(1) {
            let jobs = jobs.clone();
            if let Err(e) = std::thread::Builder::new()
                .name(format!("lazycfs-io-{i}"))
                .spawn(move || work(&jobs))
            {
                log::warn!("object reader thread {i}: {e}");
            }
        }
        Workers { queue }
    }

    /// Runs `job` on a worker; runs it here if there are no workers.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) {
        if let Err(unsent) = self.queue.send(Box::new(job)) {
            (unsent.0)();
        }
    }
}

fn work(jobs: &Mutex<Receiver<Job>>) {
    loop {
        // The lock is held only while taking a job, never while running one.
        let job = match jobs.lock() {
            Ok(jobs) => jobs.recv(),
            Err(_) => return,
        };
        match job {
            Ok(job) => job(),
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;

    #[test]
    fn jobs_run_concurrently_on_the_workers() {
        let workers = Workers::start(3);
        let (done, finished) = mpsc::channel();
        let barrier = Arc::new(std::sync::Barrier::new(3));
        for _ in 0..3 {
            let (done, barrier) = (done.clone(), barrier.clone());
            // Each job waits for the other two: this only finishes if all three run at once.
            workers.run(move || {
                barrier.wait();
                done.send(std::thread::current().name().map(String::from))
                    .unwrap();
            });
        }
        for _ in 0..3 {
            let name = finished
                .recv_timeout(std::time::Duration::from_secs(10))
                .unwrap();
            assert!(name.unwrap().starts_with("lazycfs-io-"));
        }
    }
}
