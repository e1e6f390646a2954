//! Proves the test harness (tests/common) right: fixture trees survive
//! mkfs.erofs + a kernel mount unchanged, for every mkfs variant, as seen by
//! `tree::walk`/`tree::compare`.

mod common;

use std::fs;
use std::os::unix::fs::MetadataExt;

use common::fixtures::{self, RICH_BIG_ENTRIES};
use common::kernel::{self, KernelMount};
use common::tree::{self, CompareOptions, Entry};

/// Normalises fields that mkfs.erofs 1.5 legitimately does not preserve.
///
/// Kept (and compared): type+permission bits (setuid/setgid/sticky too),
/// uid/gid, size of non-directories, nlink (including directories: both ext4
/// and EROFS report 2 + subdirs), mtime with ns, rdev, symlink targets,
/// every xattr (user, trusted, security, POSIX ACLs), contents (sparse
/// files read back as zeros), readdir names and d_type, hardlink structure.
/// Sockets and fifos are kept as such.
///
/// Not comparable:
/// * directory st_size: the source fs reports its block-based size (4096...),
///   EROFS the size of its dirent blocks.
/// * st_ino (compared structurally only, see `CompareOptions::ino`).
/// * atime/ctime are not recorded in `Entry` at all (EROFS has no atime;
///   ctime == mtime there).
fn normalise(entries: &mut [Entry]) {
    for e in entries.iter_mut() {
        if e.is_dir() {
            e.size = 0;
        }
    }
}

/// Variant-specific lossy behaviour of mkfs.erofs 1.5.
fn normalise_variant(name: &str, args: &[&str], src: &mut [Entry], img: &mut [Entry]) {
    let fixed = args
        .iter()
        .find_map(|a| a.strip_prefix("-T"))
        .map(|t| t.parse::<i64>().unwrap());
    if let Some(t) = fixed {
        // -T#: every inode gets mtime # (ns 0).
        for e in img.iter() {
            assert_eq!((e.mtime, e.mtime_nsec), (t, 0), "{name}: {:?}", e.path);
        }
    } else {
        return;
    }
    for e in src.iter_mut().chain(img.iter_mut()) {
        e.mtime = 0;
        e.mtime_nsec = 0;
    }
}

/// Facts checked directly, independent of the source-tree comparison.
fn check_facts(name: &str, img: &[Entry], mnt: &std::path::Path) {
    let g = |p: &str| tree::get(img, p.as_bytes());

    let chr = g("/dev/chr_big");
    assert_eq!(chr.file_type(), tree::S_IFCHR, "{name}");
    assert_eq!((chr.rdev_major, chr.rdev_minor), (259, 1_048_575), "{name}");
    let blk = g("/dev/blk_8_1");
    assert_eq!(blk.file_type(), tree::S_IFBLK, "{name}");
    assert_eq!((blk.rdev_major, blk.rdev_minor), (8, 1), "{name}");
    assert_eq!(g("/dev/fifo").file_type(), tree::S_IFIFO, "{name}");
    assert_eq!(g("/dev/socket").file_type(), tree::S_IFSOCK, "{name}");

    for &n in fixtures::RICH_SYMLINK_LENGTHS {
        let l = g(&format!("/links/len_{n}"));
        assert_eq!(
            l.symlink.as_deref(),
            Some(&fixtures::long_target(n)[..]),
            "{name}"
        );
        assert_eq!(l.size, n as u64, "{name}");
    }

    let h: Vec<&Entry> = ["/hardlinks/h1", "/nested/a/h2", "/files/h3"]
        .iter()
        .map(|p| g(p))
        .collect();
    assert!(
        h.iter().all(|e| e.nlink == 3 && e.ino == h[0].ino),
        "{name}: {h:?}"
    );

    for &n in fixtures::RICH_FILE_SIZES {
        let f = g(&format!("/files/size_{n}"));
        assert_eq!(
            f.content.as_deref(),
            Some(&fixtures::pseudo_random(&format!("files/size_{n}"), n)[..]),
            "{name}: size_{n}"
        );
    }

    let big = g("/big");
    assert_eq!(
        big.children.as_ref().unwrap().len(),
        RICH_BIG_ENTRIES,
        "{name}"
    );

    assert_eq!(
        g("/xattrs/cap").xattr(b"security.capability"),
        Some(&fixtures::sample_capability()[..]),
        "{name}"
    );
    let acl_dir = g("/xattrs/acl_dir");
    assert_eq!(
        acl_dir.xattr(b"system.posix_acl_access"),
        Some(&fixtures::sample_acl()[..])
    );
    assert_eq!(
        acl_dir.xattr(b"system.posix_acl_default"),
        Some(&fixtures::sample_acl()[..])
    );
    assert_eq!(g("/xattrs/user_empty").xattr(b"user.empty"), Some(&b""[..]));
    assert_eq!(
        g("/xattrs/user_large")
            .xattr(b"user.large")
            .map(<[u8]>::len),
        Some(2000)
    );
    assert_eq!(g("/modes/setuid").mode, 0o104755, "{name}");
    assert_eq!(g("/modes/sticky_dir").mode, 0o41777, "{name}");
    assert_eq!(
        (g("/owners/u100000").uid, g("/owners/u100000").gid),
        (100_000, 100_000)
    );
    // The odd names and the directory with a long name.
    let names = fixtures::odd_names().len() + 1;
    assert_eq!(
        g("/names").children.as_ref().unwrap().len(),
        names,
        "{name}"
    );

    // Walk and direct syscalls agree on the mount point itself.
    let md = fs::symlink_metadata(mnt).unwrap();
    assert_eq!(md.ino(), img[0].ino);
}

