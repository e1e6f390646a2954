//! From the tree to the image's inodes, numbered in the reference writers' order, with the
//! composefs conventions applied: external files as metacopy + redirect to their object, the
//! source's own `trusted.overlay.*` xattrs escaped, and for V0/V1 the `00`..`ff` whiteout stubs
//! in the root, an opaque root and source whiteouts escaped, as `mkcomposefs` writes them.
//!
//! V0/V1 number inodes breadth first (`mkcomposefs`' `lcfs_compute_tree`): a directory's
//! subdirectories and files get their numbers when the directory is listed, and a hard-linked
//! file gets its number where it occurs first in a depth-first walk in name order (where a
//! dumpfile lists it). V2 numbers them depth first (composefs-rs' original writer).

use std::collections::VecDeque;

use super::tree::{Kind, Node, Tree};
use super::{CreateError, Format};
use crate::composefs::{METACOPY, OPAQUE, OVERLAY, REDIRECT, WHITEOUT, WHITEOUTS};
use crate::erofs::format::{file_type as ft, mode::*};
use crate::erofs::{index_prefix, xattr_index};

/// An inode of the image.
pub struct Inode<'t> {
    /// File type and permission bits.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds (as the writers compare them: unsigned) and nanoseconds.
    pub mtime: (u64, u32),
    pub nlink: u32,
    /// Full names and values, in the order the writers add them.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub data: Data<'t>,
}

/// A directory entry: name, inode number, `EROFS_FT_*`.
pub type Entry<'t> = (&'t [u8], usize, u8);

/// An inode's content as the image stores it.
pub enum Data<'t> {
    /// Entries sorted by name, `.` and `..` included.
    Directory(Vec<Entry<'t>>),
    /// Regular file content (not empty), in the image.
    Inline(&'t [u8]),
    /// A symlink's target.
    Symlink(&'t [u8]),
    /// A file whose content is elsewhere: a chunk map of holes. `v2_map`: V2 writes a
    /// one-entry map (files with a digest); otherwise none.
    Chunked { size: u64, v2_map: bool },
    /// A device number, stored as it is (`i_u`).
    Device(u32),
    /// No content (empty file, fifo, socket).
    Empty,
}

/// The image's inodes, root first.
pub struct Inodes<'t> {
    pub list: Vec<Inode<'t>>,
}

const STUB_NAMES: [[u8; 2]; 256] = {
    let hex = b"0123456789abcdef";
    let mut names = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        names[i] = [hex[i >> 4], hex[i & 15]];
        i += 1;
    }
    names
};

/// An xattr's full name: the prefix of `index` followed by `rest`.
fn xattr_name(index: u8, rest: &[&[u8]]) -> Vec<u8> {
    let prefix = index_prefix(index).expect("a standard xattr index");
    [&[prefix][..], rest].concat().concat()
}

/// `trusted.overlay.X` as overlayfs reads it (`X` is one of `composefs`'s `overlay.*` names).
fn trusted(name: &[u8]) -> Vec<u8> {
    xattr_name(xattr_index::TRUSTED, &[name])
}

/// `trusted.overlay.X` escaped, which overlayfs shows as `trusted.overlay.X` to the reader.
fn escaped(name: &[u8]) -> Vec<u8> {
    xattr_name(xattr_index::TRUSTED, &[OVERLAY, name])
}

/// `user.overlay.X`, what an unprivileged (`userxattr`) overlay reads.
fn user(name: &[u8]) -> Vec<u8> {
    xattr_name(xattr_index::USER, &[name])
}

/// The SELinux label of `node` (none or one xattr), which the whiteout stubs copy from the
/// root.
fn selinux_of(node: &Node) -> Vec<(Vec<u8>, Vec<u8>)> {
    let label = xattr_name(xattr_index::SECURITY, &[b"selinux"]);
    node.xattrs
        .iter()
        .filter(|(name, _)| *name == label)
        .cloned()
        .collect()
}

