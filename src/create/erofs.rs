//! The EROFS writer: lays the inodes out and emits the image bytes.
//!
//! Layout, all in 4 KiB blocks: the composefs header (offset 0), the superblock (1024), the
//! inode table (each inode 32-byte aligned, followed by its xattr body and its inline data,
//! which never crosses a block boundary, so kernels before 6.12 accept it), the shared xattr
//! area, then whole data blocks (directories and symlinks too large to inline). External
//! files are chunk-based with one hole per chunk: their content is the object named by
//! their redirect. Nothing depends on the clock or on the order the source was read in.

use super::inodes::{Data, Inode, Inodes};
use super::xattrs::{self, Shared, Stored};
use super::{CreateError, Format};

const BLOCK: usize = 4096;
const BLOCK_BITS: u32 = 12;
const COMPOSEFS_MAGIC: u32 = 0xd078_629a;
const EROFS_MAGIC: u32 = 0xE0F5_E1E2;
const SUPERBLOCK_AT: usize = 1024;
const INODES_AT: usize = SUPERBLOCK_AT + 128;
const FEATURE_COMPAT_MTIME: u32 = 0x2;
const FEATURE_COMPAT_XATTR_FILTER: u32 = 0x4;
const FEATURE_INCOMPAT_CHUNKED_FILE: u32 = 0x4;
const COMPOSEFS_FLAGS_HAS_ACL: u32 = 1;
const FLAT_PLAIN: u16 = 0;
const FLAT_INLINE: u16 = 2;
const CHUNK_BASED: u16 = 4;
const DIRENT_SIZE: usize = 12;

