//! The two transports: `/dev/fuse` when FUSE over io_uring is off (and a clear error when it
//! is required), io_uring serving exactly what the rootful kernel composefs mount shows (direct
//! mount and rootless `lazycfs run`), and io_uring under a burst of parallel walkers on every
//! CPU, ended by SIGTERM.
//!
//! The kernel switch (`/sys/module/fuse/parameters/enable_uring`) is global: the tests that
//! set it hold a lock while it is set, and restore the value they found.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::guard::Guard;
use common::tree::{self, CompareOptions};
use common::{cfs, kernel, objects, rootless};
use lazycfs::erofs::Image;
use lazycfs::mount::{ServeOptions, Transport};

const LAZYCFS: &str = env!("CARGO_BIN_EXE_lazycfs");
use common::transport::ENABLE_URING as PARAMETER;

static PARAMETER_LOCK: Mutex<()> = Mutex::new(());

/// `enable_uring` set for as long as this lives, then restored.
struct UringSwitch {
    previous: String,
    _lock: MutexGuard<'static, ()>,
}

impl UringSwitch {
    /// Sets the switch (root, kernel with FUSE over io_uring); `None` if the test is skipped.
    fn set(test: &str, on: bool) -> Option<UringSwitch> {
        if !kernel::require_composefs(test) {
            return None;
        }
        let lock = PARAMETER_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        let Ok(previous) = std::fs::read_to_string(PARAMETER) else {
            common::skip(
                test,
                "the kernel has no FUSE over io_uring (CONFIG_FUSE_IO_URING)",
            );
            return None;
        };
        std::fs::write(PARAMETER, if on { "Y" } else { "N" }).unwrap();
        Some(UringSwitch {
            previous: previous.trim().to_string(),
            _lock: lock,
        })
    }
}

impl Drop for UringSwitch {
    fn drop(&mut self) {
        let _ = std::fs::write(PARAMETER, &self.previous);
    }
}

/// Not a test of its own: `lazycfs run`'s walk of its mount (see `rootless::walk_in_run`).
#[test]
#[ignore = "the walker the tests run as a child process"]
fn walk_helper() {
    rootless::walk_helper();
}

/// The kinds fixture as a composefs image with its objects.
fn kinds(dir: &Path, version: u32) -> (PathBuf, PathBuf) {
    let image = dir.join(format!("kinds-v{version}.erofs"));
    std::fs::write(
        &image,
        cfs::write_image(include_str!("data/kinds.dump"), version),
    )
    .unwrap();
    let basedir = dir.join(format!("objects-v{version}"));
    std::fs::create_dir(&basedir).unwrap();
    let objects = objects::populate(&Image::open(&image).unwrap(), &basedir);
    assert!(objects > 0, "kinds.dump names objects");
    (image, basedir)
}

fn is_mounted(path: &Path) -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let path = path.to_str().unwrap();
    mounts.lines().any(|l| l.split(' ').nth(4) == Some(path))
}

#[test]
fn without_io_uring_auto_serves_dev_and_uring_is_refused() {
    let test = "without_io_uring_auto_serves_dev_and_uring_is_refused";
    let Some(_switch) = UringSwitch::set(test, false) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (image, basedir) = kinds(dir.path(), 1);
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let options = ServeOptions::new().basedir(&basedir);
    assert_eq!(options.requested_transport(), Transport::Auto);
    let mounted = lazycfs::mount::mount(Image::open(&image).unwrap(), &mnt, &options).unwrap();
    assert_eq!(mounted.transport(), Transport::Dev);
    assert_eq!(std::fs::read(mnt.join("dash")).unwrap(), b"-");
    let stats = mounted.stats();
    assert!(stats.dev_requests.load(Ordering::Relaxed) > 0);
    assert_eq!(stats.uring_received.load(Ordering::Relaxed), 0);
    mounted.unmount().unwrap();

    let uring = options.transport(Transport::Uring);
    let refused = lazycfs::mount::mount(Image::open(&image).unwrap(), &mnt, &uring);
    let error = refused.err().expect("io_uring is off").to_string();
    assert_eq!(
        error,
        "FUSE over io_uring unavailable: /sys/module/fuse/parameters/enable_uring is N"
    );
    assert!(!is_mounted(&mnt), "nothing stays mounted");

    // The command line: `--transport uring`, or the environment, fails the same way.
    for (args, env) in [
        (&["--transport", "uring"][..], None),
        (&[][..], Some("uring")),
    ] {
        let mut cmd = Command::new(LAZYCFS);
        cmd.args(["mount", "--mode", "direct"]).args(args);
        cmd.arg(&image).arg(&mnt).env_remove("LAZYCFS_TRANSPORT");
        if let Some(value) = env {
            cmd.env("LAZYCFS_TRANSPORT", value);
        }
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?} {env:?}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.contains("enable_uring is N"), "{stderr}");
        assert!(!is_mounted(&mnt), "nothing stays mounted");
    }
}