#[test]
fn rich_image_roundtrips_through_kernel_for_every_variant() {
    const TEST: &str = "rich_image_roundtrips_through_kernel_for_every_variant";
    if !kernel::require_root(TEST) || !fixtures::require_mkfs(TEST) {
        return;
    }
    // build_rich_image for the first variant; its source tree is reused for
    // the others (building the 20k-entry tree once).
    let (td, first_image) = fixtures::build_rich_image(&[]);
    let src_dir = fixtures::rich_source(&td);
    let src_walk = tree::walk(&src_dir);
    tree::check_consistency(&src_walk).expect("source tree consistency");
    assert!(src_walk.len() > RICH_BIG_ENTRIES);

    let mut variants = fixtures::mkfs_variants();
    variants.extend(fixtures::mkfs_compressed_variants());
    for (name, args) in variants {
        let image = if name == "default" {
            first_image.clone()
        } else {
            let image = td.path().join(format!("{name}.erofs"));
            fixtures::mkfs_erofs(&src_dir, &image, &args).unwrap_or_else(|e| panic!("{e}"));
            image
        };
        fixtures::fsck_erofs(&image).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mnt = KernelMount::erofs(&image).unwrap_or_else(|e| panic!("{name}: {e}"));
        let mut img_walk = tree::walk(mnt.path());
        tree::check_consistency(&img_walk).unwrap_or_else(|e| panic!("{name}: {e}"));
        check_facts(name, &img_walk, mnt.path());

        let mut src = src_walk.clone();
        normalise(&mut src);
        normalise(&mut img_walk);
        normalise_variant(name, &args, &mut src, &mut img_walk);
        let opts = CompareOptions {
            ino: false,
            content: true,
            both_unreadable: false,
        };
        if let Err(e) = tree::compare_with(&src, &img_walk, opts) {
            panic!("variant {name} ({args:?}): source vs kernel EROFS: {e}");
        }
        eprintln!(
            "variant {name}: {} entries identical, image {} bytes",
            img_walk.len(),
            fs::metadata(&image).unwrap().len()
        );
    }
}