/// Where one inode's pieces go.
struct Placed<'t> {
    /// Byte offset of the inode (its nid is this / 32).
    at: usize,
    extended: bool,
    xattr_body: Vec<u8>,
    /// Bytes right after the xattr body (inline tail or chunk map).
    tail: Vec<u8>,
    /// Content too large to inline, in the data area (one block at most: a symlink target).
    blocks: Vec<Vec<u8>>,
    /// Directory blocks, built once the inode numbers are known.
    dir_blocks: Vec<Vec<(&'t [u8], usize, u8)>>,
    dir_tail: Vec<(&'t [u8], usize, u8)>,
    layout: u16,
    size: u64,
    /// `i_u` apart from a block address.
    union: u32,
    first_block: u32,
}

/// Writes `inodes` as a composefs image of `format`.
pub fn write(inodes: &Inodes<'_>, format: Format) -> Result<Vec<u8>, CreateError> {
    let epoch1 = format != Format::V2;
    let list = &inodes.list;
    // V0/V1 keep nanoseconds and give the oldest time to the superblock, so that inodes of
    // that time can be compact; V2 (as composefs-rs) stores seconds only.
    let build_time = if epoch1 {
        list.iter()
            .map(|i| i.mtime)
            .filter(|&(sec, _)| sec >= 0)
            .min()
            .unwrap_or((0, 0))
    } else {
        (0, 0)
    };
    let stored: Vec<Vec<Stored<'_>>> = list
        .iter()
        .map(|inode| stored_xattrs(inode, epoch1))
        .collect::<Result<_, _>>()?;
    let shared = Shared::new(stored.iter().map(|x| &x[..]));

    let mut placed = Vec::with_capacity(list.len());
    let mut cursor = INODES_AT;
    for (inode, xattrs) in list.iter().zip(&stored) {
        let mut p = plan(inode, build_time, epoch1);
        // The shared area's position is not known yet; body sizes do not depend on it.
        p.xattr_body = shared.body(xattrs, 0);
        cursor = place(&mut p, cursor);
        placed.push(p);
    }
    let inodes_end = cursor.next_multiple_of(32);
    let (xattr_blkaddr, shared_base) = if shared.entries.is_empty() {
        (0, 0)
    } else {
        (inodes_end / BLOCK, (inodes_end % BLOCK) as u32)
    };
    let mut next_block = (inodes_end + shared.size()).div_ceil(BLOCK);
    for p in &mut placed {
        p.first_block = next_block as u32;
        next_block += p.blocks.len() + p.dir_blocks.len();
    }
    let mut out = vec![0u8; next_block * BLOCK];

    let has_acl = stored
        .iter()
        .flatten()
        .any(|&(index, _, _)| index == 2 || index == 3);
    let composefs_version = match format {
        Format::V0 if inodes.escaped_whiteouts => 1,
        Format::V0 => 0,
        Format::V1 => 1,
        Format::V2 => 2,
    };
    put32(&mut out, 0, COMPOSEFS_MAGIC);
    put32(&mut out, 4, 1);
    put32(
        &mut out,
        8,
        if epoch1 && has_acl {
            COMPOSEFS_FLAGS_HAS_ACL
        } else {
            0
        },
    );
    put32(&mut out, 12, composefs_version);

    let sb = SUPERBLOCK_AT;
    put32(&mut out, sb, EROFS_MAGIC);
    put32(
        &mut out,
        sb + 8,
        FEATURE_COMPAT_MTIME | FEATURE_COMPAT_XATTR_FILTER,
    );
    out[sb + 12] = BLOCK_BITS as u8;
    put16(&mut out, sb + 14, (placed[0].at / 32) as u16);
    put64(&mut out, sb + 16, list.len() as u64);
    put64(&mut out, sb + 24, build_time.0 as u64);
    put32(&mut out, sb + 32, build_time.1);
    put32(&mut out, sb + 36, next_block as u32);
    put32(&mut out, sb + 44, xattr_blkaddr as u32);
    let chunked = placed.iter().any(|p| p.layout == CHUNK_BASED);
    put32(
        &mut out,
        sb + 80,
        if chunked {
            FEATURE_INCOMPAT_CHUNKED_FILE
        } else {
            0
        },
    );

    let nids: Vec<u64> = placed.iter().map(|p| (p.at / 32) as u64).collect();
    for (number, (inode, p)) in list.iter().zip(&mut placed).enumerate() {
        if !p.xattr_body.is_empty() {
            p.xattr_body = shared.body(&stored[number], shared_base);
        }
        if !p.dir_tail.is_empty() {
            p.tail = dirent_block(&p.dir_tail, &nids);
        }
        emit_inode(&mut out, inode, p, number as u32, epoch1);
        let mut block = p.first_block as usize * BLOCK;
        for data in &p.blocks {
            out[block..block + data.len()].copy_from_slice(data);
            block += BLOCK;
        }
        for entries in &p.dir_blocks {
            let bytes = dirent_block(entries, &nids);
            out[block..block + bytes.len()].copy_from_slice(&bytes);
            block += BLOCK;
        }
    }
    let mut at = inodes_end;
    for &xattr in &shared.entries {
        let mut bytes = Vec::new();
        xattrs::write_entry(&mut bytes, xattr);
        out[at..at + bytes.len()].copy_from_slice(&bytes);
        at += bytes.len();
    }
    Ok(out)
}

/// An inode's xattrs split into prefix index and suffix, checked against the format's limits.
fn stored_xattrs<'t>(inode: &'t Inode<'_>, epoch1: bool) -> Result<Vec<Stored<'t>>, CreateError> {
    inode
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
        .collect()
}

/// Decides an inode's layout before placement: what could go inline and what needs blocks.
fn plan<'t>(inode: &Inode<'t>, build_time: (i64, u32), epoch1: bool) -> Placed<'t> {
    let mut p = Placed {
        at: 0,
        extended: true,
        xattr_body: Vec::new(),
        tail: Vec::new(),
        blocks: Vec::new(),
        dir_blocks: Vec::new(),
        dir_tail: Vec::new(),
        layout: FLAT_PLAIN,
        size: 0,
        union: 0,
        first_block: 0,
    };
    match &inode.data {
        Data::Directory(entries) => {
            let mut blocks = vec![Vec::new()];
            let mut used = 0;
            for &entry in entries {
                let size = DIRENT_SIZE + entry.0.len();
                if used + size > BLOCK {
                    blocks.push(Vec::new());
                    used = 0;
                }
                used += size;
                blocks.last_mut().unwrap().push(entry);
            }
            p.size = ((blocks.len() - 1) * BLOCK + used) as u64;
            // A short last block goes inline (if it fits in the inode's block, see `place`).
            if used <= BLOCK / 2 {
                p.dir_tail = blocks.pop().unwrap_or_default();
                p.layout = FLAT_INLINE;
            }
            p.dir_blocks = blocks;
        }
        Data::Bytes(bytes) => {
            p.size = bytes.len() as u64;
            p.tail = bytes.to_vec();
            p.layout = FLAT_INLINE;
        }
        Data::External(size) => {
            p.size = *size;
            // As `mkcomposefs`: the smallest chunk size (at least a block) that covers the file
            // in one chunk, up to the largest the format allows.
            let bits =
                (64 - size.saturating_sub(1).leading_zeros()).clamp(BLOCK_BITS, BLOCK_BITS + 31);
            let chunks = size.div_ceil(1 << bits) as usize;
            p.union = bits - BLOCK_BITS;
            p.tail = vec![0xff; 4 * chunks];
            p.layout = CHUNK_BASED;
        }
        Data::Device(rdev) => p.union = encode_dev(*rdev),
        Data::Empty => {}
    }
    p.extended = !(epoch1
        && inode.mtime == build_time
        && inode.nlink <= u16::MAX as u32
        && inode.uid <= u16::MAX as u32
        && inode.gid <= u16::MAX as u32
        && p.size <= u32::MAX as u64);
    p
}

