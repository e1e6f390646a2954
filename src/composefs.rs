//! Composefs conventions layered on EROFS: how file content is redirected to basedir objects
//! (`trusted.overlay.redirect` + `trusted.overlay.metacopy`) and how the image's own overlay
//! xattrs are escaped.

/// The `trusted.overlay.` xattr prefix.
pub const OVERLAY_TRUSTED_PREFIX: &[u8] = b"trusted.overlay.";
/// The escaped form of [`OVERLAY_TRUSTED_PREFIX`]: xattrs meant for the user of the mount.
pub const OVERLAY_ESCAPED_PREFIX: &[u8] = b"trusted.overlay.overlay.";

/// The fs-verity digest in a `trusted.overlay.metacopy` value: 4 header bytes
/// (version 0, length 36, flags 0, algorithm 1 = sha256) followed by the 32-byte digest.
/// `None` for an empty value (metacopy without digest) or any other shape.
pub fn metacopy_digest(value: &[u8]) -> Option<[u8; 32]> {
    match value {
        [0, 36, 0, 1, digest @ ..] => digest.try_into().ok(),
        _ => None,
    }
}

/// The object id named by a `trusted.overlay.redirect` value of the form `/xx/<62 hex>`
/// (one leading `/` optional, hex of either case), as composefs tools parse it.
pub fn redirect_object(value: &[u8]) -> Option<[u8; 32]> {
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

/// The name composefs tools show for an image xattr, or `None` if they hide it: the overlay
/// metadata (`metacopy`, `redirect`, whiteout and opaque markers, any other
/// `trusted.overlay.*`) is hidden and `trusted.overlay.overlay.X` is shown as
/// `trusted.overlay.X`.
pub fn unescape_overlay_xattr(mut name: Vec<u8>) -> Option<Vec<u8>> {
    const HIDDEN: [&[u8]; 8] = [
        b"trusted.overlay.metacopy",
        b"trusted.overlay.redirect",
        b"trusted.overlay.overlay.whiteout",
        b"trusted.overlay.overlay.whiteouts",
        b"trusted.overlay.overlay.opaque",
        b"user.overlay.whiteout",
        b"user.overlay.whiteouts",
        b"user.overlay.opaque",
    ];
    if HIDDEN.contains(&name.as_slice()) {
        return None;
    }
    if name.starts_with(OVERLAY_ESCAPED_PREFIX) {
        name.drain(OVERLAY_TRUSTED_PREFIX.len()..OVERLAY_ESCAPED_PREFIX.len());
        return Some(name);
    }
    (!name.starts_with(OVERLAY_TRUSTED_PREFIX)).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unescapes_one_level() {
        let out = unescape_overlay_xattr(b"trusted.overlay.overlay.overlay.x".to_vec());
        assert_eq!(out.as_deref(), Some(&b"trusted.overlay.overlay.x"[..]));
        assert_eq!(
            unescape_overlay_xattr(b"trusted.overlay.opaque".to_vec()),
            None
        );
        assert_eq!(
            unescape_overlay_xattr(b"user.overlay.opaque".to_vec()),
            None
        );
        let user = unescape_overlay_xattr(b"user.overlay.redirect".to_vec());
        assert_eq!(user.as_deref(), Some(&b"user.overlay.redirect"[..]));
    }

    #[test]
    fn parses_redirects_and_digests() {
        let hex = "ab".to_string() + &"0".repeat(61) + "1";
        let redirect = format!("/{}/{}", &hex[..2], &hex[2..]);
        let id = redirect_object(redirect.as_bytes()).unwrap();
        assert_eq!(id[0], 0xab);
        assert_eq!(id[31], 0x01);
        assert_eq!(redirect_object(b"/../../etc/passwd"), None);
        let mut metacopy = vec![0, 36, 0, 1];
        metacopy.extend_from_slice(&id);
        assert_eq!(metacopy_digest(&metacopy), Some(id));
        assert_eq!(metacopy_digest(b""), None);
    }
}
