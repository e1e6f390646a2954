//! The EROFS writer: lays the inodes out as the reference writers do and emits the image.
//!
//! The layout is composefs-rs' (which is `mkcomposefs`' for V0/V1), so the same tree gives the
//! same bytes and the same fs-verity digest: the composefs header, the superblock at 1024, the
//! inodes from 1152 (each 32-byte aligned, with its xattr body and inline tail, padded so that
//! a tail does not cross a block as each writer does it), the shared xattr table right after
//! the last inode, then whole blocks per inode in inode order (directory blocks, content too
//! large to inline, chunk maps too large for the inode's block). The arithmetic runs once to
//! place everything, then the bytes are written through [`crate::erofs::format`]'s structs.

use zerocopy::IntoBytes;
use zerocopy::little_endian::{U16, U32, U64};

use super::inodes::{Data, Entry, Inode, Inodes};
use super::xattrs::{self, Shared, Stored};
use super::{CreateError, Format};
use crate::erofs::format::{
    COMPOSEFS_BLOCK_BITS, COMPOSEFS_FLAGS_HAS_ACL, COMPOSEFS_HEADER_VERSION, COMPOSEFS_MAGIC,
    ComposefsHeader, Dirent, DiskSuperblock, INODE_SLOT_BITS, InodeCompact, InodeExtended,
    SUPER_MAGIC, SUPER_OFFSET, chunk, compat, datalayout, iformat, mode::S_IFLNK, mode::S_IFMT,
    xattr_index,
};

const BLOCK: u64 = 1 << COMPOSEFS_BLOCK_BITS;
const SLOT: u64 = 1 << INODE_SLOT_BITS;
const INODES_AT: u64 = (SUPER_OFFSET + size_of::<DiskSuperblock>()) as u64;
/// A directory's last, partial block stays inline up to this many bytes.
const DIR_INLINE_MAX: u64 = BLOCK / 2;
/// V0/V1 keep a regular file's partial last block inline up to this many bytes.
const TAIL_INLINE_MAX: usize = BLOCK as usize / 2;
/// A chunk map entry: a 4-byte block address, all holes.
const HOLE: [u8; 4] = [0xff; 4];

/// What follows an inode's xattr body.
enum Tail<'t> {
    None,
    Bytes(&'t [u8]),
    Dirents(Vec<Entry<'t>>),
    Holes(usize),
}

/// Whole blocks of an inode, after the shared xattr table.
enum Blocks<'t> {
    None,
    /// Content cut in blocks, the last one zero-padded.
    Bytes(&'t [u8], usize),
    Dirents(Vec<Vec<Entry<'t>>>),
    /// One block of holes (a chunk map moved out of the inode).
    Holes,
}

/// The padding rule before an inode with a tail (see [`pad`]).
#[derive(Clone, Copy)]
enum Pad {
    None,
    /// V0/V1: the tail must not cross the block its start is in.
    Tail(u64),
    /// V0/V1 symlinks: the inode, its xattrs and its target (`u64`) in one block.
    Whole(u64),
    /// V0/V1 chunk map moved to a block: the inode starts a block.
    Block,
    /// V2: the tail (`u64`) must end in the block its metadata ends in.
    V2(u64),
}

/// One inode as laid out.
struct Shape<'t> {
    extended: bool,
    layout: u8,
    size: u64,
    /// `i_u` apart from the block address.
    u: u32,
    /// How the block address goes into `i_u`: not at all, whole, or its high half (chunk map).
    blkaddr: Option<u32>,
    body: usize,
    tail: Tail<'t>,
    tail_len: usize,
    blocks: Blocks<'t>,
    block_count: u64,
    pad: Pad,
}

impl<'t> Shape<'t> {
    /// Moves a symlink's target from the inode to a block of its own.
    fn move_target_to_block(&mut self, target: &'t [u8]) {
        self.layout = datalayout::FLAT_PLAIN;
        self.tail = Tail::None;
        self.tail_len = 0;
        self.blkaddr = Some(u32::MAX);
        self.block_count = 1;
        self.blocks = Blocks::Bytes(target, 1);
        self.pad = Pad::None;
    }
}

/// Where everything goes: each inode's shape and offset, each inode's first block, the
/// end of the inodes (where the shared xattr table starts) and of the image.
struct Placement<'t> {
    shapes: Vec<Shape<'t>>,
    inode_at: Vec<u64>,
    block_at: Vec<u64>,
    inodes_end: u64,
    end: u64,
}

impl Placement<'_> {
    /// The node id of inode `number`.
    fn nid(&self, number: usize) -> u64 {
        self.inode_at[number] / SLOT
    }
}

