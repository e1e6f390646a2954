//! Extended attributes: inline and shared entries, standard and long name prefixes, and the
//! name bloom filter (the kernel's `xattr.c`).
//!
//! Names are never concatenated: an [`XattrName`] is a static prefix (`user.`, `trusted.`, …),
//! an optional infix from the long-prefix table and a suffix, all borrowed.

use xxhash_rust::xxh32::Xxh32;
use zerocopy::FromBytes;

use super::error::{Corruption, Result};
use super::format::{self, XattrEntry, XattrIbodyHeader, xattr_index};
use super::inode::Inode;
use super::superblock::Image;

/// The prefix string of a standard xattr name index, `None` for indexes Linux does not expose.
pub fn index_prefix(index: u8) -> Option<&'static [u8]> {
    Some(match index {
        xattr_index::USER => b"user.",
        xattr_index::POSIX_ACL_ACCESS => b"system.posix_acl_access",
        xattr_index::POSIX_ACL_DEFAULT => b"system.posix_acl_default",
        xattr_index::TRUSTED => b"trusted.",
        xattr_index::SECURITY => b"security.",
        _ => return None,
    })
}

/// Splits a full xattr name into its standard index and the rest, as the kernel's handlers do.
/// `None` if no standard prefix matches (such names never exist in EROFS).
pub fn split_name(name: &[u8]) -> Option<(u8, &[u8])> {
    const PREFIXED: [(u8, &[u8]); 3] = [
        (xattr_index::USER, b"user."),
        (xattr_index::TRUSTED, b"trusted."),
        (xattr_index::SECURITY, b"security."),
    ];
    for (index, prefix) in PREFIXED {
        if let Some(rest) = name.strip_prefix(prefix) {
            return Some((index, rest));
        }
    }
    match name {
        b"system.posix_acl_access" => Some((xattr_index::POSIX_ACL_ACCESS, b"")),
        b"system.posix_acl_default" => Some((xattr_index::POSIX_ACL_DEFAULT, b"")),
        _ => None,
    }
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

    /// Whether the full name equals `name`.
    pub fn eq_full(&self, name: &[u8]) -> bool {
        match split_name(name) {
            Some((index, rest)) => index == self.index && self.rest_eq(rest),
            None => false,
        }
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
    /// Shared xattr ids (4 bytes each).
    shared: &'img [u8],
    /// Inline entries.
    inline: &'img [u8],
}

impl<'img> Inode<'img> {
    /// This inode's xattrs (an empty set if it has none).
    pub fn xattrs(&self) -> Result<Xattrs<'img>> {
        let image = self.image;
        let empty = Xattrs {
            image,
            nid: self.nid(),
            filter: None,
            shared: &[],
            inline: &[],
        };
        let size = self.xattr_size();
        if size == 0 {
            return Ok(empty);
        }
        let truncated = self.corrupt(Corruption::XattrTruncated);
        let area = image
            .slice(self.offset + u64::from(self.inode_size), u64::from(size))
            .ok_or(truncated)?;
        let (header, rest) = XattrIbodyHeader::ref_from_prefix(area).map_err(|_| truncated)?;
        let shared_len = usize::from(header.shared_count) * 4;
        if shared_len > rest.len() {
            return Err(truncated);
        }
        let (shared, inline) = rest.split_at(shared_len);
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

    fn corrupt(&self, what: Corruption) -> super::Error {
        super::Error::corrupt(self.nid, what)
    }

    /// Parses the entry at the start of `bytes`, returning it and its aligned size.
    fn parse_entry(&self, bytes: &'img [u8]) -> Result<(Xattr<'img>, usize)> {
        let truncated = self.corrupt(Corruption::XattrTruncated);
        let (entry, rest) = XattrEntry::ref_from_prefix(bytes).map_err(|_| truncated)?;
        let name_len = usize::from(entry.name_len);
        let value_len = usize::from(entry.value_size.get());
        let suffix = rest.get(..name_len).ok_or(truncated)?;
        let value = rest.get(name_len..name_len + value_len).ok_or(truncated)?;
        let (index, infix) = if entry.name_index & xattr_index::LONG_PREFIX != 0 {
            self.image
                .long_prefix(entry.name_index & xattr_index::LONG_PREFIX_MASK)
                .ok_or(self.corrupt(Corruption::BadXattrPrefix))?
        } else {
            (entry.name_index, &[][..])
        };
        let size = (4 + name_len + value_len).next_multiple_of(4);
        Ok((
            Xattr {
                name: XattrName {
                    index,
                    infix,
                    suffix,
                },
                value,
            },
            size,
        ))
    }

    fn shared_entry(&self, id: u32) -> Result<Xattr<'img>> {
        let sb = self.image.superblock();
        let bad = self.corrupt(Corruption::SharedXattrOutOfRange);
        let offset = (u64::from(sb.xattr_blkaddr) << sb.block_bits) + u64::from(id) * 4;
        let start = usize::try_from(offset).map_err(|_| bad)?;
        let bytes = self
            .image
            .bytes()
            .get(start..)
            .filter(|b| !b.is_empty())
            .ok_or(bad)?;
        Ok(self.parse_entry(bytes)?.0)
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
            let (xattr, size) = x.parse_entry(&x.inline[self.inline_pos..])?;
            // Entries must tile the inline area exactly, as the kernel requires.
            if size > x.inline.len() - self.inline_pos {
                return Err(x.corrupt(Corruption::XattrTruncated));
            }
            self.inline_pos += size;
            return Ok(Some(xattr));
        }
        if self.shared_pos < x.shared.len() {
            let id_bytes = &x.shared[self.shared_pos..self.shared_pos + 4];
            self.shared_pos += 4;
            let id = u32::from_le_bytes([id_bytes[0], id_bytes[1], id_bytes[2], id_bytes[3]]);
            return x.shared_entry(id).map(Some);
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
