//! Decoder features no writer available here produces, on images built byte by byte: long
//! xattr name prefixes, the xattr name bloom filter, `NLINK_1` and `DOT_OMITTED` inodes,
//! 48-bit/metabox images, epoch-relative compact mtimes, large device numbers, NULL_ADDR
//! holes, high start-block bits, and a directory chain deeper than `dump` follows.

mod common;
mod traverse;

use common::handmade::*;
use lazycfs::erofs::{Corruption, DataLayout, Error, Extent, Image};
use xxhash_rust::xxh32::xxh32;

/// Runs check, dump and the bounded walk: all must succeed on these well-formed images.
fn assert_clean(image: &Image) -> String {
    let summary = lazycfs::check::check(image).unwrap_or_else(|e| panic!("check: {e}"));
    let walk = traverse::walk(image);
    assert!(!walk.failed() && walk.consistent, "{walk:?}");
    let mut out = Vec::new();
    lazycfs::dump::dump(image, &mut out).unwrap_or_else(|e| panic!("dump: {e}"));
    let _ = summary;
    String::from_utf8(out).unwrap()
}

fn xattr_names(image: &Image, nid: u64) -> Vec<Vec<u8>> {
    let xattrs = image.inode(nid).unwrap().xattrs().unwrap();
    xattrs.iter().map(|x| x.unwrap().name.to_vec()).collect()
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn long_xattr_name_prefixes() {
    let mut img = Img::new(4);
    img.set_incompat(0x40); // XATTR_PREFIXES
    // The prefix table at an absolute offset (no packed inode): xattr_prefix_start * 4.
    let table_at = 3 * BS + 8;
    img.b[SB + 91] = 2; // xattr_prefix_count
    img.put32(SB + 92, (table_at / 4) as u32);
    let mut table = Vec::new();
    for (base, infix) in [(4u8, &b"overlay."[..]), (1, b"composefs.long-prefix.")] {
        table.extend_from_slice(&(1 + infix.len() as u16).to_le_bytes());
        table.push(base);
        table.extend_from_slice(infix);
        table.resize(table.len().next_multiple_of(4), 0);
    }
    img.put(table_at, &table);
    let xattrs = xattr_area(
        0,
        &[],
        &[
            (0x80, b"redirect", b"/ab/cdef"),
            (0x81, b"x", b"long value"),
            (0x81, b"", b"empty suffix"),
            (1, b"plain", b"short"),
        ],
    );
    img.dir(0, 0, &xattrs, &[(b".", 0, FT_DIR), (b"..", 0, FT_DIR)]);
    let image = img.open();
    let x = image.root().unwrap().xattrs().unwrap();
    assert_eq!(
        x.get(b"trusted.overlay.redirect").unwrap(),
        Some(&b"/ab/cdef"[..])
    );
    assert_eq!(
        x.get(b"user.composefs.long-prefix.x").unwrap(),
        Some(&b"long value"[..])
    );
    assert_eq!(
        x.get(b"user.composefs.long-prefix.").unwrap(),
        Some(&b"empty suffix"[..])
    );
    assert_eq!(x.get(b"user.plain").unwrap(), Some(&b"short"[..]));
    // Prefix, infix or suffix alone never match.
    for absent in [
        &b"trusted.redirect"[..],
        b"trusted.overlay.",
        b"user.composefs.long-prefix.y",
        b"user.x",
        b"trusted.overlay.redirectx",
        b"user.composefs.long-prefix",
    ] {
        assert_eq!(
            x.get(absent).unwrap(),
            None,
            "{}",
            String::from_utf8_lossy(absent)
        );
    }
    let first = x.iter().next().unwrap().unwrap();
    assert_eq!(first.name.index, 4);
    assert_eq!(first.name.infix, b"overlay.");
    assert_eq!(first.name.suffix, b"redirect");
    assert_eq!(
        xattr_names(&image, 0),
        [
            &b"trusted.overlay.redirect"[..],
            b"user.composefs.long-prefix.x",
            b"user.composefs.long-prefix.",
            b"user.plain",
        ]
    );
    let dump = assert_clean(&image);
    assert!(
        dump.contains(" user.composefs.long-prefix.x=long\\x20value"),
        "{dump}"
    );

    // An entry naming a prefix the table does not have.
    let mut bad = Img { b: img.b.clone() };
    let entry = Img::inode_at(0) + 32 + 12;
    bad.b[entry + 1] = 0x82;
    let image = bad.open();
    let x = image.root().unwrap().xattrs().unwrap();
    let e = x.iter().find_map(Result::err).unwrap();
    assert_eq!(
        e,
        Error::Corrupt {
            nid: 0,
            what: Corruption::BadXattrPrefix
        }
    );
    assert_eq!(lazycfs::check::check(&image).unwrap_err().error, e);

    // A table running past the end of the image, or too many prefixes.
    let mut bad = Img { b: img.b.clone() };
    bad.put32(SB + 92, (bad.b.len() / 4 - 1) as u32);
    assert!(matches!(
        Image::from_bytes(bad.b),
        Err(Error::CorruptSuperblock(_))
    ));
    let mut bad = Img { b: img.b.clone() };
    bad.b[SB + 91] = 200;
    assert!(matches!(
        Image::from_bytes(bad.b),
        Err(Error::CorruptSuperblock(_))
    ));
    // Without the feature bit, the table is ignored and long-prefix entries are errors.
    let mut bad = Img { b: img.b.clone() };
    bad.set_incompat(0);
    let image = bad.open();
    let x = image.root().unwrap().xattrs().unwrap();
    assert_eq!(
        x.get(b"trusted.overlay.redirect").unwrap_err(),
        Error::Corrupt {
            nid: 0,
            what: Corruption::BadXattrPrefix
        }
    );
}

#[test]
fn xattr_bloom_filter() {
    let present = b"present";
    let bit = filter_bit(1, present);
    let build = |compat: u32, filter: u32, reserved: u8| {
        let mut img = Img::new(2);
        img.set_compat(compat);
        img.b[SB + 104] = reserved; // xattr_filter_reserved
        let xattrs = xattr_area(filter, &[], &[(1, present, b"v"), (6, b"selinux", b"ctx")]);
        img.dir(0, 0, &xattrs, &[(b".", 0, FT_DIR), (b"..", 0, FT_DIR)]);
        img.open()
    };
    const XATTR_FILTER: u32 = 0x4;
    // The filter claims the present name absent: `get` believes it without scanning.
    let image = build(XATTR_FILTER, 1 << bit, 0);
    let x = image.root().unwrap().xattrs().unwrap();
    assert!(x.filtered_out(1, present));
    assert_eq!(x.get(b"user.present").unwrap(), None);
    // Listing does not consult the filter.
    assert_eq!(x.iter().count(), 2);
    assert_eq!(x.get(b"security.selinux").unwrap(), Some(&b"ctx"[..]));
    // Filter 0: nothing is provably absent.
    let image = build(XATTR_FILTER, 0, 0);
    let x = image.root().unwrap().xattrs().unwrap();
    assert_eq!(x.get(b"user.present").unwrap(), Some(&b"v"[..]));
    // Every other bit set: still found.
    let image = build(
        XATTR_FILTER,
        !(1 << bit) & !(1 << filter_bit(6, b"selinux")),
        0,
    );
    let x = image.root().unwrap().xattrs().unwrap();
    assert_eq!(x.get(b"user.present").unwrap(), Some(&b"v"[..]));
    assert_eq!(x.get(b"security.selinux").unwrap(), Some(&b"ctx"[..]));
    // The index is part of the seed: same rest, other namespace, other bit (usually).
    assert_eq!(x.get(b"trusted.present").unwrap(), None);
    // Without the compat bit, or with xattr_filter_reserved set, the filter is ignored.
    for image in [build(0, 1 << bit, 0), build(XATTR_FILTER, 1 << bit, 1)] {
        let x = image.root().unwrap().xattrs().unwrap();
        assert!(!x.filtered_out(1, present));
        assert_eq!(x.get(b"user.present").unwrap(), Some(&b"v"[..]));
    }
    // The hash is xxh32 (reference value of the empty input with seed 0).
    assert_eq!(xxh32(b"", 0), 0x02CC_5D05);
}

#[test]
fn nlink_1_compact_inodes() {
    let mut img = Img::new(2);
    img.dir(
        0,
        0,
        &[],
        &[
            (b".", 0, FT_DIR),
            (b"..", 0, FT_DIR),
            (b"counted", 8, FT_REG),
            (b"one", 12, FT_REG),
        ],
    );
    img.file(8, 0, &[], b"abc");
    // NLINK_1: i_nb is not a link count (here: 0, the start block's high bits).
    img.file(12, BIT4, &[], b"hello");
    img.put16(Img::inode_at(8) + 6, 7);
    let image = img.open();
    assert_eq!(image.inode(8).unwrap().nlink(), 7);
    let one = image.inode(12).unwrap();
    assert_eq!(one.nlink(), 1);
    let mut buf = [0; 5];
    assert_eq!(one.read_at(0, &mut buf).unwrap(), 5);
    assert_eq!(&buf, b"hello");
    assert_clean(&image);

    // With NLINK_1, a nonzero i_nb is a start block >= 2^32: out of range, not block `i_u`.
    let mut big = Img { b: img.b.clone() };
    big.compact(
        16,
        Compact {
            format: LAYOUT_FLAT_PLAIN | BIT4,
            mode: S_IFREG | 0o644,
            nb: 1,
            size: 10,
            u: 0, // block 0 exists: misreading it would "work"
            ..Compact::default()
        },
        &[],
    );
    let image = big.open();
    let inode = image.inode(16).unwrap();
    assert_eq!(inode.nlink(), 1);
    assert_eq!(
        inode.extent_at(0).unwrap_err(),
        Error::Corrupt {
            nid: 16,
            what: Corruption::DataOutOfRange
        }
    );
    // Without NLINK_1 the same i_nb is the link count and the data is block 0.
    big.put16(Img::inode_at(16), LAYOUT_FLAT_PLAIN);
    let image = big.open();
    let inode = image.inode(16).unwrap();
    assert_eq!(inode.nlink(), 1);
    assert!(matches!(inode.extent_at(0).unwrap(), Some(Extent::Data(d)) if d.len() == 10));
    // Extended inodes: i_nb is always the start block's high bits.
    let mut ext = Img { b: img.b.clone() };
    ext.extended(
        16,
        Extended {
            format: LAYOUT_FLAT_PLAIN,
            mode: S_IFREG | 0o644,
            nb: 1,
            size: 10,
            nlink: 3,
            ..Extended::default()
        },
        &[],
    );
    let image = ext.open();
    let inode = image.inode(16).unwrap();
    assert_eq!(inode.nlink(), 3);
    assert_eq!(
        corrupt(inode.extent_at(0).unwrap_err()),
        Corruption::DataOutOfRange
    );
}

fn corrupt(e: Error) -> Corruption {
    match e {
        Error::Corrupt { what, .. } => what,
        e => panic!("expected Corrupt, got {e:?}"),
    }
}

#[test]
fn dot_omitted_directory() {
    let mut img = Img::new(2);
    img.dir(
        0,
        0,
        &[],
        &[(b".", 0, FT_DIR), (b"..", 0, FT_DIR), (b"sub", 8, FT_DIR)],
    );
    // DOT_OMITTED: no `.` dirent on disk.
    img.dir(
        8,
        BIT4,
        &[],
        &[(b"..", 0, FT_DIR), (b"a", 16, FT_REG), (b"b", 20, FT_REG)],
    );
    img.file(16, 0, &[], b"a");
    img.file(20, BIT4, &[], b"b"); // NLINK_1 on a file next to it
    let image = img.open();
    let sub = image.inode(8).unwrap();
    assert_eq!(sub.nlink(), 2, "bit 4 on a directory is not NLINK_1");
    let dir = sub.dir().unwrap();
    let entries: Vec<_> = dir.entries().map(Result::unwrap).collect();
    let names: Vec<&[u8]> = entries.iter().map(|e| e.name).collect();
    assert_eq!(names, [&b".."[..], b"a", b"b", b"."]);
    let dot = entries[3];
    assert_eq!(dot.nid, 8);
    assert_eq!(dot.dtype(), 4);
    // `.` comes at position i_size, and resuming there yields just it.
    assert_eq!(entries[2].next_pos, sub.size());
    let resumed: Vec<_> = dir.entries_from(sub.size()).map(Result::unwrap).collect();
    assert_eq!(resumed, [dot]);
    assert_eq!(dir.entries_from(dot.next_pos).count(), 0);
    // Lookup only searches the dirents on disk (the VFS answers `.` itself).
    assert_eq!(dir.lookup(b"a").unwrap().unwrap().nid, 16);
    assert_eq!(dir.lookup(b"..").unwrap().unwrap().nid, 0);
    let summary = lazycfs::check::check(&image).unwrap();
    assert_eq!(summary.dirs, 2);
    let dump = assert_clean(&image);
    assert!(dump.contains("/sub/a 1 "), "{dump}");
    // The same directory with the bit cleared lacks `.`: check says so.
    let mut bad = Img { b: img.b.clone() };
    bad.put16(Img::inode_at(8), LAYOUT_FLAT_INLINE);
    let image = bad.open();
    let e = lazycfs::check::check(&image).unwrap_err();
    assert_eq!(
        e.error,
        Error::Corrupt {
            nid: 8,
            what: Corruption::BadDotEntry
        }
    );
}

#[test]
fn blocks_48bit_and_metabox_are_refused() {
    for (bits, name, bit) in [
        (0x80, "48bit", 0x80),
        (0x100, "metabox", 0x100),
        (0x180, "48bit", 0x80),
        (0x40 | 0x100, "metabox", 0x100),
    ] {
        let mut img = Img::new(2);
        img.dir(0, 0, &[], &[(b".", 0, FT_DIR), (b"..", 0, FT_DIR)]);
        img.set_incompat(bits);
        let e = Image::from_bytes(img.b).unwrap_err();
        assert_eq!(e, Error::UnsupportedFeature { name, bit });
        let msg = e.to_string();
        assert!(msg.contains(name) && msg.contains("unsupported"), "{msg}");
    }
}

#[test]
fn compact_mtime_is_relative_to_the_epoch() {
    let mut img = Img::new(2);
    img.put64(SB + 24, 1_700_000_000); // epoch
    img.put32(SB + 32, 123_456_789); // fixed_nsec
    img.dir(
        0,
        0,
        &[],
        &[
            (b".", 0, FT_DIR),
            (b"..", 0, FT_DIR),
            (b"f", 8, FT_REG),
            (b"g", 12, FT_REG),
        ],
    );
    img.file(8, 0, &[], b"x");
    img.put32(Img::inode_at(8) + 12, 86_400); // i_mtime
    img.extended(
        12,
        Extended {
            format: LAYOUT_FLAT_PLAIN,
            mode: S_IFREG | 0o600,
            mtime: 42,
            mtime_nsec: 7,
            nlink: 1,
            u: u32::MAX,
            ..Extended::default()
        },
        &[],
    );
    let image = img.open();
    assert_eq!(image.root().unwrap().mtime(), (1_700_000_000, 123_456_789));
    assert_eq!(
        image.inode(8).unwrap().mtime(),
        (1_700_086_400, 123_456_789)
    );
    // Extended inodes carry their own absolute mtime.
    assert_eq!(image.inode(12).unwrap().mtime(), (42, 7));
    let dump = assert_clean(&image);
    assert!(
        dump.contains("/f 1 100644 1 0 0 0 1700086400.123456789 "),
        "{dump}"
    );
    // The largest offset: epoch + u32::MAX.
    img.put32(Img::inode_at(8) + 12, u32::MAX);
    let image = img.open();
    assert_eq!(
        image.inode(8).unwrap().mtime().0,
        1_700_000_000 + i64::from(u32::MAX)
    );
}

#[test]
fn large_device_numbers() {
    // new_encode_dev(major, minor)
    let encode = |major: u32, minor: u32| (minor & 0xff) | (major << 8) | ((minor & !0xff) << 12);
    let cases = [
        (259u32, 1_048_575u32),
        (1, 3),
        (4095, 1_048_575),
        (0, 0),
        (8, 256),
    ];
    let mut img = Img::new(2);
    let mut entries = vec![(&b"."[..], 0, FT_DIR), (&b".."[..], 0, FT_DIR)];
    let names: Vec<Vec<u8>> = (0..cases.len())
        .map(|i| format!("dev{i}").into_bytes())
        .collect();
    for (i, name) in names.iter().enumerate() {
        entries.push((
            name.as_slice(),
            8 + i as u64,
            if i % 2 == 0 { FT_CHR } else { FT_BLK },
        ));
    }
    img.dir(0, 0, &[], &entries);
    for (i, &(major, minor)) in cases.iter().enumerate() {
        img.compact(
            8 + i as u64,
            Compact {
                mode: if i % 2 == 0 { S_IFCHR } else { S_IFBLK } | 0o600,
                nb: 1,
                u: encode(major, minor),
                ..Compact::default()
            },
            &[],
        );
    }
    assert_eq!(encode(259, 1_048_575), 0xfff1_03ff);
    let image = img.open();
    for (i, &(major, minor)) in cases.iter().enumerate() {
        let inode = image.inode(8 + i as u64).unwrap();
        assert_eq!(inode.rdev(), (major, minor));
        assert_eq!(inode.rdev_raw(), encode(major, minor));
        assert_eq!(inode.rdev_t(), rustix::fs::makedev(major, minor));
        assert_eq!(rustix::fs::major(inode.rdev_t()), major);
        assert_eq!(rustix::fs::minor(inode.rdev_t()), minor);
    }
    let dump = assert_clean(&image);
    assert!(dump.contains(&format!(" {} ", 0xfff1_03ffu32)), "{dump}");
}

#[test]
fn flat_plain_null_addr_is_a_hole() {
    let mut img = Img::new(2);
    img.dir(
        0,
        0,
        &[],
        &[
            (b".", 0, FT_DIR),
            (b"..", 0, FT_DIR),
            (b"hole", 8, FT_REG),
            (b"xhole", 12, FT_REG),
        ],
    );
    img.compact(
        8,
        Compact {
            format: LAYOUT_FLAT_PLAIN,
            mode: S_IFREG | 0o644,
            nb: 1,
            size: 10_000,
            u: u32::MAX,
            ..Compact::default()
        },
        &[],
    );
    // An extended inode with the 48-bit writers' NULL (high bits all ones).
    img.extended(
        12,
        Extended {
            format: LAYOUT_FLAT_PLAIN,
            mode: S_IFREG | 0o644,
            nb: u16::MAX,
            size: 1 << 40,
            u: u32::MAX,
            nlink: 1,
            ..Extended::default()
        },
        &[],
    );
    let image = img.open();
    let hole = image.inode(8).unwrap();
    assert_eq!(hole.layout(), DataLayout::FlatPlain);
    assert_eq!(hole.extent_at(0).unwrap(), Some(Extent::Hole(10_000)));
    assert_eq!(hole.extent_at(9_999).unwrap(), Some(Extent::Hole(1)));
    assert_eq!(hole.extent_at(10_000).unwrap(), None);
    let mut buf = vec![0xaa; 12_000];
    assert_eq!(hole.read_at(0, &mut buf).unwrap(), 10_000);
    assert!(buf[..10_000].iter().all(|&b| b == 0));
    assert!(buf[10_000..].iter().all(|&b| b == 0xaa));
    let big = image.inode(12).unwrap();
    assert_eq!(big.extent_at(5).unwrap(), Some(Extent::Hole((1 << 40) - 5)));
    assert_clean(&image);
}

#[test]
fn deep_directory_chain_is_bounded() {
    // d/d/d/... deeper than dump's limit: check and the walk go through (iteratively), dump
    // refuses with TooDeep instead of overflowing the stack.
    const DEPTH: u64 = 2100;
    let per = 4; // inode slots per directory (32 + 38 bytes of dirents)
    let mut img = Img::new(META_BLK + 1 + (DEPTH as usize * per as usize * 32).div_ceil(BS));
    let nid = |level: u64| level * per;
    for level in 0..=DEPTH {
        let parent = nid(level.saturating_sub(1));
        let mut entries = vec![
            (&b"."[..], nid(level), FT_DIR),
            (&b".."[..], parent, FT_DIR),
        ];
        if level < DEPTH {
            entries.push((&b"d"[..], nid(level + 1), FT_DIR));
        }
        img.dir(nid(level), 0, &[], &entries);
    }
    let image = img.open();
    let summary = lazycfs::check::check(&image).unwrap();
    assert_eq!(summary.dirs, DEPTH + 1);
    let walk = traverse::walk(&image);
    assert_eq!(walk.dirs as u64, DEPTH + 1);
    assert_eq!(walk.error_count, 0);
    // Dump runs on a thread with the default test stack; it must fail cleanly.
    let e = std::thread::spawn(move || {
        lazycfs::dump::dump(&image, &mut Vec::new())
            .unwrap_err()
            .to_string()
    })
    .join()
    .expect("dump did not overflow its stack");
    assert!(e.contains("too deep"), "{e}");
}
