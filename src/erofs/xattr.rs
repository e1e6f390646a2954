//! Extended attributes: inline and shared entries, standard and long name prefixes, and the
//! name bloom filter (the kernel's `xattr.c`).
//!
//! Names are never concatenated: an [`XattrName`] is a static prefix (`user.`, `trusted.`, …),
//! an optional infix from the long-prefix table and a suffix, all borrowed.

use xxhash_rust::xxh32::Xxh32;
use zerocopy::little_endian::U32;

use super::bytes::ReadRef;
use super::error::{Corruption, Error, OrCorrupt, Result};
use super::format::{self, XattrEntry, XattrIbodyHeader, xattr_index};
use super::inode::Inode;
use super::superblock::Image;

/// A standard xattr name index and what it stands for: one row of [`XATTR_PREFIXES`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XattrPrefix {
    /// The name index ([`xattr_index`]).
    pub index: u8,
    /// The name prefix, or the whole name for the POSIX ACL indexes.
    pub prefix: &'static [u8],
    /// Whether [`prefix`](Self::prefix) is a whole name (no suffix follows it in a name Linux
    /// resolves) rather than a namespace.
    pub whole_name: bool,
    /// Whether Linux exposes xattrs with this index (the kernel has a handler for it).
    pub linux: bool,
}

impl XattrPrefix {
    /// The row of `index`, `None` for indexes the format does not define.
    pub fn of(index: u8) -> Option<&'static XattrPrefix> {
        XATTR_PREFIXES.get(usize::from(index))
    }

    /// A namespace Linux exposes (`user.`).
    const fn namespace(index: u8, prefix: &'static [u8]) -> XattrPrefix {
        XattrPrefix {
            index,
            prefix,
            whole_name: false,
            linux: true,
        }
    }

    /// A whole name Linux exposes (`system.posix_acl_access`).
    const fn whole_name(index: u8, name: &'static [u8]) -> XattrPrefix {
        XattrPrefix {
            whole_name: true,
            ..XattrPrefix::namespace(index, name)
        }
    }

    /// A prefix the format defines but Linux does not expose (`lustre.`).
    const fn hidden(index: u8, prefix: &'static [u8]) -> XattrPrefix {
        XattrPrefix {
            linux: false,
            ..XattrPrefix::namespace(index, prefix)
        }
    }
}

/// Every standard xattr name index with its prefix, indexed by name index: the one table both
/// directions (index to name, name to index) and the dumpfile writer use.
pub const XATTR_PREFIXES: [XattrPrefix; 7] = {
    use xattr_index::*;
    [
        XattrPrefix::hidden(NONE, b""),
        XattrPrefix::namespace(USER, b"user."),
        XattrPrefix::whole_name(POSIX_ACL_ACCESS, b"system.posix_acl_access"),
        XattrPrefix::whole_name(POSIX_ACL_DEFAULT, b"system.posix_acl_default"),
        XattrPrefix::namespace(TRUSTED, b"trusted."),
        XattrPrefix::hidden(LUSTRE, b"lustre."),
        XattrPrefix::namespace(SECURITY, b"security."),
    ]
};

// `XattrPrefix::of` finds a row by position.
const _: () = {
    let mut i = 0;
    while i < XATTR_PREFIXES.len() {
        assert!(XATTR_PREFIXES[i].index as usize == i);
        i += 1;
    }
};

/// The prefix string of a standard xattr name index, `None` for indexes Linux does not expose.
pub fn index_prefix(index: u8) -> Option<&'static [u8]> {
    XattrPrefix::of(index)
        .filter(|row| row.linux)
        .map(|row| row.prefix)
}

/// Splits a full xattr name into its standard index and the rest, as the kernel's handlers do.
/// `None` if no prefix Linux exposes matches (such names never exist in EROFS).
pub fn split_name(name: &[u8]) -> Option<(u8, &[u8])> {
    XATTR_PREFIXES
        .iter()
        .filter(|row| row.linux)
        .find_map(|row| {
            let rest = if row.whole_name {
                (name == row.prefix).then_some(&b""[..])
            } else {
                name.strip_prefix(row.prefix)
            };
            Some((row.index, rest?))
        })
}

/// An xattr name as stored: a standard name index, an infix from a long prefix (often empty)
/// and a suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct XattrName<'img> {
    /// Standard name index (`user.` = 1, …), after resolving any long prefix.
    pub index: u8,
    /// Infix contributed by a long name prefix.
    pub infix: &'img [u8],
    /// The rest of the name.
    pub suffix: &'img [u8],
}

