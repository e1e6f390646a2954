//! The objects directory: each object is the content of a regular file, named by its
//! fs-verity digest (`xx/<62 hex>`), as `mkcomposefs --digest-store` and `cfsctl` store them.
//!
//! Objects are reflinked (`FICLONE`) from the source when the filesystem can, else copied with
//! `copy_file_range` (which lets a filesystem or NFS server copy without the data passing
//! through user space). Never hard-linked: a hard link shares the inode, so a later in-place
//! edit of the source would change the object under its digest (and its mode and owner would
//! be the source's, which may deny other users); a reflink shares only the blocks, copy on
//! write. An object is written unnamed (`O_TMPFILE`, or a temporary name where the filesystem
//! lacks it) and named only once complete, so no crash or signal leaves a partial object
//! under an object's name. An object already present with the right size is not rewritten.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use rustix::fs::{AtFlags, Mode, OFlags};
use rustix::io::Errno;

use super::{CreateError, hex};

/// An objects directory being filled.
pub struct ObjectStore {
    path: PathBuf,
    dir: OwnedFd,
    made: [AtomicBool; 256],
    /// Digests some thread has taken on: equal files are stored once.
    claimed: Mutex<std::collections::HashSet<[u8; 32]>>,
    /// Objects this run wrote.
    pub written: AtomicU64,
    /// Objects that were there already.
    pub present: AtomicU64,
}

impl ObjectStore {
    /// Opens `path`, creating it if needed.
    pub fn open(path: &Path) -> Result<ObjectStore, CreateError> {
        std::fs::create_dir_all(path).map_err(|e| CreateError::target(path, e))?;
        let dir = rustix::fs::open(
            path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| CreateError::target(path, e.into()))?;
        Ok(ObjectStore {
            path: path.to_path_buf(),
            dir,
            made: std::array::from_fn(|_| AtomicBool::new(false)),
            claimed: Mutex::default(),
            written: AtomicU64::new(0),
            present: AtomicU64::new(0),
        })
    }

    /// Stores `source` (`size` bytes, whose digest is `digest`) unless its object exists.
    pub fn store(&self, source: &File, digest: &[u8; 32], size: u64) -> Result<(), CreateError> {
        if !self
            .claimed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(*digest)
        {
            return Ok(());
        }
        let hex = hex(digest);
        let (prefix, name) = hex.split_at(2);
        let fail = |e: io::Error| CreateError::target(&self.path.join(prefix).join(name), e);
        if !self.made[digest[0] as usize].load(Ordering::Relaxed) {
            match rustix::fs::mkdirat(&self.dir, prefix, Mode::from_raw_mode(0o755)) {
                Ok(()) | Err(Errno::EXIST) => {}
                Err(e) => return Err(fail(e.into())),
            }
            self.made[digest[0] as usize].store(true, Ordering::Relaxed);
        }
        let subdir = rustix::fs::openat(
            &self.dir,
            prefix,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| fail(e.into()))?;
        let replace = match rustix::fs::statat(&subdir, name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(stat) if stat.st_size as u64 == size => {
                self.present.fetch_add(1, Ordering::Relaxed);
                return Ok(());
            }
            // Truncated (say, written just before a power loss): replaced.
            Ok(_) => true,
            Err(Errno::NOENT) => false,
            Err(e) => return Err(fail(e.into())),
        };
        let mode = Mode::from_raw_mode(0o644);
        let flags = OFlags::WRONLY | OFlags::CLOEXEC;
        match rustix::fs::openat(&subdir, ".", flags | OFlags::TMPFILE, mode) {
            Ok(object) => {
                copy(source, &object, size).map_err(fail)?;
                if replace {
                    let _ = rustix::fs::unlinkat(&subdir, name, AtFlags::empty());
                }
                let unnamed = format!("/proc/self/fd/{}", object.as_raw_fd());
                let cwd = rustix::fs::CWD;
                match rustix::fs::linkat(cwd, &unnamed, &subdir, name, AtFlags::SYMLINK_FOLLOW) {
                    // Another process stored it meanwhile.
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(fail(e.into())),
                }
            }
            Err(Errno::OPNOTSUPP | Errno::ISDIR | Errno::INVAL) => {
                let temporary = format!(".{name}.tmp{}", std::process::id());
                let object = rustix::fs::openat(&subdir, &temporary, flags | OFlags::CREATE, mode)
                    .map_err(|e| fail(e.into()))?;
                let named = copy(source, &object, size).and_then(|()| {
                    rustix::fs::renameat(&subdir, &temporary, &subdir, name).map_err(Into::into)
                });
                if let Err(e) = named {
                    let _ = rustix::fs::unlinkat(&subdir, &temporary, AtFlags::empty());
                    return Err(fail(e));
                }
            }
            Err(e) => return Err(fail(e.into())),
        }
        self.written.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Makes every object written so far durable (before an image refers to them).
    pub fn sync(&self) -> Result<(), CreateError> {
        rustix::fs::syncfs(&self.dir).map_err(|e| CreateError::target(&self.path, e.into()))
    }
}

/// Copies `size` bytes of `source` into the empty file `object`: a reflink if the filesystem
/// shares blocks, else `copy_file_range`, else reads and writes.
fn copy(source: &File, object: &OwnedFd, size: u64) -> io::Result<()> {
    if rustix::fs::ioctl_ficlone(object, source).is_ok() {
        return Ok(());
    }
    let (mut from, mut to) = (0u64, 0u64);
    while from < size {
        let want = (size - from).min(1 << 30) as usize;
        match rustix::fs::copy_file_range(source, Some(&mut from), object, Some(&mut to), want) {
            Ok(0) => return Err(changed()),
            Ok(_) => {}
            // Across filesystems on older kernels, or a filesystem without it.
            Err(Errno::XDEV | Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) if from == 0 => {
                return copy_by_reading(source, object, size);
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

fn copy_by_reading(source: &File, object: &OwnedFd, size: u64) -> io::Result<()> {
    let object = File::from(object.as_fd().try_clone_to_owned()?);
    let mut buffer = vec![0u8; 1 << 20];
    let mut at = 0u64;
    while at < size {
        let want = (size - at).min(buffer.len() as u64) as usize;
        let got = source.read_at(&mut buffer[..want], at)?;
        if got == 0 {
            return Err(changed());
        }
        object.write_all_at(&buffer[..got], at)?;
        at += got as u64;
    }
    Ok(())
}

/// A source file shrank between hashing and copying.
pub fn changed() -> io::Error {
    io::Error::other("file changed while being read")
}
