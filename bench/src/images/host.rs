//! The `host-usr` image: the machine's own `/usr` and `/etc`, with the root's symlinks into
//! `/usr` (`bin`, `lib`, …) and empty `dev`, `proc`, `sys`, `run` and `tmp`, so that a workload
//! can `chroot` into the mount and run the host's programs from it.
//!
//! Every non-empty regular file redirects to an object in the basedir, hard-linked to the real
//! file (or copied when the basedir is on another filesystem). Object names are derived from the
//! file's device and inode, not from its content: they are not fs-verity digests, and identical
//! files are not shared. Hard-linked host files become separate image entries (nlink 1) sharing
//! one object. Extended attributes are not copied.

use std::ffi::OsString;
use std::fmt::Write as _;
use std::fs::{self, Metadata};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::Context;

use super::{Dump, Object, fnv1a, object_id};

/// The root's entries that are copied from the host when they are symlinks (merged `/usr`).
const ROOT_SYMLINKS: [&str; 6] = ["bin", "lib", "lib32", "lib64", "libx32", "sbin"];
/// Empty directories a chrooted program may expect.
const EMPTY_DIRS: [(&str, u32); 5] = [
    ("dev", 0o40755),
    ("proc", 0o40555),
    ("run", 0o40755),
    ("sys", 0o40555),
    ("tmp", 0o41777),
];
/// The trees copied whole.
const TREES: [&str; 2] = ["etc", "usr"];

/// The dumpfile of `root`'s `/usr` and `/etc`, with objects pointing at the host's files.
pub(super) fn host_dump(root: &Path) -> anyhow::Result<Dump> {
    let mut dump = Dump::default();
    let meta = fs::symlink_metadata(root)?;
    dump.line(format_args!(
        "/ 0 {:o} {} {} {} 0 {} - - -",
        meta.mode(),
        meta.nlink(),
        meta.uid(),
        meta.gid(),
        mtime(&meta)
    ));
    let mut names: Vec<&str> = ROOT_SYMLINKS
        .iter()
        .chain(EMPTY_DIRS.iter().map(|(name, _)| name))
        .chain(TREES.iter())
        .copied()
        .collect();
    names.sort_unstable();
    let mut probe_depth = 0;
    for name in names {
        let host = root.join(name);
        let image_path = format!("/{name}");
        if let Some(&(_, mode)) = EMPTY_DIRS.iter().find(|(n, _)| *n == name) {
            dump.line(format_args!("{image_path} 0 {mode:o} 2 0 0 0 0.0 - - -"));
        } else if TREES.contains(&name) {
            walk(&mut dump, &host, image_path.as_bytes(), &mut probe_depth)
                .with_context(|| format!("reading {}", host.display()))?;
        } else if fs::symlink_metadata(&host).is_ok_and(|m| m.file_type().is_symlink()) {
            let meta = fs::symlink_metadata(&host)?;
            entry(&mut dump, &host, image_path.as_bytes(), &meta)?;
        }
    }
    dump.python = fs::metadata(root.join("usr/bin/python3")).is_ok_and(|m| m.is_file());
    Ok(dump)
}

/// `host` and everything under it, parents before children, names in byte order.
fn walk(
    dump: &mut Dump,
    host: &Path,
    image_path: &[u8],
    probe_depth: &mut usize,
) -> anyhow::Result<()> {
    let meta = fs::symlink_metadata(host)?;
    entry(dump, host, image_path, &meta)?;
    let depth = image_path.iter().filter(|&&b| b == b'/').count();
    if meta.is_file() && depth > *probe_depth && image_path.is_ascii() {
        *probe_depth = depth;
        dump.probe = Some(PathBuf::from(
            std::ffi::OsStr::from_bytes(&image_path[1..]).to_os_string(),
        ));
    }
    if !meta.is_dir() {
        return Ok(());
    }
    let mut names = fs::read_dir(host)?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<Vec<OsString>, _>>()?;
    names.sort_unstable();
    for name in names {
        let mut child = image_path.to_vec();
        child.push(b'/');
        child.extend_from_slice(name.as_bytes());
        walk(dump, &host.join(&name), &child, probe_depth)?;
    }
    Ok(())
}

/// One dumpfile line for the host file `host` at `image_path`.
fn entry(dump: &mut Dump, host: &Path, image_path: &[u8], meta: &Metadata) -> anyhow::Result<()> {
    let path = escape(image_path);
    let (mode, uid, gid, mtime) = (meta.mode(), meta.uid(), meta.gid(), mtime(meta));
    let kind = meta.file_type();
    if kind.is_dir() {
        let nlink = meta.nlink();
        dump.line(format_args!(
            "{path} 0 {mode:o} {nlink} {uid} {gid} 0 {mtime} - - -"
        ));
    } else if kind.is_symlink() {
        let target = fs::read_link(host)?;
        let target = target.as_os_str().as_bytes();
        dump.line(format_args!(
            "{path} {} {mode:o} 1 {uid} {gid} 0 {mtime} {} - -",
            target.len(),
            escape(target)
        ));
    } else if kind.is_file() && meta.len() > 0 {
        let mut key = b"host-usr".to_vec();
        key.extend_from_slice(&meta.dev().to_le_bytes());
        key.extend_from_slice(&meta.ino().to_le_bytes());
        let id = object_id(fnv1a(&key));
        let payload = format!("{}/{}", &id[..2], &id[2..]);
        dump.line(format_args!(
            "{path} {} {mode:o} 1 {uid} {gid} 0 {mtime} {payload} - {id}",
            meta.len()
        ));
        dump.objects.insert(
            payload,
            Object {
                size: meta.len(),
                real: false,
                source: Some(host.to_path_buf()),
            },
        );
    } else {
        // Empty files, devices, FIFOs, sockets: no content.
        dump.line(format_args!(
            "{path} 0 {mode:o} 1 {uid} {gid} {} {mtime} - - -",
            meta.rdev()
        ));
    }
    Ok(())
}

fn mtime(meta: &Metadata) -> String {
    format!("{}.{}", meta.mtime().max(0), meta.mtime_nsec().max(0))
}

/// The dumpfile escaping of a path or symlink target (composefs-dump(5)).
fn escape(bytes: &[u8]) -> String {
    if bytes == b"-" {
        return r"\x2d".to_string();
    }
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if (b.is_ascii_alphanumeric() || b.is_ascii_punctuation()) && b != b'\\' {
            out.push(b as char);
        } else {
            let _ = write!(out, "\\x{b:02x}");
        }
    }
    out
}
