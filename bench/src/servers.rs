//! The servers under comparison and their mount lifecycle.
//!
//! A FUSE server is a process `PROGRAM … IMAGE MOUNTPOINT BASEDIR …` serving in the foreground;
//! the kernel is EROFS mounted from the image file, alone or as the lower layer of an overlayfs
//! with the basedir as data-only layer (the composefs mount). A [`Mount`] guard unmounts and
//! kills the server when dropped, whatever happened.
//!
//! Each server starts in up to two ways: as a command ([`Server::start`]: the server's process,
//! or `mount(8)` for the kernel, started from its file) and in-process
//! ([`Server::start_in_process`]: the lazycfs library call, or the mount system calls, made by a
//! running process, the `lib-mount` helper of [`crate::library`]).

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use rustix::mount::{MountFlags, UnmountFlags, mount, unmount};

use crate::cleanup;
use crate::images::Image;
use crate::measure::drop_caches;

pub struct Server {
    /// Column label.
    pub name: &'static str,
    pub kind: Kind,
    /// Why it cannot run at all (not built, no `mount` subcommand), if it cannot.
    pub missing: Option<String>,
    /// Serves over FUSE-over-io_uring: needs the `fuse.enable_uring` module parameter set.
    pub uring: bool,
    /// The same mount made in-process, when there is a library call for it (the kernel's
    /// mount system calls, the lazycfs library of this tree); `None` for the peers, the mount
    /// service and other lazycfs binaries.
    pub in_process: Option<InProcess>,
}

/// A mount made inside a running process: what the `lib-mount` helper does between its "go"
/// and the deep `stat` answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InProcess {
    /// `mount(2)` of EROFS on the image file; with `overlay`, then of the overlayfs on it.
    Kernel { overlay: bool },
    /// `lazycfs::mount::mount` (direct view), or `lazycfs::mount::mount_overlay` with
    /// `overlay` (the rootless stack `lazycfs mount --mode overlay` makes).
    Lazycfs {
        overlay: bool,
        uring: bool,
        busy_poll: bool,
    },
}

impl InProcess {
    /// The helper's arguments after `lib-mount`, besides the paths.
    pub fn args(self) -> Vec<&'static str> {
        match self {
            InProcess::Kernel { overlay: true } => vec!["--kind", "kernel"],
            InProcess::Kernel { overlay: false } => vec!["--kind", "erofs"],
            InProcess::Lazycfs {
                overlay,
                uring,
                busy_poll,
            } => {
                let mut args = vec![
                    "--kind",
                    if overlay { "overlay" } else { "direct" },
                    "--transport",
                    if uring { "uring" } else { "dev" },
                ];
                if !busy_poll {
                    args.push("--no-busy-poll");
                }
                args
            }
        }
    }
}

/// Whether a start finds the page cache empty (dropped just before the timed part) or as the
/// previous start left it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cache {
    Cold,
    Warm,
}

pub enum Kind {
    /// Kernel EROFS on the image file; with `overlay`, under an overlayfs
    /// (`metacopy=on,redirect_dir=on,lowerdir=EROFS::BASEDIR`).
    Kernel { overlay: bool },
    /// A FUSE server process.
    Fuse { program: PathBuf, args: Vec<Arg> },
    /// `lazycfs service` (started for the mount, not timed) and a `lazycfs mount --mode
    /// service` client: the kernel composefs mount of the service's rewrite of the image.
    /// With `cached`, an untimed mount and unmount first, so the timed one finds the rewrite
    /// in the service's cache.
    Service { program: PathBuf, cached: bool },
}

/// One argument of a FUSE server's command line.
pub enum Arg {
    Image,
    Mountpoint,
    Basedir,
    Literal(&'static str),
}

/// Where servers mount and log.
pub struct Dirs {
    pub mountpoint: PathBuf,
    /// The kernel overlay's EROFS lower layer.
    pub lower: PathBuf,
    pub basedir: PathBuf,
    pub logs: PathBuf,
    /// `$TMPDIR` of the servers (composefs-fuse 0.7 makes its repository there).
    pub tmp: PathBuf,
}

impl Dirs {
    /// Where the kernel rows mount EROFS: under the overlay, or as the mount itself.
    fn erofs_mountpoint(&self, overlay: bool) -> &PathBuf {
        if overlay {
            &self.lower
        } else {
            &self.mountpoint
        }
    }
}

impl Server {
    /// Whether file content is served (plain EROFS only has the metadata of a composefs image).
    pub fn serves_data(&self) -> bool {
        !matches!(self.kind, Kind::Kernel { overlay: false })
    }

