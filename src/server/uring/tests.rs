//! Requests decoded and replies encoded as a ring entry carries them, without a mount: each
//! request is laid out as the kernel lays it out, answered, and the reply read back.

use composefs::dumpfile::dumpfile_to_filesystem;
use composefs::erofs::format::FormatVersion;
use composefs::erofs::writer::{ValidatedFileSystem, mkfs_erofs_versioned};
use composefs::fsverity::Sha256HashValue;
use zerocopy::{FromBytes, IntoBytes};

use super::dispatch;
use super::{parse_cpu_list, payload_len};
use crate::erofs::{FileType, Image};
use crate::server::Server;
use crate::server::abi::*;
use crate::server::core::{Attr, Core, ROOT_ID, Timestamp};
use crate::sys::uring::{HEADER_SIZE, HeaderBuf};
use crate::view::View;

const DUMP: &str = r"/ 0 40755 2 0 0 0 1700000000.5 - - - user.root=1
/d 0 40750 2 1000 1001 0 1700000001.0 - - -
/d/inline 11 100644 1 7 8 0 1700000002.000000007 - hello\x20world - user.a=b user.long=0123456789
/link 9 120777 1 0 0 0 1700000000.5 /target\x20x - -
";

const OWNER: u32 = 4242;
const COMMIT_ID: u64 = 0x1234_5678;

fn server() -> Server {
    let fs = dumpfile_to_filesystem::<Sha256HashValue>(DUMP).unwrap();
    let fs = ValidatedFileSystem::new(fs).unwrap();
    let bytes = mkfs_erofs_versioned(&fs, FormatVersion::V1).into_vec();
    Server::new(Core::new(
        Image::from_bytes(bytes).unwrap(),
        View::Direct,
        None,
    ))
    .with_owner(Some(OWNER))
}

/// A reply as the kernel reads it back.
struct Reply {
    out: fuse_out_header,
    payload: Vec<u8>,
    commit_id: u64,
}

/// Answers one request laid out as the kernel lays it out: `op_in` in the header, `args` in
/// the payload.
fn request(server: &Server, opcode: u32, node: u64, op_in: &[u8], args: &[u8]) -> Reply {
    request_as(server, OWNER, opcode, node, op_in, args)
}

fn request_as(server: &Server, uid: u32, opcode: u32, node: u64, op: &[u8], args: &[u8]) -> Reply {
    let mut header = HeaderBuf([0; HEADER_SIZE]);
    let req = fuse_uring_req_header::mut_from_bytes(&mut header.0[..]).unwrap();
    let head = fuse_in_header {
        len: 40,
        opcode,
        unique: COMMIT_ID,
        nodeid: node,
        uid,
        ..fuse_in_header::default()
    };
    req.in_out[..40].copy_from_slice(head.as_bytes());
    req.op_in[..op.len()].copy_from_slice(op);
    req.ring_ent_in_out.commit_id = COMMIT_ID;
    req.ring_ent_in_out.payload_sz = args.len() as u32;
    let mut payload = vec![0xAA; payload_len()];
    payload[..args.len()].copy_from_slice(args);
    let commit_id = dispatch::answer(server, &mut header, &mut payload);
    let req = fuse_uring_req_header::ref_from_bytes(&header.0[..]).unwrap();
    let (out, _) = fuse_out_header::read_from_prefix(&req.in_out[..]).unwrap();
    let len = req.ring_ent_in_out.payload_sz as usize;
    assert_eq!(
        out.len as usize,
        16 + len,
        "the out header counts the payload"
    );
    payload.truncate(len);
    Reply {
        out,
        payload,
        commit_id,
    }
}

fn lookup(server: &Server, parent: u64, name: &[u8]) -> fuse_entry_out {
    let reply = request(server, FUSE_LOOKUP, parent, &[], &[name, b"\0"].concat());
    assert_eq!(reply.out.error, 0);
    fuse_entry_out::read_from_bytes(&reply.payload).unwrap()
}

fn read_in(offset: u64, size: u32) -> fuse_read_in {
    fuse_read_in {
        offset,
        size,
        ..fuse_read_in::default()
    }
}

