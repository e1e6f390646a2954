//! The request core: every operation the server answers, as a plain function of the image,
//! the [`View`] and the basedir that returns a value or an [`Errno`]. Nothing here knows a
//! transport: [`super::fuse`] forwards fuser's requests here and turns the values into
//! replies.
//!
//! Node ids are nids (with the root swapped to FUSE's 1), so there is no inode table and
//! `forget` has nothing to drop; the only state is the [`OpenFiles`] table. Replies borrow the
//! mapping (names, xattr values, symlink targets, file data within one extent), and the
//! operations that assemble bytes write them into a buffer the caller keeps, so no hot path
//! allocates.

use std::convert::Infallible;
use std::fs::File;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

pub use rustix::io::Errno;

use super::Stats;
use super::handles::{Handle, OpenFiles};
use crate::content::{Basedir, Content};
use crate::erofs::{self, Extent, FileType, Image, Inode};
use crate::view::View;

mod changed;
mod replies;
#[cfg(test)]
mod tests;

pub(crate) use replies::fill_listing;
pub use replies::{
    Attr, CacheFlags, Entry, ImageRead, ObjectRead, Opened, Read, ReaddirEntry, ReaddirPlusEntry,
    Statfs, Timestamp, XattrReply,
};

/// How long the kernel may cache entries and attributes: the image never changes, so for as
/// long as it likes.
pub const TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// FUSE fixes the root's node id.
pub const ROOT_ID: u64 = 1;
/// Consecutive entries a listing may hide (the direct root's whiteouts) before it fails with
/// EIO: far more than images have (composefs has 256), few enough for one request.
const MAX_HIDDEN_RUN: u32 = 16_384;
/// Bytes of xattr areas one READDIRPLUS scans for its entries' overlay xattrs (beyond its
/// first entry): room for hundreds of ordinary files, half the largest area.
const READDIRPLUS_XATTR_BUDGET: u64 = 128 << 10;

/// Answers requests about one image; `B` is the transport's passthrough backing id.
#[derive(Debug)]
pub struct Core<B> {
    image: Image,
    view: View,
    basedir: Option<Basedir>,
    files: OpenFiles<B>,
    stats: Arc<Stats>,
    /// Whether the image's change has been logged (once per mount).
    change_logged: AtomicBool,
}

impl<B> Core<B> {
    /// Serves `image` through `view`, reading redirected content from `basedir`.
    pub fn new(image: Image, view: View, basedir: Option<Basedir>) -> Core<B> {
        Core {
            image,
            view,
            basedir,
            files: OpenFiles::new(),
            stats: Arc::default(),
            change_logged: AtomicBool::new(false),
        }
    }

    /// The counters (shared: they keep counting while the server runs on its threads).
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The open basedir objects.
    pub fn open_files(&self) -> &OpenFiles<B> {
        &self.files
    }

    /// The entry `name` in directory `parent`; a negative entry if there is none, or if the
    /// view hides it (whiteouts in the direct view). EIO for an entry the view says cannot be
    /// reached (as overlayfs answers it).
    pub fn lookup(&self, parent: u64, name: &[u8]) -> Result<Entry, Errno> {
        let dir = self.inode(parent)?.dir().map_err(io_error)?;
        let Some(entry) = dir.lookup(name).map_err(io_error)? else {
            return Ok(Entry::negative());
        };
        let inode = self.image.inode(entry.nid).map_err(io_error)?;
        if !self.view.shows_inode(&inode) {
            return Ok(Entry::negative());
        }
        self.reachable(&inode)?;
        Ok(Entry {
            attr: Some(self.attr(&inode)),
            ttl: TTL,
        })
    }

    /// The attributes of `node`, valid for [`TTL`].
    pub fn getattr(&self, node: u64) -> Result<Attr, Errno> {
        let inode = self.inode(node)?;
        self.reachable(&inode)?;
        Ok(self.attr(&inode))
    }

    /// The target of symlink `node`.
    pub fn readlink(&self, node: u64) -> Result<&[u8], Errno> {
        self.inode(node)?.symlink_target().map_err(io_error)
    }

