//! Xattrs as an EROFS image stores them: names split into a standard prefix index and a
//! suffix, an inode's xattrs in its inline body behind a bloom filter, and every
//! name/value pair that several inodes carry stored once in the shared xattr area.

use std::collections::HashMap;

use xxhash_rust::xxh32::xxh32;

use crate::erofs::format::XATTR_FILTER_SEED;

/// Name prefixes by EROFS index (`EROFS_XATTR_INDEX_*`); 0 stores the whole name.
const PREFIXES: [&[u8]; 7] = [
    b"",
    b"user.",
    b"system.posix_acl_access",
    b"system.posix_acl_default",
    b"trusted.",
    b"lustre.",
    b"security.",
];
const LUSTRE: u8 = 5;
const HEADER: usize = 12;
/// An inode refers to at most this many shared xattrs (`h_shared_count` is a byte).
const MAX_SHARED: usize = u8::MAX as usize;

/// One xattr as stored: prefix index, name suffix, value.
pub type Stored<'a> = (u8, &'a [u8], &'a [u8]);

/// Splits `name` into its prefix index and suffix. `mkcomposefs` has no `lustre.` prefix, so
/// V0/V1 images (`with_lustre` false) store such names whole, as it does.
pub fn split(name: &[u8], with_lustre: bool) -> (u8, &[u8]) {
    for (index, prefix) in PREFIXES.iter().enumerate().rev() {
        if index as u8 == LUSTRE && !with_lustre {
            continue;
        }
        if let Some(suffix) = name.strip_prefix(*prefix) {
            return (index as u8, suffix);
        }
    }
    unreachable!("the empty prefix matches every name")
}

/// Size of one stored entry: 4 header bytes, name suffix and value, 4-aligned.
pub fn entry_size((_, suffix, value): Stored<'_>) -> usize {
    (4 + suffix.len() + value.len()).next_multiple_of(4)
}

/// Appends one entry (`erofs_xattr_entry` + name + value, zero-padded).
pub fn write_entry(out: &mut Vec<u8>, (index, suffix, value): Stored<'_>) {
    out.push(suffix.len() as u8);
    out.push(index);
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(suffix);
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
}

/// The shared xattr table: every pair carried by two inodes or more, in sorted order, with
/// its offset in the shared area.
pub struct Shared<'a> {
    offsets: HashMap<Stored<'a>, u32>,
    /// The entries in area order.
    pub entries: Vec<Stored<'a>>,
}

impl<'a> Shared<'a> {
    /// Picks the pairs to share among all inodes' xattrs.
    pub fn new(inodes: impl Iterator<Item = &'a [Stored<'a>]>) -> Shared<'a> {
        let mut counts: HashMap<Stored<'a>, u32> = HashMap::new();
        for xattrs in inodes {
            for &xattr in xattrs {
                *counts.entry(xattr).or_default() += 1;
            }
        }
        let mut entries: Vec<Stored<'a>> = counts
            .into_iter()
            .filter(|&(_, count)| count > 1)
            .map(|(xattr, _)| xattr)
            .collect();
        entries.sort_unstable();
        let mut offsets = HashMap::with_capacity(entries.len());
        let mut offset = 0;
        for &xattr in &entries {
            offsets.insert(xattr, offset);
            offset += entry_size(xattr) as u32;
        }
        Shared { offsets, entries }
    }

    /// The shared area's size in bytes.
    pub fn size(&self) -> usize {
        self.entries.iter().map(|&x| entry_size(x)).sum()
    }

    /// An inode's xattr body (`erofs_xattr_ibody_header`, shared ids, inline entries); empty
    /// for an inode without xattrs. `shared_base` is the shared area's offset from the
    /// start of the `xattr_blkaddr` block, in bytes.
    pub fn body(&self, xattrs: &[Stored<'a>], shared_base: u32) -> Vec<u8> {
        if xattrs.is_empty() {
            return Vec::new();
        }
        let mut filter = 0u32;
        let mut shared = Vec::new();
        let mut local = Vec::new();
        for &xattr in xattrs {
            let (index, suffix, _) = xattr;
            filter |= 1 << (xxh32(suffix, XATTR_FILTER_SEED.wrapping_add(index.into())) % 32);
            match self.offsets.get(&xattr) {
                Some(&offset) if shared.len() < MAX_SHARED => {
                    shared.push((shared_base + offset) / 4);
                }
                _ => local.push(xattr),
            }
        }
        let mut out = Vec::with_capacity(HEADER + 4 * shared.len());
        // A set bit in the stored filter means "no xattr hashes here".
        out.extend_from_slice(&(!filter).to_le_bytes());
        out.push(shared.len() as u8);
        out.extend_from_slice(&[0; 7]);
        for id in shared {
            out.extend_from_slice(&id.to_le_bytes());
        }
        for xattr in local {
            write_entry(&mut out, xattr);
        }
        out
    }
}

/// `i_xattr_icount` for a body of `size` bytes.
pub fn icount(size: usize) -> u16 {
    if size == 0 {
        0
    } else {
        ((size - HEADER) / 4 + 1) as u16
    }
}
