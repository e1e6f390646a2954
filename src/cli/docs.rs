//! `lazycfs completions` and `lazycfs manpage`: shell completions and manual pages, generated
//! from the grammar in `args.rs` so they always describe the binary that prints them.
//!
//! The pages are committed in `doc/`; `lazycfs manpage --dir doc` writes them again after a
//! change to the command line (a test fails until it is done).

use std::io::{self, Write};
use std::path::Path;
use std::process::ExitCode;

use clap::CommandFactory;
use clap_complete::Shell;
use clap_mangen::Man;

use super::USAGE_ERROR;
use super::args::Cli;

/// Prints the completion script for `shell`.
pub fn completions(shell: Shell) -> Result<ExitCode, ExitCode> {
    // Into memory first: clap_complete panics when a write fails (`| head`).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "lazycfs", &mut script);
    let mut out = io::stdout().lock();
    flushed(
        out.write_all(&script).and_then(|()| out.flush()),
        "completions",
    )
}

/// Prints the page of lazycfs, or of `command` (`lazycfs-COMMAND(1)`).
pub fn manpage(command: Option<&str>) -> Result<ExitCode, ExitCode> {
    let page = match command {
        None => pages().next(),
        Some(name) => pages().find(|page| page.get_filename() == format!("lazycfs-{name}.1")),
    };
    let Some(page) = page else {
        eprintln!(
            "lazycfs manpage: no command '{}'",
            command.unwrap_or_default()
        );
        return Err(ExitCode::from(USAGE_ERROR));
    };
    let mut out = io::stdout().lock();
    let written = page.render(&mut out);
    flushed(written.and_then(|()| out.flush()), "manpage")
}

/// Writes the page of lazycfs and of each command into `dir`.
pub fn manpages(dir: &Path) -> Result<ExitCode, ExitCode> {
    let written = pages().try_for_each(|page| page.generate_to(dir).map(drop));
    flushed(written, "manpage")
}

/// The page of lazycfs, then one per command (`help` has none).
fn pages() -> impl Iterator<Item = Man> {
    let mut lazycfs = Cli::command().disable_help_subcommand(true);
    // Each command learns its full name (`lazycfs-mount`).
    lazycfs.build();
    let commands: Vec<clap::Command> = lazycfs.get_subcommands().cloned().collect();
    std::iter::once(lazycfs)
        .chain(commands)
        .map(|command| Man::new(command).source(SOURCE))
}

/// The pages' footer: the version they describe.
const SOURCE: &str = concat!("lazycfs ", env!("CARGO_PKG_VERSION"));

fn flushed(result: io::Result<()>, what: &str) -> Result<ExitCode, ExitCode> {
    match result {
        // A reader that stops early (`| head`) is not an error.
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(e) if e.kind() == io::ErrorKind::BrokenPipe => Ok(ExitCode::SUCCESS),
        Err(e) => {
            eprintln!("lazycfs {what}: {e}");
            Err(ExitCode::from(1))
        }
    }
}
