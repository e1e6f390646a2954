//! A bounded, exhaustive walk of an image through every public decoder entry point, shared by
//! `tests/corruption.rs` and the fuzz target (`fuzz/fuzz_targets/decode.rs`, via `#[path]`).
//!
//! On a hostile image it must never panic and must finish: every directory is visited once
//! (visited set), every iterator is checked to make progress, and reads are capped. It records
//! the decoder errors it meets instead of asserting semantics, since corrupt images may
//! legitimately give inconsistent answers (e.g. lookup missing an entry of an unsorted dir).

#![allow(dead_code)]

use std::collections::HashSet;

use lazycfs::erofs::{Error, FileType, Image, Inode};

/// Upper bound on anything one iterator may yield: far above what a fixture holds, and a
/// failed `assert!` (not a hang) if a decoder iterator ever stops making progress.
const MAX_ITEMS: usize = 1 << 22;
/// Bytes read through `read_at` per file, and in total.
const READ_PER_FILE: u64 = 1 << 20;
const READ_TOTAL: u64 = 64 << 20;
/// Xattr `get` calls per inode (each is a linear scan).
const GETS_PER_INODE: usize = 64;

/// What a walk saw.
#[derive(Debug, Default)]
pub struct Walk {
    /// Decoder errors met, in order (only the first few are kept).
    pub errors: Vec<Error>,
    /// Number of decoder errors met.
    pub error_count: usize,
    /// Directories, inodes and entries visited.
    pub dirs: usize,
    pub inodes: usize,
    pub entries: usize,
    /// Whether `check` and `dump` succeeded.
    pub check_ok: bool,
    pub dump_ok: bool,
    /// Whether lookup/readdir/xattr answers were mutually consistent (always expected on
    /// valid images, not on corrupt ones).
    pub consistent: bool,
}

impl Walk {
    fn err(&mut self, e: Error) {
        self.error_count += 1;
        if self.errors.len() < 8 {
            self.errors.push(e);
        }
    }

    /// Whether anything failed: a decoder error, `check` or `dump`.
    pub fn failed(&self) -> bool {
        self.error_count > 0 || !self.check_ok || !self.dump_ok
    }
}

/// Opens `bytes` and walks it; `Err` if the image does not open.
pub fn open_and_walk(bytes: &[u8]) -> Result<Walk, Error> {
    let image = Image::from_bytes(bytes.to_vec())?;
    Ok(walk(&image))
}

/// Walks everything: the manual traversal, then `check`, then `dump`.
pub fn walk(image: &Image) -> Walk {
    let mut w = Walk {
        consistent: true,
        ..Walk::default()
    };
    traverse(image, &mut w);
    w.check_ok = lazycfs::check::check(image).is_ok();
    let mut out = Vec::new();
    w.dump_ok = lazycfs::dump::dump(image, &mut out).is_ok();
    w
}

macro_rules! tri {
    ($w:expr, $e:expr) => {
        match $e {
            Ok(v) => v,
            Err(e) => {
                $w.err(e);
                continue;
            }
        }
    };
}

fn traverse(image: &Image, w: &mut Walk) {
    let sb = image.superblock();
    let _ = (sb.block_size(), image.composefs(), image.bytes().len());
    let mut seen_dirs = HashSet::new();
    let mut seen_inodes = HashSet::new();
    let mut reader = Reader {
        budget: READ_TOTAL,
        buf: vec![0; 64 << 10],
    };
    let mut pending = vec![image.root_nid()];
    seen_dirs.insert(image.root_nid());
    while let Some(nid) = pending.pop() {
        let inode = tri!(w, image.inode(nid));
        w.dirs += 1;
        if seen_inodes.insert(nid) {
            visit_inode(&inode, w, &mut reader);
        }
        let dir = tri!(w, inode.dir());
        let entries: Vec<_> = dir.entries().take(MAX_ITEMS).collect();
        assert!(
            entries.len() < MAX_ITEMS,
            "readdir of nid {nid} does not end"
        );
        let mut previous_next_pos = 0;
        for (i, entry) in entries.iter().enumerate() {
            let entry = tri!(w, *entry);
            w.entries += 1;
            assert!(
                i == 0 || entry.next_pos > previous_next_pos,
                "readdir position of nid {nid} does not advance"
            );
            previous_next_pos = entry.next_pos;
            let _ = (entry.dtype(), FileType::from_dirent(entry.file_type));
            // Resuming at every position yields the entry that followed it.
            let mut resumed = dir.entries_from(entry.next_pos);
            let _ = resumed.position();
            let following = resumed.next();
            match (entries.get(i + 1), following) {
                (Some(Ok(a)), Some(Ok(b))) if *a != b => w.consistent = false,
                (None, Some(Ok(_))) => w.consistent = false,
                _ => {}
            }
            // An arbitrary position inside the dirent also works (rounds up).
            if let Some(r) = dir.entries_from(entry.next_pos.saturating_sub(5)).next() {
                let _ = r.map_err(|e| w.err(e));
            }
            // Binary search finds the same entry (synthesized `.` is not on disk).
            if entry.next_pos <= inode.size() {
                match dir.lookup(entry.name) {
                    Ok(Some(found)) if found.nid != entry.nid => w.consistent = false,
                    Ok(Some(_)) => {}
                    Ok(None) => w.consistent = false,
                    Err(e) => w.err(e),
                }
            }
            if entry.name == b"." || entry.name == b".." {
                continue;
            }
            let child = tri!(w, image.inode(entry.nid));
            if child.is_dir() {
                if seen_dirs.insert(entry.nid) {
                    pending.push(entry.nid);
                }
            } else if seen_inodes.insert(entry.nid) {
                visit_inode(&child, w, &mut reader);
            }
        }
        for name in [&b""[..], b"\xff\xff", b"zzzz-not-there", b"0", &[b'a'; 300]] {
            if let Err(e) = dir.lookup(name) {
                w.err(e);
            }
        }
        // Positions past the end and in the middle of nowhere.
        for pos in [inode.size(), inode.size() + 1, u64::MAX, 7] {
            let n = dir.entries_from(pos).take(MAX_ITEMS).count();
            assert!(
                n < MAX_ITEMS,
                "readdir of nid {nid} from {pos} does not end"
            );
        }
    }
}

