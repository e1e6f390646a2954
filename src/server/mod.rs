//! The server: a transport-neutral request core and the two FUSE transports that carry it.
//!
//! - [`core`] answers each operation (lookup, getattr, read, readdir, xattrs, ...) from the
//!   image, the [`View`](crate::view::View) and the basedir, as plain values or an errno; it
//!   can be driven without a mount.
//! - [`handles`] is its only state: the open basedir objects and their passthrough backing
//!   ids ([`passthrough::Backing`]), behind typed [`Handle`](handles::Handle)s.
//! - [`Server`] is what both transports answer through: the core, who may make requests, what
//!   the kernel granted at INIT, and the one function every request goes through (the access
//!   rule, the core's answer, the changed-image check, the reply, timing). Replies that must
//!   be copied are assembled in per-thread buffers both transports share.
//! - [`abi`] is the FUSE wire layer: the opcodes, the access rule, the kernel's structs and
//!   the one encoding of the core's values into them.
//! - [`fuse`] is the fuser transport for `/dev/fuse` ([`DevFuse`]): each fuser method asks the
//!   server and hands fuser the encoded answer. [`busy_poll`] polls the FUSE device during
//!   bursts of requests, and worker threads read basedir objects, which may wait on the disk.
//!   fuser also mounts and negotiates INIT for both transports.
//! - [`uring`] is FUSE over io_uring: one queue per CPU, each answered by a thread pinned to
//!   that CPU, decoding requests and writing the encoded replies into the ring itself.
//!
//! A new opcode takes its core operation, its fuser method and its arm in the ring's
//! dispatch (plus its line in [`abi`]'s opcode table and any wire struct it brings).

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

pub mod abi;
mod buffers;
pub mod busy_poll;
pub mod core;
pub mod fuse;
pub mod handles;
pub mod passthrough;
pub mod uring;
mod workers;

pub use fuse::DevFuse;

use core::Errno;
use passthrough::Backing;

/// The transport-neutral server both transports answer through: the core (one handle table:
/// a file opened through `/dev/fuse` may be read through the ring), who may make requests,
/// what the kernel granted at INIT, and `answer`, what every request does.
#[derive(Debug)]
pub struct Server {
    core: core::Core<Backing>,
    /// With `Some(uid)`, only that user may make requests ([`abi::allowed`]).
    owner: Option<u32>,
    /// A duplicate of the FUSE device, for registering passthrough backing files.
    device: OnceLock<Arc<OwnedFd>>,
    /// Whether the kernel granted passthrough (object reads then bypass the server).
    passthrough: AtomicBool,
    /// Whether the kernel granted FUSE over io_uring.
    uring: AtomicBool,
}

impl Server {
    /// A server answering with `core`.
    pub fn new(core: core::Core<Backing>) -> Server {
        Server {
            core,
            owner: None,
            device: OnceLock::new(),
            passthrough: AtomicBool::new(false),
            uring: AtomicBool::new(false),
        }
    }

    /// With `Some(uid)`, only that user may make requests, as fuser's `SessionACL::Owner`
    /// decides (default: everyone).
    pub fn with_owner(mut self, owner: Option<u32>) -> Server {
        self.owner = owner;
        self
    }

    /// The request core.
    pub fn core(&self) -> &core::Core<Backing> {
        &self.core
    }

    /// The server's counters (shared: they keep counting after the server moves to its
    /// threads).
    pub fn stats(&self) -> &Arc<Stats> {
        self.core.stats()
    }

    /// What every request does, on either transport: the access rule, the core's answer
    /// (`op`, which may also encode it), EIO instead if the image changed meanwhile (the
    /// answer was decoded from the mapping), `reply`, and the request's timing.
    #[inline]
    pub(crate) fn answer<'s, T, R>(
        &'s self,
        opcode: u32,
        uid: u32,
        op: impl FnOnce(&'s core::Core<Backing>) -> Result<T, Errno>,
        reply: impl FnOnce(Result<T, Errno>) -> R,
    ) -> R {
        let stats = self.core.stats();
        let started = stats.request_started();
        let answer = match abi::allowed(self.owner, uid, opcode) {
            true => op(&self.core),
            false => Err(Errno::ACCESS),
        };
        let answer = self.core.checked(answer);
        let replied = reply(answer);
        stats.request_finished(started, opcode);
        replied
    }

    /// Hands the server its FUSE device once mounted (needed for passthrough).
    pub fn set_device(&self, device: Arc<OwnedFd>) {
        let _ = self.device.set(device);
    }

    /// Whether the kernel granted FUSE over io_uring at INIT.
    pub fn uring_granted(&self) -> bool {
        self.uring.load(Ordering::Relaxed)
    }

