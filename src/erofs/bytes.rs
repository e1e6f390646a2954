//! The one bounds-checked read primitive (after gimli's `object::ReadRef`): on-disk structs,
//! arrays of them and raw byte ranges, borrowed straight from the mapping as zerocopy
//! references. Every read is checked; nothing is copied and nothing panics.

use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

use super::superblock::Image;

/// Typed reads at a byte offset of a borrowed byte range (the image, or a part of it such as a
/// dirent block or an inode's xattr area). `None` means "not entirely inside the range": the
/// caller says what that means with [`OrCorrupt`](super::error::OrCorrupt).
pub(crate) trait ReadRef<'a> {
    /// The `T` at `offset`.
    fn read_at<T>(self, offset: u64) -> Option<&'a T>
    where
        T: FromBytes + KnownLayout + Immutable + Unaligned;

    /// `count` consecutive `T`s at `offset`.
    fn read_slice_at<T>(self, offset: u64, count: usize) -> Option<&'a [T]>
    where
        T: FromBytes + Immutable + Unaligned;

    /// `len` bytes at `offset`.
    fn read_bytes_at(self, offset: u64, len: u64) -> Option<&'a [u8]>;
}

impl<'a> ReadRef<'a> for &'a [u8] {
    #[inline]
    fn read_at<T>(self, offset: u64) -> Option<&'a T>
    where
        T: FromBytes + KnownLayout + Immutable + Unaligned,
    {
        let rest = self.get(usize::try_from(offset).ok()?..)?;
        T::ref_from_prefix(rest).ok().map(|(value, _)| value)
    }

    #[inline]
    fn read_slice_at<T>(self, offset: u64, count: usize) -> Option<&'a [T]>
    where
        T: FromBytes + Immutable + Unaligned,
    {
        let rest = self.get(usize::try_from(offset).ok()?..)?;
        <[T]>::ref_from_prefix_with_elems(rest, count)
            .ok()
            .map(|(values, _)| values)
    }

    #[inline]
    fn read_bytes_at(self, offset: u64, len: u64) -> Option<&'a [u8]> {
        let start = usize::try_from(offset).ok()?;
        let end = start.checked_add(usize::try_from(len).ok()?)?;
        self.get(start..end)
    }
}

/// Reads at absolute offsets of the image. Arrays are read from the bounded range they belong
/// to (a dirent block, an xattr area) with [`ReadRef::read_slice_at`].
impl Image {
    /// The `T` at byte `offset` of the image.
    #[inline]
    pub(crate) fn read_at<T>(&self, offset: u64) -> Option<&T>
    where
        T: FromBytes + KnownLayout + Immutable + Unaligned,
    {
        self.bytes().read_at(offset)
    }

    /// `len` bytes at byte `offset` of the image.
    #[inline]
    pub(crate) fn read_bytes_at(&self, offset: u64, len: u64) -> Option<&[u8]> {
        self.bytes().read_bytes_at(offset, len)
    }
}
