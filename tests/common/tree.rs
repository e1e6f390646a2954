//! Snapshot of a mounted tree as seen through POSIX syscalls, for
//! field-by-field comparison between two views of the same image (kernel
//! EROFS, our FUSE server, the source directory, ...).

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{Dir, FileType, Mode, OFlags};

/// `S_IFMT` and friends (st_mode file-type bits).
pub const S_IFMT: u32 = 0o170000;
pub const S_IFSOCK: u32 = 0o140000;
pub const S_IFLNK: u32 = 0o120000;
pub const S_IFREG: u32 = 0o100000;
pub const S_IFBLK: u32 = 0o060000;
pub const S_IFDIR: u32 = 0o040000;
pub const S_IFCHR: u32 = 0o020000;
pub const S_IFIFO: u32 = 0o010000;

/// `d_type` values from `<dirent.h>`.
pub const DT_UNKNOWN: u8 = 0;
pub const DT_FIFO: u8 = 1;
pub const DT_CHR: u8 = 2;
pub const DT_DIR: u8 = 4;
pub const DT_BLK: u8 = 6;
pub const DT_REG: u8 = 8;
pub const DT_LNK: u8 = 10;
pub const DT_SOCK: u8 = 12;

/// Regular files are compared on their first `CONTENT_LIMIT` bytes (sparse composefs files
/// can be petabytes of holes).
pub const CONTENT_LIMIT: u64 = 4 << 20;

/// Recorded as the value of an xattr that is listed but cannot be read.
pub const UNREADABLE_XATTR: &[u8] = b"<listed, reads as ENODATA>";

/// Recorded as the value of an xattr whose read fails with `errno`.
pub fn xattr_error(errno: i32) -> Vec<u8> {
    format!("<errno {errno}>").into_bytes()
}

/// One filesystem entry as observed through `lstat`, `readlink`,
/// `llistxattr`/`lgetxattr`, `read` and `getdents`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Path relative to the walked root: `/` for the root, `/a/b` below it.
    pub path: Vec<u8>,
    pub ino: u64,
    /// Full `st_mode`, including the file-type bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub nlink: u64,
    pub mtime: i64,
    pub mtime_nsec: u32,
    pub rdev_major: u32,
    pub rdev_minor: u32,
    /// Symlink target (symlinks only).
    pub symlink: Option<Vec<u8>>,
    /// All extended attributes (every namespace the caller may see), sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    /// Whole content (regular files only).
    pub content: Option<Vec<u8>>,
    /// Directory entries without `.`/`..`, with raw `d_type`, sorted by name
    /// (directories only).
    pub children: Option<Vec<(Vec<u8>, u8)>>,
}

impl Entry {
    /// File-type bits of `mode` (`mode & S_IFMT`).
    pub fn file_type(&self) -> u32 {
        self.mode & S_IFMT
    }

    pub fn is_dir(&self) -> bool {
        self.file_type() == S_IFDIR
    }

    pub fn is_reg(&self) -> bool {
        self.file_type() == S_IFREG
    }

    pub fn is_symlink(&self) -> bool {
        self.file_type() == S_IFLNK
    }

    /// Value of xattr `name`, if present.
    pub fn xattr(&self, name: &[u8]) -> Option<&[u8]> {
        self.xattrs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }
}

/// Finds the entry with relative path `path` (e.g. `b"/a/b"`) in a sorted walk.
pub fn find<'a>(entries: &'a [Entry], path: &[u8]) -> Option<&'a Entry> {
    entries
        .binary_search_by(|e| e.path.as_slice().cmp(path))
        .ok()
        .map(|i| &entries[i])
}

/// Like [`find`] but panics with a helpful message when missing.
pub fn get<'a>(entries: &'a [Entry], path: &[u8]) -> &'a Entry {
    find(entries, path).unwrap_or_else(|| panic!("no entry \"{}\" in walk", esc(path)))
}

