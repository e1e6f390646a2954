//! getxattr and listxattr: presentation and escaping per view, and the size protocol.

use super::*;

fn listed(core: &Core<u32>, path: &str) -> Vec<String> {
    let mut buf = Vec::new();
    let XattrReply::Data(list) = core.listxattr(node(core, path), 4096, &mut buf).unwrap() else {
        panic!("asked for data");
    };
    let mut names: Vec<String> = list
        .split(|&b| b == 0)
        .filter(|n| !n.is_empty())
        .map(|n| String::from_utf8_lossy(n).into_owned())
        .collect();
    assert!(list.is_empty() || list.ends_with(&[0]), "NUL-terminated");
    names.sort();
    names
}

fn value<'a>(core: &'a Core<u32>, path: &str, name: &str) -> Result<&'a [u8], Errno> {
    match core.getxattr(node(core, path), name.as_bytes(), 4096)? {
        XattrReply::Data(value) => Ok(value),
        XattrReply::Size(_) => panic!("asked for data"),
    }
}

#[test]
fn each_view_presents_names_as_its_overlay_expects() {
    // (view, names listed for /d/inline, names /ext answers but does not list: the overlay's
    // private names, which it reads by name and never lists)
    let cases: [(View, &[&str], &[&str]); 3] = [
        (
            View::Direct,
            &[
                "trusted.foo",
                "trusted.overlay.foo",
                "user.a",
                "user.overlay.x",
            ],
            &[],
        ),
        (
            View::OverlayUser,
            &[
                "trusted.foo",
                "trusted.overlay.foo",
                "user.a",
                "user.overlay.overlay.x",
            ],
            &["user.overlay.metacopy", "user.overlay.redirect"],
        ),
        (
            View::OverlayTrusted,
            &[
                "trusted.foo",
                "trusted.overlay.overlay.foo",
                "user.a",
                "user.overlay.x",
            ],
            &["trusted.overlay.metacopy", "trusted.overlay.redirect"],
        ),
    ];
    for version in VERSIONS {
        for (view, inline, ext) in cases {
            let core = core(view, version);
            let what = format!("{view:?} {version:?}");
            assert_eq!(listed(&core, "/d/inline"), inline, "{what}");
            assert_eq!(listed(&core, "/ext"), Vec::<String>::new(), "{what}");
            // Every listed name reads back, and so does every private one.
            for name in inline {
                assert!(value(&core, "/d/inline", name).is_ok(), "{what} {name}");
            }
            for name in ext {
                assert!(value(&core, "/ext", name).is_ok(), "{what} {name}");
            }
        }
    }
}

#[test]
fn getxattr_maps_names_back_to_the_stored_ones() {
    for version in VERSIONS {
        let direct = core(View::Direct, version);
        assert_eq!(
            value(&direct, "/d/inline", "trusted.overlay.foo"),
            Ok(&b"esc"[..])
        );
        assert_eq!(value(&direct, "/d/inline", "user.overlay.x"), Ok(&b"y"[..]));
        let hidden = value(&direct, "/ext", "trusted.overlay.redirect");
        assert_eq!(
            hidden,
            Err(Errno::NODATA),
            "private overlay xattrs are hidden"
        );
        let user = core(View::OverlayUser, version);
        let redirect = format!("/{EXT_OBJECT}");
        let moved = value(&user, "/ext", "user.overlay.redirect");
        assert_eq!(
            moved,
            Ok(redirect.as_bytes()),
            "handed to the userxattr overlay"
        );
        assert_eq!(
            value(&user, "/d/inline", "user.overlay.overlay.x"),
            Ok(&b"y"[..])
        );
        assert_eq!(
            value(&user, "/d/inline", "user.overlay.x"),
            Err(Errno::NODATA)
        );
        let raw = core(View::OverlayTrusted, version);
        let stored = value(&raw, "/ext", "trusted.overlay.redirect");
        assert_eq!(stored, Ok(redirect.as_bytes()));
        assert_eq!(
            value(&raw, "/d/inline", "trusted.overlay.overlay.foo"),
            Ok(&b"esc"[..])
        );
        for core in [&direct, &user, &raw] {
            assert_eq!(value(core, "/d/inline", "user.missing"), Err(Errno::NODATA));
            assert_eq!(value(core, "/d/inline", "nonamespace"), Err(Errno::NODATA));
        }
    }
}

#[test]
fn xattr_replies_follow_the_size_protocol() {
    let core = core(View::Direct, FormatVersion::V1);
    let inline = node(&core, "/d/inline");
    let name = b"trusted.overlay.foo";
    assert_eq!(core.getxattr(inline, name, 0), Ok(XattrReply::Size(3)));
    assert_eq!(core.getxattr(inline, name, 3), Ok(XattrReply::Data(b"esc")));
    assert_eq!(core.getxattr(inline, name, 2), Err(Errno::RANGE));
    let mut buf = Vec::new();
    let list_len = "trusted.foo trusted.overlay.foo user.a user.overlay.x ".len() as u32;
    let size = core.listxattr(inline, 0, &mut buf);
    assert_eq!(size, Ok(XattrReply::Size(list_len)));
    // Sizing the list assembles nothing (a hostile list can reach gigabytes).
    assert!(buf.is_empty());
    let exact = core.listxattr(inline, list_len, &mut buf);
    assert!(matches!(exact, Ok(XattrReply::Data(l)) if l.len() == list_len as usize));
    assert_eq!(
        core.listxattr(inline, list_len - 1, &mut buf),
        Err(Errno::RANGE)
    );
    // Nor does a list too long for the size asked beyond that size: it stops at the name that
    // overflows.
    assert!(buf.len() < list_len as usize - 1, "{}", buf.len());
    // No xattrs at all: an empty list, of size 0.
    let chr = node(&core, "/chr");
    assert_eq!(core.listxattr(chr, 0, &mut buf), Ok(XattrReply::Size(0)));
    assert_eq!(core.listxattr(chr, 10, &mut buf), Ok(XattrReply::Data(b"")));
    let missing = core.getxattr(chr, b"user.a", 10);
    assert_eq!(missing, Err(Errno::NODATA));
}
