//! The servers under comparison and their mount lifecycle.
//!
//! A FUSE server is a process `PROGRAM … IMAGE MOUNTPOINT BASEDIR …` serving in the foreground;
//! the kernel is EROFS mounted from the image file, alone or as the lower layer of an overlayfs
//! with the basedir as data-only layer (the composefs mount). A [`Mount`] guard unmounts and
//! kills the server when dropped, whatever happened.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use rustix::mount::{MountFlags, UnmountFlags, mount, unmount};

use crate::cleanup;
use crate::images::Image;

pub struct Server {
    /// Column label.
    pub name: &'static str,
    pub kind: Kind,
    /// Why it cannot run at all (not built, no `mount` subcommand), if it cannot.
    pub missing: Option<String>,
    /// Serves over FUSE-over-io_uring: needs the `fuse.enable_uring` module parameter set.
    pub uring: bool,
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

impl Server {
    /// Whether file content is served (plain EROFS only has the metadata of a composefs image).
    pub fn serves_data(&self) -> bool {
        !matches!(self.kind, Kind::Kernel { overlay: false })
    }

    pub fn is_fuse(&self) -> bool {
        matches!(self.kind, Kind::Fuse { .. })
    }

    /// Mounts `image` and waits until a deep `stat` answers; returns the mount and the time
    /// from exec (or the first mount syscall) to that answer.
    pub fn start(
        &self,
        image: &Image,
        dirs: &Dirs,
        timeout: Duration,
    ) -> anyhow::Result<(Mount, Duration)> {
        let probe = dirs.mountpoint.join(&image.probe);
        ensure_unmounted(&dirs.mountpoint)?;
        let mut start = Instant::now();
        let mut mount = Mount {
            mountpoints: Vec::new(),
            child: None,
            name: self.name,
            log: None,
        };
        match &self.kind {
            Kind::Kernel { overlay } => {
                let erofs_at = if *overlay {
                    &dirs.lower
                } else {
                    &dirs.mountpoint
                };
                ensure_unmounted(erofs_at)?;
                cleanup::starting(|| mount_erofs(&image.path, erofs_at))?;
                mount.mountpoints.push(erofs_at.clone());
                if *overlay {
                    cleanup::starting(|| {
                        mount_overlay(&dirs.lower, &dirs.basedir, &dirs.mountpoint)
                    })?;
                    mount.mountpoints.insert(0, dirs.mountpoint.clone());
                }
            }
            Kind::Fuse { program, args } => {
                let (log, log_path) = self.log_file(dirs)?;
                mount.log = Some((log_path, log.metadata()?.len()));
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
                let child = spawn_registered(&mut command, program)?;
                mount.child = Some(child);
                mount.mountpoints.push(dirs.mountpoint.clone());
            }
            Kind::Service { program, cached } => {
                let (log, log_path) = self.log_file(dirs)?;
                mount.log = Some((log_path, log.metadata()?.len()));
                let socket = dirs.tmp.join("service.sock");
                let mut command = Command::new(program);
                command
                    .args(["service", "--listen"])
                    .arg(&socket)
                    .stdin(Stdio::null())
                    .stdout(log.try_clone()?)
                    .stderr(log);
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
                let client = || -> anyhow::Result<()> {
                    let status = Command::new(program)
                        .args(["mount", "--mode", "service", "--service-socket"])
                        .arg(&socket)
                        .arg(&image.path)
                        .arg(&dirs.mountpoint)
                        .arg("--basedir")
                        .arg(&dirs.basedir)
                        .status()?;
                    anyhow::ensure!(status.success(), "{}: mount failed ({status})", self.name);
                    Ok(())
                };
                if *cached {
                    client()?;
                    unmount(&dirs.mountpoint, UnmountFlags::DETACH)?;
                }
                start = Instant::now();
                client()?;
                mount.mountpoints.push(dirs.mountpoint.clone());
            }
        }
        mount.wait_ready(&probe, start, timeout)?;
        Ok((mount, start.elapsed()))
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
            // Unmounting ends a FUSE session; kill whatever does not exit by itself.
            let deadline = Instant::now() + Duration::from_secs(2);
            while child.try_wait()?.is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(5));
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
fn mount_erofs(image: &Path, at: &Path) -> anyhow::Result<()> {
    mount(image, at, "erofs", MountFlags::RDONLY, None)
        .with_context(|| format!("mount -t erofs {} {}", image.display(), at.display()))
}

fn mount_overlay(lower: &Path, basedir: &Path, at: &Path) -> anyhow::Result<()> {
    let options = format!(
        "metacopy=on,redirect_dir=on,lowerdir={}::{}",
        lower.display(),
        basedir.display()
    );
    let options = std::ffi::CString::new(options)?;
    mount(
        "overlay",
        at,
        "overlay",
        MountFlags::RDONLY,
        Some(options.as_c_str()),
    )
    .with_context(|| format!("mount -t overlay -o {options:?} {}", at.display()))
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