    pub fn is_fuse(&self) -> bool {
        matches!(self.kind, Kind::Fuse { .. })
    }

    /// Mounts `image` for the workloads and waits until a deep `stat` answers; returns the
    /// mount and the time until that answer. A FUSE server or the service starts as a command
    /// ([`start_command`](Self::start_command)); the kernel is mounted with the mount system
    /// calls from this process (file-backed EROFS). With [`Cache::Cold`] the page cache is
    /// dropped just before.
    pub fn start(
        &self,
        image: &Image,
        dirs: &Dirs,
        timeout: Duration,
        cache: Cache,
    ) -> anyhow::Result<(Mount, Duration)> {
        let Kind::Kernel { overlay } = self.kind else {
            return self.start_command(image, dirs, timeout, cache);
        };
        let probe = dirs.mountpoint.join(&image.probe);
        let erofs_at = dirs.erofs_mountpoint(overlay);
        ensure_unmounted(&dirs.mountpoint)?;
        ensure_unmounted(erofs_at)?;
        let mut mount = Mount::new(self.name, Vec::new(), None);
        if cache == Cache::Cold {
            drop_caches()?;
        }
        let start = Instant::now();
        cleanup::starting(|| mount_erofs(&image.path, erofs_at))?;
        mount.mountpoints.push(erofs_at.clone());
        if overlay {
            cleanup::starting(|| mount_overlay(&dirs.lower, &dirs.basedir, &dirs.mountpoint))?;
            mount.mountpoints.insert(0, dirs.mountpoint.clone());
        }
        mount.wait_ready(&probe, start, timeout)?;
        Ok((mount, start.elapsed()))
    }

    /// Mounts `image` as a command and waits until a deep `stat` answers; returns the mount and
    /// the time from the spawn of the first process (the server, the service's client, or the
    /// first `mount(8)` for the kernel) to that answer. With [`Cache::Cold`] the page cache is
    /// dropped just before.
    pub fn start_command(
        &self,
        image: &Image,
        dirs: &Dirs,
        timeout: Duration,
        cache: Cache,
    ) -> anyhow::Result<(Mount, Duration)> {
        let probe = dirs.mountpoint.join(&image.probe);
        ensure_unmounted(&dirs.mountpoint)?;
        let (log, log_path) = self.log_file(dirs)?;
        let log_start = Some((log_path, log.metadata()?.len()));
        let mut mount = Mount::new(self.name, Vec::new(), log_start);
        let start = match &self.kind {
            Kind::Kernel { overlay } => {
                let erofs_at = dirs.erofs_mountpoint(*overlay);
                ensure_unmounted(erofs_at)?;
                if cache == Cache::Cold {
                    drop_caches()?;
                }
                // Two processes, as from a shell: EROFS (util-linux's `mount` puts an image file
                // on a loop device, as `mount.composefs` does), then the overlay.
                let start = Instant::now();
                let mut erofs = Command::new("mount");
                erofs
                    .args(["-t", "erofs", "-o", "ro"])
                    .arg(&image.path)
                    .arg(erofs_at);
                run_to_end(&mut erofs, &log, &mount, timeout)?;
                mount.mountpoints.push(erofs_at.clone());
                if *overlay {
                    let mut overlay = Command::new("mount");
                    overlay
                        .args(["-t", "overlay", "overlay", "-o"])
                        .arg(overlay_options("ro,", &dirs.lower, &dirs.basedir))
                        .arg(&dirs.mountpoint);
                    run_to_end(&mut overlay, &log, &mount, timeout)?;
                    mount.mountpoints.insert(0, dirs.mountpoint.clone());
                }
                start
            }
            Kind::Fuse { program, args } => {
                let mut command = Command::new(program);
                command
                    .args(args.iter().map(|a| match a {
                        Arg::Image => image.path.clone().into_os_string(),
                        Arg::Mountpoint => dirs.mountpoint.clone().into_os_string(),
                        Arg::Basedir => dirs.basedir.clone().into_os_string(),
                        Arg::Literal(s) => OsString::from(s),
                    }))
                    .env("TMPDIR", &dirs.tmp)
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log);
                if cache == Cache::Cold {
                    drop_caches()?;
                }
                let start = Instant::now();
                let child = spawn_registered(&mut command, program)?;
                mount.child = Some(child);
                mount.mountpoints.push(dirs.mountpoint.clone());
                start
            }
            Kind::Service { program, cached } => {
                let socket = dirs.tmp.join("service.sock");
                let mut command = Command::new(program);
                command
                    .args(["service", "--listen"])
                    .arg(&socket)
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log.try_clone()?);
                let child = spawn_registered(&mut command, program)?;
                mount.child = Some(child);
                let listening = Instant::now();
                while std::os::unix::net::UnixStream::connect(&socket).is_err() {
                    if listening.elapsed() > timeout {
                        bail!(
                            "{}: the service does not answer on {}",
                            self.name,
                            socket.display()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(1));
                }
                let client = || {
                    let mut client = Command::new(program);
                    client
                        .args(["mount", "--mode", "service", "--service-socket"])
                        .arg(&socket)
                        .arg(&image.path)
                        .arg(&dirs.mountpoint)
                        .arg("--basedir")
                        .arg(&dirs.basedir);
                    client
                };
                if *cached {
                    run_to_end(&mut client(), &log, &mount, timeout)?;
                    unmount(&dirs.mountpoint, UnmountFlags::DETACH)?;
                }
                // After the service's start and the untimed mount: the client finds the page
                // cache cold (but for what the running service maps, and its memfd).
                if cache == Cache::Cold {
                    drop_caches()?;
                }
                let start = Instant::now();
                run_to_end(&mut client(), &log, &mount, timeout)?;
                mount.mountpoints.push(dirs.mountpoint.clone());
                start
            }
        };
        mount.wait_ready(&probe, start, timeout)?;
        Ok((mount, start.elapsed()))
    }

