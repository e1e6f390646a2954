//! The command-line grammar: every command, option and help text, parsed with `lexopt`.
//!
//! Hand-written rather than derived: the serving process is this binary, and the code it maps
//! counts in its resident memory. A derive-based parser was a quarter of the binary's code and
//! most of it was paged in at startup, to read a dozen options.

use std::ffi::OsString;
use std::fmt;
use std::path::PathBuf;

use lazycfs::mount::ServeOptions;
use lazycfs::mount::overlay::OverlayMountOptions;
use lexopt::prelude::*;

/// A parsed command line.
#[derive(Debug)]
pub struct Cli {
    /// `-v` count (info, then debug), from anywhere before the command's own arguments end.
    pub verbose: u8,
    pub command: Command,
}

/// What to do.
#[derive(Debug)]
pub enum Command {
    Dump {
        image: PathBuf,
    },
    Check {
        image: PathBuf,
    },
    Mount(MountArgs),
    Run(RunArgs),
    Umount {
        mountpoint: PathBuf,
    },
    /// Print this text on stdout and exit 0 (`--help`, `help [COMMAND]`, `--version`).
    Print(String),
}

/// `lazycfs mount`.
#[derive(Debug, Default)]
pub struct MountArgs {
    pub image: PathBuf,
    pub mountpoint: PathBuf,
    pub basedir: Option<PathBuf>,
    pub mode: ModeArg,
    pub allow_other: bool,
    pub foreground: bool,
    pub digest: Option<String>,
    pub serve: ServeArgs,
}

/// `lazycfs run`.
#[derive(Debug, Default)]
pub struct RunArgs {
    pub image: PathBuf,
    pub basedir: PathBuf,
    pub chroot: bool,
    /// The command and its arguments; never empty.
    pub command: Vec<OsString>,
    pub serve: ServeArgs,
}

/// The options `mount` and `run` share: how the server runs and the overlay above it.
#[derive(Debug, Default)]
pub struct ServeArgs {
    pub upper: Option<PathBuf>,
    pub work: Option<PathBuf>,
    pub threads: Option<usize>,
    pub no_busy_poll: bool,
    pub verity: VerityMode,
}

impl ServeArgs {
    /// Applies these options to a server's.
    pub fn apply(&self, mut options: ServeOptions) -> ServeOptions {
        if let Some(n) = self.threads {
            options = options.threads(n);
        }
        if self.no_busy_poll {
            options = options.busy_poll(false);
        }
        options.require_verity(self.verity == VerityMode::Require)
    }

    /// The overlay these options ask for (used by the overlay and kernel modes).
    pub fn overlay(&self) -> OverlayMountOptions {
        let overlay = OverlayMountOptions::new().require_verity(self.verity == VerityMode::Require);
        match (&self.upper, &self.work) {
            (Some(upper), Some(work)) => overlay.upper(upper, work),
            _ => overlay,
        }
    }

    /// Takes `--name` (and its value) if it is one of these options.
    fn parse_option(&mut self, name: &str, args: &mut Args<'_>) -> Result<bool, Stop> {
        match name {
            "upper" => self.upper = Some(args.path()?),
            "work" => self.work = Some(args.path()?),
            "threads" => self.threads = Some(args.number("threads")?),
            "no-busy-poll" => self.no_busy_poll = true,
            "verity" => {
                self.verity = match args.choice("verity", &["none", "require"])? {
                    0 => VerityMode::None,
                    _ => VerityMode::Require,
                }
            }
            _ => return Ok(false),
        }
        Ok(true)
    }

    fn check(&self) -> Result<(), Stop> {
        match (&self.upper, &self.work) {
            (Some(_), None) => Err(Stop::Usage("--upper needs --work".into())),
            (None, Some(_)) => Err(Stop::Usage("--work needs --upper".into())),
            _ => Ok(()),
        }
    }
}

/// `--mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ModeArg {
    #[default]
    Auto,
    Direct,
    Overlay,
    Kernel,
}

/// `--verity`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VerityMode {
    #[default]
    None,
    Require,
}

/// A command line that cannot be run: one line naming the problem and where help is.
#[derive(Debug)]
pub struct UsageError {
    /// The command it concerns (`""` for the top level), for the `--help` hint.
    command: &'static str,
    message: String,
}

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let space = if self.command.is_empty() { "" } else { " " };
        write!(
            f,
            "lazycfs{space}{}: {} (see `lazycfs{space}{} --help`)",
            self.command, self.message, self.command
        )
    }
}

