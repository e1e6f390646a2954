use super::test_image::{CHR, REG, RawXattr, build, inode};
use super::*;
use crate::view::View;

const T: u8 = xattr_index::TRUSTED;
const U: u8 = xattr_index::USER;

fn metacopy_value(digest: &[u8; 32]) -> Vec<u8> {
    let mut value = vec![0, 36, 0, 1];
    value.extend_from_slice(digest);
    value
}

/// A redirect of the form composefs writes for object `id`.
fn redirect_to(id: &[u8; 32]) -> String {
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    format!("/{}/{}", &hex[..2], &hex[2..])
}

#[test]
fn decodes_every_placement_once() {
    let digest = [7u8; 32];
    let with_digest = metacopy_value(&digest);
    let image = build(
        &[
            (REG, &[(U, b"mime_type", b"text/plain")]),
            (REG, &[(T, METACOPY, b""), (T, REDIRECT, b"/ab/cd")]),
            (
                REG,
                &[(T, REDIRECT, b"/ab/cd"), (T, METACOPY, &with_digest)],
            ),
            (REG, &[(T, REDIRECT, b"/ab/cd")]),
            (REG, &[(T, METACOPY, b"")]),
            (CHR, &[(T, METACOPY, b""), (T, REDIRECT, b"/ab/cd")]),
            // Not overlay metadata: another namespace, an escaped name, a longer name.
            (
                REG,
                &[
                    (U, METACOPY, b""),
                    (T, b"overlay.overlay.metacopy", b""),
                    (T, b"overlay.redirectx", b"/x"),
                ],
            ),
        ],
        None,
    );
    let placement = |i| Placement::of(&inode(&image, i)).unwrap();
    let metacopy = |redirect, digest| {
        Placement::Metacopy(Metacopy {
            redirect: Some(redirect).filter(|r: &&[u8]| !r.is_empty()),
            digest,
        })
    };
    assert_eq!(placement(0), Placement::Image);
    assert_eq!(placement(1), metacopy(b"/ab/cd", None));
    assert_eq!(placement(2), metacopy(b"/ab/cd", Some(&digest)));
    assert_eq!(placement(3), Placement::StrayRedirect(b"/ab/cd"));
    assert_eq!(placement(4), metacopy(b"", None));
    assert_eq!(placement(5), Placement::Image);
    assert_eq!(placement(6), Placement::Image);

    // The redirect is borrowed from the mapping, not copied.
    let Placement::Metacopy(Metacopy {
        redirect: Some(redirect),
        ..
    }) = placement(1)
    else {
        unreachable!()
    };
    assert!(image.bytes().as_ptr_range().contains(&redirect.as_ptr()));

    // Overlayfs' reading: only metacopy regular files are metacopy files.
    let is_metacopy: Vec<bool> = (0..7)
        .map(|i| Metacopy::of(&inode(&image, i)).unwrap().is_some())
        .collect();
    assert_eq!(is_metacopy, [false, true, true, false, true, false, false]);
    // composefs tools' reading: a stray redirect counts as external content too.
    let external: Vec<bool> = (0..7).map(|i| placement(i).is_external()).collect();
    assert_eq!(external, [false, true, true, true, true, false, false]);
}

#[test]
fn metacopy_without_redirect_is_unreachable_except_raw() {
    let image = build(
        &[
            (REG, &[(T, METACOPY, b"")]),
            (REG, &[(T, REDIRECT, b"/ab/cd")]),
            (REG, &[(T, METACOPY, b""), (T, REDIRECT, b"/ab/cd")]),
        ],
        None,
    );
    for (view, expected) in [
        (View::Direct, [false, true, true]),
        (View::OverlayUser, [false, true, true]),
        (View::OverlayTrusted, [true, true, true]),
    ] {
        let reachable = [0, 1, 2].map(|i| view.reachable(&inode(&image, i)).unwrap());
        assert_eq!(reachable, expected, "{view:?}");
    }
}

