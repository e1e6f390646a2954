//! The fuser adapter: each FUSE request goes through one function (`DevFuse::serve`), which
//! answers it through `Server::answer` and sends the answer as fuser's reply. Reads
//! of basedir objects, which may wait on the disk, are answered from worker threads. INIT,
//! negotiated here, decides passthrough and FUSE over io_uring for both transports.

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
use super::{Server, Stats, buffers};

mod replies;

use replies::{Answer, fuser_errno};

/// The `/dev/fuse` transport: the fuser filesystem answering through a [`Server`].
pub struct DevFuse {
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

impl DevFuse {
    /// Serves requests from `/dev/fuse` with `server`.
    pub fn new(server: Arc<Server>) -> DevFuse {
        DevFuse {
            server,
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
    pub fn with_passthrough(mut self, allowed: bool) -> DevFuse {
        self.passthrough_allowed = allowed;
        self
    }

    /// Asks the kernel for FUSE over io_uring at INIT; whether it granted it is then
    /// [`Server::uring_granted`].
    pub fn with_uring(mut self, wanted: bool) -> DevFuse {
        self.uring_wanted = wanted;
        self
    }

    /// Reads basedir objects on `n` worker threads instead of the thread that answers
    /// requests (which then never waits on the disk for them); started on first use.
    pub fn with_object_readers(mut self, n: usize) -> DevFuse {
        self.object_readers = n;
        self
    }

    /// Polls the FUSE device during bursts of requests (see [`super::busy_poll`]); the
    /// caller hands the device to [`busy_poll`](Self::busy_poll)`().attach` once mounted.
    pub fn with_busy_poll(mut self, enabled: bool) -> DevFuse {
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
        self.server.stats().clone()
    }

    /// The server it answers through (shared with the io_uring queues).
    pub fn server(&self) -> Arc<Server> {
        self.server.clone()
    }

    /// Every request: [`Server::answer`] with fuser's reply.
    fn serve<'s, T, R: Answer<T>>(
        &'s self,
        req: &Request,
        opcode: u32,
        reply: R,
        op: impl FnOnce(&'s Core<Backing>) -> Result<T, Errno>,
    ) {
        self.busy_poll.request();
        let stats = self.server.stats();
        stats.dev_requests.fetch_add(1, Ordering::Relaxed);
        self.server
            .answer(opcode, req.uid(), op, |answer| match answer {
                Ok(value) => reply.answer(self, value),
                Err(e) => reply.fail(fuser_errno(e)),
            });
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

impl Drop for DevFuse {
    fn drop(&mut self) {
        self.busy_poll.stop();
    }
}

impl Filesystem for DevFuse {
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

    fn lookup(&self, req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        self.serve(req, abi::FUSE_LOOKUP, reply, |core| {
            core.lookup(parent.0, name.as_bytes())
        });
    }

    fn getattr(&self, req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        self.serve(req, abi::FUSE_GETATTR, reply, |core| core.getattr(ino.0));
    }

    fn readlink(&self, req: &Request, ino: INodeNo, reply: ReplyData) {
        self.serve(req, abi::FUSE_READLINK, reply, |core| core.readlink(ino.0));
    }

    fn open(&self, req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.serve(req, abi::FUSE_OPEN, reply, |core| {
            core.open(ino.0, |file| self.server.register_backing(ino.0, file))
        });
    }

    fn read(
        &self,
        req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.serve(req, abi::FUSE_READ, reply, |core| {
            core.read(ino.0, Handle::from_fh(fh.0), offset, size)
        });
    }

    fn flush(
        &self,
        req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        self.serve(req, abi::FUSE_FLUSH, reply, |core| core.flush());
    }

    fn release(
        &self,
        req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.serve(req, abi::FUSE_RELEASE, reply, |core| {
            core.release(Handle::from_fh(fh.0))
        });
    }

    fn opendir(&self, req: &Request, _ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        self.serve(req, abi::FUSE_OPENDIR, reply, |core| core.opendir());
    }

    fn readdir(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectory,
    ) {
        self.serve(req, abi::FUSE_READDIR, reply, |core| {
            core.readdir(ino.0, offset)
        });
    }

    fn readdirplus(
        &self,
        req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        reply: ReplyDirectoryPlus,
    ) {
        self.serve(req, abi::FUSE_READDIRPLUS, reply, |core| {
            core.readdirplus(ino.0, offset)
        });
    }

    fn statfs(&self, req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.serve(req, abi::FUSE_STATFS, reply, |core| core.statfs());
    }

    fn getxattr(&self, req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        self.serve(req, abi::FUSE_GETXATTR, reply, |core| {
            core.getxattr(ino.0, name.as_bytes(), size)
        });
    }

    fn listxattr(&self, req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        buffers::with_names(|buf| {
            self.serve(req, abi::FUSE_LISTXATTR, reply, |core| {
                core.listxattr(ino.0, size, buf)
            });
        });
    }
}
