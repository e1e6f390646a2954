//! What the mount service needs to place a mount inside a caller's own user and mount
//! namespaces: what a namespace file descriptor is and who owns it (the `NS_GET_*` ioctls of
//! nsfs), idmapping a detached mount (`mount_setattr`), and a forked child to do the steps
//! only a single-threaded process may (the kernel lets no thread of a multithreaded process
//! join another user namespace).

use std::io::{self, Read};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// `NS_GET_USERNS`: `_IO(0xb7, 0x1)`, a new fd of the user namespace owning a namespace.
const NS_GET_USERNS: libc::c_ulong = 0xb701;
/// `NS_GET_NSTYPE`: `_IO(0xb7, 0x3)`, the namespace's `CLONE_NEW*` flag.
const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
/// `NS_GET_OWNER_UID`: `_IO(0xb7, 0x4)`, the uid that created a user namespace.
const NS_GET_OWNER_UID: libc::c_ulong = 0xb704;

/// The kinds of namespace the service takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NamespaceKind {
    /// A user namespace (`CLONE_NEWUSER`).
    User,
    /// A mount namespace (`CLONE_NEWNS`).
    Mount,
    /// Another namespace, or not a namespace at all.
    Other,
}

/// What kind of namespace `fd` (an open `/proc/PID/ns/*` file) is.
pub(crate) fn namespace_kind(fd: BorrowedFd<'_>) -> NamespaceKind {
    // SAFETY: NS_GET_NSTYPE takes no argument and returns an int; on any other file the
    // ioctl fails (ENOTTY) without touching memory.
    let kind = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE as _) };
    match kind {
        libc::CLONE_NEWUSER => NamespaceKind::User,
        libc::CLONE_NEWNS => NamespaceKind::Mount,
        _ => NamespaceKind::Other,
    }
}

/// The uid (in this process's user namespace) that created the user namespace `fd`.
pub(crate) fn user_namespace_owner(fd: BorrowedFd<'_>) -> io::Result<u32> {
    let mut uid: libc::uid_t = 0;
    // SAFETY: NS_GET_OWNER_UID writes one uid_t through the pointer, which points at `uid`.
    let ret = unsafe {
        libc::ioctl(
            fd.as_raw_fd(),
            NS_GET_OWNER_UID as _,
            &mut uid as *mut libc::uid_t,
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(uid)
}

/// The user namespace that owns the namespace `fd`, as a new descriptor.
pub(crate) fn owning_user_namespace(fd: BorrowedFd<'_>) -> io::Result<OwnedFd> {
    // SAFETY: NS_GET_USERNS takes no argument and returns a new descriptor (or -1).
    let owner = unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_USERNS as _) };
    if owner < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the kernel just opened `owner` for us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(owner) })
}

/// `struct mount_attr` of `<linux/mount.h>`.
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `MOUNT_ATTR_IDMAP`.
const MOUNT_ATTR_IDMAP: u64 = 0x0010_0000;

/// Idmaps the detached mount `mount` with the id mapping of the user namespace `userns`
/// (`mount_setattr(MOUNT_ATTR_IDMAP)`): a file stored with uid N shows as the id N maps to
/// there. Needs CAP_SYS_ADMIN over the filesystem's user namespace.
pub(crate) fn idmap_mount(mount: BorrowedFd<'_>, userns: BorrowedFd<'_>) -> io::Result<()> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    // SAFETY: mount_setattr reads `size_of::<MountAttr>()` bytes of `attr`, laid out as the
    // kernel's `struct mount_attr` (four u64, `repr(C)`); the path is an empty C string.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            mount.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            size_of::<MountAttr>(),
        )
    };
    if ret != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// What a forked child tells its parent: at most [`ChildReport::CAPACITY`] bytes, kept on
/// the stack so that the child never allocates.
pub(crate) struct ChildReport {
    bytes: [u8; ChildReport::CAPACITY],
    len: usize,
}

impl ChildReport {
    /// The most a child reports.
    pub(crate) const CAPACITY: usize = 512;

    /// Appends `bytes` (cut at the capacity).
    pub(crate) fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(Self::CAPACITY - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }
}

/// Runs `child` in a forked copy of this process, which exits once it returns, and waits at
/// most `timeout` for it (then kills it). Returns what it reported: nothing when it
/// succeeded. The child must only make system calls: it must neither allocate nor take a
/// lock (another thread may have held it at the fork), nor resolve a path it was not meant
/// to (its namespaces may change).
pub(crate) fn in_forked_child(
    timeout: Duration,
    child: impl FnOnce(&mut ChildReport),
) -> io::Result<Vec<u8>> {
    let (mut from_child, to_child) = UnixStream::pair()?;
    let deadline = Instant::now() + timeout;
    // SAFETY: the child runs `child`, which (as documented above) only makes system calls on
    // memory prepared before the fork, writes its report into the socket with one system
    // call and leaves with `_exit`, which runs no destructor, atexit handler or stdio flush
    // of the parent's state; a panic is caught before it can unwind into the parent's frames.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Err(io::Error::last_os_error());
    }
    if pid == 0 {
        let mut report = ChildReport {
            bytes: [0; ChildReport::CAPACITY],
            len: 0,
        };
        let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| child(&mut report)));
        if ran.is_err() {
            report.push(b"\xffthe child panicked");
        }
        let written = rustix::io::write(&to_child, &report.bytes[..report.len]);
        let status = i32::from(written.is_err() || report.len > 0);
        // SAFETY: ends the forked child at once, as intended.
        unsafe { libc::_exit(status) };
    }
    drop(to_child);
    let pid = rustix::process::Pid::from_raw(pid).expect("fork returned a pid");
    let status = wait_until(pid, deadline)?;
    // The child wrote its report before it exited. Other children forked meanwhile may hold
    // copies of its end of the socket, so the report ends where the buffered bytes do, not at
    // an end of file.
    from_child.set_nonblocking(true)?;
    let mut report = Vec::new();
    let mut buf = [0u8; ChildReport::CAPACITY];
    loop {
        match from_child.read(&mut buf) {
            Ok(0) => break,
            Ok(n) if report.len() + n <= ChildReport::CAPACITY => {
                report.extend_from_slice(&buf[..n])
            }
            Ok(_) => return Err(io::Error::other("the mount's child reported too much")),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    if status.exit_status() == Some(0) || !report.is_empty() {
        return Ok(report);
    }
    Err(io::Error::other(match status.terminating_signal() {
        Some(signal) => format!("the mount's child process was killed by signal {signal}"),
        None => "the mount's child process failed without a report".to_string(),
    }))
}

/// Waits for the child `pid` to exit, at most until `deadline` (then kills it).
fn wait_until(
    pid: rustix::process::Pid,
    deadline: Instant,
) -> io::Result<rustix::process::WaitStatus> {
    use rustix::process::{Signal, WaitOptions, kill_process, waitpid};
    loop {
        if let Some((_, status)) = waitpid(Some(pid), WaitOptions::NOHANG)? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = kill_process(pid, Signal::KILL);
            waitpid(Some(pid), WaitOptions::empty())?;
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                "the mount's child process did not finish in time",
            ));
        }
        // The child takes a few milliseconds; this adds at most a fifth of one.
        std::thread::sleep(Duration::from_micros(200));
    }
}
