//! The command-line grammar: every command, option and help text, derived with clap.
//!
//! The grammar is a contract with users' scripts. Beyond clap's defaults it keeps what the
//! hand-written parser before it accepted: `-v` counts before and after the command name, an
//! option given twice takes its last value, a path option takes the next argument even if it
//! starts with `-`, and `run` passes everything from the command's name on to the command
//! (`--` before it is optional).

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Arg, ArgAction, Args, CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};
use lazycfs::mount::overlay::OverlayMountOptions;
use lazycfs::mount::{ServeOptions, Transport};

/// Lazy, zero-copy FUSE server and tools for composefs/EROFS images
#[derive(Debug, Parser)]
#[command(
    name = "lazycfs",
    version,
    after_help = "As a FUSE mount helper (what `mount -t fuse.lazycfs IMAGE MOUNTPOINT -o OPTIONS` \
                  and fstab lines run), `lazycfs IMAGE MOUNTPOINT -o basedir=DIR,mode=MODE,...` \
                  is `lazycfs mount` with its options spelled as mount options.",
    args_override_self = true,
    max_term_width = 100
)]
#[command(arg = verbose(), mut_subcommands = with_verbose)]
pub struct Cli {
    /// `-v` count, before and after the command's name.
    #[arg(skip)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

impl Cli {
    /// Parses a command line; the first item is the program name.
    pub fn parse_args<I>(args: I) -> Result<Cli, clap::Error>
    where
        I: IntoIterator,
        I::Item: Into<OsString> + Clone,
    {
        let matches = Self::command().try_get_matches_from(args)?;
        let mut cli = Self::from_arg_matches(&matches)?;
        cli.verbose = matches.get_count(VERBOSE);
        if let Some((_, command)) = matches.subcommand() {
            cli.verbose = cli.verbose.saturating_add(command.get_count(VERBOSE));
        }
        Ok(cli)
    }
}

const VERBOSE: &str = "verbose";

fn verbose() -> Arg {
    Arg::new(VERBOSE)
        .short('v')
        .long(VERBOSE)
        .action(ArgAction::Count)
        .help("More log output (-v: info, -vv: debug); RUST_LOG overrides")
}

/// Gives a command its own `-v`, counted with the one before the command's name. (A global
/// `-v` would not be: clap keeps the count of the last command that saw it.)
fn with_verbose(command: clap::Command) -> clap::Command {
    command.arg(verbose())
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Print the image as a composefs dumpfile
    Dump {
        /// The EROFS/composefs image
        image: PathBuf,
    },
    /// Walk the whole image and report the first inconsistency (exit 1) or a summary
    Check {
        /// The EROFS/composefs image
        image: PathBuf,
    },
    /// List the basedir objects the images reference, sorted, each once
    ///
    /// Objects are printed as paths under the basedir (`ab/cdef…`), as `composefs-info
    /// objects` prints them. Exit 1 if an image is corrupt, 2 if one cannot be opened.
    Objects {
        /// The EROFS/composefs images
        #[arg(required = true)]
        images: Vec<PathBuf>,
    },
    /// List the objects the images reference that are missing from a basedir (exit 1 if any)
    ///
    /// An object is missing unless it resolves beneath the basedir without following symlinks,
    /// as the mount opens it. Exit 0 when none is missing, 1 when some are (they are printed),
    /// 2 when an image or the basedir cannot be read.
    Missing {
        /// The EROFS/composefs images
        #[arg(required = true)]
        images: Vec<PathBuf>,
        /// The objects directory
        #[arg(long, value_name = "DIR", allow_hyphen_values = true)]
        basedir: PathBuf,
    },
    /// Mount an image so it looks like the rootful composefs mount
    Mount(MountArgs),
    /// Write a composefs image of a directory tree, storing its files as objects, or of a
    /// dumpfile
    #[command(after_help = CREATE_EXIT_STATUS)]
    Create(CreateArgs),
    /// Run a command inside a private mount of an image (any user; exits with its status)
    Run(RunArgs),
    /// Unmount a lazycfs mount (as `fusermount3 -u` does; a mount service mount through the
    /// service)
    Umount {
        /// The mountpoint
        mountpoint: PathBuf,
        /// The mount service's socket (for mounts made with `--mode service`)
        #[arg(
            long,
            value_name = "PATH",
            env = "LAZYCFS_SERVICE_SOCKET",
            default_value = lazycfs::service::DEFAULT_SOCKET
        )]
        service_socket: PathBuf,
    },
    /// Run the mount service: a root daemon that mounts composefs images with the kernel for
    /// unprivileged users (`mount --mode service`)
    ///
    /// Callers pass file descriptors only (image, basedir, an empty mountpoint directory they
    /// own). The service rewrites each image with lazycfs's own writer into a sealed memfd
    /// (the caller's bytes never reach the kernel's parser), mounts it on kernel EROFS under an
    /// overlayfs that reads the basedir with the caller's rights, `ro,nosuid,nodev`. A caller
    /// in a user and mount namespace of its own (`unshare -Urm`, `lazycfs run`) gets the mount
    /// there instead, its overlay made inside its user namespace. Started by systemd socket
    /// activation (`LISTEN_FDS`) or by hand; tells systemd when ready.
    Service(ServiceArgs),
    /// Print a shell completion script
    ///
    /// For example `lazycfs completions bash > /usr/share/bash-completion/completions/lazycfs`,
    /// `lazycfs completions zsh > /usr/share/zsh/site-functions/_lazycfs` or `lazycfs
    /// completions fish > /usr/share/fish/vendor_completions.d/lazycfs.fish`.
    Completions {
        /// The shell to complete in
        shell: clap_complete::Shell,
    },
    /// Print the manual page (roff) of lazycfs or of one of its commands
    Manpage {
        /// The command whose page to print (default: the page of lazycfs itself)
        command: Option<String>,
        /// Write every page (`lazycfs.1`, `lazycfs-COMMAND.1`) into this directory instead
        #[arg(long, value_name = "DIR", conflicts_with = "command")]
        dir: Option<PathBuf>,
    },
}

