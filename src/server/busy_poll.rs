//! Adaptive busy polling of the FUSE device.
//!
//! A FUSE round trip wakes the server thread and then the caller. When the server's CPU is
//! idle, the first wake-up is the expensive half: an inter-processor interrupt and an exit
//! from the idle state (in a VM, a halt exit too). During a burst of requests (a walk, an
//! xattr dump, a container start) the request thread therefore reads the device without
//! blocking and keeps polling it, so the next request is picked up on a CPU that is already
//! running; once requests stop, it goes back to sleeping in `read`.
//!
//! fuser owns the read loop, so the switch is the device's `O_NONBLOCK` flag (fuser retries
//! `EAGAIN`): the request thread turns polling on after [`BURST_LEN`] requests in a row, each
//! less than [`BURST_GAP`] after the previous one, and a governor thread turns it off after a
//! [`QUIET_WINDOW`] with no request. The governor sleeps while polling is off, so an idle
//! server costs nothing.
//!
//! Polling costs at least a quiet window of one CPU per burst and saves a few microseconds per
//! request, so short sequences (a deep `stat`, a small `ls`, the first requests of a mount,
//! which mostly wait on cold image pages) are not worth it: hence the run length.
//! Polling needs the device read by one thread only: a second thread blocked in `read`
//! would be woken for every request anyway.

