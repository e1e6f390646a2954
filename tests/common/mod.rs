//! Shared support for integration tests: kernel mounts, fixture images
//! built with `mkfs.erofs`, and tree walking/comparison.
//!
//! Use from a test crate with `mod common;`.

#![allow(dead_code)]

pub mod cfs;
pub mod decoded;
pub mod fixtures;
pub mod handmade;
pub mod kernel;
pub mod objects;
pub mod posix_acl;
pub mod rootless;
pub mod transport;
pub mod tree;

/// Reports a test as skipped (`SKIP <test>: <reason>` on stderr), or panics
/// when the `CI` environment variable is set and non-empty: prerequisites of
/// privileged tests must be present in CI.
pub fn skip(test: &str, reason: &str) {
    if std::env::var_os("CI").is_some_and(|v| !v.is_empty()) {
        panic!("{test}: prerequisite missing under CI (CI is set, refusing to skip): {reason}");
    }
    eprintln!("SKIP {test}: {reason}");
}
