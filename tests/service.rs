//! The mount service (`lazycfs service`, `lazycfs mount --mode service`), run as root with
//! unprivileged clients (uid 65534): what the caller sees is the rootful kernel composefs
//! mount of the same image, as that user sees it, entry by entry; the mount is `nosuid,nodev`
//! and reads the basedir with the caller's rights; only its owner unmounts it; and every bad
//! request of the attack list gets its exact error while the service keeps serving.

mod common;
#[path = "../fuzz/seeds.rs"]
mod seeds;

use std::io::{IoSlice, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::guard::{Guard, is_mount_point};
use common::handmade::{FT_DIR as D, FT_REG as F, Img};
use common::tree::{self, CompareOptions};
use common::{cfs, kernel, objects, rootless};
use lazycfs::erofs::Image;
use rustix::fs::{Mode, OFlags};

const LAZYCFS: &str = env!("CARGO_BIN_EXE_lazycfs");
const USER: u32 = rootless::USER;
/// Another unprivileged user.
const OTHER: u32 = 4242;
/// The user of the attack tests, with limits of its own (tests run in parallel, and the
/// per-user mount limit counts every mount of a user).
const ATTACKER: u32 = 4343;

/// Not a test of its own: the walker run as the unprivileged user in a mount.
#[test]
#[ignore = "the walker the tests run as a child process"]
fn service_walk_helper() {
    let out = std::env::var_os("LAZYCFS_WALK_OUT").expect("LAZYCFS_WALK_OUT names the output");
    let cwd = std::env::current_dir().unwrap();
    let walk = rootless::fingerprint(tree::walk_tolerating(&cwd, &[libc_eacces()]));
    std::fs::write(out, rootless::to_text(&walk)).unwrap();
}

/// Not a test of its own: the walker `lazycfs run` starts in its namespaces
/// ([`rootless::walk_in_run`]).
#[test]
#[ignore = "the walker the tests run as a child process"]
fn walk_helper() {
    rootless::walk_helper();
}

fn libc_eacces() -> i32 {
    rustix::io::Errno::ACCESS.raw_os_error()
}

/// A running `lazycfs service`, killed when dropped.
struct Service {
    _guard: Guard,
    _dir: tempfile::TempDir,
    socket: PathBuf,
}

impl Service {
    /// Starts the service on a socket of its own and waits for its readiness notification
    /// (`NOTIFY_SOCKET`, as systemd would).
    fn start(extra: &[&str]) -> Service {
        let dir = tempfile::Builder::new()
            .prefix("lazycfs-service")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let socket = dir.path().join("mount.sock");
        let notify_path = dir.path().join("notify");
        let notify = UnixDatagram::bind(&notify_path).unwrap();
        let log = std::fs::File::create(dir.path().join("service.log")).unwrap();
        let child = Command::new(LAZYCFS)
            .args(["-v", "service", "--listen"])
            .arg(&socket)
            .args(extra)
            .env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stderr(log)
            .spawn()
            .unwrap();
        let guard = Guard::process(child);
        wait_ready(&notify);
        Service {
            _guard: guard,
            _dir: dir,
            socket,
        }
    }

    /// What the service logged so far (`-v`).
    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("service.log")).unwrap()
    }

    /// `lazycfs mount --mode service IMAGE MOUNTPOINT --basedir BASEDIR` as `uid`.
    fn mount_as(
        &self,
        uid: u32,
        image: &Path,
        basedir: &Path,
        mnt: &Path,
        extra: &[&str],
    ) -> Output {
        as_uid(uid, LAZYCFS)
            .args(["mount", "--mode", "service", "--service-socket"])
            .arg(&self.socket)
            .arg(image)
            .arg(mnt)
            .arg("--basedir")
            .arg(basedir)
            .args(extra)
            .output()
            .unwrap()
    }

    fn umount_as(&self, uid: u32, mnt: &Path) -> Output {
        as_uid(uid, LAZYCFS)
            .args(["umount", "--service-socket"])
            .arg(&self.socket)
            .arg(mnt)
            .output()
            .unwrap()
    }

    /// The service still serves: a good mount and unmount as `uid` work.
    fn assert_serving(&self, fixture: &Fixture, uid: u32) {
        let mnt_dir = rootless::user_dir();
        let mnt = mnt_dir.path();
        rustix::fs::chown(mnt, Some(rustix::fs::Uid::from_raw(uid)), None).unwrap();
        let _unmount = Guard::mount(mnt);
        let out = self.mount_as(uid, &fixture.image, &fixture.basedir, mnt, &[]);
        assert_ok("mount after a refused request", &out);
        assert_eq!(std::fs::read(mnt.join("a")).unwrap(), b"hello\n");
        assert_ok("umount", &self.umount_as(uid, mnt));
        assert!(!is_mount_point(mnt));
    }
}

fn wait_ready(notify: &UnixDatagram) {
    // Only a guard against a service that never starts: the test fails, it does not time.
    notify
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut buf = [0u8; 256];
    loop {
        let n = notify
            .recv(&mut buf)
            .expect("the service never said READY=1");
        if String::from_utf8_lossy(&buf[..n])
            .lines()
            .any(|l| l == "READY=1")
        {
            return;
        }
    }
}

fn as_uid(uid: u32, program: &str) -> Command {
    let mut cmd = Command::new("setpriv");
    cmd.arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .args(["--clear-groups", "--", program]);
    cmd
}

fn assert_ok(what: &str, out: &Output) {
    assert!(
        out.status.success(),
        "{what} failed ({}): {}{}",
        out.status,
        String::from_utf8_lossy(&out.stderr),
        String::from_utf8_lossy(&out.stdout)
    );
}

/// The one-line error of a failed client command.
fn refusal(what: &str, out: &Output) -> String {
    assert!(!out.status.success(), "{what}: succeeded, refusal expected");
    String::from_utf8_lossy(&out.stderr).trim_end().to_string()
}

/// A directory owned by `uid`, empty, for a mount.
fn user_mountpoint(dir: &Path, name: &str, uid: u32) -> PathBuf {
    let mnt = dir.join(name);
    std::fs::create_dir(&mnt).unwrap();
    rustix::fs::chown(
        &mnt,
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(uid)),
    )
    .unwrap();
    mnt
}

