//! What a failed assertion must not leave behind: a [`Guard`] kills and reaps a server
//! process, detaches mount points and stops helper threads when it is dropped, which happens
//! while a panicking test unwinds. A test that ends normally takes the process back with
//! [`Guard::take`] (to signal and wait for it itself) or lets the guard clean up.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

/// Kills its process, detaches its mount points and raises its stop flags on drop.
#[derive(Debug, Default)]
pub struct Guard {
    child: Option<Child>,
    mounts: Vec<PathBuf>,
    stops: Vec<Arc<AtomicBool>>,
}

impl Guard {
    /// Guards a process: killed (SIGKILL) and reaped on drop unless taken back.
    pub fn process(child: Child) -> Guard {
        Guard {
            child: Some(child),
            mounts: Vec::new(),
            stops: Vec::new(),
        }
    }

    /// Guards a mount point: detached (`MNT_DETACH`) on drop if something is still mounted
    /// there.
    pub fn mount(path: &Path) -> Guard {
        Guard::default().and_mount(path)
    }

    /// Also detaches `path` on drop; mount points are detached innermost (last added) first.
    pub fn and_mount(mut self, path: &Path) -> Guard {
        self.mounts.push(path.to_path_buf());
        self
    }

    /// Also raises `flag` on drop (threads that loop until it is set end).
    pub fn and_stop(mut self, flag: &Arc<AtomicBool>) -> Guard {
        self.stops.push(Arc::clone(flag));
        self
    }

    /// The guarded process.
    pub fn child(&mut self) -> &mut Child {
        self.child.as_mut().expect("the guard holds a process")
    }

    /// The guarded process's pid.
    pub fn id(&self) -> u32 {
        self.child.as_ref().expect("the guard holds a process").id()
    }

    /// Takes the process back (the test signals and waits for it); mount points and flags
    /// stay guarded.
    pub fn take(&mut self) -> Child {
        self.child.take().expect("the guard holds a process")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for flag in &self.stops {
            flag.store(true, Ordering::Relaxed);
        }
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        for path in self.mounts.iter().rev() {
            while is_mount_point(path) {
                if rustix::mount::unmount(path, rustix::mount::UnmountFlags::DETACH).is_err() {
                    break;
                }
            }
        }
    }
}

/// Whether something is mounted on `path` (an entry of `/proc/self/mountinfo`).
pub fn is_mount_point(path: &Path) -> bool {
    let Some(path) = path.to_str() else {
        return false;
    };
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .any(|line| line.split(' ').nth(4) == Some(path))
}

/// A FUSE filesystem this test process serves itself (`fuser::spawn_mount`): its mount is
/// detached before the session ends, even while a failed test unwinds (dropping fuser's
/// session alone leaves a dead mount behind).
pub struct Session {
    // Fields drop in order: the mount first, then the session's thread.
    _unmount: Guard,
    _session: fuser::BackgroundSession,
}

impl Session {
    /// Guards `session`, mounted on `mountpoint`.
    pub fn new(session: fuser::BackgroundSession, mountpoint: &Path) -> Session {
        Session {
            _unmount: Guard::mount(mountpoint),
            _session: session,
        }
    }
}
