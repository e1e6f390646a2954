//! A full, fsck-like walk of an image with the same lazy decoder the server uses.
//!
//! Every directory is visited once (a set of visited directory nids turns cycles and
//! hard-linked directories into errors instead of loops), every inode reached is decoded, and
//! its names, xattrs, data map and symlink target are validated.
//!
//! The work stays linear in the image size however a hostile image shares its bytes: chunk
//! map entries are validated once each, however many inodes' maps overlap there (thousands of
//! inodes can have one map spanning the whole image); a dirent block shared by several
//! directories is validated once; and inodes may not overlap (else each could have a 256 KiB
//! xattr area over the same bytes).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;

use crate::composefs::Placement;
use crate::erofs::{ChunkMap, Corruption, DirEntry, Error, Extent, FileType, Image, Inode};

/// Counts from a successful check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Summary {
    /// Distinct inodes reached (hard links counted once).
    pub inodes: u64,
    /// Directories.
    pub dirs: u64,
    /// Directory entries, excluding `.` and `..`.
    pub entries: u64,
    /// Xattrs over all distinct inodes.
    pub xattrs: u64,
    /// Chunk map entries validated: each entry of the image once, where maps overlap.
    pub chunk_entries: u64,
    /// Dirent blocks validated: each block of the image once, where directories share blocks
    /// (except blocks holding `.`, `..` or subdirectories, which belong to one directory).
    pub dirent_blocks: u64,
}

impl fmt::Display for Summary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "ok: {} inodes, {} dirs, {} entries, {} xattrs",
            self.inodes, self.dirs, self.entries, self.xattrs
        )
    }
}

/// The first inconsistency found, with the nid and path where it was found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path} (nid {nid}): {error}")]
pub struct CheckError {
    /// Node id of the offending inode (or of the directory holding a bad entry).
    pub nid: u64,
    /// Path of the offending entry, `\xNN`-escaped where not printable.
    pub path: String,
    /// What is wrong.
    pub error: Error,
}

/// Checks the whole image, returning counts or the first inconsistency.
pub fn check(image: &Image) -> Result<Summary, CheckError> {
    Walker::default().run(image)
}

#[derive(Default)]
struct Walker<'img> {
    seen_dirs: HashSet<u64>,
    seen_inodes: HashSet<u64>,
    /// Image ranges of chunk map entries already validated, per chunk format.
    valid_maps: HashMap<u16, Intervals>,
    /// Image ranges of the inodes checked (header and xattr area).
    inode_extents: Intervals,
    /// Dirent blocks validated in one directory that mean the same in any other (no `.`,
    /// `..` or subdirectory), by image offset and length: directories sharing blocks (through
    /// chunk maps) are not revalidated block by block.
    known_blocks: HashMap<(u64, u64), KnownBlock<'img>>,
    summary: Summary,
}

/// A validated dirent block: its first and last names (for the order across blocks) and its
/// entry count.
#[derive(Clone, Copy)]
struct KnownBlock<'img> {
    first: &'img [u8],
    last: &'img [u8],
    entries: u64,
}

/// The dirent block being validated.
struct BlockScan<'img> {
    key: (u64, u64),
    block: Option<KnownBlock<'img>>,
    /// No `.`, `..` or subdirectory so far.
    pure: bool,
}

impl<'img> BlockScan<'img> {
    /// Counts `entry` into the block, which stays pure (reusable) without `.`, `..` and
    /// subdirectories.
    fn add(&mut self, entry: &DirEntry<'img>) {
        let name = entry.name;
        let block = self.block.get_or_insert(KnownBlock {
            first: name,
            last: name,
            entries: 0,
        });
        block.last = name;
        block.entries += 1;
        self.pure &= name != b"."
            && name != b".."
            && FileType::from_dirent(entry.file_type) != Some(FileType::Directory);
    }
}

struct PendingDir {
    nid: u64,
    parent: u64,
    path: Vec<u8>,
}

