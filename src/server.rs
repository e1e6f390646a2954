//! The FUSE adapter: one method per FUSE operation, each decoding what it needs from the
//! image, asking the [`View`] what to show and replying. No tree and no per-inode state:
//! node ids are nids, so `forget` has nothing to drop. The only state is open basedir
//! objects, keyed by file handle.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    BackingId, Errno, FileAttr, FileHandle, Filesystem, FopenFlags, Generation, INodeNo, InitFlags,
    KernelConfig, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEntry,
    ReplyOpen, ReplyStatfs, ReplyXattr, Request,
};

use crate::busy_poll::BusyPoll;
use crate::content::{Basedir, Content};
use crate::erofs::{self, Extent, FileType, Image, Inode};
use crate::view::View;
use crate::workers::Workers;

/// The image never changes, so the kernel may cache everything for as long as it likes.
const TTL: Duration = Duration::from_secs(365 * 24 * 3600);
/// FUSE fixes the root's node id.
const ROOT_ID: u64 = 1;
/// File handle of image content (inline, blocks, chunks): no per-open state.
const IMAGE_HANDLE: u64 = 0;
/// File handle of a metacopy file opened through an overlay view: its content is in the
/// basedir, which the overlay above reads itself. The overlay still opens the lower file
/// for other reasons (e.g. reading file attributes during copy-up), so the open succeeds;
/// a read fails.
const ELSEWHERE_HANDLE: u64 = u64::MAX;

/// A FUSE filesystem serving one image.
pub struct ImageFs {
    image: Image,
    view: View,
    basedir: Option<Basedir>,
    objects: RwLock<HashMap<u64, OpenObject>>,
    /// Kernel passthrough backing ids, one per open inode (the kernel requires every open of
    /// an inode to use the same one), with the number of handles using each.
    backing: Mutex<HashMap<u64, (Arc<BackingId>, usize)>>,
    /// Whether the kernel granted FUSE passthrough (object reads then bypass the server).
    passthrough: bool,
    next_handle: AtomicU64,
    stats: Arc<Stats>,
    /// How many threads read basedir objects (0: the request thread reads them).
    object_readers: usize,
    /// Those threads, started by the first object read (with passthrough there is none).
    workers: OnceLock<Workers>,
    busy_poll: Arc<BusyPoll>,
}

/// What a server has served, readable while it runs (relaxed counters).
#[derive(Debug, Default)]
pub struct Stats {
    /// FUSE reads answered from the image's own data (inline, blocks, chunks).
    pub image_reads: AtomicU64,
    /// FUSE reads of basedir objects' content (in the overlay views: refused, EIO). Reads
    /// the kernel does itself (FUSE passthrough, or the overlay above an overlay view) never
    /// reach the server.
    pub object_reads: AtomicU64,
    /// Opens of files whose content is a basedir object. In the overlay views the overlay
    /// reads such content from the basedir itself; it may still open the file (e.g. for its
    /// attributes during copy-up).
    pub object_opens: AtomicU64,
}

impl Stats {
    /// One line for logs: `N image reads, N object opens, N object reads`.
    pub fn summary(&self) -> String {
        format!(
            "{} image reads, {} object opens, {} object reads",
            self.image_reads.load(Ordering::Relaxed),
            self.object_opens.load(Ordering::Relaxed),
            self.object_reads.load(Ordering::Relaxed)
        )
    }
}

impl ImageFs {
    /// Serves `image` through `view`, reading redirected content from `basedir`.
    pub fn new(image: Image, view: View, basedir: Option<Basedir>) -> ImageFs {
        ImageFs {
            image,
            view,
            basedir,
            objects: RwLock::new(HashMap::new()),
            backing: Mutex::new(HashMap::new()),
            passthrough: false,
            next_handle: AtomicU64::new(1),
            stats: Arc::default(),
            object_readers: 0,
            workers: OnceLock::new(),
            busy_poll: BusyPoll::new(false),
        }
    }

    /// Reads basedir objects on `n` worker threads instead of the thread that answers
    /// requests (which then never waits on the disk for them); started on first use.
    pub fn with_object_readers(mut self, n: usize) -> ImageFs {
        self.object_readers = n;
        self
    }

    /// Polls the FUSE device during bursts of requests (see [`crate::busy_poll`]); the
    /// caller hands the device to [`busy_poll`](Self::busy_poll)`().attach` once mounted.
    pub fn with_busy_poll(mut self, enabled: bool) -> ImageFs {
        self.busy_poll = BusyPoll::new(enabled);
        self
    }

