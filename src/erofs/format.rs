//! On-disk EROFS structures, mirroring the kernel's `fs/erofs/erofs_fs.h`.
//!
//! Every struct is a little-endian, unaligned zerocopy view, so it can be read straight out of
//! the mapping without copying or `unsafe`. Sizes are checked at compile time against the
//! kernel's `BUILD_BUG_ON`s. The arithmetic that places things on disk (where an inode or a
//! shared xattr is, how long an xattr area is, ...) is here too, as named functions after the
//! kernel's helpers.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout, Unaligned};

/// Byte offset of the superblock in the image.
pub const SUPER_OFFSET: usize = 1024;
/// `EROFS_SUPER_MAGIC_V1`.
pub const SUPER_MAGIC: u32 = 0xE0F5_E1E2;
/// Inode slots are 32 bytes: `nid * 32` is an inode's offset in the metadata area.
pub const INODE_SLOT_BITS: u32 = 5;
/// Longest file name a dirent may carry (`EROFS_NAME_LEN`).
pub const NAME_LEN: usize = 255;
/// A chunk or block address meaning "hole" (`EROFS_NULL_ADDR`).
pub const NULL_ADDR: u32 = u32::MAX;
/// Smallest and largest `blkszbits` lazycfs accepts (512 B to 64 KiB blocks).
pub const BLOCK_BITS: std::ops::RangeInclusive<u8> = 9..=16;
/// Nanoseconds in a second: timestamps' nanoseconds must be below it.
pub const NSEC_PER_SEC: u32 = 1_000_000_000;
/// Symlink targets are shorter than this (`PATH_MAX`, which counts the terminating NUL).
pub const SYMLINK_MAX: u64 = 4096;

/// Size of the superblock with its extension slots (`sb_extslots`, 16 bytes each).
pub const fn superblock_size(extslots: u8) -> usize {
    size_of::<DiskSuperblock>() + extslots as usize * 16
}

/// Byte offset of block `blkaddr` (the kernel's `erofs_pos`); `None` on overflow.
pub const fn block_pos(blkaddr: u64, block_bits: u8) -> Option<u64> {
    blkaddr.checked_mul(1 << block_bits)
}

/// Byte offset of the inode with node id `nid` (the kernel's `erofs_iloc`); `None` on overflow.
pub fn inode_pos(meta_blkaddr: u32, block_bits: u8, nid: u64) -> Option<u64> {
    let slot = nid.checked_mul(1 << INODE_SLOT_BITS)?;
    block_pos(u64::from(meta_blkaddr), block_bits)?.checked_add(slot)
}

/// `feature_compat` bits.
pub mod compat {
    /// The superblock carries a crc32c checksum.
    pub const SB_CHKSUM: u32 = 0x0000_0001;
    /// Compact inodes carry a per-inode mtime relative to the superblock epoch.
    pub const MTIME: u32 = 0x0000_0002;
    /// Inline xattr headers carry a name bloom filter.
    pub const XATTR_FILTER: u32 = 0x0000_0004;
}

/// `feature_incompat` bits, with the names the kernel and erofs-utils use.
pub mod incompat {
    /// Compressed data is zero-padded at the start (`ZERO_PADDING`/`LZ4_0PADDING`).
    pub const ZERO_PADDING: u32 = 0x0000_0001;
    /// Compression configurations / big pclusters.
    pub const COMPR_CFGS: u32 = 0x0000_0002;
    /// Chunk-based regular files.
    pub const CHUNKED_FILE: u32 = 0x0000_0004;
    /// Multiple devices (also `COMPR_HEAD2`).
    pub const DEVICE_TABLE: u32 = 0x0000_0008;
    /// Tail-packed compressed data.
    pub const ZTAILPACKING: u32 = 0x0000_0010;
    /// Fragments / dedupe.
    pub const FRAGMENTS: u32 = 0x0000_0020;
    /// Long xattr name prefixes.
    pub const XATTR_PREFIXES: u32 = 0x0000_0040;
    /// 48-bit block addresses.
    pub const BLOCKS_48BIT: u32 = 0x0000_0080;
    /// Metadata in a metabox inode.
    pub const METABOX: u32 = 0x0000_0100;

    /// Features whose on-disk effects lazycfs understands. Compression features are listed
    /// because they only change compressed inodes, which are refused one by one.
    pub const SUPPORTED: u32 = ZERO_PADDING
        | COMPR_CFGS
        | CHUNKED_FILE
        | DEVICE_TABLE
        | ZTAILPACKING
        | FRAGMENTS
        | XATTR_PREFIXES;