    /// Mounts `image` in-process (see [`InProcess`]) in a `lib-mount` helper (this program),
    /// and returns the time the helper measured from its library call (or first mount system
    /// call) to the deep `stat` answering; the helper then unmounts and exits. The helper
    /// locks its code in memory before [`Cache::Cold`] drops the page cache: a library caller
    /// is a running program. `None` when the server has no in-process form.
    pub fn start_in_process(
        &self,
        image: &Image,
        dirs: &Dirs,
        timeout: Duration,
        cache: Cache,
    ) -> anyhow::Result<Option<Duration>> {
        let Some(in_process) = self.in_process else {
            return Ok(None);
        };
        ensure_unmounted(&dirs.mountpoint)?;
        ensure_unmounted(&dirs.lower)?;
        let (log, log_path) = self.log_file(dirs)?;
        let mut mountpoints = vec![dirs.mountpoint.clone()];
        if in_process == (InProcess::Kernel { overlay: true }) {
            mountpoints.push(dirs.lower.clone());
        }
        let log_start = Some((log_path, log.metadata()?.len()));
        let mut mount = Mount::new(self.name, mountpoints, log_start);
        let helper = std::env::current_exe().context("finding the benchmark's executable")?;
        let mut command = Command::new(&helper);
        command
            .arg("lib-mount")
            .args(in_process.args())
            .arg("--timeout")
            .arg(timeout.as_secs().to_string())
            .arg(&image.path)
            .arg(&dirs.mountpoint)
            .arg(&dirs.lower)
            .arg(&dirs.basedir)
            .arg(dirs.mountpoint.join(&image.probe))
            .env("TMPDIR", &dirs.tmp)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(log);
        let mut child = spawn_registered(&mut command, &helper)?;
        let pid = child.id();
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        mount.child = Some(child);
        // The helper bounds its own waits by `timeout`; this ends it if it hangs anyway.
        let _watchdog = cleanup::Watchdog::new(pid, timeout + Duration::from_secs(10));
        let (Some(mut stdin), Some(stdout)) = (stdin, stdout) else {
            bail!("{}: the lib-mount helper has no pipes", self.name);
        };
        let mut stdout = BufReader::new(stdout);
        let mut line = String::new();
        let mut answer = |what: &str| -> anyhow::Result<String> {
            line.clear();
            stdout.read_line(&mut line)?;
            if line.is_empty() {
                bail!(
                    "{}: the lib-mount helper ended before {what}{}",
                    self.name,
                    mount
                        .last_log_line()
                        .map(|l| format!(": {l}"))
                        .unwrap_or_default()
                );
            }
            Ok(line.trim().to_string())
        };
        let ready = answer("it was ready")?;
        ensure!(
            ready == "ready",
            "{}: lib-mount helper said {ready:?}",
            self.name
        );
        if cache == Cache::Cold {
            drop_caches()?;
        }
        writeln!(stdin, "go").context("starting the lib-mount helper")?;
        let elapsed = answer("the mount answered")?;
        let seconds: f64 = elapsed
            .parse()
            .with_context(|| format!("{}: lib-mount helper said {elapsed:?}", self.name))?;
        drop(stdin);
        // The helper unmounts and exits by itself.
        if let Some(mut child) = mount.child.take() {
            let status = child.wait()?;
            cleanup::unregister_child(child.id());
            ensure!(
                status.success(),
                "{}: the lib-mount helper failed ({status}){}",
                self.name,
                mount
                    .last_log_line()
                    .map(|l| format!(": {l}"))
                    .unwrap_or_default()
            );
        }
        mount.mountpoints.retain(|m| cleanup::is_mountpoint(m));
        ensure!(
            mount.mountpoints.is_empty(),
            "{}: the lib-mount helper left {} mounted",
            self.name,
            mount.mountpoints[0].display()
        );
        Ok(Some(Duration::from_secs_f64(seconds)))
    }

