//! What a mount shows of an image: pure policy, no FUSE and no I/O beyond the decoder.
//!
//! - [`View::Direct`]: exactly what the rootful composefs mount (kernel EROFS + overlayfs with
//!   the basedir as data-only layer) shows. Overlayfs hides whiteouts (char 0/0 devices, which
//!   includes the V0/V1 `00`..`ff` stubs in the root), hides its private `trusted.overlay.*`
//!   xattrs and shows the image's escaped `trusted.overlay.overlay.X` as `trusted.overlay.X`.
//! - [`View::OverlayTrusted`]: the raw image, for a privileged overlayfs mounted on top.
//!
//! Names are presented as (static prefix, borrowed parts): nothing is copied.

use crate::erofs::{DirEntry, FileType, Image, Inode, Result, Xattr, xattr_index};

/// How image entries and xattrs are presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum View {
    /// Follow redirects and look like the rootful composefs mount.
    #[default]
    Direct,
    /// Present the image as stored, for an overlayfs with trusted xattrs above the mount.
    OverlayTrusted,
}

/// `overlay.` : the part of `trusted.overlay.*` names after the standard prefix.
const OVERLAY: &[u8] = b"overlay.";
/// `overlay.overlay.` : the escaped form.
const OVERLAY_ESCAPED: &[u8] = b"overlay.overlay.";

/// An xattr name as presented: a static prefix and up to two borrowed parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PresentedName<'img> {
    /// Standard prefix such as `trusted.`.
    pub prefix: &'static [u8],
    /// The rest of the name, in pieces (long-prefix infix, suffix).
    pub parts: [&'img [u8]; 2],
}

impl PresentedName<'_> {
    /// Length of the full name.
    pub fn len(&self) -> usize {
        self.prefix.len() + self.parts[0].len() + self.parts[1].len()
    }

    /// Whether the name is empty (never for presented names).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the full name to `out`.
    pub fn append_to(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(self.prefix);
        out.extend_from_slice(self.parts[0]);
        out.extend_from_slice(self.parts[1]);
    }
}

impl View {
    /// Whether readdir lists an entry of directory `dir_nid`. As overlayfs: whiteouts are
    /// filtered out of the root (always iterated as a merged directory) but listed as they are
    /// in other, pure-lower directories, where only lookup hides them. Decodes the child only
    /// when its dirent type says it may be a whiteout.
    pub fn lists_entry(self, image: &Image, dir_nid: u64, entry: &DirEntry<'_>) -> Result<bool> {
        if self != View::Direct || dir_nid != image.root_nid() {
            return Ok(true);
        }
        let maybe_whiteout = matches!(
            FileType::from_dirent(entry.file_type),
            Some(FileType::CharDevice) | None
        );
        if !maybe_whiteout {
            return Ok(true);
        }
        Ok(!is_whiteout(&image.inode(entry.nid)?))
    }

    /// Whether an inode reached by lookup exists (whiteouts do not, in the direct view).
    pub fn shows_inode(self, inode: &Inode<'_>) -> bool {
        match self {
            View::Direct => !is_whiteout(inode),
            View::OverlayTrusted => true,
        }
    }

    /// Whether an inode can be looked up at all. Overlayfs refuses (EIO) a metacopy file that
    /// has no redirect: its data would have to come from a data-only layer, which is only
    /// reachable through a redirect.
    pub fn reachable(self, inode: &Inode<'_>) -> Result<bool> {
        if self != View::Direct || inode.file_type() != FileType::Regular {
            return Ok(true);
        }
        let xattrs = inode.xattrs()?;
        Ok(xattrs.get(b"trusted.overlay.metacopy")?.is_none()
            || xattrs.get(b"trusted.overlay.redirect")?.is_some())
    }

