//! The things that cannot be done without `unsafe`: mapping the image, asking the kernel for
//! a file's fs-verity digest, preparing a child process between fork and exec (`lazycfs run`),
//! closing FUSE passthrough backing ids and replying with them through fuser, the buffers of
//! FUSE over io_uring ([`uring`]), and the signal handlers that survive an image file changing
//! under its mapping ([`sigbus`], [`lease`]), and the mount service's namespace ioctls,
//! idmapped mounts and forked child ([`namespaces`]). This is the crate's only module with
//! `unsafe`.
//!
//! Mapping a file is unsafe in Rust because another process could change the file under us.
//! Images are immutable by contract, and the decoder never trusts what it reads anyway (every
//! offset is bounds-checked against the mapping's length at the time of use), so a concurrent
//! writer can only produce decoding errors or wrong values, never undefined behaviour in our
//! code. What a writer can also do is shrink the file, and a read can fail: the access then
//! raises SIGBUS, which [`sigbus`] turns into zeros and a changed image, and a read lease
//! ([`lease`]) marks the image changed before a writer starts.

#![allow(unsafe_code)]

use std::fs::File;
use std::io;
use std::ops::Deref;
use std::os::fd::AsFd;

mod lease;
pub(crate) mod namespaces;
mod sigbus;
#[cfg(test)]
mod tests;
pub(crate) mod uring;

/// Bytes of an image, borrowed by everything the decoder hands out.
pub(crate) enum Mapping {
    /// A mapped file.
    Mapped(MappedFile),
    Owned(Box<[u8]>),
}

/// A mapped image file. Fields drop in order: the guard unregisters the range before it is
/// unmapped, and the file (which holds the lease) closes last.
pub(crate) struct MappedFile {
    guard: Option<sigbus::ImageGuard>,
    map: memmap2::Mmap,
    /// Kept for readahead hints and the lease.
    file: File,
}

impl Mapping {
    pub(crate) fn map(file: &File) -> io::Result<Self> {
        // A zero-length file cannot be mapped on Linux, so it is read into an empty buffer.
        if file.metadata()?.len() == 0 {
            return Ok(Mapping::Owned(Box::new([])));
        }
        // SAFETY: the mapping is private and read-only, and lazycfs treats its contents as
        // untrusted bytes, checking every offset before use: a concurrent modification of
        // the file yields garbage (reported as corruption), never undefined behaviour in our
        // code. A fault past a shrunk file's end or a failed read raises SIGBUS, repaired by
        // the guard registered below with a page of zeros.
        let map = unsafe { memmap2::MmapOptions::new().map(file)? };
        // A fault reads just its page, as the kernel's EROFS reads metadata, instead of a
        // read-around window centred on it: with the readahead window set large (8 MiB on
        // virtio disks) a window costs milliseconds of transfer before the faulting page
        // arrives, and the first lookups fault in several. Bulk reading is the prefetch's job
        // (`Image::prefetcher`). Only a hint: a kernel that refuses it reads around as before.
        let _ = map.advise(memmap2::Advice::Random);
        let file = file.try_clone()?;
        let guard = sigbus::ImageGuard::register(map.as_ptr(), map.len());
        if let Some(Err(e)) = guard.as_ref().map(|guard| lease::watch(&file, guard)) {
            log::debug!("no read lease on the image (a rewrite is noticed when it faults): {e}");
        }
        Ok(Mapping::Mapped(MappedFile { guard, map, file }))
    }

    /// The mapped file (for readahead hints); `None` for an image held in memory.
    pub(crate) fn file(&self) -> Option<&File> {
        match self {
            Mapping::Mapped(mapped) => Some(&mapped.file),
            Mapping::Owned(_) => None,
        }
    }

    /// Whether the file changed under the mapping since it was mapped (see [`sigbus`]).
    pub(crate) fn changed(&self) -> bool {
        match self {
            Mapping::Mapped(MappedFile {
                guard: Some(guard), ..
            }) => guard.changed(),
            _ => false,
        }
    }
}

impl Deref for Mapping {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match self {
            Mapping::Mapped(mapped) => &mapped.map,
            Mapping::Owned(b) => b,
        }
    }
}