/// Writes `inodes` as a composefs image of `format`.
pub fn write(inodes: &Inodes<'_>, format: Format) -> Result<Vec<u8>, CreateError> {
    let epoch1 = format != Format::V2;
    let list = &inodes.list;
    let stored: Vec<Vec<Stored<'_>>> = list
        .iter()
        .map(|inode| stored_xattrs(inode, epoch1))
        .collect::<Result<_, _>>()?;
    let has_acl = stored.iter().flatten().any(|&(index, _, _)| {
        index == xattr_index::POSIX_ACL_ACCESS || index == xattr_index::POSIX_ACL_DEFAULT
    });
    let shared = Shared::new(&stored, epoch1);
    let build_time = if epoch1 {
        list.iter().map(|i| i.mtime).min().unwrap_or((0, 0))
    } else {
        (0, 0)
    };
    let placed = place(list, &stored, &shared, build_time, epoch1);
    let end = placed.end;
    let too_large = || {
        CreateError::Unsupported(format!(
            "the image would be {end} bytes: EROFS addresses 2^32 blocks of 4 KiB"
        ))
    };
    let blocks = u32::try_from(end / BLOCK).map_err(|_| too_large())?;
    let len = usize::try_from(end).map_err(|_| too_large())?;
    // V0/V1 count shared ids from the block the table starts in, V2 from the image start.
    let (xattr_blkaddr, shared_base) = if epoch1 {
        (placed.inodes_end / BLOCK, placed.inodes_end % BLOCK)
    } else {
        (0, placed.inodes_end)
    };
    let shared_base = u32::try_from(shared_base).map_err(|_| too_large())?;

    let mut out = vec![0u8; len];
    put(&mut out, 0, composefs_header(format, has_acl).as_bytes());
    let superblock = DiskSuperblock {
        magic: U32::new(SUPER_MAGIC),
        checksum: U32::new(0),
        feature_compat: U32::new(compat::MTIME | compat::XATTR_FILTER),
        blkszbits: COMPOSEFS_BLOCK_BITS,
        sb_extslots: 0,
        root_nid: U16::new(placed.nid(0) as u16),
        inos: U64::new(list.len() as u64),
        epoch: U64::new(build_time.0),
        fixed_nsec: U32::new(build_time.1),
        blocks: U32::new(blocks),
        meta_blkaddr: U32::new(0),
        xattr_blkaddr: U32::new(xattr_blkaddr as u32),
        uuid: [0; 16],
        volume_name: [0; 16],
        feature_incompat: U32::new(0),
        available_compr_algs: U16::new(0),
        extra_devices: U16::new(0),
        devt_slotoff: U16::new(0),
        dirblkbits: 0,
        xattr_prefix_count: 0,
        xattr_prefix_start: U32::new(0),
        packed_nid: U64::new(0),
        xattr_filter_reserved: 0,
        reserved2: [0; 23],
    };
    put(&mut out, SUPER_OFFSET as u64, superblock.as_bytes());
    for (number, inode) in list.iter().enumerate() {
        let body = shared.body(&stored[number], shared_base);
        write_inode(&mut out, &placed, number, inode, &body, epoch1);
        write_blocks(&mut out, &placed, number);
    }
    put(&mut out, placed.inodes_end, &shared.table());
    Ok(out)
}

/// Places the inodes (each after the padding its shape needs), the shared xattr table and
/// the inodes' blocks.
fn place<'t>(
    list: &'t [Inode<'t>],
    stored: &[Vec<Stored<'_>>],
    shared: &Shared<'_>,
    build_time: (u64, u32),
    epoch1: bool,
) -> Placement<'t> {
    let mut shapes = Vec::with_capacity(list.len());
    let mut inode_at = Vec::with_capacity(list.len());
    let mut pos = INODES_AT;
    for (inode, xattrs) in list.iter().zip(stored) {
        let body = shared.body(xattrs, 0).len();
        let mut shape = shape(inode, body, build_time, epoch1);
        let slot = pos.next_multiple_of(SLOT);
        pos = pad(slot, &shape);
        let tail_at = pos + header_size(shape.extended) + shape.body as u64;
        if let (Pad::V2(_), Data::Symlink(target)) = (shape.pad, &inode.data) {
            if tail_at % BLOCK + target.len() as u64 > BLOCK {
                // composefs-rs' V2 would leave the target crossing a block, which the kernel
                // refuses for symlinks: it gets a block, as in V0/V1.
                shape.move_target_to_block(target);
                pos = slot;
            }
        }
        inode_at.push(pos);
        pos += header_size(shape.extended) + (shape.body + shape.tail_len) as u64;
        shapes.push(shape);
    }
    let inodes_end = pos.next_multiple_of(SLOT);
    pos = (inodes_end + shared.size() as u64).next_multiple_of(BLOCK);
    let mut block_at = Vec::with_capacity(list.len());
    for shape in &shapes {
        block_at.push(pos);
        pos += shape.block_count * BLOCK;
    }
    Placement {
        shapes,
        inode_at,
        block_at,
        inodes_end,
        end: pos,
    }
}

