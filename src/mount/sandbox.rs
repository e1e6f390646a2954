//! `lazycfs run`: a command inside a private composefs mount, for any user.
//!
//! The process enters a new mount namespace (and, unless it is already root in some user
//! namespace, a new user namespace mapping its uid and gid to root), mounts the image there
//! (overlay-on-FUSE, or kernel EROFS + overlay when it is root in the initial namespace),
//! runs the command with the mount root as working directory (or root directory), then
//! unmounts and returns the command's exit status. The mount is invisible outside the
//! namespace, and the command is killed if this process dies, so nothing outlives the run.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustix::mount::{MountPropagationFlags, UnmountFlags};
use rustix::thread::UnshareFlags;

use super::mode::{Mode, Privilege};
use super::overlay::{OverlayMountOptions, mount_kernel_composefs};
use super::{Mounted, ServeOptions};
use crate::erofs::Image;

/// Enters a private mount namespace, first creating a user namespace when the caller is not
/// root in its current one: its uid and gid map to root and, when it has subordinate ids
/// (`/etc/subuid`, `/etc/subgid`) and `newuidmap`/`newgidmap` are installed, ids 1..N map to
/// them, as podman does, so image files owned by other ids keep their owners. Returns the
/// privilege the caller had before. Must be called while the process has a single thread (a
/// kernel requirement for joining a new user namespace).
pub fn enter_private_namespaces() -> io::Result<Privilege> {
    let privilege = Privilege::detect()?;
    if privilege == Privilege::Unprivileged {
        let uid = rustix::process::getuid().as_raw();
        let gid = rustix::process::getgid().as_raw();
        // newuidmap must run outside the new namespace: start it first, release it after.
        let mut id_mapper = SubordinateIds::of(uid, gid).and_then(|ids| ids.start_mapper());
        crate::sys::unshare(UnshareFlags::NEWUSER | UnshareFlags::NEWNS).map_err(|e| {
            io::Error::new(
                e.kind(),
                format!(
                    "cannot create a user namespace: {e} (unprivileged user namespaces may be \
                     disabled: see /proc/sys/user/max_user_namespaces)"
                ),
            )
        })?;
        if let Some(mapper) = id_mapper.take() {
            if mapper.finish() {
                return finish_entering(privilege);
            }
            log::info!("newuidmap/newgidmap failed; mapping only the caller's ids");
        }
        // An unprivileged process may map only its own ids, and its gid only once it has
        // given up setgroups.
        write_proc("/proc/self/setgroups", "deny")?;
        write_proc("/proc/self/uid_map", &format!("0 {uid} 1"))?;
        write_proc("/proc/self/gid_map", &format!("0 {gid} 1"))?;
    } else {
        crate::sys::unshare(UnshareFlags::NEWNS).map_err(|e| {
            io::Error::new(e.kind(), format!("cannot create a mount namespace: {e}"))
        })?;
    }
    finish_entering(privilege)
}

fn finish_entering(privilege: Privilege) -> io::Result<Privilege> {
    // Nothing mounted here may propagate back to the parent namespace.
    rustix::mount::mount_change(
        "/",
        MountPropagationFlags::REC | MountPropagationFlags::PRIVATE,
    )
    .map_err(|e| io::Error::other(format!("making mounts private: {e}")))?;
    Ok(privilege)
}

/// The caller's subordinate id ranges.
struct SubordinateIds {
    uid: u32,
    gid: u32,
    uids: (u32, u32),
    gids: (u32, u32),
}

impl SubordinateIds {
    fn of(uid: u32, gid: u32) -> Option<SubordinateIds> {
        let name = user_name(uid);
        let find = |file: &str| -> Option<(u32, u32)> {
            let text = std::fs::read_to_string(file).ok()?;
            text.lines().find_map(|line| {
                let mut fields = line.split(':');
                let owner = fields.next()?;
                if owner != uid.to_string() && Some(owner) != name.as_deref() {
                    return None;
                }
                let start = fields.next()?.trim().parse().ok()?;
                let count = fields.next()?.trim().parse().ok()?;
                Some((start, count)).filter(|&(_, count)| count > 0)
            })
        };
        Some(SubordinateIds {
            uid,
            gid,
            uids: find("/etc/subuid")?,
            gids: find("/etc/subgid")?,
        })
    }

    /// Starts a shell that, once told, maps the ids of this process's new user namespace.
    fn start_mapper(self) -> Option<IdMapper> {
        let script = "read _ && newuidmap \"$0\" 0 \"$1\" 1 1 \"$2\" \"$3\" && \
                      newgidmap \"$0\" 0 \"$4\" 1 1 \"$5\" \"$6\"";
        let ids = [
            self.uid,
            self.uids.0,
            self.uids.1,
            self.gid,
            self.gids.0,
            self.gids.1,
        ];
        let child = Command::new("sh")
            .arg("-c")
            .arg(script)
            .arg(std::process::id().to_string())
            .args(ids.map(|n| n.to_string()))
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .spawn()
            .ok()?;
        Some(IdMapper { child })
    }
}

