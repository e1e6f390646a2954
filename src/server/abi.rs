//! The FUSE wire layer both transports share: the opcodes, the access rule, the structs as
//! the kernel's `include/uapi/linux/fuse.h` declares them (protocol 7.42+, native byte order),
//! and the one encoding of the core's values (attributes, file types, open flags) into them.
//! The io_uring transport writes these structs itself; the fuser transport hands fuser the
//! same values.

#![allow(missing_docs)]

use std::time::Duration;

use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

use super::core::{Attr, CacheFlags, Entry, Opened, ReaddirEntry, Statfs, TTL};
use super::passthrough::Backing;

/// Declares the opcodes (each once): their constants and [`opcode_name`].
macro_rules! opcodes {
    ($($name:ident = $value:literal,)*) => {
        $(pub const $name: u32 = $value;)*

        /// The name of an opcode (`LOOKUP`, ...), for logs (`OTHER` for one not listed).
        pub fn opcode_name(opcode: u32) -> &'static str {
            match opcode {
                $($name => stringify!($name).trim_start_matches("FUSE_"),)*
                _ => "OTHER",
            }
        }
    };
}

opcodes! {
    FUSE_LOOKUP = 1,
    FUSE_FORGET = 2,
    FUSE_GETATTR = 3,
    FUSE_READLINK = 5,
    FUSE_OPEN = 14,
    FUSE_READ = 15,
    FUSE_WRITE = 16,
    FUSE_STATFS = 17,
    FUSE_RELEASE = 18,
    FUSE_FSYNC = 20,
    FUSE_GETXATTR = 22,
    FUSE_LISTXATTR = 23,
    FUSE_FLUSH = 25,
    FUSE_INIT = 26,
    FUSE_OPENDIR = 27,
    FUSE_READDIR = 28,
    FUSE_RELEASEDIR = 29,
    FUSE_FSYNCDIR = 30,
    FUSE_DESTROY = 38,
    FUSE_BATCH_FORGET = 42,
    FUSE_READDIRPLUS = 44,
}

/// The requests the kernel may send on behalf of no particular caller (writeback, readahead,
/// the last close, forgetting): every user may make them, as fuser's `SessionACL::Owner`
/// decides.
pub const WITHOUT_CALLER: [u32; 12] = [
    FUSE_FORGET,
    FUSE_READ,
    FUSE_WRITE,
    FUSE_RELEASE,
    FUSE_FSYNC,
    FUSE_INIT,
    FUSE_READDIR,
    FUSE_RELEASEDIR,
    FUSE_FSYNCDIR,
    FUSE_DESTROY,
    FUSE_BATCH_FORGET,
    FUSE_READDIRPLUS,
];

/// The access rule: with `Some(owner)`, only that user may make requests, except those the
/// kernel sends without a caller ([`WITHOUT_CALLER`]); with `None`, everyone.
pub fn allowed(owner: Option<u32>, uid: u32, opcode: u32) -> bool {
    match owner {
        Some(owner) => uid == owner || WITHOUT_CALLER.contains(&opcode),
        None => true,
    }
}

pub const FOPEN_KEEP_CACHE: u32 = 1 << 1;
pub const FOPEN_PASSTHROUGH: u32 = 1 << 7;

/// Smallest payload buffer the kernel accepts (`FUSE_MIN_READ_BUFFER`).
pub const FUSE_MIN_READ_BUFFER: usize = 8192;
/// Pages per request when INIT does not negotiate `max_pages`.
pub const FUSE_DEFAULT_MAX_PAGES_PER_REQ: usize = 32;

#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct fuse_in_header {
    pub len: u32,
    pub opcode: u32,
    pub unique: u64,
    pub nodeid: u64,
    pub uid: u32,
    pub gid: u32,
    pub pid: u32,
    pub total_extlen: u16,
    pub padding: u16,
}

#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct fuse_out_header {
    pub len: u32,
    pub error: i32,
    pub unique: u64,
}

/// The trailer of `struct fuse_uring_req_header`.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct fuse_uring_ent_in_out {
    pub flags: u64,
    /// The request's `unique`, which COMMIT_AND_FETCH names.
    pub commit_id: u64,
    /// Bytes of the payload buffer in use, in either direction.
    pub payload_sz: u32,
    pub padding: u32,
    pub reserved: u64,
}

