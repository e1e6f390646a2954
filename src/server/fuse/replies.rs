//! How the core's answers become fuser replies: encoded as [`abi`](crate::server::abi)
//! encodes them for the wire, then handed to fuser in its types.

use std::convert::Infallible;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::time::{Duration, UNIX_EPOCH};

use fuser::{
    FileAttr, FileHandle, FopenFlags, Generation, INodeNo, ReplyAttr, ReplyData, ReplyDirectory,
    ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyXattr,
};

use super::DevFuse;
use crate::erofs::FileType;
use crate::server::abi::{fuse_attr, fuse_attr_out, fuse_entry_out, fuse_kstatfs, open_flags};
use crate::server::buffers;
use crate::server::core::{
    Attr, Entry, Errno, Opened, Read, ReaddirEntry, ReaddirPlusEntry, Statfs, XattrReply,
    fill_listing,
};
use crate::server::passthrough::Backing;

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
    fn answer(self, fs: &DevFuse, value: T);
}

impl Answer<Entry> for ReplyEntry {
    fn answer(self, _: &DevFuse, entry: Entry) {
        let out = fuse_entry_out::of(&entry);
        let ttl = Duration::new(out.entry_valid, out.entry_valid_nsec);
        self.entry(&ttl, &file_attr(&out.attr), Generation(0));
    }
}

impl Answer<Attr> for ReplyAttr {
    fn answer(self, _: &DevFuse, attr: Attr) {
        let out = fuse_attr_out::of(&attr);
        let ttl = Duration::new(out.attr_valid, out.attr_valid_nsec);
        self.attr(&ttl, &file_attr(&out.attr));
    }
}

impl Answer<&[u8]> for ReplyData {
    fn answer(self, fs: &DevFuse, data: &[u8]) {
        checked_copy(fs, data, |data| reply_data(self, data));
    }
}

impl Answer<Read<'_>> for ReplyData {
    fn answer(self, fs: &DevFuse, read: Read<'_>) {
        match read {
            Read::Mapped(data) => self.data(data),
            Read::Object(object) => fs.read_object(move || {
                buffers::with_data(|buf| reply_data(self, object.data(buf)));
            }),
            read => buffers::with_data(|buf| {
                let data = read.data(buf);
                reply_data(self, fs.checked(data))
            }),
        }
    }
}

impl Answer<Opened<Backing>> for ReplyOpen {
    fn answer(self, _: &DevFuse, opened: Opened<Backing>) {
        let fh = FileHandle(opened.handle.fh());
        let flags = FopenFlags::from_bits_retain(open_flags(opened.cache));
        match &opened.backing {
            Some(backing) => crate::sys::reply_opened_passthrough(self, fh, flags, backing.id()),
            None => self.opened(fh, flags),
        }
    }
}

impl Answer<Infallible> for ReplyOpen {
    fn answer(self, _: &DevFuse, never: Infallible) {
        match never {}
    }
}

impl Answer<()> for ReplyEmpty {
    fn answer(self, _: &DevFuse, (): ()) {
        self.ok();
    }
}

impl<'a, I: Iterator<Item = Result<ReaddirEntry<'a>, Errno>>> Answer<I> for ReplyDirectory {
    fn answer(mut self, fs: &DevFuse, entries: I) {
        let listed = fill_listing(entries, |entry| {
            let name = OsStr::from_bytes(entry.name);
            let kind = fuser_type(entry.kind.mode_bits());
            self.add(INodeNo(entry.node), entry.next_offset, kind, name)
        });
        match fs.checked(listed) {
            Ok(()) => self.ok(),
            Err(e) => self.fail(fuser_errno(e)),
        }
    }
}

impl<'a, I: Iterator<Item = Result<ReaddirPlusEntry<'a>, Errno>>> Answer<I> for ReplyDirectoryPlus {
    fn answer(mut self, fs: &DevFuse, entries: I) {
        let listed = fill_listing(entries, |ReaddirPlusEntry { entry, attr, ttl }| {
            let (node, name) = (INodeNo(entry.node), OsStr::from_bytes(entry.name));
            let attr = file_attr(&fuse_attr::of(&attr));
            self.add(node, entry.next_offset, name, &ttl, &attr, Generation(0))
        });
        match fs.checked(listed) {
            Ok(()) => self.ok(),
            Err(e) => self.fail(fuser_errno(e)),
        }
    }
}

