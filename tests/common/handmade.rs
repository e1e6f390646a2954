//! A tiny EROFS image builder, byte by byte, for images no writer produces: features writers
//! available here lack (`tests/handmade.rs`) and hostile structures
//! (`tests/hostile_structures.rs`). Block 0 holds the superblock, the inodes start at block
//! [`META_BLK`] (nid = 32-byte slot from there), and callers place data blocks after them.

use xxhash_rust::xxh32::xxh32;

use lazycfs::erofs::Image;

pub const BS: usize = 4096;
/// The metadata (inode) area starts at block 1.
pub const META_BLK: usize = 1;
/// Byte offset of the superblock.
pub const SB: usize = 1024;

pub const S_IFDIR: u16 = 0o040000;
pub const S_IFREG: u16 = 0o100000;
pub const S_IFLNK: u16 = 0o120000;
pub const S_IFCHR: u16 = 0o020000;
pub const S_IFBLK: u16 = 0o060000;

pub const FT_REG: u8 = 1;
pub const FT_DIR: u8 = 2;
pub const FT_CHR: u8 = 3;
pub const FT_BLK: u8 = 4;
pub const FT_SYMLINK: u8 = 7;

pub const LAYOUT_FLAT_PLAIN: u16 = 0;
pub const LAYOUT_FLAT_INLINE: u16 = 2 << 1;
pub const LAYOUT_CHUNK_BASED: u16 = 4 << 1;
/// `i_format` bit 4: `NLINK_1` on non-directories, `DOT_OMITTED` on directories.
pub const BIT4: u16 = 1 << 4;
/// Chunk format bit: 8-byte chunk indexes instead of 4-byte block addresses.
pub const CHUNK_INDEXES: u16 = 0x20;
/// `feature_incompat` bit of the long xattr name prefix table.
pub const INCOMPAT_XATTR_PREFIXES: u32 = 0x40;

/// An entry of a directory under construction: name, nid, dirent file type.
pub type Dirent<'a> = (&'a [u8], u64, u8);

/// An image under construction: block 0 holds the superblock, block 1.. the inodes.
pub struct Img {
    pub b: Vec<u8>,
}

impl Img {
    pub fn new(blocks: usize) -> Img {
        let mut img = Img {
            b: vec![0; blocks * BS],
        };
        img.put32(SB, 0xE0F5_E1E2); // magic
        img.b[SB + 12] = 12; // blkszbits
        img.put16(SB + 14, 0); // root nid
        img.put32(SB + 36, blocks as u32); // blocks
        img.put32(SB + 40, META_BLK as u32); // meta_blkaddr
        img
    }

    pub fn put(&mut self, at: usize, bytes: &[u8]) {
        self.b[at..at + bytes.len()].copy_from_slice(bytes);
    }
    pub fn put16(&mut self, at: usize, v: u16) {
        self.put(at, &v.to_le_bytes());
    }
    pub fn put32(&mut self, at: usize, v: u32) {
        self.put(at, &v.to_le_bytes());
    }
    pub fn put64(&mut self, at: usize, v: u64) {
        self.put(at, &v.to_le_bytes());
    }

    pub fn set_compat(&mut self, bits: u32) {
        self.put32(SB + 8, bits);
    }
    pub fn set_incompat(&mut self, bits: u32) {
        self.put32(SB + 80, bits);
    }
    pub fn set_root(&mut self, nid: u16) {
        self.put16(SB + 14, nid);
    }
    /// Where shared xattr ids count from (4-byte slots from this block).
    pub fn set_xattr_blkaddr(&mut self, block: u32) {
        self.put32(SB + 44, block);
    }

    /// Grows (or shrinks) the image to `len` bytes, keeping the superblock's block count.
    pub fn resize(&mut self, len: usize) {
        self.b.resize(len, 0);
        self.put32(SB + 36, len.div_ceil(BS) as u32);
    }

    /// Blocks in the image.
    pub fn blocks(&self) -> usize {
        self.b.len().div_ceil(BS)
    }

    pub fn inode_at(nid: u64) -> usize {
        META_BLK * BS + nid as usize * 32
    }

    /// A compact inode; `tail` (xattr area, then inline data or chunk map) follows it.
    pub fn compact(&mut self, nid: u64, ino: Compact, tail: &[u8]) {
        let at = Img::inode_at(nid);
        let mut i = [0u8; 32];
        i[0..2].copy_from_slice(&ino.format.to_le_bytes());
        i[2..4].copy_from_slice(&ino.icount.to_le_bytes());
        i[4..6].copy_from_slice(&ino.mode.to_le_bytes());
        i[6..8].copy_from_slice(&ino.nb.to_le_bytes());
        i[8..12].copy_from_slice(&ino.size.to_le_bytes());
        i[12..16].copy_from_slice(&ino.mtime.to_le_bytes());
        i[16..20].copy_from_slice(&ino.u.to_le_bytes());
        i[20..24].copy_from_slice(&(nid as u32).to_le_bytes());
        self.put(at, &i);
        self.put(at + 32, tail);
    }