use std::io;
use std::os::fd::{BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::Thread;
use std::time::{Duration, Instant};

use rustix::fs::OFlags;

/// Requests closer together than this are part of a burst.
pub const BURST_GAP: Duration = Duration::from_micros(100);
/// A burst this long (in requests) starts polling.
pub const BURST_LEN: u32 = 32;
/// Polling stops after this long without a request.
pub const QUIET_WINDOW: Duration = Duration::from_millis(1);

/// The polling state of one FUSE device. The request thread reports each request with
/// [`request`](Self::request); [`attach`](Self::attach) hands it the device.
#[derive(Debug)]
pub struct BusyPoll {
    enabled: bool,
    epoch: Instant,
    /// Requests seen (the governor compares counts across windows).
    requests: AtomicU64,
    /// When the last request arrived, in nanoseconds since `epoch` (`u64::MAX`: none yet).
    last_request: AtomicU64,
    /// Requests in a row, each within the burst gap of the previous one.
    streak: AtomicU32,
    /// Whether the device is non-blocking (a hint read on the request path; changes happen
    /// under `device`'s lock).
    polling: AtomicBool,
    device: Mutex<Option<OwnedFd>>,
    governor: OnceLock<Thread>,
    stopped: AtomicBool,
}

impl BusyPoll {
    /// Polling state for a server; `enabled: false` makes every call a no-op.
    pub fn new(enabled: bool) -> Arc<BusyPoll> {
        Arc::new(BusyPoll {
            enabled,
            epoch: Instant::now(),
            requests: AtomicU64::new(0),
            last_request: AtomicU64::new(u64::MAX),
            streak: AtomicU32::new(0),
            polling: AtomicBool::new(false),
            device: Mutex::new(None),
            governor: OnceLock::new(),
            stopped: AtomicBool::new(false),
        })
    }

    /// Starts governing `device` (the fd the request thread reads). Polling is on only
    /// between bursts' first requests and the following quiet window.
    pub fn attach(self: &Arc<Self>, device: BorrowedFd<'_>) -> io::Result<()> {
        if !self.enabled {
            return Ok(());
        }
        *self
            .device
            .lock()
            .map_err(|_| io::Error::other("poisoned"))? = Some(device.try_clone_to_owned()?);
        let this = self.clone();
        let governor = std::thread::Builder::new()
            .name("lazycfs-poll".into())
            .spawn(move || this.govern())?;
        let _ = self.governor.set(governor.thread().clone());
        Ok(())
    }

    /// Reports a request (called first thing by every FUSE operation). Costs a clock read
    /// and a few relaxed atomics; the switch to polling is taken once per burst.
    #[inline]
    pub fn request(&self) {
        if !self.enabled {
            return;
        }
        let now = self.epoch.elapsed().as_nanos() as u64;
        let previous = self.last_request.swap(now, Ordering::Relaxed);
        self.requests.fetch_add(1, Ordering::Relaxed);
        let close = now
            .checked_sub(previous)
            .is_some_and(|gap| gap < BURST_GAP.as_nanos() as u64);
        // One thread reports requests, so a load and a store are enough; were there several,
        // a lost update would only delay polling.
        let streak = if close {
            self.streak.load(Ordering::Relaxed).saturating_add(1)
        } else {
            0
        };
        self.streak.store(streak, Ordering::Relaxed);
        if streak >= BURST_LEN && !self.polling.load(Ordering::Relaxed) {
            self.set_polling(true);
            if let Some(governor) = self.governor.get() {
                governor.unpark();
            }
        }
    }

    /// Stops polling for good and ends the governor (the server is going away).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.set_polling(false);
        if let Some(governor) = self.governor.get() {
            governor.unpark();
        }
    }

    /// Whether the device is currently polled.
    pub fn is_polling(&self) -> bool {
        self.polling.load(Ordering::Relaxed)
    }

    fn set_polling(&self, on: bool) {
        let Ok(device) = self.device.lock() else {
            return;
        };
        let Some(fd) = device.as_ref() else {
            return;
        };
        if self.polling.load(Ordering::Relaxed) == on || (on && self.is_stopped()) {
            return;
        }
        let Ok(flags) = rustix::fs::fcntl_getfl(fd) else {
            return;
        };
        let flags = if on {
            flags | OFlags::NONBLOCK
        } else {
            flags - OFlags::NONBLOCK
        };
        if rustix::fs::fcntl_setfl(fd, flags).is_ok() {
            self.polling.store(on, Ordering::Relaxed);
        }
    }

    fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// The governor: asleep while the device blocks; while it is polled, wakes once per
    /// quiet window and turns polling off when a window saw no request.
    fn govern(&self) {
        while !self.is_stopped() {
            if !self.is_polling() {
                std::thread::park();
                continue;
            }
            let mut seen = self.requests.load(Ordering::Relaxed);
            loop {
                std::thread::sleep(QUIET_WINDOW);
                let now = self.requests.load(Ordering::Relaxed);
                if now == seen || self.is_stopped() {
                    break;
                }
                seen = now;
            }
            self.set_polling(false);
        }
        // Dropping the device's duplicate: the server's own fd keeps the connection.
        if let Ok(mut device) = self.device.lock() {
            device.take();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    fn nonblocking(fd: impl AsFd) -> bool {
        rustix::fs::fcntl_getfl(fd)
            .unwrap()
            .contains(OFlags::NONBLOCK)
    }

    /// Whether `what` comes true within a minute (a bound for a stuck test, not a measure).
    fn eventually(what: impl Fn() -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if what() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        false
    }

    #[test]
    fn a_burst_polls_and_quiet_blocks_again() {
        let (reader, _writer) = std::os::unix::net::UnixStream::pair().unwrap();
        let poll = BusyPoll::new(true);
        poll.attach(reader.as_fd()).unwrap();
        poll.request();
        assert!(
            !nonblocking(&reader),
            "a lone request does not start polling"
        );
        // Requests in a tight loop come well within the burst gap (a few tries absorb a
        // preempted test thread).
        let burst = || {
            (0..1000).any(|_| {
                poll.request();
                nonblocking(&reader)
            })
        };
        assert!(burst(), "close requests start polling");
        assert!(
            eventually(|| !nonblocking(&reader) && !poll.is_polling()),
            "polling stops after a quiet window"
        );
        assert!(burst(), "the next burst polls again");
        poll.stop();
        assert!(!nonblocking(&reader), "stopping restores blocking reads");
        poll.request();
        poll.request();
        assert!(!nonblocking(&reader), "a stopped poller never polls");
    }

    #[test]
    fn disabled_never_touches_the_device() {
        let (reader, _writer) = std::os::unix::net::UnixStream::pair().unwrap();
        let poll = BusyPoll::new(false);
        poll.attach(reader.as_fd()).unwrap();
        for _ in 0..10 {
            poll.request();
        }
        assert!(!nonblocking(&reader));
    }
}