    /// The server's busy-polling state.
    pub fn busy_poll(&self) -> Arc<BusyPoll> {
        self.busy_poll.clone()
    }

    /// The server's counters (shared: they keep counting after the server moves to its
    /// threads).
    pub fn stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// Node id of a nid. The root is 1; a non-root inode whose nid is 1 (possible when the
    /// metadata area does not start at block 0) takes the root's nid instead, so the mapping is
    /// a bijection (a swap) and costs nothing.
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

    /// The inverse of [`node_id`](Self::node_id) (a swap is its own inverse).
    fn nid(&self, node: INodeNo) -> u64 {
        self.node_id(node.0)
    }

    fn inode(&self, node: INodeNo) -> Result<Inode<'_>, Errno> {
        self.image.inode(self.nid(node)).map_err(io_error)
    }

    fn attr(&self, inode: &Inode<'_>) -> FileAttr {
        let (sec, nsec) = inode.mtime();
        let mtime = if sec >= 0 {
            UNIX_EPOCH + Duration::new(sec as u64, nsec)
        } else {
            UNIX_EPOCH - Duration::from_secs(sec.unsigned_abs())
                + Duration::from_nanos(u64::from(nsec))
        };
        let block_size = self.image.superblock().block_size();
        FileAttr {
            ino: INodeNo(self.node_id(inode.nid())),
            size: inode.size(),
            blocks: inode.size().div_ceil(block_size) * (block_size / 512),
            atime: mtime,
            mtime,
            ctime: mtime,
            crtime: mtime,
            kind: fuse_type(inode.file_type()),
            perm: (inode.mode() & 0o7777) as u16,
            nlink: inode.nlink(),
            uid: inode.uid(),
            gid: inode.gid(),
            rdev: inode.rdev_raw(),
            blksize: block_size as u32,
            flags: 0,
        }
    }

    fn negative_entry(&self) -> FileAttr {
        FileAttr {
            ino: INodeNo(0),
            size: 0,
            blocks: 0,
            atime: SystemTime::UNIX_EPOCH,
            mtime: SystemTime::UNIX_EPOCH,
            ctime: SystemTime::UNIX_EPOCH,
            crtime: SystemTime::UNIX_EPOCH,
            kind: fuser::FileType::RegularFile,
            perm: 0,
            nlink: 0,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 0,
            flags: 0,
        }
    }

    fn lookup_inode(&self, parent: INodeNo, name: &OsStr) -> Result<Option<Inode<'_>>, Errno> {
        let dir = self.inode(parent)?.dir().map_err(io_error)?;
        let Some(entry) = dir.lookup(name.as_bytes()).map_err(io_error)? else {
            return Ok(None);
        };
        let inode = self.image.inode(entry.nid).map_err(io_error)?;
        if !self.view.shows_inode(&inode) {
            return Ok(None);
        }
        self.reachable(&inode)?;
        Ok(Some(inode))
    }

    /// EIO for inodes the view says cannot be reached (as overlayfs answers them).
    fn reachable(&self, inode: &Inode<'_>) -> Result<(), Errno> {
        match self.view.reachable(inode) {
            Ok(true) => Ok(()),
            Ok(false) => Err(Errno::EIO),
            Err(e) => Err(io_error(e)),
        }
    }

    fn object(&self, fh: FileHandle) -> Option<Arc<File>> {
        Some(self.objects.read().ok()?.get(&fh.0)?.file.clone())
    }

    /// The inode's passthrough backing id, registering `file` if it has none yet.
    fn acquire_backing(&self, nid: u64, file: &File, reply: &ReplyOpen) -> Option<Arc<BackingId>> {
        let mut backing = self.backing.lock().ok()?;
        if let Some((id, users)) = backing.get_mut(&nid) {
            *users += 1;
            return Some(id.clone());
        }
        match reply.open_backing(file) {
            Ok(id) => {
                let id = Arc::new(id);
                backing.insert(nid, (id.clone(), 1));
                Some(id)
            }
            Err(e) => {
                log::debug!("nid {nid}: passthrough unavailable, serving reads: {e}");
                None
            }
        }
    }

    fn release_backing(&self, nid: u64) {
        if let Ok(mut backing) = self.backing.lock() {
            if let Some((_, users)) = backing.get_mut(&nid) {
                *users -= 1;
                if *users == 0 {
                    backing.remove(&nid);
                }
            }
        }
    }
}

