//! `lazycfs run`: a command in a private mount of an image.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use lazycfs::mount::ServeOptions;
use lazycfs::mount::sandbox::{RunError, RunOptions, enter_private_namespaces};
use std::io::ErrorKind;

use super::args::RunArgs;
use super::{check_basedir, open_image};

/// Exit status when `lazycfs run` itself fails (as `podman run`/`env` do: 125), when the
/// command cannot be executed (126) or is not found (127).
const RUN_FAILED: u8 = 125;
const NOT_EXECUTABLE: u8 = 126;
const NOT_FOUND: u8 = 127;

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
    let options = RunOptions::new(serve)
        .overlay(args.serve.overlay())
        .chroot(args.chroot);
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
