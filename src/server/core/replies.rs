//! The values the core's operations return: plain data, for any transport to encode.

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::Duration;

use super::{Errno, io_error};
use crate::erofs::{FileType, Inode};
use crate::server::handles::Handle;

/// A point in time, as the image stores it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timestamp {
    /// Seconds since the epoch (negative before it).
    pub secs: i64,
    /// Nanoseconds within the second.
    pub nanos: u32,
}

/// An inode's attributes. The image stores one time: access, change and creation times are
/// its mtime too.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Node id (FUSE's: the root is 1).
    pub ino: u64,
    /// Size in bytes.
    pub size: u64,
    /// Size in 512-byte units, rounded up to whole blocks.
    pub blocks: u64,
    /// Modification time.
    pub mtime: Timestamp,
    /// File type.
    pub kind: FileType,
    /// Permission bits (with setuid, setgid, sticky).
    pub perm: u16,
    /// Hard link count.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Device number of device files, as stored.
    pub rdev: u32,
    /// The image's block size.
    pub block_size: u32,
}

/// A lookup's answer, which the kernel may cache for `ttl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Entry {
    /// The inode found; `None` is a negative entry (the kernel caches the miss).
    pub attr: Option<Attr>,
    /// How long the kernel may keep the entry.
    pub ttl: Duration,
}

impl Entry {
    /// A cached miss.
    pub(super) fn negative() -> Entry {
        Entry {
            attr: None,
            ttl: super::TTL,
        }
    }
}

/// What the kernel may cache of an open file (FUSE's `FOPEN_KEEP_CACHE`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheFlags {
    /// Keep the file's cached pages from earlier opens.
    pub keep_cache: bool,
}

impl CacheFlags {
    /// No caching across opens.
    pub const NONE: CacheFlags = CacheFlags { keep_cache: false };
    /// Pages stay cached across opens.
    pub const KEEP: CacheFlags = CacheFlags { keep_cache: true };
}

/// An open file.
#[derive(Debug)]
pub struct Opened<B> {
    /// What reads through it read.
    pub handle: Handle,
    /// What the kernel may cache.
    pub cache: CacheFlags,
    /// The passthrough backing id the kernel reads the file through, if any.
    pub backing: Option<Arc<B>>,
}

impl<B> Opened<B> {
    pub(super) fn new(handle: Handle, cache: CacheFlags) -> Opened<B> {
        Opened {
            handle,
            cache,
            backing: None,
        }
    }
}

/// A read's bytes, to get with [`data`](Read::data).
#[derive(Debug)]
pub enum Read<'img> {
    /// The bytes, borrowed from the mapping (zero-copy).
    Mapped(&'img [u8]),
    /// Image data spanning extents or holes: copied.
    Image(ImageRead<'img>),
    /// Bytes of a basedir object. Reading them may wait on the disk: transports may read
    /// them on another thread.
    Object(ObjectRead),
}

impl<'img> Read<'img> {
    /// The bytes read (fewer than asked at the end of the file), borrowed from the mapping or
    /// written into `buf`.
    pub fn data<'a>(self, buf: &'a mut Vec<u8>) -> Result<&'a [u8], Errno>
    where
        'img: 'a,
    {
        match self {
            Read::Mapped(data) => Ok(data),
            Read::Image(read) => read.data(buf),
            Read::Object(read) => read.data(buf),
        }
    }

    /// Writes the bytes read into `out` (at most its length; fewer at the end of the file),
    /// for transports that own the reply buffer; how many.
    pub fn read_into(self, out: &mut [u8]) -> Result<usize, Errno> {
        match self {
            Read::Mapped(data) => {
                let n = data.len().min(out.len());
                out[..n].copy_from_slice(&data[..n]);
                Ok(n)
            }
            Read::Image(read) => {
                let len = read.len.min(out.len());
                read.inode
                    .read_at(read.offset, &mut out[..len])
                    .map_err(io_error)
            }
            Read::Object(read) => {
                let len = (read.size as usize).min(out.len());
                FileExt::read_at(&*read.file, &mut out[..len], read.offset)
                    .map_err(|e| Errno::from_io_error(&e).unwrap_or(Errno::IO))
            }
        }
    }
}

/// A read of image data that must be copied.
#[derive(Debug)]
pub struct ImageRead<'img> {
    inode: Inode<'img>,
    offset: u64,
    len: usize,
}

