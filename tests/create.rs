//! `lazycfs create`: images of real trees read back identically through `lazycfs dump`, the
//! composefs crate's reader and the kernel's composefs mount (EROFS + overlayfs with the
//! objects as data-only layer, walked with content and compared with the source); the same
//! tree gives the same bytes; objects are named by their fs-verity digest, never rewritten;
//! and each kind of bad input is one line with its own exit status, leaving nothing
//! half-written.

mod common;

use std::os::unix::ffi::OsStrExt as _;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::guard::Guard;
use common::tree::{self, CompareOptions, Entry};
use common::{cfs, fixtures, kernel, rootless};
use composefs::fsverity::{Sha256HashValue, compute_verity};
use zerocopy::IntoBytes;

const LAZYCFS: &str = env!("CARGO_BIN_EXE_lazycfs");

fn lazycfs() -> Command {
    Command::new(LAZYCFS)
}

fn create(source: &Path, image: &Path, args: &[&str]) -> Output {
    lazycfs()
        .arg("create")
        .arg(source)
        .arg(image)
        .args(args)
        .output()
        .unwrap()
}

fn create_ok(source: &Path, image: &Path, args: &[&str]) -> Vec<u8> {
    let out = create(source, image, args);
    assert!(
        out.status.success(),
        "create {}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(image).unwrap()
}

fn objects_arg(objects: &Path) -> String {
    format!("--objects={}", objects.display())
}

/// The fs-verity digest by the composefs crate's implementation (not lazycfs's).
fn verity(bytes: &[u8]) -> String {
    let digest: Sha256HashValue = compute_verity(bytes);
    digest
        .as_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Every object is complete: its content's fs-verity digest is its name. Returns how many.
fn assert_objects_complete(objects: &Path) -> usize {
    let mut count = 0;
    let Ok(dirs) = std::fs::read_dir(objects) else {
        return 0;
    };
    for dir in dirs {
        let dir = dir.unwrap();
        for object in std::fs::read_dir(dir.path()).unwrap() {
            let object = object.unwrap();
            let name = format!(
                "{}{}",
                dir.file_name().to_str().unwrap(),
                object.file_name().to_str().unwrap()
            );
            let content = std::fs::read(object.path()).unwrap();
            assert_eq!(verity(&content), name, "object {}", object.path().display());
            count += 1;
        }
    }
    count
}

/// The rich fixture tree plus the edges of create itself: files around the inline limit, a
/// 255-byte name, a 60-deep directory chain, two equal files (one object).
fn source_tree(dir: &Path) -> PathBuf {
    let source = dir.join("source");
    fixtures::rich_tree(&source);
    let edges = source.join("create_edges");
    std::fs::create_dir(&edges).unwrap();
    for size in [63, 64, 65, 5 << 20] {
        let name = format!("size_{size}");
        std::fs::write(edges.join(&name), fixtures::pseudo_random(&name, size)).unwrap();
    }
    std::fs::write(edges.join("same_a"), fixtures::pseudo_random("same", 9000)).unwrap();
    std::fs::write(edges.join("same_b"), fixtures::pseudo_random("same", 9000)).unwrap();
    let long = std::ffi::OsStr::from_bytes(&[b'L'; 255]);
    std::fs::write(edges.join(long), b"255-byte name").unwrap();
    let mut deep = edges.join("deep");
    for i in 0..60 {
        deep.push(format!("level{i}"));
    }
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("bottom"), b"bottom of the chain\n").unwrap();
    source
}

/// What the kernel mount must show of the source: directory sizes are the filesystem's own,
/// and V2 stores whole seconds.
fn comparable(mut entries: Vec<Entry>, whole_seconds: bool) -> Vec<Entry> {
    for entry in &mut entries {
        if entry.is_dir() {
            entry.size = 0;
        }
        if whole_seconds {
            entry.mtime_nsec = 0;
        }
    }
    entries
}

#[test]
fn every_kind_of_file_reads_back_through_dump_composefs_and_the_kernel() {
    let test = "every_kind_of_file_reads_back_through_dump_composefs_and_the_kernel";
    if !kernel::require_composefs(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = source_tree(dir.path());
    let objects = dir.path().join("objects");
    for format in ["v0", "v1", "v2"] {
        let image = dir.path().join(format!("{format}.cfs"));
        let bytes = create_ok(
            &source,
            &image,
            &[&objects_arg(&objects), "--format", format],
        );
        lazycfs::check::check(&lazycfs::erofs::Image::from_bytes(bytes.clone()).unwrap())
            .unwrap_or_else(|e| panic!("{format}: check: {e}"));

        let mount = kernel::KernelMount::composefs(&image, &objects).unwrap();
        let whole_seconds = format == "v2";
        let mounted = comparable(tree::walk(mount.path()), whole_seconds);
        let expected = comparable(tree::walk(&source), whole_seconds);
        let options = CompareOptions {
            ino: false,
            content: true,
            both_unreadable: false,
        };
        if let Err(diff) = tree::compare_with(&expected, &mounted, options) {
            panic!("{format}: source vs kernel composefs mount: {diff}");
        }
    }
    // The composefs crate's reader refuses symlinks over 1024 bytes: without the one of 4095.
    std::fs::remove_file(source.join("links/len_4095")).unwrap();
    for format in ["v0", "v1", "v2"] {
        let image = dir.path().join(format!("{format}-short-links.cfs"));
        let bytes = create_ok(
            &source,
            &image,
            &[&objects_arg(&objects), "--format", format],
        );
        let ours = cfs::lazycfs_dump(&bytes);
        let theirs = cfs::reference_dump(&bytes);
        if ours != theirs {
            for (a, b) in ours.lines().zip(theirs.lines()) {
                assert_eq!(a, b, "{format}: lazycfs dump vs composefs reader");
            }
            panic!("{format}: lazycfs dump and composefs reader differ in length");
        }
    }
    // Equal files share one object; files of 64 bytes or less have none.
    let dump = cfs::lazycfs_dump(&std::fs::read(dir.path().join("v1.cfs")).unwrap());
    let object_of = |name: &str| {
        let line = dump.lines().find(|l| l.starts_with(name)).unwrap();
        line.split(' ').nth(8).unwrap().to_string()
    };
    assert_eq!(
        object_of("/create_edges/same_a "),
        object_of("/create_edges/same_b ")
    );
    assert_eq!(object_of("/create_edges/size_64 "), "-");
    assert_ne!(object_of("/create_edges/size_65 "), "-");
    assert_eq!(
        assert_objects_complete(&objects),
        distinct_contents_over_64(&source)
    );
}

/// How many distinct contents the regular files of `tree` over 64 bytes have: the objects
/// `create` stores for it.
fn distinct_contents_over_64(tree: &Path) -> usize {
    let mut contents = std::collections::HashSet::new();
    let mut dirs = vec![tree.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let entry = entry.unwrap();
            let kind = entry.file_type().unwrap();
            if kind.is_dir() {
                dirs.push(entry.path());
            } else if kind.is_file() && entry.metadata().unwrap().len() > 64 {
                contents.insert(std::fs::read(entry.path()).unwrap());
            }
        }
    }
    contents.len()
}

#[test]
fn same_tree_same_bytes_and_digest_only_writes_no_objects() {
    let test = "same_tree_same_bytes_and_digest_only_writes_no_objects";
    if !kernel::require_root(test) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = source_tree(dir.path());
    let objects = dir.path().join("objects");
    let first = create_ok(
        &source,
        &dir.path().join("a.cfs"),
        &[&objects_arg(&objects)],
    );
    let again = create_ok(
        &source,
        &dir.path().join("b.cfs"),
        &[&objects_arg(&objects)],
    );
    assert!(first == again, "two runs on one tree gave different images");

    let empty = dir.path().join("unused-objects");
    let image = dir.path().join("c.cfs");
    let out = create(&source, &image, &["--digest-only", "--print-digest"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::read(&image).unwrap() == first,
        "--digest-only gave another image"
    );
    assert!(!empty.exists());
    // The image's own digest, as the composefs crate computes it.
    let printed = String::from_utf8(out.stdout).unwrap();
    assert_eq!(printed.trim(), verity(&first));
    assert_eq!(
        printed.trim(),
        lazycfs::create::hex(&lazycfs::create::verity::FsVerityHasher::digest(&first))
    );
}

#[test]
fn present_objects_are_not_rewritten_and_truncated_ones_are_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    std::fs::create_dir(&source).unwrap();
    for i in 0..20 {
        let name = format!("f{i}");
        std::fs::write(
            source.join(&name),
            fixtures::pseudo_random(&name, 1000 + i * 3000),
        )
        .unwrap();
    }
    let objects = dir.path().join("objects");
    create_ok(
        &source,
        &dir.path().join("a.cfs"),
        &[&objects_arg(&objects)],
    );
    let inodes = |objects: &Path| {
        let mut all = Vec::new();
        for d in std::fs::read_dir(objects).unwrap() {
            for o in std::fs::read_dir(d.unwrap().path()).unwrap() {
                let o = o.unwrap();
                all.push((o.path(), o.metadata().unwrap().ino()));
            }
        }
        all.sort();
        all
    };
    let before = inodes(&objects);
    assert_eq!(before.len(), 20);
    // One object cut short (as a power loss before the data reached the disk may leave it).
    let (cut, _) = &before[7];
    std::fs::OpenOptions::new()
        .write(true)
        .open(cut)
        .unwrap()
        .set_len(10)
        .unwrap();
    create_ok(
        &source,
        &dir.path().join("b.cfs"),
        &[&objects_arg(&objects)],
    );
    let after = inodes(&objects);
    for ((path, old), (_, new)) in before.iter().zip(&after) {
        if path == cut {
            assert_ne!(old, new, "truncated object kept");
        } else {
            assert_eq!(old, new, "{} rewritten", path.display());
        }
    }
    assert_eq!(assert_objects_complete(&objects), 20);
}

/// Runs `create` expecting failure: one line on stderr, the given status, no image and no
/// temporary file next to it, and only complete objects.
fn assert_fails(out: &Output, status: i32, says: &str, image: &Path, objects: Option<&Path>) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(status), "stderr: {stderr}");
    assert_eq!(stderr.lines().count(), 1, "not one line: {stderr}");
    assert!(stderr.contains(says), "{stderr:?} does not say {says:?}");
    assert!(!image.exists(), "image written");
    let leftovers: Vec<_> = std::fs::read_dir(image.parent().unwrap())
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        !leftovers
            .iter()
            .any(|n| n.to_string_lossy().contains(".tmp")),
        "temporary files left: {leftovers:?}"
    );
    if let Some(objects) = objects {
        assert_objects_complete(objects);
    }
}

