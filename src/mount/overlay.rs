//! The overlayfs half of a composefs mount: on a running lazycfs FUSE mount (rootless: the
//! server presents [`View::OverlayUser`](crate::view::View::OverlayUser) and the overlay
//! uses `userxattr`) or on a kernel EROFS mount of the image (rootful, as `mount.composefs`).
//! Either way the basedir is a data-only lower layer, so the kernel reads file content from
//! it directly.
//!
//! Everything is built with the new mount API (`fsopen`, `fsconfig`, `fsmount`): each layer
//! is its own option, so paths need no escaping, and the result is a detached mount that
//! the caller attaches where it wants ([`DetachedMount::attach`]).

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::mount::{
    FsMountFlags, FsOpenFlags, MountAttrFlags, MoveMountFlags, fsconfig_create, fsconfig_set_flag,
    fsconfig_set_string, fsmount, fsopen, move_mount,
};

/// Which xattr namespace the overlay reads its private xattrs (`overlay.redirect`,
/// `overlay.metacopy`, ...) from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OverlayXattrs {
    /// `user.overlay.*` (mount option `userxattr`): what a user namespace can mount.
    #[default]
    User,
    /// `trusted.overlay.*`: needs CAP_SYS_ADMIN in the initial user namespace.
    Trusted,
}

/// How to mount the overlay. Build with [`OverlayMountOptions::new`] and the setters.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct OverlayMountOptions {
    /// Private xattr namespace (default: `userxattr`).
    pub xattrs: OverlayXattrs,
    /// Upper and work directories: a writable mount whose changes land in the upper
    /// directory. `None`: read-only.
    pub upper: Option<(PathBuf, PathBuf)>,
    /// `verity=require`: a file's basedir object must carry the fs-verity digest its metacopy
    /// xattr names, else opening it fails (EIO).
    pub require_verity: bool,
}

impl OverlayMountOptions {
    /// Read-only, `userxattr`, no verity requirement.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the private xattr namespace.
    pub fn xattrs(mut self, xattrs: OverlayXattrs) -> Self {
        self.xattrs = xattrs;
        self
    }

    /// Makes the mount writable, with changes in `upper` (`work` must be an empty directory
    /// on the same filesystem).
    pub fn upper(mut self, upper: impl Into<PathBuf>, work: impl Into<PathBuf>) -> Self {
        self.upper = Some((upper.into(), work.into()));
        self
    }

    /// Sets `verity=require`.
    pub fn require_verity(mut self, require: bool) -> Self {
        self.require_verity = require;
        self
    }
}

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

    /// A path that names the mount's root while this value lives (`/proc/self/fd/N`), usable
    /// as an overlay layer.
    pub fn proc_path(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// The `fsmount` file descriptor.
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Creates an overlayfs whose lower layer is the running lazycfs FUSE mount at `fuse_mount`
/// (served with [`View::OverlayUser`](crate::view::View::OverlayUser) for
/// [`OverlayXattrs::User`], [`View::OverlayTrusted`](crate::view::View::OverlayTrusted) for
/// [`OverlayXattrs::Trusted`]) and `basedir` the data-only layer.
///
/// The overlay looks up the lower layer's root while mounting, so the server must already
/// be answering. `fuse_mount` may be a path or a [`DetachedMount::proc_path`].
///
/// ```no_run
/// use lazycfs::mount::overlay::{OverlayMountOptions, mount_fuse_overlay};
/// use std::path::Path;
///
/// let options = OverlayMountOptions::new();
/// mount_fuse_overlay(Path::new("/run/lower"), Path::new("/objects"), &options)?
///     .attach(Path::new("/mnt/image"))?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn mount_fuse_overlay(
    fuse_mount: &Path,
    basedir: &Path,
    options: &OverlayMountOptions,
) -> io::Result<DetachedMount> {
    mount_overlay(fuse_mount, basedir, options)
}

/// The rootful composefs mount, as `mount.composefs` makes it: the image on kernel EROFS
/// (a file-backed mount), under an overlayfs with trusted xattrs and `basedir` as data-only
/// layer. Needs CAP_SYS_ADMIN in the initial user namespace.
pub fn mount_kernel_composefs(
    image: &Path,
    basedir: &Path,
    options: &OverlayMountOptions,
) -> io::Result<DetachedMount> {
    let erofs = mount_kernel_erofs(image)?;
    let options = OverlayMountOptions {
        xattrs: OverlayXattrs::Trusted,
        ..options.clone()
    };
    // The overlay takes its own reference to the EROFS mount; ours can go afterwards.
    mount_overlay(&erofs.proc_path(), basedir, &options)
}

/// A plain EROFS image on kernel EROFS (a file-backed, read-only mount). Needs CAP_SYS_ADMIN
/// in the initial user namespace.
pub fn mount_kernel_erofs(image: &Path) -> io::Result<DetachedMount> {
    let erofs = FsBuilder::open("erofs")?;
    erofs.string("source", image)?;
    erofs.mount(MountAttrFlags::MOUNT_ATTR_RDONLY)
}

fn mount_overlay(
    lower: &Path,
    basedir: &Path,
    options: &OverlayMountOptions,
) -> io::Result<DetachedMount> {
    let overlay = FsBuilder::open("overlay")?;
    overlay.string("source", "composefs")?;
    match options.xattrs {
        OverlayXattrs::User => {
            overlay.flag("userxattr")?;
        }
        OverlayXattrs::Trusted => {
            // As mount.composefs: metacopy files, redirects into the data-only layer.
            overlay
                .string("metacopy", "on")?
                .string("redirect_dir", "on")?;
        }
    }
    overlay
        .string("lowerdir+", lower)?
        .string("datadir+", basedir)?;
    if let Some((upper, work)) = &options.upper {
        overlay.string("upperdir", upper)?.string("workdir", work)?;
    }
    if options.require_verity {
        overlay.string("verity", "require")?;
    }
    let attrs = if options.upper.is_some() {
        MountAttrFlags::empty()
    } else {
        MountAttrFlags::MOUNT_ATTR_RDONLY
    };
    overlay.mount(attrs)
}

/// An `fsopen` context whose errors carry the kernel's own messages (read from the context
/// after a failed call, e.g. "overlayfs: failed to resolve 'x': -2").
pub(crate) struct FsBuilder {
    fd: OwnedFd,
    fs: &'static str,
}

impl FsBuilder {
    pub(crate) fn open(fs: &'static str) -> io::Result<FsBuilder> {
        let fd = fsopen(fs, FsOpenFlags::FSOPEN_CLOEXEC).map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("cannot create a {fs} mount: {e}"),
            )
        })?;
        Ok(FsBuilder { fd, fs })
    }

    pub(crate) fn string(&self, key: &str, value: impl AsRef<OsStr>) -> io::Result<&Self> {
        let value = value.as_ref();
        fsconfig_set_string(&self.fd, key, value)
            .map_err(|e| self.error(&format!("{key}={}", Path::new(value).display()), e))?;
        Ok(self)
    }

    pub(crate) fn flag(&self, key: &str) -> io::Result<&Self> {
        fsconfig_set_flag(&self.fd, key).map_err(|e| self.error(key, e))?;
        Ok(self)
    }

    pub(crate) fn mount(self, attrs: MountAttrFlags) -> io::Result<DetachedMount> {
        fsconfig_create(&self.fd).map_err(|e| self.error("creating the filesystem", e))?;
        let fd = fsmount(&self.fd, FsMountFlags::FSMOUNT_CLOEXEC, attrs)
            .map_err(|e| self.error("fsmount", e))?;
        Ok(DetachedMount { fd })
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
