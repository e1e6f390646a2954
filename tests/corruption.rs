//! Corrupt and hostile images: truncations, targeted field flips with the exact error each
//! must produce, and seeded mutation fuzzing. Whatever the damage, the decoder, `check` and
//! `dump` must answer with errors, never panic, and always finish.
//!
//! Byte offsets are found by decoding the clean fixture with lazycfs itself (superblock
//! fields, inode offsets, dirent blocks), never hard-coded per image.
//!
//! `LAZYCFS_FUZZ_ITERS=N` sets the number of mutations per fixture (default 1000 for debug
//! builds, 3000 for release builds); `LAZYCFS_FUZZ_SEED=S` changes the seed.

mod common;
mod traverse;

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;
use std::sync::OnceLock;

use lazycfs::check::CheckError;
use lazycfs::erofs::{Corruption, DataLayout, Error, Extent, FileType, Image};

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

/// Everything composefs images hold: dirs, inline and external files, hard links, devices,
/// symlinks, fifos, sockets, whiteouts, xattrs (some shared), escaped overlay xattrs.
const CFS_DUMP: &str = r"/ 0 40755 4 0 0 0 1700000000.5 - - - security.selinux=system_u:object_r:root_t:s0 user.root=1
/blk 0 60660 1 0 6 2049 1700000000.5 - - -
/chr 0 20620 1 0 5 259 1700000000.5 - - - user.shared=s
/d 0 40700 3 1000 1000 0 1700000001.0 - - - user.foo=bar user.shared=s
/d/aa1 3 100644 1 0 0 0 1700000000.5 - abc -
/d/aa2 3 100644 1 0 0 0 1700000000.5 - def - user.shared=s
/d/aa3 3 100644 1 0 0 0 1700000000.5 - ghi -
/d/hl-b 5 100644 2 0 0 0 1700000000.5 - hello - user.hl=1
/d/inline 11 100644 1 0 0 0 1700000002.000000007 - hello\x20world - user.a\x3db=c\x3dd trusted.overlay.overlay.foo=esc trusted.foo=bar security.ima=\x00\x01\xff user.empty=
/d/sub 0 40755 2 0 0 0 1700000000.5 - - -
/d/sub/leaf 4 100644 1 0 0 0 1700000000.5 - leaf - user.shared=s
/d/wh 0 20000 1 0 0 0 1700000000.5 - - -
/e 0 40755 2 0 0 0 1700000000.5 - - -
/empty 0 100644 1 0 0 0 1700000000.5 - - -
/ext 10000 100644 1 0 0 0 1700000000.5 a3/11111111111111111111111111111111111111111111111111111111111111 - a311111111111111111111111111111111111111111111111111111111111111
/fifo 0 10644 1 0 0 0 1700000000.5 - - -
/hl-a 0 @100644 - - - - 0.0 /d/hl-b - -
/link 9 120777 1 0 0 0 1700000000.5 /target\x20x - -
/sock 0 140755 1 0 0 0 1700000000.5 - - -
/uid70000 3 100600 1 70000 70001 0 1699999999.999999999 - abc - user.shared=s
";

fn cfs_image(version: u32) -> &'static [u8] {
    static IMAGES: [OnceLock<Vec<u8>>; 3] = [OnceLock::new(), OnceLock::new(), OnceLock::new()];
    IMAGES[version as usize].get_or_init(|| common::cfs::write_image(CFS_DUMP, version))
}

/// Number of entries of `big/` in the mkfs.erofs fixtures: several dirent blocks.
const BIG_ENTRIES: usize = 500;

/// A tree for mkfs.erofs: a multi-block directory, nested dirs, inline and multi-block files,
/// a symlink, a fifo, hard links, inline and shared xattrs.
fn mkfs_tree(root: &Path) {
    let w = |rel: &str, data: &[u8]| fs::write(root.join(rel), data).unwrap();
    fs::create_dir_all(root.join("big")).unwrap();
    for i in 0..BIG_ENTRIES {
        w(&format!("big/entry-with-a-longish-name-{i:04}"), b"");
    }
    fs::create_dir_all(root.join("d/sub")).unwrap();
    w("d/sub/leaf", b"leaf\n");
    for (name, data) in [("d/aa1", &b"abc"[..]), ("d/aa2", b"def"), ("d/aa3", b"ghi")] {
        w(name, data);
    }
    w("d/inline", &common::fixtures::pseudo_random("inline", 100));
    w("d/data", &common::fixtures::pseudo_random("data", 10_000));
    w("d/hl1", b"hard link\n");
    fs::hard_link(root.join("d/hl1"), root.join("d/hl2")).unwrap();
    symlink("target/path", root.join("d/sym")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        root.join("d/fifo"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )
    .unwrap();
    fs::create_dir_all(root.join("e")).unwrap();
    let xattr = |rel: &str, name: &str, value: &[u8]| {
        rustix::fs::lsetxattr(root.join(rel), name, value, rustix::fs::XattrFlags::empty())
            .unwrap();
    };
    // Used 4 times: stored in the shared area with the default tolerance (-x2).
    for f in ["d/aa1", "d/aa2", "d/aa3", "d/data"] {
        xattr(f, "user.shared", b"shared value");
    }
    xattr("d/aa2", "user.inline", b"only here");
    xattr("d/aa2", "user.another", b"x");
    xattr("d", "user.dir", b"on a dir");
    // Distinct mtimes with nanoseconds: extended inodes.
    for (i, f) in ["d/aa1", "d/data", "d/inline", "d/sub/leaf"]
        .iter()
        .enumerate()
    {
        common::fixtures::set_mtime(&root.join(f), 1_600_000_000 + i as i64, 123_456_789);
    }
}

/// `mkfs.erofs ARGS` of [`mkfs_tree`], or `None` (test skipped) without mkfs.erofs.
fn mkfs_image(args: &[&str]) -> Option<Vec<u8>> {
    if !common::fixtures::require_mkfs("corruption") {
        return None;
    }
    let td = tempfile::tempdir().unwrap();
    let src = td.path().join("src");
    mkfs_tree(&src);
    let out = td.path().join("image.erofs");
    common::fixtures::mkfs_erofs(&src, &out, args).unwrap();
    Some(fs::read(out).unwrap())
}

fn mkfs_default() -> Option<&'static [u8]> {
    static IMAGE: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    IMAGE.get_or_init(|| mkfs_image(&[])).as_deref()
}

