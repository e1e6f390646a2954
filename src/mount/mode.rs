//! The mode policy: what the calling process may mount ([`Privilege`]), and therefore which
//! kind of composefs mount it gets ([`Mode`]) and whether its server may use FUSE passthrough
//! ([`fuse_passthrough`]).
//!
//! The initial user namespace is recognised by the inode of `/proc/self/ns/user`
//! (`PROC_USER_INIT_INO`), not by guessing from `uid_map` contents, which a nested namespace
//! can imitate.

use std::io;
use std::os::unix::fs::MetadataExt;

use crate::view::View;

/// Inode number of the initial user namespace's `/proc/self/ns/user` (`PROC_USER_INIT_INO`
/// in `include/linux/proc_ns.h`).
pub(crate) const PROC_USER_INIT_INO: u64 = 0xEFFF_FFFD;

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
pub(crate) fn in_initial_user_namespace() -> io::Result<bool> {
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

    /// The mode to mount with: `requested` (`None`: chosen by [`Mode::choose`]) and why, or
    /// why that mode cannot serve `wants` with `privilege`.
    pub fn resolve(
        requested: Option<Mode>,
        privilege: Privilege,
        wants: Wants,
    ) -> Result<(Mode, &'static str), ModeError> {
        let chosen = match requested {
            Some(mode) => (mode, "requested"),
            None => Mode::choose(privilege, wants),
        };
        match chosen.0 {
            Mode::Direct if wants.upper => Err(ModeError::UpperNeedsOverlay),
            Mode::Overlay if !wants.basedir => Err(ModeError::OverlayNeedsBasedir),
            Mode::Overlay if privilege == Privilege::Unprivileged => {
                Err(ModeError::OverlayNeedsNamespaceRoot)
            }
            Mode::Kernel if privilege != Privilege::InitialRoot => {
                Err(ModeError::KernelNeedsInitialRoot)
            }
            _ => Ok(chosen),
        }
    }

    /// The mode `--mode auto` picks for `privilege`, and why. An upper directory rules out
    /// the direct mode; without a basedir there is nothing for an overlay to read, so a
    /// namespace root that could mount one gets the direct mode.
    pub fn choose(privilege: Privilege, wants: Wants) -> (Mode, &'static str) {
        match privilege {
            Privilege::InitialRoot => (
                Mode::Kernel,
                "root in the initial user namespace: kernel EROFS + overlayfs",
            ),
            Privilege::NamespaceRoot if !wants.basedir && !wants.upper => (
                Mode::Direct,
                "no basedir, so no overlay is needed: FUSE following nothing",
            ),
            Privilege::NamespaceRoot => (
                Mode::Overlay,
                "root in a user namespace: FUSE lower layer + unprivileged overlayfs",
            ),
            Privilege::Unprivileged if wants.upper => (
                Mode::Overlay,
                "an upper directory needs an overlay (mounting it needs a user namespace)",
            ),
            Privilege::Unprivileged => (
                Mode::Direct,
                "not root: FUSE through fusermount3, following redirects",
            ),
        }
    }

    /// The mode of `lazycfs run`, inside the namespaces
    /// [`enter_private_namespaces`](super::sandbox::enter_private_namespaces) made for a
    /// caller with `privilege`: always an overlay (the command gets the composefs mount), on
    /// kernel EROFS for root in the initial namespace, else on FUSE in the user namespace.
    pub fn for_run(privilege: Privilege) -> Mode {
        match privilege {
            Privilege::InitialRoot => Mode::Kernel,
            Privilege::NamespaceRoot | Privilege::Unprivileged => Mode::Overlay,
        }
    }
}

/// What a mount asks for, which rules modes in or out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Wants {
    /// A basedir: redirected files are read from it (by the server or by an overlay).
    pub basedir: bool,
    /// An upper directory: a writable mount, which only an overlay gives.
    pub upper: bool,
}