/// The `d_type` that an entry with st_mode `mode` should have.
pub fn dtype_of_mode(mode: u32) -> u8 {
    match mode & S_IFMT {
        S_IFIFO => DT_FIFO,
        S_IFCHR => DT_CHR,
        S_IFDIR => DT_DIR,
        S_IFBLK => DT_BLK,
        S_IFREG => DT_REG,
        S_IFLNK => DT_LNK,
        S_IFSOCK => DT_SOCK,
        _ => DT_UNKNOWN,
    }
}

fn dtype_of_filetype(ft: FileType) -> u8 {
    match ft {
        FileType::Fifo => DT_FIFO,
        FileType::CharacterDevice => DT_CHR,
        FileType::Directory => DT_DIR,
        FileType::BlockDevice => DT_BLK,
        FileType::RegularFile => DT_REG,
        FileType::Symlink => DT_LNK,
        FileType::Socket => DT_SOCK,
        _ => DT_UNKNOWN,
    }
}

/// The record of an entry whose lstat fails with `errno`.
pub fn unreachable_entry(path: Vec<u8>, errno: i32) -> Entry {
    Entry {
        path,
        ino: 0,
        mode: 0,
        uid: 0,
        gid: 0,
        size: 0,
        nlink: 0,
        mtime: 0,
        mtime_nsec: 0,
        rdev_major: 0,
        rdev_minor: 0,
        symlink: None,
        xattrs: vec![(b"<lstat>".to_vec(), xattr_error(errno))],
        content: None,
        children: None,
    }
}

/// Walks the tree under `root` (which is itself reported as `/`) without
/// following symlinks and returns all entries sorted by (byte-wise) path.
///
/// Panics with context on any I/O error: this is test support code.
pub fn walk(root: &Path) -> Vec<Entry> {
    walk_tolerating(root, &[])
}

/// [`walk`] for an unprivileged walker: an entry whose reading fails with one of `errnos`
/// (e.g. EACCES for a 0700 directory of another user) is recorded by path and errno alone,
/// as entries lstat refuses are.
pub fn walk_tolerating(root: &Path, errnos: &[i32]) -> Vec<Entry> {
    let mut out = Vec::new();
    walk_rec(root, b"/".to_vec(), &mut out, errnos);
    out.sort_by(|a, b| a.path.cmp(&b.path));
    out
}

fn walk_rec(abs: &Path, rel: Vec<u8>, out: &mut Vec<Entry>, tolerated: &[i32]) {
    // An entry listed by readdir but refused by lstat (EIO) is recorded by path alone.
    let entry = match read_entry(abs, rel.clone()) {
        Ok(entry) => entry,
        // (overlayfs lists whiteouts in lower directories but lookup says ENOENT.)
        Err(e)
            if matches!(e.raw_os_error(), Some(5) | Some(2))
                || e.raw_os_error()
                    .is_some_and(|errno| tolerated.contains(&errno)) =>
        {
            out.push(unreachable_entry(rel, e.raw_os_error().unwrap()));
            return;
        }
        Err(e) => panic!("walk {}: {e}", abs.display()),
    };
    let children: Vec<Vec<u8>> = entry
        .children
        .as_ref()
        .map(|c| c.iter().map(|(n, _)| n.clone()).collect())
        .unwrap_or_default();
    let rel = entry.path.clone();
    out.push(entry);
    for name in children {
        let child_abs = abs.join(OsStr::from_bytes(&name));
        let mut child_rel = rel.clone();
        if child_rel != b"/" {
            child_rel.push(b'/');
        }
        child_rel.extend_from_slice(&name);
        walk_rec(&child_abs, child_rel, out, tolerated);
    }
}