/// `lazycfs create`'s exit statuses, in its help.
const CREATE_EXIT_STATUS: &str = "Exit status: 0 done; 2 bad command line; 3 SOURCE is not a \
    directory; 4 a file in SOURCE cannot be read (or stored in an image), or the dumpfile \
    cannot be read or has a bad line; 5 the objects \
    directory or the image cannot be written (read-only filesystem, permissions); 6 no space \
    left on the device (or quota); 130 interrupted (SIGINT; 143 for SIGTERM). On any error \
    the image is left as it was, and no partial object exists.";

#[derive(Debug, Args)]
#[command(
    override_usage = "lazycfs create SOURCE IMAGE --objects DIR [OPTIONS]\n       \
                            lazycfs create SOURCE IMAGE --digest-only [OPTIONS]\n       \
                            lazycfs create --from-dump FILE|- IMAGE [OPTIONS]"
)]
pub struct CreateArgs {
    /// The directory tree to make an image of (with `--from-dump`: only IMAGE is given)
    #[arg(value_name = "SOURCE")]
    pub source: PathBuf,
    /// The image file to write (replaced once complete)
    #[arg(value_name = "IMAGE")]
    pub image: Option<PathBuf>,
    /// Objects directory, created if missing: each regular file over 64 bytes is stored there
    /// as `xx/<62 hex>`, named by its fs-verity digest (the basedir of `mount` and `run`)
    #[arg(
        long,
        value_name = "DIR",
        allow_hyphen_values = true,
        required_unless_present_any = ["digest_only", "from_dump"]
    )]
    pub objects: Option<PathBuf>,
    /// Make the image of a composefs dumpfile (composefs-dump(5); `-` reads stdin) instead of a
    /// directory, as `mkcomposefs --from-file`: the dumpfile names the objects, none is stored
    #[arg(
        long,
        value_name = "FILE",
        allow_hyphen_values = true,
        conflicts_with_all = ["objects", "digest_only", "threads"]
    )]
    pub from_dump: Option<PathBuf>,
    /// Image format version: each gives the bytes composefs-rs writes for the same tree (all
    /// read back the same)
    #[arg(long, value_enum, value_name = "VERSION", default_value_t = FormatArg::V1)]
    pub format: FormatArg,
    /// Compute the digests and write the image, but store no objects
    #[arg(long, conflicts_with = "objects")]
    pub digest_only: bool,
    /// Print the image file's fs-verity digest (for `mount --digest`) on stdout
    #[arg(long)]
    pub print_digest: bool,
    /// Threads hashing and copying files (default: two per CPU, so reads overlap)
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
}