fn mkfs_chunked() -> Option<&'static [u8]> {
    static IMAGE: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    IMAGE
        .get_or_init(|| mkfs_image(&["--chunksize=4096"]))
        .as_deref()
}

// ---------------------------------------------------------------------------------------------
// Locating things in a clean image with the lazycfs API
// ---------------------------------------------------------------------------------------------

/// A raw dirent as stored, with absolute offsets.
#[derive(Debug, Clone)]
struct RawDirent {
    /// Offset of the 12-byte dirent.
    at: usize,
    /// Offset of the name.
    name_at: usize,
    name: Vec<u8>,
    nid: u64,
}

struct Fx {
    bytes: Vec<u8>,
    image: Image,
}

impl Fx {
    fn new(bytes: &[u8]) -> Fx {
        let image = Image::from_bytes(bytes.to_vec()).expect("clean fixture opens");
        lazycfs::check::check(&image).expect("clean fixture checks");
        Fx {
            bytes: bytes.to_vec(),
            image,
        }
    }

    fn block_size(&self) -> usize {
        self.image.superblock().block_size() as usize
    }

    /// Node id of an absolute path.
    fn nid(&self, path: &str) -> u64 {
        let mut nid = self.image.root_nid();
        for name in path.split('/').filter(|n| !n.is_empty()) {
            let dir = self.image.inode(nid).unwrap().dir().unwrap();
            nid = dir
                .lookup(name.as_bytes())
                .unwrap()
                .unwrap_or_else(|| panic!("{path}: no {name}"))
                .nid;
        }
        nid
    }

    /// Absolute offset of an inode (`meta_blkaddr * block size + nid * 32`).
    fn inode_at(&self, nid: u64) -> usize {
        let sb = self.image.superblock();
        (u64::from(sb.meta_blkaddr) * sb.block_size() + nid * 32) as usize
    }

    fn is_extended(&self, nid: u64) -> bool {
        self.bytes[self.inode_at(nid)] & 1 != 0
    }

    /// Absolute offset of an inode's xattr area.
    fn xattrs_at(&self, nid: u64) -> usize {
        self.inode_at(nid) + if self.is_extended(nid) { 64 } else { 32 }
    }

    /// Absolute offset of the stored byte at file offset `pos`.
    fn data_at(&self, nid: u64, pos: u64) -> usize {
        match self.image.inode(nid).unwrap().extent_at(pos).unwrap() {
            Some(Extent::Data(d)) => d.as_ptr() as usize - self.image.bytes().as_ptr() as usize,
            other => panic!("nid {nid} at {pos}: {other:?}"),
        }
    }

    /// Every dirent of a directory, parsed independently of lazycfs' dir code.
    fn dirents(&self, dir: u64) -> Vec<RawDirent> {
        let inode = self.image.inode(dir).unwrap();
        let bs = self.block_size() as u64;
        let mut out = Vec::new();
        let mut pos = 0;
        while pos < inode.size() {
            let len = (inode.size() - pos).min(bs) as usize;
            let at = self.data_at(dir, pos);
            let block = &self.bytes[at..at + len];
            let rd16 = |o: usize| usize::from(u16::from_le_bytes([block[o], block[o + 1]]));
            let count = rd16(8) / 12;
            for i in 0..count {
                let start = rd16(i * 12 + 8);
                let end = if i + 1 < count {
                    rd16(i * 12 + 20)
                } else {
                    block[start..]
                        .iter()
                        .position(|&b| b == 0)
                        .map_or(len, |n| start + n)
                };
                out.push(RawDirent {
                    at: at + i * 12,
                    name_at: at + start,
                    name: block[start..end].to_vec(),
                    nid: u64::from_le_bytes(block[i * 12..i * 12 + 8].try_into().unwrap()),
                });
            }
            pos += bs;
        }
        out
    }

    fn dirent(&self, dir: &str, name: &str) -> RawDirent {
        self.dirents(self.nid(dir))
            .into_iter()
            .find(|d| d.name == name.as_bytes())
            .unwrap_or_else(|| panic!("{dir}: no dirent {name}"))
    }

    /// A copy of the image changed by `f`.
    fn with(&self, f: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let mut b = self.bytes.clone();
        f(&mut b);
        b
    }
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_le_bytes());
}
fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}
fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}
fn get16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

/// Superblock field offsets (absolute).
const SB: usize = 1024;
const SB_BLKSZBITS: usize = SB + 12;
const SB_ROOT_NID: usize = SB + 14;
const SB_FIXED_NSEC: usize = SB + 32;
const SB_META_BLKADDR: usize = SB + 40;
const SB_INCOMPAT: usize = SB + 80;
const SB_DIRBLKBITS: usize = SB + 90;
/// Inode field offsets (relative, same in compact and extended inodes).
const I_XATTR_ICOUNT: usize = 2;
const I_MODE: usize = 4;
const I_SIZE: usize = 8;
const I_U: usize = 16;

fn open_err(bytes: Vec<u8>) -> Error {
    Image::from_bytes(bytes).expect_err("corrupt image must not open")
}

fn open(bytes: Vec<u8>) -> Image {
    Image::from_bytes(bytes).expect("image still opens")
}

