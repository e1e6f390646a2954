//! Inodes, decoded on demand from their 32- or 64-byte on-disk form.

use super::error::{Corruption, Error, OrCorrupt, Result};
use super::format::{self, InodeCompact, InodeExtended, datalayout, file_type, iformat, mode};
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

impl DataLayout {
    /// The layout from the data layout field of `i_format`, `None` for reserved values.
    fn from_format(format: u16) -> Option<DataLayout> {
        Some(match iformat::datalayout(format) {
            datalayout::FLAT_PLAIN => DataLayout::FlatPlain,
            datalayout::COMPRESSED_FULL | datalayout::COMPRESSED_COMPACT => DataLayout::Compressed,
            datalayout::FLAT_INLINE => DataLayout::FlatInline,
            datalayout::CHUNK_BASED => DataLayout::ChunkBased,
            _ => return None,
        })
    }
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
        Some(match mode & mode::S_IFMT {
            mode::S_IFREG => FileType::Regular,
            mode::S_IFDIR => FileType::Directory,
            mode::S_IFLNK => FileType::Symlink,
            mode::S_IFCHR => FileType::CharDevice,
            mode::S_IFBLK => FileType::BlockDevice,
            mode::S_IFIFO => FileType::Fifo,
            mode::S_IFSOCK => FileType::Socket,
            _ => return None,
        })
    }

    /// The type from an EROFS dirent `file_type` (`EROFS_FT_*`).
    pub fn from_dirent(ft: u8) -> Option<FileType> {
        Some(match ft {
            file_type::REG_FILE => FileType::Regular,
            file_type::DIR => FileType::Directory,
            file_type::CHRDEV => FileType::CharDevice,
            file_type::BLKDEV => FileType::BlockDevice,
            file_type::FIFO => FileType::Fifo,
            file_type::SOCK => FileType::Socket,
            file_type::SYMLINK => FileType::Symlink,
            _ => return None,
        })
    }

    /// The `d_type` value (`DT_*`) readdir reports for this type: the `S_IF*` bits shifted
    /// down, as `IFTODT` computes it.
    pub fn dtype(self) -> u8 {
        (self.mode_bits() >> 12) as u8
    }

    /// The `S_IF*` bits of this type.
    pub fn mode_bits(self) -> u32 {
        match self {
            FileType::Regular => mode::S_IFREG,
            FileType::Directory => mode::S_IFDIR,
            FileType::Symlink => mode::S_IFLNK,
            FileType::CharDevice => mode::S_IFCHR,
            FileType::BlockDevice => mode::S_IFBLK,
            FileType::Fifo => mode::S_IFIFO,
            FileType::Socket => mode::S_IFSOCK,
        }
    }

    /// How error messages name this type ("not a directory").
    pub(crate) fn noun(self) -> &'static str {
        match self {
            FileType::Regular => "regular file",
            FileType::Directory => "directory",
            FileType::Symlink => "symlink",
            FileType::CharDevice => "character device",
            FileType::BlockDevice => "block device",
            FileType::Fifo => "fifo",
            FileType::Socket => "socket",
        }
    }

    fn of_inode(nid: u64, mode: u16) -> Result<FileType> {
        FileType::from_mode(u32::from(mode)).or_corrupt(nid, Corruption::BadMode(mode))
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
        let offset = format::inode_pos(sb.meta_blkaddr, sb.block_bits, nid)
            .or_corrupt(nid, Corruption::NidOutOfRange)?;
        // Every inode is at least a compact one long, and `i_format` (first in both layouts)
        // says which it is.
        let compact: &InodeCompact = image
            .read_at(offset)
            .or_corrupt(nid, Corruption::NidOutOfRange)?;
        let format = compact.format.get();
        if format & !iformat::ALL != 0 {
            let unknown = format & !iformat::ALL;
            return Err(Error::Corrupt {
                nid,
                what: Corruption::UnknownFormatBits(unknown),
            });
        }
        let layout = DataLayout::from_format(format)
            .or_corrupt(nid, Corruption::UnknownLayout(iformat::datalayout(format)))?;
        let inode = if iformat::is_extended(format) {
            let raw: &InodeExtended = image
                .read_at(offset)
                .or_corrupt(nid, Corruption::InodeTruncated)?;
            let mtime_nsec = raw.mtime_nsec.get();
            if mtime_nsec >= format::NSEC_PER_SEC {
                return Err(Error::Corrupt {
                    nid,
                    what: Corruption::BadNanoseconds,
                });
            }
            Inode {
                image,
                nid,
                offset,
                inode_size: size_of::<InodeExtended>() as u8,
                format,
                xattr_icount: raw.xattr_icount.get(),
                mode: raw.mode.get(),
                file_type: FileType::of_inode(nid, raw.mode.get())?,
                nlink: raw.nlink.get(),
                size: raw.size.get(),
                uid: raw.uid.get(),
                gid: raw.gid.get(),
                mtime: raw.mtime.get(),
                mtime_nsec,
                raw_u: raw.u.get(),
                startblk_hi: raw.nb.get(),
                ino: raw.ino.get(),
                layout,
            }
        } else {
            let raw = compact;
            let file_type = FileType::of_inode(nid, raw.mode.get())?;
            // As the kernel: with NLINK_1, `i_nb` holds the start block's high bits instead.
            let nlink_1 = file_type != FileType::Directory && format & iformat::NLINK_1 != 0;
            let (nlink, startblk_hi) = if nlink_1 {
                (1, raw.nb.get())
            } else {
                (u32::from(raw.nb.get()), 0)
            };
            Inode {
                image,
                nid,
                offset,
                inode_size: size_of::<InodeCompact>() as u8,
                format,
                xattr_icount: raw.xattr_icount.get(),
                mode: raw.mode.get(),
                file_type,
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
        if inode.size > i64::MAX as u64 {
            return Err(inode.corrupt(Corruption::SizeTooLarge));
        }
        // The inline area (xattrs, tail data or chunk map) must at least start inside the image.
        if inode.inline_offset() > image.bytes().len() as u64 {
            return Err(inode.corrupt(Corruption::InodeTruncated));
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
            FileType::CharDevice | FileType::BlockDevice => format::decode_dev(self.raw_u),
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
        format::xattr_ibody_size(self.xattr_icount)
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
        Error::Corrupt {
            nid: self.nid,
            what,
        }
    }

    /// `Ok` if this inode is of type `expected`, else [`Error::WrongType`].
    pub(crate) fn require(&self, expected: FileType) -> Result<()> {
        if self.file_type == expected {
            Ok(())
        } else {
            Err(Error::WrongType {
                nid: self.nid,
                expected,
            })
        }
    }
}
