//! The core's answers as FUSE reply bytes, written into a ring entry's payload buffer. Each
//! encoder returns how many bytes of the payload the reply takes.

use std::time::Duration;

use zerocopy::IntoBytes;

use super::abi::{
    FOPEN_CACHE_DIR, FOPEN_KEEP_CACHE, FOPEN_PASSTHROUGH, fuse_attr, fuse_attr_out, fuse_dirent,
    fuse_direntplus, fuse_entry_out, fuse_getxattr_out, fuse_kstatfs, fuse_open_out,
    fuse_statfs_out,
};
use crate::erofs::FileType;
use crate::server::core::{
    Attr, DirEntry, DirEntryPlus, Entry, Errno, Opened, Statfs, TTL, XattrReply, fill_listing,
};
use crate::server::passthrough::Backing;

/// A lookup's entry (node id 0 for a negative entry, which the kernel caches for its TTL).
pub(super) fn entry(out: &mut [u8], entry: &Entry) -> Result<usize, Errno> {
    let reply = match &entry.attr {
        Some(attr) => entry_out(attr, entry.ttl),
        None => fuse_entry_out {
            entry_valid: entry.ttl.as_secs(),
            entry_valid_nsec: entry.ttl.subsec_nanos(),
            ..fuse_entry_out::default()
        },
    };
    put(out, reply.as_bytes())
}

/// Attributes, valid for [`TTL`].
pub(super) fn attr(out: &mut [u8], attr: &Attr) -> Result<usize, Errno> {
    let reply = fuse_attr_out {
        attr_valid: TTL.as_secs(),
        attr_valid_nsec: TTL.subsec_nanos(),
        dummy: 0,
        attr: fuse_attr_of(attr),
    };
    put(out, reply.as_bytes())
}

/// Bytes (a symlink target, an xattr value or name list).
pub(super) fn data(out: &mut [u8], data: &[u8]) -> Result<usize, Errno> {
    put(out, data)
}

/// An open file or directory.
pub(super) fn open(out: &mut [u8], opened: &Opened<Backing>) -> Result<usize, Errno> {
    let mut flags = 0;
    if opened.cache.keep_cache {
        flags |= FOPEN_KEEP_CACHE;
    }
    if opened.cache.cache_dir {
        flags |= FOPEN_CACHE_DIR;
    }
    let backing_id = match &opened.backing {
        Some(backing) => {
            flags |= FOPEN_PASSTHROUGH;
            backing.id() as i32
        }
        None => 0,
    };
    let reply = fuse_open_out {
        fh: opened.handle.fh(),
        open_flags: flags,
        backing_id,
    };
    put(out, reply.as_bytes())
}

/// The filesystem's sizes: nothing free, as fuser's adapter reports it.
pub(super) fn statfs(out: &mut [u8], s: &Statfs) -> Result<usize, Errno> {
    let reply = fuse_statfs_out {
        st: fuse_kstatfs {
            blocks: s.blocks,
            files: s.files,
            bsize: s.block_size,
            namelen: s.name_len,
            frsize: s.block_size,
            ..fuse_kstatfs::default()
        },
    };
    put(out, reply.as_bytes())
}

/// An xattr value or name list, or its size.
pub(super) fn xattr(out: &mut [u8], reply: XattrReply<'_>) -> Result<usize, Errno> {
    match reply {
        XattrReply::Size(size) => put(out, fuse_getxattr_out { size, padding: 0 }.as_bytes()),
        XattrReply::Data(value) => put(out, value),
    }
}

/// As many directory entries as fit in `out` (a listing resumes at the next one), up to an
/// error (as [`fill_listing`] hands them over).
pub(super) fn dirents<'a>(
    out: &mut [u8],
    entries: impl Iterator<Item = Result<DirEntry<'a>, Errno>>,
) -> Result<usize, Errno> {
    let mut len = 0;
    fill_listing(entries, |entry| {
        let head = dirent(entry.node, &entry);
        !append_entry(out, &mut len, head.as_bytes(), entry.name)
    })?;
    Ok(len)
}

/// As [`dirents`], with each entry's attributes.
pub(super) fn direntplus<'a>(
    out: &mut [u8],
    entries: impl Iterator<Item = Result<DirEntryPlus<'a>, Errno>>,
) -> Result<usize, Errno> {
    let mut len = 0;
    fill_listing(entries, |DirEntryPlus { entry, attr, ttl }| {
        let head = fuse_direntplus {
            entry_out: entry_out(&attr, ttl),
            dirent: dirent(attr.ino, &entry),
        };
        !append_entry(out, &mut len, head.as_bytes(), entry.name)
    })?;
    Ok(len)
}

fn entry_out(attr: &Attr, ttl: Duration) -> fuse_entry_out {
    fuse_entry_out {
        nodeid: attr.ino,
        generation: 0,
        entry_valid: ttl.as_secs(),
        attr_valid: ttl.as_secs(),
        entry_valid_nsec: ttl.subsec_nanos(),
        attr_valid_nsec: ttl.subsec_nanos(),
        attr: fuse_attr_of(attr),
    }
}

fn dirent(ino: u64, entry: &DirEntry<'_>) -> fuse_dirent {
    fuse_dirent {
        ino,
        off: entry.next_offset,
        namelen: entry.name.len() as u32,
        r#type: type_bits(entry.kind) >> 12,
    }
}

/// The image stores one time: access, modification and change times are all its mtime
/// (seconds as two's complement, as the kernel reads them).
pub(super) fn fuse_attr_of(attr: &Attr) -> fuse_attr {
    let (secs, nanos) = (attr.mtime.secs as u64, attr.mtime.nanos);
    fuse_attr {
        ino: attr.ino,
        size: attr.size,
        blocks: attr.blocks,
        atime: secs,
        mtime: secs,
        ctime: secs,
        atimensec: nanos,
        mtimensec: nanos,
        ctimensec: nanos,
        mode: type_bits(attr.kind) | u32::from(attr.perm),
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: attr.rdev,
        blksize: attr.block_size,
        flags: 0,
    }
}

/// The `S_IFMT` bits of a file type.
fn type_bits(kind: FileType) -> u32 {
    match kind {
        FileType::Fifo => 0o010000,
        FileType::CharDevice => 0o020000,
        FileType::Directory => 0o040000,
        FileType::BlockDevice => 0o060000,
        FileType::Regular => 0o100000,
        FileType::Symlink => 0o120000,
        FileType::Socket => 0o140000,
    }
}

/// Copies `bytes` to the start of `out` (EIO if it does not fit: the kernel sizes the payload
/// for every reply the server sends).
fn put(out: &mut [u8], bytes: &[u8]) -> Result<usize, Errno> {
    let dest = out.get_mut(..bytes.len()).ok_or(Errno::IO)?;
    dest.copy_from_slice(bytes);
    Ok(bytes.len())
}

/// Writes a directory entry at `*end` in `out` (its header, its name and zeros up to the next
/// multiple of 8) and moves `*end` past it; `false`, writing nothing, if it does not fit.
fn append_entry(out: &mut [u8], end: &mut usize, head: &[u8], name: &[u8]) -> bool {
    let len = head.len() + name.len();
    let padded = len.next_multiple_of(8);
    let Some(dest) = out.get_mut(*end..*end + padded) else {
        return false;
    };
    dest[..head.len()].copy_from_slice(head);
    dest[head.len()..len].copy_from_slice(name);
    dest[len..].fill(0);
    *end += padded;
    true
}
