//! A composefs dumpfile (composefs-dump(5)) as a [`Tree`], for `create --from-dump`, as
//! `mkcomposefs --from-file` and composefs-rs read it.
//!
//! One line per entry: `PATH SIZE MODE NLINK UID GID RDEV MTIME PAYLOAD CONTENT DIGEST
//! [XATTR...]`, fields separated by one space, `-` for an empty field, `\\`, `\n`, `\r`, `\t`
//! and `\xHH` escapes. The root comes first; a parent comes before its entries; a hard link
//! (`@` before the mode) names an earlier path in its payload. The dumpfile's nlink is not
//! used: the image counts links itself. Every problem is an error naming its line.

use std::collections::HashMap;

use super::CreateError;
use super::tree::{Kind, Node, Tree};
use crate::erofs::format::{NAME_LEN, NSEC_PER_SEC, SYMLINK_MAX, mode::*};

/// Longest xattr name (`XATTR_NAME_MAX`) and value (`XATTR_SIZE_MAX`) Linux allows.
const XATTR_NAME_MAX: usize = 255;
const XATTR_SIZE_MAX: usize = 65535;

/// Reads `text`, the dumpfile called `file` in messages.
pub fn parse(text: &[u8], file: &str) -> Result<Tree, CreateError> {
    let mut parser = Parser {
        nodes: Vec::new(),
        children: Vec::new(),
        paths: HashMap::new(),
    };
    for (number, line) in text.split(|&b| b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        parser.line(line).map_err(|what| CreateError::Dumpfile {
            file: file.to_string(),
            line: number + 1,
            what,
        })?;
    }
    if parser.nodes.is_empty() {
        return Err(CreateError::Dumpfile {
            file: file.to_string(),
            line: 1,
            what: "no root entry: the dumpfile is empty".into(),
        });
    }
    for (node, mut children) in parser.children.into_iter().enumerate() {
        if let Kind::Directory(list) = &mut parser.nodes[node].kind {
            children.sort_unstable_by(|a, b| a.0.cmp(&b.0));
            *list = children;
        }
    }
    Ok(Tree {
        nodes: parser.nodes,
    })
}

struct Parser {
    nodes: Vec<Node>,
    /// Each node's entries as listed (directories only).
    children: Vec<Vec<(Box<[u8]>, usize)>>,
    /// Every path listed so far, with its node.
    paths: HashMap<Vec<u8>, usize>,
}

/// A line's space-separated fields, taken in order.
struct Fields<'l>(std::slice::Split<'l, u8, fn(&u8) -> bool>);

impl<'l> Fields<'l> {
    fn new(line: &'l [u8]) -> Self {
        Fields(line.split((|&b| b == b' ') as fn(&u8) -> bool))
    }

    /// The next field, called `name` if it is missing.
    fn next(&mut self, name: &str) -> Result<&'l [u8], String> {
        self.0
            .next()
            .ok_or_else(|| format!("the line ends before its {name} field"))
    }
}

/// What an entry that is not a hard link holds, from the fields after its mtime.
struct Contents {
    rdev: u64,
    payload: Option<Vec<u8>>,
    content: Option<Vec<u8>>,
    digest: Option<Vec<u8>>,
}

impl Parser {
    fn line(&mut self, line: &[u8]) -> Result<(), String> {
        let mut fields = Fields::new(line);
        let raw_path = fields.next("path")?;
        let path = unescape(raw_path).map_err(|e| format!("path: {e}"))?;
        let names = split_path(raw_path)?;
        let size = number::<u64>(fields.next("size")?, "size")?;
        let mode_field = fields.next("mode")?;
        let (hardlink, mode_field) = match mode_field.strip_prefix(b"@") {
            Some(rest) => (true, rest),
            None => (false, mode_field),
        };
        let mode = std::str::from_utf8(mode_field)
            .ok()
            .and_then(|m| u32::from_str_radix(m, 8).ok())
            .filter(|&m| m <= 0o177777)
            .ok_or_else(|| format!("mode {}: not an octal mode", show(mode_field)))?;
        let display = String::from_utf8_lossy(&path).into_owned();
        let (parent, name) = self.place(&path, raw_path, &names, mode, hardlink, &display)?;
        if hardlink {
            return self.hard_link(fields, path, parent, name, &display);
        }
        let _nlink = number::<u32>(fields.next("nlink")?, "nlink")?;
        let uid = number::<u32>(fields.next("uid")?, "uid")?;
        let gid = number::<u32>(fields.next("gid")?, "gid")?;
        let rdev = number::<u64>(fields.next("rdev")?, "rdev")?;
        let mtime = mtime(fields.next("mtime")?)?;
        let rest = Contents {
            rdev,
            payload: optional(fields.next("payload")?, "payload")?,
            content: optional(fields.next("content")?, "content")?,
            digest: optional(fields.next("digest")?, "digest")?,
        };
        let mut xattrs = Vec::new();
        for field in fields.0 {
            xattrs.push(xattr(field)?);
        }
        xattrs.sort_unstable();
        if let Some(pair) = xattrs.windows(2).find(|pair| pair[0].0 == pair[1].0) {
            return Err(format!(
                "{display}: xattr {} is given twice",
                String::from_utf8_lossy(&pair[0].0)
            ));
        }
        let kind = kind(mode, size, rest, &display)?;
        let node = self.nodes.len();
        self.nodes.push(Node {
            mode,
            uid,
            gid,
            mtime,
            xattrs,
            kind,
        });
        self.children.push(Vec::new());
        self.paths.insert(path, node);
        if let Some(parent) = parent {
            self.children[parent].push((name.into_boxed_slice(), node));
        }
        Ok(())
    }