impl<'img> ImageRead<'img> {
    pub(super) fn new(inode: Inode<'img>, offset: u64, len: usize) -> Self {
        ImageRead { inode, offset, len }
    }

    /// Copies the bytes into `buf`.
    pub fn data<'a>(&self, buf: &'a mut Vec<u8>) -> Result<&'a [u8], Errno> {
        let out = scratch(buf, self.len);
        let n = self.inode.read_at(self.offset, out).map_err(io_error)?;
        Ok(&out[..n])
    }
}

/// A read of a basedir object; owns what it needs, so it can move to another thread.
#[derive(Debug)]
pub struct ObjectRead {
    file: Arc<File>,
    offset: u64,
    size: u32,
}

impl ObjectRead {
    pub(super) fn new(file: Arc<File>, offset: u64, size: u32) -> Self {
        ObjectRead { file, offset, size }
    }

    /// Reads the bytes into `buf`.
    pub fn data<'a>(&self, buf: &'a mut Vec<u8>) -> Result<&'a [u8], Errno> {
        read_file_into(&self.file, self.offset, self.size as usize, buf)
    }
}

/// One listed directory entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaddirEntry<'img> {
    /// Node id of the inode it names.
    pub node: u64,
    /// Position of the entry after it: where a listing resumes.
    pub next_offset: u64,
    /// File type.
    pub kind: FileType,
    /// Name, borrowed from the image.
    pub name: &'img [u8],
}

/// A listed directory entry with its inode's attributes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReaddirPlusEntry<'img> {
    /// The entry.
    pub entry: ReaddirEntry<'img>,
    /// Its inode's attributes.
    pub attr: Attr,
    /// How long the kernel may keep the entry and attributes (zero for entries lookup
    /// refuses).
    pub ttl: Duration,
}

/// Hands a listing's `entries` to `add` until `add` says the reply is full (`true`). As
/// getdents: an error after some entries ends the reply with them (the next request meets
/// it again), an error before any is the reply's.
pub(crate) fn fill_listing<T>(
    entries: impl IntoIterator<Item = Result<T, Errno>>,
    mut add: impl FnMut(T) -> bool,
) -> Result<(), Errno> {
    let mut added = false;
    for entry in entries {
        let entry = match entry {
            Ok(entry) => entry,
            Err(_) if added => break,
            Err(e) => return Err(e),
        };
        if add(entry) {
            break;
        }
        added = true;
    }
    Ok(())
}

/// What statfs reports (nothing is free: the filesystem is read-only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Statfs {
    /// Size in blocks.
    pub blocks: u64,
    /// Number of inodes.
    pub files: u64,
    /// Block size in bytes.
    pub block_size: u32,
    /// Longest file name.
    pub name_len: u32,
}

/// An xattr value or name list, or its size (the getxattr/listxattr size protocol: a
/// request of size 0 asks for the size).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum XattrReply<'a> {
    /// The size of the value.
    Size(u32),
    /// The value.
    Data(&'a [u8]),
}

impl<'a> XattrReply<'a> {
    /// `value` or its size, for a request of `size` bytes (ERANGE if it does not fit).
    pub(super) fn sized(size: u32, value: &'a [u8]) -> Result<XattrReply<'a>, Errno> {
        if size == 0 {
            Ok(XattrReply::Size(value.len() as u32))
        } else if value.len() > size as usize {
            Err(Errno::RANGE)
        } else {
            Ok(XattrReply::Data(value))
        }
    }
}

/// Reads `file` at `offset` into `buf`, sized to `len` (grown once to the largest read; its
/// contents are overwritten).
fn read_file_into<'a>(
    file: &File,
    offset: u64,
    len: usize,
    buf: &'a mut Vec<u8>,
) -> Result<&'a [u8], Errno> {
    let buf = scratch(buf, len);
    match file.read_at(buf, offset) {
        Ok(n) => Ok(&buf[..n]),
        Err(e) => Err(Errno::from_io_error(&e).unwrap_or(Errno::IO)),
    }
}

/// The first `len` bytes of `buf`, grown if shorter (contents unspecified: readers overwrite
/// what they return).
fn scratch(buf: &mut Vec<u8>, len: usize) -> &mut [u8] {
    if buf.len() < len {
        buf.resize(len, 0);
    }
    &mut buf[..len]
}