/// `FS_IOC_MEASURE_VERITY`: `_IOWR('f', 134, struct fsverity_digest)`, whose declared size is
/// its 4-byte header (the digest is a flexible array).
const FS_IOC_MEASURE_VERITY: rustix::ioctl::Opcode = 0xC004_6686;
/// `FS_VERITY_HASH_ALG_SHA256`.
const HASH_ALG_SHA256: u16 = 1;

#[repr(C)]
struct VerityDigest {
    algorithm: u16,
    size: u16,
    digest: [u8; 64],
}

/// The fs-verity SHA-256 digest of an open file; an error if verity is not enabled on it or
/// it uses another algorithm.
pub(crate) fn measure_verity(file: &impl std::os::fd::AsFd) -> io::Result<[u8; 32]> {
    let mut value = VerityDigest {
        algorithm: 0,
        size: 64,
        digest: [0; 64],
    };
    // SAFETY: the opcode is FS_IOC_MEASURE_VERITY, whose argument is a `struct
    // fsverity_digest` with `size` bytes of room after the header; `VerityDigest` is that
    // layout with 64 bytes of room and `size` says so, so the kernel writes within `value`.
    unsafe {
        let updater =
            rustix::ioctl::Updater::<FS_IOC_MEASURE_VERITY, VerityDigest>::new(&mut value);
        rustix::ioctl::ioctl(file, updater)?;
    }
    if value.algorithm != HASH_ALG_SHA256 || value.size != 32 {
        return Err(io::Error::other("fs-verity digest is not SHA-256"));
    }
    Ok(value.digest[..32].try_into().expect("32 bytes"))
}

/// Prepares `cmd`'s child between fork and exec: it is killed if this process dies (so a
/// `lazycfs run` command never outlives its mount's server), and with `chroot` it runs with
/// that directory as its root and working directory.
pub(crate) fn child_setup(
    cmd: &mut std::process::Command,
    chroot: Option<&std::path::Path>,
) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::process::CommandExt;
    let root = chroot
        .map(|p| std::ffi::CString::new(p.as_os_str().as_bytes()))
        .transpose()?;
    let setup = move || -> io::Result<()> {
        rustix::process::set_parent_process_death_signal(Some(rustix::process::Signal::KILL))?;
        if let Some(root) = &root {
            rustix::process::chroot(root.as_c_str())?;
            rustix::process::chdir(c"/")?;
        }
        Ok(())
    };
    // SAFETY: the closure runs in the child between fork and exec, where only
    // async-signal-safe operations are allowed: it makes three system calls (prctl, chroot,
    // chdir) on a C string built before the fork, and neither allocates nor takes locks.
    unsafe {
        cmd.pre_exec(setup);
    }
    Ok(())
}

/// Moves this process into new namespaces (`unshare(2)`).
pub(crate) fn unshare(flags: rustix::thread::UnshareFlags) -> io::Result<()> {
    use rustix::thread::UnshareFlags;
    // Only namespace flags are accepted here: CLONE_FILES would invalidate file descriptors
    // other code holds, which is why rustix marks the call unsafe.
    let namespaces = UnshareFlags::NEWUSER | UnshareFlags::NEWNS;
    if !namespaces.contains(flags) {
        return Err(io::Error::from(rustix::io::Errno::INVAL));
    }
    // SAFETY: new user and mount namespaces change which mounts and ids this process sees,
    // not its memory or file descriptor table, so no Rust invariant depends on them.
    unsafe { rustix::thread::unshare_unsafe(flags) }.map_err(Into::into)
}

/// `FUSE_DEV_IOC_BACKING_CLOSE`: `_IOW(229, 2, uint32_t)`.
const FUSE_DEV_IOC_BACKING_CLOSE: rustix::ioctl::Opcode = 0x4004_E502;