    /// Human-readable name of one incompat bit, for error messages.
    pub fn name(bit: u32) -> &'static str {
        match bit {
            ZERO_PADDING => "zero_padding",
            COMPR_CFGS => "compr_cfgs",
            CHUNKED_FILE => "chunked_file",
            DEVICE_TABLE => "device_table",
            ZTAILPACKING => "ztailpacking",
            FRAGMENTS => "fragments",
            XATTR_PREFIXES => "xattr_prefixes",
            BLOCKS_48BIT => "48bit",
            METABOX => "metabox",
            _ => "unknown",
        }
    }
}

/// The 128-byte superblock at [`SUPER_OFFSET`].
#[derive(Debug, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)] // fields mirror erofs_fs.h
pub struct DiskSuperblock {
    pub magic: U32,
    pub checksum: U32,
    pub feature_compat: U32,
    pub blkszbits: u8,
    pub sb_extslots: u8,
    pub root_nid: U16,
    pub inos: U64,
    /// Base seconds for compact inodes (`build_time`, called `epoch` in newer kernels).
    pub epoch: U64,
    /// Nanoseconds for compact inodes (`build_time_nsec` / `fixed_nsec`).
    pub fixed_nsec: U32,
    pub blocks: U32,
    pub meta_blkaddr: U32,
    pub xattr_blkaddr: U32,
    pub uuid: [u8; 16],
    pub volume_name: [u8; 16],
    pub feature_incompat: U32,
    pub available_compr_algs: U16,
    pub extra_devices: U16,
    pub devt_slotoff: U16,
    pub dirblkbits: u8,
    pub xattr_prefix_count: u8,
    pub xattr_prefix_start: U32,
    pub packed_nid: U64,
    pub xattr_filter_reserved: u8,
    pub reserved2: [u8; 23],
}

/// Bits of `i_format`.
pub mod iformat {
    /// 0 = compact (32-byte) inode, 1 = extended (64-byte).
    pub const VERSION_MASK: u16 = 0x01;
    /// Shift of the data layout field.
    pub const DATALAYOUT_BIT: u16 = 1;
    /// Width mask of the data layout field.
    pub const DATALAYOUT_MASK: u16 = 0x07;
    /// Non-directory compact inodes: nlink is 1 and `i_nb` holds address bits.
    pub const NLINK_1: u16 = 1 << 4;
    /// Directories: the `.` dirent is omitted.
    pub const DOT_OMITTED: u16 = 1 << 4;
    /// Every bit a current kernel knows.
    pub const ALL: u16 = (1 << 5) - 1;

    /// Whether the inode is extended (64 bytes) rather than compact (32 bytes).
    pub const fn is_extended(format: u16) -> bool {
        format & VERSION_MASK != 0
    }

    /// The data layout field (the kernel's `erofs_inode_datalayout`): one of the
    /// [`datalayout`](super::datalayout) values.
    pub const fn datalayout(format: u16) -> u8 {
        ((format >> DATALAYOUT_BIT) & DATALAYOUT_MASK) as u8
    }
}

/// Values of the data layout field of `i_format` (`EROFS_INODE_*`).
pub mod datalayout {
    /// Contiguous blocks (or no data).
    pub const FLAT_PLAIN: u8 = 0;
    /// Compressed, with full-size per-cluster indexes.
    pub const COMPRESSED_FULL: u8 = 1;
    /// Contiguous blocks and a tail packed right after the inode.
    pub const FLAT_INLINE: u8 = 2;
    /// Compressed, with compact per-cluster indexes.
    pub const COMPRESSED_COMPACT: u8 = 3;
    /// A map of fixed-size chunks.
    pub const CHUNK_BASED: u8 = 4;
}

/// File type bits of `i_mode` (`S_IF*`, as in `<sys/stat.h>`).
pub mod mode {
    /// Mask of the file type bits.
    pub const S_IFMT: u32 = 0o170000;
    /// Unix socket.
    pub const S_IFSOCK: u32 = 0o140000;
    /// Symbolic link.
    pub const S_IFLNK: u32 = 0o120000;
    /// Regular file.
    pub const S_IFREG: u32 = 0o100000;
    /// Block device.
    pub const S_IFBLK: u32 = 0o060000;
    /// Directory.
    pub const S_IFDIR: u32 = 0o040000;
    /// Character device.
    pub const S_IFCHR: u32 = 0o020000;
    /// Named pipe.
    pub const S_IFIFO: u32 = 0o010000;
}