    /// Opens `node` for reading. A basedir object gets a handle of its own; `register` is
    /// asked for a passthrough backing id when its inode has none yet (`None`: reads come to
    /// the server).
    pub fn open(
        &self,
        node: u64,
        register: impl FnOnce(&File) -> Option<B>,
    ) -> Result<Opened<B>, Errno> {
        let inode = self.inode(node)?;
        if self.view.is_overlay_lower() {
            return if crate::composefs::Metacopy::of(&inode)
                .map_err(io_error)?
                .is_some()
            {
                self.stats.object_opens.fetch_add(1, Ordering::Relaxed);
                Ok(Opened::new(Handle::Elsewhere, CacheFlags::NONE))
            } else {
                Ok(Opened::new(Handle::Image, CacheFlags::KEEP))
            };
        }
        let content = match &self.basedir {
            Some(basedir) => basedir.content(&inode)?,
            None => Content::Image,
        };
        match content {
            Content::Image => Ok(Opened::new(Handle::Image, CacheFlags::KEEP)),
            Content::Object(file) => {
                self.stats.object_opens.fetch_add(1, Ordering::Relaxed);
                let (handle, backing) = self.files.open(inode.nid(), file, register)?;
                // The kernel refuses passthrough opens with caching flags (EIO).
                let cache = match backing {
                    Some(_) => CacheFlags::NONE,
                    None => CacheFlags::KEEP,
                };
                Ok(Opened {
                    handle,
                    cache,
                    backing,
                })
            }
        }
    }

