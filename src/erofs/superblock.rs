//! Opening an image: the superblock, the composefs header, and the long xattr prefix table.

use std::fs::File;
use std::io;
use std::path::Path;

use zerocopy::little_endian::U16;

use super::bytes::ReadRef;
use super::data::Extent;
use super::error::{Error, Result};
use super::format::{self, ComposefsHeader, DiskSuperblock, XattrLongPrefix, compat, incompat};
use super::inode::Inode;
use crate::sys::Mapping;

/// Decoded superblock values that the rest of the decoder needs.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Superblock {
    /// log2 of the block size.
    pub block_bits: u8,
    /// Node id of the root directory.
    pub root_nid: u64,
    /// Number of inodes, as recorded by the writer (statfs `f_files`).
    pub inodes: u64,
    /// Seconds of the epoch that compact inodes' mtimes are relative to.
    pub epoch: u64,
    /// Nanoseconds of every compact inode's mtime.
    pub fixed_nsec: u32,
    /// Number of blocks (statfs `f_blocks`).
    pub blocks: u32,
    /// First block of the inode (metadata) area.
    pub meta_blkaddr: u32,
    /// First block of the shared xattr area.
    pub xattr_blkaddr: u32,
    /// `feature_compat` bits.
    pub feature_compat: u32,
    /// `feature_incompat` bits.
    pub feature_incompat: u32,
    /// Volume UUID.
    pub uuid: [u8; 16],
    /// Volume name, NUL-padded.
    pub volume_name: [u8; 16],
    /// Node id of the packed inode (0 when absent).
    pub packed_nid: u64,
    /// Whether inline xattr headers carry a usable name bloom filter.
    pub xattr_filter: bool,
}

impl Superblock {
    /// Block size in bytes.
    pub fn block_size(&self) -> u64 {
        1 << self.block_bits
    }
}

/// Composefs header fields (`lcfs_erofs_header_s`) found at offset 0 of composefs images.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ComposefsInfo {
    /// Header format version (1 for every released writer).
    pub header_version: u32,
    /// Header flags.
    pub flags: u32,
    /// The composefs format version: 0, 1 or 2 (decides e.g. how whiteouts are stored).
    pub composefs_version: u32,
}

/// Why [`Image::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The file could not be opened or mapped.
    #[error("{path}: {source}")]
    Io {
        /// The image path.
        path: String,
        /// The underlying error.
        source: io::Error,
    },
    /// The file is not a usable EROFS image.
    #[error("{path}: {source}")]
    Image {
        /// The image path.
        path: String,
        /// What is wrong with it.
        source: Error,
    },
}

/// One entry of the long xattr name prefix table, as absolute image offsets.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LongPrefix {
    pub(crate) base_index: u8,
    pub(crate) infix_start: usize,
    pub(crate) infix_len: u16,
}

/// An opened EROFS image. Everything decoded from it borrows from it.
///
/// Opening reads only the superblock (and the fixed-size long xattr prefix table, at most 128
/// entries): its cost does not depend on the size of the image.
///
/// ```no_run
/// let image = lazycfs::erofs::Image::open("image.cfs")?;
/// let root = image.root()?;
/// let dir = root.dir()?;
/// if let Some(entry) = dir.lookup(b"etc")? {
///     let etc = image.inode(entry.nid)?;
///     println!("etc mode {:o}", etc.mode());
/// }
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Image {
    data: Mapping,
    sb: Superblock,
    prefixes: Vec<LongPrefix>,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image")
            .field("len", &self.data.len())
            .field("superblock", &self.sb)
            .finish()
    }
}

impl Image {
    /// Maps the image file and validates its superblock.
    pub fn open(path: impl AsRef<Path>) -> std::result::Result<Image, OpenError> {
        let path = path.as_ref();
        let name = || path.display().to_string();
        let file = File::open(path).map_err(|source| OpenError::Io {
            path: name(),
            source,
        })?;
        let data = Mapping::map(&file).map_err(|source| OpenError::Io {
            path: name(),
            source,
        })?;
        Image::new(data).map_err(|source| OpenError::Image {
            path: name(),
            source,
        })
    }

    /// Uses image bytes held in memory (tests, fuzzing, images built on the fly).
    pub fn from_bytes(bytes: impl Into<Box<[u8]>>) -> Result<Image> {
        Image::new(Mapping::Owned(bytes.into()))
    }

    fn new(data: Mapping) -> Result<Image> {
        let sb = parse_superblock(&data)?;
        let mut image = Image {
            data,
            sb,
            prefixes: Vec::new(),
        };
        let root = image.root()?;
        if !root.is_dir() {
            return Err(Error::CorruptSuperblock("root inode is not a directory"));
        }
        image.prefixes = image.read_long_prefixes()?;
        Ok(image)
    }

    /// The image file, when the image is mapped from one (not for [`Image::from_bytes`]).
    pub(crate) fn file(&self) -> Option<&File> {
        self.data.file()
    }

    /// Whether the image file changed under the mapping since it was opened: a writer opened
    /// it (when a read lease could be taken), or a read faulted past its shrunk end or failed
    /// and read zeros instead. Sticky: from then on nothing read from the image is to be
    /// trusted (the server answers EIO). Always `false` for [`Image::from_bytes`].
    pub fn changed(&self) -> bool {
        self.data.changed()
    }

    /// The decoded superblock.
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// The whole image.
    pub fn bytes(&self) -> &[u8] {
        &self.data
    }

