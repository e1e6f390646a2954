//! Mounting and serving: [`ServeOptions`], the FUSE mount ([`mount`]), the rootless composefs
//! stack ([`mount_overlay`]), readiness and clean shutdown ([`Mounted`], [`unmount`]).
//!
//! - [`mode`]: who the caller is and which kind of mount it gets (all of the mode policy).
//! - [`newmount`]: the new mount API (`fsopen`/`fsconfig`/`fsmount`) every mount but the
//!   `fusermount3` one is made with, and [`DetachedMount`](newmount::DetachedMount).
//! - [`overlay`]: the kernel's half of a composefs mount: overlayfs and kernel EROFS.
//! - [`prefetch`]: reading the image into the page cache while the mount serves.
//! - [`sandbox`]: `lazycfs run`, a command inside a private mount.
//! - [`transport`]: FUSE over io_uring or `/dev/fuse` ([`Transport`]).

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use fuser::{Config, SessionACL};

use crate::content::Basedir;
use crate::erofs::Image;
use crate::server::core::Core;
use crate::server::uring::Queues;
use crate::server::{DevFuse, Server, Stats};
use crate::view::View;
use overlay::{OverlayMountOptions, OverlayXattrs};
use prefetch::PrefetchThread;
pub use transport::Transport;

mod fuse_mount;
pub mod mode;
pub mod newmount;
pub mod overlay;
pub mod prefetch;
pub mod sandbox;
pub mod transport;

/// How to serve an image. Build with [`ServeOptions::new`] and the setters (each documents
/// its option).
///
/// ```no_run
/// use lazycfs::mount::ServeOptions;
///
/// let image = lazycfs::erofs::Image::open("image.cfs")?;
/// let options = ServeOptions::new().basedir("/var/lib/objects").threads(4);
/// let mounted = lazycfs::mount::mount(image, "/mnt/image", &options)?;
/// mounted.wait()?; // until unmounted
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone)]
pub struct ServeOptions {
    basedir: Option<PathBuf>,
    view: View,
    allow_other: bool,
    threads: usize,
    busy_poll: bool,
    fsname: String,
    require_verity: bool,
    transport: Transport,
    time_requests: bool,
}

impl Default for ServeOptions {
    fn default() -> Self {
        // Reads cgroup files: once.
        let cpus = cpus();
        ServeOptions {
            basedir: None,
            view: View::Direct,
            allow_other: rustix::process::geteuid().is_root(),
            threads: cpus,
            busy_poll: cpus > 1,
            fsname: "lazycfs".into(),
            require_verity: false,
            transport: Transport::Auto,
            time_requests: false,
        }
    }
}

