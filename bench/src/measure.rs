//! The measurements, run against one mounted image at a time.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::floor;
use crate::images::Image;
use crate::rng::Rng;
use crate::servers::{Cache, Dirs, Server};
use crate::trace::{RequestTracer, Requests};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Metric {
    /// Spawn of the server (of the first `mount(8)` for the kernel) → a deep `stat` answers,
    /// caches dropped.
    StartupCmdCold,
    /// The same, right after another start of the same server (caches as it left them).
    StartupCmdWarm,
    /// The library call (the first mount system call for the kernel) in a running process → a
    /// deep `stat` answers, caches dropped.
    StartupLibCold,
    /// The same, right after another in-process start.
    StartupLibWarm,
    /// `find -printf` of every entry's metadata, right after a cold start.
    WalkCold,
    /// The same walk again.
    WalkWarm,
    /// `getfattr -R -h -d -m -` after the walks.
    XattrWalk,
    /// One null request (`lgetxattr` of an absent name on the mount's root), median of many,
    /// after the walks: a FUSE round trip, or the kernel's system call alone.
    RoundTrip,
    /// The server's user CPU time during the round trips, per round trip (FUSE only): the part
    /// of a round trip a faster server could save.
    ServerUserPerTrip,
    /// The server's system CPU time during the round trips, per round trip (FUSE only): the
    /// kernel's work in the server's threads (taking the request, the answer, the switches).
    ServerSystemPerTrip,
    /// `chroot MNT python3` importing a dozen stdlib modules, caches dropped, fresh mount.
    PythonCold,
    /// The same import again.
    PythonWarm,
    /// `chroot MNT ls -lR /usr/share`, caches dropped, fresh mount.
    LsCold,
    /// The same listing again.
    LsWarm,
    /// Random `stat`s of existing names in the large directory on a fresh mount.
    Lookups,
    /// `cat` of the large files to /dev/null on a fresh mount, caches dropped.
    ReadCold,
    /// The same read again.
    ReadWarm,
    /// The server's VmHWM after the walks.
    PeakRss,
    /// The server's anonymous resident memory (RssAnon) after the walks: what the kernel
    /// cannot reclaim or share, unlike a mapped image's pages.
    AnonRss,
    /// CPU time (user + system) the server spent from start through the xattr walk.
    ServerCpu,
}

pub enum Unit {
    Seconds,
    MegabytesPerSecond,
    Bytes,
}

impl Metric {
    pub const ALL: [Metric; 20] = [
        Metric::StartupCmdCold,
        Metric::StartupCmdWarm,
        Metric::StartupLibCold,
        Metric::StartupLibWarm,
        Metric::WalkCold,
        Metric::WalkWarm,
        Metric::XattrWalk,
        Metric::RoundTrip,
        Metric::ServerUserPerTrip,
        Metric::ServerSystemPerTrip,
        Metric::PythonCold,
        Metric::PythonWarm,
        Metric::LsCold,
        Metric::LsWarm,
        Metric::Lookups,
        Metric::ReadCold,
        Metric::ReadWarm,
        Metric::PeakRss,
        Metric::AnonRss,
        Metric::ServerCpu,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Metric::StartupCmdCold => "startup cmd cold",
            Metric::StartupCmdWarm => "startup cmd warm",
            Metric::StartupLibCold => "startup lib cold",
            Metric::StartupLibWarm => "startup lib warm",
            Metric::WalkCold => "walk cold",
            Metric::WalkWarm => "walk warm",
            Metric::XattrWalk => "xattr walk",
            Metric::RoundTrip => "round trip",
            Metric::ServerUserPerTrip => "server user / trip",
            Metric::ServerSystemPerTrip => "server system / trip",
            Metric::PythonCold => "python cold",
            Metric::PythonWarm => "python warm",
            Metric::LsCold => "ls -lR cold",
            Metric::LsWarm => "ls -lR warm",
            Metric::Lookups => "lookups",
            Metric::ReadCold => "read cold",
            Metric::ReadWarm => "read warm",
            Metric::PeakRss => "server RSS",
            Metric::AnonRss => "server anon",
            Metric::ServerCpu => "server CPU",
        }
    }

    pub fn unit(self) -> Unit {
        match self {
            Metric::ReadCold | Metric::ReadWarm => Unit::MegabytesPerSecond,
            Metric::PeakRss | Metric::AnonRss => Unit::Bytes,
            _ => Unit::Seconds,
        }
    }
}

/// The samples of one (image, server, metric), or why there are none.
#[derive(Default)]
pub struct Cell {
    pub samples: Vec<f64>,
    pub error: Option<String>,
    /// Not measurable on this machine (the reason is in `error`): reported `n/a`.
    pub unavailable: bool,
}

