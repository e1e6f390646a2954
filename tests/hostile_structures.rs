//! Hostile structures at the server level: images built byte by byte (directory cycles, a
//! directory under two parents, lying `.`/`..`, a 1M-entry directory, a root full of
//! whiteouts, 4096-deep nesting, 10k xattrs with maximum-size values, long-prefix tables at
//! their limits, chunk maps past the end or overlapping, tail data at the image's last byte,
//! names with `/` or NUL, 4 GiB of claimed inline data), each served by the real `lazycfs`
//! binary in the direct and overlay modes and walked by a bounded walker in a child process
//! (readdir every directory, lstat every entry, read files, readlink symlinks, listxattr and
//! getxattr every name).
//!
//! For each: the server is alive after the walk and exits cleanly on `lazycfs umount`; no
//! request took more than 100 ms of server CPU time (`mount -v` logs the slowest); the
//! server's RssAnon stays under 16 MiB (sampled during and after the walk); the walk ends
//! (killed and failed after a timeout). The kernel's EROFS mount of the same image is walked
//! too, for comparison where it means something.
//!
//! Also: `check` validates overlapping chunk maps in work linear in the image size.

mod common;

use std::collections::{BTreeMap, HashSet};
use std::ffi::OsStr;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::io::{BufRead, BufReader, Read};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::guard::Guard;
use common::handmade::*;
use common::{kernel, transport};
use lazycfs::mount::Transport;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};

const LAZYCFS: &str = env!("CARGO_BIN_EXE_lazycfs");
/// Server CPU time any one request may take.
const MAX_REQUEST: Duration = Duration::from_millis(100);
/// The server's anonymous memory (heap, stacks, buffers; the image mapping is file-backed).
const MAX_RSS_ANON_KB: u64 = 16 * 1024;
/// A walk taking longer is a hang: the walker is killed and the test fails.
const WALK_TIMEOUT: Duration = Duration::from_secs(120);

// ---------------------------------------------------------------------------------------------
// The walker, run in a child process (this test binary, `walk_helper`)
// ---------------------------------------------------------------------------------------------

/// Entries the walker lstats in all; directories nested deeper than this are not entered.
const MAX_ENTRIES: u64 = 200_000;
const MAX_DEPTH: usize = 4200;
/// Larger directories are read whole but only this many of their entries are visited
/// (evenly spread): readdir, the server's work that grows with the directory, is complete,
/// and visiting a million entries that are all the same inode would tell nothing more.
const DIR_SAMPLE: usize = 2000;
/// Bytes read from the start of each file, plus a read at its end.
const READ_HEAD: u64 = 1 << 20;
const READ_TAIL: u64 = 64 << 10;
/// Files whose content digest is recorded.
const MAX_DIGESTS: usize = 64;
const WALK_MARK: &str = "HOSTILE-WALK\t";
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

/// What a walk saw.
#[derive(Debug, Default, Clone)]
struct Walk {
    counts: BTreeMap<String, u64>,
    /// `op errno` -> how often.
    errors: BTreeMap<String, u64>,
    /// Path -> (length, digest) of the files read whole.
    digests: BTreeMap<String, (u64, u64)>,
    /// Probe xattr name -> (found, bytes).
    probes: BTreeMap<String, (u64, u64)>,
}

impl Walk {
    fn count(&self, what: &str) -> u64 {
        self.counts.get(what).copied().unwrap_or(0)
    }
    fn add(&mut self, what: &str, n: u64) {
        *self.counts.entry(what.into()).or_default() += n;
    }
    fn err(&mut self, op: &str, e: rustix::io::Errno) {
        *self
            .errors
            .entry(format!("{op} {}", errno_name(e)))
            .or_default() += 1;
    }
    fn errors_of(&self, op: &str) -> u64 {
        self.errors
            .iter()
            .filter(|(k, _)| k.split(' ').next() == Some(op))
            .map(|(_, n)| n)
            .sum()
    }

    fn to_lines(&self) -> String {
        let mut out = String::new();
        for (k, v) in &self.counts {
            out += &format!("{WALK_MARK}count\t{k}\t{v}\n");
        }
        for (k, v) in &self.errors {
            out += &format!("{WALK_MARK}error\t{k}\t{v}\n");
        }
        for (k, (len, digest)) in &self.digests {
            out += &format!("{WALK_MARK}digest\t{k}\t{len} {digest}\n");
        }
        for (k, (found, bytes)) in &self.probes {
            out += &format!("{WALK_MARK}probe\t{k}\t{found} {bytes}\n");
        }
        out
    }

    fn from_lines(text: &str) -> Walk {
        let mut walk = Walk::default();
        for line in text.lines() {
            let Some(line) = line.strip_prefix(WALK_MARK) else {
                continue;
            };
            let fields: Vec<&str> = line.split('\t').collect();
            let [kind, key, value] = fields[..] else {
                panic!("bad walk line {line:?}");
            };
            let pair = || {
                let (a, b) = value.split_once(' ').unwrap();
                (a.parse().unwrap(), b.parse().unwrap())
            };
            match kind {
                "count" => drop(walk.counts.insert(key.into(), value.parse().unwrap())),
                "error" => drop(walk.errors.insert(key.into(), value.parse().unwrap())),
                "digest" => drop(walk.digests.insert(key.into(), pair())),
                "probe" => drop(walk.probes.insert(key.into(), pair())),
                _ => panic!("bad walk line {line:?}"),
            }
        }
        walk
    }
}

impl std::fmt::Display for Walk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:?} errors {:?}", self.counts, self.errors)?;
        if !self.probes.is_empty() {
            write!(f, " probes {:?}", self.probes)?;
        }
        Ok(())
    }
}

fn errno_name(e: rustix::io::Errno) -> String {
    match e {
        rustix::io::Errno::IO => "EIO".into(),
        rustix::io::Errno::NOENT => "ENOENT".into(),
        rustix::io::Errno::RANGE => "ERANGE".into(),
        rustix::io::Errno::TOOBIG => "E2BIG".into(),
        rustix::io::Errno::LOOP => "ELOOP".into(),
        rustix::io::Errno::NODATA => "ENODATA".into(),
        rustix::io::Errno::UCLEAN => "EUCLEAN".into(),
        rustix::io::Errno::STALE => "ESTALE".into(),
        rustix::io::Errno::NOTDIR => "ENOTDIR".into(),
        rustix::io::Errno::INVAL => "EINVAL".into(),
        rustix::io::Errno::OPNOTSUPP => "EOPNOTSUPP".into(),
        e => format!("errno{}", e.raw_os_error()),
    }
}

