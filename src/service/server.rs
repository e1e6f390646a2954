//! `lazycfs service`: the root daemon behind `lazycfs mount --mode service`.
//!
//! Each connection carries one request (see [`super`]) and is served by a thread of its own,
//! up to [`Limits::max_in_flight`] at a time. For a mount the service:
//! 1. identifies the caller (`SO_PEERCRED`, `SO_PEERGROUPS`);
//! 2. checks the mountpoint fd: a directory, owned by the caller, empty (as `fusermount3`);
//! 3. reads the caller's image fd (at most [`Limits::max_image_bytes`]) into its own memory,
//!    refusing it if its size or times changed meanwhile, and checks `--digest` on those bytes;
//! 4. decodes that copy, refuses it if `lazycfs check` would, and writes a fresh image from its
//!    dump with lazycfs's writer into a sealed memfd (kept in a cache keyed by the caller's
//!    image's fs-verity digest, so the same content is rewritten once);
//! 5. mounts the memfd on kernel EROFS, and builds the overlayfs (trusted xattrs, basedir fd as
//!    data-only layer, `ro,nosuid,nodev`) on a thread that runs with the caller's uid, gid and
//!    groups and no capability but `CAP_SYS_ADMIN`: overlayfs reads its layers with the
//!    credentials of whoever created it, so the basedir is read with the caller's rights;
//! 6. attaches the overlay on the mountpoint fd.
//!
//! For a caller in its own namespaces ([`Placement::OwnNamespaces`]) step 2 checks that the
//! caller created the user namespace and that it owns the mount namespace, step 4 writes the
//! overlay's xattrs as `user.overlay.*`, and steps 5 and 6 happen in a forked child inside
//! those namespaces (see `own_namespaces`).
//!
//! Mounts carry the source `lazycfs:uid=UID`, which `umount` and the per-user limit read back
//! from `/proc/self/mountinfo`; the service keeps no state about them, so it may restart.

use std::collections::VecDeque;
use std::io::{self, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::fs::{FileType, Mode, OFlags};
use rustix::mount::MountAttrFlags;
use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, ReturnFlags};

use super::own_namespaces::OwnNamespaceMount;
use super::{MAX_FDS, MAX_REQUEST_BYTES, Placement, Request, mount_source};
use crate::create::verity::FsVerityHasher;
use crate::create::{Format, hex};
use crate::erofs::Image;
use crate::mount::newmount::{DetachedMount, FsBuilder};

/// What one caller may cost the service.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Limits {
    /// Largest image accepted, in bytes (default 1 GiB).
    pub max_image_bytes: u64,
    /// Time a caller has to send its whole request (default 10 s).
    pub request_timeout: Duration,
    /// Requests served at once; more connections are refused at once (default 16).
    pub max_in_flight: usize,
    /// Service mounts one user may have at once (default 64).
    pub max_mounts_per_user: usize,
    /// Bytes of rewritten images kept for reuse (default 256 MiB; 0: no cache).
    pub cache_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_image_bytes: 1 << 30,
            request_timeout: Duration::from_secs(10),
            max_in_flight: 16,
            max_mounts_per_user: 64,
            cache_bytes: 256 << 20,
        }
    }
}

/// Why the service refused a request: the line the caller reads after `error: `.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The request is malformed, incomplete, or came with the wrong file descriptors.
    #[error("bad request: {0}")]
    Request(String),
    /// The caller did not send its whole request in time.
    #[error("request not received within {0} s")]
    Timeout(u64),
    /// Too many requests are being served.
    #[error("busy: {0} requests in flight (--max-requests)")]
    Busy(usize),
    /// The caller has as many service mounts as it may.
    #[error("uid {uid} has {limit} service mounts already (--max-mounts-per-user)")]
    TooManyMounts {
        /// The caller.
        uid: u32,
        /// The limit.
        limit: usize,
    },
    /// A file descriptor is not of the kind expected.
    #[error("{what}: {why}")]
    BadFd {
        /// Which one (`image`, `basedir`, `mountpoint`).
        what: &'static str,
        /// What is wrong with it.
        why: String,
    },
    /// The image is larger than the limit.
    #[error("image: {size} bytes, more than the {limit} allowed (--max-image-size)")]
    ImageTooBig {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// The image changed while the service read it.
    #[error("image: changed while the service read it")]
    ImageChanged,
    /// Reading the image failed.
    #[error("image: {0}")]
    ImageRead(io::Error),
    /// The image is corrupt or hostile (what `lazycfs check` says), or cannot be rewritten.
    #[error("image: {0}")]
    BadImage(String),
    /// The image's fs-verity digest is not the one asked for.
    #[error("image: fs-verity digest {actual} differs from --digest {expected}")]
    Digest {
        /// The image's.
        actual: String,
        /// The request's.
        expected: String,
    },
    /// The fd of an unmount request is not the root of a service mount of the caller.
    #[error("mountpoint: {0}")]
    NotYours(String),
    /// The kernel refused a step of the mount.
    #[error("{0}")]
    Kernel(io::Error),
}

