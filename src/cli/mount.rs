//! `lazycfs mount` and `lazycfs umount`.

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use lazycfs::mount::mode::{Mode, Privilege, Wants};
use lazycfs::mount::overlay::{OverlayMountOptions, mount_kernel_composefs, mount_kernel_erofs};
use lazycfs::mount::{Mounted, ServeOptions};

use super::args::{ModeArg, MountArgs};
use super::{USAGE_ERROR, check_basedir, open_image};

/// Marker the foreground server prints on stdout once the mount answers.
const READY: &str = "lazycfs: ready";

pub fn mount(args: MountArgs, verbose: bool) -> Result<ExitCode, ExitCode> {
    let image = open_image(&args.image, USAGE_ERROR)?;
    check_basedir(args.basedir.as_deref(), USAGE_ERROR)?;
    if let Some(hex) = &args.digest {
        check_digest(&args.image, hex)?;
    }
    let mode = choose_mode(&args)?;
    // A daemon says it itself: its start-up log is relayed.
    let daemon = !args.foreground && mode.0 != Mode::Kernel;
    if verbose && !daemon {
        eprintln!("lazycfs: mode {}: {}", mode.0.name(), mode.1);
    }
    let mode = mode.0;
    let overlay = args.serve.overlay();
    let object_check = match &args.basedir {
        Some(basedir) if !args.serve.no_object_check => {
            Some(super::warn_missing_objects(&args.image, basedir))
        }
        _ => None,
    };
    if mode == Mode::Kernel {
        let mounted = mount_kernel(&args, &overlay);
        object_check.map(std::thread::JoinHandle::join);
        return mounted;
    }
    if !args.foreground {
        drop(image);
        let mounted = daemonize();
        // The server does not count again (--no-object-check below): the warning is ours.
        object_check.map(std::thread::JoinHandle::join);
        return Ok(mounted);
    }
    let mut options = ServeOptions::new().fsname(format!("lazycfs:{}", args.image.display()));
    if let Some(dir) = &args.basedir {
        options = options.basedir(dir);
    }
    if args.allow_other {
        options = options.allow_other(true);
    }
    options = args.serve.apply(options).time_requests(verbose);
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            eprintln!("lazycfs: signals: {e}");
            return Err(ExitCode::from(1));
        }
    }
    let mounted = if mode == Mode::Overlay {
        lazycfs::mount::mount_overlay(image, &args.mountpoint, &options, &overlay)
    } else {
        lazycfs::mount::mount(image, &args.mountpoint, &options)
    };
    let mounted = mounted.map_err(|e| {
        eprintln!("lazycfs: mount {}: {e}", args.mountpoint.display());
        ExitCode::from(1)
    })?;
    println!("{READY}");
    let _ = io::stdout().flush();
    notify_ready(None);
    log::info!(
        "serving {} on {} ({} mode)",
        args.image.display(),
        args.mountpoint.display(),
        mode.name()
    );
    serve_until_stopped(mounted, &stop)
}

/// The mode to use, or a one-line error (exit 2) when the requested one cannot work.
fn choose_mode(args: &MountArgs) -> Result<(Mode, &'static str), ExitCode> {
    let fail = |why: String| {
        eprintln!("lazycfs: {why}");
        ExitCode::from(USAGE_ERROR)
    };
    let privilege = Privilege::detect().map_err(|e| fail(e.to_string()))?;
    let requested = match args.mode {
        ModeArg::Auto => None,
        ModeArg::Direct => Some(Mode::Direct),
        ModeArg::Overlay => Some(Mode::Overlay),
        ModeArg::Kernel => Some(Mode::Kernel),
    };
    let wants = Wants {
        basedir: args.basedir.is_some(),
        upper: args.serve.upper.is_some(),
    };
    Mode::resolve(requested, privilege, wants).map_err(|e| fail(e.to_string()))
}

/// Kernel EROFS (+ overlayfs with the basedir): no server, so nothing stays running.
fn mount_kernel(args: &MountArgs, overlay: &OverlayMountOptions) -> Result<ExitCode, ExitCode> {
    let detached = match &args.basedir {
        Some(basedir) => mount_kernel_composefs(&args.image, basedir, overlay),
        None => mount_kernel_erofs(&args.image),
    };
    match detached.and_then(|m| m.attach(&args.mountpoint)) {
        Ok(()) => {
            if args.foreground {
                println!("{READY}");
            }
            notify_ready(None);
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("lazycfs: mount {}: {e}", args.mountpoint.display());
            Err(ExitCode::from(1))
        }
    }
}