/// `--format`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// composefs-rs' V0, which is plain `mkcomposefs` (composefs version 0 in the header; on
    /// a tree with whiteouts `mkcomposefs` writes v1)
    V0,
    /// composefs-rs' V1 (its default), which is `mkcomposefs --min-version=1
    /// --max-version=1`
    #[default]
    V1,
    /// composefs-rs' V2, its earlier format: extended inodes, whole-second times, no whiteout
    /// stubs
    V2,
}

#[derive(Debug, Args)]
pub struct MountArgs {
    /// The EROFS/composefs image
    pub image: PathBuf,
    /// Where to mount it
    pub mountpoint: PathBuf,
    /// Objects directory that redirected files are read from
    #[arg(long, value_name = "DIR", allow_hyphen_values = true)]
    pub basedir: Option<PathBuf>,
    /// How to mount (-v says which mode and why)
    #[arg(long, value_enum, value_name = "MODE", default_value_t = ModeArg::Auto)]
    pub mode: ModeArg,
    /// Let every user access a FUSE mount (default when root)
    #[arg(long)]
    pub allow_other: bool,
    /// Stay attached and serve in the foreground (default: return once mounted). The kernel
    /// mode has no server and always returns at once
    #[arg(long)]
    pub foreground: bool,
    /// Refuse to mount unless the image file's own fs-verity digest is this (64 hex digits)
    #[arg(long, value_name = "HEX", allow_hyphen_values = true)]
    pub digest: Option<String>,
    #[command(flatten)]
    pub service: ServiceSocketArg,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// Where `mount` and `run` find the mount service.
#[derive(Debug, Args)]
pub struct ServiceSocketArg {
    /// The mount service's socket (`--mode service`, and `auto` when not root)
    #[arg(
        long,
        value_name = "PATH",
        env = "LAZYCFS_SERVICE_SOCKET",
        default_value = lazycfs::service::DEFAULT_SOCKET
    )]
    pub service_socket: PathBuf,
}

#[derive(Debug, Args)]
pub struct ServiceArgs {
    /// The socket to listen on, unless systemd passes one (socket activation)
    #[arg(
        long,
        value_name = "PATH",
        allow_hyphen_values = true,
        default_value = lazycfs::service::DEFAULT_SOCKET
    )]
    pub listen: PathBuf,
    /// Largest image accepted, in bytes
    #[arg(long, value_name = "BYTES", default_value_t = 1 << 30)]
    pub max_image_size: u64,
    /// Seconds a caller has to send its whole request
    #[arg(long, value_name = "SECONDS", default_value_t = 10)]
    pub request_timeout: u64,
    /// Requests served at once; further connections are refused until one ends
    #[arg(long, value_name = "N", default_value_t = 16)]
    pub max_requests: usize,
    /// Service mounts one user may have at once
    #[arg(long, value_name = "N", default_value_t = 64)]
    pub max_mounts_per_user: usize,
    /// Bytes of rewritten images kept, so that mounting the same image again costs no rewrite
    #[arg(long, value_name = "BYTES", default_value_t = 256 << 20)]
    pub cache_size: u64,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The composefs image
    pub image: PathBuf,
    /// Objects directory that redirected files are read from
    #[arg(long, value_name = "DIR", allow_hyphen_values = true)]
    pub basedir: PathBuf,
    /// Run the command with the mount as its root directory (default: as its working directory)
    #[arg(long)]
    pub chroot: bool,
    /// How to mount (-v says which and why)
    #[arg(long, value_enum, value_name = "MODE", default_value_t = RunModeArg::Auto)]
    pub mode: RunModeArg,
    #[command(flatten)]
    pub service: ServiceSocketArg,
    /// The command and its arguments (`--` before them is optional); never empty
    #[arg(required = true, trailing_var_arg = true, value_name = "COMMAND")]
    pub command: Vec<OsString>,
    #[command(flatten)]
    pub serve: ServeArgs,
}

