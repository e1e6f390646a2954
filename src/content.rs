//! Where file bytes come from: the image itself, or the basedir object a metacopy file's
//! redirect names ([`Metacopy`]).
//!
//! Redirects are untrusted: objects are opened with `openat2(RESOLVE_BENEATH |
//! RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS)` under the basedir, so `..`, absolute paths
//! and symlinks planted in the basedir cannot escape it.

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use rustix::fs::{Mode, OFlags, ResolveFlags};
use rustix::io::Errno;

use crate::composefs::Metacopy;
use crate::erofs::Inode;

/// Where a regular file's content lives.
#[derive(Debug)]
pub enum Content {
    /// In the image (inline, blocks or chunks).
    Image,
    /// In this basedir object.
    Object(File),
}

/// The objects directory composefs redirects point into.
#[derive(Debug)]
pub struct Basedir {
    dir: OwnedFd,
    require_verity: bool,
}

impl Basedir {
    /// Opens the basedir. With `require_verity`, an object is served only if its fs-verity
    /// digest equals the digest in the file's `trusted.overlay.metacopy` (as overlayfs
    /// `verity=require`).
    pub fn open(path: &Path, require_verity: bool) -> io::Result<Basedir> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let dir = rustix::fs::open(path, flags, Mode::empty())?;
        Ok(Basedir {
            dir,
            require_verity,
        })
    }

    /// Where `inode`'s content comes from, as overlayfs decides: a metacopy file reads the
    /// basedir object its redirect names; other files read the image. A metacopy file without
    /// a usable object is `EIO` (and a log line).
    pub fn content(&self, inode: &Inode<'_>) -> Result<Content, Errno> {
        let metacopy = Metacopy::of(inode).map_err(|e| {
            log::warn!("{e}");
            Errno::IO
        })?;
        let Some(metacopy) = metacopy else {
            return Ok(Content::Image);
        };
        let Some(redirect) = metacopy.redirect else {
            log::warn!("nid {}: metacopy file without redirect", inode.nid());
            return Err(Errno::IO);
        };
        let relative = redirect.strip_prefix(b"/").unwrap_or(redirect);
        let resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        match rustix::fs::openat2(
            &self.dir,
            OsStr::from_bytes(relative),
            flags,
            Mode::empty(),
            resolve,
        ) {
            Ok(fd) => {
                let file = File::from(fd);
                if self.require_verity {
                    verify(inode, metacopy.digest, &file)?;
                }
                Ok(Content::Object(file))
            }
            Err(e) => {
                log::warn!(
                    "nid {}: cannot open object {:?}: {e}",
                    inode.nid(),
                    String::from_utf8_lossy(redirect)
                );
                Err(Errno::IO)
            }
        }
    }
}

/// EIO unless `file`'s fs-verity digest is `expected`, the one in `inode`'s metacopy.
fn verify(inode: &Inode<'_>, expected: Option<&[u8; 32]>, file: &File) -> Result<(), Errno> {
    let Some(expected) = expected else {
        log::warn!(
            "nid {}: no fs-verity digest in metacopy, refused (verity required)",
            inode.nid()
        );
        return Err(Errno::IO);
    };
    match crate::sys::measure_verity(file) {
        Ok(actual) if actual == *expected => Ok(()),
        Ok(_) => {
            log::warn!("nid {}: object fs-verity digest mismatch", inode.nid());
            Err(Errno::IO)
        }
        Err(e) => {
            log::warn!(
                "nid {}: cannot measure object fs-verity digest: {e}",
                inode.nid()
            );
            Err(Errno::IO)
        }
    }
}
