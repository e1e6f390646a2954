//! The warning before an image changes: a read lease on the image file (`F_SETLEASE`).
//!
//! While a process holds a read lease, another process that opens the file for writing or
//! truncates it waits until the holder, told by SIGIO, gives the lease up. The SIGIO handler
//! here marks the image as changed first, so from then on readers refuse what they read, even
//! the pages still cached that the writer is about to overwrite without any fault. Renaming
//! another file over the image breaks nothing: the mapping keeps the old inode, which stays
//! intact.
//!
//! A lease needs the caller to own the file (or `CAP_LEASE`), no writer, and a filesystem
//! that supports leases; without one, [`super::sigbus`] still catches what faults.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::OnceLock;
use std::sync::atomic::Ordering;

use super::sigbus::{Disposition, ImageGuard, REGISTRY, Slot, chain, replace_disposition};

/// SIGIO's disposition before ours (other SIGIO users keep theirs).
static PREVIOUS: OnceLock<Disposition> = OnceLock::new();

/// Takes a read lease on `file`, whose mapping `guard` guards, and marks the image as changed
/// as soon as a writer breaks it. `file` must stay open as long as `guard` is registered.
pub(crate) fn watch(file: &File, guard: &ImageGuard) -> io::Result<()> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    INSTALLED
        .get_or_init(|| replace_disposition(libc::SIGIO, on_sigio, &PREVIOUS))
        .map_err(io::Error::from_raw_os_error)?;
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is open (borrowed from `file`); F_SETLEASE takes an integer argument.
    if unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) } != 0 {
        return Err(io::Error::last_os_error());
    }
    guard.watch_lease(fd);
    // A break between taking the lease and watching it found no fd to check: look once.
    check(guard.slot(), fd);
    Ok(())
}

/// The SIGIO handler: checks every watched lease, then chains (SIGIO may be someone else's).
extern "C" fn on_sigio(
    signal: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: errno is thread-local; it is restored for the interrupted code.
    let errno = unsafe { *libc::__errno_location() };
    for slot in REGISTRY.iter().filter(|slot| slot.is_active()) {
        let fd = slot.lease_fd.load(Ordering::Acquire);
        if fd >= 0 {
            check(slot, fd);
        }
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = errno };
    // SIGIO's default action is to terminate: a SIGIO with no other handler was ours.
    chain(PREVIOUS.get(), signal, info, context, false);
}

/// A lease whose break has begun reports the type it must drop to (`F_UNLCK` for a writer):
/// then the image is marked changed and the lease given up, so the writer goes ahead at once
/// instead of waiting out `lease-break-time`.
fn check(slot: &Slot, fd: libc::c_int) {
    // SAFETY: F_GETLEASE takes no argument; `fd` is the file of a registered mapping
    // (unregistered before it is closed), so at worst it was just closed (EBADF, ignored).
    if unsafe { libc::fcntl(fd, libc::F_GETLEASE) } == libc::F_RDLCK {
        return;
    }
    slot.mark_changed();
    slot.lease_fd.store(-1, Ordering::Release);
    // SAFETY: as above; F_SETLEASE takes an integer argument.
    unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_UNLCK) };
}
