//! Every fuzz target's logic (`fuzz/`), replayed on stable as an ordinary test over the
//! generated seed images (`fuzz/seeds.rs`), whose handmade seeds hold every regression the
//! fuzzers found. The inputs of a local fuzzing run (`fuzz/corpus/<target>/`, and the crash
//! reproducers in `fuzz/artifacts/<target>/`) are replayed by the ignored
//! `local_fuzzing_inputs_replay`: `cargo test --test fuzz_replay -- --ignored`.

mod common;

use std::path::{Path, PathBuf};

use lazycfs::erofs::Corruption;

#[path = "traverse/mod.rs"]
mod traverse;

#[path = "../fuzz/logic/differential.rs"]
mod differential;

#[path = "../fuzz/logic/requests.rs"]
mod requests;

#[path = "../fuzz/seeds.rs"]
mod seeds;

/// The files of `fuzz/<dir>/<target>/`, if any.
fn stored_inputs(dir: &str, target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(dir)
        .join(target);
    let Ok(entries) = std::fs::read_dir(&path) else {
        return Vec::new();
    };
    let mut inputs: Vec<_> = entries
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .map(|p| {
            let bytes = std::fs::read(&p).unwrap();
            (p, bytes)
        })
        .collect();
    inputs.sort();
    inputs
}

/// The node id of an absolute path, by lookups from the root (not by `check`).
fn nid_of(image: &lazycfs::erofs::Image, path: &str) -> u64 {
    let mut nid = image.root_nid();
    for name in path.split('/').filter(|n| !n.is_empty()) {
        let dir = image.inode(nid).unwrap().dir().unwrap();
        nid = dir.lookup(name.as_bytes()).unwrap().expect(path).nid;
    }
    nid
}

/// Seed images (needs mkfs.erofs; a skip fails under CI).
fn seed_images(test: &str) -> Vec<seeds::Seed> {
    let mut all = seeds::composefs_seeds();
    all.extend(seeds::handmade_seeds());
    if common::fixtures::require_mkfs(test) {
        let work = tempfile::tempdir().unwrap();
        all.extend(seeds::mkfs_seeds(work.path()).expect("mkfs.erofs builds the seed tree"));
    }
    all
}

/// Runs `check` over every stored input of `target`, naming the file that fails.
fn replay_stored(target: &str, check: impl Fn(&[u8])) -> usize {
    let mut n = 0;
    for dir in ["corpus", "artifacts"] {
        for (path, bytes) in stored_inputs(dir, target) {
            let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&bytes)));
            assert!(result.is_ok(), "{target}: {} fails", path.display());
            n += 1;
        }
    }
    n
}

#[test]
fn decode_replays() {
    let seeds = seed_images("decode_replays");
    for seed in &seeds {
        let walk = traverse::open_and_walk(&seed.image);
        // Writers' images check, dump and answer consistently; only the handmade ones are
        // broken. (Reading data may fail: composefs writers omit external files' chunk maps.)
        if !seed.name.starts_with("hand-") {
            let walk = walk.unwrap_or_else(|e| panic!("{}: {e}", seed.name));
            assert!(
                walk.check_ok && walk.dump_ok && walk.consistent,
                "{}: {walk:?}",
                seed.name
            );
        }
    }
    eprintln!("decode: {} seeds", seeds.len());
}

#[test]
fn differential_replays() {
    // composefs' reader recurses once per directory level (up to 4096 levels): more than a
    // test thread's stack in unoptimized builds.
    std::thread::Builder::new()
        .stack_size(256 << 20)
        .spawn(differential_replays_on_this_thread)
        .unwrap()
        .join()
        .unwrap();
}

