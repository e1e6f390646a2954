//! Shared support for integration tests: kernel mounts, fixture images
//! built with `mkfs.erofs`, and tree walking/comparison.
//!
//! Use from a test crate with `mod common;`.

#![allow(dead_code)]

pub mod cfs;
pub mod decoded;
pub mod fixtures;
pub mod guard;
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

/// Reports a test (or the part of it that needs `feature`) as skipped because the running
/// kernel lacks that feature. Under `CI` this is allowed only when the CI script declares the
/// feature missing in `LAZYCFS_KERNEL_LACKS` (space-separated names), so the log says so and
/// a CI machine that should have it fails instead.
pub fn skip_kernel_lacks(test: &str, feature: &str, reason: &str) {
    let declared = std::env::var("LAZYCFS_KERNEL_LACKS")
        .unwrap_or_default()
        .split_whitespace()
        .any(|f| f == feature);
    if declared {
        eprintln!("SKIP {test}: the kernel lacks {feature} (LAZYCFS_KERNEL_LACKS): {reason}");
    } else {
        skip(test, &format!("the kernel lacks {feature}: {reason}"));
    }
}