const VERSION: &str = concat!("lazycfs ", env!("CARGO_PKG_VERSION"), "\n");

const HELP: &str = "\
Lazy, zero-copy FUSE server and tools for composefs/EROFS images

Usage: lazycfs [-v] COMMAND [ARGS]

Commands:
  dump IMAGE          Print the image as a composefs dumpfile
  check IMAGE         Walk the whole image and report the first inconsistency (exit 1) or a
                      summary
  mount IMAGE MNT     Mount an image so it looks like the rootful composefs mount
  run IMAGE -- CMD    Run a command inside a private mount of an image (any user; exits with
                      its status)
  umount MNT          Unmount a lazycfs mount (as `fusermount3 -u` does)
  help [COMMAND]      Print this help or the help of a command

Options:
  -v, --verbose       More log output (-v: info, -vv: debug); RUST_LOG overrides
  -h, --help          Print help
  -V, --version       Print version
";

const DUMP_HELP: &str = "\
Print the image as a composefs dumpfile

Usage: lazycfs dump [-v] IMAGE

Arguments:
  IMAGE               The EROFS/composefs image
";

const CHECK_HELP: &str = "\
Walk the whole image and report the first inconsistency (exit 1) or a summary

Usage: lazycfs check [-v] IMAGE

Arguments:
  IMAGE               The EROFS/composefs image
";

const MOUNT_HELP: &str = "\
Mount an image so it looks like the rootful composefs mount

Usage: lazycfs mount [OPTIONS] IMAGE MOUNTPOINT

Arguments:
  IMAGE               The EROFS/composefs image
  MOUNTPOINT          Where to mount it

Options:
      --basedir DIR   Objects directory that redirected files are read from
      --mode MODE     How to mount: auto (default) picks kernel for root, overlay for root in
                      a user namespace, direct for anyone else (-v says which and why).
                      direct: FUSE only, following redirects (any user); overlay: FUSE as the
                      lower layer of a `userxattr` overlay (root in a user namespace); kernel:
                      kernel EROFS + overlayfs (root)
      --upper DIR     Writable overlay: changes land in this directory (needs --work; forces
                      an overlay)
      --work DIR      Overlay work directory, empty, on the same filesystem as --upper
      --allow-other   Let every user access a FUSE mount (default when root)
      --threads N     Threads reading basedir objects (default: number of CPUs); one more
                      answers all other requests
      --no-busy-poll  Never poll the FUSE device: sleep between requests even during bursts
                      (polling spends CPU time to answer bursts faster; default: poll when
                      there are several CPUs)
      --foreground    Stay attached and serve in the foreground (default: return once
                      mounted). The kernel mode has no server and always returns at once
      --verity MODE   require: a redirected file's object must carry the fs-verity digest in
                      its metacopy xattr, else opening it fails (EIO), like overlayfs
                      `verity=require`; none (default): no checks
      --digest HEX    Refuse to mount unless the image file's own fs-verity digest is this
                      (64 hex digits)
  -v, --verbose       More log output (-v: info, -vv: debug); RUST_LOG overrides
  -h, --help          Print help
";

const RUN_HELP: &str = "\
Run a command inside a private mount of an image (any user; exits with its status)

Usage: lazycfs run [OPTIONS] IMAGE --basedir DIR -- COMMAND [ARGS]...

Arguments:
  IMAGE               The composefs image
  COMMAND [ARGS]...   The command and its arguments (`--` before them is optional)

Options:
      --basedir DIR   Objects directory that redirected files are read from
      --upper DIR     Writable mount: changes land in this directory (needs --work)
      --work DIR      Overlay work directory, empty, on the same filesystem as --upper
      --chroot        Run the command with the mount as its root directory (default: as its
                      working directory)
      --threads N     Threads reading basedir objects (default: number of CPUs); one more
                      answers all other requests
      --no-busy-poll  Never poll the FUSE device: sleep between requests even during bursts
      --verity MODE   require: objects must carry the fs-verity digest their metacopy xattr
                      names; none (default): no checks
  -v, --verbose       More log output (-v: info, -vv: debug); RUST_LOG overrides
  -h, --help          Print help
";

const UMOUNT_HELP: &str = "\
Unmount a lazycfs mount (as `fusermount3 -u` does)

Usage: lazycfs umount [-v] MOUNTPOINT

Arguments:
  MOUNTPOINT          The mountpoint
";

/// Every command, with its help text.
const COMMANDS: [(&str, &str); 5] = [
    ("dump", DUMP_HELP),
    ("check", CHECK_HELP),
    ("mount", MOUNT_HELP),
    ("run", RUN_HELP),
    ("umount", UMOUNT_HELP),
];