fn serve_until_stopped(mounted: Mounted, stop: &AtomicBool) -> Result<ExitCode, ExitCode> {
    while !stop.load(Ordering::Relaxed) && !mounted.is_finished() {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let stats = mounted.shared_stats();
    let (what, result) = if mounted.is_finished() {
        ("server", mounted.wait())
    } else {
        log::info!("signal received, unmounting");
        ("unmount", mounted.unmount())
    };
    log::info!("server: {}", stats.summary());
    if let Some((cpu, op)) = stats.slowest_request() {
        log::info!(
            "slowest request: {op}, {} µs of server CPU time",
            cpu.as_micros()
        );
    }
    result.map(|()| ExitCode::SUCCESS).map_err(|e| {
        eprintln!("lazycfs: {what}: {e}");
        ExitCode::from(1)
    })
}

/// Exit 2 unless the image's fs-verity digest is `hex`.
fn check_digest(image: &Path, hex: &str) -> Result<(), ExitCode> {
    let fail = |why: String| {
        eprintln!("lazycfs: {}: {why}", image.display());
        ExitCode::from(USAGE_ERROR)
    };
    let actual = lazycfs::mount::image_verity_digest(image)
        .map_err(|e| fail(format!("cannot measure fs-verity digest: {e}")))?;
    let actual: String = actual.iter().map(|b| format!("{b:02x}")).collect();
    if !actual.eq_ignore_ascii_case(hex) {
        return Err(fail(format!(
            "fs-verity digest {actual} differs from --digest {hex}"
        )));
    }
    Ok(())
}

/// Re-runs this command with `--foreground` in a new session and returns once it reports the
/// mount ready (exit 0) or fails (its error line, exit 1).
fn daemonize() -> ExitCode {
    use std::io::BufRead;
    use std::os::unix::process::CommandExt;
    let Ok(exe) = std::env::current_exe() else {
        eprintln!("lazycfs: cannot find own executable");
        return ExitCode::from(1);
    };
    let mut child = match std::process::Command::new(exe)
        .args(std::env::args_os().skip(1))
        .args(["--foreground", "--no-object-check"])
        // Readiness is ours to report, naming the server as the service's main process.
        .env_remove("NOTIFY_SOCKET")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        // Not inherited: a daemon must not hold the caller's stderr open (a caller reading it
        // to the end would wait forever). Startup errors are relayed below.
        .stderr(std::process::Stdio::piped())
        .process_group(0)
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            eprintln!("lazycfs: cannot start server: {e}");
            return ExitCode::from(1);
        }
    };
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    let _ = io::BufReader::new(stdout).read_line(&mut line);
    if line.trim_end() == READY {
        // What the server logged while starting (with -v: the transport and why).
        if let Some(stderr) = child.stderr.take() {
            relay_available(stderr);
        }
        notify_ready(Some(child.id()));
        return ExitCode::SUCCESS;
    }
    let mut errors = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = io::Read::read_to_string(&mut stderr, &mut errors);
    }
    eprint!("{errors}");
    let status = child.wait().ok().and_then(|s| s.code()).unwrap_or(1);
    ExitCode::from(status.clamp(1, 255) as u8)
}

/// Tells systemd the mount is ready, when it asked (`NOTIFY_SOCKET`, for `Type=notify`
/// services), naming the server as the main process if it is not this one.
fn notify_ready(server: Option<u32>) {
    use sd_notify::NotifyState;
    let result = match server {
        Some(pid) => sd_notify::notify(&[NotifyState::Ready, NotifyState::MainPid(pid)]),
        None => sd_notify::notify(&[NotifyState::Ready]),
    };
    if let Err(e) = result {
        log::warn!("cannot notify systemd of readiness: {e}");
    }
}

/// Copies to our stderr what `pipe` holds now, without waiting for more.
fn relay_available(mut pipe: std::process::ChildStderr) {
    use std::io::Read;
    let flags = rustix::fs::fcntl_getfl(&pipe).unwrap_or(rustix::fs::OFlags::empty());
    if rustix::fs::fcntl_setfl(&pipe, flags | rustix::fs::OFlags::NONBLOCK).is_err() {
        return;
    }
    let mut logged = Vec::new();
    let _ = pipe.read_to_end(&mut logged);
    let _ = io::stderr().write_all(&logged);
}

/// `lazycfs umount`: unmounts any lazycfs mount (FUSE, overlay or kernel).
pub fn umount(mountpoint: &Path) -> Result<ExitCode, ExitCode> {
    match lazycfs::mount::unmount(mountpoint) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("lazycfs umount: {}: {e}", mountpoint.display());
            Err(ExitCode::from(1))
        }
    }
}
