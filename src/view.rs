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
//! Names are presented as (static prefix, borrowed parts): nothing is copied. This is the one
//! place overlay names are escaped and unescaped (with the names of [`crate::composefs`]);
//! `dump` prints names as the direct view presents them.

use crate::composefs::{Metacopy, OVERLAY, OVERLAY_ESCAPED, USER_OVERLAY_PREFIX};
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
        if self == View::OverlayTrusted {
            return Ok(true);
        }
        let metacopy = Metacopy::of(inode)?;
        Ok(!matches!(metacopy, Some(Metacopy { redirect: None, .. })))
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
                    strip_parts(&mut parts, OVERLAY.len());
                    return Some(PresentedName {
                        prefix: USER_OVERLAY_PREFIX,
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

    /// How listxattr names an image xattr, or `None` if it leaves it out: as
    /// [`present`](Self::present) shows it, except that the overlay views leave out the names
    /// the overlay keeps private. Overlayfs reads those by name and never lists them to its
    /// users, so nothing changes above the overlay; but a file whose only xattrs are private
    /// (every redirected file) then lists as empty, and the overlay asks once (the size)
    /// instead of twice.
    pub fn listed<'img>(self, xattr: &Xattr<'img>) -> Option<PresentedName<'img>> {
        let name = self.present(xattr)?;
        let private = match self {
            View::Direct => false,
            View::OverlayUser => {
                name.prefix == USER_OVERLAY_PREFIX && !starts_with_parts(&name.parts, OVERLAY)
            }
            View::OverlayTrusted => {
                xattr.name.index == xattr_index::TRUSTED
                    && starts_with_parts(&name.parts, OVERLAY)
                    && !starts_with_parts(&name.parts, OVERLAY_ESCAPED)
            }
        };
        (!private).then_some(name)
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
mod tests;