    /// The composefs header, if the image starts with one.
    pub fn composefs(&self) -> Option<ComposefsInfo> {
        let header: &ComposefsHeader = self.read_at(0)?;
        (header.magic.get() == format::COMPOSEFS_MAGIC).then(|| ComposefsInfo {
            header_version: header.version.get(),
            flags: header.flags.get(),
            composefs_version: header.composefs_version.get(),
        })
    }

    /// Node id of the root directory.
    pub fn root_nid(&self) -> u64 {
        self.sb.root_nid
    }

    /// The root directory inode.
    pub fn root(&self) -> Result<Inode<'_>> {
        self.inode(self.sb.root_nid)
    }

    /// Decodes the inode with node id `nid`.
    pub fn inode(&self, nid: u64) -> Result<Inode<'_>> {
        Inode::decode(self, nid)
    }

    pub(crate) fn long_prefix(&self, index: u8) -> Option<(u8, &[u8])> {
        let p = self.prefixes.get(usize::from(index))?;
        let infix = self
            .data
            .get(p.infix_start..p.infix_start + usize::from(p.infix_len))?;
        Some((p.base_index, infix))
    }

    /// Reads the long xattr name prefix table (`xattr_prefix_start`, in the packed inode if
    /// there is one). Bounded: at most 128 entries of at most 64 KiB each.
    fn read_long_prefixes(&self) -> Result<Vec<LongPrefix>> {
        let sb: &DiskSuperblock = self
            .read_at(format::SUPER_OFFSET as u64)
            .ok_or(Error::TooShort(self.data.len()))?;
        let count = sb.xattr_prefix_count;
        if self.sb.feature_incompat & incompat::XATTR_PREFIXES == 0 || count == 0 {
            return Ok(Vec::new());
        }
        if count > format::xattr_index::LONG_PREFIX_MASK + 1 {
            return Err(Error::CorruptSuperblock("too many long xattr prefixes"));
        }
        // Prefixes live in the packed inode when there is one, else at an absolute offset.
        let area: &[u8] = if self.sb.packed_nid != 0 {
            match self.inode(self.sb.packed_nid)?.extent_at(0)? {
                Some(Extent::Data(bytes)) => bytes,
                _ => return Err(Error::CorruptSuperblock("long xattr prefixes not readable")),
            }
        } else {
            &self.data
        };
        let area_start = area.as_ptr() as usize - self.data.as_ptr() as usize;
        let mut pos = format::long_prefix_table_pos(sb.xattr_prefix_start.get());
        let mut prefixes = Vec::with_capacity(usize::from(count));
        let bad = Error::CorruptSuperblock("long xattr prefix table out of range");
        for _ in 0..count {
            let len = area.read_at::<U16>(pos).ok_or(bad)?.get();
            let body_pos = pos + size_of::<U16>() as u64;
            let body = area.read_bytes_at(body_pos, u64::from(len)).ok_or(bad)?;
            let head: &XattrLongPrefix = body
                .read_at(0)
                .ok_or(Error::CorruptSuperblock("empty long xattr prefix"))?;
            prefixes.push(LongPrefix {
                base_index: head.base_index,
                infix_start: area_start + (body_pos as usize) + size_of::<XattrLongPrefix>(),
                infix_len: len - size_of::<XattrLongPrefix>() as u16,
            });
            pos = format::next_long_prefix_pos(pos, len);
        }
        Ok(prefixes)
    }
}

fn parse_superblock(data: &[u8]) -> Result<Superblock> {
    let raw: &DiskSuperblock = data
        .read_at(format::SUPER_OFFSET as u64)
        .ok_or(Error::TooShort(data.len()))?;
    let magic = raw.magic.get();
    if magic != format::SUPER_MAGIC {
        return Err(Error::BadMagic(magic));
    }
    let block_bits = raw.blkszbits;
    if !format::BLOCK_BITS.contains(&block_bits) {
        return Err(Error::CorruptSuperblock("block size out of range"));
    }
    if data.len() < format::SUPER_OFFSET + format::superblock_size(raw.sb_extslots) {
        return Err(Error::TooShort(data.len()));
    }
    let feature_incompat = raw.feature_incompat.get();
    let unknown = feature_incompat & !incompat::SUPPORTED;
    if unknown != 0 {
        let bit = 1 << unknown.trailing_zeros();
        return Err(Error::UnsupportedFeature {
            name: incompat::name(bit),
            bit,
        });
    }
    if raw.dirblkbits != 0 {
        return Err(Error::CorruptSuperblock("dirblkbits is not 0"));
    }
    let feature_compat = raw.feature_compat.get();
    let sb = Superblock {
        block_bits,
        root_nid: u64::from(raw.root_nid.get()),
        inodes: raw.inos.get(),
        epoch: raw.epoch.get(),
        fixed_nsec: raw.fixed_nsec.get(),
        blocks: raw.blocks.get(),
        meta_blkaddr: raw.meta_blkaddr.get(),
        xattr_blkaddr: raw.xattr_blkaddr.get(),
        feature_compat,
        feature_incompat,
        uuid: raw.uuid,
        volume_name: raw.volume_name,
        packed_nid: raw.packed_nid.get(),
        xattr_filter: feature_compat & compat::XATTR_FILTER != 0 && raw.xattr_filter_reserved == 0,
    };
    let len = data.len() as u64;
    let meta = u64::from(sb.meta_blkaddr) << block_bits;
    if meta >= len {
        return Err(Error::CorruptSuperblock("metadata area outside the image"));
    }
    if sb.fixed_nsec >= format::NSEC_PER_SEC {
        return Err(Error::CorruptSuperblock("nanoseconds out of range"));
    }
    Ok(sb)
}