    /// How an image xattr is presented, or `None` if it is hidden.
    pub fn present<'img>(self, xattr: &Xattr<'img>) -> Option<PresentedName<'img>> {
        let name = xattr.name;
        let prefix = name.prefix()?;
        let mut parts = [name.infix, name.suffix];
        if self == View::Direct && name.index == xattr_index::TRUSTED {
            // Overlay-private names are hidden; escaped ones lose one `overlay.` level.
            if !starts_with_parts(&parts, OVERLAY) {
                return Some(PresentedName { prefix, parts });
            }
            if !starts_with_parts(&parts, OVERLAY_ESCAPED) {
                return None;
            }
            strip_parts(&mut parts, OVERLAY.len());
        }
        Some(PresentedName { prefix, parts })
    }

    /// Where to find a requested xattr in the image: the standard index and the pieces of the
    /// stored name after its prefix. `None` if the view never shows such a name.
    pub fn stored_name(self, requested: &[u8]) -> Option<(u8, [&[u8]; 2])> {
        let (index, rest) = crate::erofs::split_name(requested)?;
        if self == View::Direct && index == xattr_index::TRUSTED && rest.starts_with(OVERLAY) {
            return Some((index, [OVERLAY, rest]));
        }
        Some((index, [rest, b""]))
    }
}

/// An overlayfs whiteout: a character device 0/0.
fn is_whiteout(inode: &Inode<'_>) -> bool {
    inode.file_type() == FileType::CharDevice && inode.rdev_raw() == 0
}

fn starts_with_parts(parts: &[&[u8]; 2], prefix: &[u8]) -> bool {
    let mut bytes = parts[0].iter().chain(parts[1]);
    prefix.iter().all(|b| bytes.next() == Some(b))
}

fn strip_parts(parts: &mut [&[u8]; 2], mut n: usize) {
    for part in parts.iter_mut() {
        let k = n.min(part.len());
        *part = &part[k..];
        n -= k;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::erofs::XattrName;

    fn xattr<'a>(index: u8, suffix: &'a [u8]) -> Xattr<'a> {
        Xattr {
            name: XattrName {
                index,
                infix: b"",
                suffix,
            },
            value: b"v",
        }
    }

    fn shown(view: View, index: u8, suffix: &[u8]) -> Option<Vec<u8>> {
        let mut out = Vec::new();
        view.present(&xattr(index, suffix))?.append_to(&mut out);
        Some(out)
    }

    #[test]
    fn direct_view_unescapes_and_hides_overlay_xattrs() {
        let t = xattr_index::TRUSTED;
        assert_eq!(shown(View::Direct, t, b"overlay.redirect"), None);
        assert_eq!(shown(View::Direct, t, b"overlay.opaque"), None);
        assert_eq!(
            shown(View::Direct, t, b"overlay.overlay.opaque").as_deref(),
            Some(&b"trusted.overlay.opaque"[..])
        );
        assert_eq!(
            shown(View::Direct, t, b"foo").as_deref(),
            Some(&b"trusted.foo"[..])
        );
        assert_eq!(
            shown(View::Direct, xattr_index::USER, b"overlay.opaque").as_deref(),
            Some(&b"user.overlay.opaque"[..])
        );
        assert_eq!(
            shown(View::OverlayTrusted, t, b"overlay.redirect").as_deref(),
            Some(&b"trusted.overlay.redirect"[..])
        );
    }

    #[test]
    fn escaping_round_trips() {
        // Every name the direct view shows maps back to the stored name it came from.
        for suffix in [
            &b"overlay.overlay.opaque"[..],
            b"overlay.overlay.overlay.x",
            b"foo",
        ] {
            let mut shown_name = Vec::new();
            View::Direct
                .present(&xattr(xattr_index::TRUSTED, suffix))
                .unwrap()
                .append_to(&mut shown_name);
            let (index, parts) = View::Direct.stored_name(&shown_name).unwrap();
            assert_eq!(index, xattr_index::TRUSTED);
            assert_eq!([parts[0], parts[1]].concat(), suffix);
        }
    }
}