/// The options `mount` and `run` share: how the server runs and the overlay above it.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Writable overlay: changes land in this directory (needs --work; `mount` then uses an
    /// overlay mode)
    #[arg(
        long,
        value_name = "DIR",
        allow_hyphen_values = true,
        requires = "work"
    )]
    pub upper: Option<PathBuf>,
    /// Overlay work directory, empty, on the same filesystem as --upper
    #[arg(
        long,
        value_name = "DIR",
        allow_hyphen_values = true,
        requires = "upper"
    )]
    pub work: Option<PathBuf>,
    /// Threads reading basedir objects from /dev/fuse requests (default: number of CPUs); one
    /// more answers all other requests (with io_uring, a thread per CPU answers everything)
    #[arg(long, value_name = "N")]
    pub threads: Option<usize>,
    /// Never poll the FUSE device: sleep between requests even during bursts (polling spends
    /// CPU time to answer bursts faster; default: poll when there are several CPUs)
    #[arg(long)]
    pub no_busy_poll: bool,
    /// Whether redirected files' objects must carry the fs-verity digest their metacopy xattr
    /// names
    #[arg(long, value_enum, value_name = "MODE", default_value_t = VerityMode::None)]
    pub verity: VerityMode,
    /// How FUSE requests travel between the kernel and the server (-v says which and why)
    #[arg(
        long,
        value_enum,
        value_name = "TRANSPORT",
        env = "LAZYCFS_TRANSPORT",
        default_value_t = TransportArg::Auto
    )]
    pub transport: TransportArg,
    /// Do not count the objects missing from the basedir. The count walks the whole image
    /// beside the mount and prints a warning when some are missing; `mount` without
    /// --foreground returns, and `run` exits, once it is done
    #[arg(long)]
    pub no_object_check: bool,
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
        options
            .transport(self.transport.into())
            .require_verity(self.verity == VerityMode::Require)
    }

    /// The overlay these options ask for (used by the overlay and kernel modes).
    pub fn overlay(&self) -> OverlayMountOptions {
        let overlay = OverlayMountOptions::new().require_verity(self.verity == VerityMode::Require);
        match (&self.upper, &self.work) {
            (Some(upper), Some(work)) => overlay.upper(upper, work),
            _ => overlay,
        }
    }
}

/// `--mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum ModeArg {
    /// Kernel for root; else the mount service when it answers (with --basedir, no --upper);
    /// else overlay for root in a user namespace, direct for anyone else
    #[default]
    Auto,
    /// FUSE only, following redirects (any user)
    Direct,
    /// FUSE as the lower layer of a `userxattr` overlay (root in a user namespace)
    Overlay,
    /// Kernel EROFS + overlayfs (root)
    Kernel,
    /// Kernel EROFS + overlayfs made by the mount service (`lazycfs service`) for any user,
    /// in the caller's own namespaces when it runs in a user namespace of its own
    Service,
}

/// `run --mode`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum RunModeArg {
    /// Kernel for root, else the mount service when it answers (and there is no --upper),
    /// else overlay
    #[default]
    Auto,
    /// FUSE as the lower layer of a `userxattr` overlay, in the run's user namespace (not root)
    Overlay,
    /// Kernel EROFS + overlayfs (root)
    Kernel,
    /// Kernel EROFS + overlayfs made by the mount service, in the run's own namespaces
    Service,
}

/// `--transport` (the library's [`Transport`], as the command line spells it).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum TransportArg {
    /// FUSE over io_uring when the kernel offers it, else /dev/fuse
    #[default]
    Auto,
    /// FUSE over io_uring: one queue per CPU, each request answered on the CPU that made it
    /// (Linux 6.14+, `fuse.enable_uring=1`)
    Uring,
    /// Requests read from and answered through /dev/fuse
    Dev,
}

impl From<TransportArg> for Transport {
    fn from(arg: TransportArg) -> Transport {
        match arg {
            TransportArg::Auto => Transport::Auto,
            TransportArg::Uring => Transport::Uring,
            TransportArg::Dev => Transport::Dev,
        }
    }
}

/// `--verity`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum VerityMode {
    /// No checks
    #[default]
    None,
    /// A redirected file's object must carry the digest, else opening it fails (EIO), like
    /// overlayfs `verity=require`
    Require,
}

#[cfg(test)]
#[path = "args_tests.rs"]
mod tests;
