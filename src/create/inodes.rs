//! From the source tree to the image's inodes, in image order, with the composefs
//! conventions applied: external files as metacopy + redirect to their object, the source's
//! own `trusted.overlay.*` xattrs escaped, and for V0/V1 the `00`..`ff` whiteout stubs in the
//! root, an opaque root and source whiteouts escaped, as `mkcomposefs` writes them.

use std::collections::VecDeque;

use super::tree::{Kind, Node, Tree};
use super::{CreateError, Format};

const S_IFMT: u32 = 0o170000;
const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFCHR: u32 = 0o020000;

/// An inode of the image.
pub struct Inode<'t> {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: (i64, u32),
    pub nlink: u32,
    /// Full names and values, sorted by name.
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
    pub data: Data<'t>,
}

/// An inode's content as the image stores it.
pub enum Data<'t> {
    /// Entries sorted by name, `.` and `..` included: name, inode number, `EROFS_FT_*`.
    Directory(Vec<(&'t [u8], usize, u8)>),
    /// File content or symlink target, in the image.
    Bytes(&'t [u8]),
    /// An external file of this size: a chunk map of holes, content in the object.
    External(u64),
    /// A device number (`st_rdev`).
    Device(u64),
    /// No content (empty file, fifo, socket).
    Empty,
}

/// The image's inodes, root first, and what the header records about them.
pub struct Inodes<'t> {
    pub list: Vec<Inode<'t>>,
    /// Source whiteouts were escaped (V0 then says composefs version 1, as `mkcomposefs`).
    pub escaped_whiteouts: bool,
}

/// Where an entry points: a source node, or a V0/V1 whiteout stub.
#[derive(Clone, Copy)]
enum Target {
    Node(usize),
    Stub,
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

/// Orders the tree's inodes as `format` does: breadth first for V0/V1 (as `mkcomposefs`),
/// depth first for V2; children in name order. `objects[job]` is the fs-verity digest and
/// size of external file `job`.
pub fn collect<'t>(
    tree: &'t Tree,
    objects: &[([u8; 32], u64)],
    format: Format,
) -> Result<Inodes<'t>, CreateError> {
    let epoch1 = format != Format::V2;
    let mut builder = Builder {
        tree,
        objects,
        epoch1,
        list: Vec::new(),
        of_node: vec![usize::MAX; tree.nodes.len()],
        escaped_whiteouts: false,
    };
    builder.add(Target::Node(0), 0)?;
    // (node, its inode, its parent's inode)
    let mut pending = VecDeque::from([(0usize, 0usize, 0usize)]);
    while let Some((node, inode, parent)) = if epoch1 {
        pending.pop_front()
    } else {
        pending.pop_back()
    } {
        let subdirs = builder.fill_directory(node, inode, parent)?;
        let subdirs = subdirs.into_iter().map(|(n, i)| (n, i, inode));
        if epoch1 {
            pending.extend(subdirs);
        } else {
            // Popped from the back: the first subdirectory goes last.
            pending.extend(subdirs.rev());
        }
    }
    let mut list = builder.list;
    if epoch1 {
        // Overlayfs must not merge the root with the basedir's `xx` directories.
        list[0]
            .xattrs
            .push((b"trusted.overlay.opaque".to_vec(), b"y".to_vec()));
        list[0].xattrs.sort_unstable();
    }
    Ok(Inodes {
        list,
        escaped_whiteouts: builder.escaped_whiteouts,
    })
}

struct Builder<'t, 'o> {
    tree: &'t Tree,
    objects: &'o [([u8; 32], u64)],
    epoch1: bool,
    list: Vec<Inode<'t>>,
    /// Each node's inode number, `usize::MAX` until it has one.
    of_node: Vec<usize>,
    escaped_whiteouts: bool,
}

