//! The source tree as the image will hold it, read with `lstat`, `readdir`, `readlink` and
//! `llistxattr`/`lgetxattr`. Regular files over [`INLINE_MAX`] bytes become jobs for the
//! hashing workers; the tree refers to them by job number.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::CreateError;

/// Regular files up to this size are stored in the image, as composefs does
/// (`mkcomposefs`, `INLINE_CONTENT_MAX_V0` in composefs-rs); larger ones become objects.
pub const INLINE_MAX: u64 = 64;

/// The tree; `nodes[0]` is the root directory.
pub struct Tree {
    /// Every inode once (hard links share a node).
    pub nodes: Vec<Node>,
}

/// One inode of the tree.
pub struct Node {
    /// `st_mode`, file type bits included.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time (seconds, nanoseconds).
    pub mtime: (i64, u32),
    /// Extended attributes by full name, sorted by name, as in the source.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// What kind of inode, with its content.
    pub kind: Kind,
}

/// A node's type and content.
pub enum Kind {
    /// Entries sorted by name (without `.` and `..`), with their node numbers.
    Directory(Vec<(Box<[u8]>, usize)>),
    /// A regular file stored in the image (at most [`INLINE_MAX`] bytes from a directory; any
    /// size from a dumpfile).
    Inline(Vec<u8>),
    /// A regular file stored as an object: the number of its hashing job.
    External(usize),
    /// A regular file whose content is the object named by `digest` (from a dumpfile):
    /// `verity` says whether the image carries the digest for checking (`trusted.overlay.metacopy`)
    /// or only the redirect to it.
    Object {
        /// The object's fs-verity digest, which names it.
        digest: [u8; 32],
        /// Whether the image records the digest (a dumpfile line with a digest).
        verity: bool,
        /// The file's size.
        size: u64,
    },
    /// A regular file of this size whose content is nowhere (a dumpfile line with neither
    /// content nor object): a metacopy file without a redirect.
    Sparse(u64),
    /// A symbolic link and its target.
    Symlink(Vec<u8>),
    /// A character or block device (which one is in `mode`) and its `st_rdev`.
    Device(u64),
    /// A named pipe or a socket (which one is in `mode`).
    Special,
}

/// A regular file to hash (and store as an object).
pub struct FileJob {
    /// The job number, which the tree's [`Kind::External`] refers to.
    pub index: usize,
    /// Where the file is.
    pub path: PathBuf,
    /// Its size when found.
    pub size: u64,
}

