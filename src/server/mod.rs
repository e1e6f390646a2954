//! The server: a transport-neutral request core and the two FUSE transports that carry it.
//!
//! - [`core`] answers each operation (lookup, getattr, read, readdir, xattrs, ...) from the
//!   image, the [`View`](crate::view::View) and the basedir, as plain values or an errno; it
//!   can be driven without a mount.
//! - [`handles`] is its only state: the open basedir objects and their passthrough backing
//!   ids ([`passthrough::Backing`]), behind typed [`Handle`](handles::Handle)s.
//! - [`fuse`] is the fuser adapter for `/dev/fuse`: it forwards each request to the core and
//!   replies, with the per-request hooks in one place. [`busy_poll`] polls the FUSE device
//!   during bursts of requests, and worker threads read basedir objects, which may wait on the
//!   disk. fuser also mounts and negotiates INIT for both transports.
//! - [`uring`] is FUSE over io_uring: one queue per CPU, each answered by a thread pinned to
//!   that CPU, decoding requests and encoding replies itself, on the same [`Server`].

use std::fs::File;
use std::os::fd::OwnedFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

pub mod busy_poll;
pub mod core;
pub mod fuse;
pub mod handles;
pub mod passthrough;
pub mod uring;
mod workers;

pub use fuse::ImageFs;

use passthrough::Backing;

/// What both transports share: the core (one handle table: a file opened through
/// `/dev/fuse` may be read through the ring) and what the kernel granted at INIT.
#[derive(Debug)]
pub struct Server {
    core: core::Core<Backing>,
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
            device: OnceLock::new(),
            passthrough: AtomicBool::new(false),
            uring: AtomicBool::new(false),
        }
    }

    /// The request core.
    pub fn core(&self) -> &core::Core<Backing> {
        &self.core
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
}

impl Stats {
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
