//! A service mount placed in the caller's own user and mount namespaces
//! ([`Placement::OwnNamespaces`](super::Placement::OwnNamespaces)).
//!
//! The caller may do anything to a mount in a mount namespace of its own, including
//! remounting it without `nosuid,nodev` (nothing locks the flags of a mount attached there).
//! So the overlay is made *inside* the caller's user namespace: its superblock belongs to
//! that namespace, where the kernel never opens device nodes and setuid files only take ids
//! mapped there, whatever the mount's flags. Overlayfs there is unprivileged (`userxattr`),
//! so the image is rewritten with `user.overlay.*` xattrs.
//!
//! EROFS cannot be mounted in a user namespace: root creates it. It is mounted from inside the
//! caller's mount namespace (overlayfs only takes a detached layer whose mount namespace
//! belongs to a user namespace the overlay's maker is privileged in), idmapped to the caller's
//! user namespace (so files stored with uid 0 belong to the caller's root there, as on a FUSE
//! mount made there), and attached nowhere: only the overlay holds it, and the caller never
//! gets hold of it.
//!
//! A process joins a user namespace only while it has one thread, so the steps run in a
//! forked child of the service. The child takes the caller's identity
//! ([`CallerIdentity`]) before joining: the overlay then reads the basedir as the caller, with
//! capabilities only within the caller's user namespace.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::time::Duration;

use rustix::mount::{
    FsMountFlags, FsOpenFlags, MoveMountFlags, fsconfig_create, fsconfig_set_fd, fsconfig_set_flag,
    fsconfig_set_string, fsmount, fsopen, move_mount,
};
use rustix::thread::LinkNameSpaceType;

use super::server::{CallerIdentity, Refusal, SERVICE_MOUNT_ATTRS};
use crate::sys::namespaces::{ChildReport, idmap_mount, in_forked_child};

/// Everything the forked child uses, prepared before the fork (the child allocates nothing).
pub(super) struct OwnNamespaceMount<'a> {
    /// The EROFS filesystem of the rewritten image, created, not yet mounted.
    pub erofs: BorrowedFd<'a>,
    pub basedir: BorrowedFd<'a>,
    /// A directory in the caller's mount namespace.
    pub mountpoint: BorrowedFd<'a>,
    pub user_ns: BorrowedFd<'a>,
    pub mount_ns: BorrowedFd<'a>,
    pub identity: CallerIdentity,
    /// The overlay's mount source.
    pub source: &'a CStr,
    pub require_verity: bool,
}

/// The child's steps, in order; a failure reports which.
#[derive(Clone, Copy)]
#[repr(u8)]
enum Step {
    NotDumpable,
    EnterMountNamespace,
    MountErofs,
    Idmap,
    TakeIdentity,
    EnterUserNamespace,
    OpenOverlay,
    CreateOverlay,
    MountOverlay,
    Attach,
}

impl Step {
    const ALL: [Step; 10] = [
        Step::NotDumpable,
        Step::EnterMountNamespace,
        Step::MountErofs,
        Step::Idmap,
        Step::TakeIdentity,
        Step::EnterUserNamespace,
        Step::OpenOverlay,
        Step::CreateOverlay,
        Step::MountOverlay,
        Step::Attach,
    ];

    fn describe(self) -> &'static str {
        match self {
            Step::NotDumpable => "protecting the mount process",
            Step::EnterMountNamespace => "entering the caller's mount namespace",
            Step::MountErofs => "mounting the rewritten image",
            Step::Idmap => "idmapping the image to the caller's user namespace",
            Step::TakeIdentity => "taking the caller's identity",
            Step::EnterUserNamespace => "entering the caller's user namespace",
            Step::OpenOverlay => "opening an overlay",
            Step::CreateOverlay => "creating the overlay over the image and the basedir",
            Step::MountOverlay => "mounting the overlay",
            Step::Attach => "attaching the mount on the mountpoint",
        }
    }
}

/// Report byte of a child that panicked (see [`in_forked_child`]).
const PANICKED: u8 = 0xff;

