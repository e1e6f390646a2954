//! Surviving an image that changes under its mapping.
//!
//! A mapped file that shrinks (`truncate`, `cp` over it) or fails to read (an I/O error) does
//! not fail a read: the access raises SIGBUS, whose default action kills the process. Images
//! are registered here while mapped, and a process-wide SIGBUS handler repairs a fault inside
//! one: it marks the image as changed, maps an anonymous zero page over the faulting page and
//! returns, so the access retries and reads zeros. Readers then ask
//! [`ImageGuard::changed`] and refuse to trust what they read (the server answers EIO).
//! Faults anywhere else go to the disposition that was there before (Rust's own handler, or
//! the default action), so real bugs still crash.
//!
//! The handler may run on any thread at any point, so the registry is a fixed array of atomics
//! and the handler neither allocates nor locks. [`super::lease`] adds the warning that comes
//! before a change: a lease break.
//!
//! `signal-hook` is not used for SIGBUS: it runs the previous handler before its own actions,
//! and Rust's previous handler resets SIGBUS to its default action on every fault it does not
//! own, so the next fault in an image would kill the process.

use std::io;
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, AtomicU64, AtomicUsize, Ordering};

/// How many mappings can be guarded at once; further ones are mapped unguarded.
const SLOTS: usize = 256;

const FREE: u8 = 0;
const CLAIMED: u8 = 1;
const ACTIVE: u8 = 2;

/// One registered mapping.
pub(super) struct Slot {
    state: AtomicU8,
    start: AtomicUsize,
    len: AtomicUsize,
    /// The mapped file's descriptor when it holds a read lease, else -1.
    pub(super) lease_fd: AtomicI32,
    changed: AtomicBool,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            state: AtomicU8::new(FREE),
            start: AtomicUsize::new(0),
            len: AtomicUsize::new(0),
            lease_fd: AtomicI32::new(-1),
            changed: AtomicBool::new(false),
        }
    }

    pub(super) fn is_active(&self) -> bool {
        self.state.load(Ordering::Acquire) == ACTIVE
    }

    pub(super) fn mark_changed(&self) {
        self.changed.store(true, Ordering::SeqCst);
    }

    fn contains(&self, addr: usize) -> bool {
        // The range is read after the state that publishes it.
        self.is_active()
            && addr.wrapping_sub(self.start.load(Ordering::Relaxed))
                < self.len.load(Ordering::Relaxed)
    }
}

pub(super) static REGISTRY: [Slot; SLOTS] = [const { Slot::new() }; SLOTS];

/// Faults repaired with a zero page, in every image, since the process started.
static REPAIRED: AtomicU64 = AtomicU64::new(0);

static PAGE_SIZE: AtomicUsize = AtomicUsize::new(0);

/// SIGBUS's disposition before ours, for faults that are not in an image.
static PREVIOUS: OnceLock<Disposition> = OnceLock::new();

/// A saved `sigaction` (plain data, shared read-only with the handler).
pub(super) struct Disposition(libc::sigaction);

// SAFETY: a `sigaction` is plain data (a handler address, a mask, flags); it is written once
// before the handler that reads it is installed and never changed after.
unsafe impl Sync for Disposition {}
// SAFETY: as above: plain data, no thread affinity.
unsafe impl Send for Disposition {}

/// A guarded mapping's registration; dropping it unregisters (before the unmap).
#[derive(Debug)]
pub(crate) struct ImageGuard {
    slot: usize,
}

impl ImageGuard {
    /// Guards `len` bytes mapped at `start`; `None` when every slot is taken or the handler
    /// cannot be installed (the mapping then works as before, unguarded).
    pub(crate) fn register(start: *const u8, len: usize) -> Option<ImageGuard> {
        if let Err(e) = install() {
            log::debug!("no SIGBUS handler, the image mapping is unguarded: {e}");
            return None;
        }
        let slot = REGISTRY.iter().position(|slot| {
            slot.state
                .compare_exchange(FREE, CLAIMED, Ordering::Acquire, Ordering::Relaxed)
                .is_ok()
        });
        let Some(slot) = slot else {
            log::debug!("{SLOTS} images mapped: this one is unguarded");
            return None;
        };
        let entry = &REGISTRY[slot];
        entry.start.store(start as usize, Ordering::Relaxed);
        entry.len.store(len, Ordering::Relaxed);
        entry.lease_fd.store(-1, Ordering::Relaxed);
        entry.changed.store(false, Ordering::Relaxed);
        entry.state.store(ACTIVE, Ordering::Release);
        Some(ImageGuard { slot })
    }

    /// Whether the file changed under the mapping: a fault was repaired with zeros, or a
    /// writer broke the lease. Sticky: zero pages stay, and any page may hold new bytes.
    pub(crate) fn changed(&self) -> bool {
        REGISTRY[self.slot].changed.load(Ordering::Acquire)
    }

    pub(super) fn slot(&self) -> &'static Slot {
        &REGISTRY[self.slot]
    }

    /// Has the lease on `fd` (held by the caller for as long as the guard) watched.
    pub(super) fn watch_lease(&self, fd: RawFd) {
        self.slot().lease_fd.store(fd, Ordering::Release);
    }
}

impl Drop for ImageGuard {
    fn drop(&mut self) {
        let entry = &REGISTRY[self.slot];
        entry.state.store(CLAIMED, Ordering::Release);
        entry.lease_fd.store(-1, Ordering::Relaxed);
        entry.state.store(FREE, Ordering::Release);
    }
}

