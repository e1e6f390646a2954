//! Differential check against the `composefs` crate's reader: whenever
//! `erofs_to_filesystem` + `write_dumpfile` accept an image (with file names a kernel mount
//! could list), `lazycfs::dump` must open it and
//! print the same text, byte for byte (as `tests/roundtrip.rs` compares them: no
//! normalisation of the output). A panic in the composefs reader counts as a rejection (not
//! lazycfs's bug) and is reported in the [`Outcome`].
//!
//! Where the composefs reader departs from the kernel on bytes no writer produces, lazycfs
//! follows the kernel, and the input is rewritten to the writers' value before both read it
//! (see [`without_known_differences`]); each such rule is listed there with its reason.
//!
//! Shared by `fuzz/fuzz_targets/differential.rs` and `tests/fuzz_replay.rs`.

#![allow(dead_code)]

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Once;

use composefs::dumpfile::write_dumpfile;
use composefs::erofs::reader::erofs_to_filesystem;
use composefs::fsverity::Sha256HashValue;
use composefs::tree::{Directory, Inode};
use lazycfs::dump::DumpError;
use lazycfs::erofs::format::{SYMLINK_MAX, inode_pos};
use lazycfs::erofs::{Corruption, Error, Extent, Image};

/// What one input did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The composefs reader refused the image (lazycfs is not asked).
    Rejected,
    /// The composefs reader accepted file names the kernel refuses to list (empty, over 255
    /// bytes, or with `/` or NUL: the kernel answers EIO, and lazycfs refuses them as
    /// corrupt); lazycfs is not asked.
    ReferenceInvalid,
    /// The composefs reader panicked, with this message and location.
    ReferencePanicked(String),
    /// The composefs reader accepted an inode lazycfs refuses on purpose
    /// ([`refused_on_purpose`]); with lazycfs's error.
    RefusedOnPurpose(String),
    /// The two disagree on an image `lazycfs check` refuses as corrupt (or lazycfs cannot
    /// open), with lazycfs's reason: not a finding. The property is for the images both
    /// readers take to be valid; every class of disagreement found on corrupt images so far
    /// was one the kernel refuses too ([`refused_on_purpose`]), and CI's short runs must fail
    /// only on a real discrepancy, not on the next such class.
    RefusedByCheck(String),
    /// Both read it and printed the same dumpfile.
    Same,
}

/// Why lazycfs takes `image` to be corrupt (it cannot open it, or `check` finds a problem);
/// `None` for an image it takes to be valid.
fn lazycfs_refuses(image: &[u8]) -> Option<String> {
    match Image::from_bytes(image.to_vec()) {
        Err(e) => Some(e.to_string()),
        Ok(parsed) => lazycfs::check::check(&parsed).err().map(|e| e.to_string()),
    }
}

/// Whether lazycfs refused the image for a reason of its own where composefs 0.9.4's reader
/// does not look (e.g. in the whiteout stubs it hides from its dump without decoding them):
///
/// - `i_format` bits no kernel defines: the kernel refuses them too (`erofs_read_inode`
///   answers EOPNOTSUPP); so does a superblock `dirblkbits` other than 0 (EINVAL);
/// - mtime nanoseconds of 10^9 or more: not a time; the kernel passes them on to `stat`,
///   lazycfs answers EIO for that inode (in the superblock's, which compact inodes take, it
///   refuses the image);
/// - a directory whose size ends inside a block's dirent array: the kernel's readdir answers
///   EFSCORRUPTED (`nameoff + namelen > maxsize`); composefs reads whole blocks;
/// - inline (tail-packed) data crossing a block boundary: the kernel's `erofs_map_blocks`
///   answers EFSCORRUPTED; composefs reads the bytes;
/// - an empty symlink target, or one of `PATH_MAX` bytes or more: lazycfs answers EIO for
///   it (composefs prints it; the kernel reads an empty one as empty, a long one up to a
///   page);
/// - a size over `i64::MAX`: negative as the kernel's `loff_t`; composefs prints it (for
///   files whose content is a basedir object, it reads nothing that would be out of range).
///
/// `image` is `None` when the error came from opening it.
fn refused_on_purpose(image: Option<&Image>, error: &Error) -> bool {
    let (nid, what) = match error {
        Error::Corrupt { nid, what } => (nid, what),
        Error::CorruptSuperblock(why) => {
            return matches!(*why, "nanoseconds out of range" | "dirblkbits is not 0");
        }
        _ => return false,
    };
    match (what, image) {
        (
            Corruption::UnknownFormatBits(_)
            | Corruption::BadNanoseconds
            | Corruption::SizeTooLarge
            | Corruption::InlineDataTooLong,
            _,
        ) => true,
        (Corruption::BadDirentNameoff, Some(image)) => size_cuts_dirents(image, *nid),
        (Corruption::BadSymlink, Some(image)) => {
            let size = image.inode(*nid).map_or(1, |inode| inode.size());
            size == 0 || size >= SYMLINK_MAX
        }
        _ => false,
    }
}

