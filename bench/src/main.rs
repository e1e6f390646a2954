//! `lazycfs-bench`: the end-to-end benchmark of lazycfs against composefs-fuse 0.7 and 0.9 and
//! the kernel (EROFS + overlay, and EROFS alone). See README.md.

mod cleanup;
mod floor;
mod images;
mod library;
mod measure;
mod report;
mod rng;
mod servers;
mod trace;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, ensure};
use clap::{Parser, Subcommand};

use images::Image;
use measure::{Config, Results};
use servers::{Arg, Dirs, InProcess, Kind, Server};

/// End-to-end benchmark: lazycfs vs composefs-fuse vs the kernel. Needs root.
#[derive(Parser)]
struct Cli {
    /// Where the tables (results.md), the plot (startup.svg) and the samples (samples.csv) go
    /// (default bench/results; with --headline, bench/headline).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The run of the top-level README's table: cs9-developer and host-usr; kernel, lazycfs,
    /// lazycfs ovl, lazycfs service, composefs-fuse 0.9 and 0.7 (--images and --servers
    /// override them); --timeout 60 unless given; the output in bench/headline unless --out.
    #[arg(long)]
    headline: bool,
    /// Cached images and objects, mount points, logs.
    #[arg(long, default_value = "/var/tmp/lazycfs-bench")]
    work: PathBuf,
    /// The corpus dumpfiles.
    #[arg(long, default_value = "/work/shared/corpus")]
    corpus: PathBuf,
    /// Smoke test: 2 runs, no 1M-entry image, smaller read objects.
    #[arg(long)]
    quick: bool,
    /// Runs per measurement (default 3, --quick 2; images of 500k+ entries: 1, no xattr walk).
    #[arg(long)]
    runs: Option<usize>,
    /// Cold starts per run besides the one before the walks (default 4, --quick 1): startup is
    /// the median of (1 + this) × runs samples.
    #[arg(long)]
    startups: Option<usize>,
    /// Bound on each wait (startup, each walk, each read), in seconds (default 300, --quick 120).
    #[arg(long)]
    timeout: Option<u64>,
    /// Random lookups in the large directory.
    #[arg(long, default_value_t = 10_000)]
    lookups: usize,
    /// Only these images (comma-separated names).
    #[arg(long, value_delimiter = ',')]
    images: Vec<String>,
    /// Only these servers (comma-separated names, the first is the ratio reference).
    #[arg(long, value_delimiter = ',')]
    servers: Vec<String>,
    /// Do not build lazycfs and the peers (use what is in target/).
    #[arg(long)]
    no_build: bool,
    /// The lazycfs binary of the `lazycfs …` rows (default: the repository's release build,
    /// built first unless --no-build; with this option lazycfs is not built).
    #[arg(long)]
    lazycfs: Option<PathBuf>,
    /// Skip the untimed pass that counts each command's FUSE requests (tracefs).
    #[arg(long)]
    no_requests: bool,
    /// Another lazycfs binary to compare in the same run, as `LABEL=PATH` (repeatable): adds
    /// the servers `LABEL` (direct mode) and `LABEL ovl` (overlay stack), e.g.
    /// `--baseline "lazycfs main=/tmp/lazycfs-main"` for a before/after table.
    #[arg(long, value_parser = parse_baseline)]
    baseline: Vec<(String, PathBuf)>,
    #[command(subcommand)]
    helper: Option<Helper>,
}

#[derive(Subcommand)]
enum Helper {
    /// (internal) lstat every path listed in FILE: the timed part of the lookup benchmark.
    #[command(hide = true)]
    StatPaths { list: PathBuf },
    /// (internal) Mount in-process and time it: the `startup lib` rows (see library.rs).
    #[command(hide = true)]
    LibMount(library::LibMountArgs),
}

/// The images of `--headline`: a corpus image and the container image.
const HEADLINE_IMAGES: [&str; 2] = ["cs9-developer", "host-usr"];
/// The servers of `--headline`: the kernel, lazycfs's modes (the service with its cache
/// warm, and first mounts), the two peers.
const HEADLINE_SERVERS: [&str; 7] = [
    "kernel",
    "lazycfs",
    "lazycfs ovl",
    "lazycfs service",
    "lazycfs service first",
    "composefs-fuse 0.9",
    "composefs-fuse 0.7",
];
/// `--timeout` of `--headline`: below the default, so that a stuck server costs the run less.
const HEADLINE_TIMEOUT: u64 = 60;