/// The command named `name`, with its help text.
fn command(name: &str) -> Option<(&'static str, &'static str)> {
    COMMANDS.into_iter().find(|(command, _)| *command == name)
}

/// Parses the process's own command line.
pub fn parse_env() -> Result<Cli, UsageError> {
    parse(std::env::args_os())
}

/// Parses a command line; the first item is the program name.
pub fn parse<I>(args: I) -> Result<Cli, UsageError>
where
    I: IntoIterator,
    I::Item: Into<OsString>,
{
    let mut parser = lexopt::Parser::from_iter(args);
    let mut verbose = 0u8;
    let mut top = Args {
        parser: &mut parser,
        verbose: &mut verbose,
    };
    let name = match top.next() {
        Ok(Some(Token::Value(name))) => name,
        Ok(Some(Token::Short('V'))) => return Ok(print(VERSION)),
        Ok(Some(Token::Long(option))) if option == "version" => return Ok(print(VERSION)),
        Ok(Some(other)) => return Err(usage("", other.unexpected())),
        Ok(None) => return Err(usage("", "a command is needed".into())),
        Err(Stop::Help) => return Ok(print(HELP)),
        Err(Stop::Usage(message)) => return Err(usage("", message)),
    };
    let Some((command, help)) = name.to_str().and_then(self::command) else {
        if name == "help" {
            return help_command(&mut top);
        }
        return Err(usage(
            "",
            format!("no command '{}'", name.to_string_lossy()),
        ));
    };
    let parsed = match command {
        "dump" => paths::<1>(&mut top).map(|[image]| Command::Dump { image }),
        "check" => paths::<1>(&mut top).map(|[image]| Command::Check { image }),
        "umount" => paths::<1>(&mut top).map(|[mountpoint]| Command::Umount { mountpoint }),
        "mount" => parse_mount(&mut top).map(Command::Mount),
        _ => parse_run(&mut top).map(Command::Run),
    };
    match parsed {
        Ok(command) => Ok(Cli { verbose, command }),
        Err(Stop::Help) => Ok(print(help)),
        Err(Stop::Usage(message)) => Err(usage(command, message)),
    }
}

/// `lazycfs help [COMMAND]`.
fn help_command(args: &mut Args<'_>) -> Result<Cli, UsageError> {
    match args.next() {
        Ok(Some(Token::Value(name))) => {
            let name = name.to_string_lossy();
            command(&name)
                .map(|(_, help)| print(help))
                .ok_or_else(|| usage("", format!("no command '{name}'")))
        }
        Ok(Some(other)) => Err(usage("", other.unexpected())),
        Ok(None) | Err(Stop::Help) => Ok(print(HELP)),
        Err(Stop::Usage(message)) => Err(usage("", message)),
    }
}

fn print(text: &str) -> Cli {
    Cli {
        verbose: 0,
        command: Command::Print(text.to_owned()),
    }
}

fn usage(command: &'static str, message: String) -> UsageError {
    UsageError { command, message }
}

/// Why a command's parse ended early.
enum Stop {
    /// `-h`/`--help`: print the command's help.
    Help,
    /// A usage error, without the command name.
    Usage(String),
}

/// One argument, owned (lexopt's borrow the parser).
#[derive(Debug)]
enum Token {
    Short(char),
    Long(String),
    Value(OsString),
}

impl Token {
    fn unexpected(self) -> String {
        match self {
            Token::Short(c) => format!("unexpected option '-{c}'"),
            Token::Long(name) => format!("unexpected option '--{name}'"),
            Token::Value(value) => format!("unexpected argument '{}'", value.to_string_lossy()),
        }
    }
}

/// The parser, with the options every command takes (`-v`, `-h`) handled.
struct Args<'p> {
    parser: &'p mut lexopt::Parser,
    verbose: &'p mut u8,
}

