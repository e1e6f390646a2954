//! The core's answers as FUSE reply bytes, written into a ring entry's payload buffer (the
//! structs and their encoding are [`abi`](crate::server::abi)'s). Each writer returns how
//! many bytes of the payload the reply takes.

use zerocopy::IntoBytes;

use crate::server::abi::{fuse_dirent, fuse_direntplus, fuse_entry_out, fuse_getxattr_out};
use crate::server::core::{Errno, ReaddirEntry, ReaddirPlusEntry, XattrReply, fill_listing};

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
    entries: impl Iterator<Item = Result<ReaddirEntry<'a>, Errno>>,
) -> Result<usize, Errno> {
    let mut len = 0;
    fill_listing(entries, |entry| {
        let head = fuse_dirent::of(entry.node, &entry);
        !append_entry(out, &mut len, head.as_bytes(), entry.name)
    })?;
    Ok(len)
}

/// As [`dirents`], with each entry's attributes.
pub(super) fn direntplus<'a>(
    out: &mut [u8],
    entries: impl Iterator<Item = Result<ReaddirPlusEntry<'a>, Errno>>,
) -> Result<usize, Errno> {
    let mut len = 0;
    fill_listing(entries, |ReaddirPlusEntry { entry, attr, ttl }| {
        let head = fuse_direntplus {
            entry_out: fuse_entry_out::with_attr(&attr, ttl),
            dirent: fuse_dirent::of(attr.ino, &entry),
        };
        !append_entry(out, &mut len, head.as_bytes(), entry.name)
    })?;
    Ok(len)
}

/// Copies `bytes` to the start of `out` (EIO if it does not fit: the kernel sizes the payload
/// for every reply the server sends).
pub(super) fn put(out: &mut [u8], bytes: &[u8]) -> Result<usize, Errno> {
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