impl<'t> Builder<'t, '_> {
    /// Numbers directory `node`'s children and lists its entries; returns the
    /// subdirectories numbered here.
    fn fill_directory(
        &mut self,
        node: usize,
        inode: usize,
        parent: usize,
    ) -> Result<Vec<(usize, usize)>, CreateError> {
        let Kind::Directory(children) = &self.tree.nodes[node].kind else {
            unreachable!("only directories are queued")
        };
        let mut targets: Vec<(&'t [u8], Target)> = children
            .iter()
            .map(|(name, child)| (&name[..], Target::Node(*child)))
            .collect();
        if self.epoch1 && node == 0 {
            for name in &STUB_NAMES {
                if let Err(at) = targets.binary_search_by(|(n, _)| (*n).cmp(&name[..])) {
                    targets.insert(at, (&name[..], Target::Stub));
                }
            }
        }
        let mut entries = vec![(&b"."[..], inode, FT_DIR), (&b".."[..], parent, FT_DIR)];
        let mut subdirs = Vec::new();
        let mut has_whiteout = false;
        for (name, target) in targets {
            let child = match target {
                Target::Node(child) if self.of_node[child] != usize::MAX => self.of_node[child],
                _ => {
                    let child = self.add(target, inode)?;
                    if let Target::Node(n) = target {
                        if self.list[child].mode & S_IFMT == S_IFDIR {
                            subdirs.push((n, child));
                        }
                        has_whiteout |= self.epoch1 && is_whiteout(&self.tree.nodes[n]);
                    }
                    child
                }
            };
            let mode = self.list[child].mode;
            if mode & S_IFMT == S_IFDIR {
                self.list[inode].nlink += 1;
            } else {
                self.list[child].nlink += 1;
            }
            entries.push((name, child, file_type(mode)));
        }
        entries.sort_unstable_by(|a, b| a.0.cmp(b.0));
        if has_whiteout {
            let dir = &mut self.list[inode].xattrs;
            dir.push((b"trusted.overlay.overlay.whiteouts".to_vec(), Vec::new()));
            dir.push((b"user.overlay.whiteouts".to_vec(), Vec::new()));
            dir.push((b"trusted.overlay.overlay.opaque".to_vec(), b"x".to_vec()));
            dir.push((b"user.overlay.opaque".to_vec(), b"x".to_vec()));
            dir.sort_unstable();
            dir.dedup_by(|a, b| a.0 == b.0);
        }
        self.list[inode].data = Data::Directory(entries);
        Ok(subdirs)
    }

    /// Gives `target` the next inode number.
    fn add(&mut self, target: Target, _parent: usize) -> Result<usize, CreateError> {
        let root = &self.tree.nodes[0];
        let inode = match target {
            // `mkcomposefs` gives the stubs the root's owner, time and SELinux label.
            Target::Stub => Inode {
                mode: S_IFCHR | 0o644,
                uid: root.uid,
                gid: root.gid,
                mtime: root.mtime,
                nlink: 0,
                xattrs: root
                    .xattrs
                    .iter()
                    .filter(|(name, _)| name == b"security.selinux")
                    .cloned()
                    .collect(),
                data: Data::Device(0),
            },
            Target::Node(n) => self.inode(&self.tree.nodes[n]),
        };
        let number = self.list.len();
        self.list.push(inode);
        if let Target::Node(n) = target {
            self.of_node[n] = number;
        }
        Ok(number)
    }

    fn inode(&mut self, node: &'t Node) -> Inode<'t> {
        let mut xattrs: Vec<(Vec<u8>, Vec<u8>)> = node
            .xattrs
            .iter()
            .map(|(name, value)| (escape(name), value.clone()))
            .collect();
        let mut mode = node.mode;
        let data = match &node.kind {
            Kind::Directory(_) => Data::Directory(Vec::new()),
            Kind::Inline(content) if content.is_empty() => Data::Empty,
            Kind::Inline(content) => Data::Bytes(content),
            Kind::Symlink(target) => Data::Bytes(target),
            Kind::External(job) => {
                let (digest, size) = self.objects[*job];
                let mut metacopy = vec![0, 36, 0, 1];
                metacopy.extend_from_slice(&digest);
                xattrs.push((b"trusted.overlay.metacopy".to_vec(), metacopy));
                xattrs.push((b"trusted.overlay.redirect".to_vec(), redirect(&digest)));
                Data::External(size)
            }
            Kind::Device(_) if self.epoch1 && is_whiteout(node) => {
                // A whiteout in the source: stored as a marked empty file, so that the
                // image's own overlay does not hide it.
                self.escaped_whiteouts = true;
                mode = S_IFREG | (mode & !S_IFMT);
                xattrs.push((b"trusted.overlay.overlay.whiteout".to_vec(), Vec::new()));
                xattrs.push((b"user.overlay.whiteout".to_vec(), Vec::new()));
                Data::Empty
            }
            Kind::Device(rdev) => Data::Device(*rdev),
            Kind::Special => Data::Empty,
        };
        xattrs.sort_unstable();
        xattrs.dedup_by(|a, b| a.0 == b.0);
        Inode {
            mode,
            uid: node.uid,
            gid: node.gid,
            mtime: node.mtime,
            nlink: if mode & S_IFMT == S_IFDIR { 2 } else { 0 },
            xattrs,
            data,
        }
    }
}

/// An overlayfs whiteout: a character device 0/0.
fn is_whiteout(node: &Node) -> bool {
    node.mode & S_IFMT == S_IFCHR && matches!(node.kind, Kind::Device(0))
}

/// The source's `trusted.overlay.X` is stored as `trusted.overlay.overlay.X`, which
/// overlayfs shows as `trusted.overlay.X` instead of obeying it.
fn escape(name: &[u8]) -> Vec<u8> {
    match name.strip_prefix(b"trusted.overlay.") {
        Some(rest) => [&b"trusted.overlay.overlay."[..], rest].concat(),
        None => name.to_vec(),
    }
}

/// `/xx/<62 hex>`: where the object named by `digest` is under the basedir.
pub fn redirect(digest: &[u8; 32]) -> Vec<u8> {
    let hex = super::hex(digest);
    format!("/{}/{}", &hex[..2], &hex[2..]).into_bytes()
}

const FT_REG: u8 = 1;
const FT_DIR: u8 = 2;

/// `EROFS_FT_*` of a mode.
fn file_type(mode: u32) -> u8 {
    match mode & S_IFMT {
        S_IFREG => FT_REG,
        S_IFDIR => FT_DIR,
        S_IFCHR => 3,
        0o060000 => 4,
        0o010000 => 5,
        0o140000 => 6,
        0o120000 => 7,
        _ => 0,
    }
}
