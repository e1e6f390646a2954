//! Printing an image as a composefs dumpfile (composefs-dump(5)).
//!
//! The output is what composefs tools print for the same image (the `composefs` crate's
//! `erofs_to_filesystem` followed by `write_dumpfile`): depth-first, entries in name order,
//! hard links as `@120000` lines pointing at their first path, the V0/V1 whiteout stubs in the
//! root hidden, escaped whiteouts shown as char 0/0 devices, redirect/metacopy turned into the
//! payload and digest columns ([`Placement`]), and xattr names as the direct [`View`] presents
//! them (`trusted.overlay.overlay.X` → `trusted.overlay.X`, private overlay xattrs dropped)
//! less the whiteout and opaque markers.

use std::collections::{HashMap, HashSet};
use std::io::Write;

use crate::check::join_path as join;
use crate::composefs::{OPAQUE, OVERLAY, Placement, WHITEOUT, WHITEOUTS};
use crate::erofs::{
    Corruption, DataLayout, Error, FileType, Image, Inode, Xattr, XattrName, XattrPrefix,
    xattr_index,
};
use crate::view::View;

/// Errors while dumping.
#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    /// The image is corrupt or uses something the dumpfile format cannot express.
    #[error("{path}: {source}")]
    Image {
        /// Path of the entry being dumped.
        path: String,
        /// The decoding error.
        source: Error,
    },
    /// The directory tree is deeper than composefs tools accept.
    #[error("{0}: directory tree too deep")]
    TooDeep(String),
    /// Writing the output failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
}

/// Deepest directory nesting printed (as composefs' reader); also bounds recursion.
const MAX_DEPTH: usize = 2048;
const S_IFMT: u32 = 0o170000;
const S_IFCHR: u32 = 0o020000;

/// Writes the whole image as a dumpfile.
pub fn dump(image: &Image, out: &mut impl Write) -> Result<(), DumpError> {
    let mut dumper = Dumper {
        out,
        hardlinks: HashMap::new(),
        dirs_seen: HashSet::new(),
    };
    let root = image.root().map_err(|source| DumpError::Image {
        path: "/".into(),
        source,
    })?;
    // Depth-first with an explicit stack of the directories being listed (why: recursion
    // 2048 levels deep overflows small thread stacks on hostile images).
    let mut stack = vec![dumper.dir(&root, b"/".to_vec(), 0)?];
    while let Some(children) = stack.last_mut() {
        let Some((child_path, inode)) = children.next() else {
            stack.pop();
            continue;
        };
        if inode.is_dir() {
            let children = dumper.dir(&inode, child_path, stack.len())?;
            stack.push(children);
        } else {
            dumper.leaf(&inode, child_path)?;
        }
    }
    Ok(())
}

/// A directory's children still to print, with their paths.
type Children<'img> = std::vec::IntoIter<(Vec<u8>, Inode<'img>)>;

struct Dumper<'o, W: Write> {
    out: &'o mut W,
    /// First path of every multiply-linked non-directory, by nid.
    hardlinks: HashMap<u64, Vec<u8>>,
    /// Every directory dumped so far: a directory reached twice (a cycle or a hard-linked
    /// directory in a corrupt image) is an error, not an endless or exponential recursion.
    dirs_seen: HashSet<u64>,
}

/// What a regular file's data is, as composefs classifies it.
enum FileData {
    Inline(Vec<u8>),
    /// A basedir object, named by its fs-verity digest (from metacopy, else from redirect).
    External([u8; 32]),
    Sparse,
    Whiteout,
    Other,
}

