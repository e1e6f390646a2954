//! The kernel's half of a composefs mount, each returned as a [`DetachedMount`]:
//! - [`mount_overlayfs_on`]: an overlayfs over a lower layer, with the basedir as data-only
//!   layer, so the kernel reads file content from the basedir itself. The lower layer is a
//!   running lazycfs FUSE mount (rootless: the server presents
//!   [`View::OverlayUser`](crate::view::View::OverlayUser) and the overlay uses `userxattr`)
//!   or kernel EROFS.
//! - [`mount_kernel_composefs`]: the image on kernel EROFS under such an overlayfs (rootful,
//!   as `mount.composefs` does).
//! - [`mount_kernel_erofs`]: the image on kernel EROFS alone.

use std::io;
use std::path::{Path, PathBuf};

use rustix::mount::MountAttrFlags;

use super::newmount::{DetachedMount, FsBuilder};

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

/// Creates an overlayfs (attached nowhere) whose lower layer is `lower` and whose data-only
/// layer is `basedir`, so redirected files are read from the basedir by the kernel.
///
/// `lower` is a running lazycfs FUSE mount served with the overlay view matching
/// `options.xattrs` ([`View::OverlayUser`](crate::view::View::OverlayUser) for
/// [`OverlayXattrs::User`], [`View::OverlayTrusted`](crate::view::View::OverlayTrusted) for
/// [`OverlayXattrs::Trusted`]), or kernel EROFS with trusted xattrs. The overlay looks up the
/// lower layer's root while mounting, so a FUSE server must already be answering. `lower` may
/// be a path or a [`DetachedMount::proc_path`]; the overlay holds its own reference to it.
///
/// ```no_run
/// use lazycfs::mount::overlay::{OverlayMountOptions, mount_overlayfs_on};
/// use std::path::Path;
///
/// let options = OverlayMountOptions::new();
/// mount_overlayfs_on(Path::new("/run/lower"), Path::new("/objects"), &options)?
///     .attach(Path::new("/mnt/image"))?;
/// # Ok::<(), std::io::Error>(())
/// ```
pub fn mount_overlayfs_on(
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
    mount_overlayfs_on(&erofs.proc_path(), basedir, &options)
}

/// A plain EROFS image on kernel EROFS (a file-backed, read-only mount). Needs CAP_SYS_ADMIN
/// in the initial user namespace.
pub fn mount_kernel_erofs(image: &Path) -> io::Result<DetachedMount> {
    let erofs = FsBuilder::open("erofs")?;
    erofs.string("source", image)?;
    erofs.mount(MountAttrFlags::MOUNT_ATTR_RDONLY)
}