/// Not a test of its own: the walker the tests start as a child process, on the directory
/// `HOSTILE_WALK` names.
#[test]
#[ignore = "the walker the tests run as a child process"]
fn walk_helper() {
    let root = std::env::var_os("HOSTILE_WALK").expect("HOSTILE_WALK names the directory to walk");
    let probes: Vec<String> = std::env::var("HOSTILE_PROBES")
        .unwrap_or_default()
        .split('\n')
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    let walk = walk(Path::new(&root), &probes);
    print!("{}", walk.to_lines());
}

/// A directory being walked: its fd, the names it listed (sampled) and the next one to visit.
struct Frame {
    fd: OwnedFd,
    path: Vec<u8>,
    names: Vec<Vec<u8>>,
    next: usize,
}

fn walk(root: &Path, probes: &[String]) -> Walk {
    let mut w = Walk::default();
    // Deep nesting holds one fd per level.
    let limit = rustix::process::Rlimit {
        current: Some(8192),
        maximum: Some(8192),
    };
    let _ = rustix::process::setrlimit(rustix::process::Resource::Nofile, limit);
    let fd = match rustix::fs::open(root, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) => {
            w.err("open", e);
            return w;
        }
    };
    let mut seen_dirs = HashSet::new();
    if let Ok(st) = rustix::fs::fstat(&fd) {
        seen_dirs.insert((st.st_dev, st.st_ino));
    }
    xattrs(&mut w, &proc_path(&fd, None), probes);
    let mut stack = vec![list_dir(&mut w, fd, b"/".to_vec())];
    w.add("dirs", 1);
    w.add("max depth", 0);
    let mut entries = 0;
    while let Some(frame) = stack.last_mut() {
        let Some(name) = frame.names.get(frame.next).cloned() else {
            stack.pop();
            continue;
        };
        frame.next += 1;
        if entries == MAX_ENTRIES {
            w.add("bounded by entries", 1);
            break;
        }
        entries += 1;
        let depth = stack.len();
        let frame = stack.last_mut().unwrap();
        let Some((fd, path)) = visit(&mut w, frame, &name, depth, &mut seen_dirs, probes) else {
            continue;
        };
        w.add("dirs", 1);
        stack.push(list_dir(&mut w, fd, path));
        if depth as u64 > w.count("max depth") {
            w.counts.insert("max depth".into(), depth as u64);
        }
    }
    w
}

/// lstat, xattrs, and read or readlink of one entry; a directory to enter next, if it is one
/// (not seen before, and not too deep).
fn visit(
    w: &mut Walk,
    frame: &Frame,
    name: &[u8],
    depth: usize,
    seen_dirs: &mut HashSet<(u64, u64)>,
    probes: &[String],
) -> Option<(OwnedFd, Vec<u8>)> {
    w.add("entries", 1);
    let mut path = frame.path.clone();
    if path != b"/" {
        path.push(b'/');
    }
    path.extend_from_slice(name);
    let name = OsStr::from_bytes(name);
    let st = match rustix::fs::statat(&frame.fd, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(e) => {
            w.err("lstat", e);
            return None;
        }
    };
    xattrs(w, &proc_path(&frame.fd, Some(name)), probes);
    match FileType::from_raw_mode(st.st_mode) {
        FileType::Directory => {
            if depth >= MAX_DEPTH {
                w.add("bounded by depth", 1);
                return None;
            }
            if !seen_dirs.insert((st.st_dev, st.st_ino)) {
                w.add("dirs seen again", 1);
                return None;
            }
            match rustix::fs::openat(&frame.fd, name, DIR_FLAGS, Mode::empty()) {
                Ok(fd) => return Some((fd, path)),
                Err(e) => w.err("opendir", e),
            }
        }
        FileType::RegularFile => read_file(w, &frame.fd, name, st.st_size as u64, path),
        FileType::Symlink => match rustix::fs::readlinkat(&frame.fd, name, Vec::new()) {
            Ok(_) => w.add("symlinks", 1),
            Err(e) => w.err("readlink", e),
        },
        _ => w.add("other", 1),
    }
    None
}

/// `/proc/self/fd/N[/name]`: a short path for the `l*xattr` calls, however deep the entry.
fn proc_path(dir: &OwnedFd, name: Option<&OsStr>) -> PathBuf {
    let mut path = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd()));
    if let Some(name) = name {
        path.push(name);
    }
    path
}

/// Reads a directory's names (all of them), keeping an even sample of large ones.
fn list_dir(w: &mut Walk, fd: OwnedFd, path: Vec<u8>) -> Frame {
    let mut names = Vec::new();
    match rustix::fs::Dir::read_from(&fd) {
        Ok(mut dir) => {
            while let Some(entry) = dir.read() {
                match entry {
                    Ok(entry) => {
                        let name = entry.file_name().to_bytes();
                        if name != b"." && name != b".." {
                            names.push(name.to_vec());
                        }
                    }
                    Err(e) => {
                        w.err("readdir", e);
                        break;
                    }
                }
            }
        }
        Err(e) => w.err("readdir", e),
    }
    w.add("names listed", names.len() as u64);
    if names.len() > DIR_SAMPLE {
        w.add("dirs sampled", 1);
        let step = names.len().div_ceil(DIR_SAMPLE);
        let last = names.len() - 1;
        names = names
            .into_iter()
            .enumerate()
            .filter(|(i, _)| i % step == 0 || *i == last)
            .map(|(_, n)| n)
            .collect();
    }
    Frame {
        fd,
        path,
        names,
        next: 0,
    }
}