impl ServeOptions {
    /// Defaults: direct view, no basedir, one object reader per CPU, busy polling when there
    /// are several CPUs, `allow_other` when root.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the objects directory redirected files are read from (default none: image data
    /// only).
    pub fn basedir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.basedir = Some(dir.into());
        self
    }

    /// Sets what the mount shows (default [`View::Direct`]).
    pub fn view(mut self, view: View) -> Self {
        self.view = view;
        self
    }

    /// Lets users other than the mounter access the mount (`allow_other`; default: when
    /// root).
    pub fn allow_other(mut self, allow: bool) -> Self {
        self.allow_other = allow;
        self
    }

    /// Sets the number of threads reading basedir objects for requests from `/dev/fuse` (at
    /// least 1; default: the number of CPUs). One more thread answers all other requests:
    /// metadata comes from the mapped image and never waits on the disk, and a single reader
    /// of the FUSE device answers faster than several (the kernel would wake a different one
    /// for each request). With io_uring a thread per CPU answers every request of its CPU,
    /// object reads included.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// Polls the FUSE device during bursts of requests instead of sleeping between them, or
    /// not (see [`crate::server::busy_poll`]; default: on when there is more than one CPU).
    pub fn busy_poll(mut self, enabled: bool) -> Self {
        self.busy_poll = enabled;
        self
    }

    /// Serves basedir objects only if their fs-verity digest matches the image's
    /// (`--verity require`; default off).
    pub fn require_verity(mut self, require: bool) -> Self {
        self.require_verity = require;
        self
    }

    /// Sets how requests travel: FUSE over io_uring or `/dev/fuse` (`--transport`; default:
    /// io_uring when the kernel offers it).
    pub fn transport(mut self, transport: Transport) -> Self {
        self.transport = transport;
        self
    }

    /// The transport asked for (default [`Transport::Auto`]).
    pub fn requested_transport(&self) -> Transport {
        self.transport
    }

    /// Measures each request's server CPU time and keeps the slowest
    /// ([`Stats::slowest_request`]), or not (default off, `-v` turns it on).
    pub fn time_requests(mut self, on: bool) -> Self {
        self.time_requests = on;
        self
    }

    /// Sets the name shown as the mount source (default `lazycfs`).
    pub fn fsname(mut self, name: impl Into<String>) -> Self {
        self.fsname = name.into();
        self
    }

    fn fuse_config(&self) -> Config {
        let mut config = Config::default();
        config.acl = self.session_acl();
        // One thread reads the device (see `threads`); object reads go to the workers.
        config.n_threads = Some(1);
        config
    }

    /// The `-o` options of a `fusermount3` mount: read-only, and the kernel checks
    /// permissions against the image's modes, as it does for EROFS.
    fn fusermount_options(&self) -> String {
        let mut options = format!(
            "ro,default_permissions,fsname={},subtype=lazycfs",
            fuse_mount::escape(&self.fsname)
        );
        if self.allow_other {
            options.push_str(",allow_other");
        }
        options
    }

    /// Who may use the mount: everyone with `allow_other`, else only the mounter (the access
    /// rule the server applies to every request, [`crate::server::abi::allowed`]).
    fn request_owner(&self) -> Option<u32> {
        (!self.allow_other).then(|| rustix::process::geteuid().as_raw())
    }

    /// fuser lets every request through: the server applies the access rule itself, for
    /// both transports ([`request_owner`](Self::request_owner)).
    fn session_acl(&self) -> SessionACL {
        SessionACL::All
    }

    fn filesystem(&self, image: Image) -> io::Result<DevFuse> {
        crate::sys::fix_malloc_mmap_threshold();
        let basedir = match &self.basedir {
            // In the overlay views the overlay above reads the basedir, never the server.
            Some(_) if self.view.is_overlay_lower() => None,
            Some(dir) => Some(Basedir::open(dir, self.require_verity).map_err(|e| {
                io::Error::new(e.kind(), format!("basedir {}: {e}", dir.display()))
            })?),
            None => None,
        };
        let passthrough =
            mode::Privilege::detect().is_ok_and(|p| mode::fuse_passthrough(p, self.view));
        let server =
            Server::new(Core::new(image, self.view, basedir)).with_owner(self.request_owner());
        server.stats().time_requests(self.time_requests);
        Ok(DevFuse::new(Arc::new(server))
            .with_passthrough(passthrough)
            .with_busy_poll(self.busy_poll)
            .with_object_readers(self.threads))
    }
}

/// A running mount; unmounted when dropped.
pub struct Mounted {
    /// `None` once waited for.
    session: Option<fuser::BackgroundSession>,
    mountpoint: PathBuf,
    stats: Arc<Stats>,
    transport: Transport,
    /// The io_uring queue threads (with [`Transport::Uring`]).
    queues: Option<Queues>,
    /// Parked until the mount ends, then let go.
    _prefetch: PrefetchThread,
}

impl Mounted {
    /// What the server has served so far.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The server's counters, readable after the mount is gone (they count until the server
    /// has answered its last request).
    pub fn shared_stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    /// The mountpoint.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The transport requests travel through: [`Transport::Uring`] or [`Transport::Dev`].
    pub fn transport(&self) -> Transport {
        self.transport
    }