    fn log_file(&self, dirs: &Dirs) -> anyhow::Result<(File, PathBuf)> {
        fs::create_dir_all(&dirs.logs)?;
        let path = dirs
            .logs
            .join(format!("{}.log", self.name.replace([' ', '/'], "_")));
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        Ok((file, path))
    }
}

/// A mounted image; unmounted (and its server killed) on drop.
pub struct Mount {
    name: &'static str,
    /// Outermost first.
    mountpoints: Vec<PathBuf>,
    child: Option<Child>,
    /// The server's log and its length before the server started.
    log: Option<(PathBuf, u64)>,
}

impl Mount {
    /// A mount of server `name` on `mountpoints` (outermost first), no process yet, whose log
    /// is `log` from its given length on.
    fn new(name: &'static str, mountpoints: Vec<PathBuf>, log: Option<(PathBuf, u64)>) -> Mount {
        Mount {
            name,
            mountpoints,
            child: None,
            log,
        }
    }

    /// The server's peak resident set (VmHWM), in bytes; `None` for the kernel.
    pub fn peak_rss(&self) -> Option<u64> {
        self.status_bytes("VmHWM:")
    }

    /// The server's anonymous resident memory (RssAnon), in bytes; `None` for the kernel.
    pub fn anon_rss(&self) -> Option<u64> {
        self.status_bytes("RssAnon:")
    }

    /// A `kB` field of `/proc/PID/status`, in bytes.
    fn status_bytes(&self, field: &str) -> Option<u64> {
        let pid = self.child.as_ref()?.id();
        let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with(field))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }

    /// User plus system CPU seconds the server has used so far.
    pub fn cpu_time(&self) -> Option<f64> {
        self.user_and_system_time()
            .map(|(user, system)| user + system)
    }

    /// The user and the system CPU seconds the server has used so far (10 ms resolution).
    pub fn user_and_system_time(&self) -> Option<(f64, f64)> {
        let pid = self.child.as_ref()?.id();
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // The fields after the command name (which may hold spaces) start at `state`.
        let fields: Vec<&str> = stat[stat.rfind(')')? + 2..].split(' ').collect();
        let ticks = |i: usize| fields.get(i)?.parse::<u64>().ok();
        // USER_HZ is 100 on Linux.
        Some((ticks(11)? as f64 / 100.0, ticks(12)? as f64 / 100.0))
    }

    /// Polls `stat(probe)` until it succeeds. A stat the server never answers is ended by a
    /// watchdog that kills the server at the deadline.
    fn wait_ready(
        &mut self,
        probe: &Path,
        start: Instant,
        timeout: Duration,
    ) -> anyhow::Result<()> {
        let _watchdog = self
            .child
            .as_ref()
            .map(|c| cleanup::Watchdog::new(c.id(), timeout));
        loop {
            if fs::symlink_metadata(probe).is_ok() {
                return Ok(());
            }
            if let Some(child) = &mut self.child
                && let Some(status) = child.try_wait()?
            {
                cleanup::unregister_child(child.id());
                self.child = None;
                bail!(
                    "{} exited ({status}) before serving {}{}",
                    self.name,
                    probe.display(),
                    self.last_log_line()
                        .map(|l| format!(": {l}"))
                        .unwrap_or_default()
                );
            }
            if start.elapsed() > timeout {
                bail!(
                    "{}: {} not answering after {timeout:?}",
                    self.name,
                    probe.display()
                );
            }
            std::thread::sleep(Duration::from_micros(200));
        }
    }

    /// Why the server failed, from what it logged since it started: its last line saying
    /// "error" (clap ends its messages with a usage hint), else its last line.
    fn last_log_line(&self) -> Option<String> {
        let (path, start) = self.log.as_ref()?;
        let log = fs::read(path).ok()?;
        let log = String::from_utf8_lossy(log.get(*start as usize..)?);
        let mut lines = log.lines().rev().map(str::trim).filter(|l| !l.is_empty());
        let line = lines
            .clone()
            .find(|l| l.to_lowercase().contains("error"))
            .or_else(|| lines.next())?;
        Some(line.to_string())
    }

    /// Unmounts and stops the server.
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.teardown()
    }

    fn teardown(&mut self) -> anyhow::Result<()> {
        let mut result = Ok(());
        for mountpoint in self.mountpoints.drain(..) {
            match unmount(&mountpoint, UnmountFlags::DETACH) {
                Ok(()) => {}
                // Seen once with composefs-fuse 0.7, not reproduced: the mount was gone.
                Err(rustix::io::Errno::INVAL) => {
                    eprintln!(
                        "bench: {}: {} was no longer mounted",
                        self.name,
                        mountpoint.display()
                    );
                }
                Err(e) => {
                    result = Err(e).with_context(|| format!("unmounting {}", mountpoint.display()));
                }
            }
        }
        if let Some(mut child) = self.child.take() {
            // Unmounting ends a FUSE session, but not the servers that keep a reference to
            // their mount (a mount file descriptor) nor the service: after a short grace,
            // SIGTERM, then SIGKILL for whatever still runs.
            let exited = |child: &mut Child, grace: Duration| {
                let deadline = Instant::now() + grace;
                loop {
                    match child.try_wait() {
                        Ok(Some(_)) => return true,
                        Ok(None) if Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(5))
                        }
                        _ => return false,
                    }
                }
            };
            if !exited(&mut child, Duration::from_millis(200)) {
                if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                    let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
                }
                exited(&mut child, Duration::from_secs(2));
            }
            let _ = child.kill();
            let _ = child.wait();
            cleanup::unregister_child(child.id());
        }
        result
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.teardown() {
            eprintln!("bench: {}: {e:#}", self.name);
        }
    }
}

