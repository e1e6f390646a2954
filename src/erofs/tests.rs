//! Unit tests of the format tables and layout formulas; whole images are exercised by the
//! integration tests (`tests/handmade.rs`, `tests/corruption.rs`, ...).

use super::format::{self, xattr_index};
use super::{Error, FileType, XATTR_PREFIXES, XattrPrefix, index_prefix, split_name};

#[test]
fn xattr_prefix_table_goes_both_ways() {
    for row in XATTR_PREFIXES.iter().filter(|row| row.linux) {
        assert_eq!(index_prefix(row.index), Some(row.prefix));
        let rest: &[u8] = if row.whole_name { b"" } else { b"name" };
        let name = [row.prefix, rest].concat();
        assert_eq!(split_name(&name), Some((row.index, rest)));
    }
    assert_eq!(split_name(b"user."), Some((xattr_index::USER, &b""[..])));
    assert_eq!(split_name(b"system.posix_acl_accessx"), None);
    assert_eq!(split_name(b"lustre.x"), None);
    assert_eq!(split_name(b"x"), None);
}

#[test]
fn the_dumpfile_sees_prefixes_linux_hides() {
    assert_eq!(index_prefix(xattr_index::NONE), None);
    assert_eq!(index_prefix(xattr_index::LUSTRE), None);
    assert_eq!(XattrPrefix::of(xattr_index::NONE).unwrap().prefix, b"");
    assert_eq!(
        XattrPrefix::of(xattr_index::LUSTRE).unwrap().prefix,
        b"lustre."
    );
    assert_eq!(XattrPrefix::of(7), None);
}

#[test]
fn layout_formulas_match_the_kernel() {
    assert_eq!(format::xattr_ibody_size(0), 0);
    assert_eq!(format::xattr_ibody_size(1), 12);
    assert_eq!(format::xattr_ibody_size(3), 20);
    assert_eq!(format::xattr_entry_size(5, 2), 12);
    assert_eq!(format::inode_pos(2, 12, 3), Some(2 * 4096 + 3 * 32));
    assert_eq!(format::inode_pos(0, 12, u64::MAX), None);
    assert_eq!(format::shared_xattr_pos(1, 12, 2), Some(4096 + 8));
    assert_eq!(format::next_long_prefix_pos(8, 3), 16);
    assert_eq!(format::decode_dev(0x0010_0802), (8, 0x102));
    assert_eq!(format::chunk::map_entry_size(format::chunk::INDEXES), 8);
    assert_eq!(format::chunk::map_entry_size(0), 4);
}

#[test]
fn dtype_is_the_type_bits_shifted() {
    let dtypes = [
        (FileType::Fifo, 1),
        (FileType::CharDevice, 2),
        (FileType::Directory, 4),
        (FileType::BlockDevice, 6),
        (FileType::Regular, 8),
        (FileType::Symlink, 10),
        (FileType::Socket, 12),
    ];
    for (file_type, dtype) in dtypes {
        assert_eq!(file_type.dtype(), dtype);
    }
}

#[test]
fn wrong_type_errors_name_the_expected_type() {
    let not_dir = Error::WrongType {
        nid: 7,
        expected: FileType::Directory,
    };
    assert_eq!(not_dir.to_string(), "inode 7: not a directory");
    assert_eq!(not_dir.errno(), rustix::io::Errno::NOTDIR.raw_os_error());
    let not_symlink = Error::WrongType {
        nid: 7,
        expected: FileType::Symlink,
    };
    assert_eq!(not_symlink.to_string(), "inode 7: not a symlink");
    assert_eq!(not_symlink.errno(), rustix::io::Errno::INVAL.raw_os_error());
}