    /// Whether the server has stopped (e.g. the mount was unmounted from outside).
    pub fn is_finished(&self) -> bool {
        self.session
            .as_ref()
            .is_none_or(|session| session.guard.is_finished())
    }

    /// Waits until the filesystem is unmounted from outside.
    pub fn wait(mut self) -> io::Result<()> {
        let result = self.session.take().map_or(Ok(()), |session| session.join());
        if let Some(queues) = self.queues.take() {
            queues.join();
        }
        result
    }

    /// Unmounts and waits for the server threads. A mount that is briefly busy (e.g. a file
    /// descriptor inherited by a child between fork and exec) is retried for up to a second;
    /// one still busy then is detached from its mountpoint, and served until its last user
    /// leaves it.
    pub fn unmount(self) -> io::Result<()> {
        let mut attempts = 0;
        loop {
            match unmount(&self.mountpoint) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(rustix::io::Errno::BUSY.raw_os_error()) => {
                    if attempts == 20 {
                        log::info!("mount busy: detached, serving its last users");
                        detach(&self.mountpoint)?;
                        break;
                    }
                    attempts += 1;
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(e),
            }
        }
        self.wait()
    }
}

impl Drop for Mounted {
    /// A mount dropped while its server still runs is detached from its mountpoint (it goes
    /// once unused, and the server with it). One whose server has stopped is gone already:
    /// its path is left alone, since something else may be mounted there by now.
    fn drop(&mut self) {
        if !self.is_finished() {
            let _ = detach(&self.mountpoint);
        }
    }
}

/// Mounts `image` on `mountpoint` (directly as root, through `fusermount3` otherwise) and
/// serves it from background threads. Returns once the mount answers requests. Meanwhile, and
/// until the last read is submitted, a thread reads the image into the page cache
/// ([`prefetch`]).
pub fn mount(
    image: Image,
    mountpoint: impl AsRef<Path>,
    options: &ServeOptions,
) -> io::Result<Mounted> {
    let mountpoint = mountpoint.as_ref().to_path_buf();
    let serving = serve(image, options, |fs| {
        fuse_mount::attached_session(fs, &mountpoint, options)
    })?;
    let mounted = serving.mounted_on(mountpoint);
    wait_until_answering(&mounted)?;
    Ok(mounted)
}

/// The rootless composefs mount: serves `image` on a FUSE mount that is never attached to a
/// path, puts an overlayfs on it with `options.basedir` as data-only layer (see
/// [`overlay::mount_overlayfs_on`]) and attaches the overlay on `mountpoint`. The
/// server presents the overlay view matching `overlay.xattrs` (the view in `options` is
/// ignored) and stops when the overlay is unmounted.
///
/// Needs CAP_SYS_ADMIN over the current mount namespace: root, or root in a user namespace
/// (e.g. under `unshare -Urm`, or after [`sandbox::enter_private_namespaces`]).
pub fn mount_overlay(
    image: Image,
    mountpoint: impl AsRef<Path>,
    options: &ServeOptions,
    overlay: &OverlayMountOptions,
) -> io::Result<Mounted> {
    let mountpoint = mountpoint.as_ref().to_path_buf();
    let basedir = options
        .basedir
        .clone()
        .ok_or_else(|| io::Error::other("an overlay mount needs a basedir"))?;
    let view = match overlay.xattrs {
        OverlayXattrs::Trusted => View::OverlayTrusted,
        _ => View::OverlayUser,
    };
    let options = options.clone().view(view);
    let mut detached = None;
    let serving = serve(image, &options, |fs| {
        let (fuse_mount, fuse_fd) = fuse_mount::mount_detached_fuse(&options)?;
        detached = Some(fuse_mount);
        fuser::Session::from_fd(fs, fuse_fd, options.session_acl(), options.fuse_config())
    })?;
    let fuse_mount = detached.ok_or_else(|| io::Error::other("no FUSE mount was made"))?;
    // The overlay looks up the FUSE root while mounting: the server is already running.
    let overlay_mount = overlay::mount_overlayfs_on(&fuse_mount.proc_path(), &basedir, overlay)?;
    // The overlay holds its own reference to the FUSE mount; once the overlay goes, the FUSE
    // filesystem goes and the server stops.
    drop(fuse_mount);
    overlay_mount.attach(&mountpoint)?;
    Ok(serving.mounted_on(mountpoint))
}

