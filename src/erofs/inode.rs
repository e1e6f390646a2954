//! Inodes, decoded on demand from their 32- or 64-byte on-disk form.

use zerocopy::FromBytes;

use super::error::{Corruption, Error, NOT_A_DIRECTORY, Result};
use super::format::{self, InodeCompact, InodeExtended, iformat};
use super::superblock::Image;

/// How an inode's data is laid out on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataLayout {
    /// Contiguous blocks starting at a block address (or no data).
    FlatPlain,
    /// Contiguous blocks plus a tail stored inline after the inode.
    FlatInline,
    /// A map of fixed-size chunks, possibly sparse.
    ChunkBased,
    /// Compressed (not decoded by lazycfs).
    Compressed,
}

/// File types as stored in `i_mode` and dirents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileType {
    /// Regular file.
    Regular,
    /// Directory.
    Directory,
    /// Symbolic link.
    Symlink,
    /// Character device.
    CharDevice,
    /// Block device.
    BlockDevice,
    /// Named pipe.
    Fifo,
    /// Unix socket.
    Socket,
}

impl FileType {
    /// The type from the `S_IFMT` bits of a mode.
    pub fn from_mode(mode: u32) -> Option<FileType> {
        Some(match mode & 0o170000 {
            0o100000 => FileType::Regular,
            0o040000 => FileType::Directory,
            0o120000 => FileType::Symlink,
            0o020000 => FileType::CharDevice,
            0o060000 => FileType::BlockDevice,
            0o010000 => FileType::Fifo,
            0o140000 => FileType::Socket,
            _ => return None,
        })
    }

    /// The type from an EROFS dirent `file_type` (`EROFS_FT_*`).
    pub fn from_dirent(ft: u8) -> Option<FileType> {
        Some(match ft {
            1 => FileType::Regular,
            2 => FileType::Directory,
            3 => FileType::CharDevice,
            4 => FileType::BlockDevice,
            5 => FileType::Fifo,
            6 => FileType::Socket,
            7 => FileType::Symlink,
            _ => return None,
        })
    }

    /// The `d_type` value (`DT_*`) readdir reports for this type.
    pub fn dtype(self) -> u8 {
        match self {
            FileType::Fifo => 1,
            FileType::CharDevice => 2,
            FileType::Directory => 4,
            FileType::BlockDevice => 6,
            FileType::Regular => 8,
            FileType::Symlink => 10,
            FileType::Socket => 12,
        }
    }
}

/// A decoded inode. Cheap to copy; borrows the image.
#[derive(Clone, Copy)]
pub struct Inode<'img> {
    pub(crate) image: &'img Image,
    nid: u64,
    /// Absolute byte offset of the on-disk inode.
    pub(crate) offset: u64,
    pub(crate) inode_size: u8,
    pub(crate) format: u16,
    pub(crate) xattr_icount: u16,
    mode: u16,
    file_type: FileType,
    nlink: u32,
    size: u64,
    uid: u32,
    gid: u32,
    mtime: u64,
    mtime_nsec: u32,
    /// The `i_u` union: block address, rdev or chunk format.
    pub(crate) raw_u: u32,
    /// `i_nb.startblk_hi`: bits 32..48 of a flat inode's start block (extended inodes, and
    /// compact ones with `NLINK_1`); 0 where `i_nb` is the link count.
    pub(crate) startblk_hi: u16,
    ino: u32,
    pub(crate) layout: DataLayout,
}

impl std::fmt::Debug for Inode<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inode")
            .field("nid", &self.nid)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("size", &self.size)
            .field("nlink", &self.nlink)
            .field("layout", &self.layout)
            .finish_non_exhaustive()
    }
}