/// Where a directory's entries stand while they are checked in order.
#[derive(Default)]
struct EntryOrder<'img> {
    /// The last name seen (`.` synthesized last by dot-omitting writers aside).
    previous: Option<&'img [u8]>,
    dot: bool,
    dotdot: bool,
}

/// The error for `nid` found at `path`.
fn fail(nid: u64, path: &[u8], error: Error) -> CheckError {
    CheckError {
        nid,
        path: display_path(path),
        error,
    }
}

impl<'img> Walker<'img> {
    fn run(mut self, image: &'img Image) -> Result<Summary, CheckError> {
        let root = image.root_nid();
        let mut stack = vec![PendingDir {
            nid: root,
            parent: root,
            path: b"/".to_vec(),
        }];
        self.seen_dirs.insert(root);
        while let Some(dir) = stack.pop() {
            self.check_dir(image, &dir, &mut stack)?;
        }
        Ok(self.summary)
    }

    /// One directory: its inode, then its entries in order, block by block (a block already
    /// validated elsewhere is skipped whole); subdirectories are queued on `stack`.
    fn check_dir(
        &mut self,
        image: &'img Image,
        dir: &PendingDir,
        stack: &mut Vec<PendingDir>,
    ) -> Result<(), CheckError> {
        let inode = image
            .inode(dir.nid)
            .map_err(|e| fail(dir.nid, &dir.path, e))?;
        self.check_inode(&inode)
            .map_err(|e| fail(dir.nid, &dir.path, e))?;
        self.summary.dirs += 1;
        let entries = inode.dir().map_err(|e| fail(dir.nid, &dir.path, e))?;
        let mut order = EntryOrder::default();
        let block_size = image.superblock().block_size();
        let mut iter = entries.entries();
        let mut pos = 0;
        let mut scan: Option<BlockScan<'img>> = None;
        loop {
            if pos % block_size == 0 || pos >= inode.size() {
                if let Some(BlockScan {
                    key,
                    block: Some(block),
                    pure: true,
                }) = scan.take()
                {
                    self.known_blocks.insert(key, block);
                }
                if let Some(key) = block_key(&inode, pos) {
                    if let Some(known) = self.known_blocks.get(&key) {
                        if order.previous.is_some_and(|p| p >= known.first) {
                            let path = join_path(&dir.path, known.first);
                            let unsorted = Error::Corrupt {
                                nid: dir.nid,
                                what: Corruption::DirentsUnsorted,
                            };
                            return Err(fail(dir.nid, &path, unsorted));
                        }
                        order.previous = Some(known.last);
                        self.summary.entries += known.entries;
                        pos += key.1;
                        iter = entries.entries_from(pos);
                        continue;
                    }
                    self.summary.dirent_blocks += 1;
                    scan = Some(BlockScan {
                        key,
                        block: None,
                        pure: true,
                    });
                }
            }
            let Some(entry) = iter.next() else {
                break;
            };
            let entry = entry.map_err(|e| fail(dir.nid, &dir.path, e))?;
            pos = entry.next_pos;
            if let Some(scan) = &mut scan {
                scan.add(&entry);
            }
            self.check_entry(image, dir, inode.size(), &entry, &mut order, stack)?;
        }
        if !order.dot || !order.dotdot {
            let missing = Error::Corrupt {
                nid: dir.nid,
                what: Corruption::BadDotEntry,
            };
            return Err(fail(dir.nid, &dir.path, missing));
        }
        Ok(())
    }

