use clap::CommandFactory;

use super::*;

fn parse_line(line: &str) -> Result<Cli, clap::Error> {
    Cli::parse_args(std::iter::once("lazycfs").chain(line.split_whitespace()))
}

fn mount_args(line: &str) -> MountArgs {
    match parse_line(line).unwrap().command {
        Command::Mount(args) => args,
        other => panic!("{line}: {other:?}"),
    }
}

fn run_args(line: &str) -> RunArgs {
    match parse_line(line).unwrap().command {
        Command::Run(args) => args,
        other => panic!("{line}: {other:?}"),
    }
}

/// The usage error of `line`, rendered as clap prints it.
fn error(line: &str) -> String {
    let error = parse_line(line).unwrap_err();
    assert!(error.use_stderr(), "{line:?} is not an error: {error}");
    assert_eq!(
        error.exit_code(),
        i32::from(crate::cli::USAGE_ERROR),
        "{line:?}"
    );
    error.render().to_string()
}

#[test]
fn the_grammar_is_consistent() {
    Cli::command().debug_assert();
}

#[test]
fn mount_takes_every_option_in_both_spellings() {
    let args = mount_args(
        "mount img mnt --basedir=objs --mode direct --upper up --work=wk --allow-other \
         --threads 3 --no-busy-poll --foreground --verity=require --digest ab12",
    );
    assert_eq!(args.image, PathBuf::from("img"));
    assert_eq!(args.mountpoint, PathBuf::from("mnt"));
    assert_eq!(args.basedir, Some("objs".into()));
    assert_eq!(args.mode, ModeArg::Direct);
    assert_eq!(args.serve.upper, Some("up".into()));
    assert_eq!(args.serve.work, Some("wk".into()));
    assert!(args.allow_other && args.serve.no_busy_poll && args.foreground);
    assert_eq!(args.serve.threads, Some(3));
    assert_eq!(args.serve.verity, VerityMode::Require);
    assert_eq!(args.digest.as_deref(), Some("ab12"));
}

#[test]
fn mount_defaults() {
    let args = mount_args("mount --basedir objs img mnt");
    assert_eq!(args.mode, ModeArg::Auto);
    assert_eq!(args.serve.verity, VerityMode::None);
    assert!(!args.foreground && !args.allow_other && !args.serve.no_busy_poll);
    assert_eq!(
        (args.serve.threads, args.serve.upper, args.digest),
        (None, None, None)
    );
}

#[test]
fn options_given_twice_take_the_last_value() {
    let args = mount_args("mount img mnt --threads 2 --foreground --threads=5 --foreground");
    assert_eq!(args.serve.threads, Some(5));
    assert!(args.foreground);
}

#[test]
fn path_options_take_values_that_start_with_a_dash() {
    let args = mount_args("mount img mnt --basedir -objs --upper -u --work --mode");
    assert_eq!(args.basedir, Some("-objs".into()));
    assert_eq!(args.serve.upper, Some("-u".into()));
    assert_eq!(args.serve.work, Some("--mode".into()));
    assert_eq!(args.mode, ModeArg::Auto);
}

#[test]
fn verbose_counts_before_and_after_the_command() {
    let cli = parse_line("-v mount img mnt -vv --verbose").unwrap();
    assert_eq!(cli.verbose, 4);
    assert_eq!(parse_line("dump img").unwrap().verbose, 0);
    assert_eq!(parse_line("check img -v").unwrap().verbose, 1);
    assert_eq!(parse_line("-vv umount mnt").unwrap().verbose, 2);
}

#[test]
fn run_takes_the_command_with_its_own_options() {
    for line in [
        "run img --basedir objs -- sh -c true -v",
        "-v run --basedir objs img sh -c true -v",
    ] {
        let args = run_args(line);
        assert_eq!(args.image, PathBuf::from("img"));
        assert_eq!(args.basedir, PathBuf::from("objs"));
        assert_eq!(args.command, ["sh", "-c", "true", "-v"]);
    }
    let cli = parse_line("-v run img --basedir b -v sh --basedir x --help").unwrap();
    assert_eq!(cli.verbose, 2);
    let Command::Run(args) = cli.command else {
        panic!()
    };
    assert_eq!(args.command, ["sh", "--basedir", "x", "--help"]);
    let args = run_args("run img --basedir b --chroot --threads=2 -- -x");
    assert!(args.chroot);
    assert_eq!(args.serve.threads, Some(2));
    assert_eq!(args.command, ["-x"]);
    assert_eq!(run_args("run --basedir b -- img sh").command, ["sh"]);
}