/// Faults repaired with a zero page in this process so far.
#[cfg(test)]
pub(super) fn repaired_faults() -> u64 {
    REPAIRED.load(Ordering::Relaxed)
}

/// Installs the SIGBUS handler, once per process.
fn install() -> io::Result<()> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    let result = INSTALLED.get_or_init(|| {
        PAGE_SIZE.store(rustix::param::page_size(), Ordering::Relaxed);
        replace_disposition(libc::SIGBUS, on_sigbus, &PREVIOUS)
    });
    result.map_err(io::Error::from_raw_os_error)
}

/// The handler type of `SA_SIGINFO` dispositions.
pub(super) type Handler = extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void);

/// Saves `signal`'s disposition in `previous`, then installs `handler` for it.
pub(super) fn replace_disposition(
    signal: libc::c_int,
    handler: Handler,
    previous: &OnceLock<Disposition>,
) -> Result<(), i32> {
    let mut old = MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a null new action only reads the current one into `old`, which has room for it.
    if unsafe { libc::sigaction(signal, std::ptr::null(), old.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL));
    }
    // SAFETY: sigaction filled `old` (zeroed first, so every byte is initialised anyway).
    let _ = previous.set(Disposition(unsafe { old.assume_init() }));
    // SAFETY: an all-zero sigaction is valid (empty mask, no flags), then filled in.
    let mut new: libc::sigaction = unsafe { MaybeUninit::zeroed().assume_init() };
    new.sa_sigaction = handler as usize;
    // SA_ONSTACK: Rust gives its threads an alternate signal stack, which also keeps a fault
    // near the end of a thread's stack handleable. SA_RESTART: an asynchronous SIGIO (lease
    // breaks) must not fail other threads' system calls.
    new.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK | libc::SA_RESTART;
    // SAFETY: `handler` is async-signal-safe (atomics and system calls only), and the mask in
    // `new` is a valid empty set.
    if unsafe { libc::sigaction(signal, &new, std::ptr::null_mut()) } != 0 {
        return Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EINVAL));
    }
    Ok(())
}

/// Hands a signal to `previous`'s handler; with no handler there (default or ignored),
/// `reset` decides: restore the default action (the retried fault then acts as if we had
/// never been here), or drop the signal.
pub(super) fn chain(
    previous: Option<&Disposition>,
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
    reset: bool,
) {
    let handler = previous.map_or(libc::SIG_DFL, |p| p.0.sa_sigaction);
    if handler == libc::SIG_DFL || handler == libc::SIG_IGN {
        if reset {
            // SAFETY: `signal` is a valid signal number and a default disposition is plain
            // data; sigaction is async-signal-safe.
            unsafe { libc::signal(signal, libc::SIG_DFL) };
        }
        return;
    }
    let flags = previous.map_or(0, |p| p.0.sa_flags);
    if flags & libc::SA_SIGINFO != 0 {
        // SAFETY: the previous disposition was installed with SA_SIGINFO, so its address is a
        // three-argument handler, called with the arguments the kernel gave us.
        let handler: Handler = unsafe { std::mem::transmute::<usize, Handler>(handler) };
        handler(signal, info, context);
    } else {
        // SAFETY: without SA_SIGINFO the address is a one-argument handler.
        let handler = unsafe { std::mem::transmute::<usize, extern "C" fn(libc::c_int)>(handler) };
        handler(signal);
    }
}

/// The SIGBUS handler: repairs faults in registered images, chains the rest.
extern "C" fn on_sigbus(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: the kernel passes a valid siginfo to SA_SIGINFO handlers (checked for null).
    let Some(siginfo) = (unsafe { info.as_ref() }) else {
        return chain(PREVIOUS.get(), signal, info, context, true);
    };
    // Only faults raised by the kernel carry a meaningful address (not kill() or sigqueue()).
    if siginfo.si_code > 0 {
        // SAFETY: for SIGBUS raised by a fault, the kernel fills in `si_addr`.
        let addr = unsafe { siginfo.si_addr() } as usize;
        if repair(addr) {
            return;
        }
    }
    chain(PREVIOUS.get(), signal, info, context, true);
}

/// Maps a zero page over `addr` if it lies in a registered image; whether it did.
fn repair(addr: usize) -> bool {
    let Some(slot) = REGISTRY.iter().find(|slot| slot.contains(addr)) else {
        return false;
    };
    // Before the zero page exists: whoever reads its zeros sees the image marked changed.
    slot.mark_changed();
    let page_size = PAGE_SIZE.load(Ordering::Relaxed);
    let page = addr & !(page_size - 1);
    // SAFETY: the page lies inside a registered mapping (its registration outlives the
    // mapping's borrows, so it is mapped now) and is replaced by a read-only anonymous page
    // of zeros: every reference into it stays valid and reads zeros. mmap is
    // async-signal-safe; errno is restored for the interrupted code.
    let mapped = unsafe {
        let errno = *libc::__errno_location();
        let result = libc::mmap(
            page as *mut libc::c_void,
            page_size,
            libc::PROT_READ,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED,
            -1,
            0,
        );
        *libc::__errno_location() = errno;
        result != libc::MAP_FAILED
    };
    if mapped {
        REPAIRED.fetch_add(1, Ordering::Relaxed);
    }
    mapped
}