    pub(crate) fn grant(&self, passthrough: bool, uring: bool) {
        self.passthrough.store(passthrough, Ordering::Relaxed);
        self.uring.store(uring, Ordering::Relaxed);
    }

    /// A passthrough backing id for `file` (of node `node`), if the kernel granted
    /// passthrough; `None`: the server reads it.
    pub fn register_backing(&self, node: u64, file: &File) -> Option<Backing> {
        if !self.passthrough.load(Ordering::Relaxed) {
            return None;
        }
        let device = self.device.get()?;
        Backing::open(device, file)
            .inspect_err(|e| {
                log::debug!("node {node}: passthrough unavailable, serving reads: {e}")
            })
            .ok()
    }
}

/// What a server has served, readable while it runs (relaxed counters).
#[derive(Debug, Default)]
pub struct Stats {
    /// Reads answered from the image's own data (inline, blocks, chunks).
    pub image_reads: AtomicU64,
    /// Reads of basedir objects' content (in the overlay views: refused, EIO). Reads the
    /// kernel does itself (FUSE passthrough, or the overlay above an overlay view) never reach
    /// the server.
    pub object_reads: AtomicU64,
    /// Opens of files whose content is a basedir object. In the overlay views the overlay
    /// reads such content from the basedir itself; it may still open the file (e.g. for its
    /// attributes during copy-up).
    pub object_opens: AtomicU64,
    /// Requests answered through `/dev/fuse` (FORGET, which has no answer, excepted).
    pub dev_requests: AtomicU64,
    /// Requests received through the io_uring queues.
    pub uring_received: AtomicU64,
    /// Requests answered through the io_uring queues (committed back to the kernel).
    pub uring_answered: AtomicU64,
    /// Whether requests are timed ([`Stats::time_requests`]).
    timing: AtomicBool,
    /// The slowest request's server CPU time in nanoseconds, shifted left by
    /// [`OPCODE_BITS`], with its FUSE opcode in the low bits: one `fetch_max` keeps both.
    slowest: AtomicU64,
}

/// Low bits of [`Stats::slowest`] holding the opcode (every opcode lazycfs answers fits).
const OPCODE_BITS: u32 = 16;

impl Stats {
    /// Measures each request's server CPU time (the thread's CPU clock, so time the thread
    /// spends preempted does not count) and keeps the slowest. Off by default: reading a
    /// thread's CPU clock is a system call, a sizeable share of a request that costs a few
    /// microseconds.
    pub fn time_requests(&self, on: bool) {
        self.timing.store(on, Ordering::Relaxed);
    }

    /// At the start of a request: the thread's CPU time, if requests are timed.
    #[inline]
    pub fn request_started(&self) -> Option<Duration> {
        self.timing.load(Ordering::Relaxed).then(thread_cpu_time)
    }

    /// At the end of a request with FUSE opcode `opcode`, given what
    /// [`request_started`](Self::request_started) returned.
    #[inline]
    pub fn request_finished(&self, started: Option<Duration>, opcode: u32) {
        let Some(started) = started else {
            return;
        };
        let nanos = thread_cpu_time().saturating_sub(started).as_nanos();
        let nanos = nanos.min(u128::from(u64::MAX >> OPCODE_BITS)) as u64;
        let opcode = u64::from(opcode) & ((1 << OPCODE_BITS) - 1);
        self.slowest
            .fetch_max(nanos << OPCODE_BITS | opcode, Ordering::Relaxed);
    }

    /// The slowest timed request so far: its server CPU time and operation (`LOOKUP`, ...);
    /// `None` before any.
    pub fn slowest_request(&self) -> Option<(Duration, &'static str)> {
        let packed = self.slowest.load(Ordering::Relaxed);
        (packed != 0).then(|| {
            let nanos = packed >> OPCODE_BITS;
            let opcode = (packed & ((1 << OPCODE_BITS) - 1)) as u32;
            (Duration::from_nanos(nanos), abi::opcode_name(opcode))
        })
    }

    /// One line for logs: `N image reads, N object opens, N object reads, N requests on
    /// /dev/fuse, N received on io_uring, N answered on io_uring`.
    pub fn summary(&self) -> String {
        let count = |c: &AtomicU64| c.load(Ordering::Relaxed);
        format!(
            "{} image reads, {} object opens, {} object reads, {} requests on /dev/fuse, \
             {} received on io_uring, {} answered on io_uring",
            count(&self.image_reads),
            count(&self.object_opens),
            count(&self.object_reads),
            count(&self.dev_requests),
            count(&self.uring_received),
            count(&self.uring_answered),
        )
    }
}

/// The calling thread's CPU time.
fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}
