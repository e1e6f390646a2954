//! readdir and readdirplus: what each view lists, positions, resuming, attributes and TTLs.

use super::*;

fn readdirplus(core: &Core<u32>, dir: u64, offset: u64) -> Vec<ReaddirPlusEntry<'_>> {
    core.readdirplus(dir, offset)
        .unwrap()
        .map(|e| e.unwrap())
        .collect()
}

#[test]
fn readdir_lists_what_the_view_shows() {
    let top = [".", "..", "big", "chr", "d", "ext", "link", "nored", "tail"];
    for version in VERSIONS {
        let stubs = version != FormatVersion::V2;
        for view in VIEWS {
            let core = core(view, version);
            let what = format!("{view:?} {version:?}");
            let root: Vec<String> = names(&core, ROOT_ID, 0).into_iter().map(|e| e.0).collect();
            // The root's whiteout stubs: overlayfs filters them out of the (merged) root.
            let (listed, others): (Vec<_>, Vec<_>) =
                root.iter().partition(|n| top.contains(&n.as_str()));
            assert_eq!(listed, top, "{what}");
            let stubs_listed = stubs && view != View::Direct;
            assert_eq!(others.len(), if stubs_listed { 256 } else { 0 }, "{what}");
            // In other directories whiteouts are listed; only lookup hides them.
            let d: Vec<String> = names(&core, node(&core, "/d"), 0)
                .into_iter()
                .map(|e| e.0)
                .collect();
            assert_eq!(d, [".", "..", "inline", "wh"], "{what}");
            let kinds: Vec<FileType> = core
                .readdir(ROOT_ID, 0)
                .unwrap()
                .map(|e| e.unwrap())
                .filter(|e| {
                    ["chr", "d", "link", "big", "."].contains(&&*String::from_utf8_lossy(e.name))
                })
                .map(|e| e.kind)
                .collect();
            use FileType::*;
            assert_eq!(
                kinds,
                [Directory, Regular, CharDevice, Directory, Symlink],
                "{what}"
            );
            let file = node(&core, "/link");
            assert_eq!(core.readdir(file, 0).err(), Some(Errno::NOTDIR), "{what}");
        }
    }
}

#[test]
fn listings_resume_at_every_position() {
    for version in VERSIONS {
        for view in VIEWS {
            let core = core(view, version);
            let what = format!("{view:?} {version:?}");
            for dir in [ROOT_ID, node(&core, "/d")] {
                let all = names(&core, dir, 0);
                let plus: Vec<(String, u64)> = readdirplus(&core, dir, 0)
                    .iter()
                    .map(|e| {
                        (
                            String::from_utf8_lossy(e.entry.name).into_owned(),
                            e.entry.next_offset,
                        )
                    })
                    .collect();
                assert_eq!(plus, all, "{what}: readdirplus lists as readdir");
                for (i, (_, next)) in all.iter().enumerate() {
                    assert_eq!(names(&core, dir, *next), all[i + 1..], "{what} after {i}");
                    let resumed = readdirplus(&core, dir, *next).len();
                    assert_eq!(resumed, all.len() - i - 1, "{what} after {i}");
                }
                let end = all.last().unwrap().1;
                assert!(
                    names(&core, dir, end + 1000).is_empty(),
                    "{what}: past the end"
                );
            }
        }
    }
}

#[test]
fn readdirplus_attributes_match_getattr_and_uncache_what_lookup_refuses() {
    for version in VERSIONS {
        for view in VIEWS {
            let core = core(view, version);
            let what = format!("{view:?} {version:?}");
            for dir in [ROOT_ID, node(&core, "/d")] {
                for plus in readdirplus(&core, dir, 0) {
                    let name = String::from_utf8_lossy(plus.entry.name).into_owned();
                    assert_eq!(plus.attr.ino, plus.entry.node, "{what} {name}");
                    assert_eq!(plus.attr.kind, plus.entry.kind, "{what} {name}");
                    let whiteout = plus.attr.kind == FileType::CharDevice && plus.attr.rdev == 0;
                    let refused = match view {
                        View::Direct => name == "nored" || whiteout,
                        View::OverlayUser => name == "nored",
                        _ => false,
                    };
                    let ttl = if refused { Duration::ZERO } else { TTL };
                    assert_eq!(plus.ttl, ttl, "{what} {name}");
                    if !refused {
                        assert_eq!(
                            core.getattr(plus.entry.node),
                            Ok(plus.attr),
                            "{what} {name}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn a_listing_fills_a_reply_up_to_an_error_or_until_full() {
    let fill = |entries: Vec<Result<u32, Errno>>, room: usize| {
        let mut added = Vec::new();
        let listed = replies::fill_listing(entries, |entry| {
            if added.len() == room {
                return true;
            }
            added.push(entry);
            false
        });
        (listed, added)
    };
    let io = Err(Errno::IO);
    // An error after some entries ends the reply with them; before any, it is the reply.
    assert_eq!(fill(vec![Ok(1), Ok(2), io, Ok(3)], 9), (Ok(()), vec![1, 2]));
    assert_eq!(fill(vec![io, Ok(1)], 9), (Err(Errno::IO), vec![]));
    // A full reply ends the listing, before the error that would have come next.
    assert_eq!(fill(vec![Ok(1), Ok(2), io], 1), (Ok(()), vec![1]));
    assert_eq!(fill(vec![], 9), (Ok(()), vec![]));
}