/// The header buffer of a ring entry.
#[repr(C)]
#[derive(Debug, Clone, Copy, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct fuse_uring_req_header {
    /// `fuse_in_header` from the kernel, `fuse_out_header` back.
    pub in_out: [u8; 128],
    /// The operation's first, fixed-size argument.
    pub op_in: [u8; 128],
    pub ring_ent_in_out: fuse_uring_ent_in_out,
}

#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct fuse_attr {
    pub ino: u64,
    pub size: u64,
    pub blocks: u64,
    pub atime: u64,
    pub mtime: u64,
    pub ctime: u64,
    pub atimensec: u32,
    pub mtimensec: u32,
    pub ctimensec: u32,
    pub mode: u32,
    pub nlink: u32,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u32,
    pub blksize: u32,
    pub flags: u32,
}

#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct fuse_entry_out {
    pub nodeid: u64,
    pub generation: u64,
    pub entry_valid: u64,
    pub attr_valid: u64,
    pub entry_valid_nsec: u32,
    pub attr_valid_nsec: u32,
    pub attr: fuse_attr,
}

#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct fuse_attr_out {
    pub attr_valid: u64,
    pub attr_valid_nsec: u32,
    pub dummy: u32,
    pub attr: fuse_attr,
}

#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct fuse_open_out {
    pub fh: u64,
    pub open_flags: u32,
    pub backing_id: i32,
}

#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct fuse_read_in {
    pub fh: u64,
    pub offset: u64,
    pub size: u32,
    pub read_flags: u32,
    pub lock_owner: u64,
    pub flags: u32,
    pub padding: u32,
}

#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct fuse_release_in {
    pub fh: u64,
    pub flags: u32,
    pub release_flags: u32,
    pub lock_owner: u64,
}

#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct fuse_getxattr_in {
    pub size: u32,
    pub padding: u32,
}

#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct fuse_getxattr_out {
    pub size: u32,
    pub padding: u32,
}

#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct fuse_kstatfs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
    pub padding: u32,
    pub spare: [u32; 6],
}

#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct fuse_statfs_out {
    pub st: fuse_kstatfs,
}

/// A directory entry of a READDIR reply, followed by its name and padding to 8 bytes.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct fuse_dirent {
    pub ino: u64,
    pub off: u64,
    pub namelen: u32,
    pub r#type: u32,
}

/// A directory entry of a READDIRPLUS reply, followed by its name and padding to 8 bytes.
#[repr(C)]
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct fuse_direntplus {
    pub entry_out: fuse_entry_out,
    pub dirent: fuse_dirent,
}

const _: () = {
    use std::mem::size_of;
    assert!(size_of::<fuse_in_header>() == 40);
    assert!(size_of::<fuse_out_header>() == 16);
    assert!(size_of::<fuse_uring_ent_in_out>() == 32);
    assert!(size_of::<fuse_uring_req_header>() == crate::sys::uring::HEADER_SIZE);
    assert!(size_of::<fuse_attr>() == 88);
    assert!(size_of::<fuse_entry_out>() == 128);
    assert!(size_of::<fuse_attr_out>() == 104);
    assert!(size_of::<fuse_open_out>() == 16);
    assert!(size_of::<fuse_read_in>() == 40);
    assert!(size_of::<fuse_release_in>() == 24);
    assert!(size_of::<fuse_getxattr_in>() == 8);
    assert!(size_of::<fuse_getxattr_out>() == 8);
    assert!(size_of::<fuse_kstatfs>() == 80);
    assert!(size_of::<fuse_statfs_out>() == 80);
    assert!(size_of::<fuse_dirent>() == 24);
    assert!(size_of::<fuse_direntplus>() == 152);
};

/// The `FOPEN_*` caching flags of an open file.
pub fn open_flags(cache: CacheFlags) -> u32 {
    match cache.keep_cache {
        true => FOPEN_KEEP_CACHE,
        false => 0,
    }
}