/// Whether directory `nid`'s size ends a block before the end of its dirent array (the
/// first dirent's name offset), or before the first dirent.
fn size_cuts_dirents(image: &Image, nid: u64) -> bool {
    let Ok(dir) = image.inode(nid) else {
        return false;
    };
    let block_size = image.superblock().block_size();
    let mut start = 0;
    while start < dir.size() {
        let len = (dir.size() - start).min(block_size);
        let Ok(Some(Extent::Data(data))) = dir.extent_at(start) else {
            return false;
        };
        match data.get(8..10) {
            Some(nameoff) if len >= 12 => {
                if u64::from(u16::from_le_bytes([nameoff[0], nameoff[1]])) > len {
                    return true;
                }
            }
            _ => return true,
        }
        start += block_size;
    }
    false
}

/// Runs the comparison; panics (a fuzzer finding) if lazycfs refuses or differs on an image
/// it takes to be valid.
pub fn run(image: &[u8]) -> Outcome {
    let image = &without_known_differences(image)[..];
    let reference = match quietly(|| reference_dump(image)) {
        Err(message) => return Outcome::ReferencePanicked(message),
        Ok(None) => return Outcome::Rejected,
        Ok(Some(None)) => return Outcome::ReferenceInvalid,
        Ok(Some(Some(text))) => text,
    };
    let parsed = match Image::from_bytes(image.to_vec()) {
        Ok(parsed) => parsed,
        Err(e) if refused_on_purpose(None, &e) => {
            return Outcome::RefusedOnPurpose(e.to_string());
        }
        Err(e) => match lazycfs_refuses(image) {
            Some(reason) => return Outcome::RefusedByCheck(reason),
            None => panic!("composefs reads the image, lazycfs refuses to open it: {e}"),
        },
    };
    let mut ours = Vec::new();
    if let Err(e) = lazycfs::dump::dump(&parsed, &mut ours) {
        let refused = match &e {
            DumpError::Image { source, .. } => refused_on_purpose(Some(&parsed), source),
            _ => false,
        };
        if refused {
            return Outcome::RefusedOnPurpose(e.to_string());
        }
        if let Some(reason) = lazycfs_refuses(image) {
            return Outcome::RefusedByCheck(reason);
        }
        panic!("composefs reads the image, lazycfs dump fails: {e}\ncomposefs:\n{reference}");
    }
    let ours = String::from_utf8_lossy(&ours);
    if ours != reference {
        if let Some(reason) = lazycfs_refuses(image) {
            return Outcome::RefusedByCheck(reason);
        }
        let line = ours
            .lines()
            .zip(reference.lines())
            .position(|(a, b)| a != b)
            .unwrap_or(ours.lines().count().min(reference.lines().count()));
        panic!(
            "lazycfs dump differs from composefs at line {}:\n  lazycfs:   {:?}\n  composefs: {:?}\n\
             lazycfs:\n{ours}composefs:\n{reference}",
            line + 1,
            ours.lines().nth(line),
            reference.lines().nth(line),
        );
    }
    Outcome::Same
}