/// `check` must fail; also runs the whole bounded walk (no panic, no hang).
fn check_err(image: &Image) -> CheckError {
    let walk = traverse::walk(image);
    assert!(walk.failed(), "walk saw no problem");
    lazycfs::check::check(image).expect_err("check must fail")
}

fn corrupt(err: &Error) -> Corruption {
    match err {
        Error::Corrupt { what, .. } => *what,
        e => panic!("expected Corrupt, got {e:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// Truncation
// ---------------------------------------------------------------------------------------------

/// The dump of a walkable image, to compare truncated images with the original.
fn dump_of(image: &Image) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    lazycfs::dump::dump(image, &mut out).ok().map(|()| out)
}

fn truncations(what: &str, bytes: &[u8]) {
    let fx = Fx::new(bytes);
    let full_dump = dump_of(&fx.image).unwrap();
    let full_check = lazycfs::check::check(&fx.image).unwrap();
    let len = bytes.len();
    let stride = (len / 200).max(1);
    let mut lens: Vec<usize> = (0..len).step_by(stride).collect();
    // Exact boundaries: superblock, metadata area, every inode reached, every dirent block.
    let meta = fx.inode_at(0);
    lens.extend([
        0,
        1,
        1023,
        1024,
        1024 + 127,
        1024 + 128,
        meta,
        meta + 31,
        meta + 32,
    ]);
    let walk = traverse::walk(&fx.image);
    assert!(
        !walk.failed() && walk.consistent,
        "{what}: clean walk {walk:?}"
    );
    for nid in all_nids(&fx).into_iter().step_by(7) {
        let at = fx.inode_at(nid);
        lens.extend([at, at + 1, at + 32, at + 63]);
    }
    lens.extend([len - 1, len.saturating_sub(fx.block_size())]);
    lens.retain(|&l| l < len);
    lens.sort_unstable();
    lens.dedup();
    let (mut refused, mut failed, mut intact) = (0, 0, 0);
    for l in lens {
        let prefix = &bytes[..l];
        match Image::from_bytes(prefix.to_vec()) {
            Err(e) => {
                if l < 1024 + 128 {
                    assert!(matches!(e, Error::TooShort(_)), "{what}[..{l}]: {e:?}");
                }
                refused += 1;
            }
            Ok(image) => {
                let walk = traverse::walk(&image);
                if walk.failed() {
                    failed += 1;
                } else {
                    // Only trailing bytes nobody uses were cut: everything reads the same.
                    assert_eq!(dump_of(&image).unwrap(), full_dump, "{what}[..{l}]");
                    assert_eq!(lazycfs::check::check(&image).unwrap(), full_check);
                    intact += 1;
                }
            }
        }
    }
    eprintln!("{what}: {refused} refused, {failed} failed the walk, {intact} intact");
    assert!(refused > 0 && failed > 0, "{what}");
}

/// Every nid reachable from the root.
fn all_nids(fx: &Fx) -> Vec<u64> {
    let mut out = vec![fx.image.root_nid()];
    let mut i = 0;
    while i < out.len() {
        let inode = fx.image.inode(out[i]).unwrap();
        if let Ok(dir) = inode.dir() {
            for e in dir.entries() {
                let e = e.unwrap();
                if e.name != b"." && e.name != b".." && !out.contains(&e.nid) {
                    out.push(e.nid);
                }
            }
        }
        i += 1;
    }
    out
}

#[test]
fn truncated_composefs_images() {
    for version in common::cfs::VERSIONS {
        truncations(&format!("composefs V{version}"), cfs_image(version));
    }
}

#[test]
fn truncated_mkfs_images() {
    let (Some(plain), Some(chunked)) = (mkfs_default(), mkfs_chunked()) else {
        return;
    };
    truncations("mkfs default", plain);
    truncations("mkfs chunked", chunked);
}

// ---------------------------------------------------------------------------------------------
// Superblock
// ---------------------------------------------------------------------------------------------

#[test]
fn superblock_flips() {
    let fx = Fx::new(cfs_image(1));
    assert_eq!(
        open_err(fx.with(|b| put32(b, SB, 0x1234_5678))),
        Error::BadMagic(0x1234_5678)
    );
    for bits in [0u8, 8, 17, 255] {
        let e = open_err(fx.with(|b| b[SB_BLKSZBITS] = bits));
        assert!(
            matches!(e, Error::CorruptSuperblock(m) if m.contains("block size")),
            "blkszbits {bits}: {e:?}"
        );
    }
    let incompat = get16(&fx.bytes, SB_INCOMPAT) as u32;
    for (bit, name) in [
        (0x200, "unknown"),
        (0x80, "48bit"),
        (0x100, "metabox"),
        (1 << 31, "unknown"),
    ] {
        let e = open_err(fx.with(|b| put32(b, SB_INCOMPAT, incompat | bit)));
        assert_eq!(e, Error::UnsupportedFeature { name, bit });
        assert!(e.to_string().contains(name), "{e}");
    }
    // Root nid beyond the image (the fixture is far smaller than 65535 inode slots).
    assert!(fx.inode_at(0xffff) > fx.bytes.len());
    let e = open_err(fx.with(|b| put16(b, SB_ROOT_NID, 0xffff)));
    assert_eq!(corrupt(&e), Corruption::NidOutOfRange);
    // Root nid naming a regular file.
    let file = fx.nid("/empty");
    let file = u16::try_from(file).expect("small nid");
    let e = open_err(fx.with(|b| put16(b, SB_ROOT_NID, file)));
    assert!(
        matches!(e, Error::CorruptSuperblock(m) if m.contains("root")),
        "{e:?}"
    );
    for meta in [
        u32::MAX,
        0x7fff_ffff,
        (fx.bytes.len() / fx.block_size()) as u32,
    ] {
        let e = open_err(fx.with(|b| put32(b, SB_META_BLKADDR, meta)));
        assert!(
            matches!(e, Error::CorruptSuperblock(_)),
            "meta_blkaddr {meta}: {e:?}"
        );
    }
    let e = open_err(fx.with(|b| b[SB_DIRBLKBITS] = 1));
    assert!(matches!(e, Error::CorruptSuperblock(_)), "{e:?}");
    let e = open_err(fx.with(|b| put32(b, SB_FIXED_NSEC, 1_000_000_000)));
    assert!(matches!(e, Error::CorruptSuperblock(_)), "{e:?}");
    // Too short for the superblock at all.
    for len in [0, 1024, 1024 + 127] {
        assert_eq!(open_err(fx.bytes[..len].to_vec()), Error::TooShort(len));
    }
}

// ---------------------------------------------------------------------------------------------
// Inodes
// ---------------------------------------------------------------------------------------------

fn set_layout(b: &mut [u8], at: usize, layout: u16) {
    let f = get16(b, at) & !(0x7 << 1);
    put16(b, at, f | (layout << 1));
}

#[test]
fn inode_format_flips() {
    for bytes in [cfs_image(1)].into_iter().chain(mkfs_default()) {
        let fx = Fx::new(bytes);
        let file = fx.nid("/d/aa1");
        let at = fx.inode_at(file);
        for layout in [5u16, 6, 7] {
            let image = open(fx.with(|b| set_layout(b, at, layout)));
            let e = image.inode(file).unwrap_err();
            assert_eq!(
                e,
                Error::Corrupt {
                    nid: file,
                    what: Corruption::UnknownLayout(layout as u8)
                }
            );
            assert_eq!(check_err(&image).error, e);
        }
        for bits in [0x20u16, 0x40, 0x8000] {
            let image = open(fx.with(|b| {
                let f = get16(b, at);
                put16(b, at, f | bits)
            }));
            let e = image.inode(file).unwrap_err();
            assert_eq!(corrupt(&e), Corruption::UnknownFormatBits(bits));
            assert_eq!(check_err(&image).error, e);
        }
        // The same on the root: the image does not open.
        let root_at = fx.inode_at(fx.image.root_nid());
        let e = open_err(fx.with(|b| set_layout(b, root_at, 6)));
        assert_eq!(corrupt(&e), Corruption::UnknownLayout(6));
    }
}

#[test]
fn compressed_layouts_are_refused_not_misread() {
    for bytes in [cfs_image(1)].into_iter().chain(mkfs_default()) {
        let fx = Fx::new(bytes);
        // aa2 has xattrs in both fixtures (a shared one in both, inline ones from mkfs.erofs).
        let file = fx.nid("/d/aa2");
        let dir = fx.nid("/d");
        let sym = fx.nid(if fx.image.composefs().is_some() {
            "/link"
        } else {
            "/d/sym"
        });
        for layout in [1u16, 3] {
            let image = open(fx.with(|b| {
                for nid in [file, dir, sym] {
                    set_layout(b, fx.inode_at(nid), layout);
                }
            }));
            let inode = image.inode(file).unwrap();
            assert_eq!(inode.layout(), DataLayout::Compressed);
            let unsupported = |e: Error| assert!(matches!(e, Error::Unsupported { .. }), "{e:?}");
            unsupported(inode.extent_at(0).unwrap_err());
            unsupported(inode.read_at(0, &mut [0; 16]).unwrap_err());
            unsupported(inode.contiguous_data().unwrap_err());
            let d = image.inode(dir).unwrap().dir().unwrap();
            unsupported(d.lookup(b"aa2").unwrap_err());
            unsupported(d.entries().next().unwrap().unwrap_err());
            unsupported(image.inode(sym).unwrap().symlink_target().unwrap_err());
            // The xattrs sit before the data and do not depend on the layout: they decode as in
            // the clean image.
            let xattrs_of = |inode: lazycfs::erofs::Inode| {
                let xattrs = inode.xattrs().unwrap();
                let list: Vec<_> = xattrs
                    .iter()
                    .map(|x| x.unwrap())
                    .map(|x| (x.name.to_vec(), x.value.to_vec()))
                    .collect();
                list
            };
            let clean = xattrs_of(fx.image.inode(file).unwrap());
            assert!(!clean.is_empty(), "the fixture's /d/aa2 has xattrs");
            assert_eq!(xattrs_of(inode), clean);
            let e = check_err(&image);
            assert!(matches!(e.error, Error::Unsupported { .. }), "{e}");
            assert!(lazycfs::dump::dump(&image, &mut Vec::new()).is_err());
        }
    }
}

#[test]
fn inode_mode_and_size_flips() {
    for bytes in [cfs_image(1)].into_iter().chain(mkfs_default()) {
        let fx = Fx::new(bytes);
        let file = fx.nid("/d/aa1");
        let at = fx.inode_at(file);
        for mode in [0o000644u16, 0o070644, 0o030644, 0o150644, 0o170777] {
            let image = open(fx.with(|b| put16(b, at + I_MODE, mode)));
            let e = image.inode(file).unwrap_err();
            assert_eq!(corrupt(&e), Corruption::BadMode(mode));
            assert_eq!(check_err(&image).error, e);
        }
        // Sizes only 64-bit (extended) inodes can hold.
        // One extended inode of every (type, layout) seen, plus the root if extended.
        let mut kinds = Vec::new();
        let extended: Vec<u64> = all_nids(&fx)
            .into_iter()
            .filter(|&n| fx.is_extended(n))
            .filter(|&n| {
                let inode = fx.image.inode(n).unwrap();
                let kind = (inode.file_type(), inode.layout());
                let new = !kinds.contains(&kind);
                kinds.push(kind);
                new || n == fx.image.root_nid()
            })
            .collect();
        assert!(!extended.is_empty(), "fixture has extended inodes");
        for &nid in &extended {
            let at = fx.inode_at(nid);
            for size in [u64::MAX, u64::MAX - 1, i64::MAX as u64 + 1] {
                let mutated = fx.with(|b| put64(b, at + I_SIZE, size));
                if nid == fx.image.root_nid() {
                    let e = open_err(mutated);
                    assert_eq!(
                        e,
                        Error::Corrupt {
                            nid,
                            what: Corruption::SizeTooLarge
                        }
                    );
                    continue;
                }
                let image = open(mutated);
                assert_eq!(
                    image.inode(nid).unwrap_err(),
                    Error::Corrupt {
                        nid,
                        what: Corruption::SizeTooLarge
                    }
                );
                check_err(&image);
            }
            // The largest size accepted: data beyond the image is an error, not a huge read.
            let image = open(fx.with(|b| put64(b, at + I_SIZE, i64::MAX as u64)));
            let inode = image.inode(nid).unwrap();
            assert_eq!(inode.size(), i64::MAX as u64);
            traverse::walk(&image);
        }
        // Huge (but representable) compact sizes.
        let compact = all_nids(&fx).into_iter().find(|&n| !fx.is_extended(n));
        if let Some(nid) = compact {
            let image = open(fx.with(|b| put32(b, fx.inode_at(nid) + I_SIZE, u32::MAX)));
            traverse::walk(&image);
        }
    }
}

#[test]
fn xattr_flips() {
    for bytes in [cfs_image(1)].into_iter().chain(mkfs_default()) {
        let fx = Fx::new(bytes);
        let is_cfs = fx.image.composefs().is_some();
        // An inode with inline xattrs (the first inline entry follows the header and ids).
        let nid = fx.nid(if is_cfs { "/d/inline" } else { "/d/aa2" });
        let at = fx.inode_at(nid);
        let xa = fx.xattrs_at(nid);
        let icount = get16(&fx.bytes, at + I_XATTR_ICOUNT);
        assert!(icount > 0);
        // xattr_icount huge: the area runs past the end of the image.
        assert!(xa + 12 + 4 * 0xfffe > fx.bytes.len());
        let image = open(fx.with(|b| put16(b, at + I_XATTR_ICOUNT, 0xffff)));
        assert_eq!(
            image.inode(nid).unwrap_err(),
            Error::Corrupt {
                nid,
                what: Corruption::InodeTruncated
            }
        );
        check_err(&image);
        // shared_count larger than the area.
        let area = 12 + 4 * (usize::from(icount) - 1);
        assert!(255 * 4 > area - 12);
        let image = open(fx.with(|b| b[xa + 4] = 255));
        let e = image.inode(nid).unwrap().xattrs().unwrap_err();
        assert_eq!(corrupt(&e), Corruption::XattrTruncated);
        assert_eq!(check_err(&image).error, e);
        // First inline entry: name_len / value_size overrunning the area.
        let shared = usize::from(fx.bytes[xa + 4]);
        let entry = xa + 12 + 4 * shared;
        assert!(entry < xa + area, "inode has inline xattrs");
        for (what, f) in [
            (
                "name_len",
                Box::new(|b: &mut Vec<u8>| b[entry] = 255) as Box<dyn Fn(&mut Vec<u8>)>,
            ),
            (
                "value_size",
                Box::new(|b: &mut Vec<u8>| put16(b, entry + 2, 0xffff)),
            ),
        ] {
            let image = open(fx.with(f));
            let xattrs = image.inode(nid).unwrap().xattrs().unwrap();
            let e = xattrs.iter().find_map(Result::err).expect(what);
            assert_eq!(corrupt(&e), Corruption::XattrTruncated, "{what}");
            // The bloom filter may prove a name absent without scanning the broken entries.
            let get = xattrs.get(b"user.nonexistent");
            assert!(get == Ok(None) || get == Err(e), "{what}: {get:?}");
            assert_eq!(check_err(&image).error, e, "{what}");
        }
        // Shared xattr id out of range.
        let shared_nid = all_nids(&fx)
            .into_iter()
            .find(|&n| {
                get16(&fx.bytes, fx.inode_at(n) + I_XATTR_ICOUNT) > 0
                    && fx.bytes[fx.xattrs_at(n) + 4] > 0
            })
            .expect("fixture has shared xattrs");
        let id_at = fx.xattrs_at(shared_nid) + 12;
        for id in [u32::MAX, 0x4000_0000] {
            let image = open(fx.with(|b| put32(b, id_at, id)));
            let xattrs = image.inode(shared_nid).unwrap().xattrs().unwrap();
            let e = xattrs
                .iter()
                .find_map(Result::err)
                .expect("shared id error");
            assert_eq!(
                e,
                Error::Corrupt {
                    nid: shared_nid,
                    what: Corruption::SharedXattrOutOfRange
                }
            );
            check_err(&image);
        }
        // A shared id pointing at the very last bytes of the image: entry truncated.
        let sb = fx.image.superblock();
        let base = u64::from(sb.xattr_blkaddr) * sb.block_size();
        let last = ((fx.bytes.len() as u64 - 2 - base) / 4) as u32;
        let image = open(fx.with(|b| {
            put32(b, id_at, last);
            let n = b.len();
            b[n - 4..].fill(0xff);
        }));
        let xattrs = image.inode(shared_nid).unwrap().xattrs().unwrap();
        assert!(xattrs.iter().any(|x| x.is_err()));
    }
}

// ---------------------------------------------------------------------------------------------
// Directories
// ---------------------------------------------------------------------------------------------

/// Runs `f` on a copy of the image and expects lookup/readdir of `dir` to fail with `what`.
fn expect_dir_error(fx: &Fx, dir: &str, what: Corruption, f: impl FnOnce(&mut Vec<u8>)) {
    let dir_nid = fx.nid(dir);
    let image = open(fx.with(f));
    let d = image.inode(dir_nid).unwrap().dir().unwrap();
    let from_readdir = d.entries().find_map(Result::err).expect("readdir error");
    assert_eq!(from_readdir, Error::Corrupt { nid: dir_nid, what }, "{dir}");
    let e = check_err(&image);
    assert_eq!(e.error, from_readdir, "{e}");
}

#[test]
fn dirent_flips() {
    for bytes in [cfs_image(1)].into_iter().chain(mkfs_default()) {
        let fx = Fx::new(bytes);
        let bs = fx.block_size() as u16;
        let dirents = fx.dirents(fx.nid("/d"));
        assert!(dirents.len() >= 6);
        let first = dirents[0].at;
        for nameoff in [0, 1, 13, 25, bs, bs + 12, 0xfff0, 0xffff] {
            expect_dir_error(&fx, "/d", Corruption::BadDirentNameoff, |b| {
                put16(b, first + 8, nameoff)
            });
        }
        // Decreasing nameoffs: the second entry's name would end before it starts.
        // (Entries 3 and 4 are regular files, so the merged name of entry 3 is a valid entry
        // and the error comes from entry 4.)
        assert_eq!(&dirents[3].name[..2], b"aa");
        let (n1, n2) = (dirents[3].at + 8, dirents[4].at + 8);
        expect_dir_error(&fx, "/d", Corruption::BadDirentNameoff, |b| {
            let (a, c) = (get16(b, n1), get16(b, n2));
            put16(b, n1, c);
            put16(b, n2, a);
        });
        // A nameoff inside the dirent array.
        expect_dir_error(&fx, "/d", Corruption::BadDirentNameoff, |b| {
            let f = get16(b, first + 8);
            put16(b, n1, f - 12)
        });
        // Nid out of range.
        let aa1 = fx.dirent("/d", "aa1");
        for nid in [u64::MAX, 1 << 40, (fx.bytes.len() / 32) as u64] {
            let image = open(fx.with(|b| put64(b, aa1.at, nid)));
            let e = check_err(&image);
            assert_eq!(
                e.error,
                Error::Corrupt {
                    nid,
                    what: Corruption::NidOutOfRange
                }
            );
            assert_eq!(e.path, "/d/aa1");
        }
        // Unsorted names: swap two names of the same length.
        let (a2, a3) = (fx.dirent("/d", "aa2"), fx.dirent("/d", "aa3"));
        let image = open(fx.with(|b| {
            b[a2.name_at + 2] = b'3';
            b[a3.name_at + 2] = b'2';
        }));
        assert_eq!(
            check_err(&image).error.to_string(),
            corrupt_d(&fx, Corruption::DirentsUnsorted)
        );
        // Binary search on unsorted names may miss entries, but answers, and what it finds is
        // the entry of that name: after the swap, "aa2" names aa3's inode.
        let d = image.inode(fx.nid("/d")).unwrap().dir().unwrap();
        for (name, nid) in [(&b"aa2"[..], a3.nid), (b"aa3", a2.nid)] {
            if let Some(found) = d.lookup(name).unwrap() {
                assert_eq!(found.nid, nid, "{}", String::from_utf8_lossy(name));
            }
        }
        assert_eq!(d.lookup(b"aa1").unwrap().map(|e| e.nid), Some(aa1.nid));
        // Dirent file type disagreeing with the inode; the clean one is a regular file's.
        assert_eq!(
            FileType::from_dirent(fx.bytes[aa1.at + 10]),
            Some(FileType::Regular)
        );
        for ft in [0u8, 2, 7, 8, 255] {
            let image = open(fx.with(|b| b[aa1.at + 10] = ft));
            assert_eq!(
                check_err(&image).error,
                Error::Corrupt {
                    nid: aa1.nid,
                    what: Corruption::FileTypeMismatch
                }
            );
        }
        // `/` and NUL in names.
        for c in [b'/', 0] {
            let image = open(fx.with(|b| b[a2.name_at + 1] = c));
            let e = lazycfs::check::check(&image).unwrap_err();
            traverse::walk(&image);
            if c == b'/' {
                assert_eq!(e.error.to_string(), corrupt_d(&fx, Corruption::BadName));
            } else {
                // A NUL inside a non-last name: a name with a NUL, or unsorted.
                assert!(matches!(e.error, Error::Corrupt { .. }), "{e}");
            }
        }
        // `.` and `..` pointing elsewhere.
        let dot = fx.dirent("/d", ".");
        let dotdot = fx.dirent("/d", "..");
        let other = fx.nid("/e");
        for at in [dot.at, dotdot.at] {
            let image = open(fx.with(|b| put64(b, at, other)));
            assert_eq!(
                check_err(&image).error.to_string(),
                corrupt_d(&fx, Corruption::BadDotEntry)
            );
        }
        // A missing `..`: renamed to `.-` (still sorted) and turned into a regular file.
        let aa1_nid = aa1.nid;
        let image = open(fx.with(|b| {
            b[dotdot.name_at + 1] = b'-';
            put64(b, dotdot.at, aa1_nid);
            b[dotdot.at + 10] = 1;
        }));
        assert_eq!(
            check_err(&image).error.to_string(),
            corrupt_d(&fx, Corruption::BadDotEntry)
        );
    }
}

fn corrupt_d(fx: &Fx, what: Corruption) -> String {
    Error::Corrupt {
        nid: fx.nid("/d"),
        what,
    }
    .to_string()
}

#[test]
fn multi_block_directory_flips() {
    let Some(bytes) = mkfs_default() else {
        return;
    };
    let fx = Fx::new(bytes);
    let big = fx.nid("/big");
    let inode = fx.image.inode(big).unwrap();
    let bs = fx.block_size() as u64;
    assert!(inode.size() > 2 * bs, "big/ spans several blocks");
    let dirents = fx.dirents(big);
    assert_eq!(dirents.len(), BIG_ENTRIES + 2);
    // Every entry found by binary search, and readdir resumes at every position.
    let dir = inode.dir().unwrap();
    for d in &dirents {
        assert_eq!(dir.lookup(&d.name).unwrap().unwrap().nid, d.nid);
    }
    // Corrupt the first dirent of the last block.
    let last_block = fx.data_at(big, (inode.size() - 1) / bs * bs);
    for nameoff in [0u16, 7, bs as u16] {
        expect_dir_error(&fx, "/big", Corruption::BadDirentNameoff, |b| {
            put16(b, last_block + 8, nameoff)
        });
    }
    // Break the cross-block order: the last block's first name sorts before everything.
    let first_of_last = dirents.iter().find(|d| d.at == last_block).unwrap();
    let image = open(fx.with(|b| b[first_of_last.name_at] = b'0'));
    let e = check_err(&image);
    assert_eq!(
        e.error,
        Error::Corrupt {
            nid: big,
            what: Corruption::DirentsUnsorted
        }
    );
    // A hole in the directory (block address = NULL) for a FLAT_PLAIN layout.
    let at = fx.inode_at(big);
    if (get16(&fx.bytes, at) >> 1) & 7 == 0 {
        let image = open(fx.with(|b| put32(b, at + I_U, u32::MAX)));
        let d = image.inode(big).unwrap().dir().unwrap();
        assert_eq!(corrupt(&d.lookup(b"x").unwrap_err()), Corruption::DirHole);
    }
}

#[test]
fn directory_cycles_are_reported_not_followed() {
    for bytes in [cfs_image(1)].into_iter().chain(mkfs_default()) {
        let fx = Fx::new(bytes);
        let sub = fx.dirent("/d", "sub");
        let root = fx.image.root_nid();
        for target in [root, fx.nid("/d"), sub.nid] {
            // `sub` points back to an ancestor (root or `/d`), or `sub/leaf` becomes `sub`.
            let image = if target == sub.nid {
                let leaf = fx.dirent("/d/sub", "leaf");
                open(fx.with(|b| {
                    put64(b, leaf.at, sub.nid);
                    b[leaf.at + 10] = 2;
                }))
            } else {
                open(fx.with(|b| put64(b, sub.at, target)))
            };
            let e = check_err(&image);
            assert_eq!(corrupt(&e.error), Corruption::DirectoryCycle, "{e}");
            let e = lazycfs::dump::dump(&image, &mut Vec::new()).unwrap_err();
            assert!(e.to_string().contains("cycle"), "{e}");
        }
        // Many entries pointing to the root: still linear work.
        let image = open(fx.with(|b| {
            for d in fx.dirents(fx.nid("/d")) {
                if d.name != b"." && d.name != b".." {
                    put64(b, d.at, root);
                    b[d.at + 10] = 2;
                }
            }
        }));
        check_err(&image);
        assert!(lazycfs::dump::dump(&image, &mut Vec::new()).is_err());
    }
}

// ---------------------------------------------------------------------------------------------
// Chunk-based files
// ---------------------------------------------------------------------------------------------

#[test]
fn chunk_flips() {
    let Some(bytes) = mkfs_chunked() else {
        return;
    };
    let fx = Fx::new(bytes);
    let nid = fx.nid("/d/data");
    let inode = fx.image.inode(nid).unwrap();
    assert_eq!(inode.layout(), DataLayout::ChunkBased);
    let at = fx.inode_at(nid);
    let format = get16(&fx.bytes, at + I_U);
    for bad in [format | 0x80, format | 0x40, format | 0x8000, 0xffff] {
        let image = open(fx.with(|b| put16(b, at + I_U, bad)));
        let e = image.inode(nid).unwrap().extent_at(0).unwrap_err();
        assert_eq!(
            e,
            Error::Corrupt {
                nid,
                what: Corruption::BadChunkFormat(bad)
            }
        );
        assert_eq!(check_err(&image).error, e);
    }
    // The chunk map after the inode and its xattrs.
    let indexes = format & 0x20 != 0;
    let unit = if indexes { 8 } else { 4 };
    let xattr_size = match get16(&fx.bytes, at + I_XATTR_ICOUNT) {
        0 => 0,
        n => 12 + 4 * (usize::from(n) - 1),
    };
    let map = (fx.xattrs_at(nid) + xattr_size).next_multiple_of(unit);
    let blkaddr_at = if indexes { map + 4 } else { map };
    // The decoded first chunk is where the map says.
    let blk = u32::from_le_bytes(fx.bytes[blkaddr_at..blkaddr_at + 4].try_into().unwrap());
    assert_eq!(fx.data_at(nid, 0), blk as usize * fx.block_size());
    for blkaddr in [
        u32::MAX - 1,
        (fx.bytes.len() / fx.block_size()) as u32,
        0x8000_0000,
    ] {
        let image = open(fx.with(|b| put32(b, blkaddr_at, blkaddr)));
        let e = image.inode(nid).unwrap().extent_at(0).unwrap_err();
        assert_eq!(
            e,
            Error::Corrupt {
                nid,
                what: Corruption::DataOutOfRange
            }
        );
        assert_eq!(check_err(&image).error, e);
    }
    // NULL_ADDR is a hole.
    let image = open(fx.with(|b| put32(b, blkaddr_at, u32::MAX)));
    let inode = image.inode(nid).unwrap();
    assert_eq!(inode.extent_at(0).unwrap(), Some(Extent::Hole(4096)));
    // device_id != 0 (8-byte chunk indexes only: set the INDEXES format bit and rewrite the
    // map in that form when the writer used 4-byte block addresses).
    let image = open(fx.with(|b| {
        let map8 = (fx.xattrs_at(nid) + xattr_size).next_multiple_of(8);
        put16(b, at + I_U, format | 0x20);
        b[map8..map8 + 8].copy_from_slice(
            &[0, 0, 1, 0]
                .into_iter()
                .chain(blk.to_le_bytes())
                .collect::<Vec<u8>>(),
        );
    }));
    let e = image.inode(nid).unwrap().extent_at(0).unwrap_err();
    assert_eq!(
        e,
        Error::Corrupt {
            nid,
            what: Corruption::ChunkDevice
        }
    );
    assert_eq!(check_err(&image).error, e);
    // A size far beyond the chunk map: the map runs past the image, an error, not a hang.
    if fx.is_extended(nid) {
        let image = open(fx.with(|b| put64(b, at + I_SIZE, i64::MAX as u64)));
        check_err(&image);
    } else {
        let image = open(fx.with(|b| put32(b, at + I_SIZE, u32::MAX)));
        check_err(&image);
    }
}

// ---------------------------------------------------------------------------------------------
// Seeded mutation fuzzing
// ---------------------------------------------------------------------------------------------

/// xorshift64* (no extra dependency, deterministic).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len())]
    }
}

