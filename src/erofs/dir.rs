//! Directories: dirent blocks, binary-search lookup (the kernel's `namei.c`) and readdir with
//! O(1) resumable positions (the kernel's `dir.c`).
//!
//! A directory's data is a sequence of blocks. Each block starts with an array of 12-byte
//! dirents followed by their names; the first dirent's `nameoff` gives the array length.
//! Names are sorted across the whole directory, which makes lookup a binary search over blocks
//! and then within one block. A readdir position is the byte offset of a dirent in the
//! directory data, exactly like the kernel's `ctx->pos`.

use super::bytes::ReadRef;
use super::data::Extent;
use super::error::{Corruption, OrCorrupt, Result};
use super::format::{self, Dirent};
use super::inode::{FileType, Inode};

const DIRENT_SIZE: usize = size_of::<Dirent>();

/// One directory entry, borrowed from the image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DirEntry<'img> {
    /// The name (never empty, at most 255 bytes).
    pub name: &'img [u8],
    /// Node id of the inode it names.
    pub nid: u64,
    /// The dirent's file type (`EROFS_FT_*`; may be 0 = unknown).
    pub file_type: u8,
    /// Readdir position of the entry after this one.
    pub next_pos: u64,
}

impl DirEntry<'_> {
    /// The `d_type` readdir reports (`DT_UNKNOWN` for unknown dirent types, as the kernel).
    pub fn dtype(&self) -> u8 {
        const DT_UNKNOWN: u8 = 0;
        FileType::from_dirent(self.file_type).map_or(DT_UNKNOWN, FileType::dtype)
    }
}

/// A directory inode.
#[derive(Debug, Clone, Copy)]
pub struct Dir<'img> {
    inode: Inode<'img>,
}

/// One dirent block.
#[derive(Clone, Copy)]
struct Block<'img> {
    /// The block bytes, cut at the directory size.
    data: &'img [u8],
    /// The dirents at the start of the block; their names follow.
    dirents: &'img [Dirent],
    /// Byte position of the block within the directory.
    start: u64,
}

impl<'img> Inode<'img> {
    /// This inode as a directory, or an error if it is not one.
    pub fn dir(&self) -> Result<Dir<'img>> {
        self.require(FileType::Directory)?;
        Ok(Dir { inode: *self })
    }
}

impl<'img> Dir<'img> {
    /// The directory's inode.
    pub fn inode(&self) -> Inode<'img> {
        self.inode
    }

    fn block_size(&self) -> u64 {
        self.inode.image.superblock().block_size()
    }

    fn block_count(&self) -> u64 {
        self.inode.size().div_ceil(self.block_size())
    }

    fn block(&self, index: u64) -> Result<Block<'img>> {
        let nid = self.inode.nid();
        let block_size = self.block_size();
        let start = index * block_size;
        let len = (self.inode.size() - start).min(block_size);
        let data = match self.inode.extent_at(start)? {
            Some(Extent::Data(d)) if d.len() as u64 >= len => &d[..len as usize],
            _ => return Err(self.inode.corrupt(Corruption::DirHole)),
        };
        // The first name starts right after the dirent array: its offset sizes the array.
        let bad_nameoff = Corruption::BadDirentNameoff;
        let first: &Dirent = data.read_at(0).or_corrupt(nid, bad_nameoff)?;
        let nameoff = usize::from(first.nameoff.get());
        if nameoff < DIRENT_SIZE || nameoff >= block_size as usize || nameoff % DIRENT_SIZE != 0 {
            return Err(self.inode.corrupt(bad_nameoff));
        }
        let dirents = data
            .read_slice_at(0, nameoff / DIRENT_SIZE)
            .or_corrupt(nid, bad_nameoff)?;
        Ok(Block {
            data,
            dirents,
            start,
        })
    }

    /// Finds `name` by binary search over blocks and then within one block: O(log n) dirents
    /// are read, and nothing is allocated.
    pub fn lookup(&self, name: &[u8]) -> Result<Option<DirEntry<'img>>> {
        let (mut lo, mut hi) = (0u64, self.block_count());
        let mut candidate = None;
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let block = self.block(mid)?;
            let first = block.entry(&self.inode, 0)?;
            match name.cmp(first.name) {
                std::cmp::Ordering::Less => hi = mid,
                std::cmp::Ordering::Equal => return Ok(Some(first)),
                std::cmp::Ordering::Greater => {
                    candidate = Some(block);
                    lo = mid + 1;
                }
            }
        }
        let Some(block) = candidate else {
            return Ok(None);
        };
        let (mut lo, mut hi) = (1usize, block.dirents.len());
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let entry = block.entry(&self.inode, mid)?;
            match name.cmp(entry.name) {
                std::cmp::Ordering::Less => hi = mid,
                std::cmp::Ordering::Equal => return Ok(Some(entry)),
                std::cmp::Ordering::Greater => lo = mid + 1,
            }
        }
        Ok(None)
    }

    /// All entries (including `.` and `..`) in on-disk order.
    pub fn entries(&self) -> DirEntries<'img> {
        self.entries_from(0)
    }

    /// Entries starting at readdir position `pos` (0 = start, otherwise a
    /// [`DirEntry::next_pos`]): resuming costs O(1).
    pub fn entries_from(&self, pos: u64) -> DirEntries<'img> {
        DirEntries {
            dir: *self,
            pos,
            block: None,
            done: false,
        }
    }
}