/// `image` with the fields where composefs 0.9.4's reader and the kernel disagree set to what
/// the writers store, in every inode reached from the root:
///
/// - a compact inode's `i_mtime` (bytes 12..16, reserved in older formats): the kernel adds it
///   to the superblock epoch (`epoch + i_mtime`, as lazycfs); composefs gives every compact
///   inode the superblock's build time. Writers store 0, where both agree.
fn without_known_differences(image: &[u8]) -> Cow<'_, [u8]> {
    let Ok(parsed) = Image::from_bytes(image.to_vec()) else {
        return Cow::Borrowed(image);
    };
    let sb = parsed.superblock();
    let mut patched = Cow::Borrowed(image);
    let mut seen = HashSet::new();
    let mut pending = vec![parsed.root_nid()];
    while let Some(nid) = pending.pop() {
        if seen.len() >= 100_000 || !seen.insert(nid) {
            continue;
        }
        let Ok(inode) = parsed.inode(nid) else {
            continue;
        };
        let pos = inode_pos(sb.meta_blkaddr, sb.block_bits, nid)
            .and_then(|p| usize::try_from(p).ok())
            .filter(|p| p.checked_add(16).is_some_and(|end| end <= image.len()));
        if let Some(pos) = pos {
            let compact = image[pos] & 1 == 0;
            if compact && image[pos + 12..pos + 16] != [0; 4] {
                patched.to_mut()[pos + 12..pos + 16].fill(0);
            }
        }
        if let Ok(dir) = inode.dir() {
            let room = 1_000_000usize.saturating_sub(pending.len() + seen.len());
            pending.extend(dir.entries().take(room).flatten().map(|e| e.nid));
        }
    }
    patched
}

/// What composefs' reader prints, `None` if it refuses the image, `Some(None)` if it accepts
/// names no kernel lists.
fn reference_dump(image: &[u8]) -> Option<Option<String>> {
    let fs = erofs_to_filesystem::<Sha256HashValue>(image).ok()?;
    if !names_listable(&fs.root) {
        return Some(None);
    }
    let mut out = Vec::new();
    write_dumpfile(&mut out, &fs).ok()?;
    Some(Some(
        String::from_utf8(out).expect("composefs dumpfiles are ASCII"),
    ))
}

/// Whether every name in the tree is one the kernel's readdir passes on (the VFS refuses
/// empty names and names containing `/`; NUL would end the name; EROFS refuses names over
/// 255 bytes).
fn names_listable(root: &Directory<Sha256HashValue>) -> bool {
    let mut pending = vec![root];
    while let Some(dir) = pending.pop() {
        for (name, inode) in dir.entries() {
            let name = name.as_bytes();
            if name.is_empty() || name.len() > 255 || name.contains(&b'/') || name.contains(&0) {
                return false;
            }
            if let Inode::Directory(child) = inode {
                pending.push(child);
            }
        }
    }
    true
}

thread_local! {
    /// Set while the reference runs on this thread: its panics are expected and silent.
    static QUIET: Cell<bool> = const { Cell::new(false) };
    static LAST_PANIC: RefCell<String> = const { RefCell::new(String::new()) };
}

/// Runs `f`, turning a panic into `Err(message)` without printing it or letting a previously
/// installed hook act on it (libFuzzer's aborts the process). Other threads' panics, and this
/// thread's outside `f`, still reach the previous hook.
fn quietly<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if QUIET.with(Cell::get) {
                let message = info
                    .payload()
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| info.payload().downcast_ref::<String>().cloned())
                    .unwrap_or_default();
                let location = info.location().map(|l| l.to_string()).unwrap_or_default();
                LAST_PANIC.with(|p| *p.borrow_mut() = format!("{location}: {message}"));
            } else {
                previous(info);
            }
        }));
    });
    QUIET.with(|q| q.set(true));
    let result = catch_unwind(AssertUnwindSafe(f));
    QUIET.with(|q| q.set(false));
    result.map_err(|_| LAST_PANIC.with(|p| p.take()))
}