impl Args<'_> {
    /// The next argument that is not a common option.
    fn next(&mut self) -> Result<Option<Token>, Stop> {
        loop {
            let token = match self.parser.next().map_err(lexopt_error)? {
                None => return Ok(None),
                Some(Short('v') | Long("verbose")) => {
                    *self.verbose = self.verbose.saturating_add(1);
                    continue;
                }
                Some(Short('h') | Long("help")) => return Err(Stop::Help),
                Some(Short(c)) => Token::Short(c),
                Some(Long(name)) => Token::Long(name.to_owned()),
                Some(Value(value)) => Token::Value(value),
            };
            return Ok(Some(token));
        }
    }

    /// The value of the option just returned.
    fn value(&mut self) -> Result<OsString, Stop> {
        self.parser.value().map_err(lexopt_error)
    }

    fn path(&mut self) -> Result<PathBuf, Stop> {
        self.value().map(PathBuf::from)
    }

    /// The value of `--option`, which must be one of `choices` (its index is returned).
    fn choice(&mut self, option: &str, choices: &[&str]) -> Result<usize, Stop> {
        let value = self.value()?;
        let value = value.to_string_lossy();
        choices.iter().position(|c| *c == value).ok_or_else(|| {
            Stop::Usage(format!(
                "invalid value '{value}' for '--{option}': one of {}",
                choices.join(", ")
            ))
        })
    }

    fn number(&mut self, option: &str) -> Result<usize, Stop> {
        let value = self.value()?;
        let value = value.to_string_lossy();
        value.parse().map_err(|_| {
            Stop::Usage(format!(
                "invalid value '{value}' for '--{option}': a number is needed"
            ))
        })
    }

    /// The rest of the command line, unparsed (a command and its own arguments).
    fn rest(&mut self) -> Vec<OsString> {
        self.parser
            .raw_args()
            .map(|raw| raw.collect())
            .unwrap_or_default()
    }
}

fn lexopt_error(e: lexopt::Error) -> Stop {
    Stop::Usage(e.to_string())
}

/// The `N` path arguments of a command without options of its own.
fn paths<const N: usize>(args: &mut Args<'_>) -> Result<[PathBuf; N], Stop> {
    let mut paths: [PathBuf; N] = std::array::from_fn(|_| PathBuf::new());
    let mut seen = 0;
    while let Some(token) = args.next()? {
        match token {
            Token::Value(value) if seen < N => {
                paths[seen] = value.into();
                seen += 1;
            }
            other => return Err(Stop::Usage(other.unexpected())),
        }
    }
    if seen < N {
        return Err(Stop::Usage(format!("{} argument(s) needed", N)));
    }
    Ok(paths)
}

fn parse_mount(args: &mut Args<'_>) -> Result<MountArgs, Stop> {
    let mut mount = MountArgs::default();
    let mut positional = Vec::new();
    while let Some(token) = args.next()? {
        match token {
            Token::Long(name) => match name.as_str() {
                "basedir" => mount.basedir = Some(args.path()?),
                "mode" => {
                    const MODES: [ModeArg; 4] = [
                        ModeArg::Auto,
                        ModeArg::Direct,
                        ModeArg::Overlay,
                        ModeArg::Kernel,
                    ];
                    let choice = args.choice("mode", &["auto", "direct", "overlay", "kernel"])?;
                    mount.mode = MODES[choice];
                }
                "allow-other" => mount.allow_other = true,
                "foreground" => mount.foreground = true,
                "digest" => {
                    let hex = args.value()?;
                    mount.digest = Some(hex.to_string_lossy().into_owned());
                }
                other if mount.serve.parse_option(other, args)? => {}
                _ => return Err(Stop::Usage(Token::Long(name).unexpected())),
            },
            Token::Value(value) if positional.len() < 2 => positional.push(PathBuf::from(value)),
            other => return Err(Stop::Usage(other.unexpected())),
        }
    }
    let mut positional = positional.into_iter();
    let (Some(image), Some(mountpoint)) = (positional.next(), positional.next()) else {
        return Err(Stop::Usage("IMAGE and MOUNTPOINT are needed".into()));
    };
    (mount.image, mount.mountpoint) = (image, mountpoint);
    mount.serve.check()?;
    Ok(mount)
}