/// A small image made by `lazycfs create` of a tree with a plain file, an object,
/// setuid-root copies of `id` and `cat`, a device node (/dev/null's numbers), all world-readable.
struct Fixture {
    dir: tempfile::TempDir,
    image: PathBuf,
    basedir: PathBuf,
}

fn fixture() -> Fixture {
    let dir = tempfile::Builder::new()
        .prefix("lazycfs-svc")
        .tempdir()
        .unwrap();
    let src = dir.path().join("src");
    std::fs::create_dir(&src).unwrap();
    std::fs::write(src.join("a"), b"hello\n").unwrap();
    std::fs::write(src.join("object"), vec![7u8; 10_000]).unwrap();
    for (program, name) in [("/usr/bin/id", "setuid-id"), ("/usr/bin/cat", "setuid-cat")] {
        std::fs::copy(program, src.join(name)).unwrap();
        std::fs::set_permissions(src.join(name), std::fs::Permissions::from_mode(0o4755)).unwrap();
    }
    rustix::fs::mknodat(
        rustix::fs::CWD,
        src.join("null"),
        rustix::fs::FileType::CharacterDevice,
        Mode::from_raw_mode(0o666),
        rustix::fs::makedev(1, 3),
    )
    .unwrap();
    let image = dir.path().join("image.cfs");
    let basedir = dir.path().join("objects");
    let out = Command::new(LAZYCFS)
        .arg("create")
        .arg(&src)
        .arg(&image)
        .arg("--objects")
        .arg(&basedir)
        .output()
        .unwrap();
    assert_ok("lazycfs create", &out);
    rootless::make_readable(dir.path());
    Fixture {
        dir,
        image,
        basedir,
    }
}

/// True if the service tests can run here (root, composefs, setpriv, loop devices; fails
/// under `CI`).
fn ready(test: &str) -> bool {
    if !(kernel::require_composefs(test) && rootless::require(test)) {
        return false;
    }
    if !Path::new("/dev/loop-control").exists() {
        common::skip(test, "no /dev/loop-control (module loop)");
        return false;
    }
    true
}

/// The walk of `dir` as [`USER`] (the unprivileged caller), through [`service_walk_helper`].
fn walk_as_user(dir: &Path) -> Vec<tree::Entry> {
    let out_dir = rootless::user_dir();
    let out = out_dir.path().join("walk.txt");
    let exe = std::env::current_exe().unwrap();
    let output = as_uid(USER, exe.to_str().unwrap())
        .args([
            "--exact",
            "service_walk_helper",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .current_dir(dir)
        .env("LAZYCFS_WALK_OUT", &out)
        .output()
        .unwrap();
    assert_ok("walk as the unprivileged user", &output);
    rootless::from_text(&std::fs::read_to_string(&out).unwrap())
}

/// Mounts `image` through the service as [`USER`] and compares what that user sees with
/// what it sees of the rootful kernel composefs mount of the same image and basedir.
fn assert_service_matches_rootful(service: &Service, what: &str, image: &Path, basedir: &Path) {
    rootless::make_readable(image);
    rootless::make_readable(basedir);
    let reference = kernel::KernelMount::composefs(image, basedir)
        .unwrap_or_else(|e| panic!("{what}: kernel composefs mount: {e}"));
    // The reference's private directory, opened up so that the user can walk it.
    let parent = reference.path().parent().unwrap();
    std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755)).unwrap();
    let theirs = walk_as_user(reference.path());
    drop(reference);
    let mnt_dir = rootless::user_dir();
    let mnt = mnt_dir.path();
    let _unmount = Guard::mount(mnt);
    let out = service.mount_as(USER, image, basedir, mnt, &[]);
    assert_ok(&format!("{what}: service mount"), &out);
    let ours = walk_as_user(mnt);
    let opts = CompareOptions {
        ino: false,
        content: true,
        both_unreadable: true,
    };
    if let Err(diff) = tree::compare_with(&theirs, &ours, opts) {
        panic!("{what}: rootful kernel composefs vs service mount, as uid {USER}: {diff}");
    }
    assert_ok(&format!("{what}: umount"), &service.umount_as(USER, mnt));
    assert!(!is_mount_point(mnt), "{what}: still mounted after umount");
}

fn composefs_image(dir: &Path, name: &str, dump: &str, version: u32) -> (PathBuf, PathBuf) {
    let path = dir.join(format!("{name}-v{version}.erofs"));
    std::fs::write(&path, cfs::write_image(dump, version)).unwrap();
    let basedir = dir.join(format!("{name}-v{version}-objects"));
    std::fs::create_dir(&basedir).unwrap();
    objects::populate(&Image::open(&path).unwrap(), &basedir);
    (path, basedir)
}

/// Mounts an image through the service and compares it with the rootful mount.
type Comparison = fn(&Service, &str, &Path, &Path);

/// `compare` on the kinds fixture in every format version and on an image `lazycfs create`
/// wrote, through one service, which is returned.
fn kinds_and_create_match(compare: Comparison) -> Service {
    let service = Service::start(&[]);
    let dir = tempfile::Builder::new()
        .prefix("lazycfs-svc")
        .tempdir()
        .unwrap();
    rootless::make_readable(dir.path());
    for version in cfs::VERSIONS {
        let (image, basedir) = composefs_image(
            dir.path(),
            "kinds",
            include_str!("data/kinds.dump"),
            version,
        );
        compare(&service, &format!("kinds V{version}"), &image, &basedir);
    }
    let fixture = fixture();
    compare(&service, "lazycfs create", &fixture.image, &fixture.basedir);
    service
}

/// `compare` on every corpus file the composefs writer takes.
fn corpus_matches(test: &str, compare: Comparison) {
    if !ready(test) {
        return;
    }
    let Some(corpus) = cfs::writable_corpus(test) else {
        return;
    };
    let service = Service::start(&[]);
    let dir = tempfile::Builder::new()
        .prefix("lazycfs-svc")
        .tempdir()
        .unwrap();
    rootless::make_readable(dir.path());
    let mut compared = 0;
    for (name, dump) in corpus {
        let (image, basedir) = composefs_image(dir.path(), name, &dump.text, dump.version);
        compare(&service, name, &image, &basedir);
        compared += 1;
    }
    eprintln!("{compared} corpus images compared");
    assert_eq!(compared, cfs::CORPUS_WRITABLE);
}

