//! POSIX ACL xattrs as the kernel reports them: the oracle tests compare a mount against.
//!
//! EROFS stores `system.posix_acl_{access,default}` values raw, but the kernel never returns
//! them raw: it parses them into an ACL and serializes that again (`posix_acl_from_xattr` /
//! `posix_acl_to_xattr`). So a malformed value reads as an error, an empty ACL reads as
//! "no such xattr", and the id field of entries without an id is reported as -1. A mount that
//! must look like the kernel's applies the same transformation.

use rustix::io::Errno;

const VERSION: u32 = 2;
const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_GROUP: u16 = 0x08;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const UNDEFINED_ID: u32 = u32::MAX;

/// The value the kernel returns for a stored ACL xattr value: `Ok(None)` for an empty ACL
/// (ENODATA), `Err` with the kernel's errno for a malformed one.
pub fn kernel_view(stored: &[u8]) -> Result<Option<Vec<u8>>, Errno> {
    let (header, entries) = stored.split_at_checked(4).ok_or(Errno::INVAL)?;
    if u32::from_le_bytes(header.try_into().unwrap()) != VERSION {
        return Err(Errno::OPNOTSUPP);
    }
    if entries.len() % 8 != 0 {
        return Err(Errno::INVAL);
    }
    if entries.is_empty() {
        return Ok(None);
    }
    let mut out = stored.to_vec();
    for entry in out[4..].chunks_exact_mut(8) {
        let tag = u16::from_le_bytes([entry[0], entry[1]]);
        let id = u32::from_le_bytes([entry[4], entry[5], entry[6], entry[7]]);
        match tag {
            ACL_USER_OBJ | ACL_GROUP_OBJ | ACL_MASK | ACL_OTHER => {
                entry[4..].copy_from_slice(&UNDEFINED_ID.to_le_bytes());
            }
            ACL_USER | ACL_GROUP if id != UNDEFINED_ID => {}
            _ => return Err(Errno::INVAL),
        }
    }
    Ok(Some(out))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(entries: &[(u16, u16, u32)]) -> Vec<u8> {
        let mut v = VERSION.to_le_bytes().to_vec();
        for &(tag, perm, id) in entries {
            v.extend_from_slice(&tag.to_le_bytes());
            v.extend_from_slice(&perm.to_le_bytes());
            v.extend_from_slice(&id.to_le_bytes());
        }
        v
    }

    #[test]
    fn mirrors_kernel_parsing() {
        assert_eq!(kernel_view(b"x"), Err(Errno::INVAL));
        assert_eq!(kernel_view(&[1, 0, 0, 0]), Err(Errno::OPNOTSUPP));
        assert_eq!(kernel_view(&acl(&[])), Ok(None));
        assert_eq!(kernel_view(&[2, 0, 0, 0, 1]), Err(Errno::INVAL));
        assert_eq!(kernel_view(&acl(&[(0x40, 7, 0)])), Err(Errno::INVAL));
        let stored = acl(&[(ACL_USER_OBJ, 7, 0), (ACL_USER, 5, 1000), (ACL_OTHER, 4, 3)]);
        let shown = acl(&[
            (ACL_USER_OBJ, 7, u32::MAX),
            (ACL_USER, 5, 1000),
            (ACL_OTHER, 4, u32::MAX),
        ]);
        assert_eq!(kernel_view(&stored), Ok(Some(shown)));
    }
}