    /// Up to `size` bytes of `node` from `offset`, read through `handle`. Image data within
    /// one stored extent (the common case) comes back borrowed from the mapping.
    pub fn read(
        &self,
        node: u64,
        handle: Handle,
        offset: u64,
        size: u32,
    ) -> Result<Read<'_>, Errno> {
        match handle {
            Handle::Elsewhere => {
                self.stats.object_reads.fetch_add(1, Ordering::Relaxed);
                log::warn!(
                    "node {node}: read of a metacopy file through the overlay's lower layer \
                     refused: its content is in the basedir"
                );
                Err(Errno::IO)
            }
            Handle::Object(_) => {
                let file = self.files.object(handle).ok_or(Errno::BADF)?;
                self.stats.object_reads.fetch_add(1, Ordering::Relaxed);
                Ok(Read::Object(ObjectRead::new(file, offset, size)))
            }
            Handle::Image => {
                let inode = self.inode(node)?;
                self.stats.image_reads.fetch_add(1, Ordering::Relaxed);
                let size = size as usize;
                match inode.extent_at(offset).map_err(io_error)? {
                    None => Ok(Read::Mapped(&[])),
                    Some(Extent::Data(data)) if data.len() >= size => {
                        Ok(Read::Mapped(changed::touched(&data[..size])))
                    }
                    Some(_) => {
                        let len = (size as u64).min(inode.size() - offset) as usize;
                        Ok(Read::Image(ImageRead::new(inode, offset, len)))
                    }
                }
            }
        }
    }

    /// Nothing to write back (the filesystem is read-only), so the answer is ENOSYS: the
    /// kernel then stops sending FLUSH at every close for the rest of the mount.
    pub fn flush(&self) -> Result<(), Errno> {
        Err(Errno::NOSYS)
    }

    /// Closes `handle` (and its basedir object, if it has one).
    pub fn release(&self, handle: Handle) -> Result<(), Errno> {
        self.files.release(handle);
        Ok(())
    }

    /// Opening a directory needs no state, so the answer is always ENOSYS: the kernel then
    /// stops sending OPENDIR and RELEASEDIR for the rest of the mount (two round trips per
    /// directory fewer) and opens directories itself with `FOPEN_KEEP_CACHE |
    /// FOPEN_CACHE_DIR`, so it keeps their listings and pages as it would with our answer.
    pub fn opendir(&self) -> Result<Infallible, Errno> {
        Err(Errno::NOSYS)
    }

    /// The entries of directory `node` the view lists, from position `offset` (0, or an
    /// entry's [`next_offset`](ReaddirEntry::next_offset)).
    pub fn readdir(
        &self,
        node: u64,
        offset: u64,
    ) -> Result<impl Iterator<Item = Result<ReaddirEntry<'_>, Errno>>, Errno> {
        Ok(self.listed_entries(node, offset)?.map(|entry| {
            let entry = entry?;
            let kind = match FileType::from_dirent(entry.file_type) {
                Some(kind) => kind,
                // The dirent says "unknown": the inode knows.
                None => self.image.inode(entry.nid).map_err(io_error)?.file_type(),
            };
            Ok(self.dir_entry(&entry, kind))
        }))
    }

    /// [`readdir`](Self::readdir) with each entry's attributes. Entries that lookup refuses
    /// (whiteouts listed in lower directories, metacopy files without redirect) come with a
    /// zero TTL, so a stat goes to lookup.
    pub fn readdirplus(
        &self,
        node: u64,
        offset: u64,
    ) -> Result<impl Iterator<Item = Result<ReaddirPlusEntry<'_>, Errno>>, Errno> {
        let dir = self.inode(node)?;
        let (mut xattr_budget, mut first) = (READDIRPLUS_XATTR_BUDGET, true);
        Ok(self.listed_entries(node, offset)?.map_while(move |entry| {
            let entry = entry.and_then(|entry| {
                let inode = match self.image.inode(entry.nid) {
                    Ok(inode) => inode,
                    // The kernel resolves `.` and `..` itself and ignores their attributes: a
                    // corrupt one does not make the directory unreadable (nor in kernel EROFS).
                    Err(_) if matches!(entry.name, b"." | b"..") => dir,
                    Err(e) => return Err(io_error(e)),
                };
                // Overlay xattrs are looked for in the whole xattr area: a request ends early
                // (the kernel asks for the rest) rather than scan many large ones.
                let area = u64::from(inode.xattr_size());
                if !first && area > xattr_budget {
                    return Ok(None);
                }
                (xattr_budget, first) = (xattr_budget.saturating_sub(area), false);
                let ttl = match self.view.reachable(&inode).map_err(io_error)? {
                    true if self.view.shows_inode(&inode) => TTL,
                    _ => Duration::ZERO,
                };
                let entry = self.dir_entry(&entry, inode.file_type());
                let attr = self.attr(&inode);
                Ok(Some(ReaddirPlusEntry { entry, attr, ttl }))
            });
            entry.transpose()
        }))
    }

    /// The filesystem's sizes (nothing is free: it is read-only).
    pub fn statfs(&self) -> Result<Statfs, Errno> {
        let sb = self.image.superblock();
        Ok(Statfs {
            blocks: u64::from(sb.blocks),
            files: sb.inodes,
            block_size: sb.block_size() as u32,
            name_len: erofs::format::NAME_LEN as u32,
        })
    }

    /// Xattr `name` of `node` as the view presents it, or its size when `size` is 0 (ENODATA
    /// if it has none, ERANGE if it is longer than `size`).
    pub fn getxattr(&self, node: u64, name: &[u8], size: u32) -> Result<XattrReply<'_>, Errno> {
        let inode = self.inode(node)?;
        let Some((index, parts)) = self.view.stored_name(name) else {
            return Err(Errno::NODATA);
        };
        let xattrs = inode.xattrs().map_err(io_error)?;
        match xattrs.get_parts(index, &parts).map_err(io_error)? {
            Some(value) => XattrReply::sized(size, value),
            None => Err(Errno::NODATA),
        }
    }

    /// The NUL-terminated names of `node`'s xattrs as the view presents them, written into
    /// `buf`, or their size when `size` is 0 (ERANGE if longer than `size`).
    pub fn listxattr<'a>(
        &'a self,
        node: u64,
        size: u32,
        buf: &'a mut Vec<u8>,
    ) -> Result<XattrReply<'a>, Errno> {
        let inode = self.inode(node)?;
        buf.clear();
        // Only what fits is assembled: names with 64 KiB long prefixes can add up to gigabytes.
        let mut total = 0u64;
        for xattr in inode.xattrs().map_err(io_error)?.iter() {
            let xattr = xattr.map_err(io_error)?;
            if let Some(name) = self.view.listed(&xattr) {
                total += name.len() as u64 + 1;
                if size == 0 {
                    continue;
                }
                if total > u64::from(size) {
                    return Err(Errno::RANGE);
                }
                name.append_to(buf);
                buf.push(0);
            }
        }
        match size {
            0 => Ok(XattrReply::Size(u32::try_from(total).unwrap_or(u32::MAX))),
            _ => Ok(XattrReply::Data(buf)),
        }
    }
}