impl OwnNamespaceMount<'_> {
    /// Makes the mount, in a child bounded by `timeout`.
    pub(super) fn place(&self, timeout: Duration) -> Result<(), Refusal> {
        let report =
            in_forked_child(timeout, |report| self.steps(report)).map_err(Refusal::Kernel)?;
        if report.is_empty() {
            return Ok(());
        }
        Err(Refusal::Kernel(failure(&report)))
    }

    /// The child's work; a failure is written into `report` as the step (a byte), the errno
    /// (four bytes, little-endian) and the kernel's messages for a filesystem context.
    fn steps(&self, report: &mut ChildReport) {
        use rustix::process::{DumpableBehavior, set_dumpable_behavior};
        use rustix::thread::move_into_link_name_space;
        let fail = |report: &mut ChildReport, step: Step, errno: i32| {
            report.push(&[step as u8]);
            report.push(&errno.to_le_bytes());
        };
        let errno = |e: rustix::io::Errno| e.raw_os_error();
        // Nobody but root may read this process's memory or descriptors, even after it
        // joins the caller's user namespace.
        if let Err(e) = set_dumpable_behavior(DumpableBehavior::NotDumpable) {
            return fail(report, Step::NotDumpable, errno(e));
        }
        if let Err(e) = move_into_link_name_space(self.mount_ns, Some(LinkNameSpaceType::Mount)) {
            return fail(report, Step::EnterMountNamespace, errno(e));
        }
        let erofs = match fsmount(
            self.erofs,
            FsMountFlags::FSMOUNT_CLOEXEC,
            SERVICE_MOUNT_ATTRS,
        ) {
            Ok(fd) => fd,
            Err(e) => return fail(report, Step::MountErofs, errno(e)),
        };
        if let Err(e) = idmap_mount(erofs.as_fd(), self.user_ns) {
            return fail(report, Step::Idmap, e.raw_os_error().unwrap_or(0));
        }
        if let Err(e) = self.identity.take() {
            return fail(report, Step::TakeIdentity, e.raw_os_error().unwrap_or(0));
        }
        if let Err(e) = move_into_link_name_space(self.user_ns, Some(LinkNameSpaceType::User)) {
            return fail(report, Step::EnterUserNamespace, errno(e));
        }
        let overlay = match fsopen("overlay", FsOpenFlags::FSOPEN_CLOEXEC) {
            Ok(fd) => fd,
            Err(e) => return fail(report, Step::OpenOverlay, errno(e)),
        };
        let created = (|| {
            fsconfig_set_string(&overlay, "source", self.source)?;
            fsconfig_set_flag(&overlay, "userxattr")?;
            fsconfig_set_fd(&overlay, "lowerdir+", erofs.as_fd())?;
            fsconfig_set_fd(&overlay, "datadir+", self.basedir)?;
            if self.require_verity {
                fsconfig_set_string(&overlay, "verity", "require")?;
            }
            fsconfig_create(&overlay)
        })();
        if let Err(e) = created {
            fail(report, Step::CreateOverlay, errno(e));
            return push_kernel_messages(report, overlay.as_fd());
        }
        let mount = match fsmount(&overlay, FsMountFlags::FSMOUNT_CLOEXEC, SERVICE_MOUNT_ATTRS) {
            Ok(fd) => fd,
            Err(e) => return fail(report, Step::MountOverlay, errno(e)),
        };
        let flags =
            MoveMountFlags::MOVE_MOUNT_F_EMPTY_PATH | MoveMountFlags::MOVE_MOUNT_T_EMPTY_PATH;
        if let Err(e) = move_mount(&mount, "", self.mountpoint, "", flags) {
            fail(report, Step::Attach, errno(e));
        }
    }
}

/// Appends the kernel's messages about a filesystem context (one per read, "e overlayfs:
/// ..."), separated by "; ".
fn push_kernel_messages(report: &mut ChildReport, context: BorrowedFd<'_>) {
    let mut buf = [0u8; 256];
    let mut first = true;
    while let Ok(n @ 1..) = rustix::io::read(context, &mut buf) {
        report.push(if first { b"" } else { b"; " });
        report.push(buf[..n].get(2..).unwrap_or(&buf[..n]));
        first = false;
    }
}

/// The error a child's report describes.
fn failure(report: &[u8]) -> io::Error {
    let step = Step::ALL.get(usize::from(report[0]));
    let (Some(step), Some(errno)) = (step, report.get(1..5)) else {
        let why = if report[0] == PANICKED {
            "the mount process panicked"
        } else {
            "the mount process failed"
        };
        return io::Error::other(why);
    };
    let error =
        io::Error::from_raw_os_error(i32::from_le_bytes(errno.try_into().expect("four bytes")));
    let messages = String::from_utf8_lossy(&report[5..]);
    let detail = if messages.is_empty() {
        String::new()
    } else {
        format!(" ({})", messages.trim_end())
    };
    io::Error::new(
        error.kind(),
        format!("{}: {error}{detail}", step.describe()),
    )
}