fn parse_run(args: &mut Args<'_>) -> Result<RunArgs, Stop> {
    let mut run = RunArgs::default();
    let mut image = None;
    let mut basedir = None;
    while let Some(token) = args.next()? {
        match token {
            Token::Long(name) => match name.as_str() {
                "basedir" => basedir = Some(args.path()?),
                "chroot" => run.chroot = true,
                other if run.serve.parse_option(other, args)? => {}
                _ => return Err(Stop::Usage(Token::Long(name).unexpected())),
            },
            Token::Value(value) if image.is_none() => image = Some(PathBuf::from(value)),
            // The command: it and everything after it are its own (`--` before it is optional).
            Token::Value(command) => {
                run.command.push(command);
                run.command.extend(args.rest());
                break;
            }
            other => return Err(Stop::Usage(other.unexpected())),
        }
    }
    let (Some(image), Some(basedir)) = (image, basedir) else {
        return Err(Stop::Usage("IMAGE and --basedir are needed".into()));
    };
    if run.command.is_empty() {
        return Err(Stop::Usage("a command is needed (after `--`)".into()));
    }
    (run.image, run.basedir) = (image, basedir);
    run.serve.check()?;
    Ok(run)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_line(line: &str) -> Result<Cli, UsageError> {
        parse(std::iter::once("lazycfs").chain(line.split_whitespace()))
    }

    fn mount_args(line: &str) -> MountArgs {
        match parse_line(line).unwrap().command {
            Command::Mount(args) => args,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn error(line: &str) -> String {
        parse_line(line).unwrap_err().to_string()
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
    fn verbose_counts_before_and_after_the_command() {
        let cli = parse_line("-v mount img mnt -vv --verbose").unwrap();
        assert_eq!(cli.verbose, 4);
        assert_eq!(parse_line("dump img").unwrap().verbose, 0);
    }

    #[test]
    fn run_takes_the_command_with_its_own_options() {
        for line in [
            "run img --basedir objs -- sh -c true -v",
            "-v run --basedir objs img sh -c true -v",
        ] {
            let Command::Run(args) = parse_line(line).unwrap().command else {
                panic!("{line}");
            };
            assert_eq!(args.image, PathBuf::from("img"));
            assert_eq!(args.basedir, PathBuf::from("objs"));
            assert_eq!(args.command, ["sh", "-c", "true", "-v"]);
        }
        let cli = parse_line("run img --basedir b --chroot --threads=2 -- -x").unwrap();
        let Command::Run(args) = cli.command else {
            panic!()
        };
        assert!(args.chroot);
        assert_eq!(args.serve.threads, Some(2));
        assert_eq!(args.command, ["-x"]);
    }

    #[test]
    fn help_and_version_are_printed() {
        let printed = |line: &str| match parse_line(line).unwrap().command {
            Command::Print(text) => text,
            other => panic!("{line}: {other:?}"),
        };
        assert!(printed("--help").contains("Commands:"));
        assert!(printed("-h").contains("Commands:"));
        assert!(printed("help").contains("Commands:"));
        assert!(printed("help mount").contains("--basedir DIR"));
        assert!(printed("mount --help").contains("--basedir DIR"));
        assert!(printed("mount img -h").contains("--foreground"));
        assert!(printed("run -h").contains("COMMAND [ARGS]"));
        assert!(printed("umount --help").contains("MOUNTPOINT"));
        assert_eq!(
            printed("-V"),
            format!("lazycfs {}\n", env!("CARGO_PKG_VERSION"))
        );
        assert_eq!(printed("--version"), printed("-V"));
    }

    #[test]
    fn usage_errors_name_the_problem_and_the_help() {
        for (line, message) in [
            ("", "a command is needed"),
            ("frob", "no command 'frob'"),
            ("help frob", "no command 'frob'"),
            ("--frob", "unexpected option '--frob'"),
            ("mount img", "IMAGE and MOUNTPOINT are needed"),
            ("mount img mnt extra", "unexpected argument 'extra'"),
            ("mount img mnt --frob", "unexpected option '--frob'"),
            ("mount img mnt -x", "unexpected option '-x'"),
            ("mount img mnt --basedir", "missing argument"),
            (
                "mount img mnt --mode fast",
                "invalid value 'fast' for '--mode'",
            ),
            (
                "mount img mnt --verity=maybe",
                "invalid value 'maybe' for '--verity'",
            ),
            (
                "mount img mnt --threads many",
                "invalid value 'many' for '--threads'",
            ),
            ("mount img mnt --foreground=yes", "foreground"),
            ("mount img mnt --upper u", "--upper needs --work"),
            ("mount img mnt --work w", "--work needs --upper"),
            ("run img -- sh", "IMAGE and --basedir are needed"),
            ("run img --basedir b", "a command is needed"),
            ("run img --basedir b --upper u sh", "--upper needs --work"),
            ("dump", "1 argument(s) needed"),
            ("dump a b", "unexpected argument 'b'"),
        ] {
            let error = error(line);
            assert!(error.contains(message), "{line:?}: {error}");
            assert!(error.contains("--help`)"), "{line:?}: {error}");
            assert_eq!(error.lines().count(), 1, "{line:?}: {error}");
        }
        assert_eq!(
            error("mount img"),
            "lazycfs mount: IMAGE and MOUNTPOINT are needed (see `lazycfs mount --help`)"
        );
        assert_eq!(
            error("frob"),
            "lazycfs: no command 'frob' (see `lazycfs --help`)"
        );
    }
}