impl<B> Core<B> {
    /// Node id of a nid. The root is 1; a non-root inode whose nid is 1 (possible when the
    /// metadata area does not start at block 0) takes the root's nid instead, so the mapping
    /// is a bijection (a swap) and costs nothing.
    fn node_id(&self, nid: u64) -> u64 {
        let root = self.image.root_nid();
        if nid == root {
            ROOT_ID
        } else if nid == ROOT_ID {
            root
        } else {
            nid
        }
    }

    /// The inode of a node id (a swap is its own inverse).
    fn inode(&self, node: u64) -> Result<Inode<'_>, Errno> {
        self.image_intact()?;
        self.image.inode(self.node_id(node)).map_err(io_error)
    }

    /// EIO for inodes the view says cannot be reached (as overlayfs answers them).
    fn reachable(&self, inode: &Inode<'_>) -> Result<(), Errno> {
        match self.view.reachable(inode).map_err(io_error)? {
            true => Ok(()),
            false => Err(Errno::IO),
        }
    }

    fn attr(&self, inode: &Inode<'_>) -> Attr {
        let (secs, nanos) = inode.mtime();
        let block_size = self.image.superblock().block_size();
        Attr {
            ino: self.node_id(inode.nid()),
            size: inode.size(),
            blocks: inode.size().div_ceil(block_size) * (block_size / 512),
            mtime: Timestamp { secs, nanos },
            kind: inode.file_type(),
            perm: (inode.mode() & 0o7777) as u16,
            nlink: inode.nlink(),
            uid: inode.uid(),
            gid: inode.gid(),
            rdev: inode.rdev_raw(),
            block_size: block_size as u32,
        }
    }

    fn dir_entry<'img>(&self, entry: &erofs::DirEntry<'img>, kind: FileType) -> ReaddirEntry<'img> {
        ReaddirEntry {
            node: self.node_id(entry.nid),
            next_offset: entry.next_pos,
            kind,
            name: entry.name,
        }
    }

    /// The entries of directory `node` from position `offset` that the view lists.
    fn listed_entries(
        &self,
        node: u64,
        offset: u64,
    ) -> Result<impl Iterator<Item = Result<erofs::DirEntry<'_>, Errno>>, Errno> {
        let dir = self.inode(node)?.dir().map_err(io_error)?;
        let dir_nid = dir.inode().nid();
        let mut hidden_run = 0;
        Ok(dir.entries_from(offset).filter_map(move |entry| {
            let listed = entry.and_then(|e| {
                // No kernel accepts such a name from a filesystem (FUSE fails the readdir).
                if e.name.iter().any(|&b| b == b'/' || b == 0) {
                    return Err(erofs::Error::Corrupt {
                        nid: dir_nid,
                        what: erofs::Corruption::BadName,
                    });
                }
                if self.view.lists_entry(&self.image, dir_nid, &e)? {
                    hidden_run = 0;
                    return Ok(Some(e));
                }
                // Each request answers with at least one entry (an empty answer ends the
                // listing): a run of hidden entries must not make one request scan millions.
                hidden_run += 1;
                match hidden_run < MAX_HIDDEN_RUN {
                    true => Ok(None),
                    false => Err(erofs::Error::Corrupt {
                        nid: dir_nid,
                        what: erofs::Corruption::TooManyHiddenEntries,
                    }),
                }
            });
            listed.map_err(io_error).transpose()
        }))
    }
}

/// Decoding errors become their errno (EIO for corruption), with a log line.
fn io_error(e: erofs::Error) -> Errno {
    log::warn!("{e}");
    Errno::from_raw_os_error(e.errno())
}
