//! The direct-view FUSE mount against the rootful kernel composefs mount (EROFS + overlayfs
//! with the basedir as data-only layer): every entry must be identical, field by field.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use common::guard::Guard;
use common::tree::{self, CompareOptions};
use common::{cfs, kernel, objects, rootless};
use lazycfs::erofs::Image;
use lazycfs::mount::{ServeOptions, Transport};

fn assert_same_as_composefs_mount(what: &str, image_path: &Path, basedir: &Path) {
    let reference = kernel::KernelMount::composefs(image_path, basedir)
        .unwrap_or_else(|e| panic!("{what}: kernel composefs mount: {e}"));
    let theirs = tree::walk(reference.path());
    for transport in common::transport::all(what) {
        let mnt = tempfile::tempdir().unwrap();
        let image = Image::open(image_path).unwrap();
        let options = ServeOptions::new()
            .basedir(basedir)
            .threads(2)
            .transport(transport);
        let mounted = lazycfs::mount::mount(image, mnt.path(), &options).unwrap();
        assert_eq!(mounted.transport(), transport, "{what}");
        let ours = tree::walk(mnt.path());
        let on_rings = mounted.stats().uring_answered.load(Ordering::Relaxed);
        mounted.unmount().unwrap();
        // The walk's requests really went through the rings (or never did).
        assert_eq!(
            on_rings > 0,
            transport == Transport::Uring,
            "{what}: {on_rings}"
        );
        // FUSE fixes the root's inode number at 1: inode numbers are compared as hard-link
        // groupings only.
        let opts = CompareOptions {
            ino: false,
            content: true,
            both_unreadable: false,
        };
        if let Err(diff) = tree::compare_with(&theirs, &ours, opts) {
            panic!("{what} over {transport:?}: kernel composefs vs lazycfs: {diff}");
        }
    }
}

fn check_dump(what: &str, dump: &str, versions: &[u32]) {
    let dir = tempfile::tempdir().unwrap();
    for &version in versions {
        let path = dir.path().join(format!("v{version}.erofs"));
        std::fs::write(&path, cfs::write_image(dump, version)).unwrap();
        let basedir = dir.path().join(format!("objects-v{version}"));
        std::fs::create_dir(&basedir).unwrap();
        let objects = objects::populate(&Image::open(&path).unwrap(), &basedir);
        eprintln!("{what} V{version}: {objects} objects");
        assert_same_as_composefs_mount(&format!("{what} V{version}"), &path, &basedir);
    }
}

#[test]
fn composefs_kinds_match_kernel_composefs_mount() {
    if !kernel::require_composefs("composefs_kinds_match_kernel_composefs_mount") {
        return;
    }
    check_dump("kinds", include_str!("data/kinds.dump"), &cfs::VERSIONS);
}

#[test]
fn corpus_matches_kernel_composefs_mount() {
    if !kernel::require_composefs("corpus_matches_kernel_composefs_mount") {
        return;
    }
    let Some(corpus) = cfs::writable_corpus("corpus_matches_kernel_composefs_mount") else {
        return;
    };
    let mut compared = 0;
    for (name, dump) in corpus {
        check_dump(name, &dump.text, &[dump.version]);
        compared += 1;
    }
    eprintln!("{compared} corpus files compared");
    assert_eq!(compared, cfs::CORPUS_WRITABLE);
}

#[test]
fn concurrent_walkers_see_the_same_tree() {
    if !kernel::require_root("concurrent_walkers_see_the_same_tree") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kinds.erofs");
    std::fs::write(&path, cfs::write_image(include_str!("data/kinds.dump"), 1)).unwrap();
    let basedir = dir.path().join("objects");
    std::fs::create_dir(&basedir).unwrap();
    let objects = objects::populate(&Image::open(&path).unwrap(), &basedir);
    assert!(objects > 0, "kinds.dump names objects");
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    for transport in common::transport::all("concurrent_walkers_see_the_same_tree") {
        let options = ServeOptions::new()
            .basedir(&basedir)
            .threads(4)
            .transport(transport);
        let mounted = lazycfs::mount::mount(Image::open(&path).unwrap(), &mnt, &options).unwrap();
        let single = tree::walk(&mnt);
        let walks: Vec<_> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8).map(|_| s.spawn(|| tree::walk(&mnt))).collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        for walk in walks {
            tree::compare(&single, &walk).unwrap();
        }
        mounted.unmount().unwrap();
    }
}

/// The kinds image and its objects in a directory the unprivileged user can read, and an
/// empty mountpoint it owns: (directory, image, basedir, mountpoint).
fn user_fixture() -> (tempfile::TempDir, PathBuf, PathBuf, PathBuf) {
    let dir = rootless::user_dir();
    let image = dir.path().join("kinds.erofs");
    std::fs::write(&image, cfs::write_image(include_str!("data/kinds.dump"), 1)).unwrap();
    let basedir = dir.path().join("objects");
    let objects = objects::populate(&Image::open(&image).unwrap(), &basedir);
    assert!(objects > 0, "kinds.dump names objects");
    rootless::make_readable(dir.path());
    let mnt = dir.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    rustix::fs::chown(&mnt, Some(rustix::fs::Uid::from_raw(rootless::USER)), None).unwrap();
    (dir, image, basedir, mnt)
}