/// Closes passthrough backing id `id` of the FUSE connection `device`.
pub(crate) fn close_backing(device: impl AsFd, id: u32) -> io::Result<()> {
    // SAFETY: the opcode is FUSE_DEV_IOC_BACKING_CLOSE, whose argument is a `uint32_t` the
    // kernel only reads; `Setter` passes a pointer to exactly that.
    unsafe {
        let setter = rustix::ioctl::Setter::<FUSE_DEV_IOC_BACKING_CLOSE, u32>::new(id);
        rustix::ioctl::ioctl(device, setter)?;
    }
    Ok(())
}

/// Answers an open through fuser with passthrough backing id `id` (owned by the caller, who
/// keeps it open at least as long as the handle: fuser only takes ids as its own type).
pub(crate) fn reply_opened_passthrough(
    reply: fuser::ReplyOpen,
    fh: fuser::FileHandle,
    flags: fuser::FopenFlags,
    id: u32,
) {
    // SAFETY: `id` is an open backing id of this reply's connection (the caller holds the
    // `Backing` that registered it on a duplicate of the session's device), and it stays
    // open while the wrapper lives: `into_raw` gives it back without closing it.
    let wrapped = unsafe { reply.wrap_backing(id) };
    reply.opened_passthrough(fh, flags, &wrapped);
    wrapped.into_raw();
}

/// Keeps glibc from serving large allocations out of its heaps. glibc raises its mmap
/// threshold to the size of any mapped chunk freed (up to 32 MiB): once fuser frees the 16 MiB
/// buffer of the INIT handshake, the buffer of its request loop may come from a heap, cleared
/// there, 16 MiB of anonymous memory of which a request touches a few pages. Setting the
/// threshold (to glibc's default, 128 KiB) turns that adjustment off.
pub(crate) fn fix_malloc_mmap_threshold() {
    #[cfg(target_env = "gnu")]
    {
        use std::ffi::c_int;
        const M_MMAP_THRESHOLD: c_int = -3;
        unsafe extern "C" {
            fn mallopt(param: c_int, value: c_int) -> c_int;
        }
        // SAFETY: mallopt only tunes the allocator, with a value glibc documents as valid; it
        // is thread-safe (it takes the arena locks).
        unsafe {
            mallopt(M_MMAP_THRESHOLD, 128 * 1024);
        }
    }
}