/// The composefs header: its magic, the ACL flag (V0/V1) and the format's version.
fn composefs_header(format: Format, has_acl: bool) -> ComposefsHeader {
    let epoch1 = format != Format::V2;
    ComposefsHeader {
        magic: U32::new(COMPOSEFS_MAGIC),
        version: U32::new(COMPOSEFS_HEADER_VERSION),
        flags: U32::new(if epoch1 && has_acl {
            COMPOSEFS_FLAGS_HAS_ACL
        } else {
            0
        }),
        composefs_version: U32::new(match format {
            Format::V0 => 0,
            Format::V1 => 1,
            Format::V2 => 2,
        }),
        unused: [U32::new(0); 4],
    }
}

/// Inode `number`'s header (compact or extended), its xattr `body` and its inline tail.
fn write_inode(
    out: &mut [u8],
    placed: &Placement<'_>,
    number: usize,
    inode: &Inode<'_>,
    body: &[u8],
    epoch1: bool,
) {
    let shape = &placed.shapes[number];
    let blkaddr = (placed.block_at[number] / BLOCK) as u32;
    let u = match shape.blkaddr {
        None => shape.u,
        Some(mask) => (blkaddr & mask) | shape.u,
    };
    let ino = if epoch1 {
        number as u32
    } else {
        placed.nid(number) as u32
    };
    let icount = xattrs::icount(body.len());
    let mut pos = placed.inode_at[number];
    if shape.extended {
        let header = InodeExtended {
            format: U16::new(
                iformat::VERSION_MASK | u16::from(shape.layout) << iformat::DATALAYOUT_BIT,
            ),
            xattr_icount: U16::new(icount),
            mode: U16::new(inode.mode as u16),
            nb: U16::new(0),
            size: U64::new(shape.size),
            u: U32::new(u),
            ino: U32::new(ino),
            uid: U32::new(inode.uid),
            gid: U32::new(inode.gid),
            mtime: U64::new(inode.mtime.0),
            mtime_nsec: U32::new(if epoch1 { inode.mtime.1 } else { 0 }),
            nlink: U32::new(inode.nlink),
            reserved2: [0; 16],
        };
        put(out, pos, header.as_bytes());
    } else {
        // Compact: the time is the superblock's (`i_mtime` 0 is relative to it).
        let header = InodeCompact {
            format: U16::new(u16::from(shape.layout) << iformat::DATALAYOUT_BIT),
            xattr_icount: U16::new(icount),
            mode: U16::new(inode.mode as u16),
            nb: U16::new(inode.nlink as u16),
            size: U32::new(shape.size as u32),
            mtime: U32::new(0),
            u: U32::new(u),
            ino: U32::new(ino),
            uid: U16::new(inode.uid as u16),
            gid: U16::new(inode.gid as u16),
            reserved2: U32::new(0),
        };
        put(out, pos, header.as_bytes());
    }
    pos += header_size(shape.extended);
    put(out, pos, body);
    pos += body.len() as u64;
    let nid = |number: usize| placed.nid(number);
    match &shape.tail {
        Tail::None => {}
        Tail::Bytes(bytes) => put(out, pos, bytes),
        Tail::Dirents(entries) => put(out, pos, &dirent_block(entries, &nid)),
        Tail::Holes(n) => put(out, pos, &HOLE.repeat(*n)),
    }
}

/// Inode `number`'s whole blocks, after the shared xattr table.
fn write_blocks(out: &mut [u8], placed: &Placement<'_>, number: usize) {
    let nid = |number: usize| placed.nid(number);
    let mut pos = placed.block_at[number];
    match &placed.shapes[number].blocks {
        Blocks::None => {}
        Blocks::Bytes(bytes, count) => {
            let len = (*count * BLOCK as usize).min(bytes.len());
            put(out, pos, &bytes[..len]);
        }
        Blocks::Dirents(blocks) => {
            for entries in blocks {
                put(out, pos, &dirent_block(entries, &nid));
                pos += BLOCK;
            }
        }
        Blocks::Holes => put(out, pos, &HOLE.repeat(BLOCK as usize / HOLE.len())),
    }
}