/// Reads a single entry (no recursion). `rel` is stored as its path.
pub fn read_entry(abs: &Path, rel: Vec<u8>) -> io::Result<Entry> {
    let md = std::fs::symlink_metadata(abs)?;
    let mode = md.mode();
    let rdev = md.rdev();
    let ft = mode & S_IFMT;
    let symlink = if ft == S_IFLNK {
        Some(std::fs::read_link(abs)?.into_os_string().into_vec())
    } else {
        None
    };
    let content = if ft == S_IFREG {
        // A file whose data the filesystem refuses (EIO, or ENOENT from an overlay whose
        // object is missing) is recorded as `None`: the comparison decides whether both
        // sides refusing it is expected. (Returned as an error, it would pass for an entry
        // lstat refuses, which the walk records by path alone.)
        let mut buf = Vec::new();
        let refused = |e: &io::Error| {
            [rustix::io::Errno::IO, rustix::io::Errno::NOENT]
                .iter()
                .any(|errno| e.raw_os_error() == Some(errno.raw_os_error()))
        };
        match std::fs::File::open(abs).and_then(|f| f.take(CONTENT_LIMIT).read_to_end(&mut buf)) {
            Ok(_) => Some(buf),
            Err(e) if refused(&e) => None,
            Err(e) => return Err(e),
        }
    } else {
        None
    };
    let children = if ft == S_IFDIR {
        Some(read_dir_raw(abs)?)
    } else {
        None
    };
    Ok(Entry {
        path: rel,
        ino: md.ino(),
        mode,
        uid: md.uid(),
        gid: md.gid(),
        size: md.size(),
        nlink: md.nlink(),
        mtime: md.mtime(),
        mtime_nsec: md.mtime_nsec() as u32,
        rdev_major: rustix::fs::major(rdev),
        rdev_minor: rustix::fs::minor(rdev),
        symlink,
        xattrs: read_xattrs(abs)?,
        content,
        children,
    })
}