/// A running `newuidmap`/`newgidmap` helper (see [`SubordinateIds::start_mapper`]).
struct IdMapper {
    child: std::process::Child,
}

impl IdMapper {
    /// Tells the helper the namespace exists; whether the mapping worked.
    fn finish(mut self) -> bool {
        use std::io::Write;
        let told = self
            .child
            .stdin
            .take()
            .is_some_and(|mut stdin| stdin.write_all(b"go\n").is_ok());
        let status = self.child.wait();
        told && status.is_ok_and(|s| s.success())
    }
}

impl Drop for IdMapper {
    fn drop(&mut self) {
        // Unused (namespace creation failed) or finished: make sure it is gone.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The login name of `uid` (from `/etc/passwd`), which `/etc/subuid` usually uses.
fn user_name(uid: u32) -> Option<String> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let id: u32 = fields.nth(1)?.parse().ok()?;
        (id == uid).then(|| name.to_string())
    })
}

fn write_proc(path: &str, contents: &str) -> io::Result<()> {
    std::fs::write(path, contents)
        .map_err(|e| io::Error::new(e.kind(), format!("writing {contents:?} to {path}: {e}")))
}

/// What to mount for [`run`] and how to start the command.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RunOptions {
    /// Server options; `basedir` is required.
    pub serve: ServeOptions,
    /// Overlay options (upper/work directories, `verity=require`).
    pub overlay: OverlayMountOptions,
    /// Run the command with the mount as its root directory instead of its working directory.
    pub chroot: bool,
    /// Mount through the mount service listening on this socket (`lazycfs service`): the
    /// kernel's composefs mount, placed in the run's own namespaces. Read-only: no upper
    /// directory.
    pub service: Option<PathBuf>,
}

impl RunOptions {
    /// Mount with `serve`, read-only, command in the mount root.
    pub fn new(serve: ServeOptions) -> Self {
        RunOptions {
            serve,
            overlay: OverlayMountOptions::new(),
            chroot: false,
            service: None,
        }
    }

    /// Sets the mount service to mount through (`None`: mount here).
    pub fn service(mut self, socket: Option<PathBuf>) -> Self {
        self.service = socket;
        self
    }

    /// Sets the overlay options.
    pub fn overlay(mut self, overlay: OverlayMountOptions) -> Self {
        self.overlay = overlay;
        self
    }

    /// Sets whether the command is chrooted into the mount.
    pub fn chroot(mut self, chroot: bool) -> Self {
        self.chroot = chroot;
        self
    }
}

/// Why [`run`] failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Mounting (or preparing the mountpoint) failed; the command did not run.
    #[error("{0}")]
    Mount(io::Error),
    /// The command could not be started (`NotFound`, `PermissionDenied`, ...).
    #[error("cannot run {command}: {error}")]
    Command {
        /// The command, as given.
        command: String,
        /// Why `exec` failed.
        error: io::Error,
    },
}

/// The mount a command runs in: kernel (made here or by the mount service; no server) or
/// overlay-on-FUSE.
enum RunMount {
    Kernel,
    Fuse(Mounted),
}

/// Mounts `image` on a fresh private directory and runs `command` with `args` there, after
/// [`enter_private_namespaces`] returned `privilege`. Signals whose numbers `forward` holds
/// (set by the caller's handlers; 0 = none) are passed on to the command. Returns the
/// command's exit status once everything is unmounted and removed.
pub fn run(
    image: Image,
    image_path: &Path,
    privilege: Privilege,
    options: &RunOptions,
    command: &OsString,
    args: &[OsString],
    forward: &Arc<AtomicUsize>,
) -> Result<ExitStatus, RunError> {
    let basedir = options
        .serve
        .basedir
        .clone()
        .ok_or_else(|| RunError::Mount(io::Error::other("`run` needs a basedir")))?;
    let mountpoint = private_mountpoint().map_err(RunError::Mount)?;
    let result = (|| {
        let mount = if let Some(socket) = &options.service {
            mount_by_service(socket, image_path, &basedir, &mountpoint, &options.overlay)?;
            RunMount::Kernel
        } else if Mode::for_run(privilege) == Mode::Kernel {
            mount_kernel_composefs(image_path, &basedir, &options.overlay)
                .and_then(|m| m.attach(&mountpoint))
                .map_err(RunError::Mount)?;
            RunMount::Kernel
        } else {
            RunMount::Fuse(
                super::mount_overlay(image, &mountpoint, &options.serve, &options.overlay)
                    .map_err(RunError::Mount)?,
            )
        };
        let status = run_command(&mountpoint, options.chroot, command, args, forward);
        teardown(&mountpoint, mount);
        status
    })();
    let _ = std::fs::remove_dir(&mountpoint);
    result
}