/// The caller, as the kernel saw it connect.
#[derive(Debug, Clone)]
struct Caller {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
    pid: i32,
    /// The capabilities that bypass file permissions (`CAP_DAC_OVERRIDE`,
    /// `CAP_DAC_READ_SEARCH`) the caller has in the initial user namespace: the overlay reads
    /// the basedir with them too, so that root gets the rootful mount.
    file_caps: rustix::thread::CapabilitySet,
}

/// State shared by the request threads.
struct Shared {
    limits: Limits,
    in_flight: AtomicUsize,
    cache: Mutex<Cache>,
}

/// The socket to serve on: the one systemd passed (socket activation, `LISTEN_FDS`) if any,
/// else a new one bound at `path` (its directory created, a stale socket file replaced), which
/// every user may connect to: the service trusts nothing a caller sends but file descriptors.
pub fn listener(path: &Path) -> io::Result<UnixListener> {
    let mut passed = sd_notify::listen_fds()?;
    if let Some(fd) = passed.next() {
        let fd = crate::sys::adopt_listen_fd(fd)?;
        for extra in passed {
            drop(crate::sys::adopt_listen_fd(extra));
        }
        let listener = UnixListener::from(fd);
        // systemd hands over a listening socket; make sure it is one that can accept.
        listener.local_addr()?;
        return Ok(listener);
    }
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => std::fs::remove_file(path)?,
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket", path.display()),
            ));
        }
        Err(_) => {}
    }
    let listener = UnixListener::bind(path)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o666))?;
    Ok(listener)
}

/// Serves requests arriving on `listener` until `stop` is set (checked a few times a second).
pub fn serve(listener: UnixListener, limits: Limits, stop: &AtomicBool) -> io::Result<()> {
    // accept() honours SO_RCVTIMEO: wake up now and then to look at `stop`.
    rustix::net::sockopt::set_socket_timeout(
        &listener,
        rustix::net::sockopt::Timeout::Recv,
        Some(Duration::from_millis(200)),
    )?;
    let shared = Arc::new(Shared {
        cache: Mutex::new(Cache::new(limits.cache_bytes)),
        limits,
        in_flight: AtomicUsize::new(0),
    });
    while !stop.load(Ordering::Relaxed) {
        let stream = match listener.accept() {
            Ok((stream, _)) => stream,
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
                ) =>
            {
                continue;
            }
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::CONNABORTED.raw_os_error()) => {
                continue;
            }
            Err(e) => return Err(e),
        };
        let limit = shared.limits.max_in_flight;
        if shared.in_flight.fetch_add(1, Ordering::AcqRel) >= limit {
            shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            log::info!("refused a connection: {limit} requests in flight");
            answer(&stream, Err(Refusal::Busy(limit)));
            continue;
        }
        let shared = shared.clone();
        let spawned = std::thread::Builder::new()
            .name("request".into())
            .spawn(move || {
                let result = handle(&stream, &shared);
                answer(&stream, result);
                shared.in_flight.fetch_sub(1, Ordering::AcqRel);
            });
        if let Err(e) = spawned {
            log::warn!("cannot start a request thread: {e}");
        }
    }
    Ok(())
}

/// Writes the one-line answer (best effort: a caller that left gets none).
fn answer(mut stream: &UnixStream, result: Result<(), Refusal>) {
    let line = match result {
        Ok(()) => "ok\n".to_string(),
        Err(refusal) => format!("error: {refusal}\n"),
    };
    let _ = stream.set_write_timeout(Some(Duration::from_secs(1)));
    let _ = stream.write_all(line.as_bytes());
}

fn handle(stream: &UnixStream, shared: &Shared) -> Result<(), Refusal> {
    let caller = caller(stream).map_err(|e| Refusal::Request(format!("peer credentials: {e}")))?;
    let deadline = Instant::now() + shared.limits.request_timeout;
    let (request, fds) = receive(stream, deadline, &shared.limits)?;
    let result = match &request {
        Request::Mount {
            digest,
            require_verity,
            placement,
        } => mount(&caller, &fds, *digest, *require_verity, *placement, shared),
        Request::Umount => unmount(&caller, fds[0].as_fd()).map(|()| ""),
    };
    match &result {
        Ok(how) => log::info!(
            "uid {} (pid {}): {} done{how}",
            caller.uid,
            caller.pid,
            request_name(&request)
        ),
        Err(refusal) => log::info!(
            "uid {} (pid {}): {} refused: {refusal}",
            caller.uid,
            caller.pid,
            request_name(&request)
        ),
    }
    result.map(drop)
}