impl<'img> Block<'img> {
    /// Entry `i` of this block, with its name validated.
    fn entry(&self, dir: &Inode<'img>, i: usize) -> Result<DirEntry<'img>> {
        let bad_nameoff = Corruption::BadDirentNameoff;
        let de = self.dirents.get(i).or_corrupt(dir.nid(), bad_nameoff)?;
        let names_start = size_of_val(self.dirents);
        let start = usize::from(de.nameoff.get());
        let name = match self.dirents.get(i + 1) {
            Some(next) => {
                let end = usize::from(next.nameoff.get());
                (start >= names_start && start <= end)
                    .then(|| self.data.get(start..end))
                    .flatten()
                    .or_corrupt(dir.nid(), bad_nameoff)?
            }
            None => {
                // The last name runs to the end of the block (or directory), or to a NUL.
                let rest = self
                    .data
                    .get(start..)
                    .filter(|_| start >= names_start)
                    .or_corrupt(dir.nid(), bad_nameoff)?;
                let len = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
                &rest[..len]
            }
        };
        if name.is_empty() || name.len() > format::NAME_LEN {
            return Err(dir.corrupt(Corruption::BadName));
        }
        let next_pos = if i + 1 < self.dirents.len() {
            self.start + ((i + 1) * DIRENT_SIZE) as u64
        } else {
            self.start + self.data.len() as u64
        };
        Ok(DirEntry {
            name,
            nid: de.nid.get(),
            file_type: de.file_type,
            next_pos,
        })
    }
}

/// Iterator over directory entries from a position; yields at most one error, then stops.
#[derive(Clone)]
pub struct DirEntries<'img> {
    dir: Dir<'img>,
    pos: u64,
    block: Option<Block<'img>>,
    done: bool,
}

impl<'img> DirEntries<'img> {
    /// The position the next entry would be read from.
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn step(&mut self) -> Result<Option<DirEntry<'img>>> {
        let inode = self.dir.inode;
        let size = inode.size();
        let block_size = self.dir.block_size();
        while self.pos < size {
            let index = self.pos / block_size;
            let block = match self.block {
                Some(b) if b.start == index * block_size => b,
                _ => {
                    let b = self.dir.block(index)?;
                    self.block = Some(b);
                    b
                }
            };
            // Like the kernel, an offset inside a dirent rounds up to the next one.
            let i = ((self.pos - block.start) as usize).div_ceil(DIRENT_SIZE);
            if i >= block.dirents.len() {
                self.pos = block.start + block.data.len() as u64;
                continue;
            }
            let entry = block.entry(&inode, i)?;
            self.pos = entry.next_pos;
            return Ok(Some(entry));
        }
        // Directories written without `.` get it last, as the kernel emits it.
        if inode.dot_omitted() && self.pos == size {
            self.pos = size + 1;
            return Ok(Some(DirEntry {
                name: b".",
                nid: inode.nid(),
                file_type: format::file_type::DIR,
                next_pos: size + 1,
            }));
        }
        Ok(None)
    }
}

impl<'img> Iterator for DirEntries<'img> {
    type Item = Result<DirEntry<'img>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.step() {
            Ok(Some(e)) => Some(Ok(e)),
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