#[test]
fn service_mount_matches_rootful_kernel_mount() {
    let test = "service_mount_matches_rootful_kernel_mount";
    if ready(test) {
        kinds_and_create_match(assert_service_matches_rootful);
    }
}

#[test]
fn corpus_service_mounts_match_rootful() {
    corpus_matches(
        "corpus_service_mounts_match_rootful",
        assert_service_matches_rootful,
    );
}

/// `lazycfs run --mode service` as [`USER`] (in a user namespace of its own, its subordinate
/// ids mapped): the service places the mount in the run's namespaces, and what the run sees
/// is the rootful kernel composefs mount of the same image as root sees it, minus the
/// `trusted.*` xattrs the user never sees.
fn assert_run_through_service_matches_rootful(
    service: &Service,
    what: &str,
    image: &Path,
    basedir: &Path,
) {
    let theirs = rootless::rootful_reference(what, image, basedir);
    let socket = service.socket.to_str().unwrap();
    let extra = ["--mode", "service", "--service-socket", socket];
    let (ours, stderr) = rootless::walk_in_run(Path::new(LAZYCFS), image, basedir, &extra)
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    assert!(
        stderr.contains("mode service: requested") && !stderr.contains("image reads"),
        "{what}: the run did not mount through the service alone:\n{stderr}"
    );
    let opts = CompareOptions {
        ino: false,
        content: true,
        both_unreadable: false,
    };
    if let Err(diff) = tree::compare_with(&theirs, &ours, opts) {
        panic!("{what}: rootful kernel composefs vs service mount in the run's namespaces: {diff}");
    }
}

#[test]
fn own_namespace_mounts_match_rootful_kernel_mount() {
    let test = "own_namespace_mounts_match_rootful_kernel_mount";
    if ready(test) {
        let service = kinds_and_create_match(assert_run_through_service_matches_rootful);
        let mounts = service.log().matches("mount done").count();
        assert_eq!(mounts, cfs::VERSIONS.len() + 1, "{}", service.log());
    }
}

#[test]
fn corpus_own_namespace_mounts_match_rootful() {
    corpus_matches(
        "corpus_own_namespace_mounts_match_rootful",
        assert_run_through_service_matches_rootful,
    );
}