fn request_name(request: &Request) -> &'static str {
    match request {
        Request::Mount { .. } => "mount",
        Request::Umount => "umount",
    }
}

fn caller(stream: &UnixStream) -> io::Result<Caller> {
    let cred = rustix::net::sockopt::socket_peercred(stream)?;
    let pid = cred.pid.as_raw_nonzero().get();
    Ok(Caller {
        uid: cred.uid.as_raw(),
        gid: cred.gid.as_raw(),
        groups: crate::sys::peer_groups(stream)?,
        pid,
        file_caps: file_capabilities(stream, pid).unwrap_or_else(|e| {
            log::debug!("pid {pid}: no capabilities granted: {e}");
            rustix::thread::CapabilitySet::empty()
        }),
    })
}

/// The file-permission capabilities the peer process has in the initial user namespace
/// (none if it is in another one). Read from `/proc/PID`, then confirmed to be the peer's:
/// its pidfd (`SO_PEERPIDFD`) still names a running process with that pid, so the pid was
/// not reused meanwhile.
fn file_capabilities(stream: &UnixStream, pid: i32) -> io::Result<rustix::thread::CapabilitySet> {
    use rustix::thread::CapabilitySet;
    use std::os::unix::fs::MetadataExt;
    let pidfd = crate::sys::peer_pidfd(stream)?;
    let user_ns = std::fs::metadata(format!("/proc/{pid}/ns/user"))?.ino();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let alive = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd()))?
        .lines()
        .any(|line| {
            line.split_once(':')
                .is_some_and(|(k, v)| k == "Pid" && v.trim() == pid.to_string())
        });
    if !alive {
        return Err(io::Error::other("the caller exited"));
    }
    if user_ns != crate::mount::mode::PROC_USER_INIT_INO {
        return Ok(CapabilitySet::empty());
    }
    let effective = status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or_else(|| io::Error::other("no CapEff in /proc/PID/status"))?;
    Ok(CapabilitySet::from_bits_retain(effective)
        & (CapabilitySet::DAC_OVERRIDE | CapabilitySet::DAC_READ_SEARCH))
}

/// Reads one request and its file descriptors, by `deadline`.
fn receive(
    stream: &UnixStream,
    deadline: Instant,
    limits: &Limits,
) -> Result<(Request, Vec<OwnedFd>), Refusal> {
    let mut text = Vec::new();
    let mut fds: Vec<OwnedFd> = Vec::new();
    let timeout = || Refusal::Timeout(limits.request_timeout.as_secs().max(1));
    let end = loop {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(timeout());
        }
        stream
            .set_read_timeout(Some(remaining))
            .map_err(|e| Refusal::Request(e.to_string()))?;
        let mut buf = [0u8; MAX_REQUEST_BYTES];
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_FDS))];
        let mut ancillary = RecvAncillaryBuffer::new(&mut space);
        let received = match rustix::net::recvmsg(
            stream,
            &mut [IoSliceMut::new(&mut buf)],
            &mut ancillary,
            RecvFlags::CMSG_CLOEXEC,
        ) {
            Ok(received) => received,
            Err(rustix::io::Errno::AGAIN | rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Refusal::Request(e.to_string())),
        };
        for message in ancillary.drain() {
            if let RecvAncillaryMessage::ScmRights(received) = message {
                fds.extend(received);
            }
        }
        if received.flags.contains(ReturnFlags::CTRUNC) {
            return Err(Refusal::Request(format!(
                "more than {MAX_FDS} file descriptors"
            )));
        }
        if received.bytes == 0 {
            return Err(Refusal::Request(
                "connection closed before the request was complete".into(),
            ));
        }
        text.extend_from_slice(&buf[..received.bytes]);
        if let Some(end) = text.windows(2).position(|w| w == b"\n\n") {
            break end;
        }
        if text.len() >= MAX_REQUEST_BYTES {
            return Err(Refusal::Request(format!(
                "longer than {MAX_REQUEST_BYTES} bytes"
            )));
        }
    };
    if end + 2 != text.len() {
        return Err(Refusal::Request("text after the request's end".into()));
    }
    let request = Request::decode(&text[..end]).map_err(Refusal::Request)?;
    if fds.len() != request.fds() {
        return Err(Refusal::Request(format!(
            "{} file descriptors, {} expected",
            fds.len(),
            request.fds()
        )));
    }
    Ok((request, fds))
}