    /// One entry of `dir` (whose size is `dir_size`): its name, its place in the order, `.`
    /// and `..`, and the inode it names (a directory is queued on `stack`, once).
    fn check_entry(
        &mut self,
        image: &'img Image,
        dir: &PendingDir,
        dir_size: u64,
        entry: &DirEntry<'img>,
        order: &mut EntryOrder<'img>,
        stack: &mut Vec<PendingDir>,
    ) -> Result<(), CheckError> {
        let child_path = join_path(&dir.path, entry.name);
        let bad_entry = |what| {
            let error = Error::Corrupt { nid: dir.nid, what };
            fail(dir.nid, &child_path, error)
        };
        if entry.name.contains(&b'/') || entry.name.contains(&0) {
            return Err(bad_entry(Corruption::BadName));
        }
        // The synthesized `.` of dot-omitted directories comes last, out of order.
        let synthesized_dot = entry.name == b"." && entry.next_pos > dir_size;
        if !synthesized_dot {
            if order.previous.is_some_and(|p| p >= entry.name) {
                return Err(bad_entry(Corruption::DirentsUnsorted));
            }
            order.previous = Some(entry.name);
        }
        let typed = FileType::from_dirent(entry.file_type);
        match entry.name {
            // Typed as directories too: readdir reports the dirent's type.
            b"." | b".." if typed != Some(FileType::Directory) => {
                return Err(bad_entry(Corruption::BadDotEntry));
            }
            b"." => {
                if order.dot || entry.nid != dir.nid {
                    return Err(bad_entry(Corruption::BadDotEntry));
                }
                order.dot = true;
                return Ok(());
            }
            b".." => {
                if order.dotdot || entry.nid != dir.parent {
                    return Err(bad_entry(Corruption::BadDotEntry));
                }
                order.dotdot = true;
                return Ok(());
            }
            _ => {}
        }
        self.summary.entries += 1;
        let child_error = |what| {
            let error = Error::Corrupt {
                nid: entry.nid,
                what,
            };
            fail(entry.nid, &child_path, error)
        };
        let child = image
            .inode(entry.nid)
            .map_err(|e| fail(entry.nid, &child_path, e))?;
        if typed != Some(child.file_type()) {
            return Err(child_error(Corruption::FileTypeMismatch));
        }
        if !child.is_dir() {
            return self
                .check_inode(&child)
                .map_err(|e| fail(entry.nid, &child_path, e));
        }
        if !self.seen_dirs.insert(entry.nid) {
            return Err(child_error(Corruption::DirectoryCycle));
        }
        stack.push(PendingDir {
            nid: entry.nid,
            parent: dir.nid,
            path: child_path,
        });
        Ok(())
    }

    /// Validates one inode's xattrs and data map, once per distinct inode.
    fn check_inode(&mut self, inode: &Inode<'_>) -> Result<(), Error> {
        if !self.seen_inodes.insert(inode.nid()) {
            return Ok(());
        }
        self.summary.inodes += 1;
        // Writers give each inode its own bytes; overlapping ones would also let a hostile
        // image make every inode's xattr area (up to 256 KiB) cover the same bytes.
        let (start, end) = (inode.offset, inode.inline_offset());
        if !self.inode_extents.insert_disjoint(start, end) {
            return Err(inode.corrupt(Corruption::InodesOverlap));
        }
        let xattrs = inode.xattrs()?;
        for xattr in xattrs.iter() {
            let name = xattr?.name;
            let bad = if name.infix.contains(&0) || name.suffix.contains(&0) {
                Some(Corruption::BadXattrName)
            } else if xattrs.filtered_out(name.index, &[name.infix, name.suffix].concat()) {
                // getxattr would answer ENODATA for a name listxattr lists (as the kernel).
                Some(Corruption::XattrFilterMismatch)
            } else {
                None
            };
            if let Some(what) = bad {
                return Err(inode.corrupt(what));
            }
            self.summary.xattrs += 1;
        }
        match inode.file_type() {
            FileType::Symlink => {
                inode.symlink_target()?;
            }
            // Files with content in a basedir object, as composefs tools see them (metacopy or
            // redirect): writers do not always store their all-hole chunk map.
            FileType::Regular if Placement::of(inode)?.is_external() => {}
            FileType::Regular | FileType::Directory => match inode.chunk_map()? {
                Some(map) => self.check_chunk_map(inode, map)?,
                None => {
                    for extent in inode.extents_from(0) {
                        extent?;
                    }
                }
            },
            _ => {}
        }
        Ok(())
    }

