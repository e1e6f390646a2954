//! `lazycfs run`: a command in a private mount of an image.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use lazycfs::mount::ServeOptions;
use lazycfs::overlay::OverlayMountOptions;
use lazycfs::sandbox::{RunError, RunOptions, enter_private_namespaces};
use std::io::ErrorKind;

use super::mount::VerityMode;
use super::{check_basedir, open_image};

/// Exit status when `lazycfs run` itself fails (as `podman run`/`env` do: 125), when the
/// command cannot be executed (126) or is not found (127).
const RUN_FAILED: u8 = 125;
const NOT_EXECUTABLE: u8 = 126;
const NOT_FOUND: u8 = 127;

#[derive(clap::Args)]
pub struct RunArgs {
    /// The composefs image.
    image: PathBuf,
    /// Objects directory that redirected files are read from.
    #[arg(long)]
    basedir: PathBuf,
    /// Writable mount: changes land in this directory (needs --work).
    #[arg(long, requires = "work")]
    upper: Option<PathBuf>,
    /// Overlay work directory, empty, on the same filesystem as --upper.
    #[arg(long, requires = "upper")]
    work: Option<PathBuf>,
    /// Run the command with the mount as its root directory (default: as its working
    /// directory).
    #[arg(long)]
    chroot: bool,
    /// Threads reading basedir objects (default: number of CPUs); one more answers all
    /// other requests.
    #[arg(long)]
    threads: Option<usize>,
    /// Never poll the FUSE device: sleep between requests even during bursts (polling
    /// spends CPU time to answer bursts faster; default: poll when there are several CPUs).
    #[arg(long)]
    no_busy_poll: bool,
    /// `require`: objects must carry the fs-verity digest their metacopy xattr names.
    #[arg(long, value_enum, default_value_t = VerityMode::None)]
    verity: VerityMode,
    /// The command and its arguments (after `--`).
    #[arg(required = true, last = true)]
    command: Vec<OsString>,
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
    let forward = Arc::new(AtomicUsize::new(0));
    for signal in [
        signal_hook::consts::SIGTERM,
        signal_hook::consts::SIGINT,
        signal_hook::consts::SIGHUP,
    ] {
        signal_hook::flag::register_usize(signal, forward.clone(), signal as usize)
            .map_err(&fail)?;
    }
    let mut serve = ServeOptions::new()
        .basedir(&args.basedir)
        .allow_other(false)
        .fsname(format!("lazycfs:{}", args.image.display()));
    if let Some(n) = args.threads {
        serve = serve.threads(n);
    }
    if args.no_busy_poll {
        serve = serve.busy_poll(false);
    }
    let mut overlay = OverlayMountOptions::new().require_verity(args.verity == VerityMode::Require);
    if let (Some(upper), Some(work)) = (&args.upper, &args.work) {
        overlay = overlay.upper(upper, work);
    }
    let options = RunOptions::new(serve).overlay(overlay).chroot(args.chroot);
    let (command, command_args) = args.command.split_first().expect("clap requires one");
    let status = lazycfs::sandbox::run(
        image,
        &args.image,
        privilege,
        &options,
        command,
        command_args,
        &forward,
    );
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