#[test]
fn compare_reports_first_difference() {
    let e = |path: &str, content: &[u8]| Entry {
        path: path.as_bytes().to_vec(),
        ino: 1,
        mode: tree::S_IFREG | 0o644,
        uid: 0,
        gid: 0,
        size: content.len() as u64,
        nlink: 1,
        mtime: 0,
        mtime_nsec: 0,
        rdev_major: 0,
        rdev_minor: 0,
        symlink: None,
        xattrs: vec![],
        content: Some(content.to_vec()),
        children: None,
    };
    let big_a = vec![7u8; 100_000];
    let mut big_b = big_a.clone();
    big_b[54_321] = 8;
    let a = vec![e("/a", &big_a), e("/b", b"x")];
    let b = vec![e("/a", &big_b), e("/c", b"x")];
    let err = tree::compare(&a, &b).unwrap_err();
    assert!(
        err.contains("/a: field content") && err.contains("offset 54321"),
        "{err}"
    );
    assert!(err.len() < 400, "{err}");
    let opts = CompareOptions {
        ino: false,
        content: false,
        both_unreadable: false,
    };
    let err = tree::compare_with(&a, &b, opts).unwrap_err();
    assert!(err.contains("/b: present in a but missing in b"), "{err}");

    // Hardlink structure is still checked with ino: false.
    let a = vec![e("/a", b""), e("/b", b"")];
    let mut b = a.clone();
    b[1].ino = 2;
    let err = tree::compare_with(&a, &b, opts).unwrap_err();
    assert!(err.contains("hardlink structure"), "{err}");
    assert!(tree::compare_with(&b, &b, opts).is_ok());
}

#[test]
fn composefs_overlay_mount_redirects_to_basedir() {
    const TEST: &str = "composefs_overlay_mount_redirects_to_basedir";
    if !kernel::require_composefs(TEST) || !fixtures::require_mkfs(TEST) {
        return;
    }
    let td = tempfile::tempdir().unwrap();
    let base = td.path().join("objects");
    let meta = td.path().join("meta");
    fs::create_dir_all(base.join("ab")).unwrap();
    fs::create_dir_all(meta.join("dir")).unwrap();
    let data = fixtures::pseudo_random("composefs-object", 12345);
    fs::write(base.join("ab/cdef"), &data).unwrap();
    // Metadata-only file: right size, no data (sparse), redirect + metacopy.
    let f = meta.join("dir/file");
    fs::File::create(&f)
        .unwrap()
        .set_len(data.len() as u64)
        .unwrap();
    rustix::fs::lsetxattr(
        &f,
        "trusted.overlay.metacopy",
        b"",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::lsetxattr(
        &f,
        "trusted.overlay.redirect",
        b"/ab/cdef",
        rustix::fs::XattrFlags::empty(),
    )
    .unwrap();
    rustix::fs::lsetxattr(&f, "user.kept", b"v", rustix::fs::XattrFlags::empty()).unwrap();
    fs::write(meta.join("inline"), b"inline data").unwrap();

    let image = td.path().join("cfs.erofs");
    fixtures::mkfs_erofs(&meta, &image, &[]).unwrap();
    let mnt = KernelMount::composefs(&image, &base).unwrap();
    assert_eq!(fs::read(mnt.path().join("dir/file")).unwrap(), data);
    assert_eq!(fs::read(mnt.path().join("inline")).unwrap(), b"inline data");

    let w = tree::walk(mnt.path());
    let file = tree::get(&w, b"/dir/file");
    assert_eq!(file.size, data.len() as u64);
    // overlayfs hides its own trusted.overlay.* xattrs.
    assert_eq!(file.xattrs, vec![(b"user.kept".to_vec(), b"v".to_vec())]);
    // The raw EROFS layer still shows them and reads as zeros.
    let raw = tree::walk(mnt.erofs_path());
    let rf = tree::get(&raw, b"/dir/file");
    assert_eq!(
        rf.xattr(b"trusted.overlay.redirect"),
        Some(&b"/ab/cdef"[..])
    );
    assert!(rf.content.as_ref().unwrap().iter().all(|&b| b == 0));
}

#[test]
fn big_dir_tree_builds_sorted_names() {
    let td = tempfile::tempdir().unwrap();
    let dir = td.path().join("big");
    fixtures::big_dir_tree(&dir, 5000);
    let w = tree::walk(&dir);
    let root = tree::get(&w, b"/");
    let children = root.children.as_ref().unwrap();
    assert_eq!(children.len(), 5000);
    assert_eq!(children[0], (b"f000000".to_vec(), tree::DT_REG));
    assert_eq!(children[4999].0, b"f004999".to_vec());
    tree::check_consistency(&w).unwrap();
}