/// The bench/ directory.
fn bench_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// The composefs-fuse peers: (server name, crate directory under peers/, binary, extra args).
const PEERS: [(&str, &str, &str, Option<&str>); 3] = [
    (
        "composefs-fuse 0.9",
        "composefs-fuse-0.9",
        "peer-composefs-fuse-09",
        None,
    ),
    (
        "composefs-fuse 0.9 ovl",
        "composefs-fuse-0.9",
        "peer-composefs-fuse-09",
        Some("--overlay"),
    ),
    (
        "composefs-fuse 0.7",
        "composefs-fuse-0.7",
        "peer-composefs-fuse-07",
        None,
    ),
];

fn peer_target() -> PathBuf {
    bench_dir().join("target/peers")
}

fn lazycfs_binary() -> PathBuf {
    bench_dir().join("../target/release/lazycfs")
}

/// Builds the peers and (with `lazycfs`) lazycfs (release). A failed lazycfs build is
/// reported, not fatal.
fn build(lazycfs: bool) -> anyhow::Result<()> {
    for dir in ["composefs-fuse-0.7", "composefs-fuse-0.9"] {
        let status = Command::new("cargo")
            .args(["build", "--release", "--manifest-path"])
            .arg(bench_dir().join("peers").join(dir).join("Cargo.toml"))
            .env("CARGO_TARGET_DIR", peer_target())
            .status()
            .context("running cargo")?;
        ensure!(status.success(), "building peer {dir} failed");
    }
    if !lazycfs {
        return Ok(());
    }
    let status = Command::new("cargo")
        .args(["build", "--release", "--manifest-path"])
        .arg(bench_dir().join("../Cargo.toml"))
        .status()
        .context("running cargo")?;
    if !status.success() {
        eprintln!("bench: building lazycfs failed; it will be reported n/a");
    }
    Ok(())
}

fn parse_baseline(arg: &str) -> Result<(String, PathBuf), String> {
    let (label, path) = arg
        .split_once('=')
        .ok_or_else(|| format!("{arg:?}: expected LABEL=PATH"))?;
    Ok((label.to_string(), PathBuf::from(path)))
}

/// The module parameter FUSE-over-io_uring needs (kernel 6.14+, `CONFIG_FUSE_IO_URING`).
const ENABLE_URING: &str = "/sys/module/fuse/parameters/enable_uring";

/// The command line of a lazycfs mount in `mode`, serving in the foreground.
fn lazycfs_args(mode: &'static str, extra: &[&'static str]) -> Vec<Arg> {
    let mut args = vec![
        Arg::Literal("mount"),
        Arg::Image,
        Arg::Mountpoint,
        Arg::Literal("--basedir"),
        Arg::Basedir,
        Arg::Literal("--foreground"),
        Arg::Literal("--mode"),
        Arg::Literal(mode),
        // The count of missing objects walks the whole image beside the mount: it would warm
        // the image's pages before a cold row and compete with every row for the CPUs.
        Arg::Literal("--no-object-check"),
    ];
    args.extend(extra.iter().copied().map(Arg::Literal));
    args
}