/// Mounts for `caller`; how the image was had, for the log.
fn mount(
    caller: &Caller,
    fds: &[OwnedFd],
    digest: Option<[u8; 32]>,
    require_verity: bool,
    placement: Placement,
    shared: &Shared,
) -> Result<&'static str, Refusal> {
    let (image, basedir, mountpoint) = (&fds[0], &fds[1], &fds[2]);
    match placement {
        Placement::Directory => {
            check_mountpoint(caller, mountpoint.as_fd())?;
            check_directory("basedir", basedir.as_fd())?;
            let limit = shared.limits.max_mounts_per_user;
            if mounts_of(caller.uid) >= limit {
                return Err(Refusal::TooManyMounts {
                    uid: caller.uid,
                    limit,
                });
            }
        }
        Placement::OwnNamespaces => {
            check_namespaces(caller, fds[3].as_fd(), fds[4].as_fd())?;
            check_directory("mountpoint", mountpoint.as_fd())?;
            check_directory("basedir", basedir.as_fd())?;
        }
    }
    let (memfd, how) = rewritten_image(caller, image.as_fd(), digest, placement, shared)?;
    // File-backed EROFS refuses a memfd (tmpfs files have no `read_folio`): a loop device
    // over it, which goes away with the mount (autoclear).
    let (device, _device_fd) = crate::sys::loop_device(memfd.as_fd())
        .map_err(|e| Refusal::Kernel(io::Error::new(e.kind(), format!("loop device: {e}"))))?;
    let erofs = FsBuilder::open("erofs").map_err(Refusal::Kernel)?;
    // Read-only superblock: the block device is opened read-only (it is one).
    erofs
        .flag("ro")
        .and_then(|e| e.string("source", &device))
        .map_err(Refusal::Kernel)?;
    let erofs = erofs.create().map_err(Refusal::Kernel)?;
    match placement {
        Placement::Directory => {
            let erofs = erofs.mount(SERVICE_MOUNT_ATTRS).map_err(Refusal::Kernel)?;
            let identity = CallerIdentity::of(caller);
            let overlay = as_caller(&identity, || {
                overlay(caller.uid, erofs.as_fd(), basedir.as_fd(), require_verity)
            })
            .map_err(Refusal::Kernel)?;
            overlay.attach_to(mountpoint.as_fd()).map_err(|e| {
                Refusal::Kernel(io::Error::new(
                    e.kind(),
                    format!("attaching the mount on the mountpoint: {e}"),
                ))
            })?;
        }
        Placement::OwnNamespaces => {
            let source = std::ffi::CString::new(mount_source(caller.uid))
                .expect("a mount source has no NUL");
            let own = OwnNamespaceMount {
                erofs: erofs.as_fd(),
                basedir: basedir.as_fd(),
                mountpoint: mountpoint.as_fd(),
                user_ns: fds[3].as_fd(),
                mount_ns: fds[4].as_fd(),
                identity: CallerIdentity::of(caller),
                source: &source,
                require_verity,
            };
            own.place(shared.limits.request_timeout)?;
        }
    }
    Ok(how)
}

/// The sealed memfd of the image the kernel will mount for this request (from the cache, or
/// read, checked and rewritten now); how it was had, for the log.
fn rewritten_image(
    caller: &Caller,
    image: BorrowedFd<'_>,
    digest: Option<[u8; 32]>,
    placement: Placement,
    shared: &Shared,
) -> Result<(Arc<OwnedFd>, &'static str), Refusal> {
    let cache = || shared.cache.lock().unwrap_or_else(|e| e.into_inner());
    // An image this caller had mounted before, unchanged since (same inode, size and times:
    // any write changes its ctime), is not read again.
    let identity = image_identity(caller, image)?;
    let known = cache().known(&identity, placement);
    let (key, bytes) = match known {
        Some(key) => (key, None),
        None => {
            let (bytes, read_identity) = read_image(caller, image, shared.limits.max_image_bytes)?;
            let key = FsVerityHasher::digest(&bytes);
            cache().remember(read_identity, key);
            (key, Some(bytes))
        }
    };
    if let Some(expected) = digest {
        if expected != key {
            return Err(Refusal::Digest {
                actual: hex(&key),
                expected: hex(&expected),
            });
        }
    }
    let cached = cache().get(&(key, placement));
    let how = match (&bytes, cached.is_some()) {
        (None, true) => " (image unchanged since read: not read again, rewrite from the cache)",
        (Some(_), true) => " (image rewritten earlier, from the cache)",
        (_, false) => " (image rewritten)",
    };
    if let Some(memfd) = cached {
        return Ok((memfd, how));
    }
    let bytes = match bytes {
        Some(bytes) => bytes,
        // Known, but its rewrite has left the cache since.
        None => read_image(caller, image, shared.limits.max_image_bytes)?.0,
    };
    let rewritten = rewrite(bytes, placement)?;
    let memfd = Arc::new(sealed_memfd(&rewritten).map_err(Refusal::Kernel)?);
    cache().insert((key, placement), memfd.clone(), rewritten.len() as u64);
    Ok((memfd, how))
}

