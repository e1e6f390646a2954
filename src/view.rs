//! What a mount shows of an image: pure policy, no FUSE and no I/O beyond the decoder.
//!
//! - [`View::Direct`]: exactly what the rootful composefs mount (kernel EROFS + overlayfs with
//!   the basedir as data-only layer) shows. Overlayfs hides whiteouts (char 0/0 devices, which
//!   includes the V0/V1 `00`..`ff` stubs in the root), hides its private `trusted.overlay.*`
//!   xattrs and shows the image's escaped `trusted.overlay.overlay.X` as `trusted.overlay.X`.
//! - [`View::OverlayUser`]: the lower layer of an unprivileged (`userxattr`) overlayfs whose
//!   final mount looks like the rootful one. The image's private `trusted.overlay.X` become
//!   `user.overlay.X` for the overlay to obey; the image's own `user.overlay.X` are escaped as
//!   `user.overlay.overlay.X`, so the overlay shows them again as `user.overlay.X` instead of
//!   obeying them (an image must not steer the overlay); `trusted.*` is presented as in the
//!   direct view (escaped names unescaped), since that overlay leaves `trusted.*` alone.
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
    /// Present overlay xattrs in the `user.overlay.` namespace, for an overlayfs mounted
    /// with `userxattr` above the mount (the rootless composefs mount).
    OverlayUser,
    /// Present the image as stored, for an overlayfs with trusted xattrs above the mount.
    OverlayTrusted,
}

/// `overlay.` : the part of `trusted.overlay.*` names after the standard prefix.
const OVERLAY: &[u8] = b"overlay.";
/// `overlay.overlay.` : the escaped form.
const OVERLAY_ESCAPED: &[u8] = b"overlay.overlay.";
/// Prefixes of the names the overlay views synthesize.
const USER_PREFIX: &[u8] = b"user.";
const USER_OVERLAY_PREFIX: &[u8] = b"user.overlay.";

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
            View::OverlayUser | View::OverlayTrusted => true,
        }
    }

    /// Whether an inode can be looked up at all. Overlayfs refuses (EIO) a metacopy file that
    /// has no redirect: its data would have to come from a data-only layer, which is only
    /// reachable through a redirect. The overlay view refuses it too, with the same error:
    /// a `userxattr` overlay would say EPERM instead (it never follows metacopy origins).
    pub fn reachable(self, inode: &Inode<'_>) -> Result<bool> {
        if self == View::OverlayTrusted || inode.file_type() != FileType::Regular {
            return Ok(true);
        }
        let xattrs = inode.xattrs()?;
        Ok(xattrs.get(b"trusted.overlay.metacopy")?.is_none()
            || xattrs.get(b"trusted.overlay.redirect")?.is_some())
    }

    /// Whether the overlay above the mount, not the server, reads redirected files' content
    /// (from the basedir).
    pub fn is_overlay_lower(self) -> bool {
        self != View::Direct
    }

    /// How an image xattr is presented, or `None` if it is hidden.
    pub fn present<'img>(self, xattr: &Xattr<'img>) -> Option<PresentedName<'img>> {
        let name = xattr.name;
        let prefix = name.prefix()?;
        let mut parts = [name.infix, name.suffix];
        let overlay_name = starts_with_parts(&parts, OVERLAY);
        match (self, name.index) {
            (View::OverlayTrusted, _) => {}
            (View::Direct | View::OverlayUser, xattr_index::TRUSTED) if overlay_name => {
                if starts_with_parts(&parts, OVERLAY_ESCAPED) {
                    // Escaped: loses one `overlay.` level, as overlayfs shows it.
                    strip_parts(&mut parts, OVERLAY.len());
                } else if self == View::OverlayUser {
                    // Private: handed to the userxattr overlay to obey.
                    return Some(PresentedName {
                        prefix: USER_PREFIX,
                        parts,
                    });
                } else {
                    return None;
                }
            }
            (View::OverlayUser, xattr_index::USER) if overlay_name => {
                // The image's own `user.overlay.X`: escaped, so the overlay shows it back.
                return Some(PresentedName {
                    prefix: USER_OVERLAY_PREFIX,
                    parts,
                });
            }
            _ => {}
        }
        Some(PresentedName { prefix, parts })
    }

    /// Where to find a requested xattr in the image: the standard index and the pieces of the
    /// stored name after its prefix. `None` if the view never shows such a name. The inverse
    /// of [`View::present`].
    pub fn stored_name(self, requested: &[u8]) -> Option<(u8, [&[u8]; 2])> {
        let (index, rest) = crate::erofs::split_name(requested)?;
        let overlay_name = rest.starts_with(OVERLAY);
        match (self, index) {
            (View::Direct | View::OverlayUser, xattr_index::TRUSTED) if overlay_name => {
                // Only escaped names are shown in `trusted.overlay.`: add the level back.
                Some((index, [OVERLAY, rest]))
            }
            (View::OverlayUser, xattr_index::USER) if overlay_name => {
                let inner = &rest[OVERLAY.len()..];
                if inner.starts_with(OVERLAY) {
                    // `user.overlay.overlay.X` is the image's `user.overlay.X`.
                    Some((xattr_index::USER, [inner, b""]))
                } else {
                    // `user.overlay.X` is the image's private `trusted.overlay.X`.
                    Some((xattr_index::TRUSTED, [rest, b""]))
                }
            }
            _ => Some((index, [rest, b""])),
        }
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
    fn overlay_user_view_moves_private_names_and_escapes_image_ones() {
        let (t, u) = (xattr_index::TRUSTED, xattr_index::USER);
        type Case<'a> = (u8, &'a [u8], Option<&'a [u8]>);
        let cases: [Case; 6] = [
            (t, b"overlay.redirect", Some(b"user.overlay.redirect")),
            (t, b"overlay.metacopy", Some(b"user.overlay.metacopy")),
            (
                t,
                b"overlay.overlay.opaque",
                Some(b"trusted.overlay.opaque"),
            ),
            (
                u,
                b"overlay.redirect",
                Some(b"user.overlay.overlay.redirect"),
            ),
            (
                u,
                b"overlay.overlay.x",
                Some(b"user.overlay.overlay.overlay.x"),
            ),
            (u, b"mime_type", Some(b"user.mime_type")),
        ];
        for (index, suffix, expected) in cases {
            assert_eq!(
                shown(View::OverlayUser, index, suffix).as_deref(),
                expected,
                "{}",
                String::from_utf8_lossy(suffix)
            );
        }
    }

    #[test]
    fn escaping_round_trips() {
        // Every name a view shows maps back to the stored name it came from.
        let (t, u) = (xattr_index::TRUSTED, xattr_index::USER);
        let stored: [(u8, &[u8]); 7] = [
            (t, b"overlay.overlay.opaque"),
            (t, b"overlay.overlay.overlay.x"),
            (t, b"overlay.redirect"),
            (t, b"foo"),
            (u, b"overlay.whiteout"),
            (u, b"overlay.overlay.x"),
            (u, b"foo"),
        ];
        for view in [View::Direct, View::OverlayUser, View::OverlayTrusted] {
            for (index, suffix) in stored {
                let Some(name) = view.present(&xattr(index, suffix)) else {
                    continue;
                };
                let mut shown_name = Vec::new();
                name.append_to(&mut shown_name);
                let (back, parts) = view.stored_name(&shown_name).unwrap();
                assert_eq!(
                    (back, [parts[0], parts[1]].concat()),
                    (index, suffix.to_vec())
                );
            }
        }
    }
}
