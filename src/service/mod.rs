//! The mount service: a root daemon that gives unprivileged users the kernel's composefs mount
//! (EROFS + overlayfs) without ever letting the kernel parse bytes they wrote.
//!
//! - [`server`]: `lazycfs service`, the daemon. It takes file descriptors only (the image, the
//!   basedir, the caller's empty mountpoint directory), identifies the caller with
//!   `SO_PEERCRED`, reads the image with lazycfs's decoder (refusing what `lazycfs check`
//!   refuses), writes a fresh image from its dump with lazycfs's writer into a sealed memfd,
//!   mounts that on kernel EROFS, and builds the overlay with the caller's own uid, gids and
//!   no capability but `CAP_SYS_ADMIN`, so the basedir is read with the caller's rights.
//!   A caller in a user and mount namespace of its own gets the mount there instead
//!   ([`Placement::OwnNamespaces`], made by `own_namespaces`): the overlay is made inside
//!   its user namespace, over the image rewritten with `user.overlay.*` xattrs.
//! - [`client`]: the caller's side, used by `lazycfs mount --mode service`, `lazycfs run`
//!   and `lazycfs umount`.
//!
//! The protocol is one request per connection on a Unix stream socket: a few text lines ending
//! with an empty line, sent with its file descriptors (`SCM_RIGHTS`) in the first message; the
//! answer is one line, `ok` or `error: WHY`.

use std::io;
use std::path::Path;

pub mod client;
mod own_namespaces;
pub mod server;

/// Where the service listens unless told otherwise (`--listen`, `--service-socket`).
pub const DEFAULT_SOCKET: &str = "/run/lazycfs/mount.sock";

/// The first line of every request.
const HELLO: &str = "lazycfs-service 1";

/// The longest request text accepted (the lines; the file descriptors travel beside them).
const MAX_REQUEST_BYTES: usize = 4096;

/// The most file descriptors a request carries (mount: image, basedir, mountpoint, and for
/// the placement in the caller's own namespaces its user and mount namespaces).
const MAX_FDS: usize = 5;

/// Prefix of the mount source of every mount the service makes, followed by the caller's
/// uid: how `umount` and the per-user limit recognise them. Only root in the initial mount
/// namespace can make mounts there, so a caller cannot forge one.
const SOURCE_PREFIX: &str = "lazycfs:uid=";

/// The mount source the service gives a mount it makes for `uid`.
pub fn mount_source(uid: u32) -> String {
    format!("{SOURCE_PREFIX}{uid}")
}

/// Whether a mount source names a service mount (of any user).
pub fn is_service_source(source: &str) -> bool {
    source
        .strip_prefix(SOURCE_PREFIX)
        .is_some_and(|uid| uid.parse::<u32>().is_ok())
}

/// Where the service puts a mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Placement {
    /// On an empty directory the caller owns, in the service's own namespaces (a plain user
    /// in the initial namespaces, as `fusermount3` mounts); the service unmounts it for its
    /// owner.
    #[default]
    Directory,
    /// In the caller's own user and mount namespaces (file descriptors 3 and 4 of the
    /// request), on any directory there: the caller's own mount, which it unmounts itself.
    OwnNamespaces,
}

/// What a caller asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Request {
    /// Mount the image (fd 0) with the basedir (fd 1) on the mountpoint directory (fd 2).
    Mount {
        /// `--digest`: the caller's image must have this fs-verity digest.
        digest: Option<[u8; 32]>,
        /// `--verity require`.
        require_verity: bool,
        /// Where the mount goes.
        placement: Placement,
    },
    /// Unmount the service mount whose root fd 0 is open on.
    Umount,
}

impl Request {
    /// The request's text.
    fn encode(&self) -> String {
        let mut text = format!("{HELLO}\n");
        match self {
            Request::Mount {
                digest,
                require_verity,
                placement,
            } => {
                text.push_str("mount\n");
                if let Some(digest) = digest {
                    text.push_str(&format!("digest {}\n", crate::create::hex(digest)));
                }
                if *require_verity {
                    text.push_str("verity require\n");
                }
                if *placement == Placement::OwnNamespaces {
                    text.push_str("place own-namespaces\n");
                }
            }
            Request::Umount => text.push_str("umount\n"),
        }
        text.push('\n');
        text
    }