/// In its own namespaces (where `--mode auto` picks the service) the caller may lift
/// `nosuid,nodev` (the mount is its own), and that gains it nothing: the overlay belongs to
/// its user namespace, so device nodes never open, and a setuid-root file runs as the
/// caller's own root there, not as root.
#[test]
fn own_namespace_mount_opens_no_device_and_runs_setuid_files_as_the_caller() {
    let test = "own_namespace_mount_opens_no_device_and_runs_setuid_files_as_the_caller";
    if !ready(test) {
        return;
    }
    let service = Service::start(&[]);
    let fixture = fixture();
    // A file only root may read.
    let secret = fixture.dir.path().join("secret");
    std::fs::write(&secret, b"secret\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let work = rootless::user_dir();
    let mnt = work.path().join("mnt");
    let script = format!(
        r#"
        set -u
        mkdir {mnt}
        {lazycfs} -v mount --service-socket {socket} {image} {mnt} --basedir {basedir} \
            || exit 10
        grep -q " {mnt} ro,nosuid,nodev,.* - overlay lazycfs:uid={user} " /proc/self/mountinfo \
            && echo placed
        mount -o remount,bind,suid,dev {mnt} && echo lifted
        head -c1 {mnt}/null >/dev/null 2>&1 || echo device-refused
        setpriv --reuid=1 --regid=1 --clear-groups {mnt}/setuid-id -u
        setpriv --reuid=1 --regid=1 --clear-groups {mnt}/setuid-cat {secret} \
            >/dev/null 2>&1 || echo secret-refused
        umount {mnt} && echo unmounted
        "#,
        mnt = mnt.display(),
        lazycfs = LAZYCFS,
        socket = service.socket.display(),
        image = fixture.image.display(),
        basedir = fixture.basedir.display(),
        user = USER,
        secret = secret.display(),
    );
    let out = rootless::in_user_namespace(Path::new("/bin/sh"))
        .arg("-c")
        .arg(&script)
        .output()
        .unwrap();
    assert_ok("the script in the user's namespaces", &out);
    let lines: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(
        lines,
        [
            "placed",
            "lifted",
            "device-refused",
            // Stored as uid 0: the caller's root in its namespace.
            "0",
            "secret-refused",
            "unmounted"
        ],
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // `--mode auto` picked the service for root in a user namespace.
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("mode service: not root, and the mount service answers"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // It was never a mount in the service's namespace.
    assert!(!is_mount_point(&mnt));
}

/// A user + mount namespace of `uid`'s own, held by a process that sleeps until the guard
/// kills it; its pid, and its user and mount namespace files, open.
fn namespaces_of(uid: u32) -> (Guard, u32, OwnedFd, OwnedFd) {
    let child = Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .args([
            "--clear-groups",
            "unshare",
            "--user",
            "--map-root-user",
            "--mount",
        ])
        .args(["sleep", "600"])
        .spawn()
        .unwrap();
    let pid = child.id();
    let guard = Guard::process(child);
    let own = std::fs::metadata("/proc/self/ns/mnt").unwrap();
    // Bounded: unshare takes milliseconds; the test fails if it never does.
    for _ in 0..500 {
        let theirs = std::fs::metadata(format!("/proc/{pid}/ns/mnt"));
        if theirs.is_ok_and(|m| m.ino() != own.ino()) {
            let user = open(Path::new(&format!("/proc/{pid}/ns/user")), OFlags::RDONLY);
            let mnt = open(Path::new(&format!("/proc/{pid}/ns/mnt")), OFlags::RDONLY);
            return (guard, pid, user, mnt);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    panic!("uid {uid}'s unshare did not make its namespaces");
}

#[test]
fn own_namespace_requests_need_the_callers_own_namespaces() {
    let test = "own_namespace_requests_need_the_callers_own_namespaces";
    if !ready(test) {
        return;
    }
    let service = Service::start(&[]);
    let fixture = fixture();
    let image = open(&fixture.image, OFlags::RDONLY);
    let basedir = open(&fixture.basedir, OFlags::RDONLY | OFlags::DIRECTORY);
    let mnt_dir = rootless::user_dir();
    let mnt = open(mnt_dir.path(), OFlags::RDONLY | OFlags::DIRECTORY);
    let (_mine, my_pid, my_user, my_mnt) = namespaces_of(USER);
    let (_others, _, other_user, other_mnt) = namespaces_of(OTHER);
    let init_user = open(Path::new("/proc/self/ns/user"), OFlags::RDONLY);
    let init_mnt = open(Path::new("/proc/self/ns/mnt"), OFlags::RDONLY);
    const OWN: &[u8] = b"lazycfs-service 1\nmount\nplace own-namespaces\n\n";
    let request_with = |basedir: &OwnedFd, user_ns: &OwnedFd, mount_ns: &OwnedFd| {
        let fds = [&image, basedir, &mnt, user_ns, mount_ns].map(AsFd::as_fd);
        raw_request(&service.socket, USER, OWN, &fds)
    };
    let request = |user_ns: &OwnedFd, mount_ns: &OwnedFd| request_with(&basedir, user_ns, mount_ns);
    let not_the_callers = format!("user namespace: created by uid {OTHER}, not by the caller");
    let refused: [(&OwnedFd, &OwnedFd, &str); 7] = [
        (
            &init_user,
            &init_mnt,
            "user namespace: the service's own, not one the caller created",
        ),
        (&other_user, &other_mnt, &not_the_callers),
        (&my_mnt, &my_mnt, "user namespace: not a user namespace"),
        (&image, &my_mnt, "user namespace: not a user namespace"),
        (&my_user, &my_user, "mount namespace: not a mount namespace"),
        (
            &my_user,
            &init_mnt,
            "mount namespace: not owned by the caller's user namespace",
        ),
        (
            &my_user,
            &other_mnt,
            "mount namespace: not owned by the caller's user namespace",
        ),
    ];
    for (user_ns, mount_ns, why) in refused {
        assert_eq!(request(user_ns, mount_ns), format!("error: {why}"));
    }
    // Its own namespaces, but the basedir, then the mountpoint, in the service's mount
    // namespace.
    assert_eq!(
        request(&my_user, &my_mnt),
        "error: creating the overlay over the image and the basedir: Invalid argument (os \
         error 22)"
    );
    let their_basedir = open(
        &Path::new(&format!("/proc/{my_pid}/root"))
            .join(fixture.basedir.strip_prefix("/").unwrap()),
        OFlags::RDONLY | OFlags::DIRECTORY,
    );
    assert_eq!(
        request_with(&their_basedir, &my_user, &my_mnt),
        "error: attaching the mount on the mountpoint: Invalid argument (os error 22)"
    );
    assert_eq!(
        raw_request(
            &service.socket,
            USER,
            OWN,
            &[image.as_fd(), basedir.as_fd(), mnt.as_fd()]
        ),
        "error: bad request: 3 file descriptors, 5 expected"
    );
    service.assert_serving(&fixture, USER);
}

#[test]
fn service_mount_is_nosuid_nodev_and_only_its_owner_unmounts_it() {
    let test = "service_mount_is_nosuid_nodev_and_only_its_owner_unmounts_it";
    if !ready(test) {
        return;
    }
    let service = Service::start(&[]);
    let fixture = fixture();
    let mnt = user_mountpoint(fixture.dir.path(), "mnt", USER);
    let _unmount = Guard::mount(&mnt);
    assert_ok(
        "mount",
        &service.mount_as(USER, &fixture.image, &fixture.basedir, &mnt, &[]),
    );
    let options = mount_options(&mnt);
    for option in ["ro", "nosuid", "nodev"] {
        assert!(
            options.split(',').any(|o| o == option),
            "mount options {options:?} lack {option}"
        );
    }
    // The setuid-root `id` runs as the caller.
    let out = as_uid(USER, mnt.join("setuid-id").to_str().unwrap())
        .arg("-u")
        .output()
        .unwrap();
    assert_ok("setuid-id", &out);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        USER.to_string()
    );
    assert_eq!(
        std::fs::symlink_metadata(mnt.join("setuid-id"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o4755,
        "the image's mode is shown as it is"
    );
    // The device node does not open, not even for root.
    let err = std::fs::File::open(mnt.join("null")).unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc_eacces()), "{err}");
    // Another user cannot unmount it.
    let out = service.umount_as(OTHER, &mnt);
    assert_eq!(
        refusal("umount by another user", &out),
        format!(
            "lazycfs umount: {}: mount service refused: mountpoint: not a mount the service \
             made for this user",
            mnt.display()
        )
    );
    assert!(is_mount_point(&mnt));
    assert_ok("umount by its owner", &service.umount_as(USER, &mnt));
    assert!(!is_mount_point(&mnt));
    // Unmounting again: nothing of the service's is there.
    let out = service.umount_as(USER, &mnt);
    assert!(!out.status.success());
    service.assert_serving(&fixture, USER);
}

/// The options of the mount on `path` (`/proc/self/mountinfo`'s per-mount options).
fn mount_options(path: &Path) -> String {
    let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    let line = text
        .lines()
        .rev()
        .find(|l| l.split(' ').nth(4) == path.to_str())
        .unwrap_or_else(|| panic!("{} is not a mount point", path.display()));
    line.split(' ').nth(5).unwrap().to_string()
}

#[test]
fn basedir_is_read_with_the_callers_rights() {
    let test = "basedir_is_read_with_the_callers_rights";
    if !ready(test) {
        return;
    }
    let service = Service::start(&[]);
    let fixture = fixture();
    // Objects only root may read: the caller lists the tree but cannot read the content.
    let private = fixture.dir.path().join("private-objects");
    let status = Command::new("cp")
        .args(["-a"])
        .arg(&fixture.basedir)
        .arg(&private)
        .status()
        .unwrap();
    assert!(status.success());
    // Files 0600 of another user, directories still open: the caller opens the basedir
    // itself.
    let status = Command::new("find")
        .arg(&private)
        .args(["-type", "f", "-exec", "chmod", "go-r", "{}", "+"])
        .status()
        .unwrap();
    assert!(status.success());
    let status = Command::new("find")
        .arg(&private)
        .args([
            "-type",
            "f",
            "-exec",
            "chown",
            &OTHER.to_string(),
            "{}",
            "+",
        ])
        .status()
        .unwrap();
    assert!(status.success());
    let mnt = user_mountpoint(fixture.dir.path(), "mnt", USER);
    let _unmount = Guard::mount(&mnt);
    assert_ok(
        "mount",
        &service.mount_as(USER, &fixture.image, &private, &mnt, &[]),
    );
    // Root reading through the caller's mount gets the caller's rights on objects too.
    let err = std::fs::read(mnt.join("object"))
        .map(|b| b.len())
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc_eacces()), "{err}");
    // Inline content (in the image) is readable.
    assert_eq!(std::fs::read(mnt.join("a")).unwrap(), b"hello\n");
    let out = as_uid(USER, "cat")
        .arg(mnt.join("object"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Permission denied"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ok("umount", &service.umount_as(USER, &mnt));
    // Root as the caller (with CAP_DAC_OVERRIDE in the initial namespace) reads them: the
    // overlay gets the caller's file capabilities too, so root gets the rootful mount.
    let root_mnt = fixture.dir.path().join("root-mnt");
    std::fs::create_dir(&root_mnt).unwrap();
    let _unmount_root = Guard::mount(&root_mnt);
    let out = Command::new(LAZYCFS)
        .args(["mount", "--mode", "service", "--service-socket"])
        .arg(&service.socket)
        .arg(&fixture.image)
        .arg(&root_mnt)
        .arg("--basedir")
        .arg(&private)
        .output()
        .unwrap();
    assert_ok("mount as root", &out);
    assert_eq!(
        std::fs::read(root_mnt.join("object")).unwrap(),
        vec![7u8; 10_000]
    );
    // Root without those capabilities (dropped from its bounding set, so gone after exec)
    // gets a mount that refuses the object, as opening it directly would.
    let capless_mnt = fixture.dir.path().join("capless-mnt");
    std::fs::create_dir(&capless_mnt).unwrap();
    let _unmount_capless = Guard::mount(&capless_mnt);
    let out = Command::new("setpriv")
        .args(["--bounding-set=-dac_override,-dac_read_search", "--"])
        .arg(LAZYCFS)
        .args(["mount", "--mode", "service", "--service-socket"])
        .arg(&service.socket)
        .arg(&fixture.image)
        .arg(&capless_mnt)
        .arg("--basedir")
        .arg(&private)
        .output()
        .unwrap();
    assert_ok("mount as root without file capabilities", &out);
    let err = std::fs::read(capless_mnt.join("object"))
        .map(|b| b.len())
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc_eacces()), "{err}");
    for mnt in [&root_mnt, &capless_mnt] {
        let out = Command::new(LAZYCFS)
            .arg("umount")
            .arg(mnt)
            .output()
            .unwrap();
        assert_ok("umount as root", &out);
    }
}

/// Sends `text` with `fds` to the service as `uid` (a thread with that uid connects, so
/// `SO_PEERCRED` says `uid`) and returns the answer.
fn raw_request(socket: &Path, uid: u32, text: &[u8], fds: &[BorrowedFd<'_>]) -> String {
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                become_user(uid);
                let mut stream = UnixStream::connect(socket).unwrap();
                send(&stream, text, fds);
                let mut answer = String::new();
                stream.read_to_string(&mut answer).unwrap();
                answer.trim_end().to_string()
            })
            .join()
            .unwrap()
    })
}