/// Where an entry points: a tree node, or a V0/V1 whiteout stub.
#[derive(Clone, Copy)]
enum Target {
    Node(usize),
    Stub,
}

/// An entry whose inode may not be numbered yet (a hard link met before its first occurrence).
enum Ref {
    Known(usize),
    Deferred(usize),
}

/// A directory's inode number and its entries, before the hard links met early are resolved.
type Listing<'t> = (usize, Vec<(&'t [u8], Ref)>);

/// Numbers the tree's inodes as `format` does. `objects[job]` is the fs-verity digest and
/// size of external file `job`.
pub fn collect<'t>(
    tree: &'t Tree,
    objects: &[([u8; 32], u64)],
    format: Format,
) -> Result<Inodes<'t>, CreateError> {
    let epoch1 = format != Format::V2;
    let mut links = vec![0u32; tree.nodes.len()];
    for node in &tree.nodes {
        if let Kind::Directory(children) = &node.kind {
            for &(_, child) in children {
                links[child] += 1;
            }
        }
    }
    let mut builder = Builder {
        tree,
        objects,
        format,
        links,
        list: Vec::new(),
        of_node: vec![usize::MAX; tree.nodes.len()],
    };
    if epoch1 {
        builder.breadth_first()?;
        // Overlayfs must not merge the root with the basedir's `xx` directories.
        builder.list[0]
            .xattrs
            .push((trusted(OPAQUE), b"y".to_vec()));
    } else {
        builder.depth_first()?;
    }
    Ok(Inodes { list: builder.list })
}

struct Builder<'t, 'o> {
    tree: &'t Tree,
    objects: &'o [([u8; 32], u64)],
    format: Format,
    /// Directory entries naming each node.
    links: Vec<u32>,
    list: Vec<Inode<'t>>,
    /// Each node's inode number, `usize::MAX` until it has one.
    of_node: Vec<usize>,
}

