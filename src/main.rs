//! The `lazycfs` command line: parsing and dispatch. The grammar is in `src/cli/args.rs`, each
//! command in `src/cli/`.
//!
//! The commands other than `mount` are `#[inline(never)]`: `main` runs in every mount, and code
//! inlined into it stays resident with it (`layout/README.md`).

mod cli;

use std::io::Write;
use std::process::ExitCode;

use cli::args::Command;

fn main() -> ExitCode {
    let cli = match cli::args::parse_env() {
        Ok(cli) => cli,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(cli::USAGE_ERROR);
        }
    };
    cli::logger::init(cli.verbose);
    let result = match cli.command {
        Command::Print(text) => {
            let _ = std::io::stdout().write_all(text.as_bytes());
            Ok(ExitCode::SUCCESS)
        }
        Command::Dump { image } => cli::inspect::dump(&image),
        Command::Check { image } => cli::inspect::check(&image),
        Command::Mount(args) => cli::mount::mount(args, cli.verbose > 0),
        Command::Run(args) => cli::run::run(args),
        Command::Umount { mountpoint } => cli::mount::umount(&mountpoint),
    };
    result.unwrap_or_else(|code| code)
}
