//! `lazycfs run`: a command in a private mount of an image.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use lazycfs::mount::ServeOptions;
use lazycfs::mount::sandbox::{RunError, RunOptions, enter_private_namespaces};
use std::io::ErrorKind;

use super::args::{RunArgs, RunModeArg};
use super::{check_basedir, open_image};
use lazycfs::mount::mode::Privilege;
use std::path::PathBuf;

/// Exit status when `lazycfs run` itself fails (as `podman run`/`env` do: 125), when the
/// command cannot be executed (126) or is not found (127).
const RUN_FAILED: u8 = 125;
const NOT_EXECUTABLE: u8 = 126;
const NOT_FOUND: u8 = 127;

/// The mount service's socket when the run mounts through it (`None`: it mounts itself), or
/// why the requested mode cannot be.
fn run_mode(args: &RunArgs, privilege: Privilege) -> Result<Option<PathBuf>, &'static str> {
    let root = privilege == Privilege::InitialRoot;
    let service = Some(args.service.service_socket.clone());
    match args.mode {
        RunModeArg::Kernel if !root => Err("the kernel mode needs root in the initial namespace"),
        RunModeArg::Overlay if root => Err("as root, `run` mounts with the kernel (--mode kernel)"),
        RunModeArg::Kernel | RunModeArg::Overlay => Ok(None),
        RunModeArg::Service if args.serve.upper.is_some() => {
            Err("the service mode makes read-only mounts: no --upper")
        }
        RunModeArg::Service => {
            log::info!("mode service: requested");
            Ok(service)
        }
        RunModeArg::Auto if root || args.serve.upper.is_some() => Ok(None),
        RunModeArg::Auto => match lazycfs::service::client::answers(&args.service.service_socket) {
            Ok(()) => {
                log::info!(
                    "mode service: not root, and the mount service answers: kernel EROFS + \
                     overlayfs in this run's namespaces"
                );
                Ok(service)
            }
            Err(e) => {
                log::info!("not using the mount service: {e}");
                Ok(None)
            }
        },
    }
}

pub fn run(args: RunArgs) -> Result<ExitCode, ExitCode> {
    let image = open_image(&args.image, RUN_FAILED)?;
    check_basedir(Some(&args.basedir), RUN_FAILED)?;
    let fail = |e: std::io::Error| {
        eprintln!("lazycfs run: {e}");
        ExitCode::from(RUN_FAILED)
    };
    // First, while this process still has one thread.
    let privilege = enter_private_namespaces().map_err(fail)?;
    log::info!("entered private namespaces (caller was {privilege:?})");
    let object_check = (!args.serve.no_object_check)
        .then(|| super::warn_missing_objects(&args.image, &args.basedir));
    let forward = Arc::new(AtomicUsize::new(0));
    for signal in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register_usize(signal, forward.clone(), signal as usize)
            .map_err(&fail)?;
    }
    let serve = args.serve.apply(
        ServeOptions::new()
            .basedir(&args.basedir)
            .allow_other(false)
            .fsname(format!("lazycfs:{}", args.image.display())),
    );
    let service = run_mode(&args, privilege).map_err(|why| {
        eprintln!("lazycfs run: {why}");
        ExitCode::from(RUN_FAILED)
    })?;
    let options = RunOptions::new(serve)
        .overlay(args.serve.overlay())
        .chroot(args.chroot)
        .service(service);
    let (command, command_args) = args
        .command
        .split_first()
        .expect("the parser requires a command");
    let status = lazycfs::mount::sandbox::run(
        image,
        &args.image,
        privilege,
        &options,
        command,
        command_args,
        &forward,
    );
    // The warning is printed even if the command ended first.
    object_check.map(std::thread::JoinHandle::join);
    match status {
        Ok(status) => {
            let code = match (status.code(), status.signal()) {
                (Some(code), _) => code,
                // As shells report it.
                (None, Some(signal)) => 128 + signal,
                (None, None) => i32::from(RUN_FAILED),
            };
            Ok(ExitCode::from(code.clamp(0, 255) as u8))
        }
        Err(e) => {
            eprintln!("lazycfs run: {e}");
            Err(ExitCode::from(match &e {
                RunError::Command { error, .. } if error.kind() == ErrorKind::NotFound => NOT_FOUND,
                RunError::Command { error, .. } if error.kind() == ErrorKind::PermissionDenied => {
                    NOT_EXECUTABLE
                }
                _ => RUN_FAILED,
            }))
        }
    }
}
