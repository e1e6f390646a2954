//! Opens arbitrary bytes as an EROFS image and walks everything the decoder offers: every
//! directory (lookup of every name, readdir resumed at every position), every inode's xattrs
//! (iteration and lookup), data (extents and reads) and symlink target, then `check` and
//! `dump`. Any panic, hang or unbounded allocation is a bug.
//!
//! Run with `cargo fuzz run decode` (nightly); seed the corpus with images from the tests,
//! e.g. `mkfs.erofs`-built ones.

#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/traverse/mod.rs"]
mod traverse;

fuzz_target!(|data: &[u8]| {
    let _ = traverse::open_and_walk(data);
});
