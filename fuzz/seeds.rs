//! Small seed images for the fuzz targets, built by real writers: the `composefs` crate's
//! writer (every format version, xattrs, redirects and metacopy digests, hard links,
//! whiteouts, data in blocks, multi-block directories) and `mkfs.erofs` (inline and
//! tail-packed data, shared xattrs, chunk-based files, compact and extended inodes), plus a few
//! handmade edits of those (root cycle, truncations, a wrong `..`).
//!
//! Shared by `examples/fuzz_seeds.rs` (writes them out for `cargo fuzz`, see `fuzz/seeds.sh`)
//! and `tests/fuzz_replay.rs` (replays every target over them on stable), via `#[path]`.

#![allow(dead_code)]

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::path::Path;
use std::process::Command;

use composefs::dumpfile::dumpfile_to_filesystem;
use composefs::erofs::format::FormatVersion;
use composefs::erofs::writer::{ValidatedFileSystem, mkfs_erofs_versioned};
use composefs::fsverity::Sha256HashValue;
use composefs::tree::{LeafContent, RegularFile};

/// One seed image.
#[derive(Debug, Clone)]
pub struct Seed {
    /// File name to store it under (unique, descriptive).
    pub name: String,
    /// The image bytes.
    pub image: Vec<u8>,
}

const VERSIONS: [(FormatVersion, &str); 3] = [
    (FormatVersion::V0, "v0"),
    (FormatVersion::V1, "v1"),
    (FormatVersion::V2, "v2"),
];

/// Every kind of entry and the composefs encodings (the roundtrip test's fixture).
const KINDS: &str = include_str!("../tests/data/kinds.dump");

/// Whiteout stubs, hex names, overlay xattrs, hard links reached depth-first, redirects.
const EDGES: &str = r"/ 0 40755 2 0 0 0 100.0 - - -
/00 0 40755 2 0 0 0 100.0 - - -
/00/ab 0 20000 1 0 0 0 100.0 - - -
/0g 0 20000 1 0 0 0 100.0 - - -
/ab 0 20000 1 0 0 0 100.0 - - -
/ad 3 100644 1 0 0 0 100.0 - abc -
/esc-wh 0 100644 1 0 0 0 100.0 - - - trusted.overlay.whiteout=
/lustre 0 100644 1 0 0 0 100.0 - - - lustre.x=1 user.overlay.whiteout= trusted.overlay.metacopy=zz trusted.overlay.redirect=/r
/nodigest 7 100644 1 0 0 0 100.0 c4/44444444444444444444444444444444444444444444444444444444444444 - -
/x 0 40755 3 0 0 0 100.0 - - - user.shared=1 trusted.overlay.opaque=y
/x/fifo 0 10644 3 0 0 0 100.0 - - - user.shared=1
/x/y 0 40755 2 0 0 0 100.0 - - - user.shared=1
/x/y/fifo2 0 @10644 - - - - 0.0 /x/fifo - -
/zfifo 0 @10644 - - - - 0.0 /x/fifo - -
";

/// A deeper tree (nested directories, symlinks, external files whose chunk maps are holes).
const TREE: &str = r"/ 0 40755 3 0 0 0 1.0 - - - user.a=1
/a 0 40755 3 0 0 0 2.5 - - - security.selinux=x
/a/b 0 40755 3 0 0 0 3.0 - - -
/a/b/c 0 40755 2 0 0 0 4.0 - - -
/a/b/c/f 4 100644 1 0 0 0 5.0 - data - user.f=g
/a/b/ext 1048576 100644 1 0 0 0 6.0 a1/22222222222222222222222222222222222222222222222222222222222222 - a122222222222222222222222222222222222222222222222222222222222222
/a/b/l 1 120777 1 0 0 0 7.0 c - -
/a/big 5000000 100644 1 0 0 0 8.0 b1/33333333333333333333333333333333333333333333333333333333333333 - b133333333333333333333333333333333333333333333333333333333333333
/z 0 40555 2 65534 65534 0 9.0 - - - trusted.overlay.overlay.redirect=/e user.overlay.origin=o
";

fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i % 251) as u8 ^ seed).collect()
}