/// Places an inode at or after `cursor`; returns the offset after it. Inline data stays in
/// the inode's block: the inode moves to the next block if needed, or the data goes to the
/// data area if it cannot fit in any block with its inode. A chunk map is never moved out;
/// only an xattr body of nearly a block makes it cross a block, which readers allow.
fn place(p: &mut Placed<'_>, cursor: usize) -> usize {
    let mut at = cursor.next_multiple_of(32);
    let meta = if p.extended { 64 } else { 32 } + p.xattr_body.len();
    let tail = p.tail.len()
        + p.dir_tail
            .iter()
            .map(|e| DIRENT_SIZE + e.0.len())
            .sum::<usize>();
    if tail > 0 && at % BLOCK + meta + tail > BLOCK {
        if meta + tail <= BLOCK {
            at = at.next_multiple_of(BLOCK);
        } else if p.layout == FLAT_INLINE {
            p.layout = FLAT_PLAIN;
            if p.dir_tail.is_empty() {
                p.blocks.push(std::mem::take(&mut p.tail));
            } else {
                p.dir_blocks.push(std::mem::take(&mut p.dir_tail));
            }
            p.at = at;
            return at + meta;
        }
    }
    p.at = at;
    at + meta + tail
}

/// Writes inode `number` with its xattr body and tail at its place.
fn emit_inode(out: &mut [u8], inode: &Inode<'_>, p: &Placed<'_>, number: u32, epoch1: bool) {
    let has_blocks = !p.blocks.is_empty() || !p.dir_blocks.is_empty();
    let union = match p.layout {
        CHUNK_BASED => p.union,
        FLAT_PLAIN | FLAT_INLINE if has_blocks => p.first_block,
        _ => p.union,
    };
    let at = p.at;
    let icount = xattrs::icount(p.xattr_body.len());
    let layout = if p.layout == FLAT_INLINE && p.tail.is_empty() {
        FLAT_PLAIN
    } else {
        p.layout
    };
    put16(out, at + 2, icount);
    put16(out, at + 4, inode.mode as u16);
    put32(out, at + 16, union);
    put32(out, at + 20, number);
    let header = if p.extended {
        put16(out, at, 1 | layout << 1);
        put64(out, at + 8, p.size);
        put32(out, at + 24, inode.uid);
        put32(out, at + 28, inode.gid);
        put64(out, at + 32, inode.mtime.0 as u64);
        put32(out, at + 40, if epoch1 { inode.mtime.1 } else { 0 });
        put32(out, at + 44, inode.nlink);
        64
    } else {
        // Compact: the mtime is the superblock's (`i_mtime` 0 is relative to it).
        put16(out, at, layout << 1);
        put16(out, at + 6, inode.nlink as u16);
        put32(out, at + 8, p.size as u32);
        put16(out, at + 24, inode.uid as u16);
        put16(out, at + 26, inode.gid as u16);
        32
    };
    let mut pos = at + header;
    out[pos..pos + p.xattr_body.len()].copy_from_slice(&p.xattr_body);
    pos += p.xattr_body.len();
    out[pos..pos + p.tail.len()].copy_from_slice(&p.tail);
}

/// One block of directory entries: the `erofs_dirent` array, then the names.
fn dirent_block(entries: &[(&[u8], usize, u8)], nids: &[u64]) -> Vec<u8> {
    let mut out = vec![0u8; entries.len() * DIRENT_SIZE];
    let mut name_at = out.len();
    for (i, &(name, inode, file_type)) in entries.iter().enumerate() {
        let at = i * DIRENT_SIZE;
        put64(&mut out, at, nids[inode]);
        put16(&mut out, at + 8, name_at as u16);
        out[at + 10] = file_type;
        name_at += name.len();
    }
    for &(name, _, _) in entries {
        out.extend_from_slice(name);
    }
    out
}

/// `st_rdev` (glibc's encoding) as the kernel's `new_encode_dev`.
fn encode_dev(rdev: u64) -> u32 {
    let major = ((rdev >> 8) & 0xfff) | ((rdev >> 32) & !0xfff);
    let minor = (rdev & 0xff) | ((rdev >> 12) & !0xff);
    ((minor & 0xff) | (major << 8) | ((minor & !0xff) << 12)) as u32
}

fn put16(out: &mut [u8], at: usize, value: u16) {
    out[at..at + 2].copy_from_slice(&value.to_le_bytes());
}

fn put32(out: &mut [u8], at: usize, value: u32) {
    out[at..at + 4].copy_from_slice(&value.to_le_bytes());
}

fn put64(out: &mut [u8], at: usize, value: u64) {
    out[at..at + 8].copy_from_slice(&value.to_le_bytes());
}