fn read_file(w: &mut Walk, dir: &OwnedFd, name: &OsStr, size: u64, path: Vec<u8>) {
    let flags = OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::openat(dir, name, flags, Mode::empty()) {
        Ok(fd) => fd,
        Err(e) => return w.err("open", e),
    };
    w.add("files", 1);
    let mut buf = vec![0u8; 128 << 10];
    let mut content = Vec::new();
    let mut offset = 0u64;
    while offset < READ_HEAD {
        match rustix::io::pread(&fd, &mut buf, offset) {
            Ok(0) => break,
            Ok(n) => {
                if size <= READ_HEAD {
                    content.extend_from_slice(&buf[..n]);
                }
                offset += n as u64;
                w.add("bytes read", n as u64);
            }
            Err(e) => return w.err("read", e),
        }
    }
    if size > READ_HEAD {
        match rustix::io::pread(&fd, &mut buf[..READ_TAIL as usize], size - READ_TAIL) {
            Ok(n) => w.add("bytes read", n as u64),
            Err(e) => w.err("read-tail", e),
        }
    } else if w.digests.len() < MAX_DIGESTS {
        w.digests.insert(
            String::from_utf8_lossy(&path).into_owned(),
            (content.len() as u64, digest(&content)),
        );
    }
}

fn digest(bytes: &[u8]) -> u64 {
    let mut hasher = DefaultHasher::new();
    bytes.hash(&mut hasher);
    hasher.finish()
}

/// listxattr, getxattr of every name listed, and of every probe name.
fn xattrs(w: &mut Walk, path: &Path, probes: &[String]) {
    let mut names = vec![0u8; 64 << 10];
    let mut value = vec![0u8; 64 << 10];
    match rustix::fs::llistxattr(path, &mut names) {
        Ok(n) => {
            for name in names[..n].split(|&b| b == 0).filter(|n| !n.is_empty()) {
                w.add("xattrs", 1);
                match rustix::fs::lgetxattr(path, name, &mut value) {
                    Ok(len) => w.add("xattr bytes", len as u64),
                    Err(e) => w.err("getxattr", e),
                }
            }
        }
        Err(e) => w.err("listxattr", e),
    }
    for probe in probes {
        if let Ok(len) = rustix::fs::lgetxattr(path, probe.as_str(), &mut value) {
            let found = w.probes.entry(probe.clone()).or_default();
            found.0 += 1;
            found.1 += len as u64;
        }
    }
}

/// Runs the walker on `root` in a child process; kills it after [`WALK_TIMEOUT`].
fn run_walker(root: &Path, probes: &[&str]) -> Result<Walk, String> {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "walk_helper",
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env("HOSTILE_WALK", root)
        .env("HOSTILE_PROBES", probes.join("\n"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = stdout.read_to_string(&mut text);
        text
    });
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > WALK_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "walk of {} did not end in {WALK_TIMEOUT:?}",
                root.display()
            ));
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = reader.join().unwrap();
    if !status.success() {
        let mut stderr = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut stderr);
        return Err(format!("walker failed ({status}): {stderr}{text}"));
    }
    let mut walk = Walk::from_lines(&text);
    walk.add("walk ms", start.elapsed().as_millis() as u64);
    Ok(walk)
}

// ---------------------------------------------------------------------------------------------
// Serving an image with the real binary, under watch
// ---------------------------------------------------------------------------------------------