/// `read_at` state shared by the whole walk: one buffer, one byte budget.
struct Reader {
    budget: u64,
    buf: Vec<u8>,
}

fn visit_inode(inode: &Inode<'_>, w: &mut Walk, reader: &mut Reader) {
    w.inodes += 1;
    let _ = (
        inode.mode(),
        inode.nlink(),
        inode.uid(),
        inode.gid(),
        inode.mtime(),
        inode.rdev(),
        inode.rdev_t(),
        inode.rdev_raw(),
        inode.stored_ino(),
        inode.layout(),
        format!("{inode:?}"),
    );
    visit_xattrs(inode, w);
    match inode.file_type() {
        FileType::Symlink => {
            if let Err(e) = inode.symlink_target() {
                w.err(e);
            }
        }
        FileType::Regular | FileType::Directory => visit_data(inode, w, reader),
        _ => {}
    }
}

fn visit_xattrs(inode: &Inode<'_>, w: &mut Walk) {
    let xattrs = match inode.xattrs() {
        Ok(x) => x,
        Err(e) => return w.err(e),
    };
    let _ = xattrs.is_empty();
    let mut names = Vec::new();
    let mut count = 0;
    for x in xattrs.iter() {
        count += 1;
        assert!(
            count < MAX_ITEMS,
            "xattr iteration of nid {} does not end",
            inode.nid()
        );
        match x {
            Ok(x) => {
                let _ = (x.name.len(), x.name.prefix(), x.name.parts());
                if names.len() < GETS_PER_INODE {
                    names.push((x.name.to_vec(), x.value));
                }
            }
            Err(e) => w.err(e),
        }
    }
    for (name, value) in names {
        if name.is_empty() {
            continue;
        }
        match xattrs.get(&name) {
            // Duplicate names may legitimately answer another value.
            Ok(Some(_)) => {}
            Ok(None) => w.consistent = false,
            Err(e) => w.err(e),
        }
        let _ = value;
    }
    for name in [
        &b"user.nope"[..],
        b"trusted.overlay.redirect",
        b"security.selinux",
        b"bogus",
        b"",
    ] {
        if let Err(e) = xattrs.get(name) {
            w.err(e);
        }
    }
}

fn visit_data(inode: &Inode<'_>, w: &mut Walk, reader: &mut Reader) {
    let size = inode.size();
    let _ = inode.contiguous_data().map_err(|e| w.err(e));
    // Extent walk: bounded because every extent is non-empty and maps to image bytes or a
    // chunk index inside the image.
    let mut offset = 0u64;
    let mut n = 0;
    for extent in inode.extents_from(0) {
        n += 1;
        assert!(n < MAX_ITEMS, "extents of nid {} do not end", inode.nid());
        match extent {
            Ok(e) => {
                assert!(!e.is_empty(), "empty extent in nid {}", inode.nid());
                offset += e.len();
                if offset > size {
                    w.consistent = false;
                }
            }
            Err(e) => {
                w.err(e);
                break;
            }
        }
    }
    // Reads at the start, around the middle and at the end, within a budget.
    for start in [
        0,
        size / 2,
        size.saturating_sub(100),
        size,
        size.saturating_add(1),
    ] {
        let mut pos = start;
        let end = start.saturating_add(READ_PER_FILE / 4).min(size);
        while pos < end && reader.budget > 0 {
            let want = ((end - pos) as usize).min(reader.buf.len());
            match inode.read_at(pos, &mut reader.buf[..want]) {
                Ok(0) => break,
                Ok(got) => {
                    assert!(got <= want);
                    pos += got as u64;
                    reader.budget = reader.budget.saturating_sub(got as u64);
                }
                Err(e) => {
                    w.err(e);
                    break;
                }
            }
        }
    }
    for offset in [size.saturating_sub(1), u64::MAX, i64::MAX as u64] {
        if let Err(e) = inode.extent_at(offset) {
            w.err(e);
        }
    }
}