/// Decodes a device number stored in `i_u` into (major, minor), like the kernel's
/// `new_decode_dev`.
pub const fn decode_dev(dev: u32) -> (u32, u32) {
    ((dev & 0xfff00) >> 8, (dev & 0xff) | ((dev >> 12) & 0xfff00))
}

/// The 32-byte compact inode.
#[derive(Debug, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)] // fields mirror erofs_fs.h
pub struct InodeCompact {
    pub format: U16,
    pub xattr_icount: U16,
    pub mode: U16,
    /// `i_nlink`, or the high address bits with [`iformat::NLINK_1`].
    pub nb: U16,
    pub size: U32,
    /// Seconds added to the superblock epoch (was reserved, i.e. 0, in older images).
    pub mtime: U32,
    /// `i_u`: raw block address, rdev, or chunk format.
    pub u: U32,
    pub ino: U32,
    pub uid: U16,
    pub gid: U16,
    pub reserved2: U32,
}

/// The 64-byte extended inode.
#[derive(Debug, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)] // fields mirror erofs_fs.h
pub struct InodeExtended {
    pub format: U16,
    pub xattr_icount: U16,
    pub mode: U16,
    pub nb: U16,
    pub size: U64,
    pub u: U32,
    pub ino: U32,
    pub uid: U32,
    pub gid: U32,
    pub mtime: U64,
    pub mtime_nsec: U32,
    pub nlink: U32,
    pub reserved2: [u8; 16],
}

/// Chunk format bits stored in `i_u` of chunk-based inodes.
pub mod chunk {
    /// `chunk size = block size << (format & BLKBITS_MASK)`.
    pub const BLKBITS_MASK: u16 = 0x001F;
    /// 8-byte chunk indexes instead of a 4-byte block address array.
    pub const INDEXES: u16 = 0x0020;
    /// 48-bit chunk addresses.
    pub const BITS_48: u16 = 0x0040;

    /// The chunk format: the low half of `i_u` (`erofs_inode_chunk_info.format`).
    pub const fn format(i_u: u32) -> u16 {
        i_u as u16
    }

    /// Size of one chunk map entry: a [`ChunkIndex`](super::ChunkIndex) with [`INDEXES`],
    /// else a 4-byte block address (`EROFS_BLOCK_MAP_ENTRY_SIZE`).
    pub const fn map_entry_size(format: u16) -> u64 {
        if format & INDEXES != 0 {
            size_of::<super::ChunkIndex>() as u64
        } else {
            size_of::<u32>() as u64
        }
    }
}

/// An 8-byte chunk index.
#[derive(Debug, FromBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)] // fields mirror erofs_fs.h
pub struct ChunkIndex {
    pub startblk_hi: U16,
    pub device_id: U16,
    pub blkaddr: U32,
}

/// The 12-byte header of an inode's xattr area.
#[derive(Debug, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)] // fields mirror erofs_fs.h
pub struct XattrIbodyHeader {
    /// Bloom filter of names; a *set* bit means "definitely absent".
    pub name_filter: U32,
    pub shared_count: u8,
    pub reserved: [u8; 7],
}

/// Size of an inode's xattr area from its `i_xattr_icount` (the kernel's
/// `erofs_xattr_ibody_size`): a header, then 4-byte slots (shared ids and inline entries).
pub const fn xattr_ibody_size(xattr_icount: u16) -> u32 {
    match xattr_icount {
        0 => 0,
        n => size_of::<XattrIbodyHeader>() as u32 + XATTR_SLOT * (n as u32 - 1),
    }
}

/// Xattr areas are counted, and xattr entries aligned, in 4-byte slots (`EROFS_XATTR_ALIGN`).
const XATTR_SLOT: u32 = 4;

/// Byte offset of shared xattr `id` (shared ids count 4-byte slots from `xattr_blkaddr`);
/// `None` on overflow.
pub fn shared_xattr_pos(xattr_blkaddr: u32, block_bits: u8, id: u32) -> Option<u64> {
    block_pos(u64::from(xattr_blkaddr), block_bits)?
        .checked_add(u64::from(id) * u64::from(XATTR_SLOT))
}

/// Aligned size of an xattr entry with its name and value (`erofs_xattr_entry_size`).
pub const fn xattr_entry_size(name_len: usize, value_size: usize) -> usize {
    (size_of::<XattrEntry>() + name_len + value_size).next_multiple_of(XATTR_SLOT as usize)
}

/// Byte offset of the long xattr name prefix table (`xattr_prefix_start` counts 4-byte units);
/// each entry is a `__le16` length, then [`XattrLongPrefix`] bytes, padded to 4 bytes.
pub const fn long_prefix_table_pos(xattr_prefix_start: u32) -> u64 {
    (xattr_prefix_start as u64) * XATTR_SLOT as u64
}