/// Every service mount is read-only, `nosuid` and `nodev`.
pub(super) const SERVICE_MOUNT_ATTRS: MountAttrFlags = MountAttrFlags::MOUNT_ATTR_RDONLY
    .union(MountAttrFlags::MOUNT_ATTR_NOSUID)
    .union(MountAttrFlags::MOUNT_ATTR_NODEV);

fn bad_fd(what: &'static str, why: impl ToString) -> Refusal {
    Refusal::BadFd {
        what,
        why: why.to_string(),
    }
}

/// The mountpoint must be a directory the caller owns, and empty (as `fusermount3` wants it).
fn check_mountpoint(caller: &Caller, fd: BorrowedFd<'_>) -> Result<(), Refusal> {
    let stat = check_directory("mountpoint", fd)?;
    if stat.st_uid != caller.uid {
        return Err(bad_fd(
            "mountpoint",
            format!("owned by uid {}, not by the caller", stat.st_uid),
        ));
    }
    let dir = rustix::fs::openat(
        fd,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| bad_fd("mountpoint", e))?;
    let mut entries = rustix::fs::Dir::read_from(&dir).map_err(|e| bad_fd("mountpoint", e))?;
    for entry in entries.by_ref() {
        let entry = entry.map_err(|e| bad_fd("mountpoint", e))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            return Err(bad_fd("mountpoint", "not empty"));
        }
    }
    Ok(())
}

/// `fd` must be open on a directory; its status.
fn check_directory(what: &'static str, fd: BorrowedFd<'_>) -> Result<rustix::fs::Stat, Refusal> {
    let stat = rustix::fs::fstat(fd).map_err(|e| bad_fd(what, e))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::Directory {
        return Err(bad_fd(what, "not a directory"));
    }
    Ok(stat)
}

/// For a mount in the caller's own namespaces: `user_ns` is a user namespace the caller
/// created (not the service's), and `mount_ns` a mount namespace owned by it. Both hold for
/// every namespace `unshare -Urm`, `podman unshare` or `lazycfs run` makes.
fn check_namespaces(
    caller: &Caller,
    user_ns: BorrowedFd<'_>,
    mount_ns: BorrowedFd<'_>,
) -> Result<(), Refusal> {
    use crate::sys::namespaces::{
        NamespaceKind, namespace_kind, owning_user_namespace, user_namespace_owner,
    };
    const USER_NS: &str = "user namespace";
    const MOUNT_NS: &str = "mount namespace";
    if namespace_kind(user_ns) != NamespaceKind::User {
        return Err(bad_fd(USER_NS, "not a user namespace"));
    }
    let id = |fd: BorrowedFd<'_>, what| {
        rustix::fs::fstat(fd)
            .map(|s| (s.st_dev, s.st_ino))
            .map_err(|e| bad_fd(what, e))
    };
    let user = id(user_ns, USER_NS)?;
    let own = std::fs::metadata("/proc/self/ns/user")
        .map(|m| (m.dev(), m.ino()))
        .map_err(|e| {
            Refusal::Kernel(io::Error::new(e.kind(), format!("/proc/self/ns/user: {e}")))
        })?;
    if user == own {
        return Err(bad_fd(
            USER_NS,
            "the service's own, not one the caller created",
        ));
    }
    let owner = user_namespace_owner(user_ns).map_err(|e| bad_fd(USER_NS, e))?;
    if owner != caller.uid {
        return Err(bad_fd(
            USER_NS,
            format!("created by uid {owner}, not by the caller"),
        ));
    }
    if namespace_kind(mount_ns) != NamespaceKind::Mount {
        return Err(bad_fd(MOUNT_NS, "not a mount namespace"));
    }
    let owning = owning_user_namespace(mount_ns).map_err(|e| bad_fd(MOUNT_NS, e))?;
    if id(owning.as_fd(), MOUNT_NS)? != user {
        return Err(bad_fd(MOUNT_NS, "not owned by the caller's user namespace"));
    }
    Ok(())
}

/// What identifies an image file's content for one caller without reading it: the caller,
/// the file (device, inode) and its size, modification and change times. Any write to the
/// file changes its ctime, which no caller can set. Bound to the caller, so that another
/// user's file that reuses an inode number never maps to this caller's image.
type Identity = (u32, u64, u64, i64, i64, u64, i64, u64);