#[test]
fn first_entry_wins_and_the_bloom_filter_is_obeyed_as_by_get() {
    let xattrs: &[RawXattr] = &[
        (T, METACOPY, b""),
        (T, REDIRECT, b"/first"),
        (T, REDIRECT, b"/second"),
    ];
    let image = build(&[(REG, xattrs)], None);
    let file = inode(&image, 0);
    assert_eq!(
        Metacopy::of(&file).unwrap().unwrap().redirect,
        Some(&b"/first"[..])
    );
    // A filter with every bit set claims every name absent: `get` believes it, and so does the
    // model (the filter is never wrong on a sound image).
    let image = build(&[(REG, xattrs)], Some(u32::MAX));
    let file = inode(&image, 0);
    assert_eq!(
        file.xattrs().unwrap().get(b"trusted.overlay.redirect"),
        Ok(None)
    );
    assert_eq!(Placement::of(&file).unwrap(), Placement::Image);
    // With a filter that rules nothing out, the entries are found.
    let image = build(&[(REG, xattrs)], Some(0));
    assert!(Placement::of(&inode(&image, 0)).unwrap().is_external());
}

#[test]
fn object_ids_from_both_digest_forms() {
    let from_metacopy = [0xab; 32];
    let mut from_redirect = [0u8; 32];
    from_redirect[0] = 0xcd;
    from_redirect[31] = 0x01;
    let redirect = redirect_to(&from_redirect);
    let upper = redirect.to_uppercase();
    let with_digest = metacopy_value(&from_metacopy);
    let mut bad_header = with_digest.clone();
    bad_header[3] = 2; // not sha256
    let image = build(
        &[
            (
                REG,
                &[
                    (T, METACOPY, &with_digest),
                    (T, REDIRECT, redirect.as_bytes()),
                ],
            ),
            (
                REG,
                &[(T, METACOPY, b""), (T, REDIRECT, redirect.as_bytes())],
            ),
            (REG, &[(T, REDIRECT, &redirect.as_bytes()[1..])]),
            (REG, &[(T, METACOPY, b""), (T, REDIRECT, upper.as_bytes())]),
            (REG, &[(T, METACOPY, &bad_header)]),
            (REG, &[(T, METACOPY, &with_digest[..35])]),
            (
                REG,
                &[(T, METACOPY, b""), (T, REDIRECT, b"/../../etc/passwd")],
            ),
            (REG, &[]),
        ],
        None,
    );
    let ids: Vec<_> = (0..8)
        .map(|i| Placement::of(&inode(&image, i)).unwrap().object_id())
        .collect();
    assert_eq!(
        ids,
        [
            Some(from_metacopy),
            Some(from_redirect),
            Some(from_redirect),
            Some(from_redirect),
            None,
            None,
            None,
            None
        ]
    );
    // A digest is only taken from the one well-formed metacopy value.
    assert_eq!(metacopy_digest(&bad_header), None);
    assert_eq!(metacopy_digest(b""), None);
    assert_eq!(metacopy_digest(&with_digest), Some(&from_metacopy));
}

#[test]
fn redirects_name_objects_only_in_their_own_shape() {
    let id = [0x5a; 32];
    let redirect = redirect_to(&id);
    assert_eq!(redirect_object(redirect.as_bytes()), Some(id));
    // The object is the last 65 bytes, whatever comes before them.
    assert_eq!(
        redirect_object(format!("/x{redirect}").as_bytes()),
        Some(id)
    );
    let mut no_slash = redirect.clone().into_bytes();
    no_slash[3] = b'5';
    assert_eq!(redirect_object(&no_slash), None);
    assert_eq!(redirect_object(&redirect.as_bytes()[..65]), None);
    let mut not_hex = redirect.into_bytes();
    not_hex[10] = b'g';
    assert_eq!(redirect_object(&not_hex), None);
}