impl<W: Write> Dumper<'_, W> {
    /// Prints a directory's line and returns its children, to be printed next.
    fn dir<'img>(
        &mut self,
        dir: &Inode<'img>,
        path: Vec<u8>,
        depth: usize,
    ) -> Result<Children<'img>, DumpError> {
        if depth >= MAX_DEPTH {
            return Err(DumpError::TooDeep(display(&path)));
        }
        let fail = |path: &[u8], source| DumpError::Image {
            path: display(path),
            source,
        };
        if !self.dirs_seen.insert(dir.nid()) {
            return Err(fail(
                &path,
                Error::Corrupt {
                    nid: dir.nid(),
                    what: Corruption::DirectoryCycle,
                },
            ));
        }
        let image = dir.image();
        let is_root = dir.nid() == image.root_nid();
        let mut children = Vec::new();
        for entry in dir.dir().map_err(|e| fail(&path, e))?.entries() {
            let entry = entry.map_err(|e| fail(&path, e))?;
            if entry.name == b"." || entry.name == b".." {
                continue;
            }
            let child_path = join(&path, entry.name);
            let inode = image.inode(entry.nid).map_err(|e| fail(&child_path, e))?;
            if is_root && is_whiteout_stub(entry.name, &inode).map_err(|e| fail(&child_path, e))? {
                continue;
            }
            children.push((child_path, inode));
        }
        // composefs tools keep children sorted by name, also when the dirents are not.
        children.sort_by(|a, b| a.0.cmp(&b.0));
        let subdirs = children.iter().filter(|(_, i)| i.is_dir()).count();
        self.entry(dir, &path, Some(2 + subdirs as u64))
            .map_err(|e| flatten(e, &path))?;
        Ok(children.into_iter())
    }

    /// Prints a non-directory: a hard link line if its inode was printed before.
    fn leaf(&mut self, inode: &Inode<'_>, path: Vec<u8>) -> Result<(), DumpError> {
        if inode.nlink() > 1 {
            if let Some(first) = self.hardlinks.get(&inode.nid()) {
                escaped(self.out, &path)?;
                self.out.write_all(b" 0 @120000 - - - - 0.0 ")?;
                escaped(self.out, first)?;
                self.out.write_all(b" - -\n")?;
                return Ok(());
            }
            self.hardlinks.insert(inode.nid(), path.clone());
        }
        self.entry(inode, &path, None)
            .map_err(|e| flatten(e, &path))
    }

    /// Prints one full line.
    fn entry(
        &mut self,
        inode: &Inode<'_>,
        path: &[u8],
        dir_nlink: Option<u64>,
    ) -> Result<(), LineError> {
        let xattrs = dump_xattrs(inode)?;
        let content = match inode.file_type() {
            FileType::Regular => classify(inode)?,
            _ => FileData::Other,
        };
        let file_type = inode.file_type();
        let type_bits = match content {
            FileData::Whiteout => S_IFCHR,
            _ => inode.mode() & S_IFMT,
        };
        let mode = type_bits | (inode.mode() & 0o7777);
        let size = match (&content, file_type) {
            (FileData::Inline(data), _) => data.len() as u64,
            (FileData::Whiteout, _) => 0,
            (_, FileType::Regular | FileType::Symlink) => inode.size(),
            _ => 0,
        };
        let rdev = match file_type {
            FileType::CharDevice | FileType::BlockDevice => inode.rdev_raw(),
            _ => 0,
        };
        let (sec, nsec) = inode.mtime();
        let out = &mut *self.out;
        escaped(out, path)?;
        let nlink = dir_nlink.unwrap_or(u64::from(inode.nlink()));
        write!(
            out,
            " {size} {mode:o} {nlink} {} {} {rdev} {sec}.{nsec} ",
            inode.uid(),
            inode.gid()
        )?;
        match (&content, file_type) {
            (_, FileType::Symlink) => {
                escaped(out, inode.symlink_target()?)?;
                out.write_all(b" - -")?;
            }
            (FileData::Inline(data), _) => {
                out.write_all(b"- ")?;
                escaped(out, data)?;
                out.write_all(b" -")?;
            }
            (FileData::External(object), _) => {
                let hex = hex(object);
                write!(out, "{}/{} - {hex}", &hex[..2], &hex[2..])?;
            }
            _ => out.write_all(b"- - -")?,
        }
        for (name, value) in xattrs {
            out.write_all(b" ")?;
            escaped_raw(out, &name, true)?;
            out.write_all(b"=")?;
            escaped_raw(out, value, true)?;
        }
        out.write_all(b"\n")?;
        Ok(())
    }
}

/// An error while printing one line, before it gets its path.
enum LineError {
    Image(Error),
    Io(std::io::Error),
}

impl From<Error> for LineError {
    fn from(e: Error) -> Self {
        LineError::Image(e)
    }
}

impl From<std::io::Error> for LineError {
    fn from(e: std::io::Error) -> Self {
        LineError::Io(e)
    }
}

fn flatten(e: LineError, path: &[u8]) -> DumpError {
    match e {
        LineError::Image(source) => DumpError::Image {
            path: display(path),
            source,
        },
        LineError::Io(e) => DumpError::Io(e),
    }
}

/// Whether a root entry is one of the `00`..`ff` whiteout stubs composefs V0/V1 images carry
/// (a char 0/0 device, or a regular file marked as an escaped whiteout).
fn is_whiteout_stub(name: &[u8], inode: &Inode<'_>) -> Result<bool, Error> {
    if name.len() != 2 || !name.iter().all(u8::is_ascii_hexdigit) {
        return Ok(false);
    }
    Ok(match inode.file_type() {
        FileType::CharDevice => inode.rdev_raw() == 0,
        FileType::Regular => is_escaped_whiteout(inode)?,
        _ => false,
    })
}

