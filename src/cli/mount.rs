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
    if let Some(why) = use_service(&args) {
        if verbose {
            eprintln!("lazycfs: mode service: {why}");
        }
        return mount_service(&args);
    }
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

/// Why the mount goes through the mount service, or `None` when it does not: asked for, or
/// `--mode auto` for a caller that is not root in the initial namespace, with a basedir, no upper directory and a service
/// that answers (`-v` says why not, and the mount falls back to FUSE).
fn use_service(args: &MountArgs) -> Option<&'static str> {
    match args.mode {
        ModeArg::Service => return Some("requested"),
        ModeArg::Auto => {}
        _ => return None,
    }
    if Privilege::detect().ok()? == Privilege::InitialRoot
        || args.basedir.is_none()
        || args.serve.upper.is_some()
    {
        return None;
    }
    match lazycfs::service::client::answers(&args.service.service_socket) {
        Ok(()) => Some("not root, and the mount service answers: kernel EROFS + overlayfs"),
        Err(e) => {
            log::info!("not using the mount service: {e}");
            None
        }
    }
}

/// `--mode service`: the mount service mounts the image for us (the kernel's composefs
/// mount); nothing stays running here.
fn mount_service(args: &MountArgs) -> Result<ExitCode, ExitCode> {
    let Some(basedir) = &args.basedir else {
        eprintln!("lazycfs: the service mode needs --basedir");
        return Err(ExitCode::from(USAGE_ERROR));
    };
    if args.serve.upper.is_some() {
        eprintln!("lazycfs: the service mode makes read-only mounts: no --upper");
        return Err(ExitCode::from(USAGE_ERROR));
    }
    let digest = match &args.digest {
        Some(hex) => Some(lazycfs::service::parse_digest(hex).map_err(|e| {
            eprintln!("lazycfs: --digest: {e}");
            ExitCode::from(USAGE_ERROR)
        })?),
        None => None,
    };
    let request = lazycfs::service::client::MountRequest::new()
        .digest(digest)
        .require_verity(args.serve.verity == super::args::VerityMode::Require);
    match lazycfs::service::client::mount(
        &args.service.service_socket,
        &args.image,
        basedir,
        &args.mountpoint,
        &request,
    ) {
        Ok(()) => {
            if args.foreground {
                println!("{READY}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("lazycfs: mount {}: {e}", args.mountpoint.display());
            Err(ExitCode::from(1))
        }
    }
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
        ModeArg::Service => unreachable!("handled by mount_service"),
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

/// `lazycfs umount`: unmounts any lazycfs mount (FUSE, overlay or kernel); a mount the mount
/// service made is unmounted by the service unless we are root.
pub fn umount(mountpoint: &Path, service_socket: &Path) -> Result<ExitCode, ExitCode> {
    let by_service = !rustix::process::geteuid().is_root() && is_service_mount(mountpoint);
    let result = if by_service {
        lazycfs::service::client::unmount(service_socket, mountpoint).map_err(io::Error::other)
    } else {
        lazycfs::mount::unmount(mountpoint)
    };
    match result {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("lazycfs umount: {}: {e}", mountpoint.display());
            Err(ExitCode::from(1))
        }
    }
}

/// Whether the mount on `mountpoint` is one the mount service made (its source, in our
/// mountinfo).
fn is_service_mount(mountpoint: &Path) -> bool {
    use rustix::fs::{AtFlags, StatxFlags};
    let Ok(stat) = rustix::fs::statx(
        rustix::fs::CWD,
        mountpoint,
        AtFlags::empty(),
        StatxFlags::MNT_ID,
    ) else {
        return false;
    };
    let id = stat.stx_mnt_id.to_string();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|line| line.split(' ').next() == Some(id.as_str()))
        .filter_map(|line| line.split_once(" - ")?.1.split(' ').nth(1))
        .any(lazycfs::service::is_service_source)
}