/// Makes the calling thread (only) `uid`, without capabilities.
fn become_user(uid: u32) {
    let gid = rustix::process::Gid::from_raw(uid);
    let uid = rustix::process::Uid::from_raw(uid);
    rustix::thread::set_thread_groups(&[]).unwrap();
    rustix::thread::set_thread_res_gid(gid, gid, gid).unwrap();
    rustix::thread::set_thread_res_uid(uid, uid, uid).unwrap();
}

fn send(stream: &UnixStream, text: &[u8], fds: &[BorrowedFd<'_>]) {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(6))];
    let mut ancillary = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() {
        assert!(ancillary.push(SendAncillaryMessage::ScmRights(fds)));
    }
    rustix::net::sendmsg(
        stream,
        &[IoSlice::new(text)],
        &mut ancillary,
        SendFlags::NOSIGNAL,
    )
    .unwrap();
}

fn open(path: &Path, flags: OFlags) -> OwnedFd {
    rustix::fs::open(path, flags | OFlags::CLOEXEC, Mode::empty()).unwrap()
}

const MOUNT: &[u8] = b"lazycfs-service 1\nmount\n\n";

#[test]
fn bad_requests_get_their_error_and_the_service_keeps_serving() {
    let test = "bad_requests_get_their_error_and_the_service_keeps_serving";
    if !ready(test) {
        return;
    }
    let service = Service::start(&["--max-image-size", "1000000", "--max-mounts-per-user", "1"]);
    let fixture = fixture();
    let socket = &service.socket;
    let image = open(&fixture.image, OFlags::RDONLY);
    let basedir = open(&fixture.basedir, OFlags::RDONLY | OFlags::DIRECTORY);
    let mnt = user_mountpoint(fixture.dir.path(), "mnt", ATTACKER);
    let _unmount = Guard::mount(&mnt);
    let mnt_fd = open(&mnt, OFlags::RDONLY | OFlags::DIRECTORY);
    let mount = |image: BorrowedFd<'_>, basedir: BorrowedFd<'_>, mnt: BorrowedFd<'_>| {
        raw_request(socket, ATTACKER, MOUNT, &[image, basedir, mnt])
    };

    // A symlink where a directory is expected.
    let link = fixture.dir.path().join("link");
    std::os::unix::fs::symlink(&mnt, &link).unwrap();
    let link_fd = open(&link, OFlags::PATH | OFlags::NOFOLLOW);
    assert_eq!(
        mount(image.as_fd(), basedir.as_fd(), link_fd.as_fd()),
        "error: mountpoint: not a directory"
    );
    assert_eq!(
        mount(image.as_fd(), link_fd.as_fd(), mnt_fd.as_fd()),
        "error: basedir: not a directory"
    );
    // A mountpoint the caller does not own (the fixture's root-owned directory).
    let root_dir = open(&fixture.basedir, OFlags::RDONLY | OFlags::DIRECTORY);
    assert_eq!(
        mount(image.as_fd(), basedir.as_fd(), root_dir.as_fd()),
        "error: mountpoint: owned by uid 0, not by the caller"
    );
    // A mountpoint that is not empty.
    let full = user_mountpoint(fixture.dir.path(), "full", ATTACKER);
    std::fs::write(full.join("file"), b"").unwrap();
    let full_fd = open(&full, OFlags::RDONLY | OFlags::DIRECTORY);
    assert_eq!(
        mount(image.as_fd(), basedir.as_fd(), full_fd.as_fd()),
        "error: mountpoint: not empty"
    );
    // An image fd not open for reading (O_PATH: a file the caller may not read).
    let path_only = open(&fixture.image, OFlags::PATH);
    assert_eq!(
        mount(path_only.as_fd(), basedir.as_fd(), mnt_fd.as_fd()),
        "error: image: not open for reading"
    );
    // An image that changes while the service reads it: /proc/version says 0 bytes when
    // stat'ed, then reads as more (as a file that grows meanwhile).
    let growing = open(Path::new("/proc/version"), OFlags::RDONLY);
    assert_eq!(
        mount(growing.as_fd(), basedir.as_fd(), mnt_fd.as_fd()),
        "error: image: changed while the service read it"
    );
    // An image too big.
    let big = fixture.dir.path().join("big.cfs");
    std::fs::write(&big, vec![0u8; 1_000_001]).unwrap();
    let big_fd = open(&big, OFlags::RDONLY);
    assert_eq!(
        mount(big_fd.as_fd(), basedir.as_fd(), mnt_fd.as_fd()),
        "error: image: 1000001 bytes, more than the 1000000 allowed (--max-image-size)"
    );
    // Corrupt and hostile images: refused with what `lazycfs check` says.
    for (what, bytes) in bad_images(&fixture.image) {
        let path = fixture.dir.path().join(format!("{what}.cfs"));
        std::fs::write(&path, &bytes).unwrap();
        let check = Command::new(LAZYCFS)
            .arg("check")
            .arg(&path)
            .output()
            .unwrap();
        assert!(!check.status.success(), "{what}: lazycfs check accepts it");
        let expected = match Image::from_bytes(bytes) {
            Err(e) => e.to_string(),
            Ok(image) => lazycfs::check::check(&image).unwrap_err().to_string(),
        };
        let fd = open(&path, OFlags::RDONLY);
        assert_eq!(
            mount(fd.as_fd(), basedir.as_fd(), mnt_fd.as_fd()),
            format!("error: image: {expected}"),
            "{what}"
        );
    }
    // A digest that is not the image's.
    let wrong = [0x11u8; 32];
    let text = format!(
        "lazycfs-service 1\nmount\ndigest {}\n\n",
        lazycfs::create::hex(&wrong)
    );
    let answer = raw_request(
        socket,
        ATTACKER,
        text.as_bytes(),
        &[image.as_fd(), basedir.as_fd(), mnt_fd.as_fd()],
    );
    assert!(
        answer.starts_with("error: image: fs-verity digest ")
            && answer.ends_with(&format!(
                "differs from --digest {}",
                lazycfs::create::hex(&wrong)
            )),
        "{answer}"
    );
    // Wrong numbers of fds, unknown requests, extra text.
    assert_eq!(
        raw_request(socket, ATTACKER, MOUNT, &[image.as_fd()]),
        "error: bad request: 1 file descriptors, 3 expected"
    );
    assert_eq!(
        raw_request(socket, ATTACKER, b"lazycfs-service 1\nformat\n\n", &[]),
        "error: bad request: unknown request \"format\""
    );
    assert_eq!(
        raw_request(socket, ATTACKER, b"GET / HTTP/1.0\n\n", &[]),
        "error: bad request: request does not start with \"lazycfs-service 1\""
    );
    // Disconnecting mid-request.
    std::thread::scope(|scope| {
        scope.spawn(|| {
            become_user(ATTACKER);
            let stream = UnixStream::connect(socket).unwrap();
            send(&stream, b"lazycfs-service 1\nmo", &[image.as_fd()]);
        });
    });
    // The per-user limit: one mount, then a second is refused.
    assert_eq!(mount(image.as_fd(), basedir.as_fd(), mnt_fd.as_fd()), "ok");
    let second = user_mountpoint(fixture.dir.path(), "second", ATTACKER);
    let second_fd = open(&second, OFlags::RDONLY | OFlags::DIRECTORY);
    assert_eq!(
        mount(image.as_fd(), basedir.as_fd(), second_fd.as_fd()),
        format!("error: uid {ATTACKER} has 1 service mounts already (--max-mounts-per-user)")
    );
    assert_ok("umount", &service.umount_as(ATTACKER, &mnt));
    // An unmount request for something else: a directory inside a mount, a plain directory.
    assert_eq!(
        raw_request(
            socket,
            ATTACKER,
            b"lazycfs-service 1\numount\n\n",
            &[second_fd.as_fd()]
        ),
        "error: mountpoint: not the root of a mount"
    );
    service.assert_serving(&fixture, ATTACKER);
}

