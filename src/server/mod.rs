//! The server: a transport-neutral request core and the FUSE transport that carries it.
//!
//! - [`core`] answers each operation (lookup, getattr, read, readdir, xattrs, ...) from the
//!   image, the [`View`](crate::view::View) and the basedir, as plain values or an errno; it
//!   can be driven without a mount.
//! - [`handles`] is its only state: the open basedir objects and their passthrough backing
//!   ids, behind typed [`Handle`](handles::Handle)s.
//! - [`fuse`] is the fuser adapter: it forwards each request to the core and replies, with
//!   the per-request hooks in one place. [`busy_poll`] polls the FUSE device during bursts of
//!   requests, and worker threads read basedir objects, which may wait on the disk.

use std::sync::atomic::{AtomicU64, Ordering};

pub mod busy_poll;
pub mod core;
pub mod fuse;
pub mod handles;
mod workers;

pub use fuse::ImageFs;

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
}

impl Stats {
    /// One line for logs: `N image reads, N object opens, N object reads`.
    pub fn summary(&self) -> String {
        format!(
            "{} image reads, {} object opens, {} object reads",
            self.image_reads.load(Ordering::Relaxed),
            self.object_opens.load(Ordering::Relaxed),
            self.object_reads.load(Ordering::Relaxed)
        )
    }
}