/// Why a mode cannot serve a mount (see [`Mode::resolve`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ModeError {
    /// The direct mode was asked for an upper directory.
    #[error("--upper needs an overlay: --mode overlay or kernel")]
    UpperNeedsOverlay,
    /// The overlay mode has no basedir to put under the overlay.
    #[error("the overlay mode needs --basedir")]
    OverlayNeedsBasedir,
    /// The overlay mode without a user namespace.
    #[error(
        "the overlay mode needs root in a user namespace (e.g. under `unshare -Urm`); \
         `lazycfs run` sets one up"
    )]
    OverlayNeedsNamespaceRoot,
    /// The kernel mode outside the initial user namespace, or not as root.
    #[error("the kernel mode needs root in the initial user namespace")]
    KernelNeedsInitialRoot,
}

/// Whether a server serving `view` for a caller with `privilege` may ask the kernel for FUSE
/// passthrough, which lets the kernel read basedir objects itself (the server is told with
/// [`DevFuse::with_passthrough`](crate::server::DevFuse::with_passthrough)). Registering a backing file
/// needs CAP_SYS_ADMIN in the initial user namespace, and a server under an overlay (an
/// overlay view) never serves an object's content: the overlay reads the basedir.
pub fn fuse_passthrough(privilege: Privilege, view: View) -> bool {
    privilege == Privilege::InitialRoot && !view.is_overlay_lower()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOTHING: Wants = Wants {
        basedir: false,
        upper: false,
    };
    const BASEDIR: Wants = Wants {
        basedir: true,
        upper: false,
    };
    const UPPER: Wants = Wants {
        basedir: true,
        upper: true,
    };

    #[test]
    fn auto_mode_follows_privilege() {
        use Privilege::*;
        let auto = |privilege, wants| Mode::choose(privilege, wants).0;
        assert_eq!(auto(InitialRoot, BASEDIR), Mode::Kernel);
        assert_eq!(auto(InitialRoot, NOTHING), Mode::Kernel);
        assert_eq!(auto(NamespaceRoot, BASEDIR), Mode::Overlay);
        assert_eq!(auto(NamespaceRoot, UPPER), Mode::Overlay);
        assert_eq!(auto(NamespaceRoot, NOTHING), Mode::Direct);
        assert_eq!(auto(Unprivileged, BASEDIR), Mode::Direct);
        assert_eq!(auto(Unprivileged, UPPER), Mode::Overlay);
    }

    #[test]
    fn modes_that_cannot_serve_are_refused() {
        use Privilege::*;
        let resolve = |mode, privilege, wants| Mode::resolve(mode, privilege, wants).map(|m| m.0);
        assert_eq!(
            resolve(Some(Mode::Direct), InitialRoot, UPPER),
            Err(ModeError::UpperNeedsOverlay)
        );
        assert_eq!(
            resolve(Some(Mode::Overlay), NamespaceRoot, NOTHING),
            Err(ModeError::OverlayNeedsBasedir)
        );
        assert_eq!(
            resolve(None, Unprivileged, UPPER),
            Err(ModeError::OverlayNeedsNamespaceRoot)
        );
        assert_eq!(
            resolve(Some(Mode::Kernel), NamespaceRoot, BASEDIR),
            Err(ModeError::KernelNeedsInitialRoot)
        );
        assert_eq!(
            resolve(Some(Mode::Direct), InitialRoot, BASEDIR),
            Ok(Mode::Direct)
        );
        assert_eq!(resolve(None, Unprivileged, BASEDIR), Ok(Mode::Direct));
    }

    #[test]
    fn run_always_mounts_an_overlay() {
        assert_eq!(Mode::for_run(Privilege::InitialRoot), Mode::Kernel);
        assert_eq!(Mode::for_run(Privilege::NamespaceRoot), Mode::Overlay);
        assert_eq!(Mode::for_run(Privilege::Unprivileged), Mode::Overlay);
    }

    #[test]
    fn passthrough_only_for_initial_root_serving_content() {
        assert!(fuse_passthrough(Privilege::InitialRoot, View::Direct));
        assert!(!fuse_passthrough(
            Privilege::InitialRoot,
            View::OverlayTrusted
        ));
        assert!(!fuse_passthrough(Privilege::NamespaceRoot, View::Direct));
        assert!(!fuse_passthrough(Privilege::Unprivileged, View::Direct));
    }

    #[test]
    fn detects_this_process() {
        let privilege = Privilege::detect().unwrap();
        let root = rustix::process::geteuid().is_root();
        assert_eq!(privilege == Privilege::Unprivileged, !root);
    }
}