/// The supplementary groups of the peer of a connected Unix socket (`SO_PEERGROUPS`), as they
/// were when it connected. At most 65536 groups (the kernel's `NGROUPS_MAX`).
pub(crate) fn peer_groups(socket: impl AsFd) -> io::Result<Vec<u32>> {
    use std::os::fd::AsRawFd;
    let mut groups = vec![0u32; 64];
    loop {
        let mut len = (groups.len() * size_of::<u32>()) as libc::socklen_t;
        // SAFETY: `groups` has room for `len` bytes, which the kernel writes at most (and
        // sets `len` to what it wrote, or to what it needs when ERANGE).
        let ret = unsafe {
            libc::getsockopt(
                socket.as_fd().as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let needed = len as usize / size_of::<u32>();
        if ret == 0 {
            groups.truncate(needed);
            return Ok(groups);
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::ERANGE) || needed <= groups.len() || needed > 65536 {
            return Err(error);
        }
        groups.resize(needed, 0);
    }
}

/// Takes ownership of a file descriptor handed over by systemd's socket activation
/// (`LISTEN_FDS`, numbered from 3), which `sd_notify::listen_fds` listed. Called once per
/// descriptor.
pub(crate) fn adopt_listen_fd(fd: std::os::fd::RawFd) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{BorrowedFd, FromRawFd, OwnedFd};
    if fd < 3 {
        return Err(io::Error::from(rustix::io::Errno::BADF));
    }
    // Refuse a number that is not open (a wrong LISTEN_FDS) before owning it.
    // SAFETY: borrowed only for this one fcntl, which fails with EBADF if it is not open.
    rustix::fs::fcntl_getfl(unsafe { BorrowedFd::borrow_raw(fd) })?;
    // SAFETY: the service manager passes these descriptors to this process for it to own;
    // `listen_fds` lists each once and the caller adopts each once, so nothing else owns or
    // closes it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// `LOOP_CTL_GET_FREE`: the number of a free loop device (allocated if need be).
const LOOP_CTL_GET_FREE: rustix::ioctl::Opcode = 0x4C82;
/// `LOOP_CONFIGURE`: attach a file and set the device up in one call (Linux 5.8).
const LOOP_CONFIGURE: rustix::ioctl::Opcode = 0x4C0A;
/// `LO_FLAGS_READ_ONLY | LO_FLAGS_AUTOCLEAR`: a read-only device that detaches its file when
/// last closed (once the mount on it is gone).
const LO_FLAGS: u32 = 1 | 4;

/// `struct loop_config` of `<linux/loop.h>`, with its `struct loop_info64` flattened.
#[repr(C)]
struct LoopConfig {
    fd: u32,
    block_size: u32,
    lo_device: u64,
    lo_inode: u64,
    lo_rdevice: u64,
    lo_offset: u64,
    lo_sizelimit: u64,
    lo_number: u32,
    lo_encrypt_type: u32,
    lo_encrypt_key_size: u32,
    lo_flags: u32,
    lo_file_name: [u8; 64],
    lo_crypt_name: [u8; 64],
    lo_encrypt_key: [u8; 32],
    lo_init: [u64; 2],
    reserved: [u64; 8],
}

/// A read-only loop device backed by `file`, which detaches itself when last closed; its
/// path (`/dev/loopN`) and an open descriptor that keeps it set up meanwhile. For files that
/// file-backed EROFS does not take (a memfd: tmpfs has no `read_folio`).
pub(crate) fn loop_device(
    file: impl AsFd,
) -> io::Result<(std::path::PathBuf, std::os::fd::OwnedFd)> {
    use rustix::fs::{Mode, OFlags};
    use std::os::fd::AsRawFd;
    let control = rustix::fs::open(
        "/dev/loop-control",
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    // Another process may take the free device between the two calls: try again.
    for _ in 0..16 {
        // SAFETY: LOOP_CTL_GET_FREE takes no argument and returns a device number (or -1).
        let number = unsafe { libc::ioctl(control.as_raw_fd(), LOOP_CTL_GET_FREE as _) };
        if number < 0 {
            return Err(io::Error::last_os_error());
        }
        let path = std::path::PathBuf::from(format!("/dev/loop{number}"));
        let device = rustix::fs::open(&path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
        let config = LoopConfig {
            fd: file.as_fd().as_raw_fd() as u32,
            block_size: 0,
            lo_device: 0,
            lo_inode: 0,
            lo_rdevice: 0,
            lo_offset: 0,
            lo_sizelimit: 0,
            lo_number: 0,
            lo_encrypt_type: 0,
            lo_encrypt_key_size: 0,
            lo_flags: LO_FLAGS,
            lo_file_name: [0; 64],
            lo_crypt_name: [0; 64],
            lo_encrypt_key: [0; 32],
            lo_init: [0; 2],
            reserved: [0; 8],
        };
        // SAFETY: LOOP_CONFIGURE reads a `struct loop_config`, which `LoopConfig` lays out
        // field for field (`repr(C)`, 304 bytes); the kernel only reads it.
        let configured = unsafe {
            rustix::ioctl::ioctl(
                &device,
                rustix::ioctl::Setter::<LOOP_CONFIGURE, LoopConfig>::new(config),
            )
        };
        match configured {
            Ok(()) => return Ok((path, device)),
            Err(rustix::io::Errno::BUSY) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Err(io::Error::other("no free loop device"))
}

/// `SO_PEERPIDFD` (Linux 6.5; the same number on every architecture lazycfs builds for).
const SO_PEERPIDFD: libc::c_int = 77;

/// A pidfd of the process at the other end of a connected Unix socket (`SO_PEERPIDFD`): it
/// names that process for as long as it is held, even after it exits and its pid is reused.
pub(crate) fn peer_pidfd(socket: impl AsFd) -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let mut fd: libc::c_int = -1;
    let mut len = size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: the kernel writes one int (the new descriptor) into `fd`, of `len` bytes.
    let ret = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            SO_PEERPIDFD,
            (&mut fd as *mut libc::c_int).cast(),
            &mut len,
        )
    };
    if ret != 0 || fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `fd` is a descriptor the kernel just opened for us; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