impl<'img> XattrName<'img> {
    /// The standard prefix string, `None` for indexes Linux does not expose (e.g. lustre).
    pub fn prefix(&self) -> Option<&'static [u8]> {
        index_prefix(self.index)
    }

    /// The three parts of the full name (prefix, infix, suffix), or `None` if not exposable.
    pub fn parts(&self) -> Option<[&'img [u8]; 3]> {
        Some([self.prefix()?, self.infix, self.suffix])
    }

    /// Length of the full name.
    pub fn len(&self) -> usize {
        self.prefix().map_or(0, <[u8]>::len) + self.infix.len() + self.suffix.len()
    }

    /// Whether the full name is empty (never, for exposable names).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether the name after the standard prefix equals `rest`.
    pub fn rest_eq(&self, rest: &[u8]) -> bool {
        rest.len() == self.infix.len() + self.suffix.len()
            && rest.starts_with(self.infix)
            && rest[self.infix.len()..] == *self.suffix
    }

    /// Whether the name after the standard prefix equals the concatenation of `parts`.
    pub fn rest_eq_parts(&self, parts: &[&[u8]]) -> bool {
        let total: usize = parts.iter().map(|p| p.len()).sum();
        if total != self.infix.len() + self.suffix.len() {
            return false;
        }
        let mut stored = self.infix.iter().chain(self.suffix);
        parts
            .iter()
            .flat_map(|p| p.iter())
            .all(|b| stored.next() == Some(b))
    }

    /// The full name as a new vector (for tools and tests, not hot paths).
    pub fn to_vec(&self) -> Vec<u8> {
        self.parts().map(|p| p.concat()).unwrap_or_default()
    }
}

/// One xattr, borrowed from the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Xattr<'img> {
    /// The name.
    pub name: XattrName<'img>,
    /// The value.
    pub value: &'img [u8],
}

/// The xattrs of one inode.
#[derive(Debug, Clone, Copy)]
pub struct Xattrs<'img> {
    image: &'img Image,
    nid: u64,
    /// Bloom filter, if the image has one: a set bit means "absent".
    filter: Option<u32>,
    /// Shared xattr ids.
    shared: &'img [U32],
    /// Inline entries.
    inline: &'img [u8],
}

impl<'img> Inode<'img> {
    /// This inode's xattrs (an empty set if it has none).
    pub fn xattrs(&self) -> Result<Xattrs<'img>> {
        let image = self.image;
        let nid = self.nid();
        let empty = Xattrs {
            image,
            nid,
            filter: None,
            shared: &[],
            inline: &[],
        };
        let size = self.xattr_size();
        if size == 0 {
            return Ok(empty);
        }
        let truncated = Corruption::XattrTruncated;
        let area = image
            .read_bytes_at(self.offset + u64::from(self.inode_size), u64::from(size))
            .or_corrupt(nid, truncated)?;
        let header: &XattrIbodyHeader = area.read_at(0).or_corrupt(nid, truncated)?;
        let shared_start = size_of::<XattrIbodyHeader>();
        let shared_count = usize::from(header.shared_count);
        let shared = area
            .read_slice_at(shared_start as u64, shared_count)
            .or_corrupt(nid, truncated)?;
        let inline = &area[shared_start + size_of_val(shared)..];
        Ok(Xattrs {
            filter: image
                .superblock()
                .xattr_filter
                .then(|| header.name_filter.get()),
            shared,
            inline,
            ..empty
        })
    }
}

impl<'img> Xattrs<'img> {
    /// Whether the inode has no xattr area at all.
    pub fn is_empty(&self) -> bool {
        self.shared.is_empty() && self.inline.is_empty()
    }

