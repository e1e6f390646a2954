use super::*;

fn name_of(index: u8, infix: &[u8], suffix: &[u8]) -> Option<String> {
    let name = XattrName {
        index,
        infix,
        suffix,
    };
    dump_name(&name).map(|n| String::from_utf8(n).unwrap())
}

#[test]
fn dump_names_are_the_direct_view_without_markers() {
    let (t, u) = (xattr_index::TRUSTED, xattr_index::USER);
    type Case<'a> = (u8, &'a [u8], Option<&'a str>);
    let cases: [Case; 19] = [
        (t, b"foo", Some("trusted.foo")),
        (t, b"overlay.overlay.x", Some("trusted.overlay.x")),
        (
            t,
            b"overlay.overlay.overlay.x",
            Some("trusted.overlay.overlay.x"),
        ),
        // Private overlay metadata, hidden as the direct view hides it.
        (t, b"overlay.metacopy", None),
        (t, b"overlay.redirect", None),
        (t, b"overlay.opaque", None),
        // Escaped markers: the dumpfile says whiteout/opaque otherwise.
        (t, b"overlay.overlay.whiteout", None),
        (t, b"overlay.overlay.whiteouts", None),
        (t, b"overlay.overlay.opaque", None),
        (
            t,
            b"overlay.overlay.overlay.whiteout",
            Some("trusted.overlay.overlay.whiteout"),
        ),
        (u, b"overlay.whiteout", None),
        (u, b"overlay.whiteouts", None),
        (u, b"overlay.opaque", None),
        (u, b"overlay.redirect", Some("user.overlay.redirect")),
        (
            u,
            b"overlay.overlay.opaque",
            Some("user.overlay.overlay.opaque"),
        ),
        (u, b"overlay.opaquex", Some("user.overlay.opaquex")),
        (xattr_index::SECURITY, b"selinux", Some("security.selinux")),
        (
            xattr_index::POSIX_ACL_ACCESS,
            b"",
            Some("system.posix_acl_access"),
        ),
        (
            xattr_index::POSIX_ACL_DEFAULT,
            b"",
            Some("system.posix_acl_default"),
        ),
    ];
    for (index, suffix, expected) in cases {
        let shown = name_of(index, b"", suffix);
        assert_eq!(
            shown.as_deref(),
            expected,
            "{index} {}",
            String::from_utf8_lossy(suffix)
        );
    }
}

#[test]
fn dump_names_judge_the_full_name_whatever_spells_it() {
    // A long prefix's infix may cut the name anywhere.
    assert_eq!(
        name_of(xattr_index::TRUSTED, b"overlay.over", b"lay.x").as_deref(),
        Some("trusted.overlay.x")
    );
    assert_eq!(
        name_of(xattr_index::TRUSTED, b"over", b"lay.redirect"),
        None
    );
    // Index 0 is a bare name, which may spell any prefix.
    assert_eq!(
        name_of(xattr_index::NONE, b"", b"foo").as_deref(),
        Some("foo")
    );
    assert_eq!(
        name_of(xattr_index::NONE, b"trusted.", b"overlay.overlay.x").as_deref(),
        Some("trusted.overlay.x")
    );
    assert_eq!(
        name_of(xattr_index::NONE, b"", b"trusted.overlay.metacopy"),
        None
    );
    assert_eq!(
        name_of(xattr_index::NONE, b"", b"user.overlay.opaque"),
        None
    );
    assert_eq!(
        name_of(xattr_index::NONE, b"", b"system.posix_acl_access").as_deref(),
        Some("system.posix_acl_access")
    );
    // `lustre.` (index 5) is printed though Linux does not expose it; no overlay rule applies.
    assert_eq!(
        name_of(xattr_index::LUSTRE, b"", b"x").as_deref(),
        Some("lustre.x")
    );
    assert_eq!(
        name_of(xattr_index::LUSTRE, b"", b"overlay.redirect").as_deref(),
        Some("lustre.overlay.redirect")
    );
    // Indexes with no prefix at all are not printed.
    assert_eq!(name_of(7, b"", b"x"), None);
}