/// `getdents64` of a directory: names (without `.`/`..`) with raw `d_type`
/// (`DT_UNKNOWN` is preserved, not resolved through `lstat`), sorted by name.
pub fn read_dir_raw(abs: &Path) -> io::Result<Vec<(Vec<u8>, u8)>> {
    let fd = rustix::fs::open(
        abs,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let dir = Dir::read_from(&fd)?;
    let mut out = Vec::new();
    for ent in dir {
        let ent = ent?;
        let name = ent.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        out.push((name.to_vec(), dtype_of_filetype(ent.file_type())));
    }
    out.sort();
    Ok(out)
}

/// All xattrs of `abs` (not following symlinks), sorted by name.
/// Filesystems without xattr support yield an empty list.
pub fn read_xattrs(abs: &Path) -> io::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    let list = loop {
        let size = match rustix::fs::llistxattr_query(abs) {
            Ok(s) => s,
            Err(rustix::io::Errno::OPNOTSUPP) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        if size == 0 {
            return Ok(Vec::new());
        }
        // Slack in case an attribute is added between the two calls.
        let mut buf = vec![0u8; size + 256];
        match rustix::fs::llistxattr(abs, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                break buf;
            }
            Err(rustix::io::Errno::RANGE) => continue,
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = Vec::new();
    for name in list.split(|&b| b == 0).filter(|n| !n.is_empty()) {
        // The VFS lists `user.*` xattrs of symlinks and special files but refuses to read them
        // (ENODATA); such values are recorded as UNREADABLE_XATTR.
        // Other read errors (e.g. EINVAL for a malformed ACL) are recorded as `<errno N>`.
        let value = match read_xattr(abs, name) {
            Ok(v) => v.unwrap_or_else(|| UNREADABLE_XATTR.to_vec()),
            Err(e) => xattr_error(e.raw_os_error().unwrap_or(0)),
        };
        out.push((name.to_vec(), value));
    }
    out.sort();
    Ok(out)
}

/// One xattr value (not following symlinks); `None` if it does not exist.
pub fn read_xattr(abs: &Path, name: &[u8]) -> io::Result<Option<Vec<u8>>> {
    let name = OsStr::from_bytes(name);
    loop {
        let size = match rustix::fs::lgetxattr_query(abs, name) {
            Ok(s) => s,
            Err(rustix::io::Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        if size == 0 {
            return Ok(Some(Vec::new()));
        }
        let mut buf = vec![0u8; size];
        match rustix::fs::lgetxattr(abs, name, &mut buf[..]) {
            Ok(n) => {
                buf.truncate(n);
                return Ok(Some(buf));
            }
            // Grew between the two calls: probe again.
            Err(rustix::io::Errno::RANGE) => continue,
            Err(rustix::io::Errno::NODATA) => return Ok(None),
            Err(e) => return Err(e.into()),
        }
    }
}

/// Which fields [`compare_with`] checks besides the always-compared ones.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompareOptions {
    /// Compare raw `st_ino` values. When false, only the *hardlink
    /// structure* is checked: two entries share an inode number in `a`
    /// iff the corresponding entries share one in `b` (this also catches
    /// inode-number collisions between unrelated entries).
    pub ino: bool,
    /// Compare whole regular-file contents.
    pub content: bool,
    /// Regular files that both sides refuse to read (EIO, ENOENT) agree. Otherwise that is a
    /// difference: two mounts missing the same objects would agree on every file.
    pub both_unreadable: bool,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions {
            ino: true,
            content: true,
            both_unreadable: false,
        }
    }
}

/// [`compare_with`] with everything enabled.
pub fn compare(a: &[Entry], b: &[Entry]) -> Result<(), String> {
    compare_with(a, b, CompareOptions::default())
}

/// Compares two sorted walks and describes the FIRST difference (in path
/// order, then field order) precisely.
pub fn compare_with(a: &[Entry], b: &[Entry], opts: CompareOptions) -> Result<(), String> {
    let (mut i, mut j) = (0, 0);
    // ino in a -> (ino in b, first path), and the reverse.
    let mut a2b: HashMap<u64, (u64, Vec<u8>)> = HashMap::new();
    let mut b2a: HashMap<u64, (u64, Vec<u8>)> = HashMap::new();
    while i < a.len() || j < b.len() {
        match (a.get(i), b.get(j)) {
            (Some(x), Some(y)) if x.path == y.path => {
                compare_entry(x, y, opts)?;
                if !opts.ino {
                    check_ino_map(&mut a2b, x, y, "a", "b")?;
                    check_ino_map(&mut b2a, y, x, "b", "a")?;
                }
                i += 1;
                j += 1;
            }
            (Some(x), y) if y.is_none_or(|y| x.path < y.path) => {
                return Err(format!(
                    "{}: present in a but missing in b (a: {})",
                    esc(&x.path),
                    summary(x)
                ));
            }
            (_, Some(y)) => {
                return Err(format!(
                    "{}: present in b but missing in a (b: {})",
                    esc(&y.path),
                    summary(y)
                ));
            }
            (Some(_), None) | (None, None) => unreachable!(),
        }
    }
    Ok(())
}

fn check_ino_map(
    map: &mut HashMap<u64, (u64, Vec<u8>)>,
    x: &Entry,
    y: &Entry,
    xn: &str,
    yn: &str,
) -> Result<(), String> {
    match map.get(&x.ino) {
        None => {
            map.insert(x.ino, (y.ino, x.path.clone()));
            Ok(())
        }
        Some((other_y_ino, first)) if *other_y_ino != y.ino => Err(format!(
            "{}: hardlink structure differs: shares st_ino {} with {} in {xn}, \
             but in {yn} their st_ino are {} and {}",
            esc(&x.path),
            x.ino,
            esc(first),
            y.ino,
            other_y_ino
        )),
        Some(_) => Ok(()),
    }
}

fn summary(e: &Entry) -> String {
    format!(
        "mode={:o} size={} nlink={} ino={}",
        e.mode, e.size, e.nlink, e.ino
    )
}

fn field<T: PartialEq + std::fmt::Display>(
    path: &[u8],
    name: &str,
    a: T,
    b: T,
) -> Result<(), String> {
    if a == b {
        Ok(())
    } else {
        Err(format!("{}: field {name} differs: a={a} b={b}", esc(path)))
    }
}

fn compare_entry(a: &Entry, b: &Entry, opts: CompareOptions) -> Result<(), String> {
    let p = &a.path;
    if a.file_type() != b.file_type() {
        return Err(format!(
            "{}: field mode (file type) differs: a={:o} b={:o}",
            esc(p),
            a.mode,
            b.mode
        ));
    }
    if a.mode != b.mode {
        return Err(format!(
            "{}: field mode differs: a={:o} b={:o}",
            esc(p),
            a.mode,
            b.mode
        ));
    }
    field(p, "uid", a.uid, b.uid)?;
    field(p, "gid", a.gid, b.gid)?;
    field(p, "size", a.size, b.size)?;
    field(p, "nlink", a.nlink, b.nlink)?;
    field(p, "mtime", a.mtime, b.mtime)?;
    field(p, "mtime_nsec", a.mtime_nsec, b.mtime_nsec)?;
    field(p, "rdev_major", a.rdev_major, b.rdev_major)?;
    field(p, "rdev_minor", a.rdev_minor, b.rdev_minor)?;
    if a.symlink != b.symlink {
        return Err(format!(
            "{}: field symlink differs: a={} b={}",
            esc(p),
            opt_bytes(&a.symlink),
            opt_bytes(&b.symlink)
        ));
    }
    compare_xattrs(p, &a.xattrs, &b.xattrs)?;
    compare_children(p, &a.children, &b.children)?;
    if opts.content {
        let unreadable_allowed = opts.both_unreadable || a.mode & S_IFMT != S_IFREG;
        compare_content(p, &a.content, &b.content, unreadable_allowed)?;
    }
    if opts.ino {
        field(p, "ino", a.ino, b.ino)?;
    }
    Ok(())
}

fn compare_xattrs(
    p: &[u8],
    a: &[(Vec<u8>, Vec<u8>)],
    b: &[(Vec<u8>, Vec<u8>)],
) -> Result<(), String> {
    let names = |v: &[(Vec<u8>, Vec<u8>)]| {
        let n: Vec<String> = v.iter().map(|(n, _)| format!("\"{}\"", esc(n))).collect();
        format!("[{}]", n.join(", "))
    };
    for k in 0..a.len().max(b.len()) {
        match (a.get(k), b.get(k)) {
            (Some((na, va)), Some((nb, vb))) if na == nb => {
                if va != vb {
                    return Err(format!(
                        "{}: field xattr {} value differs: {}",
                        esc(p),
                        esc(na),
                        describe_bytes_diff(va, vb)
                    ));
                }
            }
            _ => {
                return Err(format!(
                    "{}: field xattrs name list differs: a={} b={}",
                    esc(p),
                    names(a),
                    names(b)
                ));
            }
        }
    }
    Ok(())
}

fn compare_children(
    p: &[u8],
    a: &Option<Vec<(Vec<u8>, u8)>>,
    b: &Option<Vec<(Vec<u8>, u8)>>,
) -> Result<(), String> {
    let (a, b) = match (a, b) {
        (None, None) => return Ok(()),
        (Some(a), Some(b)) => (a, b),
        _ => {
            return Err(format!(
                "{}: field children present on one side only: a={} b={}",
                esc(p),
                a.is_some(),
                b.is_some()
            ));
        }
    };
    for k in 0..a.len().max(b.len()) {
        match (a.get(k), b.get(k)) {
            (Some(x), Some(y)) if x == y => {}
            (x, y) => {
                let show = |e: Option<&(Vec<u8>, u8)>| match e {
                    Some((n, t)) => format!("{} (d_type {t})", esc(n)),
                    None => "<end>".to_string(),
                };
                return Err(format!(
                    "{}: field children differs at index {k} (a has {}, b has {} entries): a={} b={}",
                    esc(p),
                    a.len(),
                    b.len(),
                    show(x),
                    show(y)
                ));
            }
        }
    }
    Ok(())
}

fn compare_content(
    p: &[u8],
    a: &Option<Vec<u8>>,
    b: &Option<Vec<u8>>,
    unreadable_allowed: bool,
) -> Result<(), String> {
    match (a, b) {
        (None, None) if unreadable_allowed => Ok(()),
        (None, None) => Err(format!("{}: unreadable on both sides", esc(p))),
        (Some(x), Some(y)) if x == y => Ok(()),
        (Some(x), Some(y)) => Err(format!(
            "{}: field content differs: {}",
            esc(p),
            describe_bytes_diff(x, y)
        )),
        _ => Err(format!(
            "{}: field content present on one side only: a={} b={}",
            esc(p),
            a.is_some(),
            b.is_some()
        )),
    }
}

/// Describes how two byte strings differ: lengths, first differing offset
/// and a short escaped window around it.
pub fn describe_bytes_diff(a: &[u8], b: &[u8]) -> String {
    if a.len() <= 64 && b.len() <= 64 {
        return format!(
            "a=\"{}\" (len {}) b=\"{}\" (len {})",
            esc(a),
            a.len(),
            esc(b),
            b.len()
        );
    }
    let off = a
        .iter()
        .zip(b)
        .position(|(x, y)| x != y)
        .unwrap_or(a.len().min(b.len()));
    let lo = off.saturating_sub(8);
    let win = |v: &[u8]| esc(&v[lo.min(v.len())..(off + 24).min(v.len())]);
    format!(
        "len a={} b={}, first difference at offset {off}; bytes from offset {lo}: a=\"{}\" b=\"{}\"",
        a.len(),
        b.len(),
        win(a),
        win(b)
    )
}

/// Escapes bytes for messages (ASCII printable kept, rest `\xNN`), truncated
/// to ~200 bytes.
pub fn esc(b: &[u8]) -> String {
    const MAX: usize = 200;
    let mut s: String = b
        .iter()
        .take(MAX)
        .flat_map(|&c| std::ascii::escape_default(c))
        .map(char::from)
        .collect();
    if b.len() > MAX {
        s.push_str(&format!("...({} bytes total)", b.len()));
    }
    s
}

fn opt_bytes(v: &Option<Vec<u8>>) -> String {
    match v {
        Some(v) => format!("\"{}\" (len {})", esc(v), v.len()),
        None => "None".to_string(),
    }
}

/// Internal consistency checks of a single walk that any correct filesystem
/// satisfies: every listed child has an entry, readdir's `d_type` matches the
/// child's `st_mode` (or is `DT_UNKNOWN`), symlink `st_size` equals the target
/// length, regular-file `st_size` equals the content length, and directory
/// `st_nlink` is 2 + number of subdirectories.
pub fn check_consistency(entries: &[Entry]) -> Result<(), String> {
    for e in entries {
        if let Some(children) = &e.children {
            let mut subdirs = 0u64;
            for (name, dt) in children {
                let mut cp = e.path.clone();
                if cp != b"/" {
                    cp.push(b'/');
                }
                cp.extend_from_slice(name);
                let c = find(entries, &cp)
                    .ok_or_else(|| format!("{}: listed in readdir but not walked", esc(&cp)))?;
                if *dt != DT_UNKNOWN && *dt != dtype_of_mode(c.mode) {
                    return Err(format!(
                        "{}: d_type {dt} does not match st_mode {:o}",
                        esc(&cp),
                        c.mode
                    ));
                }
                if c.is_dir() {
                    subdirs += 1;
                }
            }
            if e.nlink != 2 + subdirs {
                return Err(format!(
                    "{}: directory nlink {} != 2 + {subdirs} subdirectories",
                    esc(&e.path),
                    e.nlink
                ));
            }
        }
        if let Some(t) = &e.symlink
            && e.size != t.len() as u64
        {
            return Err(format!(
                "{}: symlink st_size {} != target length {}",
                esc(&e.path),
                e.size,
                t.len()
            ));
        }
        if let Some(c) = &e.content
            && e.size != c.len() as u64
        {
            return Err(format!(
                "{}: st_size {} != content length {}",
                esc(&e.path),
                e.size,
                c.len()
            ));
        }
    }
    Ok(())
}

/// Absolute path of entry `rel` (as stored in [`Entry::path`]) under `root`.
pub fn abs_path(root: &Path, rel: &[u8]) -> PathBuf {
    let rel = rel.strip_prefix(b"/").unwrap_or(rel);
    if rel.is_empty() {
        root.to_path_buf()
    } else {
        root.join(OsStr::from_bytes(rel))
    }
}
