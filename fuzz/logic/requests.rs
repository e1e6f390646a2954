//! Random request sequences against the transport-free request core ([`Core`]) over a fuzzed
//! image, as the kernel would send them: lookup, getattr, readdir and readdirplus resumed at
//! any position, getxattr and listxattr with sizes 0, too small and exact, open and read at
//! any offset, readlink, statfs.
//!
//! Input layout: a little-endian `u16` n, then n bytes decoded with `arbitrary` as a
//! [`Script`] (the view and the operations), then the image. Operations name nodes, names,
//! positions and xattr names the core answered earlier (or raw values), so sequences go deep.
//!
//! Properties: no panic; every operation ends within a CPU-time bound under the fuzzer (and
//! one readdir request yields at most a buffer's worth); answers agree with each other.
//! Some agreements hold on every image (getattr of a node lookup found gives lookup's
//! attributes, the xattr size protocol, a read's two copy paths); the rest hold for nodes
//! reached from the root of an image `lazycfs::check` accepts: every name readdir lists
//! looks up to the same node and attributes (or is hidden exactly when readdirplus says so),
//! resuming after an entry yields the next one, every listed xattr name reads with getxattr,
//! symlinks have targets, and reads of regular files return all bytes up to the size.
//!
//! Shared by `fuzz/fuzz_targets/requests.rs` and `tests/fuzz_replay.rs`.

#![allow(dead_code)]

use std::time::Duration;

use arbitrary::{Arbitrary, Unstructured};
use lazycfs::erofs::{FileType, Image};
use lazycfs::server::core::{Attr, Core, Errno, ROOT_ID, XattrReply};
use lazycfs::server::handles::Handle;
use lazycfs::view::View;

/// How the image is presented.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum ViewChoice {
    /// The rootful composefs mount's view.
    Direct,
    /// The lower layer of a `userxattr` overlay.
    OverlayUser,
    /// The raw image.
    OverlayTrusted,
}

/// A node: one the core named earlier, or any number.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum NodeRef {
    Known(u8),
    Raw(u64),
}

/// A name: one readdir listed earlier, or a few bytes.
#[derive(Arbitrary, Debug, Clone)]
pub enum NameRef {
    Listed(u8),
    Raw(ShortName),
}

/// Up to 40 bytes (a length byte, then the bytes): a derived `Vec<u8>` would swallow the
/// rest of the script.
#[derive(Debug, Clone)]
pub struct ShortName(pub Vec<u8>);

impl<'a> Arbitrary<'a> for ShortName {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let len = usize::from(u.arbitrary::<u8>()?) % 41;
        Ok(ShortName(u.bytes(len.min(u.len()))?.to_vec()))
    }
}

/// A position: one readdir returned earlier (or near it), or any number.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum PosRef {
    Seen(u8),
    Near(u8, i8),
    Raw(u64),
}

/// A read offset: from the start, from the end, or any number.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum OffsetRef {
    Start(u16),
    FromEnd(u16),
    Raw(u64),
}

/// A reply buffer size for the xattr calls.
#[derive(Arbitrary, Debug, Clone, Copy)]
pub enum SizeRef {
    /// Asks for the size.
    Zero,
    Small(u8),
    /// The size the core reported, minus this much.
    ExactMinus(u8),
    Max,
}

impl SizeRef {
    /// The buffer size asked for, given the `full` size the core reported.
    fn asked(self, full: u32) -> u32 {
        match self {
            SizeRef::Zero => 0,
            SizeRef::Small(n) => u32::from(n),
            SizeRef::ExactMinus(n) => full.saturating_sub(u32::from(n)),
            SizeRef::Max => u32::MAX,
        }
    }
}

/// One request.
#[derive(Arbitrary, Debug, Clone)]
pub enum Op {
    Lookup {
        dir: NodeRef,
        name: NameRef,
    },
    Getattr {
        node: NodeRef,
    },
    Readdir {
        dir: NodeRef,
        from: PosRef,
        plus: bool,
        max: u8,
    },
    /// A whole listing, checked against lookup, readdir and resumption.
    ListAll {
        dir: NodeRef,
    },
    Getxattr {
        node: NodeRef,
        name: NameRef,
        size: SizeRef,
    },
    Listxattr {
        node: NodeRef,
        size: SizeRef,
    },
    Read {
        node: NodeRef,
        offset: OffsetRef,
        size: u32,
        open: bool,
    },
    Readlink {
        node: NodeRef,
    },
    Statfs,
}

/// What one input asks for.
#[derive(Debug, Clone)]
pub struct Script {
    pub view: ViewChoice,
    pub ops: Vec<Op>,
}