impl fuse_attr {
    /// The attributes of an inode. The image stores one time: access, modification and
    /// change times are all its mtime (seconds as two's complement, as the kernel reads them).
    pub fn of(attr: &Attr) -> fuse_attr {
        let (secs, nanos) = (attr.mtime.secs as u64, attr.mtime.nanos);
        fuse_attr {
            ino: attr.ino,
            size: attr.size,
            blocks: attr.blocks,
            atime: secs,
            mtime: secs,
            ctime: secs,
            atimensec: nanos,
            mtimensec: nanos,
            ctimensec: nanos,
            mode: attr.kind.mode_bits() | u32::from(attr.perm),
            nlink: attr.nlink,
            uid: attr.uid,
            gid: attr.gid,
            rdev: attr.rdev,
            blksize: attr.block_size,
            flags: 0,
        }
    }
}

impl fuse_entry_out {
    /// A lookup's entry (node id 0 for a negative entry, which the kernel caches for its TTL).
    pub fn of(entry: &Entry) -> fuse_entry_out {
        match &entry.attr {
            Some(attr) => fuse_entry_out::with_attr(attr, entry.ttl),
            None => fuse_entry_out {
                entry_valid: entry.ttl.as_secs(),
                entry_valid_nsec: entry.ttl.subsec_nanos(),
                ..fuse_entry_out::default()
            },
        }
    }

    /// The entry of an inode with attributes `attr`, both valid for `ttl`.
    pub fn with_attr(attr: &Attr, ttl: Duration) -> fuse_entry_out {
        fuse_entry_out {
            nodeid: attr.ino,
            generation: 0,
            entry_valid: ttl.as_secs(),
            attr_valid: ttl.as_secs(),
            entry_valid_nsec: ttl.subsec_nanos(),
            attr_valid_nsec: ttl.subsec_nanos(),
            attr: fuse_attr::of(attr),
        }
    }
}

impl fuse_attr_out {
    /// Attributes, valid for [`TTL`].
    pub fn of(attr: &Attr) -> fuse_attr_out {
        fuse_attr_out {
            attr_valid: TTL.as_secs(),
            attr_valid_nsec: TTL.subsec_nanos(),
            dummy: 0,
            attr: fuse_attr::of(attr),
        }
    }
}

impl fuse_open_out {
    /// An open file: its handle, caching flags and passthrough backing id.
    pub fn of(opened: &Opened<Backing>) -> fuse_open_out {
        let (passthrough, backing_id) = match &opened.backing {
            Some(backing) => (FOPEN_PASSTHROUGH, backing.id() as i32),
            None => (0, 0),
        };
        fuse_open_out {
            fh: opened.handle.fh(),
            open_flags: open_flags(opened.cache) | passthrough,
            backing_id,
        }
    }
}

impl fuse_kstatfs {
    /// The filesystem's sizes: nothing free (it is read-only).
    pub fn of(s: &Statfs) -> fuse_kstatfs {
        fuse_kstatfs {
            blocks: s.blocks,
            files: s.files,
            bsize: s.block_size,
            namelen: s.name_len,
            frsize: s.block_size,
            ..fuse_kstatfs::default()
        }
    }
}

impl fuse_dirent {
    /// The head of directory entry `entry` (of node `ino`), its name to follow.
    pub fn of(ino: u64, entry: &ReaddirEntry<'_>) -> fuse_dirent {
        fuse_dirent {
            ino,
            off: entry.next_offset,
            namelen: entry.name.len() as u32,
            r#type: u32::from(entry.kind.dtype()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opcodes_are_named_from_their_one_declaration() {
        assert_eq!(opcode_name(FUSE_GETXATTR), "GETXATTR");
        assert_eq!(opcode_name(FUSE_READDIRPLUS), "READDIRPLUS");
        assert_eq!(opcode_name(9999), "OTHER");
    }

    #[test]
    fn the_access_rule_is_fusers_session_acl_owner() {
        assert!(allowed(None, 1, FUSE_LOOKUP));
        assert!(allowed(Some(1), 1, FUSE_LOOKUP));
        assert!(!allowed(Some(1), 2, FUSE_LOOKUP));
        assert!(!allowed(Some(1), 2, FUSE_GETXATTR));
        for opcode in WITHOUT_CALLER {
            assert!(allowed(Some(1), 2, opcode), "{}", opcode_name(opcode));
        }
    }
}
