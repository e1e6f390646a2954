//! One request from a ring entry: decoded, answered by the core, encoded back into the entry.
//!
//! The kernel puts the `fuse_in_header` in the header buffer's `in_out`, the operation's first
//! fixed-size argument in `op_in` (nothing for operations whose first argument is empty, such
//! as LOOKUP since the kernel moved names out of it), and every further argument (names) in
//! the payload buffer. The reply goes back the same way: `fuse_out_header` in `in_out`, the
//! reply's arguments in the payload, their size in `ring_ent_in_out.payload_sz`.

use zerocopy::{FromBytes, IntoBytes};

use super::encode::{self, put};
use crate::server::abi::*;
use crate::server::core::{Core, Errno};
use crate::server::handles::Handle;
use crate::server::passthrough::Backing;
use crate::server::{Server, buffers};
use crate::sys::uring::HeaderBuf;

/// Answers the request in a ring entry, in place, through [`Server::answer`]; returns its
/// commit id.
pub(super) fn answer(server: &Server, header: &mut HeaderBuf, payload: &mut [u8]) -> u64 {
    let Ok(req) = fuse_uring_req_header::mut_from_bytes(&mut header.0[..]) else {
        unreachable!("the header buffer is a fuse_uring_req_header");
    };
    let (head, _) = fuse_in_header::read_from_prefix(&req.in_out[..]).unwrap_or_default();
    let in_len = (req.ring_ent_in_out.payload_sz as usize).min(payload.len());
    let op_in = &req.op_in;
    // The reply is written (copied from the mapping) before the image's last check.
    let (error, len) = server.answer(
        head.opcode,
        head.uid,
        |core| reply(server, core, &head, op_in, payload, in_len),
        |replied| match replied {
            Ok(len) => (0, len),
            Err(e) => (-e.raw_os_error(), 0),
        },
    );
    let out = fuse_out_header {
        len: (size_of::<fuse_out_header>() + len) as u32,
        error,
        unique: head.unique,
    };
    req.in_out[..size_of::<fuse_out_header>()].copy_from_slice(out.as_bytes());
    req.ring_ent_in_out.payload_sz = len as u32;
    req.ring_ent_in_out.commit_id
}

/// The reply to one request, written to the start of `payload`; its length.
fn reply(
    server: &Server,
    core: &Core<Backing>,
    head: &fuse_in_header,
    op_in: &[u8],
    payload: &mut [u8],
    in_len: usize,
) -> Result<usize, Errno> {
    let node = head.nodeid;
    match head.opcode {
        FUSE_LOOKUP => {
            let entry = core.lookup(node, c_string(&payload[..in_len]))?;
            put(payload, fuse_entry_out::of(&entry).as_bytes())
        }
        FUSE_GETATTR => {
            let attr = fuse_attr_out::of(&core.getattr(node)?);
            put(payload, attr.as_bytes())
        }
        FUSE_READLINK => put(payload, core.readlink(node)?),
        FUSE_OPEN => {
            let opened = core.open(node, |file| server.register_backing(node, file))?;
            put(payload, fuse_open_out::of(&opened).as_bytes())
        }
        FUSE_READ => {
            let arg: fuse_read_in = arg(op_in);
            let size = (arg.size as usize).min(payload.len());
            let read = core.read(node, Handle::from_fh(arg.fh), arg.offset, size as u32)?;
            read.read_into(&mut payload[..size])
        }
        FUSE_FLUSH => core.flush().map(|()| 0),
        FUSE_RELEASE | FUSE_RELEASEDIR => {
            let arg: fuse_release_in = arg(op_in);
            core.release(Handle::from_fh(arg.fh)).map(|()| 0)
        }
        FUSE_OPENDIR => match core.opendir()? {},
        FUSE_READDIR => {
            let arg: fuse_read_in = arg(op_in);
            let size = (arg.size as usize).min(payload.len());
            encode::dirents(&mut payload[..size], core.readdir(node, arg.offset)?)
        }
        FUSE_READDIRPLUS => {
            let arg: fuse_read_in = arg(op_in);
            let size = (arg.size as usize).min(payload.len());
            encode::direntplus(&mut payload[..size], core.readdirplus(node, arg.offset)?)
        }
        FUSE_STATFS => {
            let st = fuse_kstatfs::of(&core.statfs()?);
            put(payload, fuse_statfs_out { st }.as_bytes())
        }
        FUSE_GETXATTR => {
            let arg: fuse_getxattr_in = arg(op_in);
            let value = core.getxattr(node, c_string(&payload[..in_len]), arg.size)?;
            encode::xattr(payload, value)
        }
        FUSE_LISTXATTR => {
            let arg: fuse_getxattr_in = arg(op_in);
            buffers::with_names(|names| {
                encode::xattr(payload, core.listxattr(node, arg.size, names)?)
            })
        }
        _ => Err(Errno::NOSYS),
    }
}

/// The operation's fixed-size argument.
fn arg<T: FromBytes>(op_in: &[u8]) -> T {
    T::read_from_prefix(op_in).map_or_else(|_| T::new_zeroed(), |(value, _)| value)
}

/// A name argument: up to its terminating NUL.
pub(super) fn c_string(bytes: &[u8]) -> &[u8] {
    bytes.split(|&b| b == 0).next().unwrap_or_default()
}