fn write(dump: &str, version: FormatVersion, edit: impl FnOnce(&mut Fs)) -> Vec<u8> {
    let mut fs = dumpfile_to_filesystem::<Sha256HashValue>(dump).expect("seed dumpfile parses");
    edit(&mut fs);
    let fs = ValidatedFileSystem::new(fs).expect("seed filesystem is valid");
    mkfs_erofs_versioned(&fs, version).into_vec()
}

type Fs = composefs::tree::FileSystem<Sha256HashValue>;

/// Replaces the content of the root's file `name` with `len` bytes of data (dumpfiles hold
/// at most 512 bytes inline; the writer stores longer content in blocks).
fn set_data(fs: &mut Fs, name: &str, len: usize, seed: u8) {
    let id = fs.root.leaf_id(OsStr::new(name)).expect("seed file exists");
    fs.leaf_mut(id).content = LeafContent::Regular(RegularFile::Inline(pattern(len, seed).into()));
}

/// A root with `n` files with long names: a directory spanning several blocks.
fn wide_dump(n: usize) -> String {
    let mut dump = String::from("/ 0 40755 2 0 0 0 1.0 - - -\n");
    for i in 0..n {
        dump.push_str(&format!(
            "/entry-with-a-longish-name-{i:04} 1 100644 1 0 0 0 1.0 - x -\n"
        ));
    }
    dump
}

/// Images written by the composefs crate, in every format version.
pub fn composefs_seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();
    for (version, v) in VERSIONS {
        let blocks = version != FormatVersion::V2;
        seeds.push(Seed {
            name: format!("cfs-kinds-{v}"),
            image: write(KINDS, version, |_| {}),
        });
        seeds.push(Seed {
            name: format!("cfs-edges-{v}"),
            image: write(EDGES, version, |_| {}),
        });
        seeds.push(Seed {
            name: format!("cfs-tree-{v}"),
            image: write(TREE, version, |_| {}),
        });
        seeds.push(Seed {
            name: format!("cfs-wide-{v}"),
            image: write(&wide_dump(150), version, |_| {}),
        });
        if blocks {
            seeds.push(Seed {
                name: format!("cfs-data-{v}"),
                image: write(
                    "/ 0 40755 2 0 0 0 1.0 - - -\n/big 1 100644 1 0 0 0 1.0 - x -\n\
                     /tail 1 100644 1 0 0 0 1.0 - x - user.t=1\n",
                    version,
                    |fs| {
                        set_data(fs, "big", 2 * 4096, 1);
                        set_data(fs, "tail", 4096 + 100, 2);
                    },
                ),
            });
        }
    }
    seeds
}

