//! Benchmark peer: composefs-fuse 0.9.4, which decodes the EROFS image on demand.
//!
//! `peer-composefs-fuse-09 IMAGE MOUNTPOINT BASEDIR [--overlay]` serves in the foreground
//! until killed:
//!
//! - direct mode (default): the FUSE mount at MOUNTPOINT is the filesystem; the server opens
//!   the objects named by the redirect xattrs in BASEDIR itself (`serve_fuse_fd`);
//! - `--overlay`: the FUSE mount presents the raw image (with `trusted.overlay.*` xattrs) as
//!   the lower layer of a kernel overlayfs with BASEDIR as data-only layer
//!   (`mount_fuse_overlay`), like the kernel composefs mount; the overlay is at MOUNTPOINT.

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, bail};
use composefs_fuse::{
    FuseMountOptions, OverlayMountOptions, OverlayXattrMode, ServeFuseOptions, mount_fuse,
    mount_fuse_overlay, open_fuse, serve_fuse_fd,
};
use rustix::fs::{CWD, Mode, OFlags, open};
use rustix::mount::{MoveMountFlags, move_mount};

fn main() -> anyhow::Result<()> {
    let mut args: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let overlay = args.len() == 4 && args.pop().is_some_and(|a| a == Path::new("--overlay"));
    let [image, mountpoint, basedir] = args.as_slice() else {
        bail!("usage: peer-composefs-fuse-09 IMAGE MOUNTPOINT BASEDIR [--overlay]");
    };

    let image_fd = open_path(image, OFlags::RDONLY)?;
    let objects_fd = Arc::new(open_path(basedir, OFlags::PATH | OFlags::DIRECTORY)?);
    let dev_fuse = open_fuse()?;
    let fuse_mnt = mount_fuse(&dev_fuse, &FuseMountOptions::default()).context("mounting fuse")?;

    if !overlay {
        attach(&fuse_mnt, mountpoint)?;
        serve_fuse_fd(dev_fuse, image_fd, objects_fd, &ServeFuseOptions::default())
            .context("serving")?;
        return Ok(());
    }

    // The overlay looks into the FUSE mount while it is created: serve first.
    let mut serve_options = ServeFuseOptions::default();
    serve_options.set_overlay_xattr(Some(OverlayXattrMode::Trusted));
    let server = std::thread::spawn(move || {
        serve_fuse_fd(dev_fuse, image_fd, objects_fd, &serve_options)
    });
    let mut overlay_options = OverlayMountOptions::default();
    overlay_options.set_overlay_xattr(OverlayXattrMode::Trusted);
    let datadir = open_path(basedir, OFlags::RDONLY | OFlags::DIRECTORY)?;
    let overlay_mnt =
        mount_fuse_overlay(fuse_mnt, &datadir, &overlay_options).context("mounting overlay")?;
    attach(&overlay_mnt, mountpoint)?;
    match server.join() {
        Ok(result) => result.context("serving"),
        Err(_) => bail!("server thread panicked"),
    }
}

fn open_path(path: &Path, flags: OFlags) -> anyhow::Result<OwnedFd> {
    open(path, flags | OFlags::CLOEXEC, Mode::empty())
        .with_context(|| format!("opening {}", path.display()))
}

/// Attaches a detached mount at `mountpoint`.
fn attach(mnt: &OwnedFd, mountpoint: &Path) -> anyhow::Result<()> {
    move_mount(mnt.as_fd(), "", CWD, mountpoint, MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH)
        .with_context(|| format!("attaching mount at {}", mountpoint.display()))
}