/// Byte ranges worth mutating: the superblock, every inode with its xattrs and inline data,
/// every dirent block.
fn hot_ranges(fx: &Fx) -> Vec<(usize, usize)> {
    let mut ranges = vec![(SB, SB + 128)];
    for nid in all_nids(fx) {
        let at = fx.inode_at(nid);
        ranges.push((at, (at + 128).min(fx.bytes.len())));
        let inode = fx.image.inode(nid).unwrap();
        if inode.is_dir() {
            let bs = fx.block_size() as u64;
            let mut pos = 0;
            while pos < inode.size() {
                let start = fx.data_at(nid, pos);
                let len = (inode.size() - pos).min(bs) as usize;
                // Dirents and the start of the names are where the structure is.
                ranges.push((start, start + len.min(256)));
                pos += bs;
            }
        }
    }
    ranges
}

fn mutate(rng: &mut Rng, bytes: &mut Vec<u8>, hot: &[(usize, usize)]) {
    const U32S: [u32; 12] = [
        0,
        1,
        2,
        3,
        12,
        0xff,
        0x1000,
        0xffff,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_fffe,
        u32::MAX,
    ];
    let n = 1 + rng.below(4);
    for _ in 0..n {
        let len = bytes.len();
        let at = if rng.below(8) == 0 {
            rng.below(len)
        } else {
            let (lo, hi) = rng.pick(hot);
            lo + rng.below(hi - lo)
        };
        match rng.below(8) {
            0 | 1 => bytes[at] ^= 1 << rng.below(8),
            2 => bytes[at] = rng.next() as u8,
            3 => bytes[at] = rng.pick(&[0, 1, 0x7f, 0x80, 0xff, 12, b'/', b'.']),
            4 | 5 if at + 4 <= len => {
                let v = rng.pick(&U32S);
                bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
            }
            6 if at + 2 <= len => {
                let v = rng.pick(&U32S) as u16;
                bytes[at..at + 2].copy_from_slice(&v.to_le_bytes());
            }
            7 if at + 8 <= len => {
                let r = rng.next();
                let v = rng.pick(&[0, u64::MAX, i64::MAX as u64, 1 << 32, r]);
                bytes[at..at + 8].copy_from_slice(&v.to_le_bytes());
            }
            _ => bytes[at] = !bytes[at],
        }
    }
    if rng.below(50) == 0 {
        let keep = rng.below(bytes.len());
        bytes.truncate(keep);
    }
}

