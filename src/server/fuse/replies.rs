//! How the core's answers become fuser replies.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    FileAttr, FileHandle, FopenFlags, Generation, INodeNo, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr,
};

use super::ImageFs;
use crate::erofs::FileType;
use crate::server::core::{
    Attr, CacheFlags, DirEntry, DirEntryPlus, Entry, Errno, Opened, Read, Statfs, TTL, XattrReply,
    fill_listing,
};
use crate::server::passthrough::Backing;

thread_local! {
    /// Buffer for reads that cannot point into the mapping (objects, data across extents)
    /// and for xattr values and symlink targets, copied before the last check, reused per
    /// thread: it grows to the largest read once (the kernel's `max_read`).
    static READ_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// A fuser reply: every kind can carry an error.
pub(super) trait Reply {
    fn fail(self, e: fuser::Errno);
}

/// Every fuser reply type carries an error the same way.
macro_rules! replies {
    ($($reply:ty),*) => {$(
        impl Reply for $reply {
            fn fail(self, e: fuser::Errno) {
                self.error(e);
            }
        }
    )*};
}

replies!(
    ReplyEntry,
    ReplyAttr,
    ReplyData,
    ReplyOpen,
    ReplyEmpty,
    ReplyDirectory,
    ReplyDirectoryPlus,
    ReplyStatfs,
    ReplyXattr
);

/// A fuser reply that carries the core's answers of type `T`.
pub(super) trait Answer<T>: Reply {
    fn answer(self, fs: &ImageFs, value: T);
}

impl Answer<Entry> for ReplyEntry {
    fn answer(self, _: &ImageFs, entry: Entry) {
        let attr = entry.attr.as_ref().map_or_else(negative_attr, file_attr);
        self.entry(&entry.ttl, &attr, Generation(0));
    }
}

impl Answer<Attr> for ReplyAttr {
    fn answer(self, _: &ImageFs, attr: Attr) {
        self.attr(&TTL, &file_attr(&attr));
    }
}

impl Answer<&[u8]> for ReplyData {
    fn answer(self, fs: &ImageFs, data: &[u8]) {
        checked_copy(fs, data, |data| reply_data(self, data));
    }
}

impl Answer<Read<'_>> for ReplyData {
    fn answer(self, fs: &ImageFs, read: Read<'_>) {
        match read {
            Read::Mapped(data) => self.data(data),
            Read::Object(object) => fs.read_object(move || {
                READ_BUFFER.with_borrow_mut(|buf| reply_data(self, object.data(buf)));
            }),
            read => READ_BUFFER.with_borrow_mut(|buf| {
                let data = read.data(buf);
                reply_data(self, fs.checked(data))
            }),
        }
    }
}

impl Answer<Opened<Backing>> for ReplyOpen {
    fn answer(self, _: &ImageFs, opened: Opened<Backing>) {
        let fh = FileHandle(opened.handle.fh());
        let flags = fopen_flags(opened.cache);
        match &opened.backing {
            Some(backing) => crate::sys::reply_opened_passthrough(self, fh, flags, backing.id()),
            None => self.opened(fh, flags),
        }
    }
}

impl Answer<()> for ReplyEmpty {
    fn answer(self, _: &ImageFs, (): ()) {
        self.ok();
    }
}

impl<'a, I: Iterator<Item = Result<DirEntry<'a>, Errno>>> Answer<I> for ReplyDirectory {
    fn answer(mut self, fs: &ImageFs, entries: I) {
        let listed = fill_listing(entries, |entry| {
            let name = OsStr::from_bytes(entry.name);
            let kind = fuse_type(entry.kind);
            self.add(INodeNo(entry.node), entry.next_offset, kind, name)
        });
        match fs.checked(listed) {
            Ok(()) => self.ok(),
            Err(e) => self.fail(fuser_errno(e)),
        }
    }
}

impl<'a, I: Iterator<Item = Result<DirEntryPlus<'a>, Errno>>> Answer<I> for ReplyDirectoryPlus {
    fn answer(mut self, fs: &ImageFs, entries: I) {
        let listed = fill_listing(entries, |DirEntryPlus { entry, attr, ttl }| {
            let (node, name) = (INodeNo(entry.node), OsStr::from_bytes(entry.name));
            let attr = file_attr(&attr);
            self.add(node, entry.next_offset, name, &ttl, &attr, Generation(0))
        });
        match fs.checked(listed) {
            Ok(()) => self.ok(),
            Err(e) => self.fail(fuser_errno(e)),
        }
    }
}

