//! The core driven directly, in every view, on composefs images written in memory: no mount,
//! no `/dev/fuse`, no privilege.

use std::ffi::OsStr;
use std::path::Path;

use composefs::dumpfile::dumpfile_to_filesystem;
use composefs::erofs::format::FormatVersion;
use composefs::erofs::writer::{ValidatedFileSystem, mkfs_erofs_versioned};
use composefs::fsverity::Sha256HashValue;
use composefs::tree::{LeafContent, RegularFile};

use super::*;

mod listing;
mod xattrs;

const VIEWS: [View; 3] = [View::Direct, View::OverlayUser, View::OverlayTrusted];
const VERSIONS: [FormatVersion; 3] = [FormatVersion::V0, FormatVersion::V1, FormatVersion::V2];
/// The versions with data blocks (V2 stores all data inline).
const BLOCK_VERSIONS: [FormatVersion; 2] = [FormatVersion::V0, FormatVersion::V1];

/// The object `/ext` redirects to.
const EXT_OBJECT: &str = "a3/11111111111111111111111111111111111111111111111111111111111111";
/// The object `/nored` redirected to before its redirect was renamed away.
const NORED_OBJECT: &str = "b4/44444444444444444444444444444444444444444444444444444444444444";

/// Every kind of entry the core treats differently. `/big` (three full blocks) and `/tail`
/// (two blocks and a tail) get their content below, in the versions that store data in
/// blocks (V0, V1): dumpfiles hold at most 512 bytes inline.
const DUMP: &str = r"/ 0 40755 3 0 0 0 1700000000.5 - - - user.root=1
/big 1 100644 1 0 0 0 1700000000.5 - x -
/chr 0 20620 1 0 5 259 1700000000.5 - - -
/d 0 40750 2 1000 1001 0 1700000001.0 - - -
/d/inline 11 100644 1 7 8 0 1700000002.000000007 - hello\x20world - user.a=b trusted.overlay.foo=esc trusted.foo=bar user.overlay.x=y
/d/wh 0 20000 1 0 0 0 1700000000.5 - - -
/ext 10000 100644 1 0 0 0 1700000000.5 a3/11111111111111111111111111111111111111111111111111111111111111 - a311111111111111111111111111111111111111111111111111111111111111
/link 9 120777 1 0 0 0 1700000000.5 /target\x20x - -
/nored 100 100644 1 0 0 0 1700000000.5 b4/44444444444444444444444444444444444444444444444444444444444444 - b444444444444444444444444444444444444444444444444444444444444444
/tail 1 100644 1 0 0 0 1700000000.5 - x -
";

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

/// The image of [`DUMP`] in `version`, with `/nored`'s redirect renamed so that it is a
/// metacopy file without redirect (no writer makes one).
fn image_bytes(version: FormatVersion) -> Vec<u8> {
    let mut fs = dumpfile_to_filesystem::<Sha256HashValue>(DUMP).unwrap();
    let blocks = BLOCK_VERSIONS.contains(&version);
    for (name, len, seed) in [("big", 3 * 4096, 1), ("tail", 2 * 4096 + 100, 2)] {
        if !blocks {
            continue;
        }
        let id = fs.root.leaf_id(OsStr::new(name)).unwrap();
        let data = pattern(len, seed).into_boxed_slice();
        fs.leaf_mut(id).content = LeafContent::Regular(RegularFile::Inline(data));
    }
    let fs = ValidatedFileSystem::new(fs).unwrap();
    let mut bytes = mkfs_erofs_versioned(&fs, version).into_vec();
    let stored = [
        b"overlay.redirect/".as_slice(),
        &NORED_OBJECT.as_bytes()[..2],
    ]
    .concat();
    let at: Vec<usize> = (0..bytes.len())
        .filter(|&i| bytes[i..].starts_with(&stored))
        .collect();
    assert_eq!(at.len(), 1, "one redirect to patch");
    bytes[at[0] + b"overlay.redirec".len()] = b'X';
    bytes
}

fn core(view: View, version: FormatVersion) -> Core<u32> {
    let image = Image::from_bytes(image_bytes(version)).unwrap();
    Core::new(image, view, None)
}

/// A basedir holding `/ext`'s object (and none for `/nored`).
fn basedir() -> (tempfile::TempDir, Basedir) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(EXT_OBJECT);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(&path, pattern(10000, 3)).unwrap();
    let basedir = Basedir::open(dir.path(), false).unwrap();
    (dir, basedir)
}