fn identity_of(caller: &Caller, stat: &rustix::fs::Stat) -> Identity {
    (
        caller.uid,
        stat.st_dev,
        stat.st_ino,
        stat.st_size,
        stat.st_mtime,
        stat.st_mtime_nsec,
        stat.st_ctime,
        stat.st_ctime_nsec,
    )
}

/// Checks the caller's image fd (a regular file open for reading) and returns its identity.
fn image_identity(caller: &Caller, fd: BorrowedFd<'_>) -> Result<Identity, Refusal> {
    let flags = rustix::fs::fcntl_getfl(fd).map_err(|e| bad_fd("image", e))?;
    if flags.contains(OFlags::PATH) || (flags & OFlags::RWMODE) == OFlags::WRONLY {
        return Err(bad_fd("image", "not open for reading"));
    }
    let stat = rustix::fs::fstat(fd).map_err(|e| bad_fd("image", e))?;
    if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
        return Err(bad_fd("image", "not a regular file"));
    }
    Ok(identity_of(caller, &stat))
}

/// The caller's image, read into memory: a regular file open for reading, at most `limit`
/// bytes, whose size and times did not change while it was read; and its identity then.
fn read_image(
    caller: &Caller,
    fd: BorrowedFd<'_>,
    limit: u64,
) -> Result<(Vec<u8>, Identity), Refusal> {
    image_identity(caller, fd)?;
    let before = rustix::fs::fstat(fd).map_err(|e| bad_fd("image", e))?;
    let size = before.st_size as u64;
    if size > limit {
        return Err(Refusal::ImageTooBig { size, limit });
    }
    let mut bytes = vec![0u8; size as usize];
    let mut done = 0;
    while done < bytes.len() {
        match rustix::io::pread(fd, &mut bytes[done..], done as u64) {
            Ok(0) => return Err(Refusal::ImageChanged),
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(Refusal::ImageRead(e.into())),
        }
    }
    let mut probe = [0u8; 1];
    let longer =
        rustix::io::pread(fd, &mut probe, size).map_err(|e| Refusal::ImageRead(e.into()))?;
    let after = rustix::fs::fstat(fd).map_err(|e| bad_fd("image", e))?;
    let times = |s: &rustix::fs::Stat| {
        (
            s.st_size,
            s.st_mtime,
            s.st_mtime_nsec,
            s.st_ctime,
            s.st_ctime_nsec,
        )
    };
    if longer != 0 || times(&before) != times(&after) {
        return Err(Refusal::ImageChanged);
    }
    Ok((bytes, identity_of(caller, &before)))
}

/// The image the kernel will parse: decoded from the caller's bytes, checked as `lazycfs
/// check` does, dumped and written afresh by lazycfs's writer in the same format version.
/// For a mount in the caller's own namespaces the overlay is unprivileged (`userxattr`), and
/// the image carries its xattrs as `user.overlay.*`.
fn rewrite(bytes: Vec<u8>, placement: Placement) -> Result<Vec<u8>, Refusal> {
    let bad = |e: &dyn std::fmt::Display| Refusal::BadImage(e.to_string());
    let image = Image::from_bytes(bytes).map_err(|e| bad(&e))?;
    crate::check::check(&image).map_err(|e| bad(&e))?;
    // The caller's format version: the versions differ in what the kernel shows (e.g. V1
    // marks directories holding escaped whiteouts opaque, V2 has no nanoseconds).
    let format = match image.composefs().map(|info| info.composefs_version) {
        Some(0) => Format::V0,
        Some(2) => Format::V2,
        _ => Format::V1,
    };
    let mut dump = Vec::new();
    crate::dump::dump(&image, &mut dump).map_err(|e| bad(&e))?;
    drop(image);
    let write = match placement {
        Placement::Directory => crate::create::image_from_dump,
        Placement::OwnNamespaces => crate::create::user_xattr_image_from_dump,
    };
    write(&dump, "the image's dump", format).map_err(|e| bad(&e))
}

/// A memfd holding `bytes`, sealed against any change.
fn sealed_memfd(bytes: &[u8]) -> io::Result<OwnedFd> {
    use rustix::fs::{MemfdFlags, SealFlags};
    let fd = rustix::fs::memfd_create(
        "lazycfs-image",
        MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING,
    )?;
    let mut file = std::fs::File::from(fd);
    file.write_all(bytes)?;
    rustix::fs::fcntl_add_seals(
        &file,
        SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE | SealFlags::SEAL,
    )?;
    Ok(file.into())
}