#[test]
fn lookup_answers_the_entry_and_echoes_the_request_ids() {
    let server = server();
    let reply = request(&server, FUSE_LOOKUP, ROOT_ID, &[], b"d\0");
    assert_eq!((reply.out.error, reply.out.unique), (0, COMMIT_ID));
    assert_eq!(reply.commit_id, COMMIT_ID);
    let entry = fuse_entry_out::read_from_bytes(&reply.payload).unwrap();
    // The dumpfile's `/d`: 40750, 2 links, 1000:1001, mtime 1700000001.0 (EROFS keeps one
    // time: ctime and atime are the mtime).
    let a = entry.attr;
    assert_eq!(a.ino, entry.nodeid);
    assert_ne!(entry.nodeid, ROOT_ID);
    assert_eq!(
        (a.mode, a.nlink, a.uid, a.gid, a.rdev),
        (0o040750, 2, 1000, 1001, 0)
    );
    assert_eq!((a.mtime, a.mtimensec), (1_700_000_001, 0));
    assert_eq!(
        (a.ctime, a.ctimensec, a.atime, a.atimensec),
        (a.mtime, 0, a.mtime, 0)
    );
    assert_eq!(entry.entry_valid, crate::server::core::TTL.as_secs());
    assert_eq!(entry.attr_valid, crate::server::core::TTL.as_secs());
    // And `/d/inline`: 11 bytes (one 4 KiB block: 8 sectors), 1 link, 7:8, mtime with
    // nanoseconds.
    let a = lookup(&server, entry.nodeid, b"inline").attr;
    assert_eq!((a.mode, a.nlink, a.uid, a.gid), (0o100644, 1, 7, 8));
    assert_eq!((a.size, a.blocks, a.blksize), (11, 8, 4096));
    assert_eq!((a.mtime, a.mtimensec), (1_700_000_002, 7));
    assert_eq!((a.ctime, a.ctimensec), (1_700_000_002, 7));
}

#[test]
fn missing_names_are_cached_negative_entries() {
    let entry = lookup(&server(), ROOT_ID, b"nothing");
    assert_eq!(entry.nodeid, 0);
    assert_ne!(entry.entry_valid, 0);
}

#[test]
fn getattr_and_readlink() {
    let server = server();
    let link = lookup(&server, ROOT_ID, b"link").nodeid;
    let reply = request(&server, FUSE_GETATTR, link, &[0; 16], &[]);
    let attr = fuse_attr_out::read_from_bytes(&reply.payload).unwrap();
    assert_eq!((attr.attr.mode, attr.attr.size), (0o120777, 9));
    let reply = request(&server, FUSE_READLINK, link, &[], &[]);
    assert_eq!(reply.payload, b"/target x");
}

#[test]
fn open_read_and_release_inline_data() {
    let server = server();
    let d = lookup(&server, ROOT_ID, b"d").nodeid;
    let file = lookup(&server, d, b"inline").nodeid;
    let reply = request(&server, FUSE_OPEN, file, &[0; 8], &[]);
    let open = fuse_open_out::read_from_bytes(&reply.payload).unwrap();
    assert_eq!((open.open_flags, open.backing_id), (FOPEN_KEEP_CACHE, 0));
    let arg = fuse_read_in {
        fh: open.fh,
        ..read_in(6, 100)
    };
    let reply = request(&server, FUSE_READ, file, arg.as_bytes(), &[]);
    assert_eq!(reply.payload, b"world", "short at the end of the file");
    let release = fuse_release_in {
        fh: open.fh,
        ..fuse_release_in::default()
    };
    let reply = request(&server, FUSE_RELEASE, file, release.as_bytes(), &[]);
    assert_eq!((reply.out.error, reply.payload.len()), (0, 0));
}

#[test]
fn readdir_entries_are_padded_to_eight_bytes_and_stop_when_full() {
    let server = server();
    let reply = request(
        &server,
        FUSE_READDIR,
        ROOT_ID,
        read_in(0, 4096).as_bytes(),
        &[],
    );
    let mut names = Vec::new();
    let mut rest = &reply.payload[..];
    while !rest.is_empty() {
        let (dirent, tail) = fuse_dirent::read_from_prefix(rest).unwrap();
        names.push(tail[..dirent.namelen as usize].to_vec());
        let len = (24 + dirent.namelen as usize).next_multiple_of(8);
        rest = &rest[len..];
    }
    let expected: Vec<Vec<u8>> = server
        .core()
        .readdir(ROOT_ID, 0)
        .unwrap()
        .map(|e| e.unwrap().name.to_vec())
        .collect();
    assert_eq!(names, expected);
    // Room for one entry (".", 24 + 1 bytes padded to 32) and not the next.
    let reply = request(
        &server,
        FUSE_READDIR,
        ROOT_ID,
        read_in(0, 40).as_bytes(),
        &[],
    );
    assert_eq!(reply.payload.len(), 32);
    assert_eq!(&reply.payload[24..32], b".\0\0\0\0\0\0\0");
}

