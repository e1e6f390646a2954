//! The EROFS format and a lazy, zero-copy decoder over an image mapping.
//!
//! Split by on-disk concern like the kernel's `fs/erofs/`: [`format`](mod@format) (on-disk
//! structs and the arithmetic that places them), the superblock ([`Image`]), inodes
//! ([`Inode`]), directories ([`Dir`]), xattrs ([`Xattrs`]) and data ([`Extent`]). Every read
//! of the mapping goes through one bounds-checked primitive that returns zerocopy views of the
//! on-disk structs. Nothing is decoded until asked for, nothing is cached, and everything
//! returned borrows from the [`Image`].

mod bytes;
mod data;
mod dir;
mod error;
pub mod format;
mod inode;
mod superblock;
#[cfg(test)]
mod tests;
mod xattr;

pub(crate) use data::ChunkMap;
pub use data::{Extent, Extents};
pub use dir::{Dir, DirEntries, DirEntry};
pub use error::{Corruption, Error, Result};
pub use format::xattr_index;
pub use inode::{DataLayout, FileType, Inode};
pub use superblock::{ComposefsInfo, Image, OpenError, Superblock};
pub use xattr::{
    XATTR_PREFIXES, Xattr, XattrIter, XattrName, XattrPrefix, Xattrs, index_prefix, split_name,
};
