//! The basedir objects an image references, and which of them a basedir lacks: what
//! `composefs-info objects` and `missing-objects` print.
//!
//! An object is named by its path under the basedir: a regular file's
//! `trusted.overlay.redirect` without its leading `/`, the path the mount opens (and the
//! payload column of `dump`). Files without a redirect read the image and reference nothing.

use std::collections::{BTreeSet, HashSet};
use std::ffi::OsStr;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::check::{CheckError, display_path, join_path};
use crate::composefs::{Metacopy, Placement};
use crate::erofs::{Corruption, Error, FileType, Image, Inode, OpenError};

/// Why the objects of some images could not be listed.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// An image could not be opened.
    #[error(transparent)]
    Open(#[from] OpenError),
    /// An image's walk met an inconsistency.
    #[error("{}: {error}", image.display())]
    Corrupt {
        /// The image's path.
        image: PathBuf,
        /// The inconsistency.
        #[source]
        error: CheckError,
    },
}

/// Of the objects some images reference, those a basedir lacks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Missing {
    /// How many objects the images reference (each once).
    pub referenced: usize,
    /// The referenced objects the basedir lacks, sorted.
    pub objects: Vec<Vec<u8>>,
}

/// The objects the image files `images` reference that `store` lacks: what `lazycfs missing`
/// lists and a mount warns about.
pub fn missing_from<P: AsRef<Path>>(
    store: &ObjectStore,
    images: impl IntoIterator<Item = P>,
) -> Result<Missing, ListError> {
    let referenced = referenced_by(images)?;
    Ok(Missing {
        referenced: referenced.len(),
        objects: store.missing(referenced),
    })
}

/// Every object the image files `images` reference, together: sorted, each once. Each image
/// is walked before the next is opened; the first that fails ends the list.
pub fn referenced_by<P: AsRef<Path>>(
    images: impl IntoIterator<Item = P>,
) -> Result<BTreeSet<Vec<u8>>, ListError> {
    let mut all = BTreeSet::new();
    for path in images {
        let path = path.as_ref();
        let objects = referenced(&Image::open(path)?).map_err(|error| ListError::Corrupt {
            image: path.to_path_buf(),
            error,
        })?;
        all.extend(objects);
    }
    Ok(all)
}

/// Every object `image` references, sorted, each once. Directories are visited once each (a
/// cycle in a corrupt image ends the walk with an error rather than looping).
pub fn referenced(image: &Image) -> Result<BTreeSet<Vec<u8>>, CheckError> {
    let mut objects = BTreeSet::new();
    let mut seen_dirs = HashSet::from([image.root_nid()]);
    let mut seen_files = HashSet::new();
    let mut stack = vec![(image.root_nid(), b"/".to_vec())];
    while let Some((nid, path)) = stack.pop() {
        let fail = |nid, path: &[u8], error| CheckError {
            nid,
            path: display_path(path),
            error,
        };
        let dir = image.inode(nid).map_err(|e| fail(nid, &path, e))?;
        for entry in dir.dir().map_err(|e| fail(nid, &path, e))?.entries() {
            let entry = entry.map_err(|e| fail(nid, &path, e))?;
            if entry.name == b"." || entry.name == b".." {
                continue;
            }
            let child_path = join_path(&path, entry.name);
            let child = image
                .inode(entry.nid)
                .map_err(|e| fail(entry.nid, &child_path, e))?;
            match child.file_type() {
                FileType::Directory => {
                    if !seen_dirs.insert(entry.nid) {
                        let cycle = Error::Corrupt {
                            nid: entry.nid,
                            what: Corruption::DirectoryCycle,
                        };
                        return Err(fail(entry.nid, &child_path, cycle));
                    }
                    stack.push((entry.nid, child_path));
                }
                FileType::Regular if seen_files.insert(entry.nid) => {
                    if let Some(object) =
                        object(&child).map_err(|e| fail(entry.nid, &child_path, e))?
                    {
                        objects.insert(object.to_vec());
                    }
                }
                _ => {}
            }
        }
    }
    Ok(objects)
}

