//! The `lazycfs` command line.

use std::io::{self, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use lazycfs::erofs::Image;

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
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or(level)).init();
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

/// Opens an image, turning failure into a one-line error and exit status 2.
fn open(path: &PathBuf) -> Result<Image, ExitCode> {
    Image::open(path).map_err(|e| {
        eprintln!("lazycfs: {e}");
        ExitCode::from(2)
    })
}
