//! Kernel mounts of EROFS / composefs images, and prerequisite checks that
//! skip (or, under CI, fail) privileged tests.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use rustix::mount::{MountFlags, UnmountFlags};

use super::skip;

/// A mounted image; unmounted (lazily if need be) and its directories
/// removed on drop.
#[derive(Debug)]
pub struct KernelMount {
    /// Private temporary directory holding the mount points.
    base: PathBuf,
    /// Mount points in mount order (unmounted in reverse).
    mounts: Vec<PathBuf>,
    /// Directories to `rmdir` after unmounting (children before parents).
    dirs: Vec<PathBuf>,
    /// Where the tree is visible.
    path: PathBuf,
}

impl KernelMount {
    /// Mounts `image` read-only as EROFS. Uses a file-backed mount
    /// (`mount(2)` with the image file as source, kernel >= 6.12); falls back
    /// to `mount(8)`, which sets up a loop device, on kernels without
    /// file-backed EROFS.
    pub fn erofs(image: &Path) -> io::Result<KernelMount> {
        let base = make_private_dir()?;
        let mnt = base.join("mnt");
        let mut km = KernelMount {
            dirs: vec![mnt.clone(), base.clone()],
            base,
            mounts: Vec::new(),
            path: mnt.clone(),
        };
        std::fs::create_dir(&mnt)?;
        mount_erofs(image, &mnt)?;
        km.mounts.push(mnt);
        Ok(km)
    }

    /// Mounts a composefs image the way composefs does: the EROFS image at a
    /// private directory, then a read-only overlay
    /// `lowerdir=EROFSDIR::BASEDIR` (BASEDIR being a data-only lower layer
    /// that `trusted.overlay.redirect` xattrs point into) with
    /// `metacopy=on,redirect_dir=on`.
    pub fn composefs(image: &Path, basedir: &Path) -> io::Result<KernelMount> {
        let basedir = std::fs::canonicalize(basedir)?;
        let base = make_private_dir()?;
        let lower = base.join("erofs");
        let mnt = base.join("mnt");
        let mut km = KernelMount {
            dirs: vec![lower.clone(), mnt.clone(), base.clone()],
            base,
            mounts: Vec::new(),
            path: mnt.clone(),
        };
        std::fs::create_dir(&lower)?;
        std::fs::create_dir(&mnt)?;
        mount_erofs(image, &lower)?;
        km.mounts.push(lower.clone());
        for p in [&lower, &basedir] {
            let b = p.as_os_str().as_bytes();
            if b.iter().any(|c| matches!(c, b',' | b':' | b'\\')) {
                return Err(io::Error::other(format!(
                    "path {} contains characters that need escaping in overlay options",
                    p.display()
                )));
            }
        }
        let opts = format!(
            "ro,metacopy=on,redirect_dir=on,lowerdir={}::{}",
            lower.display(),
            basedir.display()
        );
        let opts = CString::new(opts).map_err(io::Error::other)?;
        rustix::mount::mount("overlay", &mnt, "overlay", MountFlags::RDONLY, &*opts)
            .map_err(|e| io::Error::other(format!("mount overlay ({opts:?}): {e}")))?;
        km.mounts.push(mnt);
        Ok(km)
    }

    /// Where the mounted tree is visible.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// For composefs mounts, where the plain EROFS lower layer is mounted;
    /// for EROFS mounts the same as [`Self::path`].
    pub fn erofs_path(&self) -> &Path {
        &self.mounts[0]
    }
}

impl Drop for KernelMount {
    fn drop(&mut self) {
        let mut all_unmounted = true;
        for m in self.mounts.iter().rev() {
            if rustix::mount::unmount(m, UnmountFlags::empty()).is_err() {
                // Busy (e.g. an open fd leaked by a failing test): detach.
                if let Err(e) = rustix::mount::unmount(m, UnmountFlags::DETACH) {
                    eprintln!("KernelMount: cannot unmount {}: {e}", m.display());
                    all_unmounted = false;
                }
            }
        }
        if !all_unmounted {
            return; // never remove anything below a live mount
        }
        // rmdir only (never recursive removal): safe even if something is
        // unexpectedly still mounted.
        for d in &self.dirs {
            let _ = std::fs::remove_dir(d);
        }
        let _ = std::fs::remove_dir(&self.base);
    }
}