/// Handmade edits of composefs images: structures no writer makes.
pub fn handmade_seeds() -> Vec<Seed> {
    let mut seeds = Vec::new();
    let base = write(TREE, FormatVersion::V1, |_| {});
    // In `/a`: `..` pointing at `/a` itself; `b` naming the root (a cycle); `b` naming `/a`;
    // `..` typed as a block device (found by the requests target: readdir reported it so).
    for (what, name, to) in [
        ("dotdot-self", &b".."[..], Target::Dir),
        ("cycle-root", b"b", Target::Root),
        ("cycle-self", b"b", Target::Dir),
        ("dotdot-type", b"..", Target::BlockDeviceType),
    ] {
        let mut image = base.clone();
        if patch_dirent_nid(&mut image, b"a", name, to) {
            seeds.push(Seed {
                name: format!("hand-{what}"),
                image,
            });
        }
    }
    // What the fuzzers found (fuzz/README.md): an xattr name with a NUL in it (`user.root`
    // becomes `user.roo\0`), and a compact inode with a non-zero `i_mtime`.
    let mut image = write(KINDS, FormatVersion::V1, |_| {});
    if let Some(at) = find(&image, b"\x04\x01\x01\x00root1") {
        image[at + 7] = 0;
        seeds.push(Seed {
            name: "hand-xattr-nul".into(),
            image,
        });
    }
    let mut image = write(&wide_dump(3), FormatVersion::V1, |_| {});
    if let Some(pos) = compact_inode(&image, |name| name.starts_with(b"entry")) {
        image[pos + 12..pos + 16].copy_from_slice(&1_000_000u32.to_le_bytes());
        seeds.push(Seed {
            name: "hand-compact-mtime".into(),
            image,
        });
    }
    // `i_format` bits no kernel defines, in a whiteout stub composefs hides (and ignores).
    let mut image = write(&wide_dump(3), FormatVersion::V1, |_| {});
    if let Some(pos) = compact_inode(&image, |name| name == b"3b") {
        image[pos + 1] |= 0x27;
        seeds.push(Seed {
            name: "hand-format-bits".into(),
            image,
        });
    }
    // A root directory whose size (1 byte) ends inside its dirents.
    let mut image = write(EDGES, FormatVersion::V1, |_| {});
    if let Some(pos) = root_inode(&image) {
        let extended = image[pos] & 1 == 1;
        let size = if extended { 8 } else { 4 };
        image[pos + 8..pos + 8 + size].fill(0);
        image[pos + 8] = 1;
        seeds.push(Seed {
            name: "hand-short-dir".into(),
            image,
        });
    }
    // A file (content in a basedir object) whose extended inode claims a size over i64::MAX.
    for (version, _) in VERSIONS {
        let mut image = write(EDGES, version, |_| {});
        let pos = compact_or_extended_inode(&image, b"nodigest").filter(|&p| image[p] & 1 == 1);
        if let Some(pos) = pos {
            image[pos + 8..pos + 16].copy_from_slice(&(u64::MAX - (1 << 34)).to_le_bytes());
            seeds.push(Seed {
                name: "hand-huge-size".into(),
                image,
            });
            break;
        }
    }
    // An inline file whose size makes its data cross a block boundary.
    let mut image = write(&wide_dump(3), FormatVersion::V1, |_| {});
    if let Some(pos) = compact_or_extended_inode(&image, b"entry-with-a-longish-name-0001") {
        let size = if image[pos] & 1 == 1 { 8 } else { 4 };
        image[pos + 8..pos + 8 + size].fill(0);
        image[pos + 8..pos + 10].copy_from_slice(&4000u16.to_le_bytes());
        seeds.push(Seed {
            name: "hand-inline-cross".into(),
            image,
        });
    }
    // Symlinks with an empty target, and with a target longer than PATH_MAX.
    for (what, len) in [("empty", 0u16), ("long", 5000)] {
        let mut image = write(KINDS, FormatVersion::V1, |_| {});
        if let Some(pos) = compact_or_extended_inode(&image, b"link") {
            let size = if image[pos] & 1 == 1 { 8 } else { 4 };
            image[pos + 8..pos + 8 + size].fill(0);
            image[pos + 8..pos + 10].copy_from_slice(&len.to_le_bytes());
            seeds.push(Seed {
                name: format!("hand-{what}-symlink"),
                image,
            });
        }
    }
    // Superblock nanoseconds (compact inodes' mtime) of 10^9: the image does not open.
    let mut image = write(&wide_dump(3), FormatVersion::V1, |_| {});
    image[1024 + 32..1024 + 36].copy_from_slice(&1_000_000_000u32.to_le_bytes());
    seeds.push(Seed {
        name: "hand-sb-nanoseconds".into(),
        image,
    });
    // A superblock `dirblkbits` other than 0 (the kernel refuses it).
    let mut image = write(&wide_dump(3), FormatVersion::V1, |_| {});
    image[1024 + 90] = 1;
    seeds.push(Seed {
        name: "hand-sb-dirblkbits".into(),
        image,
    });
    // The same bits in the root inode: the image does not open.
    let mut image = write(&wide_dump(3), FormatVersion::V1, |_| {});
    if let Some(pos) = root_inode(&image) {
        image[pos + 1] |= 0x3f;
        seeds.push(Seed {
            name: "hand-root-format-bits".into(),
            image,
        });
    }
    // A directory whose dirents are out of order (one name's byte raised).
    let mut image = write(&wide_dump(150), FormatVersion::V1, |_| {});
    if let Some(at) = find(&image, b"name-0099") {
        image[at + 5] = 0xd0;
        seeds.push(Seed {
            name: "hand-unsorted".into(),
            image,
        });
    }
    // A stored xattr name the name bloom filter says is absent.
    for (version, v) in VERSIONS {
        let mut image = write(EDGES, version, |_| {});
        if let Some(at) = find(&image, b"overlay.overlay.whiteout") {
            image[at + 5] = 0x10;
            seeds.push(Seed {
                name: format!("hand-xattr-filter-{v}"),
                image,
            });
        }
    }
    // A file name with a `/` in it (composefs' reader accepts it, the kernel's VFS refuses).
    let mut image = write(EDGES, FormatVersion::V2, |_| {});
    if let Some(at) = find(&image, b"esc-wh") {
        image[at + 3] = b'/';
        seeds.push(Seed {
            name: "hand-slash-name".into(),
            image,
        });
    }
    // Truncations: the superblock only, and an image cut in its metadata.
    seeds.push(Seed {
        name: "hand-superblock-only".into(),
        image: base[..base.len().min(2048)].to_vec(),
    });
    seeds.push(Seed {
        name: "hand-truncated".into(),
        image: base[..base.len() * 2 / 3].to_vec(),
    });
    seeds
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Byte offset of the inode of the root's entry `name`.
fn compact_or_extended_inode(image: &[u8], name: &[u8]) -> Option<usize> {
    let parsed = lazycfs::erofs::Image::from_bytes(image.to_vec()).ok()?;
    let sb = parsed.superblock();
    let root = parsed.inode(sb.root_nid).ok()?;
    let entry = root.dir().ok()?.lookup(name).ok()??;
    let pos = lazycfs::erofs::format::inode_pos(sb.meta_blkaddr, sb.block_bits, entry.nid)?;
    usize::try_from(pos).ok()
}

/// Byte offset of the root inode.
fn root_inode(image: &[u8]) -> Option<usize> {
    let parsed = lazycfs::erofs::Image::from_bytes(image.to_vec()).ok()?;
    let sb = parsed.superblock();
    let pos = lazycfs::erofs::format::inode_pos(sb.meta_blkaddr, sb.block_bits, sb.root_nid)?;
    usize::try_from(pos).ok()
}

/// Byte offset of the first compact inode the root lists under a name `pick` accepts.
fn compact_inode(image: &[u8], pick: impl Fn(&[u8]) -> bool) -> Option<usize> {
    let parsed = lazycfs::erofs::Image::from_bytes(image.to_vec()).ok()?;
    let sb = parsed.superblock();
    let root = parsed.inode(parsed.root_nid()).ok()?;
    root.dir()
        .ok()?
        .entries()
        .filter_map(Result::ok)
        .find_map(|e| {
            let pos = lazycfs::erofs::format::inode_pos(sb.meta_blkaddr, sb.block_bits, e.nid)?;
            let pos = usize::try_from(pos).ok()?;
            (pick(e.name) && image.get(pos)? & 1 == 0).then_some(pos)
        })
}

#[derive(Clone, Copy)]
enum Target {
    Root,
    Dir,
    /// Not the nid: the dirent's file type, set to a block device.
    BlockDeviceType,
}

/// Rewrites the nid of the dirent `name` in the root's subdirectory `dir` (stored in one
/// contiguous block) to the root's nid or the directory's own. EROFS dirents are 12 bytes:
/// nid (8), name offset (2), file type, reserved; the names follow them. Whether it was found.
fn patch_dirent_nid(image: &mut [u8], dir: &[u8], name: &[u8], to: Target) -> bool {
    let Some((start, len, nid)) = dir_block(image, dir, to) else {
        return false;
    };
    let block = &mut image[start..start + len];
    if block.len() < 12 {
        return false;
    }
    let name_at = |block: &[u8], i: usize| {
        u16::from_le_bytes([block[i * 12 + 8], block[i * 12 + 9]]) as usize
    };
    let count = name_at(block, 0) / 12;
    for i in 0..count {
        let begin = name_at(block, i);
        let end = if i + 1 < count {
            name_at(block, i + 1)
        } else {
            block[begin.min(block.len())..]
                .iter()
                .position(|&b| b == 0)
                .map_or(block.len(), |p| begin + p)
        };
        if block.get(begin..end) == Some(name) {
            match to {
                Target::BlockDeviceType => block[i * 12 + 10] = 4,
                _ => block[i * 12..i * 12 + 8].copy_from_slice(&nid.to_le_bytes()),
            }
            return true;
        }
    }
    false
}

/// Where the root's subdirectory `dir` keeps its dirents (offset, length), and the nid to
/// write.
fn dir_block(image: &[u8], dir: &[u8], to: Target) -> Option<(usize, usize, u64)> {
    let parsed = lazycfs::erofs::Image::from_bytes(image.to_vec()).ok()?;
    let root = parsed.root_nid();
    let entry = parsed.inode(root).ok()?.dir().ok()?.lookup(dir).ok()??;
    let block = parsed.inode(entry.nid).ok()?.contiguous_data().ok()??;
    let start = block.as_ptr() as usize - parsed.bytes().as_ptr() as usize;
    let nid = match to {
        Target::Root => root,
        Target::Dir | Target::BlockDeviceType => entry.nid,
    };
    Some((start, block.len(), nid))
}

/// Images built by `mkfs.erofs` from a small tree in `work`, in several layouts.
pub fn mkfs_seeds(work: &Path) -> io::Result<Vec<Seed>> {
    let src = work.join("src");
    small_tree(&src)?;
    let mut seeds = Vec::new();
    for (name, args) in [
        ("default", &[][..]),
        ("shared-xattrs", &["-x0"][..]),
        ("chunked", &["--chunksize=4096"][..]),
        ("noinline", &["-Enoinline_data"][..]),
        ("extended", &["-Eforce-inode-extended"][..]),
        ("compact", &["-T0", "--all-root"][..]),
    ] {
        let out = work.join(format!("{name}.erofs"));
        let status = Command::new("mkfs.erofs")
            .arg("--quiet")
            .args(args)
            .arg(&out)
            .arg(&src)
            .env_remove("SOURCE_DATE_EPOCH")
            .status()?;
        if !status.success() {
            return Err(io::Error::other(format!("mkfs.erofs {args:?} failed")));
        }
        seeds.push(Seed {
            name: format!("mkfs-{name}"),
            image: fs::read(&out)?,
        });
    }
    Ok(seeds)
}

/// A small tree with every layout mkfs.erofs picks: empty, inline, tail-packed and
/// multi-block files, a multi-block directory, symlinks, a fifo, shared and inline xattrs.
fn small_tree(src: &Path) -> io::Result<()> {
    use rustix::fs::{XattrFlags, setxattr};
    let _ = fs::remove_dir_all(src);
    fs::create_dir_all(src.join("d/e"))?;
    fs::write(src.join("empty"), b"")?;
    fs::write(src.join("small"), b"hello")?;
    fs::write(src.join("tail"), pattern(4096 + 100, 3))?;
    fs::write(src.join("d/blocks"), pattern(3 * 4096, 4))?;
    fs::write(src.join("d/e/deep"), b"deep")?;
    std::os::unix::fs::symlink("small", src.join("link"))?;
    std::os::unix::fs::symlink("../".repeat(30), src.join("d/longlink"))?;
    fs::create_dir(src.join("wide"))?;
    for i in 0..120 {
        fs::write(src.join(format!("wide/file-with-a-long-name-{i:03}")), b"")?;
    }
    let fifo = src.join("fifo");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o644),
        0,
    )?;
    for name in ["small", "tail", "d/blocks", "d/e/deep"] {
        setxattr(src.join(name), "user.shared", b"same", XattrFlags::empty())?;
    }
    setxattr(
        src.join("small"),
        "user.long",
        &pattern(300, 5),
        XattrFlags::empty(),
    )?;
    setxattr(src.join("d"), "user.dir", b"1", XattrFlags::empty())?;
    // trusted.* needs root; seeds are still useful without it.
    let _ = setxattr(
        src.join("tail"),
        "trusted.overlay.redirect",
        b"/aa/bb",
        XattrFlags::empty(),
    );
    Ok(())
}

/// Request scripts for the `requests` target's seeds: pseudo-random bytes (the target decodes
/// any bytes as a script), a few lengths and seeds so each view and many operations appear.
pub fn scripts() -> Vec<Vec<u8>> {
    [(64, 1u64), (512, 2), (2048, 3)]
        .into_iter()
        .map(|(len, seed)| {
            let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15);
            (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 32) as u8
                })
                .collect()
        })
        .collect()
}
