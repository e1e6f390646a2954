//! Reading a served image into the page cache ahead of the requests that need it.
//!
//! The image is mapped for random access, so a request that faults on a page reads that page
//! alone. A cold tree walk would then fault page by page; the prefetch thread reads the rest of
//! the image in the background instead, from before the mount exists (so its reads overlap the
//! mount's setup) until the last read is submitted, keeping only a little queued so that a
//! lookup's own fault never waits behind the whole image.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::erofs::Image;

/// Readahead of a whole image, from [`Image::prefetcher`].
#[derive(Debug)]
pub struct Prefetch {
    /// `None` for an image held in memory, or once the kernel refused a hint.
    file: Option<File>,
    len: u64,
    /// Where the reads not yet submitted start.
    next: u64,
}

impl Image {
    /// A handle that asks the kernel to read the whole image into the page cache, for servers
    /// that will soon touch most of it. It outlives the image (it holds its own descriptor), so
    /// it can be started after the image has moved into a server.
    pub fn prefetcher(&self) -> Prefetch {
        Prefetch {
            file: self.file().and_then(|file| file.try_clone().ok()),
            len: self.bytes().len() as u64,
            next: 0,
        }
    }
}

impl Prefetch {
    /// The kernel truncates one hint to the device's readahead window (128 KiB by default),
    /// so a whole image takes one hint per window.
    const WINDOW: u64 = 128 * 1024;
    /// How much [`Prefetch::run`] keeps submitted ahead of what has been read.
    pub const IN_FLIGHT: u64 = 512 * 1024;

    /// Asks the kernel to read the image into the page cache (`POSIX_FADV_WILLNEED`) up to
    /// byte `end`, and returns once the reads are submitted; the reads themselves go on in the
    /// background. Does nothing for an image held in memory or for what was already submitted.
    ///
    /// Everything submitted is queued at once: a page the server faults on meanwhile (a
    /// lookup) is read after it. Servers use [`Prefetch::run`], which keeps the queue short.
    pub fn submit(&mut self, end: u64) {
        while self.next < self.len.min(end) && self.hint_next() {}
    }

    /// Reads the rest of the image into the page cache, so a cold tree walk does not fault
    /// page by page, keeping at most [`Prefetch::IN_FLIGHT`] bytes of reads queued: a lookup
    /// that faults on a page meanwhile waits behind that much at most, instead of behind the
    /// whole image. Returns once the last read is submitted. A mount runs it on a thread of
    /// its own (see [`mount`](crate::mount::mount)).
    pub fn run(mut self) {
        // Everything before `read` is read, or was submitted before this call.
        let mut read = self.next;
        while self.next < self.len {
            if self.next - read >= Self::IN_FLIGHT {
                let Some(file) = &self.file else { return };
                // Reading the last byte of the oldest window waits for that window's reads
                // (the hints set no readahead marks, so this submits nothing more).
                let last = (read + Self::WINDOW).min(self.len) - 1;
                if file.read_at(&mut [0], last).is_err() {
                    return;
                }
                read += Self::WINDOW;
            }
            if !self.hint_next() {
                return;
            }
        }
    }

    /// Hints the window at `next` and moves past it; `false`, and no hints from then on, if
    /// there is no file or the kernel refused.
    fn hint_next(&mut self) -> bool {
        let Some(file) = &self.file else { return false };
        let hint = rustix::fs::fadvise(
            file,
            self.next,
            std::num::NonZeroU64::new(Self::WINDOW),
            rustix::fs::Advice::WillNeed,
        );
        self.next += Self::WINDOW;
        if hint.is_err() {
            self.file = None;
        }
        hint.is_ok()
    }
}

/// The thread that runs a mount's [`Prefetch`]. It is started before mounting, so that its
/// reads overlap the mount's setup. Once the last read is submitted it does not exit but
/// parks until the mount ends (this value is dropped): a thread's exit runs libc's and std's
/// thread-exit code, whose pages would then stay resident in the server for the rest of its
/// life, for a thread whose work is done.
pub(super) struct PrefetchThread {
    thread: Option<std::thread::Thread>,
    ended: Arc<AtomicBool>,
}

impl PrefetchThread {
    /// The thread's stack: it calls a few syscalls and nothing recursive.
    const STACK: usize = 64 * 1024;

    /// Starts the thread. One that cannot be started only costs the readahead.
    pub(super) fn start(prefetch: Prefetch) -> PrefetchThread {
        let ended = Arc::new(AtomicBool::new(false));
        let ended_seen = ended.clone();
        let thread = std::thread::Builder::new()
            .name("lazycfs-prefetch".into())
            .stack_size(Self::STACK)
            .spawn(move || {
                prefetch.run();
                while !ended_seen.load(Ordering::Acquire) {
                    std::thread::park();
                }
            })
            .ok()
            .map(|handle| handle.thread().clone());
        PrefetchThread { thread, ended }
    }
}

/// Lets the thread exit: the mount is over.
impl Drop for PrefetchThread {
    fn drop(&mut self) {
        self.ended.store(true, Ordering::Release);
        if let Some(thread) = &self.thread {
            thread.unpark();
        }
    }
}