#[test]
fn unprivileged_user_mounts_through_fusermount3() {
    if !rootless::require("unprivileged_user_mounts_through_fusermount3") {
        return;
    }
    // One mountpoint for both transports: the second mount comes while the first server may
    // still be exiting, which must not unmount its path again.
    let (_dir, image, basedir, mnt) = user_fixture();
    for transport in common::transport::all("unprivileged_user_mounts_through_fusermount3") {
        let bin = Path::new(env!("CARGO_BIN_EXE_lazycfs"));
        let mount = rootless::as_user(bin)
            .arg("mount")
            .arg(&image)
            .arg(&mnt)
            .arg("--basedir")
            .arg(&basedir)
            .args(["--transport", transport.name()])
            .output()
            .unwrap();
        assert!(
            mount.status.success(),
            "mount as nobody over {transport:?}: {}",
            String::from_utf8_lossy(&mount.stderr)
        );
        // Inline image data, and a basedir object: without passthrough (not root), the server
        // reads it on its object-reader threads.
        let inline = rootless::as_user(Path::new("cat"))
            .arg(mnt.join("dash"))
            .output()
            .unwrap();
        let object = rootless::as_user(Path::new("cat"))
            .arg(mnt.join("ext"))
            .output()
            .unwrap();
        let umount = rootless::as_user(bin)
            .arg("umount")
            .arg(&mnt)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&inline.stdout),
            "-",
            "{}",
            String::from_utf8_lossy(&inline.stderr)
        );
        let expected = std::fs::read(basedir.join("a3").join("1".repeat(62))).unwrap();
        assert_eq!(expected.len(), 10000);
        assert!(
            object.stdout == expected,
            "object content differs ({} bytes read): {}",
            object.stdout.len(),
            String::from_utf8_lossy(&object.stderr)
        );
        assert!(
            umount.status.success(),
            "umount: {}",
            String::from_utf8_lossy(&umount.stderr)
        );
    }
}

#[test]
fn mkfs_erofs_fixtures_match_kernel_composefs_mount() {
    let test = "mkfs_erofs_fixtures_match_kernel_composefs_mount";
    if !kernel::require_composefs(test) || !common::fixtures::require_mkfs(test) {
        return;
    }
    // Plain EROFS images (data in the image, every xattr namespace, devices, hardlinks, a
    // 20k-entry directory) through the same overlay stack, with an empty basedir.
    let variants = common::fixtures::mkfs_variants();
    for (name, args) in variants
        .iter()
        .filter(|(n, _)| ["default", "chunked-4k", "extended"].contains(n))
    {
        let (dir, image) = common::fixtures::build_rich_image(args);
        let basedir = dir.path().join("empty-basedir");
        std::fs::create_dir(&basedir).unwrap();
        assert_same_as_composefs_mount(&format!("mkfs.erofs {name}"), &image, &basedir);
    }
}

/// `umount` then `mount` again on the same path at once, as root and as a user: the first
/// server, still exiting, must not take the new mount with it.
#[test]
fn a_new_mount_on_the_same_path_survives_the_last_server() {
    if !rootless::require("a_new_mount_on_the_same_path_survives_the_last_server") {
        return;
    }
    let (_dir, image, basedir, mnt) = user_fixture();
    let bin = Path::new(env!("CARGO_BIN_EXE_lazycfs"));
    let root = |program: &Path| std::process::Command::new(program);
    for (who, launch) in [
        ("root", &root as &dyn Fn(&Path) -> std::process::Command),
        ("user", &rootless::as_user),
    ] {
        // The servers of the previous round's mount, perhaps still exiting.
        let mut exiting = Vec::new();
        let _unmount = Guard::mount(&mnt);
        for round in 0..5 {
            let mount = launch(bin)
                .args(["mount", "--mode", "direct"])
                .arg(&image)
                .arg(&mnt)
                .arg("--basedir")
                .arg(&basedir)
                .output()
                .unwrap();
            assert!(
                mount.status.success(),
                "{who} round {round}: mount: {}",
                String::from_utf8_lossy(&mount.stderr)
            );
            // The previous server finishes exiting after the new mount is made.
            let gone = |pid: &u32| !Path::new(&format!("/proc/{pid}")).exists();
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
            while !exiting.iter().all(gone) {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{who} round {round}: the previous server does not exit"
                );
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let listed = launch(Path::new("cat"))
                .arg(mnt.join("dash"))
                .output()
                .unwrap();
            assert_eq!(
                String::from_utf8_lossy(&listed.stdout),
                "-",
                "{who} round {round}: the new mount is gone: {}",
                String::from_utf8_lossy(&listed.stderr)
            );
            exiting = servers_of(&mnt);
            assert!(!exiting.is_empty(), "{who} round {round}: no server");
            let umount = launch(bin).arg("umount").arg(&mnt).output().unwrap();
            assert!(
                umount.status.success(),
                "{who} round {round}: umount: {}",
                String::from_utf8_lossy(&umount.stderr)
            );
        }
    }
}

/// The lazycfs processes whose command line names `mnt`.
fn servers_of(mnt: &Path) -> Vec<u32> {
    let mnt = mnt.as_os_str().as_encoded_bytes();
    std::fs::read_dir("/proc")
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
                return false;
            };
            let mut args = cmdline.split(|&b| b == 0);
            args.next().is_some_and(|argv0| argv0.ends_with(b"lazycfs"))
                && args.any(|arg| arg == mnt)
        })
        .collect()
}