/// The server's RssAnon in KiB.
fn rss_anon_kb(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("RssAnon:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Serves `image` with `mode` over `transport`, walks it (getting the `probes` xattrs of
/// every entry besides those listed), and asserts the robustness limits.
fn serve_and_walk(
    what: &str,
    image: &Path,
    mode: &str,
    transport: Transport,
    probes: &[&str],
) -> Walk {
    let what = format!("{what} ({mode} over {transport:?})");
    let dir = tempfile::tempdir().unwrap();
    let basedir = dir.path().join("objects");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&basedir).unwrap();
    std::fs::create_dir(&mnt).unwrap();
    let log = dir.path().join("server.log");
    let child = Command::new(LAZYCFS)
        .args(["-v", "mount"])
        .arg(image)
        .arg(&mnt)
        .arg("--basedir")
        .arg(&basedir)
        .args([
            "--mode",
            mode,
            "--transport",
            transport.name(),
            "--foreground",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    // Killed, its mount detached and the sampler below stopped, if the test fails.
    let stop = Arc::new(AtomicBool::new(false));
    let mut server = Guard::process(child).and_mount(&mnt).and_stop(&stop);
    let mut ready = String::new();
    let stdout = server.child().stdout.take().unwrap();
    let _ = BufReader::new(stdout).read_line(&mut ready);
    if ready.trim_end() != "lazycfs: ready" {
        panic!(
            "{what}: server did not start: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    let pid = server.id();
    let max_rss = Arc::new(AtomicU64::new(0));
    let sampler = {
        let (stop, max_rss) = (stop.clone(), max_rss.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(kb) = rss_anon_kb(pid) {
                    max_rss.fetch_max(kb, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    let walk = run_walker(&mnt, probes);
    let alive = server.child().try_wait().unwrap().is_none();
    if let Some(kb) = rss_anon_kb(pid) {
        max_rss.fetch_max(kb, Ordering::Relaxed);
    }
    stop.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let max_rss_kb = max_rss.load(Ordering::Relaxed);
    let log_text = || std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        alive,
        "{what}: the server died during the walk:\n{}",
        log_text()
    );
    let walk = walk.unwrap_or_else(|e| panic!("{what}: {e}"));
    let umount = Command::new(LAZYCFS)
        .arg("umount")
        .arg(&mnt)
        .output()
        .unwrap();
    assert!(
        umount.status.success(),
        "{what}: umount: {}",
        String::from_utf8_lossy(&umount.stderr)
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = server.child().try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: the server did not exit after umount"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let log = log_text();
    assert!(status.success(), "{what}: server exit {status}:\n{log}");
    let (slowest, slowest_op) = slowest_request(&log)
        .unwrap_or_else(|| panic!("{what}: no slowest request logged:\n{log}"));
    eprintln!(
        "{what}: slowest request {slowest_op} {slowest:?}, RssAnon max {max_rss_kb} KiB, \
         walk {walk}"
    );
    assert!(
        slowest <= MAX_REQUEST,
        "{what}: a {slowest_op} request took {slowest:?} of server CPU time"
    );
    assert!(
        max_rss_kb < MAX_RSS_ANON_KB,
        "{what}: server RssAnon reached {max_rss_kb} KiB"
    );
    walk
}

/// `slowest request: OP, N µs of server CPU time` from the server's `-v` log.
fn slowest_request(log: &str) -> Option<(Duration, String)> {
    let line = log.lines().find(|l| l.contains("slowest request: "))?;
    let rest = line.split("slowest request: ").nth(1)?;
    let (op, rest) = rest.split_once(", ")?;
    let micros: u64 = rest.split(' ').next()?.parse().ok()?;
    Some((Duration::from_micros(micros), op.to_owned()))
}

/// The same walk on the kernel's EROFS mount of the image (`Err`: the kernel refused to
/// mount it).
fn kernel_walk(image: &Path, probes: &[&str]) -> Result<Walk, String> {
    let mount = kernel::KernelMount::erofs(image).map_err(|e| format!("mount: {e}"))?;
    let walk = run_walker(mount.path(), probes);
    drop(mount);
    walk
}

/// Which transports a case is served over. The small cases use every transport the kernel
/// offers; the large ones (a million entries, megabytes of xattrs) only `/dev/fuse`: the
/// transports only carry requests, and the decoding whose cost and memory are bounded here
/// is the core both share.
fn transports(test: &str, all: bool) -> Vec<Transport> {
    if all {
        transport::all(test)
    } else {
        vec![Transport::Dev]
    }
}

/// The walks of one image: direct mode and overlay mode (one per transport), kernel EROFS
/// (`Err`: the kernel refused the image).
type Walks = (Vec<Walk>, Vec<Walk>, Result<Walk, String>);

/// Writes `img`, serves and walks it in both modes over `transports`, and walks the kernel
/// mount: (direct walks, overlay walks, kernel walk).
fn serve_everywhere(test: &str, img: &Img, all_transports: bool, probes: &[&str]) -> Option<Walks> {
    if !kernel::require_composefs(test) {
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join(format!("{test}.erofs"));
    img.write(&image);
    lazycfs::erofs::Image::open(&image).unwrap_or_else(|e| panic!("{test}: {e}"));
    let mut direct = Vec::new();
    let mut overlay = Vec::new();
    for transport in transports(test, all_transports) {
        direct.push(serve_and_walk(test, &image, "direct", transport, probes));
        overlay.push(serve_and_walk(test, &image, "overlay", transport, probes));
    }
    let theirs = kernel_walk(&image, probes);
    match &theirs {
        Ok(walk) => eprintln!("{test} (kernel EROFS): walk {walk}"),
        Err(e) => eprintln!("{test} (kernel EROFS): {e}"),
    }
    Some((direct, overlay, theirs))
}

// ---------------------------------------------------------------------------------------------
// The images
// ---------------------------------------------------------------------------------------------

const D: u8 = FT_DIR;
const F: u8 = FT_REG;

#[test]
fn directory_cycles() {
    // /a/up is the root, /a/b/back is /a, /a/b/self is /a/b.
    let mut img = Img::new(2);
    img.dir(
        0,
        0,
        &[],
        &[(b".", 0, D), (b"..", 0, D), (b"a", 8, D), (b"f", 24, F)],
    );
    img.dir(
        8,
        0,
        &[],
        &[(b".", 8, D), (b"..", 0, D), (b"b", 16, D), (b"up", 0, D)],
    );
    img.dir(
        16,
        0,
        &[],
        &[
            (b".", 16, D),
            (b"..", 8, D),
            (b"back", 8, D),
            (b"self", 16, D),
        ],
    );
    img.file(24, 0, &[], b"content");
    let Some((direct, overlay, kernel)) = serve_everywhere("directory_cycles", &img, true, &[])
    else {
        return;
    };
    for walk in direct.iter().chain(&overlay) {
        // The file is reached; no walk goes around a cycle forever.
        assert_eq!(walk.digests["/f"], (7, digest(b"content")), "{walk}");
        assert_eq!(walk.count("bounded by depth"), 0, "{walk}");
    }
    // The kernel serves the cycle too (as the direct mode, listing every name).
    let kernel = kernel.unwrap();
    assert_eq!(
        kernel.count("names listed"),
        direct[0].count("names listed")
    );
}

#[test]
fn directory_under_two_parents() {
    let mut img = Img::new(2);
    img.dir(
        0,
        0,
        &[],
        &[(b".", 0, D), (b"..", 0, D), (b"a", 8, D), (b"b", 16, D)],
    );
    img.dir(8, 0, &[], &[(b".", 8, D), (b"..", 0, D), (b"s", 24, D)]);
    img.dir(16, 0, &[], &[(b".", 16, D), (b"..", 0, D), (b"s", 24, D)]);
    img.dir(24, 0, &[], &[(b".", 24, D), (b"..", 8, D), (b"f", 32, F)]);
    img.file(32, 0, &[], b"shared");
    let Some((direct, overlay, _)) =
        serve_everywhere("directory_under_two_parents", &img, true, &[])
    else {
        return;
    };
    // The shared subdirectory is entered under `/a` and its file read whole; under `/b` it is
    // the same directory (same inode number), which the walker does not enter twice.
    for walk in direct.iter().chain(&overlay) {
        let shared = (6, digest(b"shared"));
        assert_eq!(walk.digests.get("/a/s/f"), Some(&shared), "{walk}");
        assert_eq!(walk.count("dirs seen again"), 1, "{walk}");
        assert_eq!(walk.count("files"), 1, "{walk}");
        assert!(walk.errors.is_empty(), "{walk}");
    }
}

#[test]
fn dot_and_dotdot_pointing_elsewhere() {
    // /a/.. is /b, /b/. is the root and /b/.. a file, /b/c/.. a nid past the image.
    let mut img = Img::new(2);
    img.dir(
        0,
        0,
        &[],
        &[
            (b".", 0, D),
            (b"..", 0, D),
            (b"a", 8, D),
            (b"b", 16, D),
            (b"f", 24, F),
        ],
    );
    img.dir(8, 0, &[], &[(b".", 8, D), (b"..", 16, D)]);
    img.dir(16, 0, &[], &[(b".", 0, D), (b"..", 24, F), (b"c", 32, D)]);
    img.file(24, 0, &[], b"file");
    img.dir(
        32,
        0,
        &[],
        &[(b".", 32, D), (b"..", 1 << 40, D), (b"g", 40, F)],
    );
    img.file(40, 0, &[], b"deep");
    let Some((direct, overlay, _)) =
        serve_everywhere("dot_and_dotdot_pointing_elsewhere", &img, true, &[])
    else {
        return;
    };
    for walk in direct.iter().chain(&overlay) {
        // The kernel resolves `..` itself: the lying entries change nothing reachable.
        assert_eq!(walk.digests["/b/c/g"], (4, digest(b"deep")), "{walk}");
    }
}

/// `n` sorted 7-digit names.
fn numbered(n: usize) -> Vec<Vec<u8>> {
    (0..n).map(|i| format!("{i:07}").into_bytes()).collect()
}

#[test]
fn million_entry_directory() {
    const N: usize = 1_000_000;
    let mut img = Img::new(2);
    img.dir(0, 0, &[], &[(b".", 0, D), (b"..", 0, D), (b"big", 8, D)]);
    let names = numbered(N);
    let mut entries: Vec<Dirent<'_>> = vec![(b".", 8, D), (b"..", 0, D)];
    entries.extend(names.iter().map(|n| (n.as_slice(), 16, F)));
    img.dir_blocks(8, 2, &entries);
    img.file(16, 0, &[], b"one inode, a million names");
    let Some((direct, overlay, _)) = serve_everywhere("million_entry_directory", &img, false, &[])
    else {
        return;
    };
    for walk in direct.iter().chain(&overlay) {
        assert_eq!(walk.count("names listed"), N as u64 + 1, "{walk}");
        assert_eq!(walk.errors, BTreeMap::new(), "{walk}");
    }
}

#[test]
fn root_full_of_whiteouts() {
    // The direct view hides whiteouts (char 0/0) in the root, as overlayfs does: a million of
    // them come before the one file to list.
    const N: usize = 1_000_000;
    let mut img = Img::new(2);
    let names = numbered(N);
    let mut entries: Vec<Dirent<'_>> = vec![(b".", 0, D), (b"..", 0, D)];
    entries.extend(names.iter().map(|n| (n.as_slice(), 8, FT_CHR)));
    entries.push((b"zz", 16, F));
    img.dir_blocks(0, 2, &entries);
    img.compact(
        8,
        Compact {
            mode: S_IFCHR,
            nb: 1,
            ..Compact::default()
        },
        &[],
    );
    img.file(16, 0, &[], b"visible");
    let Some((direct, overlay, kernel)) =
        serve_everywhere("root_full_of_whiteouts", &img, false, &[])
    else {
        return;
    };
    // The direct view gives up after a bounded run of hidden entries (EIO), rather than
    // scanning them all in one request.
    assert_eq!(direct[0].errors_of("readdir"), 1, "{}", direct[0]);
    // The overlay above the overlay view, and kernel EROFS, list the whiteouts themselves.
    let kernel = kernel.expect("the kernel mounts the image");
    for walk in overlay.iter().chain([&kernel]) {
        assert_eq!(walk.errors, BTreeMap::new(), "{walk}");
    }
}

#[test]
fn nesting_4096_deep() {
    const DEPTH: u64 = 4096;
    let per = 4; // inode slots per directory (32 + 38 bytes of dirents)
    let mut img = Img::new(META_BLK + 1 + ((DEPTH + 1) as usize * per as usize * 32).div_ceil(BS));
    let nid = |level: u64| level * per;
    for level in 0..=DEPTH {
        let parent = nid(level.saturating_sub(1));
        let mut entries = vec![(&b"."[..], nid(level), D), (&b".."[..], parent, D)];
        if level < DEPTH {
            entries.push((&b"d"[..], nid(level + 1), D));
        } else {
            entries.push((&b"leaf"[..], nid(level + 1), F));
        }
        img.dir(nid(level), 0, &[], &entries);
    }
    img.file(nid(DEPTH + 1), 0, &[], b"bottom");
    let Some((direct, overlay, _)) = serve_everywhere("nesting_4096_deep", &img, false, &[]) else {
        return;
    };
    for walk in direct.iter().chain(&overlay) {
        assert_eq!(walk.count("max depth"), DEPTH, "{walk}");
        assert_eq!(walk.count("files"), 1, "{walk}");
    }
}

#[test]
fn ten_thousand_xattrs_with_maximum_values() {
    // 10,000 inline xattrs and one 65535-byte inline value (an inline area near the 256 KiB
    // i_xattr_icount allows), plus 255 shared xattrs (the most an inode can name) of 65535
    // bytes each.
    const INLINE: usize = 10_000;
    const SHARED: usize = 255;
    const MAX_VALUE: usize = u16::MAX as usize;
    let suffixes: Vec<Vec<u8>> = (0..INLINE)
        .map(|i| format!("{i:05}").into_bytes())
        .collect();
    let big = vec![b'b'; MAX_VALUE];
    let mut inline: Vec<(u8, &[u8], &[u8])> = suffixes
        .iter()
        .map(|s| (1, s.as_slice(), &b"vvvv"[..]))
        .collect();
    inline.push((1, b"big", &big));
    let shared_block = 64;
    let entry_len = xattr_entry(1, b"s000", &big).len();
    let shared_ids: Vec<u32> = (0..SHARED).map(|k| (k * entry_len / 4) as u32).collect();
    let area = xattr_area(0, &shared_ids, &inline);
    let mut img = Img::new(shared_block);
    img.set_xattr_blkaddr(shared_block as u32);
    img.resize(shared_block * BS + SHARED * entry_len);
    for k in 0..SHARED {
        let entry = xattr_entry(1, format!("s{k:03}").as_bytes(), &big);
        img.put(shared_block * BS + k * entry_len, &entry);
    }
    img.dir(0, 0, &[], &[(b".", 0, D), (b"..", 0, D), (b"x", 8, F)]);
    img.empty_file(8, &area);
    let probes = ["user.00000", "user.09999", "user.big", "user.s254"];
    let Some((direct, overlay, kernel)) = serve_everywhere(
        "ten_thousand_xattrs_with_maximum_values",
        &img,
        false,
        &probes,
    ) else {
        return;
    };
    let kernel = kernel.expect("the kernel mounts the image");
    for walk in direct.iter().chain(&overlay).chain([&kernel]) {
        // The names do not fit the 64 KiB a listxattr may return, here as in the kernel.
        assert_eq!(walk.errors_of("listxattr"), 1, "{walk}");
        for probe in probes {
            let expected = if probe.len() == 10 {
                4
            } else {
                MAX_VALUE as u64
            };
            assert_eq!(
                walk.probes.get(probe),
                Some(&(1, expected)),
                "{probe}: {walk}"
            );
        }
    }
}

#[test]
fn long_prefix_tables_at_their_limits() {
    // 128 prefixes (the most a name index can name), 127 of them with a 65534-byte infix (the
    // most a 16-bit entry length holds): listed names of 64 KiB each. One inode names each
    // prefix once, another names the first one 30,000 times (2 GB of names), a third uses
    // the one short prefix.
    let long = vec![b'p'; 65_534];
    let mut prefixes: Vec<(u8, &[u8])> = (0..127).map(|_| (1, long.as_slice())).collect();
    prefixes.push((1, b"short."));
    let table_at = 64 * BS;
    let mut img = Img::new(64);
    img.long_prefixes(table_at, &prefixes);
    let each: Vec<(u8, &[u8], &[u8])> = (0..128)
        .map(|k| (0x80 | k as u8, &b"s"[..], &b"v"[..]))
        .collect();
    let each = xattr_area(0, &[], &each);
    let flood: Vec<(u8, &[u8], &[u8])> = (0..30_000).map(|_| (0x80, &b""[..], &b""[..])).collect();
    let flood = xattr_area(0, &[], &flood);
    let short = xattr_area(0, &[], &[(0x80 | 127, b"x", b"val"), (1, b"plain", b"v")]);
    img.dir(
        0,
        0,
        &[],
        &[
            (b".", 0, D),
            (b"..", 0, D),
            (b"each", 8, F),
            (b"flood", 64, F),
            (b"short", 48, F),
        ],
    );
    for (nid, area) in [(8, &each), (48, &short), (64, &flood)] {
        img.empty_file(nid, area);
    }
    let probes = ["user.short.x", "user.plain"];
    let Some((direct, overlay, kernel)) =
        serve_everywhere("long_prefix_tables_at_their_limits", &img, false, &probes)
    else {
        return;
    };
    for walk in direct.iter().chain(&overlay) {
        // `each` and `flood` list more than 64 KiB; `short` lists and reads its two.
        assert_eq!(walk.errors_of("listxattr"), 2, "{walk}");
        assert_eq!(walk.count("xattrs"), 2, "{walk}");
        assert_eq!(walk.probes.get("user.short.x"), Some(&(1, 3)), "{walk}");
    }
    // Prefixes of 64 KiB are beyond what some kernels take (6.18 refuses the table at mount):
    // a kernel that mounts the image must read the short one as lazycfs does, and one that
    // does not must say the image is corrupt, nothing else.
    match kernel {
        Ok(kernel) => {
            assert_eq!(kernel.probes.get("user.short.x"), Some(&(1, 3)), "{kernel}");
        }
        Err(refused) => assert!(refused.contains("Structure needs cleaning"), "{refused}"),
    }
}

#[test]
fn chunk_maps_past_the_end_or_overlapping() {
    const OVERLAPPING: u64 = 64;
    // Blocks 1..18 hold the inodes and the shared map, 24 the data, 30 the root's dirents.
    let data_block = 24;
    let mut img = Img::new(32);
    img.put(data_block * BS, &[b'd'; BS]);
    let blocks = img.blocks() as u32;
    let mut root: Vec<(Vec<u8>, u64, u8)> = vec![
        (b".".to_vec(), 0, D),
        (b"..".to_vec(), 0, D),
        (b"beyond".to_vec(), 8, F),
        (b"map-past-end".to_vec(), 16, F),
    ];
    // Chunks after the end of the image, and far after.
    img.chunked_file(
        8,
        3 * BS as u32,
        0,
        &[data_block as u32, blocks + 10, u32::MAX - 1],
    );
    // 64 files of 64 MiB whose maps start right after each inode, so each runs over the next
    // inodes (read as block addresses) and into one shared map of valid chunks.
    let first = 32;
    for k in 0..OVERLAPPING {
        let nid = first + k;
        root.push((format!("overlap{k:02}").into_bytes(), nid, F));
        img.chunked_file(nid, 64 << 20, 0, &[]);
    }
    let shared_map = Img::inode_at(first + OVERLAPPING);
    for i in 0..16_384 {
        img.put32(shared_map + 4 * i, data_block as u32);
    }
    // A 4 GiB file whose map (a million entries) runs past the end of the image.
    let last = (img.b.len() - Img::inode_at(0)) as u64 / 32 - 2;
    img.chunked_file(last, u32::MAX, 0, &[data_block as u32; 8]);
    root[3].1 = last;
    root.sort();
    let entries: Vec<Dirent<'_>> = root
        .iter()
        .map(|(n, nid, t)| (n.as_slice(), *nid, *t))
        .collect();
    img.dir_blocks(0, 30, &entries);
    let Some((direct, overlay, kernel)) =
        serve_everywhere("chunk_maps_past_the_end_or_overlapping", &img, true, &[])
    else {
        return;
    };
    for walk in direct.iter().chain(&overlay) {
        assert!(walk.errors_of("read") >= 1, "{walk}");
        assert_eq!(walk.count("files"), OVERLAPPING + 2, "{walk}");
    }
    let kernel = kernel.expect("the kernel mounts the image");
    assert!(kernel.errors_of("read") >= 1, "{kernel}");
}

#[test]
fn tail_packed_block_at_the_last_byte() {
    // A file of one block plus a 96-byte tail stored inline, ending at the image's last byte.
    let tail = [b't'; 96];
    let mut img = Img::new(4);
    img.put(2 * BS, &[b'D'; BS]);
    let at = 4 * BS - 32 - tail.len();
    let nid = ((at - Img::inode_at(0)) / 32) as u64;
    assert_eq!(Img::inode_at(nid), at);
    img.compact(
        nid,
        Compact {
            format: LAYOUT_FLAT_INLINE,
            mode: S_IFREG | 0o644,
            nb: 1,
            size: (BS + tail.len()) as u32,
            u: 2,
            ..Compact::default()
        },
        &tail,
    );
    assert_eq!(img.b.len(), at + 32 + tail.len());
    img.dir(0, 0, &[], &[(b".", 0, D), (b"..", 0, D), (b"tail", nid, F)]);
    let mut expected = vec![b'D'; BS];
    expected.extend_from_slice(&tail);
    let Some((direct, overlay, kernel)) =
        serve_everywhere("tail_packed_block_at_the_last_byte", &img, true, &[])
    else {
        return;
    };
    let want = (expected.len() as u64, digest(&expected));
    let kernel = kernel.expect("the kernel mounts the image");
    for walk in direct.iter().chain(&overlay).chain([&kernel]) {
        assert_eq!(walk.digests.get("/tail"), Some(&want), "{walk}");
    }
}

#[test]
fn names_with_slash_or_nul() {
    let mut img = Img::new(2);
    img.dir(
        0,
        0,
        &[],
        &[
            (b".", 0, D),
            (b"..", 0, D),
            (b"nul", 16, D),
            (b"slash", 8, D),
        ],
    );
    img.dir(
        8,
        0,
        &[],
        &[(b".", 8, D), (b"..", 0, D), (b"a/b", 24, F), (b"c", 24, F)],
    );
    img.dir(
        16,
        0,
        &[],
        &[
            (b".", 16, D),
            (b"..", 0, D),
            (b"x\0y", 24, F),
            (b"z", 24, F),
        ],
    );
    img.file(24, 0, &[], b"named badly");
    let Some((direct, overlay, kernel)) =
        serve_everywhere("names_with_slash_or_nul", &img, true, &[])
    else {
        return;
    };
    for walk in direct.iter().chain(&overlay) {
        // Both directories fail to list (EIO): no name with `/` or NUL reaches the kernel.
        assert_eq!(walk.errors_of("readdir"), 2, "{walk}");
    }
    // The kernel refuses `/` (EUCLEAN) but lists NUL as a shorter name.
    let kernel = kernel.expect("the kernel mounts the image");
    assert!(kernel.errors_of("readdir") >= 1, "{kernel}");
}

#[test]
fn inode_claiming_4_gib_of_inline_data() {
    let mut img = Img::new(2);
    img.dir(
        0,
        0,
        &[],
        &[
            (b".", 0, D),
            (b"..", 0, D),
            (b"dir", 24, D),
            (b"extended", 16, F),
            (b"file", 8, F),
            (b"link", 32, FT_SYMLINK),
        ],
    );
    img.compact(
        8,
        Compact {
            format: LAYOUT_FLAT_INLINE,
            mode: S_IFREG | 0o644,
            nb: 1,
            size: u32::MAX,
            ..Compact::default()
        },
        b"tail",
    );
    img.extended(
        16,
        Extended {
            format: LAYOUT_FLAT_INLINE,
            mode: S_IFREG | 0o644,
            nlink: 1,
            size: 4 << 30,
            ..Extended::default()
        },
        b"tail",
    );
    img.compact(
        24,
        Compact {
            format: LAYOUT_FLAT_INLINE,
            mode: S_IFDIR | 0o755,
            nb: 2,
            size: u32::MAX,
            ..Compact::default()
        },
        &dirents(&[(b".", 24, D), (b"..", 0, D)]),
    );
    img.compact(
        32,
        Compact {
            format: LAYOUT_FLAT_INLINE,
            mode: S_IFLNK | 0o777,
            nb: 1,
            size: u32::MAX,
            ..Compact::default()
        },
        b"target",
    );
    let Some((direct, overlay, kernel)) =
        serve_everywhere("inode_claiming_4_gib_of_inline_data", &img, true, &[])
    else {
        return;
    };
    for walk in direct.iter().chain(&overlay) {
        assert_eq!(walk.errors_of("read"), 2, "{walk}");
        assert_eq!(walk.errors_of("readlink"), 1, "{walk}");
        assert_eq!(walk.errors_of("readdir"), 1, "{walk}");
    }
    let kernel = kernel.expect("the kernel mounts the image");
    assert!(kernel.errors_of("read") >= 1, "{kernel}");
}

// ---------------------------------------------------------------------------------------------
// check
// ---------------------------------------------------------------------------------------------

#[test]
fn check_validates_overlapping_chunk_maps_in_linear_work() {
    // 30 regular files whose 16 MiB chunk maps all overlap (each starts right after its inode
    // and runs over the later inodes, whose bytes are valid map entries, then over the rest
    // of an 18 MiB image). Each map has 4M entries: validating every map in full is 120M
    // entries, validating each image position once is 4M.
    const N: u64 = 30;
    const LEN: usize = 18 << 20;
    let block = 512;
    let mut img = Img::new(LEN / BS);
    img.b[SB + 12] = 9; // blkszbits: 512-byte blocks
    img.put32(SB + 36, (LEN / block) as u32);
    let meta_blkaddr = 8;
    img.put32(SB + 40, meta_blkaddr);
    let inode_at = |nid: u64| meta_blkaddr as usize * block + nid as usize * 32;
    // The inodes' words, read as map entries, are valid block addresses: CHUNK_BASED (8),
    // S_IFREG with no permission bits and i_nb 0 (block 32768 < 36864), size 0xffffffff
    // (a hole), chunk format 1 (1 KiB chunks, 4M of them).
    let first = 384;
    let mut names = Vec::new();
    for k in 0..N {
        let at = inode_at(first + k);
        img.put16(at, LAYOUT_CHUNK_BASED);
        img.put16(at + 4, S_IFREG);
        img.put32(at + 8, u32::MAX);
        img.put32(at + 16, 1);
        names.push(format!("e{k:02}").into_bytes());
    }
    let mut entries: Vec<Dirent<'_>> = vec![(b".", 0, D), (b"..", 0, D)];
    entries.extend(
        names
            .iter()
            .zip(first..)
            .map(|(n, nid)| (n.as_slice(), nid, F)),
    );
    let dirents = dirents(&entries);
    assert!(dirents.len() <= block);
    let dir_block = 16;
    img.put(dir_block * block, &dirents);
    let root = inode_at(0);
    img.put16(root, LAYOUT_FLAT_PLAIN);
    img.put16(root + 4, S_IFDIR | 0o755);
    img.put16(root + 6, 2);
    img.put32(root + 8, dirents.len() as u32);
    img.put32(root + 16, dir_block as u32);
    let image = img.open();
    let summary = lazycfs::check::check(&image).unwrap_or_else(|e| panic!("check: {e}"));
    assert_eq!(summary.inodes, N + 1);
    let entries_per_map = (u64::from(u32::MAX)).div_ceil(1024);
    assert!(
        summary.chunk_entries >= entries_per_map,
        "{}",
        summary.chunk_entries
    );
    // Linear: each 4-byte position of the image at most once, plus each map's short last entry.
    assert!(
        summary.chunk_entries <= (LEN / 4) as u64 + N,
        "{} chunk map entries validated",
        summary.chunk_entries
    );
}

#[test]
fn check_validates_shared_dirent_blocks_once() {
    // 200 directories, each with a block of its own (`.` and `..`) and, through its chunk
    // map, the same 50 blocks of 200 entries: validating every directory in full is 10,200
    // blocks (2M entries), validating each shared block once is 250.
    const DIRS: u64 = 200;
    const SHARED: usize = 50;
    const PER_BLOCK: usize = 200;
    let stride = 8; // inode slots per directory (32 + 51 * 4 bytes)
    let file = 8 + DIRS * stride;
    let meta_blocks = (Img::inode_at(file + 1)).div_ceil(BS);
    let own_first = meta_blocks;
    let shared_first = own_first + DIRS as usize;
    let mut img = Img::new(shared_first + SHARED);
    let names: Vec<Vec<u8>> = (0..SHARED * PER_BLOCK)
        .map(|i| format!("n{i:06}").into_bytes())
        .collect();
    for (k, chunk) in names.chunks(PER_BLOCK).enumerate() {
        let entries: Vec<Dirent<'_>> = chunk.iter().map(|n| (n.as_slice(), file, F)).collect();
        let block = dirents(&entries);
        assert!(block.len() <= BS);
        img.put((shared_first + k) * BS, &block);
    }
    let dir_names: Vec<Vec<u8>> = (0..DIRS).map(|k| format!("d{k:03}").into_bytes()).collect();
    let mut root: Vec<Dirent<'_>> = vec![(b".", 0, D), (b"..", 0, D)];
    for (k, name) in dir_names.iter().enumerate() {
        let nid = 8 + k as u64 * stride;
        root.push((name, nid, D));
        let own = own_first + k;
        img.put(own * BS, &dirents(&[(b".", nid, D), (b"..", 0, D)]));
        let mut map = vec![own as u32];
        map.extend((0..SHARED).map(|i| (shared_first + i) as u32));
        img.chunked_file(nid, ((1 + SHARED) * BS) as u32, 0, &map);
        img.put16(Img::inode_at(nid) + 4, S_IFDIR | 0o755);
        img.put16(Img::inode_at(nid) + 6, 2);
    }
    let root_blocks = dirent_blocks(&root).len();
    img.resize(img.b.len() + root_blocks * BS);
    img.dir_blocks(0, shared_first + SHARED, &root);
    img.file(file, 0, &[], b"f");
    let summary = lazycfs::check::check(&img.open()).unwrap_or_else(|e| panic!("check: {e}"));
    assert_eq!(summary.dirs, DIRS + 1);
    assert_eq!(summary.entries, DIRS + DIRS * (SHARED * PER_BLOCK) as u64);
    // The root's blocks, each directory's own block, each shared block once.
    assert_eq!(
        summary.dirent_blocks,
        (root_blocks + DIRS as usize + SHARED) as u64
    );
}

#[test]
fn check_refuses_an_inode_inside_another_inodes_xattrs() {
    // Writers give each inode its own bytes. Without this rule every inode of an image could
    // have a 256 KiB xattr area over the same bytes, each parsed again.
    let mut img = Img::new(2);
    let value = [0u8; 200];
    let area = xattr_area(0, &[], &[(1, b"v", &value)]);
    img.dir(
        0,
        0,
        &[],
        &[(b".", 0, D), (b"..", 0, D), (b"a", 8, F), (b"b", 12, F)],
    );
    img.empty_file(8, &area);
    // Inode 12 lies in the value of inode 8's xattr.
    img.file(12, 0, &[], b"inside a value");
    let e = lazycfs::check::check(&img.open()).unwrap_err();
    assert_eq!(
        e.error,
        lazycfs::erofs::Error::Corrupt {
            nid: 12,
            what: lazycfs::erofs::Corruption::InodesOverlap
        },
        "{e}"
    );
}

#[test]
fn many_names_for_an_inode_with_the_largest_xattr_area() {
    // 40 names for one inode whose xattr area is the largest i_xattr_icount allows (256 KiB
    // of 65,534 four-byte entries): a READDIRPLUS decodes each entry's inode and looks for its
    // overlay xattrs, which can be anywhere in the area.
    const NAMES: usize = 40;
    let entries: Vec<(u8, &[u8], &[u8])> = vec![(1, &b""[..], &b""[..]); 65_534];
    let area = xattr_area(0, &[], &entries);
    assert_eq!(icount(&area), u16::MAX);
    let mut img = Img::new(2);
    img.dir(0, 0, &[], &[(b".", 0, D), (b"..", 0, D), (b"d", 8, D)]);
    let names = numbered(NAMES);
    let mut dir: Vec<Dirent<'_>> = vec![(b".", 8, D), (b"..", 0, D)];
    dir.extend(names.iter().map(|n| (n.as_slice(), 16, F)));
    // The xattr area spans blocks 1 to 65; the directory's dirents come after it.
    img.dir_blocks(8, 80, &dir);
    img.empty_file(16, &area);
    let Some((direct, overlay, _)) = serve_everywhere(
        "many_names_for_an_inode_with_the_largest_xattr_area",
        &img,
        false,
        &[],
    ) else {
        return;
    };
    for walk in direct.iter().chain(&overlay) {
        assert_eq!(walk.count("names listed"), NAMES as u64 + 1, "{walk}");
    }
}
