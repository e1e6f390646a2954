//! An image file that changes under a running server: truncated, shrunk then grown again, or
//! overwritten in place with another image (`cp` semantics: truncate, then write), while a
//! walker keeps making requests, in the direct and overlay modes, on both transports.
//!
//! Each change is made two ways: by a writer that opens the image afresh (the server, which
//! holds a read lease, is told before the file changes), and through a descriptor opened
//! before the mount (no lease can be taken then: the server learns of the change only when a
//! read faults past the new end of the file, the SIGBUS path). Afterwards the server is
//! alive, logged the change once, the walker got the old answers or EIO and never hung, and
//! `lazycfs umount` leaves no mount behind.

mod common;

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::guard::{Guard, Session};
use common::{cfs, kernel};
use lazycfs::mount::Transport;

const LAZYCFS: &str = env!("CARGO_BIN_EXE_lazycfs");
const DIRS: usize = 12;
const FILES: usize = 40;
const EIO: i32 = 5;
/// What the server logs (`-v`) when it notices the change.
const CHANGE_LOGGED: &str = "the image file changed while mounted";
/// How long a walker may take to notice a change, or to finish its pass after being told to
/// stop: a bound for hangs, not a timing claim.
const PATIENCE: Duration = Duration::from_secs(30);

/// An image of `DIRS` directories of `FILES` small files, each with a `user.id` xattr; the
/// `flavour` goes into every name-independent value, so two flavours differ in every answer.
fn dump(flavour: &str) -> String {
    let mut dump = String::from("/ 0 40755 2 0 0 0 1700000000.0 - - -\n");
    for d in 0..DIRS {
        dump += &format!("/d{d} 0 40755 2 0 0 0 1700000000.0 - - -\n");
        for f in 0..FILES {
            let content = content(flavour, d, f);
            dump += &format!(
                "/d{d}/f{f} {} 100644 1 0 0 0 1700000000.0 - {content} - user.id={}\n",
                content.len(),
                xattr(flavour, d, f)
            );
        }
    }
    dump
}

fn content(flavour: &str, d: usize, f: usize) -> String {
    format!("{flavour}-d{d}-f{f}-").repeat(1 + (d * FILES + f) % 5)
}

