//! What the calling process may mount, and therefore which kind of composefs mount it gets.
//!
//! The initial user namespace is recognised by the inode of `/proc/self/ns/user`
//! (`PROC_USER_INIT_INO`), not by guessing from `uid_map` contents, which a nested namespace
//! can imitate.

use std::io;
use std::os::unix::fs::MetadataExt;

/// Inode number of the initial user namespace's `/proc/self/ns/user` (`PROC_USER_INIT_INO`
/// in `include/linux/proc_ns.h`).
const PROC_USER_INIT_INO: u64 = 0xEFFF_FFFD;

/// The caller's standing for mounting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// Root (euid 0) in the initial user namespace: can mount EROFS and overlayfs.
    InitialRoot,
    /// Root in a user namespace it owns (e.g. after `unshare -Ur`): can mount FUSE and
    /// overlayfs there, but not EROFS.
    NamespaceRoot,
    /// Anyone else: only `fusermount3` can mount for it.
    Unprivileged,
}

impl Privilege {
    /// The calling process's privilege.
    pub fn detect() -> io::Result<Privilege> {
        if !rustix::process::geteuid().is_root() {
            return Ok(Privilege::Unprivileged);
        }
        if in_initial_user_namespace()? {
            Ok(Privilege::InitialRoot)
        } else {
            Ok(Privilege::NamespaceRoot)
        }
    }
}

/// Whether the calling process is in the initial user namespace.
pub fn in_initial_user_namespace() -> io::Result<bool> {
    let ns = std::fs::metadata("/proc/self/ns/user")
        .map_err(|e| io::Error::new(e.kind(), format!("/proc/self/ns/user: {e}")))?;
    Ok(ns.ino() == PROC_USER_INIT_INO)
}

/// How an image is mounted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Mode {
    /// The FUSE server alone, following redirects itself (any user, via `fusermount3`).
    Direct,
    /// The FUSE server as the lower layer of an overlayfs that reads file content from the
    /// basedir itself (root in a user namespace).
    Overlay,
    /// Kernel EROFS + overlayfs, as `mount.composefs` does (root in the initial namespace).
    Kernel,
}

impl Mode {
    /// The name `--mode` uses for it.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Direct => "direct",
            Mode::Overlay => "overlay",
            Mode::Kernel => "kernel",
        }
    }

    /// The mode `--mode auto` picks for `privilege`, and why. `wants_overlay` (an upper
    /// directory was given) rules out the direct mode.
    pub fn choose(privilege: Privilege, wants_overlay: bool) -> (Mode, &'static str) {
        match privilege {
            Privilege::InitialRoot => (
                Mode::Kernel,
                "root in the initial user namespace: kernel EROFS + overlayfs",
            ),
            Privilege::NamespaceRoot => (
                Mode::Overlay,
                "root in a user namespace: FUSE lower layer + unprivileged overlayfs",
            ),
            Privilege::Unprivileged if wants_overlay => (
                Mode::Overlay,
                "an upper directory needs an overlay (mounting it needs a user namespace)",
            ),
            Privilege::Unprivileged => (
                Mode::Direct,
                "not root: FUSE through fusermount3, following redirects",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_mode_follows_privilege() {
        assert_eq!(Mode::choose(Privilege::InitialRoot, false).0, Mode::Kernel);
        assert_eq!(
            Mode::choose(Privilege::NamespaceRoot, false).0,
            Mode::Overlay
        );
        assert_eq!(Mode::choose(Privilege::Unprivileged, false).0, Mode::Direct);
        assert_eq!(Mode::choose(Privilege::Unprivileged, true).0, Mode::Overlay);
    }

    #[test]
    fn detects_this_process() {
        let privilege = Privilege::detect().unwrap();
        let root = rustix::process::geteuid().is_root();
        assert_eq!(privilege == Privilege::Unprivileged, !root);
    }
}