    /// Iterates inline entries, then shared ones (the order the kernel lists them in).
    pub fn iter(&self) -> XattrIter<'img> {
        XattrIter {
            xattrs: *self,
            inline_pos: 0,
            shared_pos: 0,
            failed: false,
        }
    }

    /// The value of the xattr with full name `name`, consulting the bloom filter first.
    pub fn get(&self, name: &[u8]) -> Result<Option<&'img [u8]>> {
        match split_name(name) {
            Some((index, rest)) => self.get_split(index, rest),
            None => Ok(None),
        }
    }

    /// The value of the xattr with standard index `index` and remaining name `rest`.
    pub fn get_split(&self, index: u8, rest: &[u8]) -> Result<Option<&'img [u8]>> {
        self.get_parts(index, &[rest])
    }

    /// The value of the xattr with standard index `index` whose remaining name is the
    /// concatenation of `parts`: lets callers look up a name they would otherwise have to build
    /// (e.g. an escaped overlay name) without allocating.
    pub fn get_parts(&self, index: u8, parts: &[&[u8]]) -> Result<Option<&'img [u8]>> {
        if self.is_empty() || self.filtered_out_parts(index, parts) {
            return Ok(None);
        }
        for xattr in self.iter() {
            let xattr = xattr?;
            if xattr.name.index == index && xattr.name.rest_eq_parts(parts) {
                return Ok(Some(xattr.value));
            }
        }
        Ok(None)
    }

    /// Whether the bloom filter proves the name absent.
    pub fn filtered_out(&self, index: u8, rest: &[u8]) -> bool {
        self.filtered_out_parts(index, &[rest])
    }

    fn filtered_out_parts(&self, index: u8, parts: &[&[u8]]) -> bool {
        let Some(filter) = self.filter else {
            return false;
        };
        let mut hasher = Xxh32::new(format::XATTR_FILTER_SEED.wrapping_add(u32::from(index)));
        for part in parts {
            hasher.update(part);
        }
        filter & (1 << (hasher.digest() & 31)) != 0
    }

    /// Parses the entry at byte `pos` of `area`, returning it and its aligned size.
    fn parse_entry(&self, area: &'img [u8], pos: usize) -> Result<(Xattr<'img>, usize)> {
        let truncated = Corruption::XattrTruncated;
        let entry: &XattrEntry = area.read_at(pos as u64).or_corrupt(self.nid, truncated)?;
        let name_len = usize::from(entry.name_len);
        let value_len = usize::from(entry.value_size.get());
        let name_pos = (pos + size_of::<XattrEntry>()) as u64;
        let suffix = area
            .read_bytes_at(name_pos, name_len as u64)
            .or_corrupt(self.nid, truncated)?;
        let value = area
            .read_bytes_at(name_pos + name_len as u64, value_len as u64)
            .or_corrupt(self.nid, truncated)?;
        let (index, infix) = if entry.name_index & xattr_index::LONG_PREFIX != 0 {
            self.image
                .long_prefix(entry.name_index & xattr_index::LONG_PREFIX_MASK)
                .or_corrupt(self.nid, Corruption::BadXattrPrefix)?
        } else {
            (entry.name_index, &[][..])
        };
        let name = XattrName {
            index,
            infix,
            suffix,
        };
        Ok((
            Xattr { name, value },
            format::xattr_entry_size(name_len, value_len),
        ))
    }

    fn shared_entry(&self, id: u32) -> Result<Xattr<'img>> {
        let sb = self.image.superblock();
        let bytes = self.image.bytes();
        let pos = format::shared_xattr_pos(sb.xattr_blkaddr, sb.block_bits, id)
            .and_then(|pos| usize::try_from(pos).ok())
            .filter(|&pos| pos < bytes.len())
            .or_corrupt(self.nid, Corruption::SharedXattrOutOfRange)?;
        Ok(self.parse_entry(bytes, pos)?.0)
    }
}

/// Iterator over an inode's xattrs; yields at most one error, then stops.
#[derive(Debug, Clone)]
pub struct XattrIter<'img> {
    xattrs: Xattrs<'img>,
    inline_pos: usize,
    shared_pos: usize,
    failed: bool,
}

impl<'img> XattrIter<'img> {
    fn step(&mut self) -> Result<Option<Xattr<'img>>> {
        let x = &self.xattrs;
        if self.inline_pos < x.inline.len() {
            let (xattr, size) = x.parse_entry(x.inline, self.inline_pos)?;
            // Entries must tile the inline area exactly, as the kernel requires.
            if size > x.inline.len() - self.inline_pos {
                return Err(Error::Corrupt {
                    nid: x.nid,
                    what: Corruption::XattrTruncated,
                });
            }
            self.inline_pos += size;
            return Ok(Some(xattr));
        }
        if let Some(id) = x.shared.get(self.shared_pos) {
            self.shared_pos += 1;
            return x.shared_entry(id.get()).map(Some);
        }
        Ok(None)
    }
}

impl<'img> Iterator for XattrIter<'img> {
    type Item = Result<Xattr<'img>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.step() {
            Ok(Some(x)) => Some(Ok(x)),
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