#[test]
fn readdirplus_carries_each_entrys_attributes() {
    let server = server();
    let reply = request(
        &server,
        FUSE_READDIRPLUS,
        ROOT_ID,
        read_in(0, 4096).as_bytes(),
        &[],
    );
    let mut rest = &reply.payload[..];
    let mut seen = Vec::new();
    while !rest.is_empty() {
        let (plus, tail) = fuse_direntplus::read_from_prefix(rest).unwrap();
        let name = &tail[..plus.dirent.namelen as usize];
        assert_eq!(plus.entry_out.nodeid, plus.dirent.ino);
        assert_eq!(plus.dirent.r#type, plus.entry_out.attr.mode >> 12);
        seen.push((name.to_vec(), plus.entry_out.attr.mode));
        rest = &rest[(152 + name.len()).next_multiple_of(8)..];
    }
    assert!(seen.contains(&(b"link".to_vec(), 0o120777)), "{seen:?}");
    assert!(seen.contains(&(b"d".to_vec(), 0o040750)), "{seen:?}");
}

#[test]
fn xattrs_follow_the_size_protocol() {
    let server = server();
    let file = lookup(&server, lookup(&server, ROOT_ID, b"d").nodeid, b"inline").nodeid;
    let size = |n: u32| fuse_getxattr_in {
        size: n,
        padding: 0,
    };
    let reply = request(
        &server,
        FUSE_GETXATTR,
        file,
        size(0).as_bytes(),
        b"user.long\0",
    );
    assert_eq!(
        fuse_getxattr_out::read_from_bytes(&reply.payload)
            .unwrap()
            .size,
        10
    );
    let reply = request(
        &server,
        FUSE_GETXATTR,
        file,
        size(64).as_bytes(),
        b"user.long\0",
    );
    assert_eq!(reply.payload, b"0123456789");
    let reply = request(
        &server,
        FUSE_GETXATTR,
        file,
        size(4).as_bytes(),
        b"user.long\0",
    );
    assert_eq!(reply.out.error, -libc_errno(rustix::io::Errno::RANGE));
    let reply = request(
        &server,
        FUSE_GETXATTR,
        file,
        size(64).as_bytes(),
        b"user.no\0",
    );
    assert_eq!(reply.out.error, -libc_errno(rustix::io::Errno::NODATA));
    let reply = request(&server, FUSE_LISTXATTR, file, size(256).as_bytes(), &[]);
    assert_eq!(reply.payload, b"user.a\0user.long\0");
    let reply = request(&server, FUSE_LISTXATTR, file, size(0).as_bytes(), &[]);
    assert_eq!(
        fuse_getxattr_out::read_from_bytes(&reply.payload)
            .unwrap()
            .size,
        17
    );
}

#[test]
fn statfs_reports_a_full_read_only_filesystem() {
    let server = server();
    let reply = request(&server, FUSE_STATFS, ROOT_ID, &[], &[]);
    let statfs = fuse_statfs_out::read_from_bytes(&reply.payload).unwrap().st;
    assert_eq!((statfs.bfree, statfs.bavail, statfs.ffree), (0, 0, 0));
    assert_eq!(statfs.namelen, 255);
    assert_eq!(statfs.bsize, statfs.frsize);
}

#[test]
fn other_operations_are_not_implemented() {
    let server = server();
    for opcode in [4, 9, 16, 34, 52, 9999] {
        let reply = request(&server, opcode, ROOT_ID, &[], &[]);
        assert_eq!(
            reply.out.error,
            -libc_errno(rustix::io::Errno::NOSYS),
            "{opcode}"
        );
        assert!(reply.payload.is_empty());
    }
}

#[test]
fn other_users_may_only_make_requests_without_a_caller() {
    let server = server();
    let other = OWNER + 1;
    let reply = request_as(&server, other, FUSE_LOOKUP, ROOT_ID, &[], b"d\0");
    assert_eq!(reply.out.error, -libc_errno(rustix::io::Errno::ACCESS));
    let reply = request_as(
        &server,
        other,
        FUSE_READDIR,
        ROOT_ID,
        read_in(0, 4096).as_bytes(),
        &[],
    );
    assert_eq!(reply.out.error, 0);
}

#[test]
fn times_before_the_epoch_keep_their_bits() {
    let attr = Attr {
        ino: 5,
        size: 0,
        blocks: 0,
        mtime: Timestamp {
            secs: -2,
            nanos: 500,
        },
        kind: FileType::Fifo,
        perm: 0o644,
        nlink: 1,
        uid: 0,
        gid: 0,
        rdev: 0,
        block_size: 4096,
    };
    let encoded = fuse_attr::of(&attr);
    assert_eq!(encoded.mtime as i64, -2);
    assert_eq!(
        (encoded.atime, encoded.ctime),
        (encoded.mtime, encoded.mtime)
    );
    assert_eq!((encoded.mtimensec, encoded.mode), (500, 0o010644));
}

#[test]
fn possible_cpu_lists_count_every_cpu() {
    assert_eq!(parse_cpu_list("0"), Some(1));
    assert_eq!(parse_cpu_list("0-1"), Some(2));
    assert_eq!(parse_cpu_list("0-3,8-11,14"), Some(9));
    assert_eq!(parse_cpu_list("3-1"), None);
    assert_eq!(parse_cpu_list("x"), None);
}

#[test]
fn payload_buffers_hold_the_largest_request() {
    assert!(payload_len() >= super::MAX_WRITE as usize);
    assert!(payload_len() >= FUSE_MIN_READ_BUFFER);
    assert_eq!(payload_len() % rustix::param::page_size(), 0);
}

fn libc_errno(e: rustix::io::Errno) -> i32 {
    e.raw_os_error()
}