/// Reads the tree under `source`, handing each file to hash to `dispatch` as soon as it is
/// found, leaving out the inodes in `skip` (`st_dev`, `st_ino`). Stops with
/// [`CreateError::Interrupted`] once `quit` says so.
pub fn scan(
    source: &Path,
    skip: &[(u64, u64)],
    quit: &dyn Fn() -> bool,
    mut dispatch: impl FnMut(FileJob),
) -> Result<Tree, CreateError> {
    let meta = std::fs::metadata(source).map_err(|e| CreateError::source(source, e))?;
    if !meta.is_dir() {
        return Err(CreateError::NotADirectory(source.to_path_buf()));
    }
    let mut tree = Tree {
        nodes: vec![node(source, &meta, Kind::Directory(Vec::new()))?],
    };
    let mut jobs = 0;
    let mut hardlinks: HashMap<(u64, u64), usize> = HashMap::new();
    let mut pending = vec![(0usize, source.to_path_buf())];
    while let Some((dir, path)) = pending.pop() {
        let mut names = Vec::new();
        for entry in std::fs::read_dir(&path).map_err(|e| CreateError::source(&path, e))? {
            let entry = entry.map_err(|e| CreateError::source(&path, e))?;
            names.push(entry.file_name().as_bytes().to_vec().into_boxed_slice());
        }
        names.sort_unstable();
        let mut children = Vec::with_capacity(names.len());
        for name in names {
            if quit() {
                return Err(CreateError::Interrupted(0));
            }
            let child = path.join(OsStr::from_bytes(&name));
            let meta =
                std::fs::symlink_metadata(&child).map_err(|e| CreateError::source(&child, e))?;
            let key = (meta.dev(), meta.ino());
            if skip.contains(&key) {
                continue;
            }
            // Whiteouts are never hard links in an image (each is its own inode, as composefs
            // requires).
            let linkable = !meta.is_dir() && meta.nlink() > 1 && !is_whiteout(&meta);
            if linkable {
                if let Some(&linked) = hardlinks.get(&key) {
                    children.push((name, linked));
                    continue;
                }
            }
            let file_type = meta.file_type();
            let kind = if file_type.is_dir() {
                Kind::Directory(Vec::new())
            } else if file_type.is_file() && meta.len() > INLINE_MAX {
                dispatch(FileJob {
                    index: jobs,
                    path: child.clone(),
                    size: meta.len(),
                });
                jobs += 1;
                Kind::External(jobs - 1)
            } else if file_type.is_file() {
                let content = std::fs::read(&child).map_err(|e| CreateError::source(&child, e))?;
                if content.len() as u64 > INLINE_MAX {
                    return Err(CreateError::source(&child, super::store::changed()));
                }
                Kind::Inline(content)
            } else if file_type.is_symlink() {
                let target =
                    std::fs::read_link(&child).map_err(|e| CreateError::source(&child, e))?;
                Kind::Symlink(target.into_os_string().into_vec())
            } else if file_type.is_char_device() || file_type.is_block_device() {
                Kind::Device(meta.rdev())
            } else {
                Kind::Special
            };
            let index = tree.nodes.len();
            tree.nodes.push(node(&child, &meta, kind)?);
            if meta.is_dir() {
                pending.push((index, child));
            } else if linkable {
                hardlinks.insert(key, index);
            }
            children.push((name, index));
        }
        tree.nodes[dir].kind = Kind::Directory(children);
    }
    Ok(tree)
}

/// An overlayfs whiteout: a character device 0/0.
fn is_whiteout(meta: &std::fs::Metadata) -> bool {
    meta.file_type().is_char_device() && meta.rdev() == 0
}

fn node(path: &Path, meta: &std::fs::Metadata, kind: Kind) -> Result<Node, CreateError> {
    Ok(Node {
        mode: meta.mode(),
        uid: meta.uid(),
        gid: meta.gid(),
        mtime: (meta.mtime(), meta.mtime_nsec() as u32),
        xattrs: read_xattrs(path).map_err(|e| CreateError::source(path, e))?,
        kind,
    })
}

/// The xattrs of `path` itself (not of a symlink's target), sorted by name.
fn read_xattrs(path: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let names = match read_sized(|buf| rustix::fs::llistxattr(path, buf)) {
        Ok(names) => names,
        Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NOTSUP.raw_os_error()) => {
            return Ok(Vec::new());
        }
        Err(e) => return Err(e),
    };
    let mut xattrs = Vec::new();
    for name in names.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        let cname = std::ffi::CString::new(name).map_err(io::Error::other)?;
        match read_sized(|buf| rustix::fs::lgetxattr(path, cname.as_c_str(), buf)) {
            Ok(value) => xattrs.push((name.to_vec(), value)),
            // Removed since it was listed.
            Err(e) if e.raw_os_error() == Some(rustix::io::Errno::NODATA.raw_os_error()) => {}
            Err(e) => return Err(e),
        }
    }
    xattrs.sort_unstable();
    Ok(xattrs)
}

/// Calls a `*xattr` function with a buffer large enough for its answer.
fn read_sized(mut call: impl FnMut(&mut [u8]) -> rustix::io::Result<usize>) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 256];
    loop {
        match call(&mut buf) {
            Ok(len) => {
                buf.truncate(len);
                return Ok(buf);
            }
            Err(rustix::io::Errno::RANGE) => {
                let len = call(&mut [])?;
                buf.resize(len.max(buf.len() * 2), 0);
            }
            Err(e) => return Err(e.into()),
        }
    }
}
