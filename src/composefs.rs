//! The composefs model: the conventions composefs layers on EROFS, in one place.
//!
//! - The overlay xattr names. Each is spelled after its standard prefix (`trusted.` or `user.`,
//!   the EROFS name index), the way the decoder stores and looks names up: `overlay.` is
//!   overlayfs' own namespace, and `overlay.overlay.` escapes it, naming an xattr the image keeps
//!   for its users rather than for the overlay. [`View`](crate::view::View) presents and
//!   unescapes names with them; `dump` prints names through the direct view.
//! - Where a regular file's content is: [`Placement`], read once per inode from its
//!   `trusted.overlay.metacopy` and `trusted.overlay.redirect`, and the [`Metacopy`] inside it.
//!   The view (reachability), the content source (the object and its fs-verity digest), `check`
//!   and `dump` all ask it.

use crate::erofs::{FileType, Inode, Result, xattr_index};

/// `overlay.`: overlayfs' namespace after `trusted.` (after `user.` for a `userxattr` overlay).
pub const OVERLAY: &[u8] = b"overlay.";
/// `overlay.overlay.`: [`OVERLAY`] escaped. Overlayfs shows `trusted.overlay.overlay.X` as
/// `trusted.overlay.X` and does not obey it.
pub const OVERLAY_ESCAPED: &[u8] = b"overlay.overlay.";
/// `user.overlay.`: the full prefix under which a `userxattr` overlay reads its own xattrs.
pub const USER_OVERLAY_PREFIX: &[u8] = b"user.overlay.";
/// `trusted.overlay.metacopy` after `trusted.`: the file's content is elsewhere.
pub const METACOPY: &[u8] = b"overlay.metacopy";
/// `trusted.overlay.redirect` after `trusted.`: where a metacopy file's content is.
pub const REDIRECT: &[u8] = b"overlay.redirect";
/// `overlay.whiteout` after a prefix: marks a whiteout (escaped in the image, as
/// `trusted.overlay.overlay.whiteout`, on the V0/V1 stubs and escaped whiteouts).
pub const WHITEOUT: &[u8] = b"overlay.whiteout";
/// `overlay.whiteouts` after a prefix: marks a directory holding escaped whiteouts.
pub const WHITEOUTS: &[u8] = b"overlay.whiteouts";
/// `overlay.opaque` after a prefix: marks an opaque directory.
pub const OPAQUE: &[u8] = b"overlay.opaque";

/// A metacopy regular file: its metadata is in the image, its content in a basedir object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metacopy<'img> {
    /// The object's path under the basedir (`trusted.overlay.redirect`). Without one the
    /// content cannot be reached: overlayfs answers EIO.
    pub redirect: Option<&'img [u8]>,
    /// The fs-verity digest the object must have, from the `trusted.overlay.metacopy` value
    /// (`None` for an empty value, a metacopy without digest).
    pub digest: Option<&'img [u8; 32]>,
}

impl<'img> Metacopy<'img> {
    /// `inode`'s metacopy, as overlayfs reads it: `None` for anything but a metacopy regular
    /// file (a redirect without metacopy included).
    pub fn of(inode: &Inode<'img>) -> Result<Option<Metacopy<'img>>> {
        Ok(Placement::of(inode)?.metacopy())
    }
}

/// Where a regular file's content is, as its overlay xattrs say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement<'img> {
    /// In the image: not a regular file, or neither metacopy nor redirect.
    Image,
    /// A redirect without metacopy. Overlayfs ignores it and reads the image; composefs tools
    /// still take the object it names, and writers may leave the image's data map out.
    StrayRedirect(&'img [u8]),
    /// A metacopy file.
    Metacopy(Metacopy<'img>),
}

impl<'img> Placement<'img> {
    /// Reads `inode`'s metacopy and redirect in one pass over its xattrs, skipped for names the
    /// bloom filter rules out. Allocation-free: lookup asks it for every regular file.
    pub fn of(inode: &Inode<'img>) -> Result<Placement<'img>> {
        if inode.file_type() != FileType::Regular {
            return Ok(Placement::Image);
        }
        let xattrs = inode.xattrs()?;
        let trusted = xattr_index::TRUSTED;
        let mut want_metacopy = !xattrs.filtered_out(trusted, METACOPY);
        let mut want_redirect = !xattrs.filtered_out(trusted, REDIRECT);
        let (mut metacopy, mut redirect) = (None, None);
        // The first entry of each name counts, as for `Xattrs::get`.
        let mut entries = xattrs.iter();
        while want_metacopy || want_redirect {
            let Some(xattr) = entries.next().transpose()? else {
                break;
            };
            if xattr.name.index != trusted {
                continue;
            }
            if want_metacopy && xattr.name.rest_eq(METACOPY) {
                metacopy = Some(xattr.value);
                want_metacopy = false;
            } else if want_redirect && xattr.name.rest_eq(REDIRECT) {
                redirect = Some(xattr.value);
                want_redirect = false;
            }
        }
        Ok(match (metacopy, redirect) {
            (Some(value), redirect) => Placement::Metacopy(Metacopy {
                redirect,
                digest: metacopy_digest(value),
            }),
            (None, Some(redirect)) => Placement::StrayRedirect(redirect),
            (None, None) => Placement::Image,
        })
    }

    /// The metacopy, if this is a metacopy file.
    pub fn metacopy(self) -> Option<Metacopy<'img>> {
        match self {
            Placement::Metacopy(metacopy) => Some(metacopy),
            Placement::Image | Placement::StrayRedirect(_) => None,
        }
    }

    /// Whether composefs tools take the content to be outside the image (a metacopy or a
    /// redirect).
    pub fn is_external(self) -> bool {
        self != Placement::Image
    }

    /// The object composefs tools name for the file (its fs-verity digest): the digest in the
    /// metacopy, else the id in a redirect of the form `/xx/<62 hex>`.
    pub fn object_id(self) -> Option<[u8; 32]> {
        match self {
            Placement::Image => None,
            Placement::StrayRedirect(redirect) => redirect_object(redirect),
            Placement::Metacopy(Metacopy { redirect, digest }) => {
                digest.copied().or_else(|| redirect_object(redirect?))
            }
        }
    }
}

/// The fs-verity digest in a `trusted.overlay.metacopy` value: 4 header bytes
/// (version 0, length 36, flags 0, algorithm 1 = sha256) followed by the 32-byte digest.
/// `None` for an empty value (metacopy without digest) or any other shape.
fn metacopy_digest(value: &[u8]) -> Option<&[u8; 32]> {
    match value {
        [0, 36, 0, 1, digest @ ..] => digest.try_into().ok(),
        _ => None,
    }
}

/// The object id named by a `trusted.overlay.redirect` value of the form `/xx/<62 hex>`
/// (one leading `/` optional, hex of either case), as composefs tools parse it.
fn redirect_object(value: &[u8]) -> Option<[u8; 32]> {
    let value = value.strip_prefix(b"/").unwrap_or(value);
    let tail = value.get(value.len().checked_sub(65)?..)?;
    if tail[2] != b'/' {
        return None;
    }
    let mut hex = [0u8; 64];
    hex[..2].copy_from_slice(&tail[..2]);
    hex[2..].copy_from_slice(&tail[3..]);
    let mut id = [0u8; 32];
    for (i, pair) in hex.chunks_exact(2).enumerate() {
        let digit = |c: u8| (c as char).to_digit(16);
        id[i] = (digit(pair[0])? * 16 + digit(pair[1])?) as u8;
    }
    Some(id)
}

#[cfg(test)]
pub(crate) mod test_image;
#[cfg(test)]
mod tests;