/// A server started on its session, not yet a [`Mounted`] (which detaches its mount point
/// when dropped, so it is made only once the mount is in place).
struct Serving {
    session: fuser::BackgroundSession,
    stats: Arc<Stats>,
    transport: Transport,
    queues: Option<Queues>,
    prefetch: PrefetchThread,
}

impl Serving {
    fn mounted_on(self, mountpoint: PathBuf) -> Mounted {
        Mounted {
            session: Some(self.session),
            mountpoint,
            stats: self.stats,
            transport: self.transport,
            queues: self.queues,
            _prefetch: self.prefetch,
        }
    }
}

/// What every mount does before its own part: the transport plan, the prefetch thread
/// (started before the session, so that its reads overlap the mount's setup) and the server
/// on the FUSE session `create` makes.
fn serve(
    image: Image,
    options: &ServeOptions,
    create: impl FnOnce(DevFuse) -> io::Result<fuser::Session<DevFuse>>,
) -> io::Result<Serving> {
    let plan = transport::Plan::new(options.transport)?;
    let prefetch = image.prefetcher();
    let fs = options.filesystem(image)?.with_uring(plan.wants_uring());
    let prefetch = PrefetchThread::start(prefetch);
    let stats = fs.stats();
    let (session, transport, queues) = plan.serve(fs, create)?;
    Ok(Serving {
        session,
        stats,
        transport,
        queues,
        prefetch,
    })
}

fn wait_until_answering(mounted: &Mounted) -> io::Result<()> {
    for _ in 0..500 {
        if mounted.is_finished() {
            return Err(io::Error::other("FUSE server stopped during startup"));
        }
        if std::fs::metadata(&mounted.mountpoint)
            .is_ok_and(|m| std::os::unix::fs::MetadataExt::ino(&m) == 1)
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    Err(io::Error::other("mount did not answer within 5 s"))
}

/// The fs-verity SHA-256 digest of an image file (to refuse a mount whose image is not the
/// expected one, as `mount.composefs digest=` does).
pub fn image_verity_digest(path: &Path) -> io::Result<[u8; 32]> {
    crate::sys::measure_verity(&std::fs::File::open(path)?)
}

/// Unmounts a lazycfs mount: directly as root, through `fusermount3 -u` otherwise.
pub fn unmount(mountpoint: &Path) -> io::Result<()> {
    unmount_with(mountpoint, false)
}

/// Detaches a busy mount from its mountpoint (`umount -l`); it goes once unused.
fn detach(mountpoint: &Path) -> io::Result<()> {
    unmount_with(mountpoint, true)
}

fn unmount_with(mountpoint: &Path, lazy: bool) -> io::Result<()> {
    if rustix::process::geteuid().is_root() {
        let flags = match lazy {
            true => rustix::mount::UnmountFlags::DETACH,
            false => rustix::mount::UnmountFlags::empty(),
        };
        return rustix::mount::unmount(mountpoint, flags).map_err(Into::into);
    }
    let status = std::process::Command::new("fusermount3")
        .arg(if lazy { "-uz" } else { "-u" })
        .arg(mountpoint)
        .status()?;
    if status.success() {
        Ok(())
    } else {
        Err(io::Error::other(format!("fusermount3 -u failed: {status}")))
    }
}

fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}
