//! Typed decoding errors: cheap to build, and each one names what is wrong and where.

use rustix::io::Errno;
use std::fmt;

use super::inode::FileType;

/// Result of a decoding step.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an image, or one inode of it, cannot be decoded.
///
/// Errors are small `Copy` values: a corrupt inode costs nothing beyond the error itself,
/// and the server turns it into `EIO` for that inode only.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The file is too short to hold an EROFS superblock.
    #[error("not an EROFS image: {0} bytes is too short for a superblock")]
    TooShort(usize),
    /// The superblock magic is wrong.
    #[error("not an EROFS image: bad superblock magic {0:#010x}")]
    BadMagic(u32),
    /// The superblock names incompatible features lazycfs does not implement.
    #[error("unsupported EROFS feature {name} (incompat bit {bit:#x})")]
    UnsupportedFeature {
        /// Feature name as erofs-utils spells it.
        name: &'static str,
        /// The `feature_incompat` bit.
        bit: u32,
    },
    /// The superblock is self-inconsistent.
    #[error("corrupt superblock: {0}")]
    CorruptSuperblock(&'static str),
    /// An inode, or something reached from it, is corrupt.
    #[error("corrupt inode {nid}: {what}")]
    Corrupt {
        /// Node id of the inode being decoded.
        nid: u64,
        /// What is wrong.
        what: Corruption,
    },
    /// An inode uses a layout lazycfs does not decode (e.g. compression).
    #[error("inode {nid}: unsupported {what}")]
    Unsupported {
        /// Node id of the inode.
        nid: u64,
        /// The unsupported thing.
        what: &'static str,
    },
    /// An operation was asked of an inode of the wrong type.
    #[error("inode {nid}: not a {}", .expected.noun())]
    WrongType {
        /// Node id of the inode.
        nid: u64,
        /// The type the operation needs.
        expected: FileType,
    },
}

/// The kinds of corruption the decoder detects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Corruption {
    /// The nid points outside the image.
    NidOutOfRange,
    /// The inode header or its inline area extends past the end of the image.
    InodeTruncated,
    /// `i_format` has bits no kernel defines.
    UnknownFormatBits(u16),
    /// The data layout field is reserved.
    UnknownLayout(u8),
    /// `i_mode` has no valid file type.
    BadMode(u16),
    /// A data block or chunk lies outside the image.
    DataOutOfRange,
    /// Inline (tail-packed) data crosses a block boundary or exceeds a block.
    InlineDataTooLong,
    /// Nanoseconds of a timestamp are 10^9 or more.
    BadNanoseconds,
    /// The inode size is larger than anything its layout can address.
    SizeTooLarge,
    /// A chunk index names another device.
    ChunkDevice,
    /// The chunk format has unknown bits or an absurd chunk size.
    BadChunkFormat(u16),
    /// Directory data is a hole or is not block-aligned.
    DirHole,
    /// A dirent block's `nameoff` values are inconsistent.
    BadDirentNameoff,
    /// A file name is empty, too long or contains `/` or NUL.
    BadName,
    /// Names within a directory are not strictly sorted.
    DirentsUnsorted,
    /// A dirent's file type does not match the inode it names.
    FileTypeMismatch,
    /// The xattr area is truncated or its entries overrun it.
    XattrTruncated,
    /// A shared xattr id points outside the image.
    SharedXattrOutOfRange,
    /// A long-prefix xattr name refers to a missing prefix.
    BadXattrPrefix,
    /// An xattr name contains NUL (listxattr would list a name getxattr cannot find).
    BadXattrName,
    /// The xattr name bloom filter says a stored name is absent.
    XattrFilterMismatch,
    /// A symlink target is empty, too long or not contiguous.
    BadSymlink,
    /// A directory reaches itself through its descendants.
    DirectoryCycle,
    /// `.` or `..` is missing, misplaced or points to the wrong directory.
    BadDotEntry,
    /// A directory holds a longer run of entries a view hides (whiteouts) than a listing
    /// skips.
    TooManyHiddenEntries,
    /// The inode's header or xattr area overlaps another inode's.
    InodesOverlap,
}

impl fmt::Display for Corruption {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use Corruption::*;
        match self {
            NidOutOfRange => f.write_str("nid out of range"),
            InodeTruncated => f.write_str("inode extends past the end of the image"),
            UnknownFormatBits(b) => write!(f, "unknown i_format bits {b:#x}"),
            UnknownLayout(l) => write!(f, "reserved data layout {l}"),
            BadMode(m) => write!(f, "bad file type in mode {m:o}"),
            DataOutOfRange => f.write_str("data block out of range"),
            InlineDataTooLong => f.write_str("inline data crosses a block boundary"),
            BadNanoseconds => f.write_str("mtime nanoseconds out of range"),
            SizeTooLarge => f.write_str("size too large for the layout"),
            ChunkDevice => f.write_str("chunk on an extra device"),
            BadChunkFormat(c) => write!(f, "bad chunk format {c:#x}"),
            DirHole => f.write_str("directory data has a hole"),
            BadDirentNameoff => f.write_str("bad dirent name offsets"),
            BadName => f.write_str("bad file name in directory"),
            DirentsUnsorted => f.write_str("directory entries not sorted"),
            FileTypeMismatch => f.write_str("dirent file type differs from inode type"),
            XattrTruncated => f.write_str("xattr area truncated"),
            SharedXattrOutOfRange => f.write_str("shared xattr id out of range"),
            BadXattrPrefix => f.write_str("xattr refers to a missing long name prefix"),
            BadXattrName => f.write_str("xattr name contains NUL"),
            XattrFilterMismatch => f.write_str("xattr name filter hides a stored name"),
            BadSymlink => f.write_str("bad symlink target"),
            DirectoryCycle => f.write_str("directory cycle"),
            BadDotEntry => f.write_str("bad '.' or '..' entry"),
            TooManyHiddenEntries => f.write_str("too many consecutive hidden entries"),
            InodesOverlap => f.write_str("inode overlaps another inode"),
        }
    }
}

impl Error {
    /// The errno a filesystem server should answer with for this error.
    pub fn errno(&self) -> i32 {
        match self {
            Error::WrongType {
                expected: FileType::Directory,
                ..
            } => Errno::NOTDIR,
            Error::WrongType { .. } => Errno::INVAL,
            Error::Unsupported { .. } => Errno::OPNOTSUPP,
            _ => Errno::IO,
        }
        .raw_os_error()
    }
}

/// Turns a failed bounds-checked read (or any missing value) into [`Error::Corrupt`] for the
/// inode being decoded: `image.read_at(pos).or_corrupt(nid, Corruption::InodeTruncated)?`.
pub(crate) trait OrCorrupt<T> {
    /// The value, or `Corrupt { nid, what }`.
    fn or_corrupt(self, nid: u64, what: Corruption) -> Result<T>;
}

impl<T> OrCorrupt<T> for Option<T> {
    #[inline]
    fn or_corrupt(self, nid: u64, what: Corruption) -> Result<T> {
        self.ok_or(Error::Corrupt { nid, what })
    }
}