/// Operations per input, and entries one readdir request yields (a 4 KiB FUSE buffer holds
/// about that many short names).
const MAX_OPS: usize = 256;
const MAX_READDIR: usize = 256;
/// Entries [`Op::ListAll`] follows.
const MAX_LISTED: usize = 4096;
/// FUSE's largest read.
const MAX_READ: u32 = 1 << 20;
/// What the core remembers from earlier answers.
const MEMORY: usize = 256;
/// CPU time one request may take (the robustness limit for the server), and one
/// [`Op::ListAll`] (thousands of requests' worth).
pub const REQUEST_CPU: Duration = Duration::from_millis(100);
pub const LIST_ALL_CPU: Duration = Duration::from_secs(1);

/// Splits an input into its script and its image.
pub fn parse(data: &[u8]) -> (Script, &[u8]) {
    let n = match data {
        [a, b, ..] => usize::from(u16::from_le_bytes([*a, *b])),
        _ => 0,
    };
    let rest = data.get(2..).unwrap_or(&[]);
    let (script, image) = rest.split_at(n.min(rest.len()));
    // Operations until the bytes run out (a derived `Vec` would stop at its first zero
    // "continue" byte, so random seeds would hold one or two operations).
    let mut u = Unstructured::new(script);
    let view = ViewChoice::arbitrary(&mut u).unwrap_or(ViewChoice::Direct);
    let mut ops = Vec::new();
    while !u.is_empty() && ops.len() < MAX_OPS {
        match Op::arbitrary(&mut u) {
            Ok(op) => ops.push(op),
            Err(_) => break,
        }
    }
    (Script { view, ops }, image)
}

/// The input for `image` with a script of `script` bytes (for seeds).
pub fn input(script: &[u8], image: &[u8]) -> Vec<u8> {
    let n = u16::try_from(script.len()).expect("short script");
    [&n.to_le_bytes()[..], script, image].concat()
}

/// Runs the script in `data` over the image in `data`; panics on a broken property, or, given
/// a clock of the thread's CPU time, on an operation taking longer than [`REQUEST_CPU`]
/// ([`LIST_ALL_CPU`] for a whole listing). Tests pass no clock (unoptimized builds run at any
/// speed). Returns how many operations ran (0 if the image does not open).
pub fn run(data: &[u8], cpu_clock: Option<fn() -> Duration>) -> usize {
    let (script, image) = parse(data);
    let Ok(decoded) = Image::from_bytes(image.to_vec()) else {
        return 0;
    };
    let strict = lazycfs::check::check(&decoded).is_ok();
    let image = Image::from_bytes(image.to_vec()).expect("opened once");
    let view = match script.view {
        ViewChoice::Direct => View::Direct,
        ViewChoice::OverlayUser => View::OverlayUser,
        ViewChoice::OverlayTrusted => View::OverlayTrusted,
    };
    let mut session = Session {
        core: Core::new(image, view, None),
        image: decoded,
        strict,
        nodes: vec![(ROOT_ID, true)],
        names: Vec::new(),
        positions: Vec::new(),
        xattr_names: Vec::new(),
        buf: Vec::new(),
    };
    let mut ran = 0;
    for op in script.ops.iter().take(MAX_OPS) {
        let start = cpu_clock.map(|clock| clock());
        session.op(op);
        if let (Some(clock), Some(start)) = (cpu_clock, start) {
            let took = clock().saturating_sub(start);
            let bound = match op {
                Op::ListAll { .. } => LIST_ALL_CPU,
                _ => REQUEST_CPU,
            };
            assert!(took < bound, "{op:?} took {took:?} of CPU");
        }
        ran += 1;
    }
    ran
}

struct Session {
    core: Core<()>,
    /// The same image, for questions the core does not answer.
    image: Image,
    /// Whether `check` accepts the image: then nodes reached from the root answer
    /// consistently.
    strict: bool,
    /// Nodes named by the core, and whether they were reached from the root.
    nodes: Vec<(u64, bool)>,
    /// Names listed: (directory, name).
    names: Vec<(u64, Vec<u8>)>,
    /// Positions readdir returned: (directory, position).
    positions: Vec<(u64, u64)>,
    /// Xattr names listed: (node, name).
    xattr_names: Vec<(u64, Vec<u8>)>,
    buf: Vec<u8>,
}

fn remember<T>(memory: &mut Vec<T>, item: T) {
    if memory.len() >= MEMORY {
        let i = memory.len() / 2;
        memory.swap_remove(i);
    }
    memory.push(item);
}