fn make_private_dir() -> io::Result<PathBuf> {
    // keep(): KernelMount::drop removes it itself, with rmdir only.
    let td = tempfile::Builder::new().prefix("lazycfs-mnt-").tempdir()?;
    Ok(td.keep())
}

fn mount_erofs(image: &Path, target: &Path) -> io::Result<()> {
    match rustix::mount::mount(image, target, "erofs", MountFlags::RDONLY, None) {
        Ok(()) => Ok(()),
        // Kernel without file-backed EROFS: let mount(8) set up a loop device.
        Err(rustix::io::Errno::NOTBLK) => {
            let out = Command::new("mount")
                .args(["-t", "erofs", "-o", "ro"])
                .arg(image)
                .arg(target)
                .output()?;
            if out.status.success() {
                Ok(())
            } else {
                Err(io::Error::other(format!(
                    "mount -t erofs -o ro {} {}: {}: {}",
                    image.display(),
                    target.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                )))
            }
        }
        Err(e) => Err(io::Error::other(format!(
            "mount -t erofs {} {}: {e}",
            image.display(),
            target.display()
        ))),
    }
}

fn filesystem_available(name: &str) -> bool {
    let listed = || {
        std::fs::read_to_string("/proc/filesystems")
            .map(|s| s.lines().any(|l| l.split_whitespace().last() == Some(name)))
            .unwrap_or(false)
    };
    if listed() {
        return true;
    }
    // Maybe a module: try to load it (ignore failures).
    let _ = Command::new("modprobe").arg(name).output();
    listed()
}

fn root_probe() -> &'static Result<(), String> {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    PROBE.get_or_init(|| {
        if !rustix::process::geteuid().is_root() {
            return Err("not running as root".into());
        }
        if !filesystem_available("erofs") {
            return Err("kernel has no erofs filesystem".into());
        }
        let td = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        rustix::mount::mount(
            "lazycfs-probe",
            td.path(),
            "tmpfs",
            MountFlags::empty(),
            None,
        )
        .map_err(|e| format!("cannot mount (probe tmpfs mount failed: {e})"))?;
        rustix::mount::unmount(td.path(), UnmountFlags::DETACH)
            .map_err(|e| format!("probe unmount failed: {e}"))?;
        Ok(())
    })
}

/// True if we are root and can mount EROFS. Otherwise prints
/// `SKIP <test>: <reason>` and returns false — or panics when the `CI`
/// environment variable is set (privileged tests must run in CI).
pub fn require_root(test: &str) -> bool {
    match root_probe() {
        Ok(()) => true,
        Err(reason) => {
            skip(test, reason);
            false
        }
    }
}

/// [`require_root`] plus overlayfs with data-only lower layers (for
/// [`KernelMount::composefs`]).
pub fn require_composefs(test: &str) -> bool {
    if !require_root(test) {
        return false;
    }
    if !filesystem_available("overlay") {
        skip(test, "kernel has no overlay filesystem");
        return false;
    }
    true
}

/// The shared test corpus: `$LAZYCFS_CORPUS` if set and non-empty, else
/// `<CARGO_MANIFEST_DIR>/../shared/corpus`. When missing, prints
/// `SKIP <test>: ...` and returns `None` (panics under `CI`).
pub fn corpus_dir(test: &str) -> Option<PathBuf> {
    let dir = match std::env::var_os("LAZYCFS_CORPUS") {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"),
    };
    if dir.is_dir() {
        Some(dir)
    } else {
        skip(
            test,
            &format!(
                "corpus directory {} not found (set LAZYCFS_CORPUS)",
                dir.display()
            ),
        );
        None
    }
}