/// Walks `path` from the root by lookups.
fn lookup(core: &Core<u32>, path: &str) -> Result<Entry, Errno> {
    let mut entry = Entry {
        attr: Some(core.getattr(ROOT_ID)?),
        ttl: TTL,
    };
    for name in Path::new(path).iter().skip(1) {
        let parent = entry.attr.ok_or(Errno::NOENT)?.ino;
        entry = core.lookup(parent, name.as_encoded_bytes())?;
    }
    Ok(entry)
}

fn node(core: &Core<u32>, path: &str) -> u64 {
    lookup(core, path).unwrap().attr.unwrap().ino
}

fn read_all(core: &Core<u32>, node: u64, handle: Handle, offset: u64, size: u32) -> Vec<u8> {
    let mut buf = Vec::new();
    let read = core.read(node, handle, offset, size).unwrap();
    read.data(&mut buf).unwrap().to_vec()
}

fn names(core: &Core<u32>, dir: u64, offset: u64) -> Vec<(String, u64)> {
    core.readdir(dir, offset)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (String::from_utf8_lossy(e.name).into_owned(), e.next_offset))
        .collect()
}

#[test]
fn lookup_finds_misses_and_hides_as_overlayfs() {
    for version in VERSIONS {
        for view in VIEWS {
            let core = core(view, version);
            let what = format!("{view:?} {version:?}");
            let inline = lookup(&core, "/d/inline").unwrap();
            assert_eq!(inline.ttl, TTL, "{what}");
            assert_eq!(inline.attr.unwrap().size, 11, "{what}");
            let miss = lookup(&core, "/d/missing").unwrap();
            assert_eq!((miss.attr, miss.ttl), (None, TTL), "{what}: negative entry");
            let not_dir = lookup(&core, "/link/x").unwrap_err();
            assert_eq!(not_dir, Errno::NOTDIR, "{what}");
            // A metacopy file without redirect: overlayfs refuses it, the raw view shows it.
            let nored = lookup(&core, "/nored");
            match view {
                View::OverlayTrusted => assert!(nored.unwrap().attr.is_some(), "{what}"),
                _ => assert_eq!(nored.unwrap_err(), Errno::IO, "{what}"),
            }
            // Whiteouts: the root's stubs (V0, V1) and, where the writer keeps it as a
            // device, the one in `/d`; hidden by the direct view only.
            let whiteout = core
                .image
                .root()
                .unwrap()
                .dir()
                .unwrap()
                .lookup(b"00")
                .unwrap();
            let stubs = whiteout.is_some().then_some("/00");
            let d_wh = core.image.inode(node_in_image(&core, "/d/wh")).unwrap();
            let device = d_wh.file_type() == FileType::CharDevice;
            for path in stubs.into_iter().chain(device.then_some("/d/wh")) {
                let found = lookup(&core, path).unwrap().attr;
                assert_eq!(found.is_none(), view == View::Direct, "{what}: {path}");
            }
        }
    }
}

/// The nid of `path`, found in the image itself (also for what the view hides).
fn node_in_image(core: &Core<u32>, path: &str) -> u64 {
    let mut inode = core.image.root().unwrap();
    for name in Path::new(path).iter().skip(1) {
        let entry = inode.dir().unwrap().lookup(name.as_encoded_bytes());
        inode = core.image.inode(entry.unwrap().unwrap().nid).unwrap();
    }
    inode.nid()
}

#[test]
fn node_ids_swap_the_root_with_one() {
    let core = core(View::Direct, FormatVersion::V1);
    let root = core.image.root_nid();
    assert_ne!(root, ROOT_ID);
    assert_eq!((core.node_id(root), core.node_id(ROOT_ID)), (ROOT_ID, root));
    assert_eq!(core.getattr(ROOT_ID).unwrap().ino, ROOT_ID);
    let d = lookup(&core, "/d").unwrap().attr.unwrap().ino;
    assert_eq!(d, node_in_image(&core, "/d"), "other node ids are nids");
    let dotdot = names(&core, d, 0).into_iter().nth(1).unwrap();
    assert_eq!(dotdot.0, "..");
    let parent = core.readdir(d, 0).unwrap().nth(1).unwrap().unwrap().node;
    assert_eq!(
        parent, ROOT_ID,
        "`..` of a top directory is the root's node"
    );
}

