//! Xattrs as a composefs image stores them, as the reference writers lay them out: names split
//! into a standard prefix index and a suffix, an inode's xattrs in its inline body behind a
//! bloom filter, and every name/value pair that occurs more than once stored once in the
//! shared xattr area.
//!
//! Order matters for the bytes. V0/V1 (`mkcomposefs`) sort an inode's xattrs by full name,
//! then value length, then value, and write the shared table in the reverse of that order;
//! V2 (composefs-rs' own) keeps an inode's xattrs in the order they were added and writes the
//! shared table in (index, suffix, value) order.

use std::cmp::Ordering;
use std::collections::HashMap;

use xxhash_rust::xxh32::xxh32;
use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32};

use crate::erofs::XATTR_PREFIXES;
use crate::erofs::format::{
    XATTR_FILTER_SEED, XattrEntry, XattrIbodyHeader, xattr_entry_size, xattr_index,
};

/// An inode refers to at most this many shared xattrs (`h_shared_count` is a byte).
const MAX_SHARED: usize = u8::MAX as usize;

/// One xattr as stored: prefix index, name suffix, value.
pub type Stored<'a> = (u8, &'a [u8], &'a [u8]);

/// Splits `name` into its prefix index and suffix, trying the longest index first as the
/// writers do. `mkcomposefs` has no `lustre.` prefix, so V0/V1 images (`with_lustre` false)
/// store such names whole, as it does.
pub fn split(name: &[u8], with_lustre: bool) -> (u8, &[u8]) {
    for row in XATTR_PREFIXES.iter().rev() {
        if row.index == xattr_index::LUSTRE && !with_lustre {
            continue;
        }
        if let Some(suffix) = name.strip_prefix(row.prefix) {
            return (row.index, suffix);
        }
    }
    (xattr_index::NONE, name)
}

/// `mkcomposefs`' order: full name (prefix string and suffix), then value length, then value.
pub fn cmp_full_name(a: &Stored<'_>, b: &Stored<'_>) -> Ordering {
    fn full<'a>(x: &Stored<'a>) -> impl Iterator<Item = u8> + 'a {
        let prefix = XATTR_PREFIXES[usize::from(x.0)].prefix;
        prefix.iter().chain(x.1.iter()).copied()
    }
    full(a)
        .cmp(full(b))
        .then_with(|| a.2.len().cmp(&b.2.len()))
        .then_with(|| a.2.cmp(b.2))
}

/// Size of one stored entry: its header, name suffix and value, 4-aligned.
pub fn entry_size((_, suffix, value): Stored<'_>) -> usize {
    xattr_entry_size(suffix.len(), value.len())
}

/// Appends one entry (`erofs_xattr_entry` + name + value, zero-padded).
pub fn write_entry(out: &mut Vec<u8>, (index, suffix, value): Stored<'_>) {
    let header = XattrEntry {
        // Checked by the caller: suffixes fit a byte and values 16 bits.
        name_len: suffix.len() as u8,
        name_index: index,
        value_size: U16::new(value.len() as u16),
    };
    let start = out.len();
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(suffix);
    out.extend_from_slice(value);
    out.resize(start + entry_size((index, suffix, value)), 0);
}

/// The shared xattr table: every pair that occurs more than once among all inodes' xattrs, in
/// table order, with its byte offset in the table.
pub struct Shared<'a> {
    offsets: HashMap<Stored<'a>, u32>,
    /// The entries in table order.
    pub entries: Vec<Stored<'a>>,
}

impl<'a> Shared<'a> {
    /// Picks the pairs to share among all inodes' xattrs. `epoch1`: V0/V1's table order.
    pub fn new(inodes: &[Vec<Stored<'a>>], epoch1: bool) -> Shared<'a> {
        let mut counts: HashMap<Stored<'a>, u32> = HashMap::new();
        for &xattr in inodes.iter().flatten() {
            *counts.entry(xattr).or_default() += 1;
        }
        let mut entries: Vec<Stored<'a>> = counts
            .into_iter()
            .filter(|&(_, count)| count > 1)
            .map(|(xattr, _)| xattr)
            .collect();
        if epoch1 {
            entries.sort_unstable_by(|a, b| cmp_full_name(b, a));
        } else {
            entries.sort_unstable();
        }
        let mut offsets = HashMap::with_capacity(entries.len());
        let mut offset = 0;
        for &xattr in &entries {
            offsets.insert(xattr, offset);
            offset += entry_size(xattr) as u32;
        }
        Shared { offsets, entries }
    }

    /// The shared table's size in bytes.
    pub fn size(&self) -> usize {
        self.entries.iter().map(|&x| entry_size(x)).sum()
    }

    /// The shared table's bytes.
    pub fn table(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.size());
        for &xattr in &self.entries {
            write_entry(&mut out, xattr);
        }
        out
    }

    /// An inode's xattr body (`erofs_xattr_ibody_header`, shared ids, inline entries), empty
    /// for an inode without xattrs. `base` is the byte offset the shared ids count from to the
    /// start of the table (its size does not depend on it).
    pub fn body(&self, xattrs: &[Stored<'a>], base: u32) -> Vec<u8> {
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
                Some(&offset) if shared.len() < MAX_SHARED => shared.push((base + offset) / 4),
                _ => local.push(xattr),
            }
        }
        let header = XattrIbodyHeader {
            // A set bit in the stored filter means "no xattr hashes here".
            name_filter: U32::new(!filter),
            shared_count: shared.len() as u8,
            reserved: [0; 7],
        };
        let mut out = header.as_bytes().to_vec();
        for id in shared {
            out.extend_from_slice(U32::new(id).as_bytes());
        }
        for xattr in local {
            write_entry(&mut out, xattr);
        }
        out
    }
}

/// `i_xattr_icount` for a body of `size` bytes (the inverse of
/// [`xattr_ibody_size`](crate::erofs::format::xattr_ibody_size)).
pub fn icount(size: usize) -> u16 {
    if size == 0 {
        0
    } else {
        ((size - size_of::<XattrIbodyHeader>()) / 4 + 1) as u16
    }
}