/// Runs `f` on a thread of its own with the caller's identity (see [`CallerIdentity`]).
/// Credentials belong to a thread: the thread ends with `f`, and no other thread of the
/// service is affected.
fn as_caller<T: Send>(
    identity: &CallerIdentity,
    f: impl FnOnce() -> io::Result<T> + Send,
) -> io::Result<T> {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                identity
                    .take()
                    .map_err(|e| io::Error::other(format!("taking the caller's identity: {e}")))?;
                f()
            })
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the mount thread panicked")))
    })
}

/// The credentials the service makes a caller's overlay with: the caller's effective uid
/// and gid, its groups, and no capability but `CAP_SYS_ADMIN` (to mount) and the caller's own
/// file-permission capabilities (see [`Caller::file_caps`]). Prepared in full beforehand, so
/// that taking them allocates nothing (a forked child takes them too).
pub(super) struct CallerIdentity {
    uid: rustix::process::Uid,
    gid: rustix::process::Gid,
    groups: Vec<rustix::process::Gid>,
    caps: rustix::thread::CapabilitySet,
}

impl CallerIdentity {
    fn of(caller: &Caller) -> CallerIdentity {
        use rustix::process::{Gid, Uid};
        CallerIdentity {
            uid: Uid::from_raw(caller.uid),
            gid: Gid::from_raw(caller.gid),
            groups: caller.groups.iter().map(|&g| Gid::from_raw(g)).collect(),
            caps: rustix::thread::CapabilitySet::SYS_ADMIN | caller.file_caps,
        }
    }

    /// Makes the calling thread the caller. Effective (and so filesystem) ids are the
    /// caller's: overlayfs checks its layers against those. Real and saved ids stay root, so
    /// that the caller may neither signal this thread (a SIGKILL would end the service) nor
    /// ptrace it while it runs as them; with a root id left the permitted set survives, and
    /// only the capabilities above are kept of it.
    pub(super) fn take(&self) -> io::Result<()> {
        use rustix::process::{Gid, Uid};
        use rustix::thread::{CapabilitySet, CapabilitySets};
        rustix::thread::set_thread_groups(&self.groups)?;
        rustix::thread::set_thread_res_gid(Gid::ROOT, self.gid, Gid::ROOT)?;
        rustix::thread::set_thread_res_uid(Uid::ROOT, self.uid, Uid::ROOT)?;
        rustix::thread::set_capabilities(
            None,
            CapabilitySets {
                effective: self.caps,
                permitted: self.caps,
                inheritable: CapabilitySet::empty(),
            },
        )?;
        Ok(())
    }
}

/// The overlayfs of a composefs mount over the EROFS mount `lower`, `basedir` as data-only
/// layer; made with the current thread's credentials, which overlayfs keeps to read its layers.
fn overlay(
    uid: u32,
    lower: BorrowedFd<'_>,
    basedir: BorrowedFd<'_>,
    require_verity: bool,
) -> io::Result<DetachedMount> {
    let overlay = FsBuilder::open("overlay")?;
    overlay
        .string("source", mount_source(uid))?
        .string("metacopy", "on")?
        .string("redirect_dir", "on")?
        .fd("lowerdir+", lower)?
        .fd("datadir+", basedir)?;
    if require_verity {
        overlay.string("verity", "require")?;
    }
    overlay.mount(
        MountAttrFlags::MOUNT_ATTR_RDONLY
            | MountAttrFlags::MOUNT_ATTR_NOSUID
            | MountAttrFlags::MOUNT_ATTR_NODEV,
    )
}

/// One line of `/proc/self/mountinfo`: mount id, filesystem type, source.
fn mounts() -> Vec<(u64, String, String)> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    text.lines()
        .filter_map(|line| {
            let id = line.split(' ').next()?.parse().ok()?;
            let (_, rest) = line.split_once(" - ")?;
            let mut fields = rest.split(' ');
            Some((id, fields.next()?.to_string(), fields.next()?.to_string()))
        })
        .collect()
}

/// How many service mounts `uid` has in the service's mount namespace.
fn mounts_of(uid: u32) -> usize {
    let source = mount_source(uid);
    mounts()
        .iter()
        .filter(|(_, fs, s)| fs == "overlay" && *s == source)
        .count()
}