#[test]
fn io_uring_serves_what_the_kernel_composefs_mount_shows() {
    let test = "io_uring_serves_what_the_kernel_composefs_mount_shows";
    let Some(_switch) = UringSwitch::set(test, true) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    for version in cfs::VERSIONS {
        let (image, basedir) = kinds(dir.path(), version);
        let reference = kernel::KernelMount::composefs(&image, &basedir).unwrap();
        let theirs = tree::walk(reference.path());
        drop(reference);
        let mnt = dir.path().join(format!("mnt-v{version}"));
        std::fs::create_dir(&mnt).unwrap();
        let options = ServeOptions::new().basedir(&basedir);
        let mounted = lazycfs::mount::mount(Image::open(&image).unwrap(), &mnt, &options).unwrap();
        assert_eq!(mounted.transport(), Transport::Uring, "auto picks io_uring");
        let ours = tree::walk(&mnt);
        let stats = mounted.stats();
        let answered = stats.uring_answered.load(Ordering::Relaxed);
        let on_dev = stats.dev_requests.load(Ordering::Relaxed);
        let objects = [&stats.object_opens, &stats.object_reads].map(|c| c.load(Ordering::Relaxed));
        mounted.unmount().unwrap();
        let opts = CompareOptions {
            ino: false,
            content: true,
            both_unreadable: false,
        };
        if let Err(diff) = tree::compare_with(&theirs, &ours, opts) {
            panic!("V{version}: kernel composefs vs lazycfs on io_uring: {diff}");
        }
        assert!(answered > 0, "V{version}: requests came through the rings");
        assert_eq!(
            on_dev, 0,
            "V{version}: no request but FORGET uses /dev/fuse"
        );
        // Root in direct mode: opens answered on the rings carry passthrough backing ids, and
        // the kernel reads the objects itself.
        assert!(objects[0] > 0, "V{version}: redirected files were opened");
        assert_eq!(objects[1], 0, "V{version}: object reads bypass the server");
    }
}

#[test]
fn rootless_run_serves_through_io_uring() {
    let test = "rootless_run_serves_through_io_uring";
    let Some(_switch) = UringSwitch::set(test, true) else {
        return;
    };
    if !rootless::require(test) {
        return;
    }
    let dir = tempfile::Builder::new()
        .prefix("lazycfs-uring")
        .tempdir()
        .unwrap();
    rootless::make_readable(dir.path());
    let (image, basedir) = kinds(dir.path(), 1);
    rootless::make_readable(&image);
    rootless::make_readable(&basedir);
    let reference = kernel::KernelMount::composefs(&image, &basedir).unwrap();
    let theirs =
        rootless::without_trusted_xattrs(rootless::fingerprint(tree::walk(reference.path())));
    drop(reference);
    let extra = ["--transport", "uring"];
    let (ours, stderr) = rootless::walk_in_run(Path::new(LAZYCFS), &image, &basedir, &extra)
        .unwrap_or_else(|e| panic!("{e}"));
    let opts = CompareOptions {
        ino: false,
        content: true,
        both_unreadable: false,
    };
    if let Err(diff) = tree::compare_with(&theirs, &ours, opts) {
        panic!("rootful kernel composefs vs rootless lazycfs run on io_uring: {diff}");
    }
    assert!(stderr.contains("transport uring"), "{stderr}");
    let (received, answered) = uring_counts(&stderr);
    assert!(received > 0 && received == answered, "{stderr}");
}

