//! The fuser adapter: each FUSE request goes through one function (`ImageFs::serve`), which
//! runs the per-request hooks, asks the [`Core`] and sends its answer as fuser's reply. Reads
//! of basedir objects, which may wait on the disk, are answered from worker threads. INIT,
//! negotiated here, decides passthrough and FUSE over io_uring for both transports.

use std::cell::RefCell;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use fuser::{
    FileHandle, Filesystem, INodeNo, InitFlags, KernelConfig, LockOwner, OpenFlags, ReplyAttr,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs,
    ReplyXattr, Request,
};

use super::abi;
use super::busy_poll::BusyPoll;
use super::core::{Core, Errno};
use super::handles::Handle;
use super::passthrough::Backing;
use super::workers::Workers;
use super::{Server, Stats};
use crate::content::Basedir;
use crate::erofs::Image;
use crate::view::View;

mod replies;

use replies::{Answer, fuser_errno};

/// A FUSE filesystem serving one image.
pub struct ImageFs {
    server: Arc<Server>,
    /// Whether the caller allows FUSE passthrough.
    passthrough_allowed: bool,
    /// Whether to ask the kernel for FUSE over io_uring.
    uring_wanted: bool,
    /// How many threads read basedir objects (0: the request thread reads them).
    object_readers: usize,
    /// Those threads, started by the first object read (with passthrough there is none).
    workers: OnceLock<Workers>,
    busy_poll: Arc<BusyPoll>,
}

impl ImageFs {
    /// Serves `image` through `view`, reading redirected content from `basedir`.
    pub fn new(image: Image, view: View, basedir: Option<Basedir>) -> ImageFs {
        ImageFs {
            server: Arc::new(Server::new(Core::new(image, view, basedir))),
            passthrough_allowed: false,
            uring_wanted: false,
            object_readers: 0,
            workers: OnceLock::new(),
            busy_poll: BusyPoll::new(false),
        }
    }

    /// Asks the kernel for FUSE passthrough, so that it reads basedir objects itself. The
    /// caller decides: registering backing files needs CAP_SYS_ADMIN in the initial user
    /// namespace, and in the overlay views the overlay, not the server, reads objects.
    pub fn with_passthrough(mut self, allowed: bool) -> ImageFs {
        self.passthrough_allowed = allowed;
        self
    }

    /// Asks the kernel for FUSE over io_uring at INIT; whether it granted it is then
    /// [`Server::uring_granted`].
    pub fn with_uring(mut self, wanted: bool) -> ImageFs {
        self.uring_wanted = wanted;
        self
    }

    /// Reads basedir objects on `n` worker threads instead of the thread that answers
    /// requests (which then never waits on the disk for them); started on first use.
    pub fn with_object_readers(mut self, n: usize) -> ImageFs {
        self.object_readers = n;
        self
    }

    /// Polls the FUSE device during bursts of requests (see [`super::busy_poll`]); the
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
        self.server.core().stats().clone()
    }

    /// What both transports share.
    pub fn server(&self) -> Arc<Server> {
        self.server.clone()
    }

    /// Every request: the hooks, the core's answer, the reply.
    fn serve<'s, T, R: Answer<T>>(
        &'s self,
        opcode: u32,
        reply: R,
        op: impl FnOnce(&'s Core<Backing>, &R) -> Result<T, Errno>,
    ) {
        self.busy_poll.request();
        let core = self.server.core();
        let stats = core.stats();
        stats.dev_requests.fetch_add(1, Ordering::Relaxed);
        let started = stats.request_started();
        // The answer was decoded from the mapping: sent only if the image is still intact.
        match core.checked(op(core, &reply)) {
            Ok(value) => reply.answer(self, value),
            Err(e) => reply.fail(fuser_errno(e)),
        }
        stats.request_finished(started, opcode);
    }

    /// EIO instead of `result` if the image changed while it was being built.
    fn checked<T>(&self, result: Result<T, Errno>) -> Result<T, Errno> {
        self.server.core().checked(result)
    }

    /// Runs a read of a basedir object on a worker, or here if there are none.
    fn read_object(&self, job: impl FnOnce() + Send + 'static) {
        match self.object_readers {
            0 => job(),
            n => self.workers.get_or_init(|| Workers::start(n)).run(job),
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
        // Depth 1 keeps the mount stackable under overlayfs.
        let passthrough = self.passthrough_allowed
            && config.add_capabilities(InitFlags::FUSE_PASSTHROUGH).is_ok()
            && config.set_max_stack_depth(1).is_ok();
        let uring = self.uring_wanted && super::uring::negotiate(config);
        self.server.grant(passthrough, uring);
        Ok(())
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.serve(abi::FUSE_LOOKUP, reply, |core, _| {
            core.lookup(parent.0, name.as_bytes())
        });
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.serve(abi::FUSE_GETATTR, reply, |core, _| core.getattr(ino.0));
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.serve(abi::FUSE_READLINK, reply, |core, _| core.readlink(ino.0));
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.serve(abi::FUSE_OPEN, reply, |core, _| {
            core.open(ino.0, |file| self.server.register_backing(ino.0, file))
        });
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.serve(abi::FUSE_READ, reply, |core, _| {
            core.read(ino.0, Handle::from_fh(fh.0), offset, size)
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.serve(abi::FUSE_FLUSH, reply, |core, _| core.flush());
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.serve(abi::FUSE_RELEASE, reply, |core, _| {
            core.release(Handle::from_fh(fh.0))
        });
    }

    fn opendir(&self, _req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.serve(abi::FUSE_OPENDIR, reply, |core, _| core.opendir());
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.serve(abi::FUSE_READDIR, reply, |core, _| {
            core.readdir(ino.0, offset)
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        self.serve(abi::FUSE_READDIRPLUS, reply, |core, _| {
            core.readdirplus(ino.0, offset)
        });
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.serve(abi::FUSE_STATFS, reply, |core, _| core.statfs());
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.serve(abi::FUSE_GETXATTR, reply, |core, _| {
            core.getxattr(ino.0, name.as_bytes(), size)
        });
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        LIST_BUFFER.with_borrow_mut(|buf| {
            self.serve(abi::FUSE_LISTXATTR, reply, |core, _| {
                core.listxattr(ino.0, size, buf)
            });
        });
    }
}

thread_local! {
    /// listxattr's name list, reused so the hot path does not allocate.
    static LIST_BUFFER: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}