/// Unmounts the service mount of the caller whose root `fd` is open on (detached: it goes
/// once its last user leaves, as `umount -l`).
fn unmount(caller: &Caller, fd: BorrowedFd<'_>) -> Result<(), Refusal> {
    use rustix::fs::{AtFlags, StatxFlags};
    let mount_id = |fd: BorrowedFd<'_>| {
        rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID)
            .map(|s| s.stx_mnt_id)
            .map_err(|e| Refusal::NotYours(e.to_string()))
    };
    let id = mount_id(fd)?;
    let parent = rustix::fs::openat(fd, "..", OFlags::PATH | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| Refusal::NotYours(e.to_string()))?;
    if mount_id(parent.as_fd())? == id {
        return Err(Refusal::NotYours("not the root of a mount".into()));
    }
    let source = mount_source(caller.uid);
    let ours = mounts()
        .iter()
        .any(|(i, fs, s)| *i == id && fs == "overlay" && *s == source);
    if !ours {
        return Err(Refusal::NotYours(
            "not a mount the service made for this user".into(),
        ));
    }
    rustix::mount::unmount(
        format!("/proc/self/fd/{}", fd.as_raw_fd()),
        rustix::mount::UnmountFlags::DETACH,
    )
    .map_err(|e| Refusal::Kernel(e.into()))
}

/// Rewritten images by the fs-verity digest of the caller's image, oldest first, up to a
/// number of bytes.
struct Cache {
    entries: VecDeque<(CacheKey, Arc<OwnedFd>, u64)>,
    bytes: u64,
    limit: u64,
    /// The digests of images read before, by [`Identity`] (at most [`MAX_KNOWN`]).
    known: std::collections::HashMap<Identity, [u8; 32]>,
}

/// A rewrite: the fs-verity digest of the caller's image, and the placement it is for (which
/// decides the overlay xattrs' namespace).
type CacheKey = ([u8; 32], Placement);

/// Identities remembered; the memory is forgotten whole when full.
const MAX_KNOWN: usize = 4096;

impl Cache {
    fn new(limit: u64) -> Cache {
        Cache {
            entries: VecDeque::new(),
            bytes: 0,
            limit,
            known: std::collections::HashMap::new(),
        }
    }

    /// The digest of the image with this identity, if it was read before and its rewrite is
    /// still cached.
    fn known(&self, identity: &Identity, placement: Placement) -> Option<[u8; 32]> {
        self.known
            .get(identity)
            .copied()
            .filter(|digest| self.get(&(*digest, placement)).is_some())
    }

    fn remember(&mut self, identity: Identity, key: [u8; 32]) {
        if self.known.len() >= MAX_KNOWN {
            self.known.clear();
        }
        self.known.insert(identity, key);
    }

    fn get(&self, key: &CacheKey) -> Option<Arc<OwnedFd>> {
        self.entries
            .iter()
            .find(|(k, _, _)| k == key)
            .map(|(_, fd, _)| fd.clone())
    }

    fn insert(&mut self, key: CacheKey, fd: Arc<OwnedFd>, size: u64) {
        if size > self.limit || self.get(&key).is_some() {
            return;
        }
        while self.bytes + size > self.limit {
            let Some((_, _, old)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old;
        }
        self.entries.push_back((key, fd, size));
        self.bytes += size;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fd() -> Arc<OwnedFd> {
        Arc::new(rustix::fs::memfd_create("test", rustix::fs::MemfdFlags::CLOEXEC).unwrap())
    }

    #[test]
    fn cache_keeps_the_newest_within_its_bytes() {
        let mut cache = Cache::new(100);
        cache.insert(([1; 32], Placement::Directory), fd(), 60);
        cache.insert(([2; 32], Placement::Directory), fd(), 30);
        assert!(
            cache.get(&([1; 32], Placement::Directory)).is_some()
                && cache.get(&([2; 32], Placement::Directory)).is_some()
        );
        // 60 + 30 + 20 > 100: the oldest goes.
        cache.insert(([3; 32], Placement::Directory), fd(), 20);
        assert!(cache.get(&([1; 32], Placement::Directory)).is_none());
        assert!(
            cache.get(&([2; 32], Placement::Directory)).is_some()
                && cache.get(&([3; 32], Placement::Directory)).is_some()
        );
        // Larger than the whole cache: not kept, nothing evicted.
        cache.insert(([4; 32], Placement::Directory), fd(), 101);
        assert!(
            cache.get(&([4; 32], Placement::Directory)).is_none()
                && cache.get(&([2; 32], Placement::Directory)).is_some()
        );
        assert_eq!(cache.bytes, 50);
    }

    #[test]
    fn sealed_memfd_refuses_changes() {
        let memfd = sealed_memfd(b"image").unwrap();
        assert_eq!(
            rustix::io::pwrite(&memfd, b"x", 0),
            Err(rustix::io::Errno::PERM)
        );
        assert_eq!(
            rustix::fs::ftruncate(&memfd, 1),
            Err(rustix::io::Errno::PERM)
        );
        let mut buf = [0u8; 5];
        assert_eq!(rustix::io::pread(&memfd, &mut buf, 0), Ok(5));
        assert_eq!(&buf, b"image");
    }
}