fn pick<T>(memory: &[T], i: u8) -> Option<&T> {
    match memory.len() {
        0 => None,
        n => memory.get(usize::from(i) % n),
    }
}

impl Session {
    /// A node and whether it was reached from the root.
    fn node(&self, node: NodeRef) -> (u64, bool) {
        match node {
            NodeRef::Known(i) => *pick(&self.nodes, i).unwrap_or(&(ROOT_ID, true)),
            NodeRef::Raw(n) => (n, false),
        }
    }

    fn name(&self, name: &NameRef) -> Vec<u8> {
        match name {
            NameRef::Listed(i) => pick(&self.names, *i).map_or(Vec::new(), |(_, n)| n.clone()),
            NameRef::Raw(bytes) => bytes.0.clone(),
        }
    }

    /// Whether the properties that need a valid image hold for `node`.
    fn strict_for(&self, reached: bool) -> bool {
        self.strict && reached
    }

    fn op(&mut self, op: &Op) {
        match op {
            Op::Lookup { dir, name } => {
                let (dir, reached) = self.node(*dir);
                let name = self.name(name);
                self.lookup(dir, &name, reached);
            }
            Op::Getattr { node } => {
                let (node, _) = self.node(*node);
                let _ = self.core.getattr(node);
            }
            Op::Readdir {
                dir,
                from,
                plus,
                max,
            } => {
                let (dir, reached) = self.node(*dir);
                let from = match *from {
                    PosRef::Seen(i) => pick(&self.positions, i).map_or(0, |p| p.1),
                    PosRef::Near(i, delta) => pick(&self.positions, i)
                        .map_or(0, |p| p.1.wrapping_add_signed(i64::from(delta))),
                    PosRef::Raw(pos) => pos,
                };
                self.readdir(dir, from, *plus, usize::from(*max) + 1, reached);
            }
            Op::ListAll { dir } => {
                let (dir, reached) = self.node(*dir);
                self.list_all(dir, reached);
            }
            Op::Getxattr { node, name, size } => {
                let (node, _) = self.node(*node);
                let name = match name {
                    NameRef::Listed(i) => match pick(&self.xattr_names, *i) {
                        Some((owner, name)) if *owner == node => name.clone(),
                        Some((_, name)) => name.clone(),
                        None => Vec::new(),
                    },
                    NameRef::Raw(bytes) => bytes.0.clone(),
                };
                self.getxattr(node, &name, *size);
            }
            Op::Listxattr { node, size } => {
                let (node, reached) = self.node(*node);
                self.listxattr(node, *size, reached);
            }
            Op::Read {
                node,
                offset,
                size,
                open,
            } => {
                let (node, reached) = self.node(*node);
                self.read(node, *offset, *size % (MAX_READ + 1), *open, reached);
            }
            Op::Readlink { node } => {
                let (node, reached) = self.node(*node);
                let target = self.core.readlink(node);
                if self.strict_for(reached) {
                    if let Ok(attr) = self.core.getattr(node) {
                        if attr.kind == FileType::Symlink {
                            let target = target.expect("a valid symlink has a target");
                            assert_eq!(target.len() as u64, attr.size, "symlink target length");
                        }
                    }
                }
            }
            Op::Statfs => {
                let _ = self.core.statfs();
            }
        }
    }

    /// Looks `name` up in `dir`; a node found is remembered, and getattr agrees with lookup.
    fn lookup(&mut self, dir: u64, name: &[u8], reached: bool) -> Option<Result<Attr, Errno>> {
        let entry = match self.core.lookup(dir, name) {
            Ok(entry) => entry,
            Err(e) => return Some(Err(e)),
        };
        let attr = entry.attr?;
        assert_eq!(
            self.core.getattr(attr.ino),
            Ok(attr),
            "getattr of the node lookup found in {dir} for {name:?}"
        );
        remember(
            &mut self.nodes,
            (attr.ino, reached && name != b"." && name != b".."),
        );
        Some(Ok(attr))
    }

    /// One readdir(plus) request of at most `max` entries; each entry is checked against
    /// lookup.
    fn readdir(&mut self, dir: u64, from: u64, plus: bool, max: usize, reached: bool) {
        let mut entries = Vec::new();
        if plus {
            let Ok(listing) = self.core.readdirplus(dir, from) else {
                return;
            };
            for entry in listing.take(max) {
                let Ok(entry) = entry else { break };
                entries.push((
                    entry.entry.name.to_vec(),
                    entry.entry.node,
                    entry.entry.next_offset,
                    Some((entry.attr, !entry.ttl.is_zero())),
                ));
            }
        } else {
            let Ok(listing) = self.core.readdir(dir, from) else {
                return;
            };
            for entry in listing.take(max) {
                let Ok(entry) = entry else { break };
                entries.push((entry.name.to_vec(), entry.node, entry.next_offset, None));
            }
        }
        for (name, node, next, plus) in entries {
            remember(&mut self.positions, (dir, next));
            if name == b"." || name == b".." {
                continue;
            }
            self.check_listed(dir, &name, node, plus, reached);
            remember(&mut self.names, (dir, name));
            remember(&mut self.nodes, (node, reached));
        }
    }

