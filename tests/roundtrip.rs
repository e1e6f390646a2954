//! `lazycfs dump` of images written by the composefs crate: byte-identical to composefs' own
//! reader, and equal to the input dumpfile as the writer canonicalizes it.

mod common;

use common::cfs;

/// Covers every kind of entry and the composefs encodings (from the composefs dumpfile spec).
const KINDS: &str = include_str!("data/kinds.dump");

/// Whiteout stubs, hex names, lustre/index-0 xattrs, hard links reached depth-first.
const EDGES: &str = r"/ 0 40755 2 0 0 0 100.0 - - -
/00 0 40755 2 0 0 0 100.0 - - -
/00/ab 0 20000 1 0 0 0 100.0 - - -
/0g 0 20000 1 0 0 0 100.0 - - -
/AB 0 20000 1 0 0 0 100.0 - - -
/ab 0 20000 1 0 0 0 100.0 - - -
/ad 3 100644 1 0 0 0 100.0 - abc -
/esc-wh 0 100644 1 0 0 0 100.0 - - - trusted.overlay.whiteout=
/lustre 0 100644 1 0 0 0 100.0 - - - lustre.x=1 system.posix_acl_access=\x02\x00\x00\x00 user.overlay.whiteout= trusted.overlay.metacopy=zz trusted.overlay.redirect=/r
/x 0 40755 3 0 0 0 100.0 - - -
/x/fifo 0 10644 3 0 0 0 100.0 - - -
/x/y 0 40755 2 0 0 0 100.0 - - -
/x/y/fifo2 0 @10644 - - - - 0.0 /x/fifo - -
/zfifo 0 @10644 - - - - 0.0 /x/fifo - -
";

fn assert_same(what: &str, ours: &str, reference: &str) {
    if ours == reference {
        return;
    }
    for (i, (a, b)) in ours.lines().zip(reference.lines()).enumerate() {
        assert_eq!(a, b, "{what}: first difference at line {}", i + 1);
    }
    panic!(
        "{what}: line counts differ: ours {} vs reference {}",
        ours.lines().count(),
        reference.lines().count()
    );
}

/// V2 images store no nanoseconds.
fn without_nsec(dump: &str) -> String {
    let mut out = String::with_capacity(dump.len());
    for line in dump.lines() {
        let mut fields: Vec<String> = line.split(' ').map(str::to_string).collect();
        if fields.len() > 7 && !fields[2].starts_with('@') {
            if let Some((sec, _)) = fields[7].split_once('.') {
                fields[7] = format!("{sec}.0");
            }
        }
        out.push_str(&fields.join(" "));
        out.push('\n');
    }
    out
}

fn check_roundtrip(name: &str, dump: &str, versions: &[u32]) {
    let canonical = cfs::canonical_dump(dump);
    for &version in versions {
        let image = cfs::write_image(dump, version);
        let what = format!("{name} V{version}");
        let ours = cfs::lazycfs_dump(&image);
        assert_same(
            &format!("{what} vs composefs reader"),
            &ours,
            &cfs::reference_dump(&image),
        );
        let expected = if version == 2 {
            without_nsec(&canonical)
        } else {
            canonical.clone()
        };
        assert_same(&format!("{what} vs canonical input"), &ours, &expected);
    }
}

#[test]
fn every_kind_of_entry_round_trips() {
    check_roundtrip("kinds", KINDS, &cfs::VERSIONS);
}

#[test]
fn edge_cases_match_composefs_reader() {
    // Not equal to the canonical input by design: composefs hides root whiteouts with hex
    // names and drops overlay markers; compare with its reader only.
    for version in cfs::VERSIONS {
        let image = cfs::write_image(EDGES, version);
        assert_same(
            &format!("edges V{version}"),
            &cfs::lazycfs_dump(&image),
            &cfs::reference_dump(&image),
        );
    }
}

#[test]
fn corpus_round_trips() {
    let Some(corpus) = cfs::writable_corpus("corpus_round_trips") else {
        return;
    };
    let mut tested = 0;
    for (name, dump) in corpus {
        let mut versions = vec![dump.version];
        versions.extend(cfs::VERSIONS.iter().filter(|&&v| v != dump.version));
        check_roundtrip(name, &dump.text, &versions);
        tested += 1;
    }
    eprintln!("{tested} corpus files round-tripped");
    assert_eq!(tested, cfs::CORPUS_WRITABLE);
}