impl Answer<Statfs> for ReplyStatfs {
    fn answer(self, _: &DevFuse, statfs: Statfs) {
        let s = fuse_kstatfs::of(&statfs);
        let (blocks, files, bsize, namelen) = (s.blocks, s.files, s.bsize, s.namelen);
        self.statfs(
            blocks, s.bfree, s.bavail, files, s.ffree, bsize, namelen, s.frsize,
        );
    }
}

impl Answer<XattrReply<'_>> for ReplyXattr {
    fn answer(self, fs: &DevFuse, xattr: XattrReply<'_>) {
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
fn checked_copy(fs: &DevFuse, data: &[u8], send: impl FnOnce(Result<&[u8], Errno>)) {
    buffers::with_data(|buf| {
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

/// fuser's form of the wire attributes (it encodes them back as they were).
fn file_attr(attr: &fuse_attr) -> FileAttr {
    let (secs, nanos) = (attr.mtime as i64, attr.mtimensec);
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
        kind: fuser_type(attr.mode),
        perm: (attr.mode & 0o7777) as u16,
        nlink: attr.nlink,
        uid: attr.uid,
        gid: attr.gid,
        rdev: attr.rdev,
        blksize: attr.blksize,
        flags: attr.flags,
    }
}

/// fuser's file type of the `S_IFMT` bits of `mode` (a regular file for none: a negative
/// entry's).
fn fuser_type(mode: u32) -> fuser::FileType {
    match FileType::from_mode(mode) {
        Some(FileType::Regular) | None => fuser::FileType::RegularFile,
        Some(FileType::Directory) => fuser::FileType::Directory,
        Some(FileType::Symlink) => fuser::FileType::Symlink,
        Some(FileType::CharDevice) => fuser::FileType::CharDevice,
        Some(FileType::BlockDevice) => fuser::FileType::BlockDevice,
        Some(FileType::Fifo) => fuser::FileType::NamedPipe,
        Some(FileType::Socket) => fuser::FileType::Socket,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use super::{file_attr, fuser_type};
    use crate::erofs::FileType;
    use crate::server::abi::fuse_attr;
    use crate::server::core::{Attr, Timestamp};

    #[test]
    fn fuser_gets_the_wire_encoding_of_attributes() {
        let attr = Attr {
            ino: 7,
            size: 11,
            blocks: 8,
            mtime: Timestamp {
                secs: -2,
                nanos: 500,
            },
            kind: FileType::Fifo,
            perm: 0o4644,
            nlink: 1,
            uid: 3,
            gid: 4,
            rdev: 5,
            block_size: 4096,
        };
        let fa = file_attr(&fuse_attr::of(&attr));
        let mtime = UNIX_EPOCH - Duration::from_secs(2) + Duration::from_nanos(500);
        assert_eq!((fa.ino.0, fa.size, fa.blocks), (7, 11, 8));
        assert_eq!(
            (fa.atime, fa.mtime, fa.ctime, fa.crtime),
            (mtime, mtime, mtime, mtime)
        );
        assert_eq!((fa.kind, fa.perm), (fuser::FileType::NamedPipe, 0o4644));
        assert_eq!(
            (fa.nlink, fa.uid, fa.gid, fa.rdev, fa.blksize),
            (1, 3, 4, 5, 4096)
        );
    }

    #[test]
    fn every_file_type_maps_to_fusers() {
        let types = [
            (FileType::Regular, fuser::FileType::RegularFile),
            (FileType::Directory, fuser::FileType::Directory),
            (FileType::Symlink, fuser::FileType::Symlink),
            (FileType::CharDevice, fuser::FileType::CharDevice),
            (FileType::BlockDevice, fuser::FileType::BlockDevice),
            (FileType::Fifo, fuser::FileType::NamedPipe),
            (FileType::Socket, fuser::FileType::Socket),
        ];
        for (ours, fusers) in types {
            assert_eq!(fuser_type(ours.mode_bits()), fusers);
        }
        // A negative entry's attributes (mode 0) are a regular file's, as fuser's default.
        assert_eq!(fuser_type(0), fuser::FileType::RegularFile);
    }
}