#[derive(Default)]
pub struct Results {
    pub cells: BTreeMap<(String, &'static str, Metric), Cell>,
    /// Servers that could not run on an image, and why.
    pub unavailable: BTreeMap<(String, &'static str), String>,
    /// The FUSE requests of each measured command, from the counting pass (or why not).
    pub requests: BTreeMap<(String, &'static str, Metric), Result<Requests, String>>,
}

impl Results {
    fn record(
        &mut self,
        image: &Image,
        server: &Server,
        metric: Metric,
        value: anyhow::Result<f64>,
    ) {
        let cell = self
            .cells
            .entry((image.name.clone(), server.name, metric))
            .or_default();
        match value {
            Ok(v) => cell.samples.push(v),
            Err(e) => {
                eprintln!(
                    "bench: {} on {}: {}: {e:#}",
                    server.name,
                    image.name,
                    metric.label()
                );
                cell.error.get_or_insert_with(|| format!("{e:#}"));
            }
        }
    }

    fn record_requests(
        &mut self,
        image: &Image,
        server: &Server,
        metric: Metric,
        requests: anyhow::Result<Requests>,
    ) {
        if let Err(e) = &requests {
            eprintln!(
                "bench: {} on {}: counting requests of {}: {e:#}",
                server.name,
                image.name,
                metric.label()
            );
        }
        self.requests.insert(
            (image.name.clone(), server.name, metric),
            requests.map_err(|e| format!("{e:#}")),
        );
    }
}

/// How a phase runs its commands: timed, or once more with the FUSE requests counted.
#[derive(Clone, Copy)]
pub enum Pass<'a> {
    Timed,
    Count(&'a RequestTracer),
}

impl Pass<'_> {
    fn timed(self) -> bool {
        matches!(self, Pass::Timed)
    }
}

pub struct Config {
    pub runs: usize,
    /// Cold starts per run besides the one before the walks (startup is decided by a few disk
    /// reads, so it varies most from one start to the next).
    pub startups: usize,
    /// Bound on every wait: startup, each walk, each read.
    pub timeout: Duration,
    pub lookups: usize,
    /// Whether to run the xattr walk (skipped on the largest images: minutes per server).
    pub xattr_walk: bool,
    pub dirs: Dirs,
    /// Scratch files (lookup lists, command errors).
    pub scratch: PathBuf,
}

/// Runs every measurement of `server` on `image`, `config.runs` times, then (FUSE servers,
/// with a `tracer`) once more untimed, counting the requests of each command.
pub fn bench(
    image: &Image,
    server: &Server,
    config: &Config,
    tracer: Option<&RequestTracer>,
    results: &mut Results,
) {
    if let Some(why) = &server.missing {
        results
            .unavailable
            .insert((image.name.clone(), server.name), why.clone());
        return;
    }
    for run in 0..config.runs {
        eprintln!(
            "bench: {} / {} run {}/{}",
            image.name,
            server.name,
            run + 1,
            config.runs
        );
        let phases: [Phase; 5] = [walks, startups, container, lookups, reads];
        for phase in phases {
            // A phase fails as a whole when the server does not start (or unmount): nothing
            // else of this server runs on this image.
            if let Err(e) = phase(image, server, config, run, Pass::Timed, results) {
                if run == 0 {
                    eprintln!("bench: {} on {}: {e:#}", server.name, image.name);
                    results
                        .unavailable
                        .insert((image.name.clone(), server.name), format!("{e:#}"));
                } else {
                    results.record(image, server, Metric::StartupCmdCold, Err(e));
                }
                return;
            }
        }
    }
    let Some(tracer) = tracer.filter(|_| server.is_fuse()) else {
        return;
    };
    eprintln!("bench: {} / {} counting requests", image.name, server.name);
    let phases: [Phase; 3] = [walks, container, lookups];
    for phase in phases {
        if let Err(e) = phase(image, server, config, 0, Pass::Count(tracer), results) {
            eprintln!(
                "bench: {} on {}: counting requests: {e:#}",
                server.name, image.name
            );
            return;
        }
    }
}

type Phase = fn(&Image, &Server, &Config, usize, Pass, &mut Results) -> anyhow::Result<()>;

/// Runs `cmd` as `metric`: timed (recording seconds) or counting its requests.
fn measure(
    image: &Image,
    server: &Server,
    metric: Metric,
    cmd: Command,
    config: &Config,
    pass: Pass,
    results: &mut Results,
) {
    match pass {
        Pass::Timed => results.record(image, server, metric, time(cmd, config).map(secs)),
        Pass::Count(tracer) => {
            let errors = config.scratch.join("stderr.txt");
            let requests = tracer.count(cmd, &errors, config.timeout);
            results.record_requests(image, server, metric, requests);
        }
    }
}

/// Cold start, cold and warm metadata walks, xattr walk, peak RSS.
fn walks(
    image: &Image,
    server: &Server,
    config: &Config,
    _run: usize,
    pass: Pass,
    results: &mut Results,
) -> anyhow::Result<()> {
    let (mount, _) = server.start(image, &config.dirs, config.timeout, Cache::Cold)?;
    let mnt = &config.dirs.mountpoint;
    let find = || {
        let mut cmd = Command::new("find");
        cmd.arg(mnt).args(["-printf", "%p %s %m %n %U %G %T@\\n"]);
        cmd
    };
    measure(
        image,
        server,
        Metric::WalkCold,
        find(),
        config,
        pass,
        results,
    );
    measure(
        image,
        server,
        Metric::WalkWarm,
        find(),
        config,
        pass,
        results,
    );
    if config.xattr_walk {
        let mut getfattr = Command::new("getfattr");
        getfattr.args(["-R", "-h", "-d", "-m", "-"]).arg(mnt);
        measure(
            image,
            server,
            Metric::XattrWalk,
            getfattr,
            config,
            pass,
            results,
        );
    }
    if server.is_fuse() && pass.timed() {
        let rss = mount
            .peak_rss()
            .context("no VmHWM: server gone")
            .map(|b| b as f64);
        results.record(image, server, Metric::PeakRss, rss);
        let anon = mount
            .anon_rss()
            .context("no RssAnon: server gone")
            .map(|b| b as f64);
        results.record(image, server, Metric::AnonRss, anon);
        let cpu = mount.cpu_time().context("no /proc/PID/stat: server gone");
        results.record(image, server, Metric::ServerCpu, cpu);
    }
    // After the server CPU reading, which stays "start through the xattr walk".
    if pass.timed() {
        let before = mount.user_and_system_time();
        results.record(image, server, Metric::RoundTrip, floor::round_trip(mnt));
        if let (Some(before), Some(after)) = (before, mount.user_and_system_time()) {
            let per_trip = |seconds: f64| Ok(seconds / floor::TRIPS as f64);
            let (user, system) = (after.0 - before.0, after.1 - before.1);
            results.record(image, server, Metric::ServerUserPerTrip, per_trip(user));
            results.record(image, server, Metric::ServerSystemPerTrip, per_trip(system));
        }
    }
    mount.stop()
}

/// The startup rows: starts stopped once the deep `stat` answers, `1 + config.startups` of
/// each kind: as a command, cold then warm; then in-process (servers with a library call), cold
/// then warm.
fn startups(
    image: &Image,
    server: &Server,
    config: &Config,
    _run: usize,
    pass: Pass,
    results: &mut Results,
) -> anyhow::Result<()> {
    // Warm starts follow the cold ones: the first finds the page cache as the last cold start
    // left it.
    for (cache, metric) in [
        (Cache::Cold, Metric::StartupCmdCold),
        (Cache::Warm, Metric::StartupCmdWarm),
    ] {
        for _ in 0..=config.startups {
            let (mount, startup) =
                server.start_command(image, &config.dirs, config.timeout, cache)?;
            if pass.timed() {
                results.record(image, server, metric, Ok(startup.as_secs_f64()));
            }
            mount.stop()?;
        }
    }
    if server.in_process.is_none() {
        return Ok(());
    }
    // A failed in-process start is reported in its cell; the command rows go on.
    for (cache, metric) in [
        (Cache::Cold, Metric::StartupLibCold),
        (Cache::Warm, Metric::StartupLibWarm),
    ] {
        for _ in 0..=config.startups {
            let startup = server
                .start_in_process(image, &config.dirs, config.timeout, cache)
                .and_then(|d| d.context("no in-process start"));
            let failed = startup.is_err();
            results.record(image, server, metric, startup.map(secs));
            if failed {
                break;
            }
        }
    }
    Ok(())
}

/// The stdlib modules the python start imports: what a small service pulls in.
const PYTHON_IMPORTS: &str = "import json, email, http.client, decimal, asyncio, \
    xml.etree.ElementTree, sqlite3, argparse, logging, subprocess, csv, unittest";

/// Container start (images to chroot into): python3 importing stdlib modules, and
/// `ls -lR /usr/share`, each cold (caches dropped, fresh mount) then warm.
fn container(
    image: &Image,
    server: &Server,
    config: &Config,
    _run: usize,
    pass: Pass,
    results: &mut Results,
) -> anyhow::Result<()> {
    let Some(chroot) = &image.chroot else {
        return Ok(());
    };
    if !server.serves_data() {
        return Ok(());
    }
    let in_chroot = |args: &[&str]| {
        let mut cmd = Command::new("chroot");
        cmd.arg(&config.dirs.mountpoint)
            .args(args)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LANG", "C.UTF-8");
        cmd
    };
    if chroot.python {
        // -I: no user site or environment; -B: the mount is read-only anyway.
        let python = || in_chroot(&["/usr/bin/python3", "-I", "-B", "-c", PYTHON_IMPORTS]);
        let (mount, _) = server.start(image, &config.dirs, config.timeout, Cache::Cold)?;
        measure(
            image,
            server,
            Metric::PythonCold,
            python(),
            config,
            pass,
            results,
        );
        measure(
            image,
            server,
            Metric::PythonWarm,
            python(),
            config,
            pass,
            results,
        );
        mount.stop()?;
    } else if pass.timed() {
        for metric in [Metric::PythonCold, Metric::PythonWarm] {
            let cell = results
                .cells
                .entry((image.name.clone(), server.name, metric))
                .or_default();
            cell.error = Some("no /usr/bin/python3 on this machine".to_string());
            cell.unavailable = true;
        }
    }
    let ls = || in_chroot(&["ls", "-lR", "/usr/share"]);
    let (mount, _) = server.start(image, &config.dirs, config.timeout, Cache::Cold)?;
    measure(image, server, Metric::LsCold, ls(), config, pass, results);
    measure(image, server, Metric::LsWarm, ls(), config, pass, results);
    mount.stop()
}

/// Random lookups in the large directory, on a fresh mount with caches dropped.
fn lookups(
    image: &Image,
    server: &Server,
    config: &Config,
    run: usize,
    pass: Pass,
    results: &mut Results,
) -> anyhow::Result<()> {
    let Some((dir, names)) = &image.big_dir else {
        return Ok(());
    };
    let mut rng = Rng::new(run as u64);
    let mut list = String::new();
    for _ in 0..config.lookups {
        let name = &names[rng.below(names.len())];
        writeln!(
            list,
            "{}",
            config.dirs.mountpoint.join(dir).join(name).display()
        )?;
    }
    let list_path = config.scratch.join("lookups.txt");
    fs::write(&list_path, list)?;

    let (mount, _) = server.start(image, &config.dirs, config.timeout, Cache::Cold)?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.arg("stat-paths").arg(&list_path);
    measure(image, server, Metric::Lookups, cmd, config, pass, results);
    mount.stop()
}

/// Sequential reads of the large files, on a fresh mount with caches dropped, then again.
fn reads(
    image: &Image,
    server: &Server,
    config: &Config,
    _run: usize,
    _pass: Pass,
    results: &mut Results,
) -> anyhow::Result<()> {
    if image.large_files.is_empty() || !server.serves_data() {
        return Ok(());
    }
    let bytes: u64 = image.large_files.iter().map(|(_, size)| size).sum();
    let cat = || {
        let mut cmd = Command::new("cat");
        cmd.args(
            image
                .large_files
                .iter()
                .map(|(p, _)| config.dirs.mountpoint.join(p)),
        );
        cmd
    };
    let rate = |d: Duration| bytes as f64 / 1e6 / d.as_secs_f64();
    let (mount, _) = server.start(image, &config.dirs, config.timeout, Cache::Cold)?;
    results.record(
        image,
        server,
        Metric::ReadCold,
        time(cat(), config).map(rate),
    );
    results.record(
        image,
        server,
        Metric::ReadWarm,
        time(cat(), config).map(rate),
    );
    mount.stop()
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

/// Runs `cmd` (stdout to /dev/null) to completion within the timeout; fails on a non-zero exit.
fn time(mut cmd: Command, config: &Config) -> anyhow::Result<Duration> {
    let errors = config.scratch.join("stderr.txt");
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&errors)?);
    let program = cmd.get_program().to_string_lossy().into_owned();
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("running {program}"))?;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if start.elapsed() > config.timeout {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{program}: timeout after {:?}", config.timeout);
        }
        std::thread::sleep(Duration::from_micros(500));
    };
    let elapsed = start.elapsed();
    if !status.success() {
        let stderr = fs::read_to_string(&errors).unwrap_or_default();
        let count = stderr.lines().count();
        let first = stderr.lines().next().unwrap_or("");
        bail!("{program}: {status}, {count} error lines, first: {first}");
    }
    Ok(elapsed)
}

pub fn drop_caches() -> anyhow::Result<()> {
    rustix::fs::sync();
    fs::write("/proc/sys/vm/drop_caches", "3").context("dropping caches (needs root)")
}

/// The `stat-paths` helper: `lstat` every path listed in `list`, failing on the first error.
pub fn stat_paths(list: &Path) -> anyhow::Result<()> {
    let list = fs::read_to_string(list)?;
    for path in list.lines() {
        fs::symlink_metadata(path).with_context(|| format!("stat {path}"))?;
    }
    Ok(())
}