#[test]
fn source_not_a_directory_is_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("file");
    std::fs::write(&file, b"x").unwrap();
    let image = dir.path().join("out/x.cfs");
    std::fs::create_dir(dir.path().join("out")).unwrap();
    let out = create(&file, &image, &["--digest-only"]);
    assert_fails(&out, 3, "not a directory", &image, None);
}

/// A tmpfs mounted for one test, detached on drop (fields drop in order).
struct Tmpfs {
    _unmount: Guard,
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(options: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let status = Command::new("mount")
            .args(["-t", "tmpfs", "-o", options, "lazycfs-test"])
            .arg(dir.path())
            .status()
            .unwrap();
        assert!(status.success(), "mount tmpfs -o {options}");
        Tmpfs {
            _unmount: Guard::mount(dir.path()),
            dir,
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

#[test]
fn unreadable_file_is_exit_4() {
    if !rootless::require("unreadable_file_is_exit_4") {
        return;
    }
    let dir = rootless::user_dir();
    let source = dir.path().join("source");
    std::fs::create_dir(&source).unwrap();
    std::fs::write(source.join("readable"), fixtures::pseudo_random("r", 5000)).unwrap();
    let secret = source.join("secret");
    std::fs::write(&secret, fixtures::pseudo_random("s", 5000)).unwrap();
    rootless::make_readable(&source);
    std::fs::set_permissions(&secret, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let (image, objects) = (dir.path().join("x.cfs"), dir.path().join("objects"));
    let out = rootless::as_user(Path::new(LAZYCFS))
        .arg("create")
        .arg(&source)
        .arg(&image)
        .arg(objects_arg(&objects))
        .output()
        .unwrap();
    assert_fails(&out, 4, "secret: Permission denied", &image, Some(&objects));
}

#[test]
fn read_only_objects_dir_is_exit_5() {
    if !kernel::require_root("read_only_objects_dir_is_exit_5") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    std::fs::create_dir(&source).unwrap();
    std::fs::write(source.join("f"), fixtures::pseudo_random("f", 5000)).unwrap();
    let read_only = Tmpfs::mount("ro,size=1m");
    let image = dir.path().join("x.cfs");
    let objects = read_only.path().join("objects");
    let out = create(&source, &image, &[&objects_arg(&objects)]);
    assert_fails(&out, 5, "Read-only file system", &image, None);
    // The image on a read-only filesystem too.
    let image = read_only.path().join("x.cfs");
    let out = create(&source, &image, &["--digest-only"]);
    assert_fails(&out, 5, "Read-only file system", &image, None);
}

#[test]
fn full_disk_is_exit_6() {
    if !kernel::require_root("full_disk_is_exit_6") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    std::fs::create_dir(&source).unwrap();
    for i in 0..8 {
        let name = format!("f{i}");
        std::fs::write(source.join(&name), fixtures::pseudo_random(&name, 300_000)).unwrap();
    }
    let small = Tmpfs::mount("size=1m");
    let objects = small.path().join("objects");
    let image = dir.path().join("x.cfs");
    let out = create(&source, &image, &[&objects_arg(&objects)]);
    assert_fails(&out, 6, "No space left on device", &image, Some(&objects));
    // The image on a full disk: its temporary file is removed.
    fixtures::big_dir_tree(&source.join("many"), 3000);
    let tiny = Tmpfs::mount("size=64k");
    let image = tiny.path().join("x.cfs");
    let out = create(&source, &image, &["--digest-only"]);
    assert_fails(&out, 6, "No space left on device", &image, None);
}

#[test]
fn sigint_stops_without_an_image_or_a_partial_object() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    std::fs::create_dir(&source).unwrap();
    for i in 0..50 {
        let name = format!("f{i:02}");
        std::fs::write(source.join(&name), fixtures::pseudo_random(&name, 100_000)).unwrap();
    }
    // Long enough to hash that the signal comes first: 64 GiB of holes.
    let huge = std::fs::File::create(source.join("huge")).unwrap();
    huge.set_len(64 << 30).unwrap();
    let (image, objects) = (dir.path().join("x.cfs"), dir.path().join("objects"));
    let child = lazycfs()
        .arg("create")
        .arg(&source)
        .arg(&image)
        .arg(objects_arg(&objects))
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut child = Guard::process(child);
    // Signalled once it is storing objects (the deadline bounds a stuck test), it stops
    // with the interrupted status rather than finishing: no wall-clock figure is needed.
    let started = std::time::Instant::now();
    while assert_objects_complete(&objects) < 10 {
        assert!(started.elapsed().as_secs() < 120, "no objects stored");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let child = child.take();
    let pid = rustix::process::Pid::from_child(&child);
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_fails(&out, 130, "interrupted", &image, Some(&objects));
}

/// The README's quick start, as an unprivileged user.
#[test]
fn quick_start_works_unprivileged() {
    if !rootless::require("quick_start_works_unprivileged") {
        return;
    }
    let doc = Path::new("/usr/share/doc");
    let dir = rootless::user_dir();
    let run_as_user = |args: &[&str]| {
        rootless::as_user(Path::new(LAZYCFS))
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap()
    };
    let out = run_as_user(&["create", "/usr/share/doc", "doc.cfs", "--objects", "objs"]);
    assert!(
        out.status.success(),
        "create: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = run_as_user(&["run", "doc.cfs", "--basedir", "objs", "--", "ls"]);
    assert!(
        out.status.success(),
        "run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut expected: Vec<String> = std::fs::read_dir(doc)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    expected.sort();
    let listed: Vec<String> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    let mut listed_sorted = listed.clone();
    listed_sorted.sort();
    assert_eq!(listed_sorted, expected);
}

/// Whiteouts (char 0/0) in the source: escaped in V0/V1 images, as `mkcomposefs` does, stored
/// as they are in V2; every reader shows them as whiteouts again.
#[test]
fn source_whiteouts_read_back_as_whiteouts() {
    if !kernel::require_root("source_whiteouts_read_back_as_whiteouts") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("source");
    std::fs::create_dir_all(source.join("sub")).unwrap();
    for path in ["gone", "sub/gone_too"] {
        let status = Command::new("mknod")
            .arg(source.join(path))
            .args(["c", "0", "0"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    for format in ["v0", "v1", "v2"] {
        let image = dir.path().join(format!("{format}.cfs"));
        let bytes = create_ok(&source, &image, &["--digest-only", "--format", format]);
        let ours = cfs::lazycfs_dump(&bytes);
        assert_eq!(ours, cfs::reference_dump(&bytes), "{format}");
        let whiteouts = ours
            .lines()
            .filter(|l| l.split(' ').nth(2) == Some("20644"));
        assert_eq!(whiteouts.count(), 2, "{format}: {ours}");
    }
}

/// `lazycfs create . image --objects objects` in the tree itself: what the run writes (the
/// objects, the image and its temporary file) stays out of the image.
#[test]
fn image_and_objects_inside_the_source_stay_out_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path();
    std::fs::write(source.join("file"), fixtures::pseudo_random("file", 5000)).unwrap();
    for _ in 0..2 {
        let out = lazycfs()
            .args(["create", ".", "image.cfs", "--objects", "objects"])
            .current_dir(source)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let dump = cfs::lazycfs_dump(&std::fs::read(source.join("image.cfs")).unwrap());
        let paths: Vec<&str> = dump.lines().map(|l| l.split(' ').next().unwrap()).collect();
        assert_eq!(paths, ["/", "/file"], "{dump}");
    }
}