/// The object `inode` references, if composefs tools take its content from the basedir (a
/// metacopy or a stray redirect): its redirect without the leading `/`s.
pub fn object<'img>(inode: &Inode<'img>) -> Result<Option<&'img [u8]>, Error> {
    let redirect = match Placement::of(inode)? {
        Placement::Image => None,
        Placement::StrayRedirect(redirect) => Some(redirect),
        Placement::Metacopy(Metacopy { redirect, .. }) => redirect,
    };
    Ok(redirect.map(|redirect| {
        let start = redirect
            .iter()
            .position(|&b| b != b'/')
            .unwrap_or(redirect.len());
        &redirect[start..]
    }))
}

/// An objects directory, opened to ask which objects it has.
#[derive(Debug)]
pub struct ObjectStore {
    dir: OwnedFd,
}

impl ObjectStore {
    /// Opens the basedir.
    pub fn open(basedir: &Path) -> std::io::Result<ObjectStore> {
        let flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let dir = rustix::fs::open(basedir, flags, Mode::empty())?;
        Ok(ObjectStore { dir })
    }

    /// Whether the mount would find `object` (a path from [`referenced`]): it must resolve
    /// beneath the basedir without symlinks, as the server opens objects.
    pub fn has(&self, object: &[u8]) -> bool {
        let resolve =
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS;
        let flags = OFlags::PATH | OFlags::CLOEXEC;
        rustix::fs::openat2(
            &self.dir,
            OsStr::from_bytes(object),
            flags,
            Mode::empty(),
            resolve,
        )
        .is_ok()
    }

    /// The objects of `objects` this store lacks, in their order.
    pub fn missing<T: AsRef<[u8]>>(&self, objects: impl IntoIterator<Item = T>) -> Vec<T> {
        objects
            .into_iter()
            .filter(|o| !self.has(o.as_ref()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::composefs::test_image::{REG, build, inode};
    use crate::composefs::{METACOPY, REDIRECT};
    use crate::erofs::xattr_index::TRUSTED;

    #[test]
    fn a_file_references_the_object_its_redirect_names() {
        let image = build(
            &[
                (REG, &[]),
                (
                    REG,
                    &[(TRUSTED, METACOPY, b""), (TRUSTED, REDIRECT, b"/ab/one")],
                ),
                (REG, &[(TRUSTED, METACOPY, b"")]),
                (REG, &[(TRUSTED, REDIRECT, b"//cd/two")]),
                (REG, &[(TRUSTED, METACOPY, b""), (TRUSTED, REDIRECT, b"ef")]),
            ],
            None,
        );
        let objects: Vec<Option<&[u8]>> =
            (0..5).map(|i| object(&inode(&image, i)).unwrap()).collect();
        let expected: [Option<&[u8]>; 5] =
            [None, Some(b"ab/one"), None, Some(b"cd/two"), Some(b"ef")];
        assert_eq!(objects, expected);
    }

    #[test]
    fn an_object_is_present_only_beneath_the_basedir_without_symlinks() {
        let dir = tempfile::tempdir().unwrap();
        let basedir = dir.path().join("objects");
        std::fs::create_dir_all(basedir.join("ab")).unwrap();
        std::fs::write(basedir.join("ab/one"), b"").unwrap();
        std::fs::write(dir.path().join("outside"), b"").unwrap();
        std::os::unix::fs::symlink(dir.path().join("outside"), basedir.join("ab/link")).unwrap();
        let store = ObjectStore::open(&basedir).unwrap();
        let objects: [&[u8]; 4] = [b"ab/one", b"ab/two", b"../outside", b"ab/link"];
        let expected: Vec<&[u8]> = vec![b"ab/two", b"../outside", b"ab/link"];
        assert_eq!(store.missing(objects), expected);
    }
}
