//! The `lazycfs` command line.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lazycfs::erofs::Image;
use lazycfs::mount::ServeOptions;

/// Lazy, zero-copy FUSE server and tools for composefs/EROFS images.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// More log output (-v: info, -vv: debug); RUST_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the image as a composefs dumpfile.
    Dump {
        /// The EROFS/composefs image.
        image: PathBuf,
    },
    /// Walk the whole image and report the first inconsistency (exit 1) or a summary.
    Check {
        /// The EROFS/composefs image.
        image: PathBuf,
    },
    /// Mount an image with FUSE, looking like the rootful composefs mount.
    Mount(MountArgs),
    /// Unmount a lazycfs mount (as `fusermount3 -u` does).
    Umount {
        /// The mountpoint.
        mountpoint: PathBuf,
    },
}

#[derive(clap::Args)]
struct MountArgs {
    /// The EROFS/composefs image.
    image: PathBuf,
    /// Where to mount it.
    mountpoint: PathBuf,
    /// Objects directory that redirected files are read from.
    #[arg(long)]
    basedir: Option<PathBuf>,
    /// Let every user access the mount (default when root).
    #[arg(long)]
    allow_other: bool,
    /// Worker threads (default: number of CPUs).
    #[arg(long)]
    threads: Option<usize>,
    /// Stay attached and serve in the foreground (default: return once mounted).
    #[arg(long)]
    foreground: bool,
    /// `require`: serve an object only if its fs-verity digest matches the image's metacopy
    /// digest (EIO otherwise), like overlayfs `verity=require`.
    #[arg(long, value_enum, default_value_t = VerityMode::None)]
    verity: VerityMode,
    /// Refuse to mount unless the image file's own fs-verity digest is this (64 hex digits).
    #[arg(long, value_name = "HEX")]
    digest: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum VerityMode {
    /// No fs-verity checks.
    None,
    /// Require matching fs-verity digests.
    Require,
}

fn main() -> ExitCode {
    run().unwrap_or_else(|code| code)
}

fn run() -> Result<ExitCode, ExitCode> {
    let cli = Cli::parse();
    let level = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level))
        // fuser warns when it finds the mount already gone after a clean unmount.
        .filter_module("fuser::mnt", log::LevelFilter::Error)
        .init();
    Ok(match cli.command {
        Command::Dump { image } => {
            let image = open(&image)?;
            let stdout = io::stdout().lock();
            let mut out = io::BufWriter::new(stdout);
            match lazycfs::dump::dump(&image, &mut out)
                .and_then(|()| out.flush().map_err(Into::into))
            {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("lazycfs dump: {e}");
                    ExitCode::from(1)
                }
            }
        }
        Command::Mount(args) => mount(args)?,
        Command::Umount { mountpoint } => match lazycfs::mount::unmount(&mountpoint) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("lazycfs umount: {}: {e}", mountpoint.display());
                ExitCode::from(1)
            }
        },
        Command::Check { image } => {
            let image = open(&image)?;
            match lazycfs::check::check(&image) {
                Ok(summary) => {
                    println!("{summary}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("lazycfs check: {e}");
                    ExitCode::from(1)
                }
            }
        }
    })
}

/// Marker the foreground server prints on stdout once the mount answers.
const READY: &str = "lazycfs: ready";

fn mount(args: MountArgs) -> Result<ExitCode, ExitCode> {
    let image = open(&args.image)?;
    if let Some(dir) = &args.basedir {
        if !dir.is_dir() {
            eprintln!("lazycfs: basedir {}: not a directory", dir.display());
            return Err(ExitCode::from(2));
        }
    }
    if let Some(hex) = &args.digest {
        check_digest(&args.image, hex)?;
    }
    if !args.foreground {
        drop(image);
        return Ok(daemonize());
    }
    let mut options = ServeOptions::new().fsname(format!("lazycfs:{}", args.image.display()));
    if let Some(dir) = &args.basedir {
        options = options.basedir(dir);
    }
    if args.allow_other {
        options = options.allow_other(true);
    }
    if let Some(n) = args.threads {
        options = options.threads(n);
    }
    options = options.require_verity(args.verity == VerityMode::Require);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        if let Err(e) = signal_hook::flag::register(signal, stop.clone()) {
            eprintln!("lazycfs: signals: {e}");
            return Err(ExitCode::from(1));
        }
    }
    let mounted = match lazycfs::mount::mount(image, &args.mountpoint, &options) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("lazycfs: mount {}: {e}", args.mountpoint.display());
            return Err(ExitCode::from(1));
        }
    };
    println!("{READY}");
    let _ = io::stdout().flush();
    log::info!(
        "serving {} on {}",
        args.image.display(),
        args.mountpoint.display()
    );
    loop {
        if stop.load(std::sync::atomic::Ordering::Relaxed) {
            log::info!("signal received, unmounting");
            return Ok(match mounted.unmount() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("lazycfs: unmount: {e}");
                    ExitCode::from(1)
                }
            });
        }
        if mounted.is_finished() {
            return Ok(match mounted.wait() {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("lazycfs: server: {e}");
                    ExitCode::from(1)
                }
            });
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// Exit 2 unless the image's fs-verity digest is `hex`.
fn check_digest(image: &std::path::Path, hex: &str) -> Result<(), ExitCode> {
    let fail = |why: String| {
        eprintln!("lazycfs: {}: {why}", image.display());
        ExitCode::from(2)
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
        .arg("--foreground")
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

/// Opens an image, turning failure into a one-line error and exit status 2.
fn open(path: &PathBuf) -> Result<Image, ExitCode> {
    Image::open(path).map_err(|e| {
        eprintln!("lazycfs: {e}");
        ExitCode::from(2)
    })
}
