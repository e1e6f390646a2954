//! Tiny EROFS images built byte by byte for the composefs model's unit tests: an empty root
//! directory and inodes with arbitrary inline xattrs, which no writer would produce (metacopy
//! without redirect, redirect without metacopy, names in any namespace).

use crate::erofs::format::compat;
use crate::erofs::{Image, Inode};

const BLOCK: usize = 4096;
const SUPERBLOCK: usize = 1024;
/// Each inode gets a 512-byte slot (16 nids), room for the inode and its xattrs.
const SLOT_NIDS: u64 = 16;

/// A regular file.
pub(crate) const REG: u16 = 0o100644;
/// A character device (a whiteout when its rdev is 0).
pub(crate) const CHR: u16 = 0o020000;

/// An inline xattr: standard name index, name after the prefix, value.
pub(crate) type RawXattr<'a> = (u8, &'a [u8], &'a [u8]);

/// An image with the root (nid 0) and one inode per `(mode, xattrs)`, at [`nid`]`(i)`;
/// `filter` is the xattr bloom filter of every inode (a set bit: absent), if the image has one.
pub(crate) fn build(inodes: &[(u16, &[RawXattr<'_>])], filter: Option<u32>) -> Image {
    let blocks = 2 + inodes.len() / 8;
    let mut bytes = vec![0u8; blocks * BLOCK];
    let sb = &mut bytes[SUPERBLOCK..];
    sb[..4].copy_from_slice(&0xE0F5_E1E2u32.to_le_bytes());
    sb[12] = 12; // 4 KiB blocks
    sb[36..40].copy_from_slice(&(blocks as u32).to_le_bytes());
    sb[40..44].copy_from_slice(&1u32.to_le_bytes()); // inodes from block 1
    if filter.is_some() {
        sb[8..12].copy_from_slice(&compat::XATTR_FILTER.to_le_bytes());
    }
    put_inode(&mut bytes, 0, 0o040755, &[], filter);
    for (i, (mode, xattrs)) in inodes.iter().enumerate() {
        put_inode(&mut bytes, nid(i), *mode, xattrs, filter);
    }
    Image::from_bytes(bytes).expect("test image opens")
}

/// The nid of the `i`th inode passed to [`build`].
pub(crate) fn nid(i: usize) -> u64 {
    (i as u64 + 1) * SLOT_NIDS
}

/// The `i`th inode passed to [`build`].
pub(crate) fn inode(image: &Image, i: usize) -> Inode<'_> {
    image.inode(nid(i)).expect("test inode decodes")
}

/// A compact, empty, flat inode followed by its inline xattr area.
fn put_inode(bytes: &mut [u8], nid: u64, mode: u16, xattrs: &[RawXattr<'_>], filter: Option<u32>) {
    let mut area = Vec::new();
    if !xattrs.is_empty() {
        area.extend_from_slice(&filter.unwrap_or(0).to_le_bytes());
        area.extend_from_slice(&[0; 8]); // no shared xattrs, reserved
        for (index, name, value) in xattrs {
            area.push(name.len() as u8);
            area.push(*index);
            area.extend_from_slice(&(value.len() as u16).to_le_bytes());
            area.extend_from_slice(name);
            area.extend_from_slice(value);
            area.resize(area.len().next_multiple_of(4), 0);
        }
    }
    let icount = if area.is_empty() {
        0
    } else {
        (area.len() - 12) / 4 + 1
    };
    let at = BLOCK + nid as usize * 32;
    let inode = &mut bytes[at..at + 32 + area.len()];
    assert!(
        inode.len() <= SLOT_NIDS as usize * 32,
        "xattrs overflow the slot"
    );
    inode[2..4].copy_from_slice(&(icount as u16).to_le_bytes());
    inode[4..6].copy_from_slice(&mode.to_le_bytes());
    inode[6..8].copy_from_slice(&1u16.to_le_bytes()); // nlink
    inode[20..24].copy_from_slice(&(nid as u32).to_le_bytes()); // ino
    inode[32..].copy_from_slice(&area);
}