/// An inode's xattrs split into prefix index and suffix, checked against the format's limits;
/// V0/V1 in `mkcomposefs`' order.
fn stored_xattrs<'t>(inode: &'t Inode<'_>, epoch1: bool) -> Result<Vec<Stored<'t>>, CreateError> {
    let mut stored = inode
        .xattrs
        .iter()
        .map(|(name, value)| {
            let (index, suffix) = xattrs::split(name, !epoch1);
            if suffix.len() > u8::MAX as usize || value.len() > u16::MAX as usize {
                return Err(CreateError::Unsupported(format!(
                    "xattr {} of {} bytes: EROFS stores names up to 255 bytes after the \
                     prefix and values up to 65535 bytes",
                    String::from_utf8_lossy(name),
                    value.len()
                )));
            }
            Ok((index, suffix, &value[..]))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if epoch1 {
        stored.sort_by(xattrs::cmp_full_name);
    }
    Ok(stored)
}

fn header_size(extended: bool) -> u64 {
    if extended {
        size_of::<InodeExtended>() as u64
    } else {
        size_of::<InodeCompact>() as u64
    }
}

/// Decides an inode's layout: its inode size, what goes inline and what in blocks.
fn shape<'t>(inode: &Inode<'t>, body: usize, build_time: (u64, u32), epoch1: bool) -> Shape<'t> {
    let mut s = Shape {
        extended: true,
        layout: datalayout::FLAT_PLAIN,
        size: 0,
        u: 0,
        blkaddr: None,
        body,
        tail: Tail::None,
        tail_len: 0,
        blocks: Blocks::None,
        block_count: 0,
        pad: Pad::None,
    };
    match &inode.data {
        Data::Directory(entries) => s.directory(entries),
        Data::Inline(bytes) => s.inline(bytes, epoch1),
        Data::Symlink(target) => {
            s.size = target.len() as u64;
            s.layout = datalayout::FLAT_INLINE;
            s.tail = Tail::Bytes(target);
            s.tail_len = target.len();
        }
        Data::Chunked { size, v2_map } => s.chunked(*size, *v2_map, epoch1),
        Data::Device(rdev) => s.u = *rdev,
        Data::Empty => {}
    }
    s.extended = !(epoch1
        && inode.mtime == build_time
        && inode.nlink <= u16::MAX as u32
        && inode.uid <= u16::MAX as u32
        && inode.gid <= u16::MAX as u32
        && s.size <= u32::MAX as u64);
    s.padding(inode, epoch1);
    s
}