/// Whether `inode` carries `trusted.overlay.overlay.whiteout`: an escaped whiteout, which
/// composefs tools show as a whiteout (char 0/0).
fn is_escaped_whiteout(inode: &Inode<'_>) -> Result<bool, Error> {
    let escaped_whiteout = [OVERLAY, WHITEOUT];
    Ok(inode
        .xattrs()?
        .get_parts(xattr_index::TRUSTED, &escaped_whiteout)?
        .is_some())
}

/// Classifies a regular file's content the way composefs' reader does.
fn classify(inode: &Inode<'_>) -> Result<FileData, Error> {
    if is_escaped_whiteout(inode)? {
        return Ok(FileData::Whiteout);
    }
    if let Some(object) = Placement::of(inode)?.object_id() {
        return Ok(FileData::External(object));
    }
    if inode.layout() == DataLayout::ChunkBased {
        return Ok(FileData::Sparse);
    }
    let mut data = vec![
        0;
        usize::try_from(inode.size())
            .unwrap_or(usize::MAX)
            .min(inode.image().bytes().len())
    ];
    let n = inode.read_at(0, &mut data)?;
    data.truncate(n);
    Ok(FileData::Inline(data))
}

/// An xattr with its full (unescaped) name.
type NamedValue<'img> = (Vec<u8>, &'img [u8]);

/// The xattrs composefs tools show for an inode, sorted by name (later duplicates win).
fn dump_xattrs<'img>(inode: &Inode<'img>) -> Result<Vec<NamedValue<'img>>, Error> {
    let mut xattrs: Vec<NamedValue<'img>> = Vec::new();
    for xattr in inode.xattrs()?.iter() {
        let xattr = xattr?;
        let Some(name) = dump_name(&xattr.name) else {
            continue;
        };
        match xattrs.iter_mut().find(|(n, _)| *n == name) {
            Some(existing) => existing.1 = xattr.value,
            None => xattrs.push((name, xattr.value)),
        }
    }
    xattrs.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(xattrs)
}

/// The name composefs tools print for an xattr, or `None` if they hide it: the name the
/// direct view shows (escaped overlay names unescaped, private ones hidden), except the
/// whiteout and opaque markers, which the dumpfile does not print as xattrs.
fn dump_name(name: &XattrName<'_>) -> Option<Vec<u8>> {
    // Every prefix of the format's table, also those Linux does not expose: index 0 (a bare
    // name) and `lustre.`.
    let prefix = XattrPrefix::of(name.index)?.prefix;
    let full = [prefix, name.infix, name.suffix].concat();
    // composefs' reader judges the full name, however the index and a long prefix split it
    // (a bare name, index 0, can spell `trusted.overlay.…`), so the view gets it split afresh.
    // A name with no Linux prefix is printed as it is: no overlay rule applies to it.
    let Some((index, rest)) = crate::erofs::split_name(&full) else {
        return Some(full);
    };
    let whole = Xattr {
        name: XattrName {
            index,
            infix: b"",
            suffix: rest,
        },
        value: b"",
    };
    let shown = View::Direct.present(&whole)?;
    let mut out = Vec::with_capacity(shown.len());
    shown.append_to(&mut out);
    let is_marker = matches!(index, xattr_index::TRUSTED | xattr_index::USER)
        && [WHITEOUT, WHITEOUTS, OPAQUE].contains(&&out[shown.prefix.len()..]);
    (!is_marker).then_some(out)
}

fn display(path: &[u8]) -> String {
    crate::check::display_path(path)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A path, payload or content field: `-` when empty, `\x2d` for a lone dash.
fn escaped(out: &mut impl Write, bytes: &[u8]) -> std::io::Result<()> {
    match bytes {
        b"" => out.write_all(b"-"),
        b"-" => out.write_all(b"\\x2d"),
        _ => escaped_raw(out, bytes, false),
    }
}

fn escaped_raw(out: &mut impl Write, bytes: &[u8], escape_eq: bool) -> std::io::Result<()> {
    for &b in bytes {
        match b {
            b'\\' => out.write_all(b"\\\\")?,
            b'\n' => out.write_all(b"\\n")?,
            b'\r' => out.write_all(b"\\r")?,
            b'\t' => out.write_all(b"\\t")?,
            b'=' if escape_eq => out.write_all(b"\\x3d")?,
            0x21..=0x7e => out.write_all(&[b])?,
            _ => write!(out, "\\x{b:02x}")?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests;