    /// Where the entry at `path` goes: its parent directory's node (`None` for the root,
    /// which must come first and only then) and its name.
    fn place(
        &self,
        path: &[u8],
        raw_path: &[u8],
        names: &[Vec<u8>],
        mode: u32,
        hardlink: bool,
        display: &str,
    ) -> Result<(Option<usize>, Vec<u8>), String> {
        if self.paths.contains_key(path) {
            return Err(format!("{display} is listed twice"));
        }
        let Some((name, _)) = names.split_last() else {
            if !self.nodes.is_empty() {
                return Err(format!("{display} is listed twice"));
            }
            if mode & S_IFMT != S_IFDIR || hardlink {
                return Err("the root, /, must be a directory".into());
            }
            return Ok((None, Vec::new()));
        };
        if self.nodes.is_empty() {
            return Err(format!(
                "the first entry must be the root, /, not {display}"
            ));
        }
        let parent_path = &path[..path.len() - raw_name_len(raw_path)];
        let parent_path = match parent_path {
            b"/" => &b"/"[..],
            p => p.strip_suffix(b"/").unwrap_or(p),
        };
        let parent = *self.paths.get(parent_path).ok_or_else(|| {
            format!(
                "{display}: its directory {} is not listed before it",
                String::from_utf8_lossy(parent_path)
            )
        })?;
        if !matches!(self.nodes[parent].kind, Kind::Directory(_)) {
            return Err(format!(
                "{display}: {} is not a directory",
                String::from_utf8_lossy(parent_path)
            ));
        }
        Ok((Some(parent), name.clone()))
    }

    /// A hard link (`@` mode): another name, in `parent`, for the earlier path its payload
    /// names, which may be neither a directory nor a whiteout.
    fn hard_link(
        &mut self,
        mut fields: Fields<'_>,
        path: Vec<u8>,
        parent: Option<usize>,
        name: Vec<u8>,
        display: &str,
    ) -> Result<(), String> {
        for field in ["nlink", "uid", "gid", "rdev", "mtime"] {
            fields.next(field)?;
        }
        let target = unescape(fields.next("payload")?).map_err(|e| format!("payload: {e}"))?;
        let target_display = String::from_utf8_lossy(&target).into_owned();
        let Some(&node) = self.paths.get(&target) else {
            return Err(format!(
                "{display} is a hard link to {target_display}, which no earlier line lists"
            ));
        };
        match self.nodes[node].kind {
            Kind::Directory(_) => {
                return Err(format!(
                    "{display} is a hard link to the directory {target_display}"
                ));
            }
            Kind::Device(0) if self.nodes[node].mode & S_IFMT == S_IFCHR => {
                return Err(format!(
                    "{display} is a hard link to the whiteout {target_display}: a whiteout \
                     cannot have several links"
                ));
            }
            _ => {}
        }
        // The root is not a hard link (`place` refuses it).
        let parent = parent.ok_or("the root, /, must be a directory")?;
        self.paths.insert(path, node);
        self.children[parent].push((name.into_boxed_slice(), node));
        Ok(())
    }
}