    /// A listed entry looks up to the node listed, with readdirplus's attributes, unless
    /// readdirplus said lookup refuses it (then lookup misses or answers EIO).
    fn check_listed(
        &mut self,
        dir: u64,
        name: &[u8],
        node: u64,
        plus: Option<(Attr, bool)>,
        reached: bool,
    ) {
        let found = self.lookup(dir, name, reached);
        if !self.strict_for(reached) {
            return;
        }
        let what = format!("entry {name:?} of directory {dir}");
        match (plus, found) {
            (Some((attr, true)), Some(Ok(found))) => assert_eq!(found, attr, "{what}"),
            (Some((_, true)), other) => panic!("{what}: listed, lookup answers {other:?}"),
            (Some((_, false)), None | Some(Err(Errno::IO))) => {}
            (Some((_, false)), Some(other)) => {
                panic!("{what}: listed as hidden, lookup answers {other:?}")
            }
            (None, Some(Ok(found))) => assert_eq!(found.ino, node, "{what}"),
            (None, None | Some(Err(Errno::IO))) => {}
            (None, Some(Err(e))) => panic!("{what}: listed, lookup answers {e:?}"),
        }
    }

    /// The whole listing of `dir`: readdir and readdirplus agree, resuming after any entry
    /// yields the next one, and every entry looks up as listed.
    fn list_all(&mut self, dir: u64, reached: bool) {
        let Ok(listing) = self.core.readdirplus(dir, 0) else {
            return;
        };
        let plus: Vec<_> = listing
            .take(MAX_LISTED)
            .map(|e| {
                e.map(|e| {
                    (
                        e.entry.name.to_vec(),
                        e.entry.node,
                        e.entry.next_offset,
                        e.attr,
                        e.ttl,
                    )
                })
            })
            .collect();
        let strict = self.strict_for(reached);
        if strict {
            let plain: Vec<_> = self
                .core
                .readdir(dir, 0)
                .expect("readdir answers as readdirplus")
                .take(MAX_LISTED)
                .map(|e| e.map(|e| (e.name.to_vec(), e.node, e.next_offset, e.kind)))
                .collect();
            assert_eq!(plain.len(), plus.len(), "readdir and readdirplus of {dir}");
            for (a, b) in plain.iter().zip(&plus) {
                let (a, b) = (a.as_ref().expect("valid"), b.as_ref().expect("valid"));
                assert_eq!((&a.0, a.1, a.2), (&b.0, b.1, b.2), "readdir of {dir}");
                assert_eq!(a.3, b.3.kind, "type of {:?} in {dir}", a.0);
            }
            for (i, entry) in plus.iter().enumerate().take(64) {
                let next = entry.as_ref().expect("valid").2;
                let resumed = self
                    .core
                    .readdir(dir, next)
                    .expect("readdir resumes")
                    .next()
                    .map(|e| e.expect("valid").name.to_vec());
                let expected = plus
                    .get(i + 1)
                    .map(|e| e.as_ref().expect("valid").0.clone());
                if plus.len() < MAX_LISTED {
                    assert_eq!(resumed, expected, "readdir of {dir} resumed at {next}");
                }
            }
        }
        for entry in plus.into_iter().take(64) {
            let Ok((name, node, next, attr, ttl)) = entry else {
                break;
            };
            remember(&mut self.positions, (dir, next));
            if name == b"." || name == b".." {
                continue;
            }
            self.check_listed(dir, &name, node, Some((attr, !ttl.is_zero())), reached);
            remember(&mut self.nodes, (node, reached));
            remember(&mut self.names, (dir, name));
        }
    }

    /// Whether a regular file's content is in the image (not a basedir object, whose chunk
    /// map writers may omit).
    fn in_image(&self, node: u64) -> bool {
        let root = self.image.root_nid();
        let nid = match node {
            ROOT_ID => root,
            n if n == root => ROOT_ID,
            n => n,
        };
        self.image
            .inode(nid)
            .and_then(|inode| lazycfs::composefs::Placement::of(&inode))
            .is_ok_and(|placement| !placement.is_external())
    }