fn differential_replays_on_this_thread() {
    let seeds = seed_images("differential_replays");
    let mut same = 0;
    for seed in &seeds {
        let outcome = differential::run(&seed.image);
        if let differential::Outcome::ReferencePanicked(message) = &outcome {
            eprintln!("{}: composefs reader panicked: {message}", seed.name);
        }
        // Every composefs-written seed is read by both and dumped the same.
        if seed.name.starts_with("cfs-") {
            assert_eq!(outcome, differential::Outcome::Same, "{}", seed.name);
        }
        same += usize::from(outcome == differential::Outcome::Same);
    }
    // The composefs-written seeds (each asserted `Same` above) and the mkfs.erofs and
    // handmade ones both readers agree on.
    let written = seeds.iter().filter(|s| s.name.starts_with("cfs-")).count();
    assert_eq!(written, seeds::composefs_seeds().len());
    assert!(
        same > written,
        "only {same} seeds compared, {written} composefs-written"
    );
    // Found by the fuzzer: composefs ignores a compact inode's `i_mtime`, the kernel and
    // lazycfs add it to the epoch (compared with the field as writers store it); and a
    // directory whose dirents are out of order dumps in name order, as composefs prints it.
    for name in ["hand-compact-mtime", "hand-unsorted"] {
        let seed = seeds.iter().find(|s| s.name == name).expect("seed built");
        assert_eq!(
            differential::run(&seed.image),
            differential::Outcome::Same,
            "{name}"
        );
    }
    // Found by the fuzzer: composefs' reader accepts names the kernel does not list.
    let slash = seeds.iter().find(|s| s.name == "hand-slash-name");
    assert_eq!(
        differential::run(&slash.expect("seed built").image),
        differential::Outcome::ReferenceInvalid
    );
    // ... and what lazycfs refuses on purpose: `i_format` bits, a directory size ending
    // inside the dirents and inline data crossing a block (which the kernel refuses too), a
    // size over i64::MAX, an empty symlink target and one of PATH_MAX bytes or more, and
    // superblock nanoseconds of 10^9 or more or a `dirblkbits` other than 0.
    for name in [
        "hand-format-bits",
        "hand-root-format-bits",
        "hand-sb-nanoseconds",
        "hand-sb-dirblkbits",
        "hand-short-dir",
        "hand-huge-size",
        "hand-inline-cross",
        "hand-empty-symlink",
        "hand-long-symlink",
    ] {
        let seed = seeds.iter().find(|s| s.name == name).expect("seed built");
        let outcome = differential::run(&seed.image);
        assert!(
            matches!(outcome, differential::Outcome::RefusedOnPurpose(_)),
            "{name}: {outcome:?}"
        );
    }
    let compact = seeds.iter().find(|s| s.name == "hand-compact-mtime");
    let dumped = common::cfs::lazycfs_dump(&compact.unwrap().image);
    assert!(dumped.contains(" 1000001.0 "), "epoch + i_mtime:\n{dumped}");
    eprintln!("differential: {} seeds ({same} compared)", seeds.len());
}

#[test]
fn requests_replay() {
    let seeds = seed_images("requests_replay");
    let mut ops = 0;
    for seed in &seeds {
        let opens = lazycfs::erofs::Image::from_bytes(seed.image.clone()).is_ok();
        for script in seeds::scripts() {
            let input = requests::input(&script, &seed.image);
            let ran = requests::run(&input, None);
            // Every operation of the script runs on an image that opens, none on the others.
            let expected = if opens {
                requests::parse(&input).0.ops.len()
            } else {
                0
            };
            assert_eq!(ran, expected, "{}", seed.name);
            ops += ran;
        }
    }
    assert!(ops > 0);
    // Found by the fuzzer: names listxattr lists but getxattr cannot find (as in the kernel):
    // `user.roo` for a stored `user.roo\0`, and a name the bloom filter says is absent.
    // `check` refuses both, naming the inode whose xattr was patched (`fuzz/seeds.rs`): the
    // root's `user.root`; the first name containing `overlay.overlay.whiteout`, which is
    // `/esc-wh`'s escaped whiteout in V2 and, in V0, the shared
    // `trusted.overlay.overlay.whiteouts` that marks the directories holding whiteout stubs,
    // the root first.
    for (name, path, what) in [
        ("hand-xattr-nul", "/", Corruption::BadXattrName),
        ("hand-xattr-filter-v0", "/", Corruption::XattrFilterMismatch),
        (
            "hand-xattr-filter-v2",
            "/esc-wh",
            Corruption::XattrFilterMismatch,
        ),
        // And a `..` typed as a block device in `/a`: readdir and readdirplus disagreed on its
        // type. The error names the directory holding the entry.
        ("hand-dotdot-type", "/a/..", Corruption::BadDotEntry),
    ] {
        let seed = seeds.iter().find(|s| s.name == name).expect("seed built");
        let image = lazycfs::erofs::Image::from_bytes(seed.image.clone()).unwrap();
        let error = lazycfs::check::check(&image).unwrap_err();
        assert_eq!(error.path, path, "{name}");
        let nid = nid_of(&image, path.trim_end_matches("/.."));
        assert_eq!(
            error.error,
            lazycfs::erofs::Error::Corrupt { nid, what },
            "{name}"
        );
        assert_eq!(error.nid, nid, "{name}");
    }
    eprintln!("requests: {} seeds, {ops} operations", seeds.len());
}

/// The inputs a local fuzzing run left (CI fuzzes after `cargo test`, so there are none
/// then): each target's corpus and crash reproducers, replayed on stable with the same
/// properties the targets check.
#[test]
#[ignore = "needs a local fuzzing run's fuzz/corpus or fuzz/artifacts"]
fn local_fuzzing_inputs_replay() {
    let decode = replay_stored("decode", |bytes| {
        let _ = traverse::open_and_walk(bytes);
    });
    let differential = replay_stored("differential", |bytes| {
        if let differential::Outcome::ReferencePanicked(message) = differential::run(bytes) {
            eprintln!("composefs reader panicked: {message}");
        }
    });
    let requests = replay_stored("requests", |bytes| {
        requests::run(bytes, None);
    });
    eprintln!("stored inputs: decode {decode}, differential {differential}, requests {requests}");
    assert!(
        decode + differential + requests > 0,
        "no stored inputs: run the fuzzers first (fuzz/README.md)"
    );
}
