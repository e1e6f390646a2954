//! Making FUSE mounts: with the new mount API as root, and otherwise through `fusermount3`,
//! the setuid helper that lets any user mount: it mounts, then hands the `/dev/fuse`
//! descriptor back over a socket (`_FUSE_COMMFD`), as libfuse does.
//!
//! lazycfs mounts itself rather than through fuser's own mount because of what fuser does
//! afterwards: when its session ends it unmounts the mountpoint again whenever the device
//! reports `POLLERR`, which is exactly the state of a connection whose mount is already gone,
//! and so it unmounts whatever has been mounted on that path since.

use std::io::{self, IoSliceMut};
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Stdio};

use rustix::fs::OFlags;
use rustix::mount::MountAttrFlags;

use rustix::net::{
    AddressFamily, RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SocketFlags, SocketType,
    recvmsg, socketpair,
};

use super::newmount::{DetachedMount, FsBuilder};
use super::{ServeOptions, unmount_with};
use crate::server::DevFuse;

/// A session on a new FUSE mount of `mountpoint`: made with the new mount API and attached once
/// INIT is done as root (also root in a user namespace), through `fusermount3` otherwise.
/// lazycfs mounts rather than fuser (see the module docs), so the session unmounts nothing
/// when it ends.
pub(super) fn attached_session(
    fs: DevFuse,
    mountpoint: &Path,
    options: &ServeOptions,
) -> io::Result<fuser::Session<DevFuse>> {
    let (acl, config) = (options.session_acl(), options.fuse_config());
    if rustix::process::geteuid().is_root() {
        let (detached, device) = mount_detached_fuse(options)?;
        let session = fuser::Session::from_fd(fs, device, acl, config)?;
        detached.attach(mountpoint)?;
        return Ok(session);
    }
    let device = mount(mountpoint, &options.fusermount_options())?;
    fuser::Session::from_fd(fs, device, acl, config).inspect_err(|_| {
        let _ = unmount_with(mountpoint, true);
    })
}

/// A FUSE filesystem mounted with the new mount API but attached nowhere, and its
/// `/dev/fuse` descriptor.
pub(super) fn mount_detached_fuse(options: &ServeOptions) -> io::Result<(DetachedMount, OwnedFd)> {
    let dev = rustix::fs::open(
        "/dev/fuse",
        OFlags::RDWR | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("/dev/fuse: {e}")))?;
    let fd = dev.as_raw_fd().to_string();
    let uid = rustix::process::geteuid().as_raw().to_string();
    let gid = rustix::process::getegid().as_raw().to_string();
    let fuse = FsBuilder::open("fuse")?;
    fuse.string("source", &options.fsname)?
        .string("subtype", "lazycfs")?
        .string("fd", &fd)?
        .string("rootmode", "40000")?
        .string("user_id", &uid)?
        .string("group_id", &gid)?
        .flag("default_permissions")?
        // A read-only superblock (not just a read-only mount): FUSE then never invalidates a
        // directory's attributes for atime after a readdir, which would cost a GETATTR per
        // directory on every walk through the overlay.
        .flag("ro")?;
    if options.allow_other {
        fuse.flag("allow_other")?;
    }
    let mount = fuse.mount(MountAttrFlags::MOUNT_ATTR_RDONLY)?;
    Ok((mount, dev))
}

/// Mounts a FUSE filesystem on `mountpoint` with `options` (`-o` syntax, each already
/// escaped) and returns its `/dev/fuse` descriptor.
fn mount(mountpoint: &Path, options: &str) -> io::Result<OwnedFd> {
    let (ours, theirs) = socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    // The helper's end goes in as its standard input, so no descriptor has to survive exec
    // under a number of its own.
    let output = Command::new("fusermount3")
        .arg("-o")
        .arg(options)
        .arg("--")
        .arg(mountpoint)
        .env("_FUSE_COMMFD", "0")
        .stdin(Stdio::from(theirs))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .map_err(|e| io::Error::new(e.kind(), format!("fusermount3: {e}")))?;
    if !output.status.success() {
        let said = String::from_utf8_lossy(&output.stderr);
        let said = said.trim();
        return Err(io::Error::other(match said.is_empty() {
            true => format!("fusermount3 failed: {}", output.status),
            false => said.to_owned(),
        }));
    }
    receive_device(&ours)
}

/// The descriptor `fusermount3` sent over `socket` (`SCM_RIGHTS`, with one byte of data).
fn receive_device(socket: &OwnedFd) -> io::Result<OwnedFd> {
    let mut byte = [0u8; 1];
    let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = RecvAncillaryBuffer::new(&mut space);
    recvmsg(
        socket,
        &mut [IoSliceMut::new(&mut byte)],
        &mut ancillary,
        RecvFlags::CMSG_CLOEXEC,
    )?;
    for message in ancillary.drain() {
        if let RecvAncillaryMessage::ScmRights(mut fds) = message
            && let Some(fd) = fds.next()
        {
            return Ok(fd);
        }
    }
    Err(io::Error::other(
        "fusermount3 mounted but sent no /dev/fuse descriptor",
    ))
}

/// `value` as one `-o` option value: commas and backslashes escaped, as `fusermount3` reads
/// them.
pub(super) fn escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for c in value.chars() {
        if matches!(c, ',' | '\\') {
            escaped.push('\\');
        }
        escaped.push(c);
    }
    escaped
}

#[cfg(test)]
mod tests {
    use super::escape;

    #[test]
    fn option_values_escape_commas_and_backslashes() {
        assert_eq!(escape("a,b\\c"), "a\\,b\\\\c");
        assert_eq!(escape("/images/x.cfs"), "/images/x.cfs");
    }
}