impl<'t> Builder<'t, '_> {
    fn children(&self, node: usize) -> &'t [(Box<[u8]>, usize)] {
        match &self.tree.nodes[node].kind {
            Kind::Directory(children) => children,
            _ => &[],
        }
    }

    fn is_dir(&self, node: usize) -> bool {
        matches!(self.tree.nodes[node].kind, Kind::Directory(_))
    }

    /// V0/V1: breadth first, with the stubs in the root and source whiteouts escaped.
    fn breadth_first(&mut self) -> Result<(), CreateError> {
        let first_dir = self.first_occurrences();
        let root = self.number(Target::Node(0))?;
        let mut queue = VecDeque::from([(0usize, root, root)]);
        let mut listed: Vec<Listing<'t>> = Vec::new();
        while let Some((node, me, parent)) = queue.pop_front() {
            let mut targets: Vec<(&'t [u8], Target)> = self
                .children(node)
                .iter()
                .map(|(name, child)| (&name[..], Target::Node(*child)))
                .collect();
            if node == 0 {
                for name in &STUB_NAMES {
                    if let Err(at) = targets.binary_search_by(|(n, _)| (*n).cmp(&name[..])) {
                        targets.insert(at, (&name[..], Target::Stub));
                    }
                }
            }
            let mut entries = vec![
                (&b"."[..], Ref::Known(me)),
                (&b".."[..], Ref::Known(parent)),
            ];
            let mut has_whiteout = false;
            for (name, target) in targets {
                let child = match target {
                    Target::Stub => Ref::Known(self.number(target)?),
                    Target::Node(child) if self.is_dir(child) => {
                        let number = self.number(target)?;
                        queue.push_back((child, number, me));
                        Ref::Known(number)
                    }
                    Target::Node(child) => {
                        let first_here = self.links[child] <= 1 || first_dir[child] == node;
                        if first_here {
                            let fresh = self.of_node[child] == usize::MAX;
                            let number = self.number(target)?;
                            if fresh
                                && is_whiteout(&self.tree.nodes[child])
                                && !(node == 0 && self.looks_like_stub(name, child))
                            {
                                self.escape_whiteout(number);
                                has_whiteout = true;
                            }
                            Ref::Known(number)
                        } else if self.of_node[child] != usize::MAX {
                            Ref::Known(self.of_node[child])
                        } else {
                            Ref::Deferred(child)
                        }
                    }
                };
                entries.push((name, child));
            }
            if has_whiteout {
                let dir = &mut self.list[me].xattrs;
                dir.push((escaped(WHITEOUTS), Vec::new()));
                dir.push((user(WHITEOUTS), Vec::new()));
                if self.format == Format::V1 {
                    dir.push((escaped(OPAQUE), b"x".to_vec()));
                    dir.push((user(OPAQUE), b"x".to_vec()));
                }
            }
            listed.push((me, entries));
        }
        for (me, entries) in listed {
            let mut resolved: Vec<Entry<'t>> = entries
                .into_iter()
                .map(|(name, child)| {
                    let number = match child {
                        Ref::Known(number) => number,
                        Ref::Deferred(node) => self.of_node[node],
                    };
                    (name, number, file_type(self.list[number].mode))
                })
                .collect();
            resolved.sort_unstable_by(|a, b| a.0.cmp(b.0));
            self.set_directory(me, resolved);
        }
        Ok(())
    }

    /// For each node with several links, the directory where a depth-first walk in name order
    /// meets it first (where a dumpfile of the tree lists it in full).
    fn first_occurrences(&self) -> Vec<usize> {
        let mut first = vec![usize::MAX; self.tree.nodes.len()];
        let mut stack = vec![(0usize, 0usize)];
        while let Some((dir, at)) = stack.pop() {
            let children = self.children(dir);
            let Some(&(_, child)) = children.get(at) else {
                continue;
            };
            stack.push((dir, at + 1));
            if self.is_dir(child) {
                stack.push((child, 0));
            } else if self.links[child] > 1 && first[child] == usize::MAX {
                first[child] = dir;
            }
        }
        first
    }

    /// V2: depth first, directories before their children.
    fn depth_first(&mut self) -> Result<(), CreateError> {
        struct Frame<'t> {
            node: usize,
            me: usize,
            at: usize,
            entries: Vec<Entry<'t>>,
        }
        let root = self.number(Target::Node(0))?;
        let mut stack = vec![Frame {
            node: 0,
            me: root,
            at: 0,
            entries: vec![(b".", root, ft::DIR), (b"..", root, ft::DIR)],
        }];
        while let Some(frame) = stack.last_mut() {
            let Some((name, child)) = self.children(frame.node).get(frame.at) else {
                let Frame {
                    me, mut entries, ..
                } = stack.pop().expect("a frame is on the stack");
                entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
                self.set_directory(me, entries);
                continue;
            };
            frame.at += 1;
            let me = frame.me;
            let number = self.number(Target::Node(*child))?;
            let entry = (&name[..], number, file_type(self.list[number].mode));
            stack.last_mut().expect("frame").entries.push(entry);
            if self.is_dir(*child) {
                stack.push(Frame {
                    node: *child,
                    me: number,
                    at: 0,
                    entries: vec![(b".", number, ft::DIR), (b"..", me, ft::DIR)],
                });
            }
        }
        Ok(())
    }

    fn set_directory(&mut self, me: usize, entries: Vec<Entry<'t>>) {
        self.list[me].nlink = entries.iter().filter(|e| e.2 == ft::DIR).count() as u32;
        self.list[me].data = Data::Directory(entries);
    }

    /// The inode number of `target`: its own if it has one, else the next.
    fn number(&mut self, target: Target) -> Result<usize, CreateError> {
        if let Target::Node(n) = target {
            if self.of_node[n] != usize::MAX {
                return Ok(self.of_node[n]);
            }
        }
        let inode = match target {
            Target::Stub => self.stub(),
            Target::Node(n) => self.inode(n)?,
        };
        let number = self.list.len();
        self.list.push(inode);
        if let Target::Node(n) = target {
            self.of_node[n] = number;
        }
        Ok(number)
    }

    /// A whiteout stub: a char 0/0 with the root's owner, time and SELinux label.
    fn stub(&self) -> Inode<'t> {
        let root = &self.tree.nodes[0];
        Inode {
            mode: S_IFCHR | 0o644,
            uid: root.uid,
            gid: root.gid,
            mtime: mtime(root),
            nlink: 1,
            xattrs: selinux_of(root),
            data: Data::Device(0),
        }
    }

    /// Whether the source's whiteout `node`, named `name` in the root, is indistinguishable
    /// from the stub the writer would add there (then it is not escaped, as in composefs-rs).
    fn looks_like_stub(&self, name: &[u8], node: usize) -> bool {
        let (root, n) = (&self.tree.nodes[0], &self.tree.nodes[node]);
        name.len() == 2
            && name.iter().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
            && n.mode & 0o7777 == 0o644
            && (n.uid, n.gid, n.mtime) == (root.uid, root.gid, root.mtime)
            && n.xattrs == selinux_of(root)
    }

    /// Stores a source whiteout as a marked empty file, so that the image's own overlay does
    /// not hide it.
    fn escape_whiteout(&mut self, number: usize) {
        let inode = &mut self.list[number];
        inode.mode = S_IFREG | (inode.mode & !S_IFMT);
        inode.xattrs.push((escaped(WHITEOUT), Vec::new()));
        inode.xattrs.push((user(WHITEOUT), Vec::new()));
    }

    fn inode(&self, n: usize) -> Result<Inode<'t>, CreateError> {
        let node = &self.tree.nodes[n];
        let mut xattrs = Vec::with_capacity(node.xattrs.len() + 2);
        let mut object = |digest: &[u8; 32], verity: bool| {
            let metacopy = if verity {
                // `struct ovl_metacopy`: version 0, length, flags 0, SHA-256, the digest.
                let mut metacopy = vec![0, 36, 0, 1];
                metacopy.extend_from_slice(digest);
                metacopy
            } else {
                Vec::new()
            };
            xattrs.push((trusted(METACOPY), metacopy));
            xattrs.push((trusted(REDIRECT), redirect(digest)));
        };
        let data = match &node.kind {
            Kind::Directory(_) => Data::Directory(Vec::new()),
            Kind::Inline(content) if content.is_empty() => Data::Empty,
            Kind::Inline(content) => Data::Inline(content),
            Kind::Symlink(target) => Data::Symlink(target),
            Kind::External(job) => {
                let (digest, size) = self.objects[*job];
                object(&digest, true);
                Data::Chunked { size, v2_map: true }
            }
            Kind::Object {
                digest,
                verity,
                size,
            } => {
                object(digest, *verity);
                Data::Chunked {
                    size: *size,
                    v2_map: *verity,
                }
            }
            Kind::Sparse(size) => {
                xattrs.push((trusted(METACOPY), Vec::new()));
                Data::Chunked {
                    size: *size,
                    v2_map: false,
                }
            }
            Kind::Device(rdev) => Data::Device(u32::try_from(*rdev).map_err(|_| {
                CreateError::Unsupported(format!(
                    "device number {rdev:#x} does not fit the 32 bits EROFS stores"
                ))
            })?),
            Kind::Special => Data::Empty,
        };
        for (name, value) in &node.xattrs {
            xattrs.push((escape(name), value.clone()));
        }
        Ok(Inode {
            mode: node.mode,
            uid: node.uid,
            gid: node.gid,
            mtime: mtime(node),
            nlink: self.links[n],
            xattrs,
            data,
        })
    }
}