#[test]
fn getattr_reports_the_inode() {
    for version in VERSIONS {
        let core = core(View::Direct, version);
        let inline = core.getattr(node(&core, "/d/inline")).unwrap();
        assert_eq!(inline.kind, FileType::Regular);
        assert_eq!(
            (inline.size, inline.blocks, inline.block_size),
            (11, 8, 4096)
        );
        assert_eq!(
            (inline.perm, inline.nlink, inline.uid, inline.gid),
            (0o644, 1, 7, 8)
        );
        // V2 keeps whole seconds.
        let nanos = if version == FormatVersion::V2 { 0 } else { 7 };
        let mtime = Timestamp {
            secs: 1_700_000_002,
            nanos,
        };
        assert_eq!(inline.mtime, mtime);
        let d = core.getattr(node(&core, "/d")).unwrap();
        assert_eq!(
            (d.kind, d.perm, d.uid, d.gid),
            (FileType::Directory, 0o750, 1000, 1001)
        );
        let chr = core.getattr(node(&core, "/chr")).unwrap();
        assert_eq!(
            (chr.kind, chr.perm, chr.gid),
            (FileType::CharDevice, 0o620, 5)
        );
        assert_eq!(chr.rdev, 259);
        if BLOCK_VERSIONS.contains(&version) {
            let big = core.getattr(node(&core, "/big")).unwrap();
            assert_eq!((big.size, big.blocks), (3 * 4096, 3 * 8));
        }
        assert_eq!(
            core.getattr(1 << 40).unwrap_err(),
            Errno::IO,
            "nid out of range"
        );
    }
    for view in [View::Direct, View::OverlayUser] {
        let core = core(view, FormatVersion::V1);
        let nored = node_in_image(&core, "/nored");
        assert_eq!(core.getattr(nored).unwrap_err(), Errno::IO, "{view:?}");
    }
}

#[test]
fn readlink_returns_the_target() {
    for view in VIEWS {
        let core = core(view, FormatVersion::V1);
        assert_eq!(core.readlink(node(&core, "/link")).unwrap(), b"/target x");
        assert_eq!(core.readlink(node(&core, "/d")).unwrap_err(), Errno::INVAL);
    }
}

#[test]
fn image_data_reads_zero_copy_within_an_extent() {
    for version in BLOCK_VERSIONS {
        for view in VIEWS {
            let core = core(view, version);
            let what = format!("{view:?} {version:?}");
            let mut buf = Vec::new();
            for (path, len, seed) in [("/big", 3 * 4096, 1), ("/tail", 2 * 4096 + 100, 2)] {
                let node = node(&core, path);
                let opened = core.open(node, |_| unreachable!()).unwrap();
                assert_eq!(
                    (opened.handle, opened.cache),
                    (Handle::Image, CacheFlags::KEEP)
                );
                let expected = pattern(len, seed);
                // Within one extent: borrowed from the mapping.
                let read = core.read(node, Handle::Image, 100, 1000).unwrap();
                assert!(matches!(read, Read::Mapped(_)), "{what} {path}");
                assert_eq!(read.data(&mut buf).unwrap(), &expected[100..1100]);
                // The whole file, across extents (or blocks and tail) and past its end.
                let all = read_all(&core, node, Handle::Image, 0, len as u32 + 4096);
                assert_eq!(all, expected, "{what} {path}");
                let past = read_all(&core, node, Handle::Image, len as u64, 10);
                assert!(past.is_empty());
            }
            let inline = node(&core, "/d/inline");
            let data = read_all(&core, inline, Handle::Image, 6, 100);
            assert_eq!(data, b"world", "{what}");
        }
    }
}