impl<'img> Inode<'img> {
    pub(crate) fn decode(image: &'img Image, nid: u64) -> Result<Inode<'img>> {
        let sb = image.superblock();
        let corrupt = |what| Error::corrupt(nid, what);
        let offset = nid
            .checked_mul(1 << format::INODE_SLOT_BITS)
            .and_then(|rel| {
                image
                    .block_offset(u64::from(sb.meta_blkaddr))?
                    .checked_add(rel)
            })
            .ok_or(corrupt(Corruption::NidOutOfRange))?;
        let head = image
            .slice(offset, 32)
            .ok_or(corrupt(Corruption::NidOutOfRange))?;
        let format = u16::from_le_bytes([head[0], head[1]]);
        let extended = format & iformat::VERSION_MASK != 0;
        let layout_bits = ((format >> iformat::DATALAYOUT_BIT) & iformat::DATALAYOUT_MASK) as u8;
        if format & !iformat::ALL != 0 {
            return Err(corrupt(Corruption::UnknownFormatBits(
                format & !iformat::ALL,
            )));
        }
        let layout = match layout_bits {
            0 => DataLayout::FlatPlain,
            1 | 3 => DataLayout::Compressed,
            2 => DataLayout::FlatInline,
            4 => DataLayout::ChunkBased,
            l => return Err(corrupt(Corruption::UnknownLayout(l))),
        };
        let mut inode = if extended {
            let raw = image
                .slice(offset, 64)
                .and_then(|b| InodeExtended::ref_from_bytes(b).ok())
                .ok_or(corrupt(Corruption::InodeTruncated))?;
            if raw.mtime_nsec.get() >= 1_000_000_000 {
                return Err(corrupt(Corruption::BadNanoseconds));
            }
            Inode {
                image,
                nid,
                offset,
                inode_size: 64,
                format,
                xattr_icount: raw.xattr_icount.get(),
                mode: raw.mode.get(),
                file_type: FileType::Regular,
                nlink: raw.nlink.get(),
                size: raw.size.get(),
                uid: raw.uid.get(),
                gid: raw.gid.get(),
                mtime: raw.mtime.get(),
                mtime_nsec: raw.mtime_nsec.get(),
                raw_u: raw.u.get(),
                startblk_hi: raw.nb.get(),
                ino: raw.ino.get(),
                layout,
            }
        } else {
            let raw = InodeCompact::ref_from_bytes(head)
                .map_err(|_| corrupt(Corruption::InodeTruncated))?;
            let mode = raw.mode.get();
            let is_dir = u32::from(mode) & 0o170000 == 0o040000;
            // As the kernel: with NLINK_1, `i_nb` holds the start block's high bits instead.
            let (nlink, startblk_hi) = if !is_dir && format & iformat::NLINK_1 != 0 {
                (1, raw.nb.get())
            } else {
                (u32::from(raw.nb.get()), 0)
            };
            Inode {
                image,
                nid,
                offset,
                inode_size: 32,
                format,
                xattr_icount: raw.xattr_icount.get(),
                mode,
                file_type: FileType::Regular,
                nlink,
                size: u64::from(raw.size.get()),
                uid: u32::from(raw.uid.get()),
                gid: u32::from(raw.gid.get()),
                mtime: sb.epoch.wrapping_add(u64::from(raw.mtime.get())),
                mtime_nsec: sb.fixed_nsec,
                raw_u: raw.u.get(),
                startblk_hi,
                ino: raw.ino.get(),
                layout,
            }
        };
        inode.file_type = FileType::from_mode(u32::from(inode.mode))
            .ok_or(corrupt(Corruption::BadMode(inode.mode)))?;
        if inode.size > i64::MAX as u64 {
            return Err(corrupt(Corruption::SizeTooLarge));
        }
        // The inline area (xattrs, tail data or chunk map) must at least start inside the image.
        let xattr_end = inode
            .offset
            .checked_add(u64::from(inode.inode_size) + u64::from(inode.xattr_size()));
        match xattr_end {
            Some(end) if end <= image.bytes().len() as u64 => {}
            _ => return Err(corrupt(Corruption::InodeTruncated)),
        }
        Ok(inode)
    }

    /// The node id.
    pub fn nid(&self) -> u64 {
        self.nid
    }

    /// The image this inode belongs to.
    pub fn image(&self) -> &'img Image {
        self.image
    }

    /// `st_mode`: type and permission bits.
    pub fn mode(&self) -> u32 {
        u32::from(self.mode)
    }

    /// The file type.
    pub fn file_type(&self) -> FileType {
        self.file_type
    }

    /// Whether this is a directory.
    pub fn is_dir(&self) -> bool {
        self.file_type == FileType::Directory
    }

    /// Number of hard links.
    pub fn nlink(&self) -> u32 {
        self.nlink
    }

    /// Size in bytes (for devices, fifos and sockets whatever the writer stored).
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Owner user id.
    pub fn uid(&self) -> u32 {
        self.uid
    }

    /// Owner group id.
    pub fn gid(&self) -> u32 {
        self.gid
    }

    /// Modification time: seconds since the Unix epoch and nanoseconds.
    ///
    /// Compact inodes take the superblock epoch plus their own offset, and its nanoseconds.
    pub fn mtime(&self) -> (i64, u32) {
        (self.mtime as i64, self.mtime_nsec)
    }

    /// The 32-bit inode number the writer stored (`i_ino`), used only for 32-bit stat.
    pub fn stored_ino(&self) -> u32 {
        self.ino
    }

    /// The data layout.
    pub fn layout(&self) -> DataLayout {
        self.layout
    }

    /// Device number as (major, minor), decoded like the kernel's `new_decode_dev`;
    /// (0, 0) for anything but character and block devices.
    pub fn rdev(&self) -> (u32, u32) {
        match self.file_type {
            FileType::CharDevice | FileType::BlockDevice => {
                let dev = self.raw_u;
                ((dev & 0xfff00) >> 8, (dev & 0xff) | ((dev >> 12) & 0xfff00))
            }
            _ => (0, 0),
        }
    }

    /// The raw on-disk device number (`i_u`, new_encode_dev format) of a device inode, 0 for
    /// other types; composefs dumpfiles print this value.
    pub fn rdev_raw(&self) -> u32 {
        match self.file_type {
            FileType::CharDevice | FileType::BlockDevice => self.raw_u,
            _ => 0,
        }
    }

    /// Device number as a userspace `dev_t` (glibc `makedev`).
    pub fn rdev_t(&self) -> u64 {
        let (major, minor) = self.rdev();
        let (major, minor) = (u64::from(major), u64::from(minor));
        ((major & 0xffff_f000) << 32)
            | ((major & 0xfff) << 8)
            | ((minor & 0xffff_ff00) << 12)
            | (minor & 0xff)
    }

    /// Size in bytes of the inline xattr area following the inode.
    pub(crate) fn xattr_size(&self) -> u32 {
        match self.xattr_icount {
            0 => 0,
            n => 12 + 4 * (u32::from(n) - 1),
        }
    }

    /// Absolute offset of what follows the inode and its xattrs (tail data or chunk map).
    pub(crate) fn inline_offset(&self) -> u64 {
        self.offset + u64::from(self.inode_size) + u64::from(self.xattr_size())
    }

    /// Whether a directory omits its `.` entry (newer writers).
    pub(crate) fn dot_omitted(&self) -> bool {
        self.is_dir() && self.format & iformat::DOT_OMITTED != 0
    }

    pub(crate) fn corrupt(&self, what: Corruption) -> Error {
        Error::corrupt(self.nid, what)
    }

    pub(crate) fn require_dir(&self) -> Result<()> {
        if self.is_dir() {
            Ok(())
        } else {
            Err(Error::WrongType {
                nid: self.nid,
                what: NOT_A_DIRECTORY,
            })
        }
    }
}