/// What an entry of `mode` holds, from its size and the fields after its mtime.
fn kind(mode: u32, size: u64, fields: Contents, display: &str) -> Result<Kind, String> {
    let Contents {
        rdev,
        payload,
        content,
        digest,
    } = fields;
    let not_regular = |what: &str| -> Result<(), String> {
        if content.is_some() || digest.is_some() {
            return Err(format!("{display}: a {what} has no content or digest"));
        }
        if rdev != 0 && what != "device" {
            return Err(format!(
                "{display}: a {what} has no device number (rdev {rdev})"
            ));
        }
        Ok(())
    };
    Ok(match mode & S_IFMT {
        S_IFREG => {
            if rdev != 0 {
                return Err(format!(
                    "{display}: a regular file has no device number (rdev {rdev})"
                ));
            }
            regular_kind(size, payload, content, digest, display)?
        }
        S_IFDIR => {
            not_regular("directory")?;
            Kind::Directory(Vec::new())
        }
        S_IFLNK => {
            not_regular("symlink")?;
            let target = payload
                .ok_or_else(|| format!("{display}: a symlink needs its target as payload"))?;
            if target.contains(&0) {
                return Err(format!("{display}: the symlink target contains a NUL byte"));
            }
            if target.len() as u64 >= SYMLINK_MAX {
                return Err(format!(
                    "{display}: the symlink target of {} bytes is longer than {} bytes",
                    target.len(),
                    SYMLINK_MAX - 1
                ));
            }
            Kind::Symlink(target)
        }
        S_IFCHR | S_IFBLK => {
            not_regular("device")?;
            if u32::try_from(rdev).is_err() {
                return Err(format!(
                    "{display}: device number {rdev} does not fit in 32 bits"
                ));
            }
            Kind::Device(rdev)
        }
        S_IFIFO => {
            not_regular("fifo")?;
            Kind::Special
        }
        S_IFSOCK => {
            not_regular("socket")?;
            Kind::Special
        }
        _ => return Err(format!("{display}: unknown file type in mode {mode:o}")),
    })
}

/// A regular file: an object named by its digest (or by an object-name payload without
/// one), inline content of exactly `size` bytes, or `size` bytes of holes.
fn regular_kind(
    size: u64,
    payload: Option<Vec<u8>>,
    content: Option<Vec<u8>>,
    digest: Option<Vec<u8>>,
    display: &str,
) -> Result<Kind, String> {
    match (payload, digest) {
        (Some(_), Some(digest)) => {
            let digest = hex_digest(&digest)
                .ok_or_else(|| format!("{display}: digest {}: not 64 hex digits", show(&digest)))?;
            Ok(Kind::Object {
                digest,
                verity: true,
                size,
            })
        }
        (Some(payload), None) => {
            let digest = object_digest(&payload).ok_or_else(|| {
                format!(
                    "{display}: payload {} is not an object name (xx/<62 hex>) and no digest \
                     is given",
                    show(&payload)
                )
            })?;
            Ok(Kind::Object {
                digest,
                verity: false,
                size,
            })
        }
        (None, Some(_)) => Err(format!("{display}: a digest without a payload")),
        (None, None) => match content {
            Some(content) if content.len() as u64 != size => Err(format!(
                "{display}: size {size} does not match its {} bytes of content",
                content.len()
            )),
            Some(content) => Ok(Kind::Inline(content)),
            None if size == 0 => Ok(Kind::Inline(Vec::new())),
            None => Ok(Kind::Sparse(size)),
        },
    }
}

/// The unescaped names of an absolute path's components (none for the root), each checked.
fn split_path(raw: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    let Some(rest) = raw.strip_prefix(b"/") else {
        return Err(format!("path {}: not absolute", show(raw)));
    };
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    rest.split(|&b| b == b'/')
        .map(|component| {
            let name = unescape(component).map_err(|e| format!("path {}: {e}", show(raw)))?;
            let problem = match &name[..] {
                b"" => Some("an empty name (// or a trailing /)"),
                b"." | b".." => Some("a . or .. name"),
                n if n.contains(&b'/') => Some("a name containing /"),
                n if n.contains(&0) => Some("a name containing a NUL byte"),
                n if n.len() > NAME_LEN => Some("a name longer than 255 bytes"),
                _ => None,
            };
            match problem {
                Some(problem) => Err(format!("path {}: {problem}", show(raw))),
                None => Ok(name),
            }
        })
        .collect()
}

/// Length of the last component of a raw path, unescaped.
fn raw_name_len(raw: &[u8]) -> usize {
    let last = raw.rsplit(|&b| b == b'/').next().unwrap_or_default();
    unescape(last).map_or(0, |name| name.len())
}

