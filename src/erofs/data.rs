//! Locating file data: flat blocks, tail-packed inline data and chunk maps
//! (the kernel's `data.c`, `erofs_map_blocks`).

use zerocopy::little_endian::U32;

use super::error::{Corruption, Error, OrCorrupt, Result};
use super::format::{self, ChunkIndex, chunk};
use super::inode::{DataLayout, FileType, Inode};

/// A contiguous piece of a file's data starting at the requested offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Extent<'img> {
    /// Bytes stored in the image.
    Data(&'img [u8]),
    /// A hole of this many bytes, reading as zeros.
    Hole(u64),
}

impl Extent<'_> {
    /// Length of the extent in bytes.
    pub fn len(&self) -> u64 {
        match self {
            Extent::Data(d) => d.len() as u64,
            Extent::Hole(n) => *n,
        }
    }

    /// Whether the extent is empty (never true for extents returned by the decoder).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<'img> Inode<'img> {
    /// The contiguous extent of data starting at byte `offset`, ending at the end of its block
    /// run, chunk or the file; `None` at or past the end of the file. O(1) for every layout.
    pub fn extent_at(&self, offset: u64) -> Result<Option<Extent<'img>>> {
        let size = self.size();
        if offset >= size {
            return Ok(None);
        }
        let image = self.image;
        let nid = self.nid();
        let block_bits = image.superblock().block_bits;
        let out_of_range = Corruption::DataOutOfRange;
        // `len` bytes from byte `from` of the run of blocks starting at block `blkaddr`.
        let data_at = |blkaddr: u64, from: u64, len: u64| -> Result<Extent<'img>> {
            format::block_pos(blkaddr, block_bits)
                .and_then(|base| base.checked_add(from))
                .and_then(|start| image.read_bytes_at(start, len))
                .map(Extent::Data)
                .or_corrupt(nid, out_of_range)
        };
        match self.layout {
            DataLayout::FlatPlain => {
                // NULL_ADDR with high bits 0 (pre-48-bit writers) or all ones (48-bit ones).
                if self.raw_u == format::NULL_ADDR && matches!(self.startblk_hi, 0 | u16::MAX) {
                    return Ok(Some(Extent::Hole(size - offset)));
                }
                data_at(self.startblk(), offset, size - offset).map(Some)
            }
            DataLayout::FlatInline => {
                let tail_start = (size - 1) >> block_bits << block_bits;
                if offset < tail_start {
                    return data_at(self.startblk(), offset, tail_start - offset).map(Some);
                }
                let tail = self.inline_tail(tail_start)?;
                Ok(Some(Extent::Data(&tail[(offset - tail_start) as usize..])))
            }
            DataLayout::ChunkBased => {
                let (chunk_format, chunk_bits) = self.chunk_geometry()?;
                let chunk_size = 1u64 << chunk_bits;
                let index = offset >> chunk_bits;
                let within = offset & (chunk_size - 1);
                let len = (chunk_size - within).min(size - offset);
                match self.chunk_blkaddr(chunk_format, index)? {
                    None => Ok(Some(Extent::Hole(len))),
                    Some(blkaddr) => data_at(blkaddr, within, len).map(Some),
                }
            }
            DataLayout::Compressed => Err(Error::Unsupported {
                nid,
                what: "compressed data layout",
            }),
        }
    }

    /// The chunk format of a chunk-based inode and its chunk size as a power of two.
    fn chunk_geometry(&self) -> Result<(u16, u32)> {
        let chunk_format = chunk::format(self.raw_u);
        let bad_format = Corruption::BadChunkFormat(chunk_format);
        if chunk_format & !(chunk::BLKBITS_MASK | chunk::INDEXES) != 0 {
            return Err(self.corrupt(bad_format));
        }
        let block_bits = self.image.superblock().block_bits;
        let chunk_bits = u32::from(block_bits) + u32::from(chunk_format & chunk::BLKBITS_MASK);
        if chunk_bits >= u64::BITS - 1 {
            return Err(self.corrupt(bad_format));
        }
        Ok((chunk_format, chunk_bits))
    }

    /// Where the chunk map of a chunk-based inode lies (`None` for other layouts), for tools
    /// that validate maps entry by entry and must not revalidate entries two maps share.
    pub(crate) fn chunk_map(&self) -> Result<Option<ChunkMap>> {
        if self.layout != DataLayout::ChunkBased {
            return Ok(None);
        }
        let (format, chunk_bits) = self.chunk_geometry()?;
        let unit = chunk::map_entry_size(format);
        Ok(Some(ChunkMap {
            format,
            chunk_bits,
            start: self.inline_offset().next_multiple_of(unit),
            unit,
            chunks: self.size().div_ceil(1 << chunk_bits),
        }))
    }

    /// The start block of a flat inode. Why the high bits: the kernel reads them from `i_nb`
    /// (48-bit addresses); ignoring them would read the wrong block instead of failing.
    fn startblk(&self) -> u64 {
        u64::from(self.raw_u) | u64::from(self.startblk_hi) << 32
    }

    /// Iterates over the file's extents from `offset` to the end.
    pub fn extents_from(&self, offset: u64) -> Extents<'img> {
        Extents {
            inode: *self,
            offset,
            failed: false,
        }
    }

    /// Copies file data at `offset` into `buf` (holes read as zeros); returns the byte count,
    /// short only at end of file.
    pub fn read_at(&self, mut offset: u64, buf: &mut [u8]) -> Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            let Some(extent) = self.extent_at(offset)? else {
                break;
            };
            let n = (buf.len() - done).min(extent.len() as usize);
            match extent {
                Extent::Data(d) => buf[done..done + n].copy_from_slice(&d[..n]),
                Extent::Hole(_) => buf[done..done + n].fill(0),
            }
            done += n;
            offset += n as u64;
        }
        Ok(done)
    }

    /// The tail-packed bytes stored right after the inode and its xattrs.
    fn inline_tail(&self, tail_start: u64) -> Result<&'img [u8]> {
        let block_size = self.image.superblock().block_size();
        let tail_len = self.size() - tail_start;
        let pos = self.inline_offset();
        // As the kernel: inline data may not cross a block boundary.
        if pos % block_size + tail_len > block_size {
            return Err(self.corrupt(Corruption::InlineDataTooLong));
        }
        self.image
            .read_bytes_at(pos, tail_len)
            .or_corrupt(self.nid(), Corruption::InodeTruncated)
    }

    /// Block address of chunk `index`, `None` for a hole.
    fn chunk_blkaddr(&self, chunk_format: u16, index: u64) -> Result<Option<u64>> {
        let nid = self.nid();
        let truncated = Corruption::InodeTruncated;
        // As the kernel: the map starts at the first entry-aligned offset after the xattrs.
        let unit = chunk::map_entry_size(chunk_format);
        let map_start = self.inline_offset().next_multiple_of(unit);
        let within = index
            .checked_mul(unit)
            .or_corrupt(nid, Corruption::SizeTooLarge)?;
        let pos = map_start.checked_add(within).or_corrupt(nid, truncated)?;
        let blkaddr = if chunk_format & chunk::INDEXES != 0 {
            let entry: &ChunkIndex = self.image.read_at(pos).or_corrupt(nid, truncated)?;
            let blkaddr = entry.blkaddr.get();
            if blkaddr != format::NULL_ADDR && entry.device_id.get() != 0 {
                return Err(self.corrupt(Corruption::ChunkDevice));
            }
            blkaddr
        } else {
            let entry: &U32 = self.image.read_at(pos).or_corrupt(nid, truncated)?;
            entry.get()
        };
        Ok((blkaddr != format::NULL_ADDR).then_some(u64::from(blkaddr)))
    }

    /// The target of a symlink, borrowed from the image.
    pub fn symlink_target(&self) -> Result<&'img [u8]> {
        self.require(FileType::Symlink)?;
        let bad = Corruption::BadSymlink;
        if self.size() == 0 || self.size() >= format::SYMLINK_MAX {
            return Err(self.corrupt(bad));
        }
        match self.extent_at(0)? {
            Some(Extent::Data(d)) if d.len() as u64 == self.size() => Ok(d),
            _ => Err(self.corrupt(bad)),
        }
    }

    /// The whole content if it is stored contiguously in the image (inline files,
    /// small files), else `None`.
    pub fn contiguous_data(&self) -> Result<Option<&'img [u8]>> {
        match self.extent_at(0)? {
            None => Ok(Some(&[])),
            Some(Extent::Data(d)) if d.len() as u64 == self.size() => Ok(Some(d)),
            Some(_) => Ok(None),
        }
    }
}

/// The geometry of a chunk map: entry `i` (chunk `i`, at file offset `i << chunk_bits`) is
/// at byte `start + i * unit` of the image.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ChunkMap {
    /// The chunk format (entry size and chunk size: entries of maps with equal formats mean
    /// the same).
    pub(crate) format: u16,
    /// log2 of the chunk size.
    pub(crate) chunk_bits: u32,
    /// Image offset of the first entry.
    pub(crate) start: u64,
    /// Bytes per entry.
    pub(crate) unit: u64,
    /// Number of entries (chunks in the file).
    pub(crate) chunks: u64,
}

/// Iterator over a file's extents; yields at most one error, then stops.
#[derive(Debug, Clone)]
pub struct Extents<'img> {
    inode: Inode<'img>,
    offset: u64,
    failed: bool,
}

impl<'img> Iterator for Extents<'img> {
    type Item = Result<Extent<'img>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed {
            return None;
        }
        match self.inode.extent_at(self.offset) {
            Ok(Some(extent)) => {
                self.offset += extent.len();
                Some(Ok(extent))
            }
            Ok(None) => None,
            Err(e) => {
                self.failed = true;
                Some(Err(e))
            }
        }
    }
}