fn xattr(flavour: &str, d: usize, f: usize) -> String {
    format!("{flavour}{d}.{f}")
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Mode {
    Direct,
    Overlay,
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Change {
    /// `truncate -s 4096`.
    Truncate,
    /// Down to one page, then back to the old size (zeros where the image was).
    ShrinkThenGrow,
    /// `cp other.erofs image.erofs`: truncated to nothing, then the other image written.
    Overwrite,
}

/// How the writer reaches the image.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Writer {
    /// Opens it after the mount: breaks the server's read lease.
    Fresh,
    /// Held open for writing since before the mount: the server has no lease.
    Held,
}

/// The server and its mount; dropping it (a failed test) kills the server and detaches the
/// mount, so that nothing is left behind.
struct Server {
    guard: Guard,
    mnt: PathBuf,
    /// The server's stderr, read until it ends.
    log: Option<std::thread::JoinHandle<String>>,
    /// Whether the server has logged the change.
    noticed: Arc<AtomicBool>,
}

impl Server {
    fn start(image: &Path, basedir: &Path, mnt: &Path, mode: Mode, transport: Transport) -> Self {
        let (mode, transport) = (
            match mode {
                Mode::Direct => "direct",
                Mode::Overlay => "overlay",
            },
            match transport {
                Transport::Uring => "uring",
                _ => "dev",
            },
        );
        let mut child = Command::new(LAZYCFS)
            .args(["-v", "mount", "--foreground", "--mode", mode])
            .args(["--transport", transport])
            .arg(image)
            .arg(mnt)
            .arg("--basedir")
            .arg(basedir)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        // Read as it comes: a server blocked writing its log to a full pipe would hang.
        let stderr = child.stderr.take().unwrap();
        let noticed = Arc::new(AtomicBool::new(false));
        let log = {
            let noticed = noticed.clone();
            std::thread::spawn(move || {
                let mut text = String::new();
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if line.contains(CHANGE_LOGGED) {
                        noticed.store(true, Ordering::Relaxed);
                    }
                    text += &line;
                    text.push('\n');
                }
                text
            })
        };
        let mut server = Server {
            guard: Guard::process(child).and_mount(mnt),
            mnt: mnt.to_path_buf(),
            log: Some(log),
            noticed,
        };
        if ready.trim() != "lazycfs: ready" {
            panic!("mount failed: {}", server.stderr());
        }
        server
    }

    fn alive(&mut self) -> bool {
        self.guard.child().try_wait().unwrap().is_none()
    }

    /// `lazycfs umount`, then the server's exit status and stderr. EBUSY is retried (up to
    /// [`PATIENCE`]): a child another test forks holds copies of the walker's descriptors
    /// until it execs.
    fn unmount(mut self) -> (std::process::ExitStatus, String) {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let out = Command::new(LAZYCFS)
                .arg("umount")
                .arg(&self.mnt)
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            if out.status.success() {
                break;
            }
            assert!(
                stderr.contains("busy") && Instant::now() < deadline,
                "umount: {stderr}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let deadline = Instant::now() + PATIENCE;
        let status = loop {
            if let Some(status) = self.guard.child().try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the server outlived its mount");
            std::thread::sleep(Duration::from_millis(20));
        };
        (status, self.stderr())
    }

    /// The server's stderr: all of it once it has exited, else what it wrote (ending it).
    fn stderr(&mut self) -> String {
        if self.alive() {
            let _ = self.guard.child().kill();
            let _ = self.guard.child().wait();
        }
        let log = self.log.take().map(|log| log.join().unwrap_or_default());
        log.unwrap_or_default()
    }
}

/// What a walker saw.
#[derive(Default)]
struct Seen {
    /// Answers that are neither the old image's nor EIO (the first few).
    wrong: std::sync::Mutex<Vec<String>>,
    eio: AtomicU64,
    passes: AtomicU64,
}

impl Seen {
    fn wrong(&self, what: String) {
        let mut wrong = self.wrong.lock().unwrap();
        if wrong.len() < 10 {
            wrong.push(what);
        }
    }

    /// An answer: the expected bytes, or EIO.
    fn answer(&self, path: &Path, what: &str, got: std::io::Result<Vec<u8>>, expected: &str) {
        match got {
            Ok(bytes) if bytes == expected.as_bytes() => {}
            Ok(bytes) => self.wrong(format!(
                "{} {what}: {:?}",
                path.display(),
                String::from_utf8_lossy(&bytes)
            )),
            Err(e) if e.raw_os_error() == Some(EIO) => {
                self.eio.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => self.wrong(format!("{} {what}: {e}", path.display())),
        }
    }
}

/// Walks until told to stop: every directory listed, every file's `user.id` fetched (FUSE
/// caches no xattrs, so each is a request), its content read; each answer compared with the
/// old image's.
fn walk(mnt: &Path, stop: &AtomicBool, seen: &Seen) {
    while !stop.load(Ordering::Relaxed) {
        for d in 0..DIRS {
            let dir = mnt.join(format!("d{d}"));
            let listed = std::fs::read_dir(&dir).and_then(|entries| {
                let mut names = entries
                    .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
                    .collect::<std::io::Result<Vec<String>>>()?;
                names.sort();
                Ok(names.join(",").into_bytes())
            });
            let mut expected: Vec<String> = (0..FILES).map(|f| format!("f{f}")).collect();
            expected.sort();
            seen.answer(&dir, "listing", listed, &expected.join(","));
            for f in 0..FILES {
                let path = dir.join(format!("f{f}"));
                seen.answer(&path, "user.id", xattr_of(&path), &xattr("old", d, f));
                seen.answer(
                    &path,
                    "content",
                    std::fs::read(&path),
                    &content("old", d, f),
                );
            }
        }
        seen.passes.fetch_add(1, Ordering::Relaxed);
    }
}

fn xattr_of(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut buf = [0u8; 256];
    let n = rustix::fs::getxattr(path, "user.id", &mut buf[..])?;
    Ok(buf[..n].to_vec())
}

/// Changes the image as `change` says, through `held` or a fresh descriptor.
fn change_image(
    image: &Path,
    other: &[u8],
    change: Change,
    held: Option<&File>,
    noticed: &AtomicBool,
) {
    let fresh;
    let file = match held {
        Some(file) => file,
        None => {
            fresh = OpenOptions::new().write(true).open(image).unwrap();
            &fresh
        }
    };
    let size = file.metadata().unwrap().len();
    match change {
        Change::Truncate => file.set_len(4096).unwrap(),
        Change::ShrinkThenGrow => {
            file.set_len(4096).unwrap();
            // Without a lease the server notices when a read faults past the end; grown back
            // before that, the file would read zeros and fault no more. (The walker's first
            // EIO may come before: a reply the kernel failed to copy from a page lost after
            // the server read it.)
            if held.is_some() {
                wait_for(
                    || noticed.load(Ordering::Relaxed),
                    || "the server logs the change".into(),
                );
            }
            file.set_len(size).unwrap();
        }
        Change::Overwrite => {
            file.set_len(0).unwrap();
            file.write_all_at(other, 0).unwrap();
        }
    }
}

fn wait_for(what: impl Fn() -> bool, description: impl Fn() -> String) {
    let deadline = Instant::now() + PATIENCE;
    while !what() {
        assert!(Instant::now() < deadline, "timed out: {}", description());
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One change while a walker runs, in every mode on every transport.
fn check(change: Change, writer: Writer) {
    let test = format!("image_change {change:?} {writer:?}");
    if !kernel::require_root(&test) {
        return;
    }
    let other = cfs::write_image(&dump("new"), 1);
    for mode in [Mode::Direct, Mode::Overlay] {
        for transport in common::transport::all(&test) {
            let what = format!("{test} {mode:?} over {transport:?}");
            let dir = tempfile::tempdir().unwrap();
            let image = dir.path().join("image.erofs");
            std::fs::write(&image, cfs::write_image(&dump("old"), 1)).unwrap();
            let basedir = dir.path().join("objects");
            let mnt = dir.path().join("mnt");
            std::fs::create_dir(&basedir).unwrap();
            std::fs::create_dir(&mnt).unwrap();
            let held = (writer == Writer::Held)
                .then(|| OpenOptions::new().write(true).open(&image).unwrap());
            let mut server = Server::start(&image, &basedir, &mnt, mode, transport);
            let noticed = server.noticed.clone();
            let seen = run_walker_through(&what, &mut server, || {
                change_image(&image, &other, change, held.as_ref(), &noticed)
            });
            let wrong = seen.wrong.lock().unwrap().clone();
            // Without a lease, an overwrite that no read happened to fault on serves the new
            // bytes: only the server's survival is promised then.
            let strict = (change, writer) != (Change::Overwrite, Writer::Held);
            if strict {
                assert!(
                    wrong.is_empty(),
                    "{what}: answers from neither image: {wrong:#?}"
                );
                assert!(
                    seen.eio.load(Ordering::Relaxed) > 0,
                    "{what}: no EIO after the change"
                );
            }
            let (status, stderr) = server.unmount();
            assert!(status.success(), "{what}: server {status:?}: {stderr}");
            let warnings = stderr.matches(CHANGE_LOGGED).count();
            assert!(warnings <= 1, "{what}: the change is logged once: {stderr}");
            if strict {
                assert_eq!(warnings, 1, "{what}: the change is logged: {stderr}");
            }
            let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
            assert!(
                !mounts.contains(mnt.to_str().unwrap()),
                "{what}: a mount is left"
            );
        }
    }
}

/// Starts a walker, lets it complete a pass over the intact image, applies `change`, lets
/// it complete two more passes and stops it; what it saw. A walker that stops making
/// progress fails the test (and the dropped `Server` ends the server, which unblocks it).
fn run_walker_through(what: &str, server: &mut Server, change: impl FnOnce()) -> Arc<Seen> {
    let stop = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let (done, finished) = mpsc::channel();
    {
        let (mnt, stop, seen) = (server.mnt.clone(), stop.clone(), seen.clone());
        std::thread::spawn(move || {
            walk(&mnt, &stop, &seen);
            let _ = done.send(());
        });
    }
    let passes = || seen.passes.load(Ordering::Relaxed);
    wait_for(|| passes() >= 1, || format!("{what}: a first pass"));
    assert_eq!(
        seen.eio.load(Ordering::Relaxed),
        0,
        "{what}: EIO before the change"
    );
    let before = passes();
    change();
    let pid = server.guard.id();
    wait_for(
        || passes() >= before + 2,
        || {
            format!(
                "{what}: two passes after the change; server threads: {}; walker stacks: {}",
                stacks(pid),
                stacks(std::process::id())
            )
        },
    );
    stop.store(true, Ordering::Relaxed);
    finished
        .recv_timeout(PATIENCE)
        .unwrap_or_else(|_| panic!("{what}: the walker hangs"));
    assert!(
        server.alive(),
        "{what}: the server died: {}",
        server.stderr()
    );
    seen
}

#[test]
fn truncated_by_a_new_writer() {
    check(Change::Truncate, Writer::Fresh);
}

#[test]
fn truncated_through_a_descriptor_open_before_the_mount() {
    check(Change::Truncate, Writer::Held);
}

#[test]
fn shrunk_then_grown_by_a_new_writer() {
    check(Change::ShrinkThenGrow, Writer::Fresh);
}

#[test]
fn shrunk_then_grown_through_a_descriptor_open_before_the_mount() {
    check(Change::ShrinkThenGrow, Writer::Held);
}

#[test]
fn overwritten_with_another_image_by_a_new_writer() {
    check(Change::Overwrite, Writer::Fresh);
}

#[test]
fn overwritten_with_another_image_through_a_descriptor_open_before_the_mount() {
    check(Change::Overwrite, Writer::Held);
}

/// Where each thread of process `pid` waits, for a hang's report.
fn stacks(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return "gone".into();
    };
    let mut out = String::new();
    for task in tasks.flatten() {
        let read = |name: &str| std::fs::read_to_string(task.path().join(name)).unwrap_or_default();
        out += &format!(
            "\n  {} {}: {}",
            read("comm").trim(),
            read("wchan"),
            read("stack").replace('\n', " | ")
        );
    }
    out
}

/// Serves one file, `image.erofs`, whose reads of anything past its first `good` bytes fail
/// with EIO (a disk error under the image).
struct FailingImage {
    data: Vec<u8>,
    good: u64,
}

const FAILING_TTL: Duration = Duration::from_secs(60);

impl FailingImage {
    fn attr(&self, ino: u64) -> fuser::FileAttr {
        let file = ino == 2;
        fuser::FileAttr {
            ino: fuser::INodeNo(ino),
            size: if file { self.data.len() as u64 } else { 0 },
            blocks: 0,
            atime: std::time::UNIX_EPOCH,
            mtime: std::time::UNIX_EPOCH,
            ctime: std::time::UNIX_EPOCH,
            crtime: std::time::UNIX_EPOCH,
            kind: match file {
                true => fuser::FileType::RegularFile,
                false => fuser::FileType::Directory,
            },
            perm: if file { 0o444 } else { 0o555 },
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            blksize: 4096,
            flags: 0,
        }
    }
}

impl fuser::Filesystem for FailingImage {
    fn lookup(
        &self,
        _req: &fuser::Request,
        parent: fuser::INodeNo,
        name: &std::ffi::OsStr,
        reply: fuser::ReplyEntry,
    ) {
        match parent.0 == 1 && name == "image.erofs" {
            true => reply.entry(&FAILING_TTL, &self.attr(2), fuser::Generation(0)),
            false => reply.error(fuser::Errno::ENOENT),
        }
    }

    fn getattr(
        &self,
        _req: &fuser::Request,
        ino: fuser::INodeNo,
        _fh: Option<fuser::FileHandle>,
        reply: fuser::ReplyAttr,
    ) {
        match ino.0 {
            1 | 2 => reply.attr(&FAILING_TTL, &self.attr(ino.0)),
            _ => reply.error(fuser::Errno::ENOENT),
        }
    }

    fn read(
        &self,
        _req: &fuser::Request,
        _ino: fuser::INodeNo,
        _fh: fuser::FileHandle,
        offset: u64,
        size: u32,
        _flags: fuser::OpenFlags,
        _lock_owner: Option<fuser::LockOwner>,
        reply: fuser::ReplyData,
    ) {
        if offset + u64::from(size) > self.good {
            return reply.error(fuser::Errno::EIO);
        }
        let start = (offset as usize).min(self.data.len());
        let end = start.saturating_add(size as usize).min(self.data.len());
        reply.data(&self.data[start..end]);
    }
}

/// Reads of the image that fail (an I/O error under it) fault in the server's mapping as a
/// truncation does: the server answers EIO and stays up.
#[test]
fn an_image_whose_reads_fail() {
    let test = "an_image_whose_reads_fail";
    if !kernel::require_root(test) {
        return;
    }
    for mode in [Mode::Direct, Mode::Overlay] {
        for transport in common::transport::all(test) {
            let what = format!("{test} {mode:?} over {transport:?}");
            let dir = tempfile::tempdir().unwrap();
            let store = dir.path().join("store");
            let basedir = dir.path().join("objects");
            let mnt = dir.path().join("mnt");
            for path in [&store, &basedir, &mnt] {
                std::fs::create_dir(path).unwrap();
            }
            // The superblock and the root inode are in the first page, which reads.
            let fs = FailingImage {
                data: cfs::write_image(&dump("old"), 1),
                good: 4096,
            };
            let mut config = fuser::Config::default();
            config.mount_options.push(fuser::MountOption::RO);
            let _store = Session::new(fuser::spawn_mount(fs, &store, &config).unwrap(), &store);
            let image = store.join("image.erofs");
            let mut server = Server::start(&image, &basedir, &mnt, mode, transport);
            // One pass: the walker stops after it (`stop` is checked between passes).
            let (stop, seen) = (Arc::new(AtomicBool::new(true)), Arc::new(Seen::default()));
            stop.store(false, Ordering::Relaxed);
            let (done, finished) = mpsc::channel();
            {
                let (mnt, stop, seen) = (mnt.clone(), stop.clone(), seen.clone());
                std::thread::spawn(move || {
                    walk(&mnt, &stop, &seen);
                    let _ = done.send(());
                });
            }
            // A hung walker fails here; the dropped `Server` then ends the server, which
            // unblocks it.
            wait_for(
                || seen.passes.load(Ordering::Relaxed) >= 1,
                || format!("{what}: a pass"),
            );
            stop.store(true, Ordering::Relaxed);
            finished
                .recv_timeout(PATIENCE)
                .unwrap_or_else(|_| panic!("{what}: the walker hangs"));
            let wrong = seen.wrong.lock().unwrap().clone();
            assert!(wrong.is_empty(), "{what}: {wrong:#?}");
            assert!(seen.eio.load(Ordering::Relaxed) > 0, "{what}: no EIO");
            assert!(
                server.alive(),
                "{what}: the server died: {}",
                server.stderr()
            );
            let (status, stderr) = server.unmount();
            assert!(status.success(), "{what}: server {status:?}: {stderr}");
            assert_eq!(stderr.matches(CHANGE_LOGGED).count(), 1, "{what}: {stderr}");
        }
    }
}
