//! The direct-view FUSE mount against the rootful kernel composefs mount (EROFS + overlayfs
//! with the basedir as data-only layer): every entry must be identical, field by field.

mod common;

use std::path::Path;

use common::tree::{self, CompareOptions};
use common::{cfs, kernel, objects};
use lazycfs::erofs::Image;
use lazycfs::mount::ServeOptions;

fn assert_same_as_composefs_mount(what: &str, image_path: &Path, basedir: &Path) {
    let reference = kernel::KernelMount::composefs(image_path, basedir)
        .unwrap_or_else(|e| panic!("{what}: kernel composefs mount: {e}"));
    let theirs = tree::walk(reference.path());
    let mnt = tempfile::tempdir().unwrap();
    let image = Image::open(image_path).unwrap();
    let options = ServeOptions::new().basedir(basedir).threads(2);
    let mounted = lazycfs::mount::mount(image, mnt.path(), &options).unwrap();
    let ours = tree::walk(mnt.path());
    mounted.unmount().unwrap();
    // FUSE fixes the root's inode number at 1: inode numbers are compared as hard-link
    // groupings only.
    let opts = CompareOptions {
        ino: false,
        content: true,
    };
    if let Err(diff) = tree::compare_with(&theirs, &ours, opts) {
        panic!("{what}: kernel composefs vs lazycfs: {diff}");
    }
}

fn check_dump(what: &str, dump: &str, versions: &[u32]) {
    let dir = tempfile::tempdir().unwrap();
    for &version in versions {
        let path = dir.path().join(format!("v{version}.erofs"));
        std::fs::write(&path, cfs::write_image(dump, version)).unwrap();
        let basedir = dir.path().join(format!("objects-v{version}"));
        std::fs::create_dir(&basedir).unwrap();
        objects::populate(&Image::open(&path).unwrap(), &basedir);
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
    let Some(corpus) = kernel::corpus_dir("corpus_matches_kernel_composefs_mount") else {
        return;
    };
    for name in cfs::CORPUS {
        let Ok(dump) = cfs::corpus_dump(&corpus, name) else {
            continue;
        };
        check_dump(name, &dump.text, &[dump.version]);
    }
}