fn fuzz_iterations() -> usize {
    if let Some(n) = std::env::var("LAZYCFS_FUZZ_ITERS")
        .ok()
        .and_then(|v| v.parse().ok())
    {
        return n;
    }
    if cfg!(debug_assertions) { 1000 } else { 3000 }
}

fn fuzz(what: &str, bytes: &[u8], seed: u64) {
    let seed = std::env::var("LAZYCFS_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .map_or(seed, |s| s ^ seed);
    let fx = Fx::new(bytes);
    let hot = hot_ranges(&fx);
    let iters = fuzz_iterations();
    let mut rng = Rng::new(seed);
    let start = std::time::Instant::now();
    let (mut refused, mut failed, mut clean) = (0, 0, 0);
    for i in 0..iters {
        let mut m = bytes.to_vec();
        mutate(&mut rng, &mut m, &hot);
        // Reproduce a failure with LAZYCFS_FUZZ_SEED / the iteration printed by the panic.
        let result = std::panic::catch_unwind(|| traverse::open_and_walk(&m));
        match result {
            Ok(Err(_)) => refused += 1,
            Ok(Ok(w)) if w.failed() => failed += 1,
            Ok(Ok(_)) => clean += 1,
            Err(panic) => {
                let path = std::env::temp_dir().join(format!("lazycfs-fuzz-{what}-{i}.img"));
                fs::write(&path, &m).unwrap();
                eprintln!(
                    "{what}: iteration {i} (seed {seed}) panicked; image saved to {}",
                    path.display()
                );
                std::panic::resume_unwind(panic);
            }
        }
    }
    eprintln!(
        "{what}: {iters} mutations in {:?}: {refused} refused, {failed} with errors, {clean} clean",
        start.elapsed()
    );
}

#[test]
fn fuzz_composefs_v0() {
    fuzz("cfs-v0", cfs_image(0), 0xc0f5_0000);
}

#[test]
fn fuzz_composefs_v1() {
    fuzz("cfs-v1", cfs_image(1), 0xc0f5_0001);
}

#[test]
fn fuzz_composefs_v2() {
    fuzz("cfs-v2", cfs_image(2), 0xc0f5_0002);
}

#[test]
fn fuzz_mkfs_default() {
    if let Some(bytes) = mkfs_default() {
        fuzz("mkfs-default", bytes, 0xe0f5_0001);
    }
}

#[test]
fn fuzz_mkfs_chunked() {
    if let Some(bytes) = mkfs_chunked() {
        fuzz("mkfs-chunked", bytes, 0xe0f5_0002);
    }
}
