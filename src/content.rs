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
    /// basedir object its redirect names; other files read the image. A metacopy file whose
    /// object is missing is `ENOENT` and one whose redirect leaves the basedir `EXDEV`, as
    /// overlayfs answers; one without a usable object otherwise `EIO` (and a log line).
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
                // As overlayfs answers when it looks the object up in its data-only layer: a
                // missing one, or a symlink where it should be, is not there (ENOENT); a
                // redirect climbing out of the basedir is EXDEV. Anything else is an I/O error.
                Err(match e {
                    Errno::NOENT | Errno::LOOP => Errno::NOENT,
                    Errno::XDEV => Errno::XDEV,
                    _ => Errno::IO,
                })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::composefs::test_image::{REG, build, inode};
    use crate::composefs::{METACOPY, REDIRECT};
    use crate::erofs::xattr_index::TRUSTED;

    #[test]
    fn metacopy_files_read_the_object_their_redirect_names() {
        let basedir = tempfile::tempdir().unwrap();
        std::fs::create_dir(basedir.path().join("ab")).unwrap();
        std::fs::write(basedir.path().join("ab/object"), b"content").unwrap();
        let image = build(
            &[
                (REG, &[]),
                (
                    REG,
                    &[(TRUSTED, METACOPY, b""), (TRUSTED, REDIRECT, b"/ab/object")],
                ),
                (REG, &[(TRUSTED, METACOPY, b"")]),
                (REG, &[(TRUSTED, REDIRECT, b"/ab/object")]),
                (
                    REG,
                    &[(TRUSTED, METACOPY, b""), (TRUSTED, REDIRECT, b"/ab/none")],
                ),
            ],
            None,
        );
        let content = |basedir: &Basedir, i| match basedir.content(&inode(&image, i)) {
            Ok(Content::Image) => Ok("image"),
            Ok(Content::Object(file)) => {
                let mut text = String::new();
                io::Read::read_to_string(&mut &file, &mut text).unwrap();
                assert_eq!(text, "content");
                Ok("object")
            }
            Err(e) => Err(e),
        };
        let plain = Basedir::open(basedir.path(), false).unwrap();
        let answers = [0, 1, 2, 3, 4].map(|i| content(&plain, i));
        let expected = [
            Ok("image"),
            Ok("object"),
            Err(Errno::IO),    // metacopy without redirect
            Ok("image"),       // a redirect without metacopy is not followed
            Err(Errno::NOENT), // no such object, as overlayfs answers
        ];
        assert_eq!(answers, expected);
        // Verity required: a metacopy without digest is refused before the object is measured.
        let verity = Basedir::open(basedir.path(), true).unwrap();
        assert_eq!(content(&verity, 1), Err(Errno::IO));
        assert_eq!(content(&verity, 0), Ok("image"));
    }
}