/// A lazycfs server row, or why `program` cannot serve: no `mount` subcommand, or no option
/// the row needs. `--transport dev` is dropped for a binary without `--transport` (it only has
/// `/dev/fuse`), and `--no-object-check` for one that never counts objects, so that the plain
/// rows work with any lazycfs.
fn lazycfs_server(
    name: &'static str,
    program: &Path,
    mut args: Vec<Arg>,
    in_process: Option<InProcess>,
) -> Server {
    let help = Command::new(program)
        .args(["mount", "--help"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let has = |option: &str| {
        help.as_deref().is_some_and(|h| {
            h.split(|c: char| !(c.is_alphanumeric() || c == '-'))
                .any(|word| word == option)
        })
    };
    let uring = args
        .windows(2)
        .any(|w| matches!(w, [Arg::Literal("--transport"), Arg::Literal("uring")]));
    if !has("--no-object-check") {
        args.retain(|a| !matches!(a, Arg::Literal("--no-object-check")));
    }
    if !has("--transport")
        && let Some(i) = args
            .windows(2)
            .position(|w| matches!(w, [Arg::Literal("--transport"), Arg::Literal("dev")]))
    {
        args.drain(i..i + 2);
    }
    let missing = match &help {
        None => Some(format!("{} has no `mount` subcommand", program.display())),
        Some(_) => args.iter().find_map(|a| match a {
            Arg::Literal(option) if option.starts_with("--") && !has(option) => {
                Some(format!("{} has no {option} option", program.display()))
            }
            _ => None,
        }),
    };
    Server {
        name,
        kind: Kind::Fuse {
            program: program.to_path_buf(),
            args,
        },
        missing,
        uring,
        in_process,
    }
}

/// The servers; `library`: the `lazycfs` rows' binary is this tree's build, so the library
/// this program links is theirs and they have in-process rows.
fn servers(lazycfs: &Path, library: bool, baselines: &[(String, PathBuf)]) -> Vec<Server> {
    let mut list = vec![
        Server {
            name: "kernel",
            kind: Kind::Kernel { overlay: true },
            missing: None,
            uring: false,
            in_process: Some(InProcess::Kernel { overlay: true }),
        },
        Server {
            name: "kernel erofs only",
            kind: Kind::Kernel { overlay: false },
            missing: None,
            uring: false,
            in_process: Some(InProcess::Kernel { overlay: false }),
        },
    ];
    // The overlay mode is the rootless stack (FUSE lower layer, `userxattr` overlay, basedir
    // as data-only layer); mounted by root here so the benchmark can see it, it runs the same
    // code paths as under `lazycfs run`.
    // `lazycfs no-poll` is the direct mode without busy polling: what polling buys, and
    // what it costs in server CPU time. The `uring` rows serve over FUSE-over-io_uring, the
    // others over /dev/fuse.
    const DEV: &[&str] = &["--transport", "dev"];
    const URING: &[&str] = &["--transport", "uring"];
    for (name, mode, extra) in [
        ("lazycfs", "direct", DEV),
        ("lazycfs uring", "direct", URING),
        (
            "lazycfs no-poll",
            "direct",
            &["--transport", "dev", "--no-busy-poll"],
        ),
        ("lazycfs ovl", "overlay", DEV),
        ("lazycfs ovl uring", "overlay", URING),
    ] {
        let in_process = library.then(|| InProcess::Lazycfs {
            overlay: mode == "overlay",
            uring: extra.contains(&"uring"),
            busy_poll: !extra.contains(&"--no-busy-poll"),
        });
        list.push(lazycfs_server(
            name,
            lazycfs,
            lazycfs_args(mode, extra),
            in_process,
        ));
    }
    // The mount service: the same kernel mount as `kernel`, of the service's rewrite, with
    // the basedir read with the caller's rights; startup once with the rewrite, once with it
    // cached.
    for (name, cached) in [("lazycfs service", true), ("lazycfs service first", false)] {
        list.push(Server {
            name,
            kind: Kind::Service {
                program: lazycfs.to_path_buf(),
                cached,
            },
            missing: None,
            uring: false,
            in_process: None,
        });
    }
    // Server names live for the whole run.
    for (label, program) in baselines {
        let direct: &'static str = Box::leak(label.clone().into_boxed_str());
        let overlay: &'static str = Box::leak(format!("{label} ovl").into_boxed_str());
        list.push(lazycfs_server(
            direct,
            program,
            lazycfs_args("direct", DEV),
            None,
        ));
        list.push(lazycfs_server(
            overlay,
            program,
            lazycfs_args("overlay", DEV),
            None,
        ));
    }
    for (name, _, binary, extra) in PEERS {
        let mut args = vec![Arg::Image, Arg::Mountpoint, Arg::Basedir];
        args.extend(extra.map(Arg::Literal));
        let program = peer_target().join("release").join(binary);
        let missing = (!program.is_file()).then(|| format!("{} not built", program.display()));
        list.push(Server {
            name,
            kind: Kind::Fuse { program, args },
            missing,
            uring: false,
            in_process: None,
        });
    }
    list
}

/// Sets `fuse.enable_uring` for an io_uring row; puts back the machine's value for the others.
fn uring_parameter(server: &Server) -> anyhow::Result<()> {
    let path = Path::new(ENABLE_URING);
    if server.uring {
        ensure!(
            path.exists(),
            "{ENABLE_URING} missing: no FUSE-over-io_uring in this kernel"
        );
        cleanup::set_parameter(path, "Y")
    } else {
        cleanup::restore_parameter(path);
        Ok(())
    }
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.helper {
        Some(Helper::StatPaths { list }) => return measure::stat_paths(list),
        Some(Helper::LibMount(args)) => {
            // One line, whatever RUST_BACKTRACE says: the benchmark quotes it.
            if let Err(e) = library::lib_mount(args) {
                eprintln!("lib-mount: error: {e:#}");
                std::process::exit(1);
            }
            return Ok(());
        }
        None => {}
    }
    ensure!(
        rustix::process::geteuid().is_root(),
        "the benchmark mounts filesystems: run it as root"
    );

    let work = std::path::absolute(&cli.work)?;
    let dirs = Dirs {
        mountpoint: work.join("mnt"),
        lower: work.join("lower"),
        basedir: work.join("objects"),
        logs: work.join("logs"),
        tmp: work.join("tmp"),
    };
    let scratch = work.join("scratch");
    for dir in [&dirs.basedir, &dirs.logs, &scratch] {
        std::fs::create_dir_all(dir)?;
    }
    let _ = std::fs::remove_dir_all(&dirs.tmp);
    std::fs::create_dir_all(&dirs.tmp)?;
    cleanup::unmount_all_under(&work);
    cleanup::install_handler(&work)?;
    let _restore = cleanup::RestoreOnDrop;

    if !cli.no_build {
        build(cli.lazycfs.is_none())?;
    }
    let lazycfs = match &cli.lazycfs {
        Some(path) => std::path::absolute(path)?,
        None => lazycfs_binary(),
    };
    let out = cli.out.clone().unwrap_or_else(|| {
        PathBuf::from(if cli.headline {
            "bench/headline"
        } else {
            "bench/results"
        })
    });
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let commit = tree_commit(&out);
    let measured = match &cli.lazycfs {
        None => format!("lazycfs commit {commit}"),
        Some(path) => format!(
            "lazycfs binary {} (the benchmark at commit {commit}; no in-process lazycfs rows)",
            path.display()
        ),
    };
    let mut servers = servers(&lazycfs, cli.lazycfs.is_none(), &cli.baseline);
    let chosen: Vec<String> = match (cli.servers.is_empty(), cli.headline) {
        (false, _) => cli.servers.clone(),
        (true, true) => HEADLINE_SERVERS.map(String::from).to_vec(),
        (true, false) => Vec::new(),
    };
    if !chosen.is_empty() {
        servers.retain(|s| chosen.iter().any(|n| n == s.name));
        servers.sort_by_key(|s| chosen.iter().position(|n| n == s.name));
    }
    ensure!(!servers.is_empty(), "no server selected");
    let reference = servers[0].name;

    let wanted: Vec<String> = match (cli.images.is_empty(), cli.headline) {
        (false, _) => cli.images.clone(),
        (true, true) => HEADLINE_IMAGES.map(String::from).to_vec(),
        (true, false) => Vec::new(),
    };
    let mut images: Vec<Image> = Vec::new();
    for (name, recipe) in images::recipes(cli.quick) {
        if wanted.is_empty() || wanted.iter().any(|n| n == name) {
            images.push(images::prepare(
                name,
                &recipe,
                &cli.corpus,
                &work,
                &dirs.basedir,
            )?);
        }
    }

    let runs = cli.runs.unwrap_or(if cli.quick { 2 } else { 3 });
    let timeout = Duration::from_secs(cli.timeout.unwrap_or(match (cli.headline, cli.quick) {
        (true, _) => HEADLINE_TIMEOUT,
        (false, true) => 120,
        (false, false) => 300,
    }));
    let startups = cli.startups.unwrap_or(if cli.quick { 1 } else { 4 });
    let mut config = Config {
        runs,
        startups,
        timeout,
        lookups: cli.lookups,
        xattr_walk: true,
        dirs,
        scratch,
    };
    let tracer = if cli.no_requests || !servers.iter().any(Server::is_fuse) {
        None
    } else {
        trace::RequestTracer::new()
            .inspect_err(|e| eprintln!("bench: FUSE requests will not be counted: {e:#}"))
            .ok()
    };
    // Measured before any server runs, on an otherwise idle machine.
    let switch_pairs: Vec<f64> = (0..runs)
        .map(|_| floor::switch_pair())
        .collect::<anyhow::Result<_>>()
        .context("timing context switches")?;
    let switch_pair = report::median(&switch_pairs).unwrap_or(f64::NAN);
    let mut results = Results::default();
    for image in &images {
        let huge = image.entries >= 500_000;
        config.runs = if huge { 1 } else { runs };
        config.xattr_walk = !huge;
        for server in &servers {
            // A row that cannot run (no --transport) reports that, not the module parameter.
            let parameter = if server.missing.is_some() {
                Ok(())
            } else {
                uring_parameter(server)
            };
            if let Err(e) = parameter {
                results
                    .unavailable
                    .insert((image.name.clone(), server.name), format!("{e:#}"));
                continue;
            }
            measure::bench(image, server, &config, tracer.as_ref(), &mut results);
        }
    }
    drop(tracer);
    cleanup::unmount_all_under(&work);
    cleanup::restore_system();

    let tables = format!(
        "\n## Summary\n{}\n## Round-trip floor\n\nThe measured ratio to `{reference}`, and in \
         parentheses what the workload's FUSE requests cost at the very least, whatever the \
         server does, as a share of `{reference}`'s whole run: requests × {:.1} µs / \
         `{reference}`. {:.1} µs is two context switches on one CPU (the median above), which \
         every synchronous round trip costs the CPU that asked. A server can only approach \
         `1 + share` where the FUSE client does about the kernel's work besides the round \
         trips (warm workloads); where it does less than the kernel (cold walks), it can do \
         better.\n{}\n## Every measurement\n{}",
        report::summary(&images, &servers, &results, reference),
        switch_pair * 1e6,
        switch_pair * 1e6,
        Some(report::floor(
            &images,
            &servers,
            &results,
            reference,
            switch_pair
        ))
        .filter(|table| !table.is_empty())
        .unwrap_or_else(|| "\n(No FUSE requests were counted.)\n".to_string()),
        report::markdown(&images, &servers, &results, reference)
    );
    let command: Vec<String> = std::env::args()
        .skip(1)
        .map(|a| if a.contains(' ') { format!("'{a}'") } else { a })
        .collect();
    let command = format!("bench/run.sh {}", command.join(" "));
    let machine = format!(
        "kernel {}, {} CPUs",
        rustix::system::uname().release().to_string_lossy(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
    );
    let header = format!(
        "# lazycfs end-to-end benchmark: `{}`\n\n{measured}; {machine}; medians [min–max] of \
         {runs} runs (500k+ entries: 1 run, no xattr walk), each startup row over {} starts \
         per run; ratios to `{reference}` (medians). FUSE requests from one more, untimed run \
         with the `fuse_request_send` tracepoint on. Two context switches (a byte over pipes \
         to a thread on the same CPU and back, before any server ran): {} µs median [{}–{}] of \
         {runs} samples of {} round trips each.\n",
        command.trim_end(),
        startups + 1,
        micros(switch_pair),
        micros(switch_pairs.iter().copied().fold(f64::INFINITY, f64::min)),
        micros(
            switch_pairs
                .iter()
                .copied()
                .fold(f64::NEG_INFINITY, f64::max)
        ),
        floor::TRIPS,
    );
    let headline = format!(
        "From `{}` ({measured}; {machine}): medians [min–max] of {runs} runs, each startup row \
         over {} starts per run; in parentheses the ratio to `{reference}` measured in the \
         same run (times: lower is better). The whole output is `{}`.\n{}",
        command.trim_end(),
        startups + 1,
        out.join("results.md").display(),
        report::headline(&images, &servers, &results, reference),
    );
    std::fs::write(out.join("results.md"), format!("{header}{tables}"))?;
    std::fs::write(out.join("headline.md"), headline)?;
    std::fs::write(out.join("samples.csv"), report::csv(&images, &results))?;
    std::fs::write(
        out.join("requests.csv"),
        report::requests_csv(&images, &results),
    )?;
    std::fs::write(
        out.join("startup.svg"),
        report::startup_svg(&images, &servers, &results),
    )?;
    println!("{header}{tables}");
    eprintln!("bench: results in {}", out.display());
    Ok(())
}

/// The commit of the lazycfs tree the benchmark belongs to (`git rev-parse HEAD`), followed by
/// "dirty" when tracked files differ from it (outside `out`, which the run rewrites).
fn tree_commit(out: &Path) -> String {
    let root = bench_dir().join("..");
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(&root)
            .args(args)
            .stderr(std::process::Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim_end().to_string())
    };
    let (Some(head), Some(top)) = (
        git(&["rev-parse", "HEAD"]),
        git(&["rev-parse", "--show-toplevel"]),
    ) else {
        return "unknown (not a git checkout)".to_string();
    };
    let out = std::path::absolute(out).unwrap_or_else(|_| out.to_path_buf());
    let changed = git(&["status", "--porcelain", "--untracked-files=no"]).unwrap_or_default();
    let dirty = changed.lines().any(|line| {
        // `XY PATH` or `XY OLD -> NEW`, relative to the top of the tree.
        let path = line.get(3..).unwrap_or("");
        let path = path.rsplit(" -> ").next().unwrap_or(path);
        !Path::new(&top).join(path).starts_with(&out)
    });
    format!("`{head}`{}", if dirty { " dirty" } else { "" })
}

fn micros(seconds: f64) -> String {
    format!("{:.1}", seconds * 1e6)
}
