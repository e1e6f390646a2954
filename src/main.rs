//! The `lazycfs` command line: parsing and dispatch. The grammar is in `src/cli/args.rs`, each
//! command in `src/cli/`.

#![deny(unsafe_code)]

mod cli;

use std::process::ExitCode;

use cli::args::{Cli, Command};

fn main() -> ExitCode {
    let args = match cli::helper::command_line() {
        Ok(args) => args,
        Err(code) => return code,
    };
    let cli = match Cli::parse_args(args) {
        Ok(cli) => cli,
        // `--help` and `--version` end here too, printed on stdout with status 0.
        Err(e) => {
            let _ = e.print();
            return if e.use_stderr() {
                ExitCode::from(cli::USAGE_ERROR)
            } else {
                ExitCode::SUCCESS
            };
        }
    };
    cli::logger::init(cli.verbose);
    let result = match cli.command {
        Command::Dump { image } => cli::inspect::dump(&image),
        Command::Check { image } => cli::inspect::check(&image),
        Command::Objects { images } => cli::inspect::objects(&images),
        Command::Missing { images, basedir } => cli::inspect::missing(&images, &basedir),
        Command::Mount(args) => cli::mount::mount(args, cli.verbose > 0),
        Command::Create(args) => cli::create::create(args),
        Command::Run(args) => cli::run::run(args),
        Command::Umount {
            mountpoint,
            service_socket,
        } => cli::mount::umount(&mountpoint, &service_socket),
        Command::Service(args) => cli::service::service(args),
        Command::Completions { shell } => cli::docs::completions(shell),
        Command::Manpage { dir: Some(dir), .. } => cli::docs::manpages(&dir),
        Command::Manpage { command, dir: None } => cli::docs::manpage(command.as_deref()),
    };
    result.unwrap_or_else(|code| code)
}