#[test]
fn help_and_version_are_printed() {
    let printed = |line: &str| {
        let error = parse_line(line)
            .err()
            .unwrap_or_else(|| panic!("{line}: parsed"));
        assert!(!error.use_stderr(), "{line}: {error}");
        assert_eq!(error.exit_code(), 0, "{line}");
        error.render().to_string()
    };
    assert!(printed("--help").contains("Commands:"));
    assert!(printed("-h").contains("Commands:"));
    assert!(printed("help").contains("Commands:"));
    for command in [
        "dump",
        "check",
        "mount",
        "run",
        "umount",
        "completions",
        "manpage",
    ] {
        assert!(printed("--help").contains(command), "{command}");
    }
    assert!(printed("help mount").contains("--basedir <DIR>"));
    assert!(printed("mount --help").contains("--basedir <DIR>"));
    assert!(printed("mount img -h").contains("--foreground"));
    assert!(printed("mount --help").contains("userxattr"));
    assert!(printed("run -h").contains("<COMMAND>..."));
    assert!(printed("umount --help").contains("<MOUNTPOINT>"));
    assert_eq!(
        printed("-V"),
        format!("lazycfs {}\n", env!("CARGO_PKG_VERSION"))
    );
    assert_eq!(printed("--version"), printed("-V"));
}

#[test]
fn usage_errors_name_the_problem() {
    for (line, message) in [
        ("", "Usage: lazycfs"),
        ("frob", "unrecognized subcommand 'frob'"),
        ("help frob", "unrecognized subcommand 'frob'"),
        ("--frob", "unexpected argument '--frob'"),
        ("mount img", "<MOUNTPOINT>"),
        ("mount img mnt extra", "unexpected argument 'extra'"),
        ("mount img mnt --frob", "unexpected argument '--frob'"),
        ("mount img mnt -x", "unexpected argument '-x'"),
        (
            "mount img mnt --basedir",
            "a value is required for '--basedir <DIR>'",
        ),
        (
            "mount img mnt --mode fast",
            "invalid value 'fast' for '--mode <MODE>'",
        ),
        (
            "mount img mnt --verity=maybe",
            "invalid value 'maybe' for '--verity <MODE>'",
        ),
        (
            "mount img mnt --threads many",
            "invalid value 'many' for '--threads <N>'",
        ),
        ("mount img mnt --foreground=yes", "'--foreground'"),
        ("mount img mnt --upper u", "--work <DIR>"),
        ("mount img mnt --work w", "--upper <DIR>"),
        ("run img -- sh", "--basedir <DIR>"),
        ("run img --basedir b", "<COMMAND>..."),
        ("run img --basedir b -x", "unexpected argument '-x'"),
        ("run img --basedir b --upper u sh", "--work <DIR>"),
        ("dump", "<IMAGE>"),
        ("dump a b", "unexpected argument 'b'"),
        ("completions tcsh", "invalid value 'tcsh'"),
        ("manpage mount --dir d", "cannot be used with"),
        ("mount -V", "unexpected argument '-V'"),
    ] {
        let error = error(line);
        assert!(error.contains(message), "{line:?}: {error}");
    }
}

#[test]
fn a_missing_argument_is_named_with_the_command_s_usage() {
    let error = error("mount img");
    assert!(error.contains("the following required arguments were not provided"));
    assert!(error.contains("Usage: lazycfs mount"), "{error}");
    assert!(error.contains("--help"), "{error}");
}

#[test]
fn transport_is_chosen_for_mount_and_run() {
    assert_eq!(
        mount_args("mount img mnt").serve.transport,
        TransportArg::Auto
    );
    let args = mount_args("mount img mnt --transport uring");
    assert_eq!(args.serve.transport, TransportArg::Uring);
    let args = run_args("run img --basedir objs --transport=dev -- true");
    assert_eq!(args.serve.transport, TransportArg::Dev);
    let options = args.serve.apply(ServeOptions::new());
    assert_eq!(options.requested_transport(), Transport::Dev);
    assert!(error("mount img mnt --transport ring").contains("auto, uring, dev"));
}