    /// An extended inode; `tail` follows it.
    pub fn extended(&mut self, nid: u64, ino: Extended, tail: &[u8]) {
        let at = Img::inode_at(nid);
        let mut i = [0u8; 64];
        i[0..2].copy_from_slice(&(ino.format | 1).to_le_bytes());
        i[2..4].copy_from_slice(&ino.icount.to_le_bytes());
        i[4..6].copy_from_slice(&ino.mode.to_le_bytes());
        i[6..8].copy_from_slice(&ino.nb.to_le_bytes());
        i[8..16].copy_from_slice(&ino.size.to_le_bytes());
        i[16..20].copy_from_slice(&ino.u.to_le_bytes());
        i[20..24].copy_from_slice(&(nid as u32).to_le_bytes());
        i[32..40].copy_from_slice(&ino.mtime.to_le_bytes());
        i[40..44].copy_from_slice(&ino.mtime_nsec.to_le_bytes());
        i[44..48].copy_from_slice(&ino.nlink.to_le_bytes());
        self.put(at, &i);
        self.put(at + 64, tail);
    }

    /// A directory with its dirents inline (FLAT_INLINE) after the inode and xattrs.
    pub fn dir(&mut self, nid: u64, format_bits: u16, xattrs: &[u8], entries: &[Dirent<'_>]) {
        let dirents = dirents(entries);
        assert_inline_fits(nid, xattrs.len() + dirents.len());
        let mut tail = xattrs.to_vec();
        tail.extend_from_slice(&dirents);
        self.compact(
            nid,
            Compact {
                format: LAYOUT_FLAT_INLINE | format_bits,
                icount: icount(xattrs),
                mode: S_IFDIR | 0o755,
                nb: 2 + subdirs(entries),
                size: dirents.len() as u32,
                ..Compact::default()
            },
            &tail,
        );
    }

    /// A directory whose dirents fill blocks from `block` on (FLAT_PLAIN), for directories
    /// larger than a block; returns the first block after them. Entries must be sorted.
    pub fn dir_blocks(&mut self, nid: u64, block: usize, entries: &[Dirent<'_>]) -> usize {
        let blocks = dirent_blocks(entries);
        let end = block + blocks.len();
        if self.b.len() < end * BS {
            self.resize(end * BS);
        }
        let mut size = 0;
        for (i, data) in blocks.iter().enumerate() {
            self.put((block + i) * BS, data);
            size = i * BS + data.len();
        }
        self.compact(
            nid,
            Compact {
                format: LAYOUT_FLAT_PLAIN,
                mode: S_IFDIR | 0o755,
                nb: 2 + subdirs(entries),
                size: size as u32,
                u: block as u32,
                ..Compact::default()
            },
            &[],
        );
        end
    }

    /// A regular file with its content inline.
    pub fn file(&mut self, nid: u64, format_bits: u16, xattrs: &[u8], content: &[u8]) {
        assert_inline_fits(nid, xattrs.len() + content.len());
        let mut tail = xattrs.to_vec();
        tail.extend_from_slice(content);
        self.compact(
            nid,
            Compact {
                format: LAYOUT_FLAT_INLINE | format_bits,
                icount: icount(xattrs),
                mode: S_IFREG | 0o644,
                // With NLINK_1, i_nb holds the start block's high bits instead.
                nb: if format_bits & BIT4 != 0 { 0 } else { 1 },
                size: content.len() as u32,
                ..Compact::default()
            },
            &tail,
        );
    }

    /// An empty regular file (no data block, as writers leave one) whose xattr area is `xattrs`:
    /// FLAT_PLAIN, so the area may fill the rest of the metadata.
    pub fn empty_file(&mut self, nid: u64, xattrs: &[u8]) {
        self.compact(
            nid,
            Compact {
                format: LAYOUT_FLAT_PLAIN,
                icount: icount(xattrs),
                mode: S_IFREG | 0o644,
                nb: 1,
                u: u32::MAX,
                ..Compact::default()
            },
            xattrs,
        );
    }

    /// A symlink with its target inline.
    pub fn symlink(&mut self, nid: u64, target: &[u8]) {
        assert_inline_fits(nid, target.len());
        self.compact(
            nid,
            Compact {
                format: LAYOUT_FLAT_INLINE,
                mode: S_IFLNK | 0o777,
                nb: 1,
                size: target.len() as u32,
                ..Compact::default()
            },
            target,
        );
    }

    /// A regular file of `size` bytes whose data is the chunk map `map` (block addresses,
    /// `u32::MAX` for holes) of chunks of `BS << chunk_bits` bytes.
    pub fn chunked_file(&mut self, nid: u64, size: u32, chunk_bits: u16, map: &[u32]) {
        let tail: Vec<u8> = map.iter().flat_map(|b| b.to_le_bytes()).collect();
        self.compact(
            nid,
            Compact {
                format: LAYOUT_CHUNK_BASED,
                mode: S_IFREG | 0o644,
                nb: 1,
                size,
                u: u32::from(chunk_bits),
                ..Compact::default()
            },
            &tail,
        );
    }

    /// The long xattr name prefix table (`(base index, infix)` each) at byte `at` (a multiple
    /// of 4), with the feature bit set.
    pub fn long_prefixes(&mut self, at: usize, prefixes: &[(u8, &[u8])]) {
        assert_eq!(at % 4, 0);
        self.set_incompat(INCOMPAT_XATTR_PREFIXES);
        self.b[SB + 91] = prefixes.len() as u8; // xattr_prefix_count
        self.put32(SB + 92, (at / 4) as u32); // xattr_prefix_start
        let table = long_prefix_table(prefixes);
        if self.b.len() < at + table.len() {
            self.resize(at + table.len());
        }
        self.put(at, &table);
    }

    pub fn write(&self, path: &std::path::Path) {
        std::fs::write(path, &self.b).unwrap();
    }

    pub fn open(&self) -> Image {
        Image::from_bytes(self.b.clone()).expect("handmade image opens")
    }
}

/// As the kernel: inline data (after the inode and its xattrs) may not cross a block.
fn assert_inline_fits(nid: u64, tail_len: usize) {
    assert!(
        (Img::inode_at(nid) + 32) % BS + tail_len <= BS,
        "inline area crosses a block"
    );
}

fn subdirs(entries: &[Dirent<'_>]) -> u16 {
    entries
        .iter()
        .filter(|e| e.2 == FT_DIR && e.0 != b"." && e.0 != b"..")
        .count() as u16
}

#[derive(Default, Clone, Copy)]
pub struct Compact {
    pub format: u16,
    pub icount: u16,
    pub mode: u16,
    pub nb: u16,
    pub size: u32,
    pub mtime: u32,
    pub u: u32,
}

#[derive(Default, Clone, Copy)]
pub struct Extended {
    pub format: u16,
    pub icount: u16,
    pub mode: u16,
    pub nb: u16,
    pub size: u64,
    pub u: u32,
    pub mtime: u64,
    pub mtime_nsec: u32,
    pub nlink: u32,
}

/// One dirent block: 12-byte dirents, then the names (entries in the given order).
pub fn dirents(entries: &[Dirent<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut nameoff = entries.len() * 12;
    for &(name, nid, ft) in entries {
        out.extend_from_slice(&nid.to_le_bytes());
        out.extend_from_slice(&(nameoff as u16).to_le_bytes());
        out.push(ft);
        out.push(0);
        nameoff += name.len();
    }
    for &(name, _, _) in entries {
        out.extend_from_slice(name);
    }
    out
}

/// Entries packed into as few dirent blocks as they fit in, in order (each block but the
/// last padded to a full block).
pub fn dirent_blocks(entries: &[Dirent<'_>]) -> Vec<Vec<u8>> {
    let mut blocks = Vec::new();
    let mut start = 0;
    while start < entries.len() {
        let (mut end, mut used) = (start, 0);
        while end < entries.len() && used + 12 + entries[end].0.len() <= BS {
            used += 12 + entries[end].0.len();
            end += 1;
        }
        assert!(end > start, "a name longer than a block");
        let mut block = dirents(&entries[start..end]);
        if end < entries.len() {
            block.resize(BS, 0);
        }
        blocks.push(block);
        start = end;
    }
    blocks
}

/// One xattr entry (`name_index`, suffix, value), padded to 4 bytes: inline, or in the shared
/// area at a 4-byte slot.
pub fn xattr_entry(index: u8, suffix: &[u8], value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(4 + suffix.len() + value.len() + 3);
    out.push(suffix.len() as u8);
    out.push(index);
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(suffix);
    out.extend_from_slice(value);
    out.resize(out.len().next_multiple_of(4), 0);
    out
}

/// An inline xattr area: header (bloom filter, shared ids) and entries, each 4-byte aligned.
pub fn xattr_area(filter: u32, shared: &[u32], entries: &[(u8, &[u8], &[u8])]) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(&filter.to_le_bytes());
    out.push(shared.len() as u8);
    out.extend_from_slice(&[0; 7]);
    for id in shared {
        out.extend_from_slice(&id.to_le_bytes());
    }
    for &(index, suffix, value) in entries {
        out.extend_from_slice(&xattr_entry(index, suffix, value));
    }
    out
}

/// `i_xattr_icount` for an xattr area of this size.
pub fn icount(area: &[u8]) -> u16 {
    match area.len() {
        0 => 0,
        n => u16::try_from((n - 12) / 4 + 1).expect("xattr area too large for i_xattr_icount"),
    }
}

/// A long xattr name prefix table: each entry a 2-byte length, the base index and the infix,
/// padded to 4 bytes.
pub fn long_prefix_table(prefixes: &[(u8, &[u8])]) -> Vec<u8> {
    let mut table = Vec::new();
    for &(base, infix) in prefixes {
        table.extend_from_slice(&(1 + infix.len() as u16).to_le_bytes());
        table.push(base);
        table.extend_from_slice(infix);
        table.resize(table.len().next_multiple_of(4), 0);
    }
    table
}

/// The bloom filter bit of a name (standard index, name after the standard prefix).
pub fn filter_bit(index: u8, rest: &[u8]) -> u32 {
    xxh32(rest, 0x25BB_E08F + u32::from(index)) & 31
}