impl<'t> Shape<'t> {
    /// Dirents packed into blocks in order; a last partial block of at most
    /// [`DIR_INLINE_MAX`] bytes stays inline.
    fn directory(&mut self, entries: &[Entry<'t>]) {
        let mut blocks = Vec::new();
        let mut rest: Vec<Entry<'t>> = Vec::new();
        let mut used = 0;
        for &entry in entries {
            let size = (size_of::<Dirent>() + entry.0.len()) as u64;
            if used + size > BLOCK {
                blocks.push(std::mem::take(&mut rest));
                used = 0;
            }
            used += size;
            rest.push(entry);
        }
        if used > DIR_INLINE_MAX {
            blocks.push(std::mem::take(&mut rest));
            used = 0;
        }
        self.size = blocks.len() as u64 * BLOCK + used;
        self.block_count = blocks.len() as u64;
        if rest.is_empty() {
            self.blkaddr = Some(u32::MAX);
        } else {
            self.layout = datalayout::FLAT_INLINE;
            self.tail_len = used as usize;
            self.tail = Tail::Dirents(rest);
            if !blocks.is_empty() {
                self.blkaddr = Some(u32::MAX);
            }
        }
        if !blocks.is_empty() {
            self.blocks = Blocks::Dirents(blocks);
        }
    }

    /// Content in the image: V0/V1 put whole blocks out of the inode and keep a last partial
    /// block of at most [`TAIL_INLINE_MAX`] bytes inline; V2 keeps it all inline.
    fn inline(&mut self, bytes: &'t [u8], epoch1: bool) {
        self.size = bytes.len() as u64;
        let (mut count, mut tail) = if epoch1 {
            (bytes.len() / BLOCK as usize, bytes.len() % BLOCK as usize)
        } else {
            (0, bytes.len())
        };
        if tail > TAIL_INLINE_MAX && epoch1 {
            count += 1;
            tail = 0;
        }
        self.layout = if tail > 0 {
            datalayout::FLAT_INLINE
        } else {
            datalayout::FLAT_PLAIN
        };
        self.tail = Tail::Bytes(&bytes[bytes.len() - tail..]);
        self.tail_len = tail;
        if count > 0 {
            self.blkaddr = Some(u32::MAX);
            self.block_count = count as u64;
            self.blocks = Blocks::Bytes(bytes, count);
        }
    }

    /// Content in an object: a chunk map of holes, V0/V1 with the smallest chunk that covers
    /// the file in one (at least a block, at most the format's largest), V2 one entry of the
    /// largest (none without a digest).
    fn chunked(&mut self, size: u64, v2_map: bool, epoch1: bool) {
        self.size = size;
        self.layout = datalayout::CHUNK_BASED;
        if epoch1 {
            let bits = (64 - size.saturating_sub(1).leading_zeros()).clamp(
                COMPOSEFS_BLOCK_BITS.into(),
                u32::from(COMPOSEFS_BLOCK_BITS) + u32::from(chunk::BLKBITS_MASK),
            );
            self.u = bits - u32::from(COMPOSEFS_BLOCK_BITS);
            let chunks = size.div_ceil(1 << bits) as usize;
            self.tail_len = HOLE.len() * chunks;
            self.tail = Tail::Holes(chunks);
        } else {
            self.u = chunk::BLKBITS_MASK.into();
            if v2_map {
                self.tail_len = HOLE.len();
                self.tail = Tail::Holes(1);
            }
        }
    }

    /// The padding rule before the inode (see [`pad`]); V0/V1 move a symlink target or a
    /// chunk map that would not fit beside the inode to a block of its own.
    fn padding(&mut self, inode: &Inode<'t>, epoch1: bool) {
        let symlink = inode.mode & S_IFMT == S_IFLNK;
        let meta = header_size(self.extended) + self.body as u64;
        if !epoch1 {
            if self.layout == datalayout::FLAT_INLINE {
                self.pad = Pad::V2(self.size % BLOCK);
            }
        } else if symlink {
            if let (true, Data::Symlink(target)) = (meta + self.size >= BLOCK, &inode.data) {
                // Too long to share a block with its inode: the target gets a block.
                self.move_target_to_block(target);
            }
            self.pad = Pad::Whole(meta + self.size);
        } else if self.layout == datalayout::CHUNK_BASED && self.tail_len > 0 {
            if self.tail_len + self.body % SLOT as usize > BLOCK as usize {
                self.tail = Tail::None;
                self.tail_len = 0;
                self.blkaddr = Some(0xffff_0000);
                self.block_count = 1;
                self.blocks = Blocks::Holes;
                self.pad = Pad::Block;
            } else {
                self.pad = Pad::Tail(self.tail_len as u64);
            }
        } else if self.layout == datalayout::FLAT_INLINE {
            self.pad = Pad::Tail(self.size % BLOCK);
        }
    }
}

/// Where an inode goes at or after slot-aligned `pos`, so that its tail is where the writers
/// put it.
fn pad(pos: u64, shape: &Shape<'_>) -> u64 {
    let meta = header_size(shape.extended) + shape.body as u64;
    let to_block_end = |at: u64| (BLOCK - at % BLOCK) % BLOCK;
    match shape.pad {
        Pad::None => pos,
        Pad::Tail(tail) => {
            let left = to_block_end(pos + meta);
            if left != 0 && left < tail {
                pos + left.next_multiple_of(SLOT)
            } else {
                pos
            }
        }
        Pad::Whole(total) => {
            if pos % BLOCK + total > BLOCK {
                pos.next_multiple_of(BLOCK)
            } else {
                pos
            }
        }
        Pad::Block => pos.next_multiple_of(BLOCK),
        Pad::V2(tail) => {
            let start = pos + meta;
            if (start - 1) / BLOCK != (start + tail) / BLOCK {
                (pos + BLOCK - (start - 1) % BLOCK).next_multiple_of(SLOT)
            } else {
                pos
            }
        }
    }
}

/// One block of directory entries: the `erofs_dirent` array, then the names.
fn dirent_block(entries: &[Entry<'_>], nid: &dyn Fn(usize) -> u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(BLOCK as usize);
    let mut name_at = entries.len() * size_of::<Dirent>();
    for &(name, inode, file_type) in entries {
        let dirent = Dirent {
            nid: U64::new(nid(inode)),
            nameoff: U16::new(name_at as u16),
            file_type,
            reserved: 0,
        };
        out.extend_from_slice(dirent.as_bytes());
        name_at += name.len();
    }
    for &(name, _, _) in entries {
        out.extend_from_slice(name);
    }
    out
}

fn put(out: &mut [u8], at: u64, bytes: &[u8]) {
    let at = at as usize;
    out[at..at + bytes.len()].copy_from_slice(bytes);
}