fn mtime(node: &Node) -> (u64, u32) {
    (node.mtime.0 as u64, node.mtime.1)
}

/// An overlayfs whiteout: a character device 0/0.
fn is_whiteout(node: &Node) -> bool {
    node.mode & S_IFMT == S_IFCHR && matches!(node.kind, Kind::Device(0))
}

/// The source's `trusted.overlay.X` is stored as `trusted.overlay.overlay.X`, which
/// overlayfs shows as `trusted.overlay.X` instead of obeying it.
fn escape(name: &[u8]) -> Vec<u8> {
    let trusted = index_prefix(xattr_index::TRUSTED).expect("a standard xattr index");
    match name.strip_prefix(trusted) {
        Some(rest) if rest.starts_with(OVERLAY) => escaped(rest),
        _ => name.to_vec(),
    }
}

impl Inodes<'_> {
    /// Renames the overlay's xattrs for an unprivileged overlayfs (`userxattr`) stacked on the
    /// image, so that it shows what the rootful mount of the image shows, as
    /// [`View::OverlayUser`](crate::view::View::OverlayUser) presents an image to one: the
    /// private `trusted.overlay.X` become `user.overlay.X` for the overlay to obey, escaped
    /// `trusted.overlay.overlay.X` lose their escape (that overlay leaves `trusted.*` alone),
    /// and the image's own `user.overlay.X` are escaped as `user.overlay.overlay.X`.
    ///
    /// A metacopy file without a redirect, whose data no layer holds, is an I/O error to the
    /// rootful overlay's lookup; an unprivileged overlay would refuse it with EPERM instead
    /// (it never follows metacopy origins). Its metacopy xattr gets a value too short to be
    /// one, which overlayfs' lookup refuses with the rootful mount's EIO.
    pub fn for_user_xattr_overlay(&mut self) {
        let user = index_prefix(xattr_index::USER).expect("a standard xattr index");
        let is = |name: &[u8], what: &[u8]| name.strip_prefix(user) == Some(what);
        for inode in &mut self.list {
            for (name, _) in &mut inode.xattrs {
                *name = user_xattr_overlay_name(name);
            }
            let redirected = inode.xattrs.iter().any(|(name, _)| is(name, REDIRECT));
            if !redirected {
                for (name, value) in &mut inode.xattrs {
                    if is(name, METACOPY) {
                        *value = UNREACHABLE_METACOPY.to_vec();
                    }
                }
            }
        }
    }
}