/// The io_uring counts of the server's summary line (`N received on io_uring, N answered`).
fn uring_counts(stderr: &str) -> (u64, u64) {
    let line = stderr
        .lines()
        .find(|l| l.contains("server: ") && l.contains("on io_uring"))
        .unwrap_or_else(|| panic!("no server counters in:\n{stderr}"));
    let count = |what: &str| -> u64 {
        let before = &line[..line.find(what).unwrap()];
        before.rsplit(", ").next().unwrap().trim().parse().unwrap()
    };
    (
        count(" received on io_uring"),
        count(" answered on io_uring"),
    )
}

/// A tree for the burst: `DIRS` directories of `FILES` files, each with its own content and
/// xattr, as a composefs dump.
const DIRS: usize = 24;
const FILES: usize = 40;

fn burst_dump() -> String {
    let mut dump = String::from("/ 0 40755 2 0 0 0 1700000000.0 - - -\n");
    for d in 0..DIRS {
        dump += &format!("/d{d} 0 40755 2 0 0 0 1700000000.0 - - -\n");
        for f in 0..FILES {
            let content = expected_content(d, f);
            dump += &format!(
                "/d{d}/f{f} {} 100644 1 0 0 0 1700000000.0 - {content} - user.id=d{d}f{f}\n",
                content.len()
            );
        }
    }
    dump
}

fn expected_content(d: usize, f: usize) -> String {
    format!("d{d}-f{f}-").repeat(1 + (d * FILES + f) % 7)
}