fn number<T: std::str::FromStr>(field: &[u8], name: &str) -> Result<T, String> {
    std::str::from_utf8(field)
        .ok()
        .and_then(|f| f.parse().ok())
        .ok_or_else(|| format!("{name} {}: not a number that fits", show(field)))
}

fn mtime(field: &[u8]) -> Result<(i64, u32), String> {
    let bad = || format!("mtime {}: not SECONDS.NANOSECONDS", show(field));
    let text = std::str::from_utf8(field).map_err(|_| bad())?;
    let (sec, nsec) = text.split_once('.').ok_or_else(bad)?;
    // Seconds before 1970 are negative (as `lazycfs dump` prints them) or their 64 bits
    // unsigned (as composefs-rs reads them): the image stores the same 64 bits.
    let sec = match sec.strip_prefix('-') {
        Some(_) => sec.parse::<i64>().map_err(|_| bad())?,
        None => sec.parse::<u64>().map_err(|_| bad())? as i64,
    };
    let nsec: u32 = nsec.parse().map_err(|_| bad())?;
    if nsec >= NSEC_PER_SEC {
        return Err(format!("mtime {text}: nanoseconds over 999999999"));
    }
    Ok((sec, nsec))
}

/// A field that may be `-` (empty).
fn optional(field: &[u8], name: &str) -> Result<Option<Vec<u8>>, String> {
    if field == b"-" {
        return Ok(None);
    }
    unescape(field)
        .map(Some)
        .map_err(|e| format!("{name}: {e}"))
}

fn xattr(field: &[u8]) -> Result<(Vec<u8>, Vec<u8>), String> {
    let at = field
        .iter()
        .position(|&b| b == b'=')
        .ok_or_else(|| format!("xattr {}: no =", show(field)))?;
    let name = unescape(&field[..at]).map_err(|e| format!("xattr name: {e}"))?;
    let value = unescape(&field[at + 1..]).map_err(|e| format!("xattr value: {e}"))?;
    let shown = String::from_utf8_lossy(&name).into_owned();
    if name.is_empty() || name.contains(&0) {
        return Err(format!(
            "xattr {}: an empty name or one with a NUL byte",
            show(field)
        ));
    }
    if name.len() > XATTR_NAME_MAX {
        return Err(format!(
            "xattr {shown}: name longer than {XATTR_NAME_MAX} bytes"
        ));
    }
    if value.len() > XATTR_SIZE_MAX {
        return Err(format!(
            "xattr {shown}: value of {} bytes, more than {XATTR_SIZE_MAX}",
            value.len()
        ));
    }
    Ok((name, value))
}

/// Undoes the dumpfile escapes.
fn unescape(field: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(field.len());
    let mut bytes = field.iter().copied();
    while let Some(b) = bytes.next() {
        if b != b'\\' {
            out.push(b);
            continue;
        }
        out.push(match bytes.next() {
            Some(b'\\') => b'\\',
            Some(b'n') => b'\n',
            Some(b'r') => b'\r',
            Some(b't') => b'\t',
            Some(b'x') => {
                let hex = [bytes.next(), bytes.next()];
                let digit = |d: Option<u8>| (d? as char).to_digit(16);
                match (digit(hex[0]), digit(hex[1])) {
                    (Some(h), Some(l)) => (h * 16 + l) as u8,
                    _ => return Err(format!("{}: a bad \\x escape", show(field))),
                }
            }
            Some(other) => {
                return Err(format!(
                    "{}: unknown escape \\{}",
                    show(field),
                    other.escape_ascii()
                ));
            }
            None => return Err(format!("{}: a \\ at the end", show(field))),
        });
    }
    Ok(out)
}

/// A 64-hex-digit digest.
fn hex_digest(text: &[u8]) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    let mut digest = [0u8; 32];
    for (i, pair) in text.chunks(2).enumerate() {
        let pair = std::str::from_utf8(pair).ok()?;
        digest[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(digest)
}

/// The digest an object path (`.../xx/<62 hex>`) names.
fn object_digest(path: &[u8]) -> Option<[u8; 32]> {
    let tail = path.get(path.len().checked_sub(65)?..)?;
    if tail[2] != b'/' {
        return None;
    }
    let hex: Vec<u8> = [&tail[..2], &tail[3..]].concat();
    hex_digest(&hex)
}

/// A field as it appears in the dumpfile, for messages.
fn show(field: &[u8]) -> String {
    const MAX: usize = 80;
    let text = String::from_utf8_lossy(field);
    if text.chars().count() > MAX {
        format!("{}…", text.chars().take(MAX).collect::<String>())
    } else {
        text.into_owned()
    }
}