/// The fuzzers' handmade seeds (every regression they found: cycles, truncations, names with
/// a slash, huge sizes, ...) sent to the service: each image `check` refuses gets
/// `check`'s own message, each it accepts is mounted (rewritten) and unmounted, and the
/// service serves on.
#[test]
fn hostile_seed_images_are_refused_as_check_says_and_the_service_keeps_serving() {
    let test = "hostile_seed_images_are_refused_as_check_says_and_the_service_keeps_serving";
    if !ready(test) {
        return;
    }
    let service = Service::start(&[]);
    let fixture = fixture();
    let basedir = open(&fixture.basedir, OFlags::RDONLY | OFlags::DIRECTORY);
    let mnt = user_mountpoint(fixture.dir.path(), "mnt", OTHER);
    let _unmount = Guard::mount(&mnt);
    let mnt_fd = open(&mnt, OFlags::RDONLY | OFlags::DIRECTORY);
    let (mut refused, mut mounted) = (0, 0);
    for seed in seeds::handmade_seeds() {
        let path = fixture.dir.path().join(&seed.name);
        std::fs::write(&path, &seed.image).unwrap();
        let image = open(&path, OFlags::RDONLY);
        let answer = raw_request(
            &service.socket,
            OTHER,
            MOUNT,
            &[image.as_fd(), basedir.as_fd(), mnt_fd.as_fd()],
        );
        let checked = Image::from_bytes(seed.image.clone())
            .map_err(|e| e.to_string())
            .and_then(|image| lazycfs::check::check(&image).map_err(|e| e.to_string()));
        match checked {
            Err(why) => {
                assert_eq!(answer, format!("error: image: {why}"), "{}", seed.name);
                refused += 1;
            }
            Ok(_) => {
                assert_eq!(answer, "ok", "{}: check accepts it", seed.name);
                assert!(is_mount_point(&mnt), "{}", seed.name);
                rustix::mount::unmount(&mnt, rustix::mount::UnmountFlags::DETACH).unwrap();
                mounted += 1;
            }
        }
    }
    eprintln!("{refused} seeds refused, {mounted} mounted");
    assert!(refused > 0 && mounted > 0);
    service.assert_serving(&fixture, OTHER);
}

