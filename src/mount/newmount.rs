//! The new mount API (`fsopen`, `fsconfig`, `fsmount`), which makes every lazycfs mount but
//! the `fusermount3` one: the FUSE mount under an overlay, the overlayfs, kernel EROFS.
//!
//! Each option is set on its own, so paths need no escaping; a failed step's error carries the
//! kernel's own messages; and the result is a [`DetachedMount`], attached nowhere until the
//! caller says where (a FUSE mount can then be served before anything can reach it).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, fsconfig_create, fsconfig_set_flag,
    fsconfig_set_string, fsmount, fsopen, move_mount,
};

/// A mount not yet attached anywhere (an `fsmount` file descriptor). Dropping it discards it.
#[derive(Debug)]
pub struct DetachedMount {
    fd: OwnedFd,
}

impl DetachedMount {
    /// Attaches the mount on `target` (a directory).
    pub fn attach(self, target: &Path) -> io::Result<()> {
        move_mount(
            self.fd.as_fd(),
            "",
            rustix::fs::CWD,
            target,
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH,
        )
        .map_err(|e| io::Error::other(format!("attaching the mount on {}: {e}", target.display())))
    }

    /// Attaches the mount on the directory `target` is open on (`MOVE_MOUNT_T_EMPTY_PATH`):
    /// the directory itself, whatever path leads to it now. The directory must be in this
    /// process's mount namespace.
    pub fn attach_to(self, target: BorrowedFd<'_>) -> io::Result<()> {
        move_mount(
            self.fd.as_fd(),
            "",
            target,
            "",
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH,
        )
        .map_err(Into::into)
    }

    /// A path that names the mount's root while this value lives (`/proc/self/fd/N`), usable
    /// as an overlay layer.
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }
}

/// The `fsmount` file descriptor.
impl AsFd for DetachedMount {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// A filesystem being configured (an `fsopen` context): set its options, then
/// [`mount`](FsBuilder::mount) it. Errors carry the kernel's messages for the context (read
/// from it after a failed call, e.g. "overlayfs: failed to resolve 'x': -2").
pub(crate) struct FsBuilder {
    fd: OwnedFd,
    fs: &'static str,
}

/// A filesystem created but not yet mounted (an `fsopen` context after `FSCONFIG_CMD_CREATE`).
pub(crate) struct CreatedFs {
    builder: FsBuilder,
}

impl CreatedFs {
    /// A mount of the filesystem with `attrs`, attached nowhere.
    pub(crate) fn mount(&self, attrs: MountAttrFlags) -> io::Result<DetachedMount> {
        let fd = fsmount(&self.builder.fd, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
            .map_err(|e| self.builder.error("fsmount", e))?;
        Ok(DetachedMount { fd })
    }
}

impl AsFd for CreatedFs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.builder.fd.as_fd()
    }
}

impl FsBuilder {
    /// Starts configuring a filesystem of type `fs` (`"fuse"`, `"overlay"`, `"erofs"`).
    pub(crate) fn open(fs: &'static str) -> io::Result<FsBuilder> {
        let fd = fsopen(fs, FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot create a {fs} mount: {e}"),
            )
        })?;
        Ok(FsBuilder { fd, fs })
    }

    /// Sets `key=value`.
    pub(crate) fn string(&self, key: &str, value: impl AsRef<OsStr>) -> io::Result<&Self> {
        let value = value.as_ref();
        fsconfig_set_string(&self.fd, key, value)
            .map_err(|e| self.error(&format!("{key}={}", Path::new(value).display()), e))?;
        Ok(self)
    }

    /// Sets `key` to the file or directory `fd` is open on (`FSCONFIG_SET_FD`), for
    /// filesystems that take one (overlayfs layers since Linux 6.13).
    pub(crate) fn fd(&self, key: &str, fd: BorrowedFd<'_>) -> io::Result<&Self> {
        rustix::mount::fsconfig_set_fd(&self.fd, key, fd).map_err(|e| self.error(key, e))?;
        Ok(self)
    }

    /// Sets the flag `key`.
    pub(crate) fn flag(&self, key: &str) -> io::Result<&Self> {
        fsconfig_set_flag(&self.fd, key).map_err(|e| self.error(key, e))?;
        Ok(self)
    }

    /// Creates the filesystem and a mount of it with `attrs`, attached nowhere.
    pub(crate) fn mount(self, attrs: MountAttrFlags) -> io::Result<DetachedMount> {
        let created = self.create()?;
        created.mount(attrs)
    }

    /// Creates the filesystem, to be mounted later (perhaps by another process: the mount
    /// belongs to the mount namespace of whoever mounts it).
    pub(crate) fn create(self) -> io::Result<CreatedFs> {
        fsconfig_create(&self.fd).map_err(|e| self.error("creating the filesystem", e))?;
        Ok(CreatedFs { builder: self })
    }

    /// The error for a failed step, with the kernel's log messages for this context.
    fn error(&self, step: &str, errno: rustix::io::Errno) -> io::Error {
        let mut messages = String::new();
        let log = self.fd.try_clone().map(File::from);
        let mut buf = [0u8; 1024];
        // Each read returns one message ("e overlayfs: ..."); ENODATA ends the log.
        while let Ok(n @ 1..) = log.as_ref().map_or(Ok(0), |mut log| log.read(&mut buf)) {
            let message = String::from_utf8_lossy(&buf[..n]);
            let message = message.trim_end();
            let text = message.get(2..).unwrap_or(message);
            if !messages.is_empty() {
                messages.push_str("; ");
            }
            messages.push_str(text);
        }
        let detail = if messages.is_empty() {
            String::new()
        } else {
            format!(" ({messages})")
        };
        io::Error::new(
            io::Error::from(errno).kind(),
            format!("{} mount, {step}: {errno}{detail}", self.fs),
        )
    }
}