/// Has the mount service mount the image on `mountpoint`, in this process's namespaces.
fn mount_by_service(
    socket: &Path,
    image: &Path,
    basedir: &Path,
    mountpoint: &Path,
    overlay: &OverlayMountOptions,
) -> Result<(), RunError> {
    use crate::service::{Placement, client};
    if overlay.upper.is_some() {
        return Err(RunError::Mount(io::Error::other(
            "the mount service makes read-only mounts: no --upper",
        )));
    }
    let request = client::MountRequest::new()
        .require_verity(overlay.require_verity)
        .placement(Placement::OwnNamespaces);
    client::mount(socket, image, basedir, mountpoint, &request)
        .map_err(|e| RunError::Mount(io::Error::other(e.to_string())))
}

fn run_command(
    mountpoint: &Path,
    chroot: bool,
    command: &OsString,
    args: &[OsString],
    forward: &Arc<AtomicUsize>,
) -> Result<ExitStatus, RunError> {
    let command_error = |error: io::Error| RunError::Command {
        command: command.to_string_lossy().into_owned(),
        error,
    };
    let mut cmd = Command::new(command);
    cmd.args(args);
    if chroot {
        crate::sys::child_setup(&mut cmd, Some(mountpoint)).map_err(command_error)?;
    } else {
        cmd.current_dir(mountpoint);
        crate::sys::child_setup(&mut cmd, None).map_err(command_error)?;
    }
    // Orphans the command leaves (background jobs, daemons) become our children, so they can
    // be found and stopped before the mount goes.
    let me = rustix::process::getpid();
    rustix::process::set_child_subreaper(Some(me)).map_err(|e| command_error(e.into()))?;
    let mut child = cmd.spawn().map_err(command_error)?;
    let pid = rustix::process::Pid::from_child(&child);
    loop {
        if let Some(status) = child.try_wait().map_err(command_error)? {
            kill_descendants(me);
            return Ok(status);
        }
        let signal = forward.swap(0, Ordering::Relaxed);
        if signal != 0 {
            if let Some(signal) = i32::try_from(signal)
                .ok()
                .and_then(rustix::process::Signal::from_named_raw)
            {
                let _ = rustix::process::kill_process(pid, signal);
            }
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Kills every remaining child of `me` (orphans reparented to us as subreaper) until none is
/// left, reaping them.
fn kill_descendants(me: rustix::process::Pid) {
    for _ in 0..1000 {
        let children = children_of(me);
        if children.is_empty() {
            return;
        }
        for pid in children {
            log::debug!("stopping leftover process {}", pid.as_raw_nonzero());
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::KILL);
        }
        while let Ok(Some(_)) = rustix::process::waitpid(None, rustix::process::WaitOptions::NOHANG)
        {
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    log::warn!("leftover processes keep appearing; giving up");
}

/// Processes whose parent is `parent` (from `/proc/*/stat`).
fn children_of(parent: rustix::process::Pid) -> Vec<rustix::process::Pid> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let parent = parent.as_raw_nonzero().get();
    dir.filter_map(|entry| {
        let entry = entry.ok()?;
        let pid: i32 = entry.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
        // "pid (comm) state ppid ...": comm may contain spaces and parentheses.
        let after_comm = &stat[stat.rfind(')')? + 1..];
        let ppid: i32 = after_comm.split_whitespace().nth(1)?.parse().ok()?;
        (ppid == parent)
            .then(|| rustix::process::Pid::from_raw(pid))
            .flatten()
    })
    .collect()
}

/// Unmounts and, for FUSE, waits (briefly) for the server to see its filesystem go.
fn teardown(mountpoint: &Path, mount: RunMount) {
    if let Err(e) = rustix::mount::unmount(mountpoint, UnmountFlags::DETACH) {
        log::warn!("unmounting {}: {e}", mountpoint.display());
    }
    if let RunMount::Fuse(mounted) = mount {
        let stats = mounted.shared_stats();
        for _ in 0..200 {
            if mounted.is_finished() {
                let _ = mounted.wait();
                log::info!("server: {}", stats.summary());
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        log::info!("server: {}", stats.summary());
        log::debug!("server still running after unmount; exiting anyway");
    }
}

/// A new empty directory for the mount (only this namespace ever sees anything on it).
fn private_mountpoint() -> io::Result<PathBuf> {
    let base = std::env::var_os("XDG_RUNTIME_DIR")
        .map(PathBuf::from)
        .filter(|d| d.is_dir())
        .unwrap_or_else(std::env::temp_dir);
    let pid = std::process::id();
    for attempt in 0..100 {
        let dir = base.join(format!("lazycfs-run.{pid}.{attempt}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(io::Error::new(
                    e.kind(),
                    format!("creating a mountpoint in {}: {e}", base.display()),
                ));
            }
        }
    }
    Err(io::Error::other("no free mountpoint name"))
}