/// Images `check` refuses: not EROFS, a corrupt superblock root, a directory cycle (the
/// hostile suite's).
fn bad_images(good: &Path) -> Vec<(&'static str, Vec<u8>)> {
    let mut root = std::fs::read(good).unwrap();
    // The superblock's root nid (offset 1024 + 14): far past the image.
    root[1024 + 14..1024 + 16].copy_from_slice(&0xfff0u16.to_le_bytes());
    let mut cycle = Img::new(2);
    cycle.dir(
        0,
        0,
        &[],
        &[(b".", 0, D), (b"..", 0, D), (b"a", 8, D), (b"f", 24, F)],
    );
    cycle.dir(
        8,
        0,
        &[],
        &[(b".", 8, D), (b"..", 0, D), (b"b", 16, D), (b"up", 0, D)],
    );
    cycle.dir(16, 0, &[], &[(b".", 16, D), (b"..", 8, D), (b"back", 8, D)]);
    cycle.file(24, 0, &[], b"content");
    vec![
        ("garbage", vec![0x5a; 8192]),
        ("bad-root", root),
        ("cycle", cycle.b.clone()),
    ]
}

#[test]
fn slow_and_flooding_callers_are_cut_off() {
    let test = "slow_and_flooding_callers_are_cut_off";
    if !ready(test) {
        return;
    }
    let service = Service::start(&["--request-timeout", "1"]);
    let fixture = fixture();
    // A request that never finishes sending: cut off after the request timeout.
    let answer = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                become_user(USER);
                let mut stream = UnixStream::connect(&service.socket).unwrap();
                send(&stream, b"lazycfs-service 1\n", &[]);
                let mut answer = String::new();
                stream.read_to_string(&mut answer).unwrap();
                answer
            })
            .join()
            .unwrap()
    });
    assert_eq!(answer, "error: request not received within 1 s\n");
    service.assert_serving(&fixture, USER);
    // A flood: two silent connections hold both slots; the third is refused at once (the
    // service accepts connections in order and counts each as it accepts it).
    let service = Service::start(&["--max-requests", "2"]);
    let silent: Vec<UnixStream> = (0..2)
        .map(|_| UnixStream::connect(&service.socket).unwrap())
        .collect();
    let mut third = UnixStream::connect(&service.socket).unwrap();
    let mut answer = String::new();
    third.read_to_string(&mut answer).unwrap();
    assert_eq!(
        answer,
        "error: busy: 2 requests in flight (--max-requests)\n"
    );
    drop(silent);
    service.assert_serving(&fixture, USER);
}