/// Start of the next long prefix entry after one of `len` bytes at `pos`.
pub const fn next_long_prefix_pos(pos: u64, len: u16) -> u64 {
    (pos + size_of::<U16>() as u64 + len as u64).next_multiple_of(XATTR_SLOT as u64)
}

/// The head of a long xattr name prefix (`erofs_xattr_long_prefix`), followed by the infix.
#[derive(Debug, FromBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
pub struct XattrLongPrefix {
    /// The standard index whose prefix comes before the infix.
    pub base_index: u8,
}

/// A 4-byte xattr entry header, followed by the name suffix and the value.
#[derive(Debug, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)] // fields mirror erofs_fs.h
pub struct XattrEntry {
    pub name_len: u8,
    pub name_index: u8,
    pub value_size: U16,
}

/// Xattr name indexes.
pub mod xattr_index {
    /// No prefix, the whole name is stored: composefs writers' fallback for names no other
    /// index fits (not exposed by Linux).
    pub const NONE: u8 = 0;
    /// `user.`
    pub const USER: u8 = 1;
    /// `system.posix_acl_access`
    pub const POSIX_ACL_ACCESS: u8 = 2;
    /// `system.posix_acl_default`
    pub const POSIX_ACL_DEFAULT: u8 = 3;
    /// `trusted.`
    pub const TRUSTED: u8 = 4;
    /// `lustre.` (not exposed by Linux)
    pub const LUSTRE: u8 = 5;
    /// `security.`
    pub const SECURITY: u8 = 6;
    /// Bit 7: the low bits index the long-prefix table.
    pub const LONG_PREFIX: u8 = 0x80;
    /// Mask for the long-prefix table index.
    pub const LONG_PREFIX_MASK: u8 = 0x7f;
}

/// Seed of the xattr name bloom filter hash (`EROFS_XATTR_FILTER_SEED`).
pub const XATTR_FILTER_SEED: u32 = 0x25BB_E08F;

/// Dirent file types (`EROFS_FT_*`).
pub mod file_type {
    /// Unknown type.
    pub const UNKNOWN: u8 = 0;
    /// Regular file.
    pub const REG_FILE: u8 = 1;
    /// Directory.
    pub const DIR: u8 = 2;
    /// Character device.
    pub const CHRDEV: u8 = 3;
    /// Block device.
    pub const BLKDEV: u8 = 4;
    /// Named pipe.
    pub const FIFO: u8 = 5;
    /// Unix socket.
    pub const SOCK: u8 = 6;
    /// Symbolic link.
    pub const SYMLINK: u8 = 7;
}

/// A 12-byte directory entry.
#[derive(Debug, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)] // fields mirror erofs_fs.h
pub struct Dirent {
    pub nid: U64,
    pub nameoff: U16,
    pub file_type: u8,
    pub reserved: u8,
}

/// The composefs header at offset 0 of composefs images (`lcfs_erofs_header_s`).
#[derive(Debug, FromBytes, IntoBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)] // fields mirror erofs_fs.h
pub struct ComposefsHeader {
    pub magic: U32,
    pub version: U32,
    pub flags: U32,
    pub composefs_version: U32,
    pub unused: [U32; 4],
}

/// `LCFS_EROFS_MAGIC`.
pub const COMPOSEFS_MAGIC: u32 = 0xd078_629a;
/// `LCFS_EROFS_VERSION`: the `version` field of every composefs header.
pub const COMPOSEFS_HEADER_VERSION: u32 = 1;
/// `COMPOSEFS_FLAGS_HAS_ACL`: some inode carries a POSIX ACL xattr.
pub const COMPOSEFS_FLAGS_HAS_ACL: u32 = 1;
/// Block size of composefs images (`blkszbits` 12): the only one the writers use.
pub const COMPOSEFS_BLOCK_BITS: u8 = 12;

const _: () = {
    assert!(size_of::<DiskSuperblock>() == 128);
    assert!(size_of::<InodeCompact>() == 32);
    assert!(size_of::<InodeExtended>() == 64);
    assert!(size_of::<XattrIbodyHeader>() == 12);
    assert!(size_of::<XattrEntry>() == 4);
    assert!(size_of::<ChunkIndex>() == 8);
    assert!(size_of::<Dirent>() == 12);
    assert!(size_of::<ComposefsHeader>() == 32);
    assert!(size_of::<XattrLongPrefix>() == 1);
};