/// EROFS straight on the image file (file-backed mount, kernel 6.12+).
pub fn mount_erofs(image: &Path, at: &Path) -> anyhow::Result<()> {
    mount(image, at, "erofs", MountFlags::RDONLY, None)
        .with_context(|| format!("mount -t erofs {} {}", image.display(), at.display()))
}

/// The composefs overlay on the EROFS at `lower`, with `basedir` as data-only layer.
pub fn mount_overlay(lower: &Path, basedir: &Path, at: &Path) -> anyhow::Result<()> {
    let options = std::ffi::CString::new(overlay_options("", lower, basedir))?;
    mount(
        "overlay",
        at,
        "overlay",
        MountFlags::RDONLY,
        Some(options.as_c_str()),
    )
    .with_context(|| format!("mount -t overlay -o {options:?} {}", at.display()))
}

/// The composefs overlay's options, after `prefix`.
fn overlay_options(prefix: &str, lower: &Path, basedir: &Path) -> String {
    format!(
        "{prefix}metacopy=on,redirect_dir=on,lowerdir={}::{}",
        lower.display(),
        basedir.display()
    )
}

/// Runs `command` (a `mount(8)`, its output to `log`) to its end, killed after `timeout`;
/// fails on a non-zero exit with the last line it logged.
fn run_to_end(
    command: &mut Command,
    log: &File,
    mount: &Mount,
    timeout: Duration,
) -> anyhow::Result<()> {
    let program = PathBuf::from(command.get_program());
    let line: Vec<String> = std::iter::once(command.get_program())
        .chain(command.get_args())
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log.try_clone()?);
    let mut child = spawn_registered(command, &program)?;
    let status = {
        let _watchdog = cleanup::Watchdog::new(child.id(), timeout);
        child.wait()
    };
    cleanup::unregister_child(child.id());
    let status = status.with_context(|| format!("waiting for {}", line.join(" ")))?;
    ensure!(
        status.success(),
        "{} failed ({status}){}",
        line.join(" "),
        mount
            .last_log_line()
            .map(|l| format!(": {l}"))
            .unwrap_or_default()
    );
    Ok(())
}

/// Detaches whatever a previous (crashed) run left mounted at `path`.
fn ensure_unmounted(path: &Path) -> anyhow::Result<()> {
    fs::create_dir_all(path).ok();
    while cleanup::is_mountpoint(path) {
        unmount(path, UnmountFlags::DETACH)
            .with_context(|| format!("unmounting stale {}", path.display()))?;
    }
    Ok(())
}

/// Starts `command` (running `program`) and registers it for the cleanup after a crash.
fn spawn_registered(command: &mut Command, program: &Path) -> anyhow::Result<Child> {
    cleanup::starting(|| {
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", program.display()))?;
        cleanup::register_child(child.id());
        Ok(child)
    })
}
