//! The EROFS format and a lazy, zero-copy decoder over an image mapping.
//!
//! Split by on-disk concern like the kernel's `fs/erofs/`: [`format`](self) (on-disk structs),
//! the superblock ([`Image`]), inodes ([`Inode`]), directories ([`Dir`]), xattrs
//! ([`Xattrs`]) and data ([`Extent`]). Nothing is decoded until asked for, nothing is cached,
//! and everything returned borrows from the [`Image`].

mod bytes;
mod data;
mod dir;
mod error;
pub mod format;
mod inode;
mod superblock;
mod xattr;

pub use data::{Extent, Extents};
pub use dir::{Dir, DirEntries, DirEntry};
pub use error::{Corruption, Error, Result};
pub use format::xattr_index;
pub use inode::{DataLayout, FileType, Inode};
pub use superblock::{ComposefsInfo, Image, OpenError, Prefetch, Superblock};
pub use xattr::{
    XATTR_PREFIXES, Xattr, XattrIter, XattrName, XattrPrefix, Xattrs, index_prefix, split_name,
};