impl Drop for ImageFs {
    fn drop(&mut self) {
        self.busy_poll.stop();
    }
}

impl Filesystem for ImageFs {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // READDIRPLUS hands the kernel each entry's attributes with its name, so a cold walk
        // costs one request per directory block instead of one lookup per entry.
        // POSIX_ACL: the kernel enforces the image's ACLs (as EROFS does) and maps their ids
        // into the mount's user namespace; without it a FUSE mount in a user namespace refuses
        // ACL xattrs altogether.
        let wanted = InitFlags::FUSE_CACHE_SYMLINKS
            | InitFlags::FUSE_PARALLEL_DIROPS
            | InitFlags::FUSE_DO_READDIRPLUS
            | InitFlags::FUSE_POSIX_ACL;
        // Capabilities the kernel lacks are simply not used.
        let _ = config.add_capabilities(wanted);
        // Passthrough lets the kernel read basedir objects directly; registering backing files
        // needs CAP_SYS_ADMIN in the initial user namespace, so only such root asks, and only
        // when it serves objects at all. Depth 1 keeps the mount stackable under overlayfs.
        if !self.view.is_overlay_lower()
            && crate::privilege::Privilege::detect()
                .is_ok_and(|p| p == crate::privilege::Privilege::InitialRoot)
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok()
        {
            self.passthrough = true;
        }
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.busy_poll.request();
        match self.lookup_inode(parent, name) {
            Ok(Some(inode)) => reply.entry(&TTL, &self.attr(&inode), Generation(0)),
            // A negative entry with a long TTL: the kernel caches the miss.
            Ok(None) => reply.entry(&TTL, &self.negative_entry(), Generation(0)),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.busy_poll.request();
        match self
            .inode(ino)
            .and_then(|inode| self.reachable(&inode).map(|()| inode))
        {
            Ok(inode) => reply.attr(&TTL, &self.attr(&inode)),
            Err(e) => reply.error(e),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.busy_poll.request();
        match self
            .inode(ino)
            .and_then(|i| i.symlink_target().map_err(io_error))
        {
            Ok(target) => reply.data(target),
            Err(e) => reply.error(e),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.busy_poll.request();
        let inode = match self.inode(ino) {
            Ok(inode) => inode,
            Err(e) => return reply.error(e),
        };
        if self.view.is_overlay_lower() {
            return match crate::content::is_metacopy(&inode) {
                Ok(false) => reply.opened(FileHandle(IMAGE_HANDLE), FopenFlags::FOPEN_KEEP_CACHE),
                Ok(true) => {
                    self.stats.object_opens.fetch_add(1, Ordering::Relaxed);
                    reply.opened(FileHandle(ELSEWHERE_HANDLE), FopenFlags::empty())
                }
                Err(e) => reply.error(io_error(e)),
            };
        }
        let content = match &self.basedir {
            Some(basedir) => basedir.content(&inode),
            None => Ok(Content::Image),
        };
        if matches!(content, Ok(Content::Object(_))) {
            self.stats.object_opens.fetch_add(1, Ordering::Relaxed);
        }
        match content {
            Ok(Content::Image) => {
                reply.opened(FileHandle(IMAGE_HANDLE), FopenFlags::FOPEN_KEEP_CACHE)
            }
            Ok(Content::Object(file)) => {
                let fh = self.next_handle.fetch_add(1, Ordering::Relaxed);
                let nid = inode.nid();
                let backing = if self.passthrough {
                    self.acquire_backing(nid, &file, &reply)
                } else {
                    None
                };
                let object = OpenObject {
                    file: Arc::new(file),
                    nid,
                    passthrough: backing.is_some(),
                };
                match self.objects.write() {
                    Ok(mut objects) => objects.insert(fh, object),
                    Err(_) => return reply.error(Errno::EIO),
                };
                match backing {
                    // The kernel refuses passthrough opens with caching flags (EIO).
                    Some(id) => reply.opened_passthrough(FileHandle(fh), FopenFlags::empty(), &id),
                    None => reply.opened(FileHandle(fh), FopenFlags::FOPEN_KEEP_CACHE),
                }
            }
            Err(e) => reply.error(Errno::from_i32(e.raw_os_error())),
        }
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: ReplyData,
    ) {
        self.busy_poll.request();
        if fh.0 == ELSEWHERE_HANDLE {
            self.stats.object_reads.fetch_add(1, Ordering::Relaxed);
            log::warn!(
                "node {}: read of a metacopy file through the overlay's lower layer refused: \
                 its content is in the basedir",
                ino.0
            );
            return reply.error(Errno::EIO);
        }
        if fh.0 != IMAGE_HANDLE {
            let Some(file) = self.object(fh) else {
                return reply.error(Errno::EBADF);
            };
            self.stats.object_reads.fetch_add(1, Ordering::Relaxed);
            let read = move || {
                with_read_buffer(size as usize, |buf| match file.read_at(buf, offset) {
                    Ok(n) => reply.data(&buf[..n]),
                    Err(e) => reply.error(Errno::from(e)),
                })
            };
            return match self.object_readers {
                0 => read(),
                n => self.workers.get_or_init(|| Workers::start(n)).run(read),
            };
        }
        let inode = match self.inode(ino) {
            Ok(inode) => inode,
            Err(e) => return reply.error(e),
        };
        self.stats.image_reads.fetch_add(1, Ordering::Relaxed);
        // Zero-copy when the request lies within one stored extent (the common case).
        match inode.extent_at(offset) {
            Ok(None) => reply.data(&[]),
            Ok(Some(Extent::Data(d))) if d.len() >= size as usize => {
                reply.data(&d[..size as usize])
            }
            Ok(Some(_)) => {
                let len = (size as u64).min(inode.size() - offset) as usize;
                with_read_buffer(len, |buf| match inode.read_at(offset, buf) {
                    Ok(n) => reply.data(&buf[..n]),
                    Err(e) => reply.error(io_error(e)),
                })
            }
            Err(e) => reply.error(io_error(e)),
        }
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: fuser::LockOwner,
        reply: fuser::ReplyEmpty,
    ) {
        self.busy_poll.request();
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        _flush: bool,
        reply: fuser::ReplyEmpty,
    ) {
        self.busy_poll.request();
        if fh.0 != IMAGE_HANDLE && fh.0 != ELSEWHERE_HANDLE {
            let removed = self.objects.write().ok().and_then(|mut o| o.remove(&fh.0));
            if let Some(object) = removed.filter(|o| o.passthrough) {
                self.release_backing(object.nid);
            }
        }
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.busy_poll.request();
        match self.inode(ino).and_then(|i| i.dir().map_err(io_error)) {
            Ok(_) => reply.opened(
                FileHandle(0),
                FopenFlags::FOPEN_CACHE_DIR | FopenFlags::FOPEN_KEEP_CACHE,
            ),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.busy_poll.request();
        let entries = match self.listed_entries(ino, offset) {
            Ok(entries) => entries,
            Err(e) => return reply.error(e),
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => return reply.error(e),
            };
            let kind = match self.entry_kind(&entry) {
                Ok(kind) => kind,
                Err(e) => return reply.error(e),
            };
            let node = INodeNo(self.node_id(entry.nid));
            if reply.add(node, entry.next_pos, kind, OsStr::from_bytes(entry.name)) {
                break;
            }
        }
        reply.ok();
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.busy_poll.request();
        let entries = match self.listed_entries(ino, offset) {
            Ok(entries) => entries,
            Err(e) => return reply.error(e),
        };
        for entry in entries {
            let entry = match entry {
                Ok(e) => e,
                Err(e) => return reply.error(e),
            };
            let inode = match self.image.inode(entry.nid) {
                Ok(inode) => inode,
                Err(e) => return reply.error(io_error(e)),
            };
            // Entries that lookup refuses (whiteouts listed in lower directories, metacopy
            // files without redirect) are listed uncached, so a stat goes to lookup.
            let ttl = match self.view.reachable(&inode) {
                Ok(true) if self.view.shows_inode(&inode) => TTL,
                Ok(_) => Duration::ZERO,
                Err(e) => return reply.error(io_error(e)),
            };
            let node = INodeNo(self.node_id(entry.nid));
            let name = OsStr::from_bytes(entry.name);
            if reply.add(
                node,
                entry.next_pos,
                name,
                &ttl,
                &self.attr(&inode),
                Generation(0),
            ) {
                break;
            }
        }
        reply.ok();
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.busy_poll.request();
        let sb = self.image.superblock();
        let bsize = sb.block_size() as u32;
        reply.statfs(
            u64::from(sb.blocks),
            0,
            0,
            sb.inodes,
            0,
            bsize,
            erofs::format::NAME_LEN as u32,
            bsize,
        );
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.busy_poll.request();
        let value = self.inode(ino).and_then(|inode| {
            let Some((index, parts)) = self.view.stored_name(name.as_bytes()) else {
                return Ok(None);
            };
            let xattrs = inode.xattrs().map_err(io_error)?;
            xattrs.get_parts(index, &parts).map_err(io_error)
        });
        match value {
            Ok(Some(value)) => reply_sized(reply, size, value),
            Ok(None) => reply.error(Errno::NO_XATTR),
            Err(e) => reply.error(e),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        self.busy_poll.request();
        let list = self.inode(ino).and_then(|inode| {
            LIST_BUFFER.with_borrow_mut(|buf| {
                buf.clear();
                for xattr in inode.xattrs().map_err(io_error)?.iter() {
                    let xattr = xattr.map_err(io_error)?;
                    if let Some(name) = self.view.present(&xattr) {
                        name.append_to(buf);
                        buf.push(0);
                    }
                }
                Ok(())
            })
        });
        match list {
            Ok(()) => LIST_BUFFER.with_borrow(|buf| reply_sized(reply, size, buf)),
            Err(e) => reply.error(e),
        }
    }
}

impl ImageFs {
    /// The entries of directory `ino` from position `offset` that the view lists.
    fn listed_entries(
        &self,
        ino: INodeNo,
        offset: u64,
    ) -> Result<impl Iterator<Item = Result<erofs::DirEntry<'_>, Errno>>, Errno> {
        let dir = self.inode(ino)?.dir().map_err(io_error)?;
        let dir_nid = dir.inode().nid();
        Ok(dir.entries_from(offset).filter_map(move |entry| {
            let listed = entry.and_then(|e| {
                Ok(self
                    .view
                    .lists_entry(&self.image, dir_nid, &e)?
                    .then_some(e))
            });
            listed.map_err(io_error).transpose()
        }))
    }

    /// The readdir type of an entry: from the dirent, or from the inode if the dirent says
    /// "unknown".
    fn entry_kind(&self, entry: &erofs::DirEntry<'_>) -> Result<fuser::FileType, Errno> {
        match FileType::from_dirent(entry.file_type) {
            Some(t) => Ok(fuse_type(t)),
            None => Ok(fuse_type(
                self.image.inode(entry.nid).map_err(io_error)?.file_type(),
            )),
        }
    }
}

/// An open basedir object.
struct OpenObject {
    file: Arc<File>,
    nid: u64,
    /// Whether the kernel reads it through a passthrough backing id.
    passthrough: bool,
}

thread_local! {
    /// listxattr's reply buffer, reused so the hot path does not allocate.
    static LIST_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
    /// Buffer for reads that cannot point into the mapping (objects, data across extents),
    /// reused per worker thread: it grows to the largest read once (the kernel's `max_read`).
    static READ_BUFFER: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Runs `f` on this thread's read buffer, `len` bytes long (contents unspecified: readers
/// overwrite what they return).
fn with_read_buffer<R>(len: usize, f: impl FnOnce(&mut [u8]) -> R) -> R {
    READ_BUFFER.with_borrow_mut(|buf| {
        if buf.len() < len {
            buf.resize(len, 0);
        }
        f(&mut buf[..len])
    })
}

/// Replies with `value` or its size, as getxattr/listxattr's size protocol requires.
fn reply_sized(reply: ReplyXattr, size: u32, value: &[u8]) {
    if size == 0 {
        reply.size(value.len() as u32);
    } else if value.len() > size as usize {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(value);
    }
}

fn fuse_type(t: FileType) -> fuser::FileType {
    match t {
        FileType::Regular => fuser::FileType::RegularFile,
        FileType::Directory => fuser::FileType::Directory,
        FileType::Symlink => fuser::FileType::Symlink,
        FileType::CharDevice => fuser::FileType::CharDevice,
        FileType::BlockDevice => fuser::FileType::BlockDevice,
        FileType::Fifo => fuser::FileType::NamedPipe,
        FileType::Socket => fuser::FileType::Socket,
    }
}

/// Decoding errors become their errno (EIO for corruption), with a log line.
fn io_error(e: erofs::Error) -> Errno {
    log::warn!("{e}");
    Errno::from_i32(e.errno())
}