    fn getxattr(&mut self, node: u64, name: &[u8], size: SizeRef) {
        let full = match self.core.getxattr(node, name, 0) {
            Ok(XattrReply::Size(n)) => n,
            Ok(XattrReply::Data(_)) => panic!("getxattr of size 0 returned data"),
            Err(_) => return,
        };
        let asked = size.asked(full);
        let answer = self.core.getxattr(node, name, asked);
        check_sized(&answer, asked, full, "getxattr");
    }

    /// Lists `node`'s xattrs; every name listed reads back with getxattr.
    fn listxattr(&mut self, node: u64, size: SizeRef, reached: bool) {
        let full = match self.core.listxattr(node, 0, &mut self.buf) {
            Ok(XattrReply::Size(n)) => n,
            Ok(XattrReply::Data(_)) => panic!("listxattr of size 0 returned data"),
            Err(_) => return,
        };
        let asked = size.asked(full);
        let mut buf = std::mem::take(&mut self.buf);
        let answer = self.core.listxattr(node, asked, &mut buf);
        check_sized(&answer, asked, full, "listxattr");
        let names: Vec<Vec<u8>> = match self.core.listxattr(node, u32::MAX, &mut buf) {
            Ok(XattrReply::Data(list)) => {
                assert_eq!(list.len() as u32, full, "listxattr sizes");
                assert!(list.is_empty() || list.ends_with(&[0]), "names end in NUL");
                list.split(|&b| b == 0)
                    .filter(|n| !n.is_empty())
                    .map(<[u8]>::to_vec)
                    .collect()
            }
            other => panic!("listxattr answered {full} bytes, then {other:?}"),
        };
        self.buf = buf;
        for name in names.into_iter().take(64) {
            let value = self.core.getxattr(node, &name, 0);
            if self.strict_for(reached) {
                assert!(
                    matches!(value, Ok(XattrReply::Size(_))),
                    "xattr {:?} of node {node} listed, getxattr answers {value:?}",
                    String::from_utf8_lossy(&name)
                );
            }
            remember(&mut self.xattr_names, (node, name));
        }
    }

    fn read(&mut self, node: u64, offset: OffsetRef, size: u32, open: bool, reached: bool) {
        let attr = self.core.getattr(node).ok();
        let file_size = attr.map_or(0, |a| a.size);
        let offset = match offset {
            OffsetRef::Start(n) => u64::from(n),
            OffsetRef::FromEnd(n) => file_size.saturating_sub(u64::from(n)),
            OffsetRef::Raw(n) => n,
        };
        let handle = if open {
            match self.core.open(node, |_| None) {
                Ok(opened) => opened.handle,
                Err(_) => return,
            }
        } else {
            Handle::Image
        };
        let copy = match self.core.read(node, handle, offset, size) {
            Ok(read) => read.data(&mut self.buf).map(<[u8]>::to_vec),
            Err(e) => Err(e),
        };
        let mut out = vec![0; size as usize];
        let into = match self.core.read(node, handle, offset, size) {
            Ok(read) => read.read_into(&mut out).map(|n| out[..n].to_vec()),
            Err(e) => Err(e),
        };
        assert_eq!(
            copy, into,
            "read of {node} at {offset}: data() and read_into() differ"
        );
        if let Ok(data) = &copy {
            assert!(data.len() <= size as usize, "read returned more than asked");
        }
        let _ = self.core.release(handle);
        let regular = attr.is_some_and(|a| a.kind == FileType::Regular);
        if self.strict_for(reached) && regular && handle == Handle::Image && self.in_image(node) {
            let expected = file_size.saturating_sub(offset).min(u64::from(size));
            let data = copy.expect("a valid regular file reads");
            assert_eq!(data.len() as u64, expected, "read of {node} at {offset}");
        }
    }
}

/// The getxattr/listxattr size protocol: size 0 asks the size, a smaller buffer is ERANGE,
/// a large enough one gets the whole value.
fn check_sized(answer: &Result<XattrReply<'_>, Errno>, asked: u32, full: u32, what: &str) {
    match answer {
        Ok(XattrReply::Size(n)) => assert!(asked == 0 && *n == full, "{what}: {answer:?}"),
        Ok(XattrReply::Data(d)) => assert!(
            asked != 0 && asked >= full && d.len() as u32 == full,
            "{what} of {asked} bytes: {} bytes, size said {full}",
            d.len()
        ),
        Err(e) => assert!(
            *e == Errno::RANGE && asked != 0 && asked < full,
            "{what} of {asked} bytes (size {full}): {e:?}"
        ),
    }
}
