//! Differential tests against the kernel: every fixture is mounted with `mount -t erofs` and
//! each entry the kernel shows (all stat fields, readdir names and types, readlink, every
//! xattr, content of data held in the image) must equal what the lazy decoder returns.

mod common;

use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use common::tree::{self, CompareOptions};
use common::{cfs, decoded, fixtures, kernel};
use lazycfs::erofs::Image;

/// Mounts `image` with the kernel and compares its tree with the decoder's, entry by entry.
fn assert_same_as_kernel(what: &str, image: &Path) {
    let mount = kernel::KernelMount::erofs(image).unwrap_or_else(|e| panic!("{what}: mount: {e}"));
    let theirs = tree::walk(mount.path());
    let ours = decoded::walk(&Image::open(image).unwrap());
    // The kernel reports the nid as st_ino (64-bit), so inode numbers are compared too. Bare
    // EROFS holds no data of a composefs image's external files: V2's have no chunk map and
    // read as EIO on both sides.
    let opts = CompareOptions {
        ino: true,
        content: true,
        both_unreadable: true,
    };
    if let Err(diff) = tree::compare_with(&theirs, &ours, opts) {
        panic!("{what}: kernel vs lazycfs: {diff}");
    }
    assert!(theirs.len() > 1, "{what}: empty tree");
    lazycfs::check::check(&Image::open(image).unwrap())
        .unwrap_or_else(|e| panic!("{what}: check: {e}"));
}

#[test]
fn mkfs_erofs_fixtures_match_kernel() {
    if !kernel::require_root("mkfs_erofs_fixtures_match_kernel")
        || !fixtures::require_mkfs("mkfs_erofs_fixtures_match_kernel")
    {
        return;
    }
    for (name, args) in fixtures::mkfs_variants() {
        let (_dir, image) = fixtures::build_rich_image(&args);
        assert_same_as_kernel(&format!("mkfs.erofs {name}"), &image);
    }
}

#[test]
fn compressed_images_are_refused_per_inode() {
    if !kernel::require_root("compressed_images_are_refused_per_inode")
        || !fixtures::require_mkfs("compressed_images_are_refused_per_inode")
    {
        return;
    }
    let (dir, path) = fixtures::build_rich_image(&["-zlz4"]);
    let src = fixtures::rich_source(&dir);
    let image = Image::open(&path).expect("compressed images open (metadata is plain)");
    // Metadata decodes everywhere; each regular file either reads as its source (mkfs.erofs
    // stores what does not compress plainly) or, compressed, says "unsupported", not garbage.
    let (mut compressed, mut plain) = (0, 0);
    for (path, nid) in decoded_paths(&image) {
        let inode = image.inode(nid).unwrap();
        if inode.file_type() != lazycfs::erofs::FileType::Regular {
            continue;
        }
        let unsupported = |e| matches!(e, lazycfs::erofs::Error::Unsupported { .. });
        let mut buf = vec![0; inode.size() as usize];
        if inode.layout() == lazycfs::erofs::DataLayout::Compressed {
            let what = path.display();
            assert!(unsupported(inode.extent_at(0).unwrap_err()), "{what}");
            assert!(
                unsupported(inode.read_at(0, &mut buf).unwrap_err()),
                "{what}"
            );
            compressed += 1;
        } else {
            let what = path.display();
            assert_eq!(inode.read_at(0, &mut buf).unwrap(), buf.len(), "{what}");
            let expected = std::fs::read(src.join(path.strip_prefix("/").unwrap())).unwrap();
            assert!(buf == expected, "{what}: content differs from the source");
            plain += 1;
        }
    }
    eprintln!("{compressed} compressed and {plain} plain regular files");
    assert!(compressed > 0, "no compressed inode in the lz4 image");
}

/// Every inode reachable from the root, with its path; any decoding error fails the test.
fn decoded_paths(image: &Image) -> Vec<(PathBuf, u64)> {
    let mut found = Vec::new();
    let mut stack = vec![(PathBuf::from("/"), image.root_nid())];
    while let Some((path, nid)) = stack.pop() {
        let inode = image
            .inode(nid)
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        if inode.is_dir() {
            let dir = inode
                .dir()
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            for e in dir.entries() {
                let e = e.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                if e.name != b"." && e.name != b".." {
                    stack.push((path.join(std::ffi::OsStr::from_bytes(e.name)), e.nid));
                }
            }
        }
        found.push((path, nid));
    }
    found
}

#[test]
fn composefs_images_match_kernel() {
    if !kernel::require_root("composefs_images_match_kernel") {
        return;
    }
    let dump = include_str!("data/kinds.dump");
    let dir = tempfile::tempdir().unwrap();
    for version in cfs::VERSIONS {
        let path = dir.path().join(format!("kinds-v{version}.erofs"));
        std::fs::write(&path, cfs::write_image(dump, version)).unwrap();
        assert_same_as_kernel(&format!("composefs V{version}"), &path);
    }
}

#[test]
fn corpus_images_match_kernel() {
    if !kernel::require_root("corpus_images_match_kernel") {
        return;
    }
    let Some(corpus) = cfs::writable_corpus("corpus_images_match_kernel") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let mut compared = 0;
    for (name, dump) in corpus {
        let path = dir.path().join(format!("{name}.erofs"));
        std::fs::write(&path, cfs::write_image(&dump.text, dump.version)).unwrap();
        assert_same_as_kernel(name, &path);
        compared += 1;
    }
    eprintln!("{compared} corpus files compared");
    assert_eq!(compared, cfs::CORPUS_WRITABLE);
}

#[test]
fn big_directory_lookups_match_kernel() {
    if !kernel::require_root("big_directory_lookups_match_kernel")
        || !fixtures::require_mkfs("big_directory_lookups_match_kernel")
    {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("src");
    fixtures::big_dir_tree(&src, 25_000);
    let path = dir.path().join("big.erofs");
    fixtures::mkfs_erofs(&src, &path, &[]).unwrap();
    let mount = kernel::KernelMount::erofs(&path).unwrap();
    let image = Image::open(&path).unwrap();
    let root = image.root().unwrap().dir().unwrap();
    let names = tree::read_dir_raw(mount.path()).unwrap();
    assert!(names.len() >= 25_000);
    // Every name the kernel lists is found by binary search, with the kernel's inode number.
    for (name, _) in &names {
        let entry = root
            .lookup(name)
            .unwrap()
            .unwrap_or_else(|| panic!("lookup {}", tree::esc(name)));
        let ino =
            std::fs::symlink_metadata(tree::abs_path(mount.path(), &[b"/", &name[..]].concat()));
        assert_eq!(
            std::os::unix::fs::MetadataExt::ino(&ino.unwrap()),
            entry.nid
        );
    }
    // Names between and around existing ones are misses.
    for name in [&b"0"[..], b"f", b"f0000005x", b"zzzz", b"f00000", b"\xff"] {
        assert_eq!(
            root.lookup(name).unwrap().map(|e| e.name),
            None,
            "{}",
            tree::esc(name)
        );
    }
    // Readdir resumed at every position yields the rest of the directory.
    let all: Vec<_> = root.entries().map(|e| e.unwrap()).collect();
    for (i, e) in all.iter().enumerate().step_by(997) {
        let rest: Vec<_> = root
            .entries_from(e.next_pos)
            .map(|e| e.unwrap().name)
            .collect();
        let expected: Vec<_> = all[i + 1..].iter().map(|e| e.name).collect();
        assert_eq!(rest, expected, "resume after entry {i}");
    }
}