#[test]
fn socket_activation_and_the_client_errors() {
    let test = "socket_activation_and_the_client_errors";
    if !ready(test) {
        return;
    }
    if Command::new("systemd-socket-activate")
        .arg("--help")
        .output()
        .is_err()
    {
        common::skip(
            test,
            "systemd-socket-activate missing (Debian package systemd)",
        );
        return;
    }
    let fixture = fixture();
    let dir = tempfile::Builder::new()
        .prefix("lazycfs-activate")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let socket = dir.path().join("mount.sock");
    let notify_path = dir.path().join("notify");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    // --listen names a path that does not exist: the service must use the socket it is given.
    let child = Command::new("systemd-socket-activate")
        .arg("-l")
        .arg(&socket)
        // It gives the service a fresh environment: NOTIFY_SOCKET is passed on by hand.
        .arg(format!("--setenv=NOTIFY_SOCKET={}", notify_path.display()))
        .args([LAZYCFS, "service", "--listen", "/nonexistent/never.sock"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Guard::process(child);
    // The socket systemd-socket-activate made (a unit's SocketMode=0666): any user connects.
    for _ in 0..1000 {
        if socket.exists() {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    std::fs::set_permissions(&socket, std::fs::Permissions::from_mode(0o666)).unwrap();
    let mnt = user_mountpoint(fixture.dir.path(), "mnt", USER);
    let _unmount = Guard::mount(&mnt);
    let mount = |image: &Path| {
        as_uid(USER, LAZYCFS)
            .args(["mount", "--mode", "service", "--service-socket"])
            .arg(&socket)
            .arg(image)
            .arg(&mnt)
            .arg("--basedir")
            .arg(&fixture.basedir)
            .output()
            .unwrap()
    };
    // systemd-socket-activate starts the service at the first connection.
    assert_ok("mount through socket activation", &mount(&fixture.image));
    wait_ready(&notify);
    assert_eq!(std::fs::read(mnt.join("a")).unwrap(), b"hello\n");
    assert!(!Path::new("/nonexistent/never.sock").exists());
    assert_ok(
        "umount",
        &as_uid(USER, LAZYCFS)
            .args(["umount", "--service-socket"])
            .arg(&socket)
            .arg(&mnt)
            .output()
            .unwrap(),
    );
    // An image the caller cannot read: the client cannot open it, nothing is sent.
    let secret = fixture.dir.path().join("secret.cfs");
    std::fs::copy(&fixture.image, &secret).unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        refusal("unreadable image", &mount(&secret)),
        format!(
            "lazycfs: mount {}: {}: Permission denied (os error 13)",
            mnt.display(),
            secret.display()
        )
    );
    // No service on the socket.
    let out = as_uid(USER, LAZYCFS)
        .args(["mount", "--mode", "service", "--service-socket"])
        .arg(dir.path().join("none.sock"))
        .arg(&fixture.image)
        .arg(&mnt)
        .arg("--basedir")
        .arg(&fixture.basedir)
        .output()
        .unwrap();
    assert_eq!(
        refusal("no service", &out),
        format!(
            "lazycfs: mount {}: mount service at {}: No such file or directory (os error 2)",
            mnt.display(),
            dir.path().join("none.sock").display()
        )
    );
}

#[test]
fn cache_is_keyed_by_content_and_auto_mode_picks_the_service() {
    let test = "cache_is_keyed_by_content_and_auto_mode_picks_the_service";
    if !ready(test) {
        return;
    }
    let service = Service::start(&[]);
    let fixture = fixture();
    // The same bytes under another name: one rewrite for both.
    let copy = fixture.dir.path().join("copy.cfs");
    std::fs::copy(&fixture.image, &copy).unwrap();
    rootless::make_readable(&copy);
    let first = user_mountpoint(fixture.dir.path(), "first", USER);
    let second = user_mountpoint(fixture.dir.path(), "second", USER);
    let _unmount = Guard::mount(&first).and_mount(&second);
    assert_ok(
        "first mount",
        &service.mount_as(USER, &fixture.image, &fixture.basedir, &first, &[]),
    );
    // --mode auto, as an unprivileged caller with a service that answers.
    let out = as_uid(USER, LAZYCFS)
        .args(["-v", "mount"])
        .arg(&copy)
        .arg(&second)
        .arg("--basedir")
        .arg(&fixture.basedir)
        .env("LAZYCFS_SERVICE_SOCKET", &service.socket)
        .output()
        .unwrap();
    assert_ok("auto mount", &out);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("mode service: not root, and the mount service answers"),
        "-v does not say why: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(mount_options(&second).contains("nosuid"));
    assert_eq!(std::fs::read(second.join("a")).unwrap(), b"hello\n");
    let log = service.log();
    let done: Vec<&str> = log.lines().filter(|l| l.contains(": mount done")).collect();
    assert_eq!(done.len(), 2, "{log}");
    assert!(done[0].ends_with("mount done (image rewritten)"), "{log}");
    assert!(
        done[1].ends_with("mount done (image rewritten earlier, from the cache)"),
        "{log}"
    );
    for mnt in [&first, &second] {
        assert_ok("umount", &service.umount_as(USER, mnt));
    }
    // The same file again, unchanged: not even read. Then changed (same bytes written over
    // it, which changes its ctime): read again, found in the cache by content.
    assert_ok(
        "third mount",
        &service.mount_as(USER, &fixture.image, &fixture.basedir, &first, &[]),
    );
    assert_ok("umount", &service.umount_as(USER, &first));
    let bytes = std::fs::read(&fixture.image).unwrap();
    std::fs::write(&fixture.image, &bytes).unwrap();
    assert_ok(
        "fourth mount",
        &service.mount_as(USER, &fixture.image, &fixture.basedir, &first, &[]),
    );
    assert_ok("umount", &service.umount_as(USER, &first));
    // Another user's mount of the same file reads it itself.
    let other = user_mountpoint(fixture.dir.path(), "other", OTHER);
    let _unmount_other = Guard::mount(&other);
    assert_ok(
        "mount by another user",
        &service.mount_as(OTHER, &fixture.image, &fixture.basedir, &other, &[]),
    );
    assert_ok("umount", &service.umount_as(OTHER, &other));
    let log = service.log();
    let done: Vec<&str> = log.lines().filter(|l| l.contains(": mount done")).collect();
    assert_eq!(done.len(), 5, "{log}");
    assert!(
        done[2].ends_with(
            "mount done (image unchanged since read: not read again, rewrite from the cache)"
        ),
        "{log}"
    );
    assert!(
        done[3].ends_with("mount done (image rewritten earlier, from the cache)"),
        "{log}"
    );
    assert!(
        done[4].ends_with("mount done (image rewritten earlier, from the cache)"),
        "{log}"
    );
}

#[test]
fn auto_mode_falls_back_to_fuse_without_a_service() {
    let test = "auto_mode_falls_back_to_fuse_without_a_service";
    if !ready(test) {
        return;
    }
    let fixture = fixture();
    let mnt = user_mountpoint(fixture.dir.path(), "mnt", USER);
    let _unmount = Guard::mount(&mnt);
    let none = fixture.dir.path().join("none.sock");
    let out = as_uid(USER, LAZYCFS)
        .args(["-v", "mount", "--no-object-check"])
        .arg(&fixture.image)
        .arg(&mnt)
        .arg("--basedir")
        .arg(&fixture.basedir)
        .env("LAZYCFS_SERVICE_SOCKET", &none)
        .output()
        .unwrap();
    assert_ok("auto mount without a service", &out);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "not using the mount service: mount service at {}: No such file or directory",
            none.display()
        )) && stderr.contains("mode direct"),
        "{stderr}"
    );
    // A FUSE mount without allow_other: only its user reads it.
    let out = as_uid(USER, "cat").arg(mnt.join("a")).output().unwrap();
    assert_eq!(out.stdout, b"hello\n");
    let out = as_uid(USER, LAZYCFS)
        .arg("umount")
        .arg(&mnt)
        .env("LAZYCFS_SERVICE_SOCKET", &none)
        .output()
        .unwrap();
    assert_ok("umount of the FUSE mount", &out);
    assert!(!is_mount_point(&mnt));
}