impl Answer<Statfs> for ReplyStatfs {
    fn answer(self, _: &ImageFs, s: Statfs) {
        let (blocks, free, files) = (s.blocks, 0, s.files);
        self.statfs(
            blocks,
            free,
            free,
            files,
            free,
            s.block_size,
            s.name_len,
            s.block_size,
        );
    }
}

impl Answer<XattrReply<'_>> for ReplyXattr {
    fn answer(self, fs: &ImageFs, xattr: XattrReply<'_>) {
        match xattr {
            XattrReply::Size(size) => self.size(size),
            XattrReply::Data(data) => checked_copy(fs, data, |data| match data {
                Ok(data) => self.data(data),
                Err(e) => self.error(fuser_errno(e)),
            }),
        }
    }
}

/// Hands `send` a copy of `data` (borrowed from the mapping), or EIO if the image changed
/// before the copy was complete. Sent as it is, the kernel would copy it after the last
/// check, and a page rewritten in between would go out unnoticed. File data within one
/// extent (`Read::Mapped`) is still sent from the mapping: zero copy, for that window.
fn checked_copy(fs: &ImageFs, data: &[u8], send: impl FnOnce(Result<&[u8], Errno>)) {
    READ_BUFFER.with_borrow_mut(|buf| {
        buf.clear();
        buf.extend_from_slice(data);
        send(fs.checked(Ok(&buf[..])));
    });
}

/// Replies with bytes read (on whichever thread read them).
fn reply_data(reply: ReplyData, data: Result<&[u8], Errno>) {
    match data {
        Ok(data) => reply.data(data),
        Err(e) => reply.error(fuser_errno(e)),
    }
}

pub(super) fn fuser_errno(e: Errno) -> fuser::Errno {
    fuser::Errno::from_i32(e.raw_os_error())
}

fn fopen_flags(cache: CacheFlags) -> FopenFlags {
    let mut flags = FopenFlags::empty();
    if cache.keep_cache {
        flags |= FopenFlags::FOPEN_KEEP_CACHE;
    }
    if cache.cache_dir {
        flags |= FopenFlags::FOPEN_CACHE_DIR;
    }
    flags
}

fn file_attr(attr: &Attr) -> FileAttr {
    let (secs, nanos) = (attr.mtime.secs, attr.mtime.nanos);
    let mtime = if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nanos)
    } else {
        UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
            + Duration::from_nanos(u64::from(nanos))
    };
    FileAttr {
        ino: INodeNo(attr.ino),
        size: attr.size,
        blocks: attr.blocks,
        atime: mtime,
        mtime,
        ctime: mtime,
        crtime: mtime,
        kind: fuse_type(attr.kind),
        perm: attr.perm,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: attr.rdev,
        blksize: attr.block_size,
        flags: 0,
    }
}

/// The attributes of a negative entry: node id 0, nothing else.
fn negative_attr() -> FileAttr {
    FileAttr {
        ino: INodeNo(0),
        size: 0,
        blocks: 0,
        atime: SystemTime::UNIX_EPOCH,
        mtime: SystemTime::UNIX_EPOCH,
        ctime: SystemTime::UNIX_EPOCH,
        crtime: SystemTime::UNIX_EPOCH,
        kind: fuser::FileType::RegularFile,
        perm: 0,
        nlink: 0,
        uid: 0,
        gid: 0,
        rdev: 0,
        blksize: 0,
        flags: 0,
    }
}

fn fuse_type(t: FileType) -> fuser::FileType {
    match t {
        FileType::Regular => fuser::FileType::RegularFile,
        FileType::Directory => fuser::FileType::Directory,
        FileType::Symlink => fuser::FileType::Symlink,
        FileType::CharDevice => fuser::FileType::CharDevice,
        FileType::BlockDevice => fuser::FileType::BlockDevice,
        FileType::Fifo => fuser::FileType::NamedPipe,
        FileType::Socket => fuser::FileType::Socket,
    }
}
