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

#[test]
fn escaping_round_trips_across_long_prefix_infixes() {
    // A long prefix may cut the name anywhere: the rules see the whole rest of the name.
    let (t, u) = (xattr_index::TRUSTED, xattr_index::USER);
    let stored: [(u8, &[u8], &[u8]); 5] = [
        (t, b"over", b"lay.overlay.opaque"),
        (t, b"overlay.over", b"lay.x"),
        (t, b"overlay.", b"redirect"),
        (u, b"overlay.ov", b"erlay.x"),
        (u, b"overlay.", b"whiteout"),
    ];
    for view in [View::Direct, View::OverlayUser, View::OverlayTrusted] {
        for (index, infix, suffix) in stored {
            let xattr = Xattr {
                name: XattrName {
                    index,
                    infix,
                    suffix,
                },
                value: b"v",
            };
            let whole = Xattr {
                name: XattrName {
                    index,
                    infix: b"",
                    suffix: &[infix, suffix].concat(),
                },
                value: b"v",
            };
            let shown = |x: &Xattr<'_>| {
                let mut out = Vec::new();
                view.present(x).map(|name| {
                    name.append_to(&mut out);
                    out
                })
            };
            assert_eq!(shown(&xattr), shown(&whole), "{view:?}");
            let Some(name) = shown(&xattr) else { continue };
            let (back, parts) = view.stored_name(&name).unwrap();
            assert_eq!((back, parts.concat()), (index, [infix, suffix].concat()));
        }
    }
}

#[test]
fn every_view_answers_getxattr_for_exactly_the_names_it_presents() {
    use crate::composefs::test_image::{REG, build, inode};
    let (t, u, s) = (
        xattr_index::TRUSTED,
        xattr_index::USER,
        xattr_index::SECURITY,
    );
    let stored: &[(u8, &[u8], &[u8])] = &[
        (t, b"overlay.metacopy", b""),
        (t, b"overlay.redirect", b"/ab/cd"),
        (t, b"overlay.opaque", b"y"),
        (t, b"overlay.overlay.opaque", b"escaped"),
        (t, b"overlay.overlay.overlay.x", b"twice"),
        (t, b"foo", b"1"),
        (u, b"overlay.whiteout", b"2"),
        (u, b"overlay.overlay.x", b"3"),
        (u, b"mime_type", b"4"),
        (s, b"selinux", b"5"),
        (xattr_index::POSIX_ACL_ACCESS, b"", b"\x02\0\0\0"),
    ];
    let image = build(&[(REG, stored)], None);
    let file = inode(&image, 0);
    let xattrs = file.xattrs().unwrap();
    // Every name any view lists, and every stored name.
    let mut candidates: Vec<Vec<u8>> = Vec::new();
    for xattr in xattrs.iter() {
        let xattr = xattr.unwrap();
        candidates.push(xattr.name.to_vec());
        for view in [View::Direct, View::OverlayUser, View::OverlayTrusted] {
            if let Some(name) = view.present(&xattr) {
                let mut out = Vec::new();
                name.append_to(&mut out);
                candidates.push(out);
            }
        }
    }
    for view in [View::Direct, View::OverlayUser, View::OverlayTrusted] {
        let mut listed = Vec::new();
        for xattr in xattrs.iter() {
            let xattr = xattr.unwrap();
            if let Some(name) = view.present(&xattr) {
                let mut out = Vec::new();
                name.append_to(&mut out);
                listed.push((out, xattr.value));
            }
        }
        for name in &candidates {
            let got = view
                .stored_name(name)
                .and_then(|(index, parts)| xattrs.get_parts(index, &parts).unwrap());
            let expected = listed.iter().find(|(n, _)| n == name).map(|(_, v)| *v);
            assert_eq!(got, expected, "{view:?} {}", String::from_utf8_lossy(name));
        }
        let mut names: Vec<_> = listed.iter().map(|(n, _)| n).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), listed.len(), "{view:?} lists a name twice");
    }
}

fn listed(view: View, index: u8, suffix: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    view.listed(&xattr(index, suffix))?.append_to(&mut out);
    Some(out)
}

#[test]
fn overlay_views_leave_private_names_out_of_listxattr_but_answer_them() {
    let (t, u) = (xattr_index::TRUSTED, xattr_index::USER);
    let private: &[u8] = b"overlay.redirect";
    for view in [View::OverlayUser, View::OverlayTrusted] {
        assert_eq!(listed(view, t, private), None, "{view:?}");
        let presented = shown(view, t, private).unwrap();
        assert!(view.stored_name(&presented).is_some(), "{view:?}");
        // Escaped and ordinary names are listed as presented.
        for (index, suffix) in [(t, &b"overlay.overlay.opaque"[..]), (t, b"foo"), (u, b"x")] {
            assert_eq!(
                listed(view, index, suffix),
                shown(view, index, suffix),
                "{view:?}"
            );
        }
    }
    assert_eq!(
        listed(View::OverlayUser, u, b"overlay.whiteout").as_deref(),
        Some(&b"user.overlay.overlay.whiteout"[..])
    );
    // The direct view lists what it presents.
    for (index, suffix) in [(t, private), (t, &b"overlay.overlay.opaque"[..]), (u, b"x")] {
        assert_eq!(
            listed(View::Direct, index, suffix),
            shown(View::Direct, index, suffix)
        );
    }
}