/// A metacopy xattr value overlayfs refuses (shorter than its 4-byte header).
const UNREACHABLE_METACOPY: &[u8] = b"\0";

/// An image xattr's name as a `userxattr` overlay must find it (see
/// [`Inodes::for_user_xattr_overlay`]).
fn user_xattr_overlay_name(name: &[u8]) -> Vec<u8> {
    let trusted = index_prefix(xattr_index::TRUSTED).expect("a standard xattr index");
    let user = index_prefix(xattr_index::USER).expect("a standard xattr index");
    if let Some(rest) = name.strip_prefix(trusted) {
        if let Some(unescaped) = rest
            .strip_prefix(OVERLAY)
            .filter(|r| r.starts_with(OVERLAY))
        {
            return xattr_name(xattr_index::TRUSTED, &[unescaped]);
        }
        if rest.starts_with(OVERLAY) {
            return xattr_name(xattr_index::USER, &[rest]);
        }
    } else if let Some(rest) = name.strip_prefix(user) {
        if rest.starts_with(OVERLAY) {
            return xattr_name(xattr_index::USER, &[OVERLAY, rest]);
        }
    }
    name.to_vec()
}

/// `/xx/<62 hex>`: where the object named by `digest` is under the basedir.
pub fn redirect(digest: &[u8; 32]) -> Vec<u8> {
    let hex = super::hex(digest);
    format!("/{}/{}", &hex[..2], &hex[2..]).into_bytes()
}

/// `EROFS_FT_*` of a mode.
fn file_type(mode: u32) -> u8 {
    match mode & S_IFMT {
        S_IFREG => ft::REG_FILE,
        S_IFDIR => ft::DIR,
        S_IFCHR => ft::CHRDEV,
        S_IFBLK => ft::BLKDEV,
        S_IFIFO => ft::FIFO,
        S_IFSOCK => ft::SOCK,
        S_IFLNK => ft::SYMLINK,
        _ => ft::UNKNOWN,
    }
}
