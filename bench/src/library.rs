//! The `lib-mount` helper: a mount made in-process, by a running program, as a library caller
//! (a container runtime linking lazycfs) or `mount.composefs` (the mount system calls) would
//! make it. The startup it reports leaves out what starting a program costs (exec, loading the
//! binary): that is the command rows' difference from these.
//!
//! The protocol, on the helper's standard input and output: the helper locks its mapped code
//! and data in memory (so that dropping the page cache leaves them, as they stay for a program
//! that has been running), prints `ready`, waits for a line `go` (the benchmark drops the page
//! cache in between for a cold start), then mounts, polls a deep `stat` until it answers,
//! prints the seconds from before the first call to that answer, unmounts and exits. An end of
//! its input instead of `go` ends it without mounting.

use std::io::{BufRead, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::{Args, ValueEnum};
use rustix::mount::{UnmountFlags, unmount};

use lazycfs::mount::overlay::OverlayMountOptions;
use lazycfs::mount::{Mounted, ServeOptions, Transport};

use crate::servers::{mount_erofs, mount_overlay};

/// What the helper mounts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LibKind {
    /// `mount(2)` of EROFS on the image at LOWER, then of the composefs overlayfs at MOUNTPOINT.
    Kernel,
    /// `mount(2)` of EROFS on the image at MOUNTPOINT.
    Erofs,
    /// `lazycfs::mount::mount` at MOUNTPOINT.
    Direct,
    /// `lazycfs::mount::mount_overlay` at MOUNTPOINT (the rootless stack).
    Overlay,
}

/// `--transport` of the lazycfs kinds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LibTransport {
    Dev,
    Uring,
}

#[derive(Args)]
pub struct LibMountArgs {
    #[arg(long, value_enum)]
    kind: LibKind,
    #[arg(long, value_enum, default_value_t = LibTransport::Dev)]
    transport: LibTransport,
    #[arg(long)]
    no_busy_poll: bool,
    /// Bound on the wait for the deep `stat`, in seconds.
    #[arg(long)]
    timeout: u64,
    image: PathBuf,
    mountpoint: PathBuf,
    /// Where the kernel kind mounts EROFS.
    lower: PathBuf,
    basedir: PathBuf,
    /// The deep path whose `stat` tells that the mount is served.
    probe: PathBuf,
}

/// A mount the helper made: unmounted when dropped.
enum Made {
    Kernel(Vec<PathBuf>),
    Lazycfs(Option<Mounted>),
}

impl Made {
    fn unmount(mut self) -> anyhow::Result<()> {
        match &mut self {
            Made::Kernel(mountpoints) => {
                for m in std::mem::take(mountpoints) {
                    unmount(&m, UnmountFlags::empty())
                        .with_context(|| format!("unmounting {}", m.display()))?;
                }
            }
            Made::Lazycfs(mounted) => {
                if let Some(mounted) = mounted.take() {
                    mounted.unmount().context("unmounting")?;
                }
            }
        }
        Ok(())
    }
}

impl Drop for Made {
    fn drop(&mut self) {
        // `Mounted` detaches itself when dropped.
        if let Made::Kernel(mountpoints) = self {
            for m in mountpoints.iter() {
                let _ = unmount(m, UnmountFlags::DETACH);
            }
        }
    }
}

pub fn lib_mount(args: &LibMountArgs) -> anyhow::Result<()> {
    use rustix::mm::{MlockAllFlags, mlockall};
    mlockall(MlockAllFlags::CURRENT).context("locking the helper in memory")?;
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "ready")?;
    stdout.flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if line.trim() != "go" {
        return Ok(());
    }

    let start = Instant::now();
    let made = make(args)?;
    let deadline = Duration::from_secs(args.timeout);
    while std::fs::symlink_metadata(&args.probe).is_err() {
        if start.elapsed() > deadline {
            bail!("{} not answering after {deadline:?}", args.probe.display());
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    let elapsed = start.elapsed();
    writeln!(stdout, "{}", elapsed.as_secs_f64())?;
    stdout.flush()?;
    made.unmount()
}

/// The timed calls: what a program calls to mount the image.
fn make(args: &LibMountArgs) -> anyhow::Result<Made> {
    let image = || {
        // The error names the image.
        lazycfs::erofs::Image::open(&args.image).map_err(|e| anyhow::anyhow!("{e}"))
    };
    let options = || {
        // What `lazycfs mount --mode direct|overlay --transport T [--no-busy-poll]` sets.
        let options = ServeOptions::new()
            .fsname(format!("lazycfs:{}", args.image.display()))
            .basedir(&args.basedir)
            .transport(match args.transport {
                LibTransport::Dev => Transport::Dev,
                LibTransport::Uring => Transport::Uring,
            });
        if args.no_busy_poll {
            options.busy_poll(false)
        } else {
            options
        }
    };
    Ok(match args.kind {
        LibKind::Kernel => {
            mount_erofs(&args.image, &args.lower)?;
            let mut made = vec![args.lower.clone()];
            let overlay = mount_overlay(&args.lower, &args.basedir, &args.mountpoint);
            if overlay.is_ok() {
                made.insert(0, args.mountpoint.clone());
            }
            let made = Made::Kernel(made);
            overlay?;
            made
        }
        LibKind::Erofs => {
            mount_erofs(&args.image, &args.mountpoint)?;
            Made::Kernel(vec![args.mountpoint.clone()])
        }
        LibKind::Direct => {
            let mounted = lazycfs::mount::mount(image()?, &args.mountpoint, &options())
                .with_context(|| format!("lazycfs::mount::mount {}", args.mountpoint.display()))?;
            Made::Lazycfs(Some(mounted))
        }
        LibKind::Overlay => {
            let mounted = lazycfs::mount::mount_overlay(
                image()?,
                &args.mountpoint,
                &options(),
                &OverlayMountOptions::new(),
            )
            .with_context(|| {
                format!(
                    "lazycfs::mount::mount_overlay {}",
                    args.mountpoint.display()
                )
            })?;
            Made::Lazycfs(Some(mounted))
        }
    })
}