    /// Validates each entry of a chunk map (as reading its chunk would), skipping the entries
    /// an earlier map of the same format validated. An entry means the same in every map of
    /// its format, except that a file's last chunk may be short: entries validated for a full
    /// chunk are recorded, the last one is always checked.
    fn check_chunk_map(&mut self, inode: &Inode<'_>, map: ChunkMap) -> Result<(), Error> {
        let full = match inode.size() % (1 << map.chunk_bits) {
            0 => map.chunks,
            _ => map.chunks - 1,
        };
        let valid = self.valid_maps.entry(map.format).or_default();
        let mut index = 0;
        while index < map.chunks {
            if index < full {
                // Entry positions do not overflow: validating entry 0 read the map start.
                let pos = map.start + index * map.unit;
                if let Some(end) = valid.end_of(pos) {
                    index = ((end - map.start) / map.unit).min(full);
                    continue;
                }
            }
            inode.extent_at(index << map.chunk_bits)?;
            self.summary.chunk_entries += 1;
            index += 1;
        }
        if full > 0 {
            valid.insert(map.start, map.start + full * map.unit);
        }
        Ok(())
    }
}

/// The image offset and length of the dirent block of directory `inode` starting at `pos`
/// (`None` if `pos` is not in the directory or its data is not in the image: reading the
/// entries reports why).
fn block_key(inode: &Inode<'_>, pos: u64) -> Option<(u64, u64)> {
    let block_size = inode.image().superblock().block_size();
    if pos >= inode.size() || pos % block_size != 0 {
        return None;
    }
    let len = (inode.size() - pos).min(block_size);
    match inode.extent_at(pos) {
        Ok(Some(Extent::Data(data))) if data.len() as u64 >= len => {
            let start = data.as_ptr() as u64 - inode.image().bytes().as_ptr() as u64;
            Some((start, len))
        }
        _ => None,
    }
}

/// Disjoint half-open ranges of image offsets (start -> end); [`Intervals::insert`] also
/// merges adjacent ones.
#[derive(Default)]
struct Intervals(BTreeMap<u64, u64>);

impl Intervals {
    /// The end of the range holding `pos`, if one does.
    fn end_of(&self, pos: u64) -> Option<u64> {
        let (_, &end) = self.0.range(..=pos).next_back()?;
        (end > pos).then_some(end)
    }

    /// Adds `start..end` if it overlaps no range; whether it did not.
    fn insert_disjoint(&mut self, start: u64, end: u64) -> bool {
        if let Some((_, &e)) = self.0.range(..end.max(start + 1)).next_back() {
            if e > start {
                return false;
            }
        }
        // Ranges only touching are kept apart: merging would lose nothing but is not needed.
        self.0.insert(start, end);
        true
    }

    /// Adds `start..end`, merging the ranges it overlaps or touches.
    fn insert(&mut self, mut start: u64, mut end: u64) {
        if let Some((&s, &e)) = self.0.range(..=start).next_back() {
            if e >= start {
                start = s;
                end = end.max(e);
            }
        }
        let inside: Vec<u64> = self.0.range(start..=end).map(|(&s, _)| s).collect();
        for s in inside {
            end = end.max(self.0.remove(&s).unwrap_or(end));
        }
        self.0.insert(start, end);
    }
}

/// `dir/name` for paths printed by the tools (`/name` under the root).
pub(crate) fn join_path(dir: &[u8], name: &[u8]) -> Vec<u8> {
    let mut path = dir.to_vec();
    if path != b"/" {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    path
}

/// Escapes a path for messages: printable ASCII as is, everything else as `\xNN`.
pub(crate) fn display_path(path: &[u8]) -> String {
    let mut out = String::with_capacity(path.len());
    for &b in path {
        if b.is_ascii_graphic() || b == b' ' {
            out.push(b as char);
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}