    /// Parses a request's text (without the final empty line).
    fn decode(text: &[u8]) -> Result<Request, String> {
        let text = std::str::from_utf8(text).map_err(|_| "request is not UTF-8".to_string())?;
        let mut lines = text.lines();
        if lines.next() != Some(HELLO) {
            return Err(format!("request does not start with {HELLO:?}"));
        }
        let mut request = match lines.next() {
            Some("mount") => Request::Mount {
                digest: None,
                require_verity: false,
                placement: Placement::Directory,
            },
            Some("umount") => Request::Umount,
            other => return Err(format!("unknown request {:?}", other.unwrap_or(""))),
        };
        for line in lines {
            match (&mut request, line.split_once(' ')) {
                (Request::Mount { digest, .. }, Some(("digest", hex))) => {
                    *digest = Some(parse_digest(hex)?);
                }
                (Request::Mount { require_verity, .. }, Some(("verity", "require"))) => {
                    *require_verity = true;
                }
                (Request::Mount { placement, .. }, Some(("place", "own-namespaces"))) => {
                    *placement = Placement::OwnNamespaces;
                }
                _ => return Err(format!("unknown request line {line:?}")),
            }
        }
        Ok(request)
    }

    /// How many file descriptors the request comes with.
    fn fds(&self) -> usize {
        match self {
            Request::Mount {
                placement: Placement::Directory,
                ..
            } => 3,
            Request::Mount {
                placement: Placement::OwnNamespaces,
                ..
            } => 5,
            Request::Umount => 1,
        }
    }
}

/// A digest given as 64 hex digits.
pub fn parse_digest(hex: &str) -> Result<[u8; 32], String> {
    let bad = || format!("digest {hex:?} is not 64 hex digits");
    if hex.len() != 64 || !hex.is_ascii() {
        return Err(bad());
    }
    let mut digest = [0u8; 32];
    for (i, byte) in digest.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
    }
    Ok(digest)
}

/// Why a request to the service failed, as the client sees it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    /// The service's socket does not answer.
    #[error("mount service at {path}: {source}")]
    Unreachable {
        /// The socket.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// Opening what the request passes failed (with the caller's own rights).
    #[error("{path}: {source}")]
    Open {
        /// The path the caller named.
        path: String,
        /// Why.
        source: io::Error,
    },
    /// The conversation broke off.
    #[error("mount service: {0}")]
    Io(#[from] io::Error),
    /// The service refused the request; its one-line reason.
    #[error("mount service refused: {0}")]
    Refused(String),
}

impl ServiceError {
    fn unreachable(path: &Path, source: io::Error) -> ServiceError {
        ServiceError::Unreachable {
            path: path.display().to_string(),
            source,
        }
    }

    fn open(path: &Path, source: impl Into<io::Error>) -> ServiceError {
        ServiceError::Open {
            path: path.display().to_string(),
            source: source.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip() {
        for request in [
            Request::Mount {
                digest: None,
                require_verity: false,
                placement: Placement::Directory,
            },
            Request::Mount {
                digest: Some([0xab; 32]),
                require_verity: true,
                placement: Placement::OwnNamespaces,
            },
            Request::Umount,
        ] {
            let text = request.encode();
            let body = text.strip_suffix("\n\n").unwrap();
            assert_eq!(Request::decode(body.as_bytes()), Ok(request));
        }
    }

    #[test]
    fn bad_requests_are_refused() {
        assert!(Request::decode(b"hello\nmount").is_err());
        assert!(Request::decode(b"lazycfs-service 1\nformat").is_err());
        assert!(Request::decode(b"lazycfs-service 1\nmount\ndigest 12").is_err());
        assert!(Request::decode(b"lazycfs-service 1\numount\nverity require").is_err());
        assert!(Request::decode(b"lazycfs-service 1\nmount\n\xff").is_err());
        assert!(Request::decode(b"lazycfs-service 1\nmount\nplace elsewhere").is_err());
        assert!(Request::decode(b"lazycfs-service 1\numount\nplace own-namespaces").is_err());
    }

    #[test]
    fn service_sources() {
        assert!(is_service_source(&mount_source(65534)));
        assert!(!is_service_source("lazycfs:uid="));
        assert!(!is_service_source("lazycfs:uid=x"));
        assert!(!is_service_source("composefs"));
    }
}
