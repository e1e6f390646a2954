//! The caller's side of the mount service: opens what the request names with the caller's own
//! rights and passes the file descriptors (never paths) to the service.

use std::io::{IoSlice, Read};
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;

use rustix::fs::{Mode, OFlags};
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

use super::{Placement, Request, ServiceError};

/// What to ask the service to mount.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct MountRequest {
    /// The caller's image must have this fs-verity digest (`--digest`).
    pub digest: Option<[u8; 32]>,
    /// `verity=require` on the overlay (`--verity require`).
    pub require_verity: bool,
    /// Where the mount goes; `None`: in this process's own namespaces when it is in a user
    /// namespace other than the initial one, else on the mountpoint as a directory the
    /// caller owns.
    pub placement: Option<Placement>,
}

impl MountRequest {
    /// No digest, no verity requirement.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets the digest the image must have.
    pub fn digest(mut self, digest: Option<[u8; 32]>) -> Self {
        self.digest = digest;
        self
    }

    /// Sets `verity=require`.
    pub fn require_verity(mut self, require: bool) -> Self {
        self.require_verity = require;
        self
    }

    /// Sets where the mount goes.
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = Some(placement);
        self
    }
}

/// Where a mount for this process goes unless told: in its own namespaces when it runs in a
/// user namespace of its own (`unshare -Urm`, `podman unshare`, `lazycfs run`).
pub fn default_placement() -> Placement {
    match crate::mount::mode::in_initial_user_namespace() {
        Ok(false) => Placement::OwnNamespaces,
        _ => Placement::Directory,
    }
}

/// Asks the service listening on `socket` to mount `image` with `basedir` on `mountpoint`:
/// an empty directory the caller owns, or with [`Placement::OwnNamespaces`] any directory in
/// this process's mount namespace, which must belong to a user namespace this user created.
/// Each is opened here with the caller's rights; the service gets the file descriptors.
/// Returns once mounted.
pub fn mount(
    socket: &Path,
    image: &Path,
    basedir: &Path,
    mountpoint: &Path,
    request: &MountRequest,
) -> Result<(), ServiceError> {
    let image_fd = open(image, OFlags::RDONLY)?;
    let basedir_fd = open(basedir, OFlags::RDONLY | OFlags::DIRECTORY)?;
    let mountpoint_fd = open(mountpoint, OFlags::RDONLY | OFlags::DIRECTORY)?;
    let mut fds = vec![image_fd.as_fd(), basedir_fd.as_fd(), mountpoint_fd.as_fd()];
    let placement = request.placement.unwrap_or_else(default_placement);
    let namespaces;
    if placement == Placement::OwnNamespaces {
        namespaces = [
            open(Path::new("/proc/self/ns/user"), OFlags::RDONLY)?,
            open(Path::new("/proc/self/ns/mnt"), OFlags::RDONLY)?,
        ];
        fds.extend(namespaces.iter().map(AsFd::as_fd));
    }
    let request = Request::Mount {
        digest: request.digest,
        require_verity: request.require_verity,
        placement,
    };
    send(socket, &request, &fds)
}

/// Asks the service listening on `socket` to unmount the mount it made for this user on
/// `mountpoint`.
pub fn unmount(socket: &Path, mountpoint: &Path) -> Result<(), ServiceError> {
    let fd = open(mountpoint, OFlags::PATH | OFlags::DIRECTORY)?;
    send(socket, &Request::Umount, &[fd.as_fd()])
}

/// Whether a service answers on `socket` (a connection is accepted).
pub fn answers(socket: &Path) -> Result<(), ServiceError> {
    UnixStream::connect(socket)
        .map(drop)
        .map_err(|e| ServiceError::unreachable(socket, e))
}

fn open(path: &Path, flags: OFlags) -> Result<OwnedFd, ServiceError> {
    rustix::fs::open(path, flags | OFlags::CLOEXEC, Mode::empty())
        .map_err(|e| ServiceError::open(path, e))
}

/// Sends `request` with `fds` and reads the answer.
fn send(socket: &Path, request: &Request, fds: &[BorrowedFd<'_>]) -> Result<(), ServiceError> {
    let mut stream =
        UnixStream::connect(socket).map_err(|e| ServiceError::unreachable(socket, e))?;
    let text = request.encode();
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(super::MAX_FDS))];
    let mut ancillary = SendAncillaryBuffer::new(&mut space);
    ancillary.push(SendAncillaryMessage::ScmRights(fds));
    let sent = rustix::net::sendmsg(
        &stream,
        &[IoSlice::new(text.as_bytes())],
        &mut ancillary,
        SendFlags::NOSIGNAL,
    )
    .map_err(std::io::Error::from)?;
    if sent != text.len() {
        // Requests are a few dozen bytes: a stream socket takes them whole.
        return Err(std::io::Error::other("request sent in part").into());
    }
    let mut answer = Vec::new();
    (&mut stream)
        .take(super::MAX_REQUEST_BYTES as u64)
        .read_to_end(&mut answer)?;
    let answer = String::from_utf8_lossy(&answer);
    let answer = answer.trim_end();
    match answer.strip_prefix("error: ") {
        None if answer == "ok" => Ok(()),
        None if answer.is_empty() => Err(std::io::Error::other("no answer").into()),
        None => Err(ServiceError::Refused(answer.to_string())),
        Some(why) => Err(ServiceError::Refused(why.to_string())),
    }
}