/// One pass over the tree: every directory listed, every file stat'ed, read and its xattr
/// fetched. Wrong answers are counted in `wrong`; errors (after the unmount) end the pass.
fn walk_once(mnt: &Path, wrong: &AtomicU64) -> Result<(), std::io::Error> {
    for d in 0..DIRS {
        let dir = mnt.join(format!("d{d}"));
        let listed = std::fs::read_dir(&dir)?.count();
        if listed != FILES {
            wrong.fetch_add(1, Ordering::Relaxed);
        }
        for f in 0..FILES {
            let path = dir.join(format!("f{f}"));
            let content = std::fs::read(&path)?;
            let mut buf = [0u8; 64];
            let n = rustix::fs::getxattr(&path, "user.id", &mut buf[..])?;
            let xattr = &buf[..n];
            let len = std::fs::metadata(&path)?.len();
            let expected = expected_content(d, f);
            if content != expected.as_bytes()
                || xattr != format!("d{d}f{f}").as_bytes()
                || len != expected.len() as u64
            {
                wrong.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    Ok(())
}

/// A foreground server, guarded (killed, its mount detached) should the test fail.
fn mount_foreground(image: &Path, mnt: &Path) -> Guard {
    use std::io::BufRead;
    let mut server = Command::new(LAZYCFS)
        .args(["-v", "mount", "--foreground", "--mode", "direct"])
        .args(["--transport", "uring"])
        .arg(image)
        .arg(mnt)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = server.stdout.take().unwrap();
    let guard = Guard::process(server).and_mount(mnt);
    let mut ready = String::new();
    std::io::BufReader::new(stdout)
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "lazycfs: ready");
    guard
}

/// The burst image, mounted over io_uring by a foreground `lazycfs mount` under `dir`.
fn mount_burst(dir: &Path) -> (PathBuf, Guard) {
    let image = dir.join("burst.erofs");
    std::fs::write(&image, cfs::write_image(&burst_dump(), 1)).unwrap();
    let mnt = dir.join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let server = mount_foreground(&image, &mnt);
    (mnt, server)
}

#[test]
fn sigterm_mid_burst_on_every_queue_ends_cleanly() {
    let test = "sigterm_mid_burst_on_every_queue_ends_cleanly";
    let Some(_switch) = UringSwitch::set(test, true) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mnt, server) = mount_burst(dir.path());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let stop = Arc::new(AtomicBool::new(false));
    let mut server = server.and_stop(&stop);
    let wrong = Arc::new(AtomicU64::new(0));
    let passes = Arc::new(AtomicU64::new(0));
    let (done, finished) = std::sync::mpsc::channel();
    for walker in 0..8 {
        let (mnt, stop, wrong, passes, done) = (
            mnt.clone(),
            stop.clone(),
            wrong.clone(),
            passes.clone(),
            done.clone(),
        );
        std::thread::spawn(move || {
            // Walkers on every CPU, so that every queue serves some of the burst.
            let mut set = rustix::thread::CpuSet::new();
            set.set(walker % cpus);
            // A CPU outside this cgroup's set: the walker runs where it may.
            let _ = rustix::thread::sched_setaffinity(None, &set);
            while !stop.load(Ordering::Relaxed) {
                if walk_once(&mnt, &wrong).is_ok() {
                    passes.fetch_add(1, Ordering::Relaxed);
                }
            }
            done.send(walker).unwrap();
        });
    }
    drop(done);
    // Mid-burst: once the walkers have completed a few passes between them.
    let deadline = Instant::now() + Duration::from_secs(60);
    while passes.load(Ordering::Relaxed) < 16 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        passes.load(Ordering::Relaxed) >= 16,
        "the walkers make progress"
    );
    rustix::process::kill_process(
        rustix::process::Pid::from_child(server.child()),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = wait_timeout(server.child(), Duration::from_secs(30));
    stop.store(true, Ordering::Relaxed);
    for _ in 0..8 {
        finished
            .recv_timeout(Duration::from_secs(30))
            .expect("every walker finishes: no request is lost");
    }
    let status = status.expect("the server exits after SIGTERM");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut server.child().stderr.take().unwrap(), &mut stderr).unwrap();
    eprintln!(
        "{} passes; server:\n{stderr}",
        passes.load(Ordering::Relaxed)
    );
    assert!(status.success(), "{status}: {stderr}");
    assert!(!is_mounted(&mnt), "the mount is gone");
    assert_eq!(wrong.load(Ordering::Relaxed), 0, "no wrong answer");
    assert!(stderr.contains("transport uring"), "{stderr}");
    let (received, answered) = uring_counts(&stderr);
    assert!(received > 0, "{stderr}");
    assert_eq!(received, answered, "every request answered once: {stderr}");
}

fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if let Some(status) = child.try_wait().unwrap() {
            return Some(status);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
    None
}

#[test]
fn sigterm_detaches_a_busy_mount_and_serves_its_last_user() {
    let test = "sigterm_detaches_a_busy_mount_and_serves_its_last_user";
    let Some(_switch) = UringSwitch::set(test, true) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (mnt, mut server) = mount_burst(dir.path());
    let user = std::fs::File::open(mnt.join("d1")).unwrap();
    rustix::process::kill_process(
        rustix::process::Pid::from_child(server.child()),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    // Unmounting fails (EBUSY) for a second, then the mount is detached from its path...
    let deadline = Instant::now() + Duration::from_secs(10);
    while is_mounted(&mnt) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!is_mounted(&mnt), "detached");
    // ...and still serves the user it has.
    let file = rustix::fs::openat(&user, "f3", rustix::fs::OFlags::RDONLY, 0.into()).unwrap();
    let mut content = String::new();
    std::io::Read::read_to_string(&mut std::fs::File::from(file), &mut content).unwrap();
    assert_eq!(content, expected_content(1, 3));
    assert!(
        server.child().try_wait().unwrap().is_none(),
        "serving while in use"
    );
    drop(user);
    let status = wait_timeout(server.child(), Duration::from_secs(10)).expect("exits once unused");
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut server.child().stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{status}: {stderr}");
    assert!(stderr.contains("mount busy: detached"), "{stderr}");
}
