//! The `lazycfs` command line: argument parsing and dispatch. Each command lives in
//! `src/cli/`.

mod cli;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

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
    /// Mount an image so it looks like the rootful composefs mount.
    Mount(cli::mount::MountArgs),
    /// Run a command inside a private mount of an image (any user; exits with its status).
    Run(cli::run::RunArgs),
    /// Unmount a lazycfs mount (as `fusermount3 -u` does).
    Umount {
        /// The mountpoint.
        mountpoint: PathBuf,
    },
}

fn main() -> ExitCode {
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
    let result = match cli.command {
        Command::Dump { image } => cli::inspect::dump(&image),
        Command::Check { image } => cli::inspect::check(&image),
        Command::Mount(args) => cli::mount::mount(args, cli.verbose > 0),
        Command::Run(args) => cli::run::run(args),
        Command::Umount { mountpoint } => cli::mount::umount(&mountpoint),
    };
    result.unwrap_or_else(|code| code)
}
