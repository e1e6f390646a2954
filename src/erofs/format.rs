//! On-disk EROFS structures, mirroring the kernel's `fs/erofs/erofs_fs.h`.
//!
//! Every struct is a little-endian, unaligned zerocopy view, so it can be read straight out of
//! the mapping with [`FromBytes::ref_from_prefix`](zerocopy::FromBytes) without copying or
//! `unsafe`. Sizes are checked at compile time against the kernel's `BUILD_BUG_ON`s.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, KnownLayout, Unaligned};

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
#[derive(Debug, FromBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)] // fields mirror erofs_fs.h
pub struct SuperBlock {
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
}

/// The 32-byte compact inode.
#[derive(Debug, FromBytes, Immutable, KnownLayout, Unaligned)]
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
#[derive(Debug, FromBytes, Immutable, KnownLayout, Unaligned)]
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
#[derive(Debug, FromBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)] // fields mirror erofs_fs.h
pub struct XattrIbodyHeader {
    /// Bloom filter of names; a *set* bit means "definitely absent".
    pub name_filter: U32,
    pub shared_count: u8,
    pub reserved: [u8; 7],
}

/// A 4-byte xattr entry header, followed by the name suffix and the value.
#[derive(Debug, FromBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)] // fields mirror erofs_fs.h
pub struct XattrEntry {
    pub name_len: u8,
    pub name_index: u8,
    pub value_size: U16,
}

/// Xattr name indexes.
pub mod xattr_index {
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

/// A 12-byte directory entry.
#[derive(Debug, FromBytes, Immutable, KnownLayout, Unaligned)]
#[repr(C)]
#[allow(missing_docs)] // fields mirror erofs_fs.h
pub struct Dirent {
    pub nid: U64,
    pub nameoff: U16,
    pub file_type: u8,
    pub reserved: u8,
}

/// The composefs header at offset 0 of composefs images (`lcfs_erofs_header_s`).
#[derive(Debug, FromBytes, Immutable, KnownLayout, Unaligned)]
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

const _: () = {
    assert!(size_of::<SuperBlock>() == 128);
    assert!(size_of::<InodeCompact>() == 32);
    assert!(size_of::<InodeExtended>() == 64);
    assert!(size_of::<XattrIbodyHeader>() == 12);
    assert!(size_of::<XattrEntry>() == 4);
    assert!(size_of::<ChunkIndex>() == 8);
    assert!(size_of::<Dirent>() == 12);
    assert!(size_of::<ComposefsHeader>() == 32);
};