#[test]
fn redirected_files_read_their_object_in_the_direct_view() {
    let (_dir, basedir) = basedir();
    let core: Core<u32> = Core::new(
        Image::from_bytes(image_bytes(FormatVersion::V1)).unwrap(),
        View::Direct,
        Some(basedir),
    );
    let ext = node(&core, "/ext");
    let opened = core.open(ext, |_| None).unwrap();
    assert!(matches!(opened.handle, Handle::Object(_)));
    assert_eq!((opened.cache, opened.backing), (CacheFlags::KEEP, None));
    let read = core.read(ext, opened.handle, 4000, 2000).unwrap();
    assert!(matches!(read, Read::Object(_)));
    assert_eq!(
        read.data(&mut Vec::new()).unwrap(),
        &pattern(10000, 3)[4000..6000]
    );
    // Passthrough: the kernel reads, without caching flags; every open shares the id.
    let passthrough = core.open(ext, |_| Some(42)).unwrap();
    assert_eq!(
        (passthrough.cache, passthrough.backing.as_deref()),
        (CacheFlags::NONE, Some(&42))
    );
    let again = core.open(ext, |_| unreachable!()).unwrap();
    assert_eq!(again.backing.as_deref(), Some(&42));
    assert_eq!(core.open_files().len(), 3);
    for handle in [opened.handle, passthrough.handle, again.handle] {
        core.release(handle).unwrap();
    }
    assert!(core.open_files().is_empty());
    let stale = core.read(ext, opened.handle, 0, 10).unwrap_err();
    assert_eq!(stale, Errno::BADF);
    // No object for `/nored`: its lookup fails, and so does an open by node id.
    assert_eq!(lookup(&core, "/nored").unwrap_err(), Errno::IO);
    let nored = node_in_image(&core, "/nored");
    assert_eq!(core.open(nored, |_| None).unwrap_err(), Errno::IO);
    let stats = core.stats();
    let counts = [&stats.object_opens, &stats.object_reads].map(|c| c.load(Ordering::Relaxed));
    assert_eq!(counts, [3, 1]);
}

#[test]
fn a_missing_object_is_enoent_as_in_the_overlay() {
    let empty = tempfile::tempdir().unwrap();
    let basedir = Basedir::open(empty.path(), false).unwrap();
    let image = Image::from_bytes(image_bytes(FormatVersion::V1)).unwrap();
    let core: Core<u32> = Core::new(image, View::Direct, Some(basedir));
    // The entry and its attributes are there; opening it finds no object.
    let ext = node(&core, "/ext");
    assert_eq!(core.getattr(ext).unwrap().size, 10000);
    assert_eq!(core.open(ext, |_| None).unwrap_err(), Errno::NOENT);
    assert!(core.open_files().is_empty());
}

#[test]
fn without_basedir_chunked_files_read_as_their_holes() {
    for version in VERSIONS {
        let core = core(View::Direct, version);
        let ext = node(&core, "/ext");
        let opened = core.open(ext, |_| unreachable!()).unwrap();
        assert_eq!(opened.handle, Handle::Image);
        let data = read_all(&core, ext, Handle::Image, 9000, 4096);
        assert_eq!(data, vec![0; 1000], "{version:?}");
        assert_eq!(core.stats().object_opens.load(Ordering::Relaxed), 0);
    }
}

#[test]
fn overlay_views_leave_objects_to_the_overlay() {
    for view in [View::OverlayUser, View::OverlayTrusted] {
        let core = core(view, FormatVersion::V1);
        let ext = node(&core, "/ext");
        let opened = core.open(ext, |_| unreachable!()).unwrap();
        assert_eq!(
            (opened.handle, opened.cache),
            (Handle::Elsewhere, CacheFlags::NONE)
        );
        let refused = core.read(ext, Handle::Elsewhere, 0, 100).unwrap_err();
        assert_eq!(refused, Errno::IO);
        core.release(Handle::Elsewhere).unwrap();
        let inline = core
            .open(node(&core, "/d/inline"), |_| unreachable!())
            .unwrap();
        assert_eq!(
            (inline.handle, inline.cache),
            (Handle::Image, CacheFlags::KEEP)
        );
        let stats = core.stats();
        let counts = [&stats.object_opens, &stats.object_reads, &stats.image_reads];
        assert_eq!(
            counts.map(|c| c.load(Ordering::Relaxed)),
            [1, 1, 0],
            "{view:?}"
        );
    }
}

#[test]
fn opendir_and_flush_are_left_to_the_kernel() {
    let core = core(View::Direct, FormatVersion::V1);
    assert_eq!(core.opendir().unwrap_err(), Errno::NOSYS);
    assert_eq!(core.flush(), Err(Errno::NOSYS));
}

#[test]
fn statfs_reports_the_image() {
    for version in VERSIONS {
        let core = core(View::Direct, version);
        let statfs = core.statfs().unwrap();
        let len = core.image.bytes().len() as u64;
        assert_eq!(statfs.blocks * u64::from(statfs.block_size), len);
        assert_eq!((statfs.block_size, statfs.name_len), (4096, 255));
        assert_eq!(statfs.files, core.image.superblock().inodes);
    }
}
